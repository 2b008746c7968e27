// The process server forwards a transfer while it still arrives (the two hops overlap), one
// durable record behind the agent at most, and its end only once the whole transfer is cached.
// A real process server, a real master target with its replica store (qcow2 through qemu-nbd),
// real data connections and frame streams; the agent's side is driven by hand so the test can
// hold it mid-transfer, cut it, and come back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { sendTransfer } from '../../src/datapath/frame-stream.ts';
import type { PlannedExtent } from '../../src/datapath/frame-stream.ts';
import { diffDigests, digestReader } from '../../src/datapath/digest.ts';
import { ProcessServer } from '../../src/replication/process-server.ts';
import { openTransfer } from '../../src/replication/wire.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';
import { newId } from '../../src/store/ids.ts';
import { startRecordingMasterTarget } from '../support/master-target.ts';
import type { RecordingMasterTarget } from '../support/master-target.ts';

const KIB = 1024;
const FRAME = 256 * KIB;
const FRAMES = 32;
const SIZE = FRAME * FRAMES;
const key = randomBytes(32);
let dir: string;
let target: RecordingMasterTarget;
let ps: ProcessServer;
/** What the process server logged at warn or above (a paused forward is not a failure). */
const warnings: string[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-stream-fwd-'));
  await mkdir(join(dir, 'dr'));
  target = await startRecordingMasterTarget(join(dir, 'dr'), key);
  const sink = new Writable({ write(chunk: Buffer, _enc, cb) { const l = JSON.parse(chunk.toString()) as { level: number; msg: string }; if (l.level >= 40) warnings.push(`${l.msg} ${JSON.stringify((l as { err?: unknown }).err ?? '')}`); cb(); } });
  // Window 8: the process server makes its cache durable (and forwards) every 4 frames.
  ps = new ProcessServer({ dir: join(dir, 'ps'), transportKey: key, material: null, window: 8, logger: pino({ level: 'info' }, sink), masterTargetFor: () => target.mt.address });
  await ps.start();
});

after(async () => {
  await ps?.close();
  await target?.mt.close();
  await rm(dir, { recursive: true, force: true });
});

const header = (pointId: string, pointSeq: number, frames: number): TransferHeader => ({
  transferId: `${pointId}.0`, itemId: 'item1', machine: 'db1', diskId: 'disk0', diskIndex: 0, diskCount: 1, diskSize: SIZE, pointId, pointSeq,
  takenAt: Date.now(), pointKind: 'crash', frames, bytes: frames * FRAME, targetSiteId: 'dr', masterTarget: 'unused:1', retentionSeconds: 3600, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: pointSeq === 1,
});

const planOf = (pointId: string, frames: number): PlannedExtent[] => Array.from({ length: frames }, (_v, i) => ({ itemId: 'item1', diskId: 'disk0', pointId, offset: i * FRAME, length: FRAME }));

