// NBD throughput: Rebound's NBD client reading the allocated extents of a qcow2 image through
// qemu-nbd, against `cat IMAGE > /dev/null` (page cache, no NBD) and libnbd's `nbdcopy` from the
// same kind of export; and writing into a fresh qcow2 export, against `nbdcopy` from a raw file.
// Prints one JSON line; measures, asserts nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NbdClient } from '../src/nbd/client.ts';
import { STATE } from '../src/nbd/protocol.ts';
import { serveImage } from '../src/nbd/qemu-nbd.ts';

const quick = process.argv.includes('--quick');
const MiB = 1024 * 1024;
const sizeMiB = quick ? 256 : 1024;
const dataMiB = Math.round(sizeMiB * 0.75);
const dir = mkdtempSync(path.join(tmpdir(), 'rebound-bench-nbd-'));
const image = path.join(dir, 'disk.qcow2');

const mibps = (bytes: number, ms: number): number => Math.round(bytes / MiB / (ms / 1000));

try {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, `${sizeMiB}M`]);
  // Three quarters allocated, in 16 MiB runs with gaps, so block status matters.
  const cmds: string[] = [];
  for (let off = 0, n = 0; n < dataMiB; off += 21, n += 16) cmds.push('-c', `write -P ${(off % 250) + 1} ${off}M 16M`);
  execFileSync('qemu-io', ['-f', 'qcow2', ...cmds, image], { stdio: 'ignore' });
  const fileBytes = statSync(image).size;

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
  const writeMiB = quick ? 128 : 256;
  const src = path.join(dir, 'src.raw');
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

  console.log(JSON.stringify({
    imageMiB: sizeMiB,
    allocatedMiB: Math.round(ours.bytes / MiB),
    qcow2FileMiB: Math.round(fileBytes / MiB),
    'nbdClient.MiBps': mibps(ours.bytes, ours.ms),
    'nbdClient.seconds': +(ours.ms / 1000).toFixed(3),
    'nbdClient.settings': `${ours.requestMiB} MiB requests into reused buffers, ${ours.inFlight} in flight, ${ours.extents} data extents`,
    'cat.MiBps': mibps(fileBytes, catMs),
    'nbdcopy.MiBps': mibps(fileBytes, nbdcopyMs),
    writeMiB,
    'nbdClient.write.MiBps': mibps(writeMiB * MiB, oursWriteMs),
    'nbdcopy.write.MiBps': mibps(writeMiB * MiB, nbdcopyWriteMs),
    note: 'page cache warm; nbdcopy copies the whole export to null: (it skips holes itself); rates use bytes moved; writes go to a qcow2 served with cache=none and end with a flush',
  }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
