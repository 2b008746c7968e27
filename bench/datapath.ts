// Data-path bench (not a test): digest throughput vs `cat`, qemu-img map vs reading to find
// zeros, checksum choice, frame encode/decode with and without compression, apply throughput into
// the replica store, view creation time and LUKS key rotation for 1 GiB vs 16 GiB sparse disks.
// Each figure is measured in every run (3 in full mode) and given as median (min–max, n), beside
// its reference from the same run. Prints one JSON document on its last line; asserts nothing.
// Usage: node bench/datapath.ts [--quick | --smoke] [--runs N]
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapImage } from '../src/datapath/allocation.ts';
import { checksum } from '../src/datapath/checksum.ts';
import { digestFile } from '../src/datapath/digest.ts';
import { decodeFrame, encodeDataFrame } from '../src/datapath/frame.ts';
import { deriveSessionKey, newSessionSalt } from '../src/datapath/frame-key.ts';
import { deriveAtRestKey, ReplicaDisk } from '../src/replica/replica-disk.ts';
import type { ApplyExtent } from '../src/replica/replica-disk.ts';
import { benchMode, commit, fig, load, MiB, run, show } from './lib/common.ts';
import type { Fig } from './lib/common.ts';

const mode = benchMode();
const SIZES = {
  full: { runs: 3, mib: 512, sparseGiB: 16, readGiB: 2, applyMiB: 256, viewGiB: [1, 16] },
  quick: { runs: 3, mib: 256, sparseGiB: 16, readGiB: 1, applyMiB: 128, viewGiB: [1, 16] },
  smoke: { runs: 1, mib: 16, sparseGiB: 1, readGiB: 0.125, applyMiB: 8, viewGiB: [1] },
}[mode];
const runsArg = process.argv.indexOf('--runs');
const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : SIZES.runs;
if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: '${process.argv[runsArg + 1]}' is not a whole number of at least 1.`);
const loadAtStart = load();

const dir = await mkdtemp(join(tmpdir(), 'rebound-bench-datapath-'));
const rate = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000);
const time = async (fn: () => Promise<unknown>): Promise<number> => { const t = performance.now(); await fn(); return performance.now() - t; };

/** Mixed content like a disk: a third text-like (compressible), a third random, a third zeros. */
function mixedBlock(i: number, size: number): Buffer {
  if (i % 3 === 0) return Buffer.from(`log line ${i} user=42 status=ok latency=${i % 97}ms `.repeat(size / 32 + 1)).subarray(0, size);
  if (i % 3 === 1) return randomBytes(size);
  return Buffer.alloc(size);
}

/** One run: every figure once, by name. */
async function measure(img: string): Promise<Record<string, number>> {
  const r: Record<string, number> = {};
  // ---- digest vs cat (page cache warm for both) ----
  await run('sh', ['-c', `cat ${img} > /dev/null`]);
  r['digest.catMiBps'] = rate(SIZES.mib * MiB, await time(() => run('sh', ['-c', `cat ${img} > /dev/null`])));
  for (const bs of [64 * 1024, 256 * 1024, MiB]) r[`digest.${bs / 1024}KiB.MiBps`] = rate(SIZES.mib * MiB, await time(() => digestFile(img, { blockSize: bs })));

  // ---- allocation: qemu-img map vs reading to find zeros, on a sparse file ----
  const sparse = join(dir, 'sparse.raw');
  await rm(sparse, { force: true });
  await (await open(sparse, 'w')).close();
  await truncate(sparse, SIZES.sparseGiB * 1024 * MiB);
  {
    const fh = await open(sparse, 'r+');
    for (let i = 0; i < 64; i++) await fh.write(randomBytes(MiB), 0, MiB, Math.floor((i * SIZES.sparseGiB * 1024) / 64) * MiB);
    await fh.close();
  }
  r['allocation.mapMs'] = await time(() => mapImage(sparse));
  // Reading to find zeros instead, over part of the same file (the whole would take longer still).
  await truncate(sparse, Math.round(SIZES.readGiB * 1024) * MiB);
  r['allocation.readToFindZerosMs'] = await time(() => digestFile(sparse, { blockSize: MiB, skipHoles: false }));
  await rm(sparse, { force: true });

  // ---- checksums of 256 KiB blocks ----
  const blk = randomBytes(256 * 1024);
  const N = 1000;
  r['checksum.sha256MiBps'] = rate(N * blk.length, await time(async () => { for (let i = 0; i < N; i++) createHash('sha256').update(blk).digest(); }));
  r['checksum.blake3MiBps'] = rate(N * blk.length, await time(async () => { for (let i = 0; i < N; i++) checksum(blk); }));

  // ---- frames of 256 KiB, mixed data ----
  const key = deriveSessionKey(randomBytes(32), 'bench', newSessionSalt());
  const blocks = Array.from({ length: 192 }, (_, i) => mixedBlock(i, 256 * 1024));
  const bytes = blocks.length * 256 * 1024;
  for (const level of [null, 1, 3]) {
    const name = level === null ? 'noCompression' : `zstd${level}`;
    let encoded: Buffer[] = [];
    r[`frames.${name}.encodeMiBps`] = rate(bytes, await time(async () => { encoded = blocks.map((b, i) => encodeDataFrame(key, i, { itemId: 'i', diskId: 'd', pointId: 'p', offset: i * b.length, data: b }, level)); }));
    r[`frames.${name}.decodeMiBps`] = rate(bytes, await time(async () => { encoded.forEach((f, i) => decodeFrame(key, f, i)); }));
    r[`frames.${name}.wireRatio`] = encoded.reduce((n, f) => n + f.length, 0) / bytes;
  }

  // ---- apply into the replica store: 1 MiB extents through qemu-nbd, flush + fsync, overlay creation ----
  for (const encrypted of [false, true]) {
    const rdir = join(dir, `rep-${encrypted}`);
    const k = encrypted ? deriveAtRestKey(randomBytes(32), 'k') : undefined;
    const disk = await ReplicaDisk.create(rdir, { size: 1024 * MiB, ...(k ? { key: k } : {}) });
    const extents = function* (): Generator<ApplyExtent> { for (let i = 0; i < SIZES.applyMiB; i++) yield { offset: i * 2 * MiB, data: mixedBlock(i, MiB) }; };
    r[`apply.${encrypted ? 'luks' : 'plain'}.MiBps`] = rate(SIZES.applyMiB * MiB, await time(() => disk.applyPoint('p1', extents())));
    await rm(rdir, { recursive: true, force: true });
  }

  // ---- view creation and key rotation vs disk size ----
  for (const gib of SIZES.viewGiB) {
    for (const encrypted of [false, true]) {
      const rdir = join(dir, `view-${gib}-${encrypted}`);
      const k = encrypted ? deriveAtRestKey(randomBytes(32), 'k') : undefined;
      const disk = await ReplicaDisk.create(rdir, { size: gib * 1024 * MiB, ...(k ? { key: k } : {}) });
      await disk.applyPoint('p1', [{ offset: 0, data: randomBytes(4 * MiB) }, { offset: (gib * 1024 - 4) * MiB, data: randomBytes(4 * MiB) }]);
      r[`view.${gib}GiB${encrypted ? 'Luks' : ''}Ms`] = await time(() => disk.openView('p1', 'v'));
      if (k) r[`keyRotation.${gib}GiB3ImagesMs`] = await time(() => disk.rotateKey(deriveAtRestKey(randomBytes(32), 'k2')));
      await rm(rdir, { recursive: true, force: true });
    }
  }
  return r;
}

const started = performance.now();
const out: Record<string, unknown> = { mode, runs, mib: SIZES.mib, node: process.version };
try {
  const img = join(dir, 'img.raw');
  {
    const fh = await open(img, 'w');
    for (let i = 0; i < SIZES.mib; i++) await fh.write(mixedBlock(i, MiB));
    await fh.close();
  }
  const all: Record<string, number>[] = [];
  for (let i = 0; i < runs; i++) {
    process.stderr.write(`[datapath] run ${i + 1}/${runs}\n`);
    all.push(await measure(img));
  }
  const figs: Record<string, Fig> = {};
  for (const k of Object.keys(all[0]!)) figs[k] = fig(all.map((r) => r[k]!));
  Object.assign(out, figs);
  const f = (k: string, unit = ''): string => show(figs[k]!, unit);
  const ratio = (a: string, b: string): string => show(fig(all.map((r) => r[a]! / r[b]!)), ' ×');
  const c = await commit();
  out['commit'] = c;
  out['loadAverageAtStart'] = loadAtStart;
  const rows: string[] = [
    '| figure | Rebound | reference (same run) | ratio |',
    '| --- | --- | --- | --- |',
    ...[64, 256, 1024].map((kib) => `| digest pass of a page-cached ${SIZES.mib} MiB file (1/3 zeros), ${kib} KiB blocks, MiB/s | ${f(`digest.${kib}KiB.MiBps`)} | cat: ${f('digest.catMiBps')} | ${ratio(`digest.${kib}KiB.MiBps`, 'digest.catMiBps')} of cat |`),
    `| find the data of a sparse ${SIZES.sparseGiB} GiB file (64 MiB of data): qemu-img map, ms | ${f('allocation.mapMs')} | reading ${SIZES.readGiB} GiB of it to find zeros: ${f('allocation.readToFindZerosMs')} | ${ratio('allocation.readToFindZerosMs', 'allocation.mapMs')} faster to map |`,
    `| BLAKE3 of 256 KiB blocks, MiB/s | ${f('checksum.blake3MiBps')} | SHA-256: ${f('checksum.sha256MiBps')} | ${ratio('checksum.blake3MiBps', 'checksum.sha256MiBps')} |`,
    ...['noCompression', 'zstd1', 'zstd3'].map((n) => `| frame seal (AES-256-GCM${n === 'noCompression' ? '' : `, ${n}`}) / open of 256 KiB mixed blocks, MiB/s; wire / data | ${f(`frames.${n}.encodeMiBps`)} / ${f(`frames.${n}.decodeMiBps`)}; ${f(`frames.${n}.wireRatio`)} | — | — |`),
    `| apply ${SIZES.applyMiB} MiB in 1 MiB extents into the replica store (qemu-nbd, flush, fsync, overlay creation), plain / LUKS, MiB/s | ${f('apply.plain.MiBps')} / ${f('apply.luks.MiBps')} | — | ${ratio('apply.luks.MiBps', 'apply.plain.MiBps')} LUKS / plain |`,
    ...SIZES.viewGiB.map((g) => `| open a bootable view of a ${g} GiB replica, plain / LUKS, ms | ${f(`view.${g}GiBMs`)} / ${f(`view.${g}GiBLuksMs`)} | — | — |`),
    ...SIZES.viewGiB.map((g) => `| rotate the at-rest key of a ${g} GiB replica (base + point + view), ms | ${f(`keyRotation.${g}GiB3ImagesMs`)} | — | — |`),
  ];
  out['markdown'] = [
    `The pieces of the data path one by one, on this machine: ${runs} run(s) of each figure, median (min–max, n), each beside its reference from the same run. The digest block is what the physical provider compares (64 KiB, chosen for wire bytes, not speed: see the replication section); the view and rotation rows show both are independent of the disk size.`,
    '',
    ...rows,
    '',
    `Load average [${loadAtStart.join(',')}] at start, [${load().join(',')}] at end; ${Math.round((performance.now() - started) / 1000)} s; commit ${c}. Reproduce: \`nice -n 10 npm run bench -- --only datapath\` (\`node bench/datapath.ts --quick\` or \`--smoke\`: smaller sizes).`,
  ].join('\n');
} finally {
  await rm(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
