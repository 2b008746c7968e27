// Digest tracker on real sparse files: changed extents are exactly the blocks the test changed,
// holes are not read (qemu-img map) and zero blocks get the zero digest, and random change sets
// over an in-memory disk come back exactly (fast-check).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, open, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { dataExtents, mapImage } from '../../src/datapath/allocation.ts';
import { DIGEST_BYTES, diffDigests, digestFile, digestReader } from '../../src/datapath/digest.ts';
import type { BlockReader } from '../../src/datapath/digest.ts';
import { coalesce } from '../../src/datapath/extents.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const BS = 64 * KiB;
let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'rebound-digest-test-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

async function pwrite(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(path, 'r+');
  try { await fh.write(data, 0, data.length, offset); } finally { await fh.close(); }
}

const SIZE = 40 * MiB + 12345; // not a multiple of the block size
async function makeSource(): Promise<string> {
  const p = join(dir, 'src.raw');
  await (await open(p, 'w')).close();
  await truncate(p, SIZE);
  await pwrite(p, 1 * MiB, randomBytes(3 * MiB)); // data
  await pwrite(p, 10 * MiB, Buffer.alloc(2 * MiB)); // written zeros: allocated but zero
  await pwrite(p, 20 * MiB + 100, randomBytes(5000)); // unaligned small write
  await pwrite(p, SIZE - 7000, randomBytes(7000)); // the partial last block
  return p;
}

test('holes are left unread, written zeros digest as zero, and data blocks get digests', async () => {
  const p = await makeSource();
  const map = await mapImage(p);
  assert.ok(map.some((e) => e.zero), 'the file has holes');
  const data = await dataExtents(p, BS, SIZE);
  // Every written range is covered; the big holes (e.g. 4-10 MiB, 25-40 MiB) are not.
  const covers = (o: number, l: number) => data.some((e) => e.offset <= o && e.offset + e.length >= o + l);
  assert.ok(covers(1 * MiB, 3 * MiB) && covers(20 * MiB + 100, 5000) && covers(SIZE - 7000, 7000));
  assert.ok(!data.some((e) => e.offset < 9 * MiB && e.offset + e.length > 5 * MiB), 'the hole at 4–10 MiB is skipped');
  assert.ok(!data.some((e) => e.offset < 39 * MiB && e.offset + e.length > 26 * MiB), 'the hole at 25–40 MiB is skipped');

  const d = await digestFile(p, { blockSize: BS });
  assert.equal(d.digests.length, Math.ceil(SIZE / BS) * DIGEST_BYTES);
  const isZeroDigest = (block: number) => d.digests.subarray(block * DIGEST_BYTES, (block + 1) * DIGEST_BYTES).every((x) => x === 0);
  assert.ok(!isZeroDigest(1 * MiB / BS) && !isZeroDigest((20 * MiB) / BS) && !isZeroDigest(Math.floor((SIZE - 1) / BS)));
  assert.ok(isZeroDigest(10 * MiB / BS) && isZeroDigest(6 * MiB / BS) && isZeroDigest(30 * MiB / BS));
  // The same answer when the holes are read instead of skipped.
  const full = await digestFile(p, { blockSize: BS, skipHoles: false });
  assert.deepEqual(full.digests, d.digests);
});

test('changed extents are exactly the blocks that were changed, coalesced', async () => {
  const p = await makeSource();
  const before = await digestFile(p, { blockSize: BS });
  const q = join(dir, 'changed.raw');
  await copyFile(p, q);
  const changes: [number, Buffer][] = [
    [1 * MiB + 5, Buffer.from([0xff])], // one byte inside data (flipped below)
    [7 * MiB, randomBytes(2 * BS)], // two blocks in a hole
    [7 * MiB + 2 * BS, randomBytes(10)], // the next block: coalesces with them
    [10 * MiB + BS * 3 + 17, Buffer.from([1])], // inside the written zeros
    [SIZE - 1, Buffer.from([0x42])], // the last byte of the partial last block
  ];
  // Single bytes are flipped, not set, so that a change is a change whatever was there.
  const src = await open(q, 'r');
  for (const c of changes) {
    if (c[1].length !== 1) continue;
    const cur = Buffer.alloc(1);
    await src.read(cur, 0, 1, c[0]);
    c[1] = Buffer.from([cur[0]! ^ c[1][0]!]);
  }
  await src.close();
  for (const [o, b] of changes) await pwrite(q, o, b);
  // Writing the same bytes that were there is not a change.
  const fh = await open(p, 'r');
  const same = Buffer.alloc(4096);
  await fh.read(same, 0, 4096, 2 * MiB);
  await fh.close();
  await pwrite(q, 2 * MiB, same);
  const after = await digestFile(q, { blockSize: BS });
  const lastBlock = Math.floor((SIZE - 1) / BS) * BS;
  assert.deepEqual(diffDigests(before, after), [
    { offset: 1 * MiB, length: BS },
    { offset: 7 * MiB, length: 3 * BS },
    { offset: 10 * MiB + 3 * BS, length: BS },
    { offset: lastBlock, length: SIZE - lastBlock },
  ]);
  assert.deepEqual(diffDigests(after, after), []);
});

test('random change sets come back exactly (fast-check over an in-memory disk)', async () => {
  const bs = 4096;
  const blocks = 64;
  const base = Buffer.concat(Array.from({ length: blocks }, (_, i) => (i % 4 === 0 ? Buffer.alloc(bs) : randomBytes(bs))));
  const reader = (b: Buffer): BlockReader => ({ size: b.length, read: async (o, l) => b.subarray(o, o + l) });
  const d0 = await digestReader(reader(base), { blockSize: bs, readSize: 3 * bs });
  await fc.assert(
    fc.asyncProperty(fc.uniqueArray(fc.nat({ max: blocks - 1 }), { maxLength: 20 }), fc.nat({ max: bs - 1 }), async (changed, at) => {
      const disk = Buffer.from(base);
      for (const b of changed) disk[b * bs + at]! ^= 0x5a;
      const d1 = await digestReader(reader(disk), { blockSize: bs, readSize: 3 * bs });
      assert.deepEqual(diffDigests(d0, d1), coalesce(changed.map((b) => ({ offset: b * bs, length: bs }))));
    }),
    { numRuns: 100 },
  );
});
