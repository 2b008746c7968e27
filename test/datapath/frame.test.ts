// Replication frames: round trips (data, zeros, incompressible), every kind of tampering rejected
// with a frame-* error and nothing returned, random extents round-trip (fast-check), and the
// streaming sender/receiver over a real unix socket: acknowledgements, resumption that resends
// nothing acknowledged, a damaged frame in the stream stopping the transfer before it is applied.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { Duplex } from 'node:stream';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { decodeFrame, encodeDataFrame, encodeDataFrameParts, encodeEndFrame, FRAME_FLAG, FRAME_TYPE } from '../../src/datapath/frame.ts';
import type { DataFrame } from '../../src/datapath/frame.ts';
import { deriveSessionKey, newSessionSalt } from '../../src/datapath/frame-key.ts';
import { receiveTransfer, sendTransfer, WINDOW_BYTES, windowFor } from '../../src/datapath/frame-stream.ts';
import type { PlannedExtent } from '../../src/datapath/frame-stream.ts';
import { ReboundError } from '../../src/domain/errors.ts';

const vaultKey = randomBytes(32);
const key = deriveSessionKey(vaultKey, 'transfer-1', newSessionSalt());
const ext = (data: Uint8Array, offset = 65536) => ({ itemId: 'item-7', diskId: 'vda', pointId: 'p3', offset, data });

const rejects = (fn: () => unknown, code: string | RegExp): void => {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ReboundError, `expected a ReboundError, got ${String(err)}`);
    if (typeof code === 'string') assert.equal(err.code, code);
    else assert.match(err.code, code);
    return true;
  });
};

test('a frame round-trips text, zeros and random data, compressing only when it shrinks', () => {
  const text = Buffer.from('replica '.repeat(8192));
  const zeros = Buffer.alloc(65536);
  const rand = randomBytes(65536);
  const ft = encodeDataFrame(key, 0, ext(text));
  const fz = encodeDataFrame(key, 1, ext(zeros));
  const fr = encodeDataFrame(key, 2, ext(rand));
  assert.ok(ft.length < text.length / 10, 'text compresses');
  assert.ok(fz.length < 200, 'zeros carry no payload');
  assert.ok(fr.length < rand.length + 200, 'random data is not inflated');
  const dt = decodeFrame(key, ft, 0);
  assert.deepEqual(dt.data, text);
  assert.equal(dt.header.flags, FRAME_FLAG.COMPRESSED);
  assert.deepEqual({ ...dt.header, flags: 0 }, { type: FRAME_TYPE.DATA, flags: 0, seq: 0, itemId: 'item-7', diskId: 'vda', pointId: 'p3', offset: 65536, length: text.length });
  const dz = decodeFrame(key, fz, 1);
  assert.equal(dz.header.flags, FRAME_FLAG.ZERO);
  assert.deepEqual(dz.data, zeros);
  const dr = decodeFrame(key, fr, 2);
  assert.equal(dr.header.flags, 0);
  assert.deepEqual(dr.data, rand);
  const end = decodeFrame(key, encodeEndFrame(key, 3), 3);
  assert.equal(end.header.type, FRAME_TYPE.END);
});

test('a flipped bit anywhere in header, payload or tag is rejected', () => {
  const frame = encodeDataFrame(key, 5, ext(Buffer.from('some data that compresses '.repeat(500))));
  // Every byte after the length prefix: header, ciphertext, tag. (The prefix itself is a length:
  // changing it is a truncation or a malformed frame, tested below.)
  for (let i = 4; i < frame.length; i += i < 100 ? 1 : 37) {
    for (const bit of [0x01, 0x80]) {
      const bad = Buffer.from(frame);
      bad[i]! ^= bit;
      rejects(() => decodeFrame(key, bad, 5), /^frame-(auth-failed|malformed|truncated|version)$/);
    }
  }
  const tagByte = Buffer.from(frame);
  tagByte[frame.length - 1]! ^= 1;
  rejects(() => decodeFrame(key, tagByte, 5), 'frame-auth-failed');
  const payloadByte = Buffer.from(frame);
  payloadByte[120]! ^= 1;
  rejects(() => decodeFrame(key, payloadByte, 5), 'frame-auth-failed');
  const offsetByte = Buffer.from(frame);
  offsetByte[4 + 27]! ^= 1; // low byte of the offset: a forged header
  rejects(() => decodeFrame(key, offsetByte, 5), 'frame-auth-failed');
});

