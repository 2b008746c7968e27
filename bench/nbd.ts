// NBD throughput: Rebound's NBD client reading the allocated extents of a qcow2 image through
// qemu-nbd, against `cat IMAGE > /dev/null` (page cache, no NBD) and libnbd's `nbdcopy` from the
// same kind of export; and writing into a fresh qcow2 export, against `nbdcopy` from a raw file.
// Each figure is measured in every run (3, 1 with --smoke): median (min–max, n). Prints one JSON
// line; measures, asserts nothing. Usage: node bench/nbd.ts [--quick | --smoke]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NbdClient } from '../src/nbd/client.ts';
import { STATE } from '../src/nbd/protocol.ts';
import { serveImage } from '../src/nbd/qemu-nbd.ts';
import { benchMode, commit, fig, load, show } from './lib/common.ts';
import type { Fig } from './lib/common.ts';

const mode = benchMode();
const runs = mode === 'smoke' ? 1 : 3;
const loadAtStart = load();
const started = performance.now();
const MiB = 1024 * 1024;
const sizeMiB = mode === 'smoke' ? 64 : mode === 'quick' ? 256 : 1024;
const dataMiB = Math.round(sizeMiB * 0.75);
const dir = mkdtempSync(path.join(tmpdir(), 'rebound-bench-nbd-'));
const image = path.join(dir, 'disk.qcow2');

const mibps = (bytes: number, ms: number): number => bytes / MiB / (ms / 1000);

