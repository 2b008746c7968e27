// Data-path bench (not a test): digest throughput vs `cat`, qemu-img map vs reading to find
// zeros, checksum choice, LUKS key rotation cost, frame encode/decode with and without compression, apply throughput
// into the replica store, and view creation time for 1 GiB vs 16 GiB sparse disks. Prints JSON.
// Usage: node bench/datapath.ts [--mib 512]
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { mapImage } from '../src/datapath/allocation.ts';
import { checksum } from '../src/datapath/checksum.ts';
import { digestFile } from '../src/datapath/digest.ts';
import { decodeFrame, encodeDataFrame } from '../src/datapath/frame.ts';
import { deriveSessionKey, newSessionSalt } from '../src/datapath/frame-key.ts';
import { deriveAtRestKey, ReplicaDisk } from '../src/replica/replica-disk.ts';
import type { ApplyExtent } from '../src/replica/replica-disk.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const argMib = process.argv.indexOf('--mib');
const mib = argMib > 0 ? Number(process.argv[argMib + 1]) : 512;
const dir = await mkdtemp(join(tmpdir(), 'rebound-bench-datapath-'));
const rate = (bytes: number, ms: number): number => Math.round(bytes / MiB / (ms / 1000));
const time = async (fn: () => Promise<unknown>): Promise<number> => { const t = performance.now(); await fn(); return performance.now() - t; };

/** Mixed content like a disk: a third text-like (compressible), a third random, a third zeros. */
function mixedBlock(i: number, size: number): Buffer {
  if (i % 3 === 0) return Buffer.from(`log line ${i} user=42 status=ok latency=${i % 97}ms `.repeat(size / 32 + 1)).subarray(0, size);
  if (i % 3 === 1) return randomBytes(size);
  return Buffer.alloc(size);
}

const out: Record<string, unknown> = { mib, node: process.version };
try {
  // ---- digest vs cat ----
  const img = join(dir, 'img.raw');
  {
    const fh = await open(img, 'w');
    for (let i = 0; i < mib; i++) await fh.write(mixedBlock(i, MiB));
    await fh.close();
  }
  await run('sh', ['-c', `cat ${img} > /dev/null`]); // warm the page cache for both
  const catMs = await time(() => run('sh', ['-c', `cat ${img} > /dev/null`]));
  const digest: Record<string, number> = {};
  for (const bs of [64 * 1024, 256 * 1024, MiB]) digest[`${bs / 1024}KiB`] = rate(mib * MiB, await time(() => digestFile(img, { blockSize: bs })));
  out['digest'] = { catMiBps: rate(mib * MiB, catMs), digestMiBps: digest, note: 'page-cached file, 1/3 zeros' };

  // ---- allocation: qemu-img map vs reading to find zeros, on a sparse 16 GiB file ----
  const sparse = join(dir, 'sparse.raw');
  await (await open(sparse, 'w')).close();
  await truncate(sparse, 16 * 1024 * MiB);
  {
    const fh = await open(sparse, 'r+');
    for (let i = 0; i < 64; i++) await fh.write(randomBytes(MiB), 0, MiB, i * 256 * MiB);
    await fh.close();
  }
  const mapMs = await time(() => mapImage(sparse));
  // Reading to find zeros instead, over 2 GiB of the same file (the whole would take ~8x).
  await truncate(sparse, 2 * 1024 * MiB);
  const read2GiBMs = await time(() => digestFile(sparse, { blockSize: MiB, skipHoles: false }));
  out['allocation'] = { sparse16GiBMapMs: Math.round(mapMs), readToFindZeros2GiBMs: Math.round(read2GiBMs), choice: 'qemu-img map' };

  // ---- checksums ----
  const blk = randomBytes(256 * 1024);
  const N = 1000;
  const shaMs = await time(async () => { for (let i = 0; i < N; i++) createHash('sha256').update(blk).digest(); });
  const b3Ms = await time(async () => { for (let i = 0; i < N; i++) checksum(blk); });
  out['checksum256KiB'] = { sha256MiBps: rate(N * blk.length, shaMs), blake3MiBps: rate(N * blk.length, b3Ms) };

  // ---- frames ----
  const key = deriveSessionKey(randomBytes(32), 'bench', newSessionSalt());
  const blocks = Array.from({ length: 192 }, (_, i) => mixedBlock(i, 256 * 1024));
  const bytes = blocks.length * 256 * 1024;
  const frames: Record<string, unknown> = {};
  for (const level of [null, 1, 3]) {
    let encoded: Buffer[] = [];
    const encMs = await time(async () => { encoded = blocks.map((b, i) => encodeDataFrame(key, i, { itemId: 'i', diskId: 'd', pointId: 'p', offset: i * b.length, data: b }, level)); });
    const decMs = await time(async () => { encoded.forEach((f, i) => decodeFrame(key, f, i)); });
    const wire = encoded.reduce((n, f) => n + f.length, 0);
    frames[level === null ? 'noCompression' : `zstd${level}`] = { encodeMiBps: rate(bytes, encMs), decodeMiBps: rate(bytes, decMs), wireRatio: +(wire / bytes).toFixed(3) };
  }
  out['frames256KiB'] = { ...frames, note: 'mixed data: 1/3 text, 1/3 random, 1/3 zeros' };

  // ---- apply into the replica store ----
  const applyMiB = Math.min(256, mib);
  const apply: Record<string, unknown> = {};
  for (const encrypted of [false, true]) {
    const rdir = join(dir, `rep-${encrypted}`);
    const k = encrypted ? deriveAtRestKey(randomBytes(32), 'k') : undefined;
    const disk = await ReplicaDisk.create(rdir, { size: 1024 * MiB, ...(k ? { key: k } : {}) });
    const extents = function* (): Generator<ApplyExtent> { for (let i = 0; i < applyMiB; i++) yield { offset: i * 2 * MiB, data: mixedBlock(i, MiB) }; };
    const ms = await time(() => disk.applyPoint('p1', extents()));
    apply[encrypted ? 'luks' : 'plain'] = { MiBps: rate(applyMiB * MiB, ms), ms: Math.round(ms) };
    await rm(rdir, { recursive: true, force: true });
  }
  out['apply'] = { ...apply, note: `${applyMiB} MiB in 1 MiB extents through qemu-nbd, flush + fsync, includes overlay creation` };

  // ---- view creation vs disk size ----
  const views: Record<string, number> = {};
  const rotate: Record<string, number> = {};
  for (const gib of [1, 16]) {
    for (const encrypted of [false, true]) {
      const rdir = join(dir, `view-${gib}-${encrypted}`);
      const k = encrypted ? deriveAtRestKey(randomBytes(32), 'k') : undefined;
      const disk = await ReplicaDisk.create(rdir, { size: gib * 1024 * MiB, ...(k ? { key: k } : {}) });
      await disk.applyPoint('p1', [{ offset: 0, data: randomBytes(4 * MiB) }, { offset: (gib * 1024 - 4) * MiB, data: randomBytes(4 * MiB) }]);
      views[`${gib}GiB${encrypted ? 'Luks' : ''}Ms`] = Math.round(await time(() => disk.openView('p1', 'v')));
      if (k) rotate[`${gib}GiB3ImagesMs`] = Math.round(await time(() => disk.rotateKey(deriveAtRestKey(randomBytes(32), 'k2'))));
      await rm(rdir, { recursive: true, force: true });
    }
  }
  out['viewCreate'] = views;
  out['keyRotation'] = { ...rotate, note: 'base + one point + one view; keyslot add + remove per image, no data rewritten' };
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out, null, 1));