test('truncated, padded, replayed, reordered and wrongly keyed frames are rejected', () => {
  const f0 = encodeDataFrame(key, 0, ext(randomBytes(4096)));
  const f1 = encodeDataFrame(key, 1, ext(randomBytes(4096), 0));
  for (const cut of [0, 3, 4, 20, 60, f0.length - 17, f0.length - 1]) rejects(() => decodeFrame(key, f0.subarray(0, cut), 0), /^frame-(truncated|malformed)$/);
  rejects(() => decodeFrame(key, Buffer.concat([f0, Buffer.from([0])]), 0), 'frame-malformed');
  decodeFrame(key, f0, 0);
  rejects(() => decodeFrame(key, f0, 1), 'frame-out-of-order'); // replay of frame 0 after it was applied
  rejects(() => decodeFrame(key, f1, 0), 'frame-out-of-order'); // frame 1 before frame 0
  const otherSession = deriveSessionKey(vaultKey, 'transfer-1', newSessionSalt());
  rejects(() => decodeFrame(otherSession, f0, 0), 'frame-auth-failed'); // replayed into another session
  const otherVault = deriveSessionKey(randomBytes(32), 'transfer-1', key.salt);
  rejects(() => decodeFrame(otherVault, f0, 0), 'frame-auth-failed');
  const otherTransfer = deriveSessionKey(vaultKey, 'transfer-2', key.salt);
  rejects(() => decodeFrame(otherTransfer, f0, 0), 'frame-auth-failed');
});

test('random extents round-trip with their ids, offsets and checksums (fast-check)', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 20000 }),
      fc.boolean(),
      fc.nat({ max: 2 ** 40 }),
      fc.nat({ max: 1_000_000 }),
      fc.string({ maxLength: 40 }),
      (bytes, repetitive, offset, seq, id) => {
        const data = repetitive ? Buffer.from(Array.from({ length: bytes.length }, (_, i) => bytes[i % 7] ?? 0)) : Buffer.from(bytes);
        const f = decodeFrame(key, encodeDataFrame(key, seq, { itemId: id, diskId: `d-${id}`, pointId: 'p', offset, data }), seq);
        assert.deepEqual(f.data, data);
        assert.equal(f.header.offset, offset);
        assert.equal(f.header.itemId, id);
        assert.equal(f.header.diskId, `d-${id}`);
      },
    ),
    { numRuns: 300 },
  );
});

// ---- streaming over a real unix socket ----
let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'rebound-frame-test-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

interface Receiver { applied: Map<number, DataFrame>; acked: number; checkpoints: number[]; completed: number; server: Server; path: string; errors: unknown[]; failAfter: number }

async function startReceiver(name: string, failAfter = Infinity): Promise<Receiver> {
  const path = join(dir, `${name}.sock`);
  const r: Receiver = { applied: new Map(), acked: -1, checkpoints: [], completed: -1, server: createServer(), path, errors: [], failAfter };
  r.server.on('connection', (socket: Socket) => {
    receiveTransfer(socket, {
      vaultKey,
      ackedThrough: async () => r.acked,
      apply: async (frame) => {
        if (r.applied.size >= r.failAfter) throw new Error('receiver crashed');
        r.applied.set(frame.header.seq, frame);
      },
      checkpoint: async (_id, seq) => { r.checkpoints.push(seq); r.acked = seq; },
      complete: async (_id, frames) => { r.completed = frames; r.acked = frames; },
    }).catch((err: unknown) => r.errors.push(err));
  });
  await new Promise<void>((resolve) => r.server.listen(path, resolve));
  return r;
}

const dial = (path: string): Promise<Socket> => new Promise((resolve, reject) => { const s = connect(path, () => resolve(s)); s.once('error', reject); });

function makePlan(n: number): { plan: PlannedExtent[]; disk: Buffer } {
  const disk = Buffer.concat(Array.from({ length: n }, (_, i) => (i % 3 === 0 ? Buffer.alloc(8192) : i % 3 === 1 ? Buffer.alloc(8192, i) : randomBytes(8192))));
  const plan = Array.from({ length: n }, (_, i) => ({ itemId: 'it', diskId: 'vda', pointId: 'p1', offset: i * 8192, length: 8192 }));
  return { plan, disk };
}

