// The data path's small pure-ish pieces: the per-disk plan, the bandwidth throttle, and the
// process server's disk cache cut back to what it acknowledged after a crash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { checksum } from '../../src/datapath/checksum.ts';
import { planDisk } from '../../src/replication/plan.ts';
import { Spool, SpoolEntry, SpoolReader } from '../../src/replication/spool.ts';
import { Throttle } from '../../src/replication/throttle.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';

const KIB = 1024;
const MIB = 1024 * KIB;

test('a plan widens ranges to whole blocks, merges them, clips to the disk and cuts frames', () => {
  const p = planDisk('d', 10 * MIB + 4 * KIB, [
    { offset: 100, length: 10 }, // → block 0
    { offset: 64 * KIB - 1, length: 2 }, // touches blocks 0 and 1
    { offset: 3 * MIB, length: 2 * MIB + 5 }, // 2 MiB + a bit → 3 frames of ≤ 1 MiB
    { offset: 10 * MIB, length: 1 * MIB }, // past the end: clipped to the short last block
  ], 64 * KIB);
  assert.deepEqual(p.extents, [
    { offset: 0, length: 128 * KIB },
    { offset: 3 * MIB, length: MIB },
    { offset: 4 * MIB, length: MIB },
    { offset: 5 * MIB, length: 64 * KIB },
    { offset: 10 * MIB, length: 4 * KIB },
  ]);
  assert.equal(p.bytes, 128 * KIB + 2 * MIB + 64 * KIB + 4 * KIB);
  assert.throws(() => planDisk('d', MIB, [], 64 * KIB, 100 * KIB), /multiple of the block size/);
});

test('the throttle holds a byte rate over a second', async () => {
  const t = new Throttle(4 * MIB);
  const t0 = performance.now();
  for (let i = 0; i < 8; i++) await t.take(MIB / 2);
  const s = (performance.now() - t0) / 1000;
  // 4 MiB at 4 MiB/s, less the quarter second the bucket may hold: at least ~0.75 s.
  assert.ok(s >= 0.7 && s < 2.5, `${s.toFixed(2)} s for 4 MiB at 4 MiB/s`);
});

test('the cache keeps what it acknowledged and cuts off what it did not, across a reopen', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'rb-spool-'));
  try {
    const header = { transferId: 'p1.0', itemId: 'i', diskId: 'disk0', pointSeq: 1, diskIndex: 0, frames: 3 } as TransferHeader;
    const spool = new Spool(dir);
    const e = await spool.open(header);
    const blocks = [randomBytes(4096), randomBytes(8192), randomBytes(4096)];
    await e.append(0, 0, blocks[0]!, checksum(blocks[0]!));
    await e.append(1, 65536, blocks[1]!, checksum(blocks[1]!));
    await e.checkpoint(1);
    await e.append(2, 131072, blocks[2]!, checksum(blocks[2]!)); // never checkpointed: not acknowledged
    await assert.rejects(e.append(5, 0, blocks[0]!, checksum(blocks[0]!)), /out-of-order|Frame 5/);
    await e.close();
    const again = await SpoolEntry.open(spool.dirOf('p1.0'));
    assert.equal(again.ackedThrough, 1);
    assert.equal(again.records, 2);
    assert.equal((await stat(join(spool.dirOf('p1.0'), 'data.log'))).size, again.bytes);
    // A reader (the forwarder's) reads durable records while the receiver appends more.
    const reader = await SpoolReader.open(spool.dirOf('p1.0'), 'p1.0');
    await again.append(2, 131072, blocks[2]!, checksum(blocks[2]!));
    assert.deepEqual(await reader.read(1), { offset: 65536, data: blocks[1], checksum: checksum(blocks[1]!) }, 'record 0 is passed over by its head');
    await again.checkpoint(2, true);
    assert.deepEqual(await reader.read(2), { offset: 131072, data: blocks[2], checksum: checksum(blocks[2]!) });
    await assert.rejects(reader.read(0), (err: Error & { code?: string }) => err.code === 'spool-read-backwards');
    await reader.close();
    // A record damaged on the cache disk is caught by the source's checksum when read.
    const fh = await open(join(spool.dirOf('p1.0'), 'data.log'), 'r+');
    await fh.write(Buffer.from([0xff ^ blocks[0]![10]!]), 0, 1, 44 + 10);
    await fh.close();
    const damaged = await SpoolReader.open(spool.dirOf('p1.0'), 'p1.0');
    await assert.rejects(damaged.read(0), (err: Error & { code?: string }) => err.code === 'spool-checksum-mismatch');
    await damaged.close();
    await again.close();
    assert.deepEqual((await spool.list()).map((t) => [t.transferId, t.complete, t.ackedThrough]), [['p1.0', true, 2]]);
    assert.throws(() => spool.dirOf('../x'), /cannot use/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
