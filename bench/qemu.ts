// Bench: the qemu provider. Guest boot time (start → the guest's "REBOUND ready") with the
// accelerator the provider's probe picks (KVM where it works, TCG here), and the time to take
// and release a consistent point of a running VM with 4 disks while its guest writes.
// Prints one JSON document on its last line; asserts nothing. `--quick` does fewer rounds.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureGuestKit, guestCmdline, makeDataDisk } from '../src/guest/kit.ts';
import { QemuProvider } from '../src/providers/qemu/qemu-provider.ts';
import { readFile } from 'node:fs/promises';

const quick = process.argv.includes('--quick');
const boots = quick ? 2 : 4;
const points = quick ? 5 : 20;

async function waitFor(log: string, re: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(await readFile(log, 'utf8').catch(() => ''))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} in ${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const stats = (xs: number[]): { n: number; median: number; min: number; max: number } => {
  const s = [...xs].sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 10) / 10;
  return { n: s.length, median: r(s[Math.floor(s.length / 2)]!), min: r(s[0]!), max: r(s[s.length - 1]!) };
};

const dir = await mkdtemp(join(tmpdir(), 'rb-bq-'));
const p = new QemuProvider({ root: join(dir, 'site') });
try {
  const kit = await ensureGuestKit();
  // Boot time.
  await p.define({
    name: 'boot', cpus: 1, memoryMiB: 192, disks: [], nics: [],
    boot: { kind: 'kernel', kernel: kit.kernel, initrd: kit.initrd, append: guestCmdline({ workload: 'none' }) },
  });
  const bootMs: number[] = [];
  for (let i = 0; i < boots; i++) {
    const t0 = performance.now();
    const info = await p.start('boot');
    await waitFor(info.consoleLog!, /REBOUND ready/, 120_000);
    bootMs.push(performance.now() - t0);
    await p.powerOff('boot');
    await rm(info.consoleLog!, { force: true });
  }

  // A point of 4 disks (256 MiB each), the guest writing records to the first.
  const disks = [];
  for (let i = 0; i < 4; i++) {
    const path = join(dir, `d${i}.qcow2`);
    await makeDataDisk(path, { sizeMiB: 256 });
    disks.push({ path, format: 'qcow2' as const });
  }
  await p.define({
    name: 'four', cpus: 1, memoryMiB: 192, disks, nics: [],
    boot: { kind: 'kernel', kernel: kit.kernel, initrd: kit.initrd, append: guestCmdline({ workload: 'records', rate: 200 }) },
  });
  const info = await p.start('four');
  await waitFor(info.consoleLog!, /REBOUND seq=\d+ durable/, 120_000);
  await p.startTracking('four');
  const first = await p.takePoint('four');
  await p.releasePoint(first, { consumed: true });
  const takeMs: number[] = [];
  const releaseMs: number[] = [];
  const dirtyMiB: number[] = [];
  for (let i = 0; i < points; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const t0 = performance.now();
    const pt = await p.takePoint('four');
    takeMs.push(performance.now() - t0);
    const c = pt.disks[0]!.changes;
    if (c.kind === 'extents') dirtyMiB.push(c.extents.reduce((s, e) => s + e.length, 0) / 2 ** 20);
    const t1 = performance.now();
    await p.releasePoint(pt, { consumed: true });
    releaseMs.push(performance.now() - t1);
  }
  await p.powerOff('four');
  console.log(JSON.stringify({
    accel: p.lastAccel,
    bootToReadyMs: stats(bootMs),
    point4Disks: {
      diskMiB: 256,
      takeMs: stats(takeMs),
      releaseMs: stats(releaseMs),
      dirtyMiBPerPoint: stats(dirtyMiB),
      note: 'take = QMP transaction (bitmap rotate + fleecing backup) across 4 disks, NBD exports, and reading each disk\'s dirty extents',
    },
  }));
} finally {
  for (const vm of await p.discover().catch(() => [])) await p.powerOff(vm.name).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