test('a transfer streams every frame in order and the receiver holds exactly the source', async () => {
  const r = await startReceiver('whole');
  try {
    const { plan, disk } = makePlan(100);
    const acks: number[] = [];
    const res = await sendTransfer(await dial(r.path), { vaultKey, transferId: 't-whole', plan, window: 8, read: async (e) => disk.subarray(e.offset, e.offset + e.length), onAck: (s) => acks.push(s) });
    assert.deepEqual(res, { sent: 100, skipped: 0 });
    // Cumulative acknowledgements after each checkpoint: every half window, and at the end.
    assert.deepEqual(r.checkpoints, [3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59, 63, 67, 71, 75, 79, 83, 87, 91, 95, 99]);
    assert.deepEqual(acks, r.checkpoints);
    assert.equal(r.completed, 100);
    for (const [seq, f] of r.applied) assert.deepEqual(f.data, disk.subarray(seq * 8192, (seq + 1) * 8192));
    assert.equal(r.applied.size, 100);
  } finally {
    r.server.close();
  }
});

test('a frame sealed as pieces is the joined frame, byte for byte, and opens', () => {
  for (const data of [Buffer.from('parts '.repeat(4000)), randomBytes(65536), Buffer.alloc(65536)]) {
    for (const level of [null, 1]) {
      const parts = encodeDataFrameParts(key, 9, ext(data), level);
      const joined = Buffer.concat(parts);
      assert.deepEqual(joined, encodeDataFrame(key, 9, ext(data), level));
      assert.equal(joined.readUInt32BE(0), joined.length - 4, 'the length prefix counts the rest of the frame');
      assert.deepEqual(decodeFrame(key, joined, 9).data, data);
    }
  }
});

test('the window holds about WINDOW_BYTES of a transfer\'s average frame, never fewer than the minimum', () => {
  const MiB = 2 ** 20;
  assert.equal(windowFor(100 * MiB, 100), 32, '1 MiB frames: the 32 frames it always was');
  assert.equal(windowFor(64 * 1024 * 1000, 1000), WINDOW_BYTES / (64 * 1024), '64 KiB frames: 512');
  assert.equal(windowFor(4096 * 100_000, 100_000), 4096, 'tiny frames: capped');
  assert.equal(windowFor(0, 0), 32, 'an empty transfer');
  assert.equal(windowFor(64 * MiB, 1, 8), 8, 'frames larger than the window: the minimum asked for');
  assert.ok(windowFor(3 * MiB, 7) > 32 && windowFor(3 * MiB, 7) <= 0xffff);
});

test('a transfer of small frames is checkpointed by the bytes, not every half of a fixed window', async () => {
  const r = await startReceiver('bytes');
  try {
    // 2048 frames of 8 KiB (16 MiB) and no window given: sendTransfer sizes it for the plan
    // (windowFor: 4096 frames), so the receiver checkpoints once, at the end.
    const { plan, disk } = makePlan(2048);
    const res = await sendTransfer(await dial(r.path), { vaultKey, transferId: 't-bytes', plan, read: async (e) => disk.subarray(e.offset, e.offset + e.length) });
    assert.deepEqual(res, { sent: 2048, skipped: 0 });
    assert.deepEqual(r.checkpoints, [2047], 'one checkpoint, at the end; a window of 32 made 128');
    assert.equal(r.applied.size, 2048);
  } finally {
    r.server.close();
  }
});

test('a resumed transfer sends nothing already acknowledged', async () => {
  const r = await startReceiver('resume', 37);
  try {
    const { plan, disk } = makePlan(90);
    const reads: number[] = [];
    const read = async (e: PlannedExtent) => { reads.push(e.offset / 8192); return disk.subarray(e.offset, e.offset + e.length); };
    await assert.rejects(sendTransfer(await dial(r.path), { vaultKey, transferId: 't-res', plan, window: 4, read }));
    assert.equal(r.acked, 35, 'the last checkpoint before the receiver failed at frame 37');
    r.failAfter = Infinity;
    reads.length = 0;
    const res = await sendTransfer(await dial(r.path), { vaultKey, transferId: 't-res', plan, window: 4, read });
    assert.deepEqual(res, { sent: 90 - 36, skipped: 36 });
    assert.equal(reads[0], 36, 'the resumed session starts after the last acknowledged frame');
    assert.equal(reads.length, 90 - 36);
    assert.equal(r.completed, 90);
    for (let i = 0; i < 90; i++) assert.deepEqual(r.applied.get(i)?.data, disk.subarray(i * 8192, (i + 1) * 8192));
    // A third session after completion sends nothing at all.
    const again = await sendTransfer(await dial(r.path), { vaultKey, transferId: 't-res', plan, window: 4, read });
    assert.deepEqual(again, { sent: 0, skipped: 90 });
  } finally {
    r.server.close();
  }
});