try {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, `${sizeMiB}M`]);
  // Three quarters allocated, in 16 MiB runs with gaps, so block status matters.
  const cmds: string[] = [];
  for (let off = 0, n = 0; n < dataMiB; off += 21, n += 16) cmds.push('-c', `write -P ${(off % 250) + 1} ${off}M 16M`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...cmds, image], { stdio: 'ignore' });
  const fileBytes = statSync(image).size;

  /** One run: every figure once. */
  const measure = async () => {
    spawnSync('sh', ['-c', `cat '${image}' > /dev/null`]); // warm the page cache for all three
    let t0 = performance.now();
    spawnSync('sh', ['-c', `cat '${image}' > /dev/null`]);
    const catMs = performance.now() - t0;

    const served = await serveImage(image, { format: 'qcow2', persistent: true });
    let ours: { bytes: number; ms: number; extents: number; requestMiB: number; inFlight: number };
    let nbdcopyMs: number;
    try {
      const c = await NbdClient.connect(served.address, { metaContexts: ['base:allocation'] });
      t0 = performance.now();
      const extents = (await c.blockStatusAll('base:allocation')).filter((e) => !(e.flags & STATE.ZERO));
      const requestMiB = 4;
      const inFlight = 16;
      // Reused destination buffers, as a copier would use them (fresh 4 MiB allocations cost
      // page faults that halve the rate here).
      const pool = Array.from({ length: inFlight }, () => Buffer.allocUnsafe(requestMiB * MiB));
      let bytes = 0;
      let k = 0;
      const queue: Promise<number>[] = [];
      for (const e of extents) {
        for (let off = e.offset; off < e.offset + e.length; off += requestMiB * MiB) {
          const buf = pool[k++ % inFlight]!.subarray(0, Math.min(requestMiB * MiB, e.offset + e.length - off));
          queue.push(c.readInto(off, buf).then(() => buf.length));
          if (queue.length >= inFlight) bytes += await queue.shift()!;
        }
      }
      while (queue.length > 0) bytes += await queue.shift()!;
      ours = { bytes, ms: performance.now() - t0, extents: extents.length, requestMiB, inFlight };
      await c.disconnect();

      t0 = performance.now();
      execFileSync('nbdcopy', [`nbd+unix:///?socket=${served.address.path}`, 'null:']);
      nbdcopyMs = performance.now() - t0;
    } finally {
      await served.close();
    }

    // Writes: the replica side of replication. 4 MiB writes, 8 in flight, then one flush.
    const writeMiB = mode === 'smoke' ? 32 : mode === 'quick' ? 128 : 256;
    const src = path.join(dir, 'src.raw');
    rmSync(src, { force: true });
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, src]);
    execFileSync('truncate', ['-s', `${writeMiB}M`, src]);
    const payload = Buffer.alloc(4 * MiB);
    for (let i = 0; i < payload.length; i += 8) payload.writeUInt32LE(i * 2654435761 >>> 0, i);
    const timeWrite = async (fn: (address: { path: string }) => Promise<void>): Promise<number> => {
      const target = path.join(dir, 'target.qcow2');
      rmSync(target, { force: true });
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', target, `${writeMiB}M`]);
      const out = await serveImage(target, { format: 'qcow2', readOnly: false, persistent: true, cache: 'none' });
      try {
        const t = performance.now();
        await fn(out.address);
        return performance.now() - t;
      } finally {
        await out.close();
      }
    };
    const oursWriteMs = await timeWrite(async (address) => {
      const c = await NbdClient.connect(address);
      const q: Promise<void>[] = [];
      for (let off = 0; off < writeMiB * MiB; off += payload.length) {
        q.push(c.write(off, payload));
        if (q.length >= 8) await q.shift();
      }
      await Promise.all(q);
      await c.flush();
      await c.disconnect();
    });
    const nbdcopyWriteMs = await timeWrite(async (address) => {
      execFileSync('nbdcopy', ['--flush', src, `nbd+unix:///?socket=${address.path}`]);
    });

    return {
      allocatedMiB: ours.bytes / MiB,
      settings: `${ours.requestMiB} MiB requests into reused buffers, ${ours.inFlight} in flight, ${ours.extents} data extents`,
      writeMiB,
      figures: {
        'nbdClient.MiBps': mibps(ours.bytes, ours.ms),
        'cat.MiBps': mibps(fileBytes, catMs),
        'nbdcopy.MiBps': mibps(fileBytes, nbdcopyMs),
        'nbdClient.write.MiBps': mibps(writeMiB * MiB, oursWriteMs),
        'nbdcopy.write.MiBps': mibps(writeMiB * MiB, nbdcopyWriteMs),
      } as Record<string, number>,
    };
  };
  const results: Awaited<ReturnType<typeof measure>>[] = [];
  for (let i = 0; i < runs; i++) {
    process.stderr.write(`[nbd] run ${i + 1}/${runs}\n`);
    results.push(await measure());
  }
  const first = results[0]!;
  const figs: Record<string, Fig> = {};
  for (const k of Object.keys(first.figures)) figs[k] = fig(results.map((r) => r.figures[k]!));
  const f = (k: string): string => show(figs[k]!);
  const ratio = (a: string, b: string): string => show(fig(results.map((r) => r.figures[a]! / r.figures[b]!)));
  const c = await commit();
  const markdown = [
    `Rebound's NBD client (the replica store's reads and writes go through it and qemu-nbd): ${runs} run(s), median (min–max, n), MiB/s, each beside libnbd's \`nbdcopy\` from the same run. Reads: the ${Math.round(first.allocatedMiB)} MiB of data of a ${sizeMiB} MiB qcow2 image (page cache warm; ${first.settings}). Writes: ${first.writeMiB} MiB into a fresh qcow2 served with cache=none, ending with a flush.`,
    '',
    '| figure | Rebound | reference (same run) | ratio |',
    '| --- | --- | --- | --- |',
    `| read the allocated data through qemu-nbd, MiB/s | ${f('nbdClient.MiBps')} | nbdcopy to null: ${f('nbdcopy.MiBps')}; cat of the qcow2 file (no NBD): ${f('cat.MiBps')} | ${ratio('nbdClient.MiBps', 'nbdcopy.MiBps')} × nbdcopy |`,
    `| write 4 MiB requests, 8 in flight, then flush, MiB/s | ${f('nbdClient.write.MiBps')} | nbdcopy --flush from a raw file: ${f('nbdcopy.write.MiBps')} | ${ratio('nbdClient.write.MiBps', 'nbdcopy.write.MiBps')} × nbdcopy |`,
    '',
    `Load average [${loadAtStart.join(',')}] at start, [${load().join(',')}] at end; ${Math.round((performance.now() - started) / 1000)} s; commit ${c}. Reproduce: \`nice -n 10 npm run bench -- --only nbd\` (\`node bench/nbd.ts --quick\` or \`--smoke\`: smaller sizes).`,
  ].join('\n');
  console.log(JSON.stringify({
    mode,
    runs,
    imageMiB: sizeMiB,
    allocatedMiB: Math.round(first.allocatedMiB),
    qcow2FileMiB: Math.round(fileBytes / MiB),
    writeMiB: first.writeMiB,
    ...figs,
    commit: c,
    loadAverageAtStart: loadAtStart,
    markdown,
  }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
