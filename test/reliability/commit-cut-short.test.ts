// A point's commit at the master target cut short after its last checkpoint (soak seeds 16032
// and 21008, kill9-delta: a kill struck there; here a write that fails does the same in one
// process). That checkpoint records "everything received, the end frame too". Before, the point
// then stayed staged with that record: the relay's resend was answered "all acknowledged", the
// relay tombstoned and forgot the transfer, the disk never named the point, and the next point's
// transfer discarded it as abandoned — while the agent had moved its tracking past it, so its
// changes were never sent again. Now the resend finds the point received whole and names it.
// Real master target, real qcow2 replica, real connections.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendTransfer } from '../../src/datapath/frame-stream.ts';
import { digestReader } from '../../src/datapath/digest.ts';
import type { Manifest } from '../../src/replica/manifest.ts';
import { openTransfer } from '../../src/replication/wire.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';
import { newId } from '../../src/store/ids.ts';
import { startRecordingMasterTarget } from '../support/master-target.ts';

const MIB = 2 ** 20;
const SIZE = 8 * MIB;
let dir: string;

before(async () => { dir = await mkdtemp(join(tmpdir(), 'rb-commit-cut-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

test('a commit cut short after its last checkpoint: the resend names the point, with its data, and the next point lays on top', { timeout: 120_000 }, async () => {
  const site = join(dir, 'dr');
  await mkdir(site);
  const key = randomBytes(32);
  const { mt, recorded } = await startRecordingMasterTarget(site, key);
  const source = Buffer.alloc(SIZE);
  const diskDir = join(site, 'replicas', 'item1', 'disk0');
  const header = (pointId: string, seq: number, frames: number): TransferHeader => ({
    transferId: `${pointId}.0`, itemId: 'item1', machine: 'db1', diskId: 'disk0', diskIndex: 0, diskCount: 1, diskSize: SIZE, pointId, pointSeq: seq,
    takenAt: Date.now(), pointKind: 'crash', frames, bytes: frames * MIB, targetSiteId: 'dr', masterTarget: mt.address, retentionSeconds: 3600, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: seq === 1,
  });
  /** Writes `blocks` (MiB indexes) of the source with fresh data and sends them as one point. */
  const send = async (h: TransferHeader, blocks: number[]) => {
    const socket = await openTransfer(mt.address, h, null);
    return sendTransfer(socket, {
      vaultKey: key, transferId: h.transferId,
      plan: blocks.map((b) => ({ itemId: 'item1', diskId: 'disk0', pointId: h.pointId, offset: b * MIB, length: MIB })),
      read: async (e) => Buffer.from(source.subarray(e.offset, e.offset + e.length)),
    });
  };
  const waitRecorded = async (n: number): Promise<void> => {
    for (let i = 0; i < 100 && recorded.length < n; i++) await new Promise((r) => setTimeout(r, 50));
  };
  const replicaDigests = async () => (await mt.digests('dr', 'item1', 'disk0', 64 * 1024))!.digests;
  const sourceDigests = async () => (await digestReader({ size: SIZE, read: async (o, l) => source.subarray(o, o + l) }, { blockSize: 64 * 1024 })).digests;
  try {
    const p1 = newId();
    randomBytes(SIZE).copy(source);
    await send(header(p1, 1, 8), [0, 1, 2, 3, 4, 5, 6, 7]);
    await waitRecorded(1);
    assert.deepEqual(recorded.map((r) => r.p.pointId), [p1]);

    // Point 2: its commit fails after the checkpoint that says it was all received (the block
    // checksums file cannot be written: a directory stands where it goes).
    const p2 = newId();
    for (const b of [1, 5]) randomBytes(MIB).copy(source, b * MIB);
    const sumsPath = join(diskDir, `p-${p2}.sums`);
    await mkdir(sumsPath);
    await writeFile(join(sumsPath, 'in-the-way'), '');
    const h2 = header(p2, 2, 2);
    await assert.rejects(send(h2, [1, 5]), 'the sender hears no end acknowledgement while the commit fails');
    const staged = (JSON.parse(await readFile(join(diskDir, 'manifest.json'), 'utf8')) as Manifest).staging;
    assert.equal(staged?.pointId, p2, 'the point is left staged');
    assert.deepEqual(staged?.progress, { transferId: h2.transferId, ackedThrough: 2 }, 'with the progress that says all of it was received');
    assert.deepEqual(recorded.map((r) => r.p.pointId), [p1]);

    // The relay resends: the point is named, nothing is sent twice, and it holds point 2's data.
    await rm(sumsPath, { recursive: true });
    assert.deepEqual(await send(h2, [1, 5]), { sent: 0, skipped: 2 });
    await waitRecorded(2);
    assert.deepEqual(recorded.map((r) => r.p.pointId), [p1, p2], 'point 2 is named once the resend finds it received whole');
    assert.deepEqual(await mt.commonPoints('dr', 'item1', 1).then((ps) => ps.map((p) => p.id)), [p1, p2]);
    assert.ok((await replicaDigests()).equals(await sourceDigests()), 'the replica holds point 2\'s blocks');

    // The next point goes on top (before, it discarded point 2 as abandoned).
    const p3 = newId();
    randomBytes(MIB).copy(source, 3 * MIB);
    await send(header(p3, 3, 1), [3]);
    await waitRecorded(3);
    assert.deepEqual(recorded.map((r) => r.p.pointId), [p1, p2, p3]);
    assert.ok((await replicaDigests()).equals(await sourceDigests()), 'the replica matches the source: points 2 and 3 both kept');
  } finally {
    await mt.close();
  }
});