test('a frame damaged in transit stops the transfer before it is applied', async () => {
  const r = await startReceiver('damage');
  // A proxy that flips one byte deep inside the stream (in some frame's ciphertext).
  const proxyPath = join(dir, 'proxy.sock');
  let seen = 0;
  const proxy = createServer((client) => {
    const upstream = connect(r.path);
    upstream.pipe(client);
    client.on('data', (c: Buffer) => {
      const b = Buffer.from(c);
      if (seen < 30000 && seen + b.length > 30000) b[30000 - seen]! ^= 0x40;
      seen += b.length;
      upstream.write(b);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.on('error', () => {});
    upstream.on('error', () => {});
  });
  await new Promise<void>((resolve) => proxy.listen(proxyPath, resolve));
  try {
    const { plan, disk } = makePlan(20);
    await assert.rejects(sendTransfer(await dial(proxyPath), { vaultKey, transferId: 't-dmg', plan, window: 2, read: async (e) => disk.subarray(e.offset, e.offset + e.length) }));
    await new Promise((res) => setTimeout(res, 50));
    assert.equal(r.errors.length, 1);
    assert.ok(r.errors[0] instanceof ReboundError);
    assert.match(r.errors[0].code, /^frame-(auth-failed|malformed)$/);
    assert.equal(r.completed, -1);
    for (const [seq, f] of r.applied) assert.deepEqual(f.data, disk.subarray(seq * 8192, (seq + 1) * 8192), 'only intact frames were applied');
    assert.ok(r.applied.size < 20);
  } finally {
    proxy.close();
    r.server.close();
  }
});

test('messages split into pieces of any size, down to single bytes, are put back together exactly', async () => {
  // The receiver queues incoming chunks and joins them once per message; pieces from 1 byte to
  // 70 KiB (a frame's length prefix and magic split too) must give the same frames.
  const path = join(dir, 'pieces.sock');
  const applied = new Map<number, DataFrame>();
  let completed = -1;
  const errors: unknown[] = [];
  let pieces = 0;
  const server = createServer((s: Socket) => {
    const d = new Duplex({
      read() { /* pushed below */ },
      // Acknowledgements go straight to the socket (the sender reads them as they come).
      write(chunk: Buffer, _enc, cb) { s.write(chunk); cb(); },
      final(cb) { s.end(cb); },
    });
    let k = 0;
    s.on('data', (c: Buffer) => {
      for (let at = 0; at < c.length;) {
        const small = [1, 2, 3, 5, 7, 9, 100, 1000];
        const n = Math.min(c.length - at, k % 40 === 39 ? 70_000 : small[k % small.length]!);
        k++;
        d.push(Buffer.from(c.subarray(at, at + n)));
        pieces++;
        at += n;
      }
    });
    s.on('end', () => d.push(null));
    s.on('error', () => undefined);
    receiveTransfer(d, {
      vaultKey,
      ackedThrough: async () => -1,
      apply: async (frame) => { applied.set(frame.header.seq, frame); },
      checkpoint: async () => undefined,
      complete: async (_id, frames) => { completed = frames; },
    }).catch((err: unknown) => { errors.push(err); s.destroy(); });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  try {
    const { plan, disk } = makePlan(60);
    const res = await sendTransfer(await dial(path), { vaultKey, transferId: 't-pieces', plan, window: 4, read: async (e) => disk.subarray(e.offset, e.offset + e.length) });
    assert.deepEqual(res, { sent: 60, skipped: 0 });
    assert.deepEqual(errors, []);
    assert.equal(completed, 60);
    assert.equal(applied.size, 60);
    for (const [seq, f] of applied) assert.deepEqual(f.data, disk.subarray(seq * 8192, (seq + 1) * 8192));
    assert.ok(pieces > 400, `the stream arrived in ${pieces} pieces`);
  } finally {
    server.close();
  }
});