/** Sends a transfer as an agent would; `read` may hold a frame back. */
async function send(h: TransferHeader, read: (e: PlannedExtent) => Promise<Uint8Array>, hold?: (cut: () => void) => void): Promise<{ sent: number; skipped: number }> {
  const socket = await openTransfer(ps.address, h, null);
  hold?.(() => socket.destroy());
  return sendTransfer(socket, { vaultKey: key, transferId: h.transferId, plan: planOf(h.pointId, h.frames), window: 8, zstdLevel: null, read });
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (recorded: ${target.recorded.map((r) => r.p.pointId).join(', ')}; events: ${JSON.stringify(target.events)}; warnings: ${warnings.join(' | ')})`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Sends `content` whole as point `seq`, waits until it is named and the replica holds it; returns
 * the master target's byte count then. */
async function sendWhole(content: Buffer, seq: number): Promise<number> {
  const id = newId();
  await send(header(id, seq, FRAMES), async (e) => content.subarray(e.offset, e.offset + e.length));
  await until(`point ${seq} named`, () => target.recorded.some((r) => r.p.pointId === id));
  await replicaIs(content);
  return target.mt.stats.bytes;
}

/** The replica's newest content equals `source`, block for block. */
async function replicaIs(source: Buffer): Promise<void> {
  const ours = await digestReader({ size: SIZE, read: async (o, l) => source.subarray(o, o + l) }, { blockSize: 64 * KIB });
  const theirs = await target.mt.digests('dr', 'item1', 'disk0', 64 * KIB);
  assert.ok(theirs, 'the replica exists');
  assert.deepEqual(diffDigests(ours, theirs), [], 'the replica differs from the source');
}

test('a transfer is forwarded while it arrives; its sender leaving pauses the forward, which resumes where the master target acknowledged', { timeout: 120_000 }, async () => {
  const source = randomBytes(SIZE);
  const p1 = newId();
  const h = header(p1, 1, FRAMES);
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  let cut!: () => void;
  const read = async (e: PlannedExtent): Promise<Uint8Array> => {
    if (e.offset >= 20 * FRAME) await gate; // the agent stalls after 20 frames
    return source.subarray(e.offset, e.offset + e.length);
  };
  const first = send(h, read, (c) => { cut = c; });
  // The master target is written to while the agent is still sending (not once it is done).
  await until('frames at the master target before the agent finished', () => target.mt.stats.bytes >= 8 * FRAME);
  assert.deepEqual(ps.pending('item1'), { complete: [], arriving: [h.transferId] }, 'the transfer is still arriving');
  assert.equal(target.recorded.length, 0, 'no point is named before its transfer is whole');
  // The agent goes away mid-transfer: the forward pauses (no failure, no retry storm).
  cut();
  release();
  await assert.rejects(first);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(warnings, [], 'a paused forward is not a forwarding failure');
  const outBefore = ps.stats.bytesOut;
  const atMt = target.mt.stats.bytes;
  assert.ok(atMt <= 20 * FRAME, `the master target got only what was cached (${atMt / FRAME} frames)`);
  // The agent comes back and sends the rest; the forward takes up where the master target stood.
  const again = await send(h, async (e) => source.subarray(e.offset, e.offset + e.length));
  assert.ok(again.skipped >= 16, `the agent resent only what was not acknowledged (skipped ${again.skipped})`);
  await until('point 1 named', () => target.recorded.some((r) => r.p.pointId === p1));
  const forwarded = ps.stats.bytesOut;
  assert.ok(forwarded <= SIZE + 8 * FRAME, `forwarded ${forwarded / FRAME} frames for a ${FRAMES}-frame transfer: what the master target acknowledged is not sent again`);
  assert.ok(forwarded > outBefore, 'the rest was forwarded after the agent came back');
  await replicaIs(source);
  assert.deepEqual(ps.pending('item1'), { complete: [], arriving: [] }, 'the cache is freed');
  assert.deepEqual(warnings, []);
});

test('a partly forwarded transfer the agent abandons is dropped; the master target discards its part and takes the next point whole', { timeout: 120_000 }, async () => {
  const atMt = await sendWhole(randomBytes(SIZE), 2);
  const p3 = newId();
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; }); // the agent dies here
  let cut!: () => void;
  const stale = randomBytes(SIZE);
  const abandoned = send(header(p3, 3, FRAMES), async (e) => {
    if (e.offset >= 12 * FRAME) await gate;
    return stale.subarray(e.offset, e.offset + e.length);
  }, (c) => { cut = c; });
  await until('part of point 3 at the master target', () => target.mt.stats.bytes >= atMt + 4 * FRAME);
  cut();
  release();
  await assert.rejects(abandoned);
  // The point did not survive at the source (the machine restarted); the next point is whole.
  const after = randomBytes(SIZE);
  const p4 = newId();
  await send(header(p4, 4, FRAMES), async (e) => after.subarray(e.offset, e.offset + e.length));
  await until('point 4 named', () => target.recorded.some((r) => r.p.pointId === p4));
  assert.ok(!target.recorded.some((r) => r.p.pointId === p3), 'the abandoned point is never named');
  assert.deepEqual((await target.mt.commonPoints('dr', 'item1')).map((p) => p.id).filter((id) => id === p3), [], 'nor kept');
  await replicaIs(after);
  // A transfer with no frames (a disk that did not change) goes on only once it is whole.
  const p5 = newId();
  assert.deepEqual(await send(header(p5, 5, 0), async () => Buffer.alloc(0)), { sent: 0, skipped: 0 });
  await until('point 5 named', () => target.recorded.some((r) => r.p.pointId === p5));
  await replicaIs(after);
  assert.deepEqual(warnings, []);
});
