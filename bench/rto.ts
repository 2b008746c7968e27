// RTO (issue 5): the time from `POST /items/M/failover` (unplanned, latest point) to QEMU
// running at the recovery site, and to the guest's workload writing there again (its `REBOUND
// ready` line), for a VM whose data disk is 1 GiB and one whose disk is 16 GiB (sparse qcow2 with
// the same records on it). Failover exports the point copy-on-write, so both should take the same
// time. Full mode: 3 runs per size; --quick: 1 run per size with 1 and 4 GiB. Prints one JSON
// document (with a `markdown` summary) on its last line.
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fig as figOf } from './lib/common.ts';
import { startServerProcess } from '../test/support/server.ts';
import type { ServerProcess } from '../test/support/server.ts';
import type { Fig } from './lib/common.ts';
import { ensureGuestKit, guestCmdline, makeDataDisk } from '../src/guest/kit.ts';
import { QemuProvider } from '../src/providers/qemu/qemu-provider.ts';

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 3;
const SIZES_GIB = quick ? [1, 4] : [1, 16];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const fig = (v: number[]): Fig => figOf(v, 3);

async function once(gib: number): Promise<{ toQemu: number; toWriting: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'rb-rto-'));
  const prim = new QemuProvider({ root: join(dir, 'a') });
  const rec = new QemuProvider({ root: join(dir, 'b') });
  let server: ServerProcess | undefined;
  try {
    for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
    const kit = await ensureGuestKit();
    await makeDataDisk(join(dir, 'a', 'data.qcow2'), { sizeMiB: gib * 1024 });
    await prim.define({ name: 'vm', cpus: 1, memoryMiB: 192, nics: [], disks: [{ path: join(dir, 'a', 'data.qcow2'), format: 'qcow2' }], boot: { kind: 'kernel', kernel: kit.kernel, initrd: kit.initrd, append: guestCmdline({ workload: 'records', rate: 50, disk: '/dev/vda' }) } });
    await prim.start('vm');
    server = await startServerProcess({ dataDir: join(dir, 'vault'), timeoutMs: 120_000 });
    const s = server;
    const api = async (method: string, path: string, body?: unknown): Promise<unknown> => {
      const r = await fetch(`${s.url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${s.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
      if (!r.ok) throw new Error(`${method} ${path}: ${await r.text()}`);
      return r.json();
    };
    await api('POST', '/sites', { name: 'dc1', provider: 'qemu', root: join(dir, 'a') });
    await api('POST', '/sites', { name: 'dc2', provider: 'qemu', root: join(dir, 'b') });
    await api('POST', '/policies', { name: 'p', frequency: '5s', retention: '1m', appConsistent: '0s' });
    await api('POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'p' });
    await api('POST', '/items/vm/protect', {});
    for (let i = 0; ; i++) {
      const ps = (await api('GET', '/items/vm/points')) as { items: unknown[] };
      if (ps.items.length >= 2) break;
      if (i > 600) throw new Error('no points in time');
      await sleep(500);
    }
    const t0 = performance.now();
    await api('POST', '/items/vm/failover', { mode: 'unplanned', point: 'latest' });
    let toQemu = NaN;
    const log = join(dir, 'b', 'vms', 'vm', 'run', 'serial.log');
    for (let i = 0; ; i++) {
      if (Number.isNaN(toQemu)) {
        const st = await rec.state('vm').catch(() => null);
        if (st && st.state !== 'stopped') toQemu = (performance.now() - t0) / 1000;
      }
      if (/REBOUND ready workload=records/.test(await readFile(log, 'utf8').catch(() => ''))) break;
      if (i > 3000) throw new Error('the recovered guest did not start writing');
      await sleep(50);
    }
    return { toQemu, toWriting: (performance.now() - t0) / 1000 };
  } finally {
    await server?.stop().catch(() => undefined);
    for (const p of [prim, rec]) for (const vm of await p.discover().catch(() => [])) await p.powerOff(vm.name).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

const t = performance.now();
const out: Record<string, unknown> = { loadAverageAtStart: loadavg().map((x) => Math.round(x * 10) / 10) };
const rows: string[] = [];
for (const gib of SIZES_GIB) {
  const q: number[] = [];
  const w: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const x = await once(gib);
    q.push(x.toQemu);
    w.push(x.toWriting);
  }
  out[`${gib}GiB`] = { commandToQemuSeconds: fig(q), commandToWritingSeconds: fig(w) };
  rows.push(`| ${gib} GiB | ${fig(q).median} s (${fig(q).min}–${fig(q).max}) | ${fig(w).median} s (${fig(w).min}–${fig(w).max}) |`);
}
const [small, big] = SIZES_GIB.map((g) => (out[`${g}GiB`] as { commandToWritingSeconds: Fig }).commandToWritingSeconds.median);
out['ratioLargeToSmall'] = Math.round(((big ?? NaN) / (small ?? NaN)) * 100) / 100;
out['seconds'] = Math.round((performance.now() - t) / 1000);
out['markdown'] = [
  `RTO of an unplanned failover from the latest point, TCG guest (records workload), ${RUNS} run(s) per size, median (min–max). The guest's boot under TCG is most of "to writing".`,
  '',
  '| data disk | command → QEMU running at the recovery site | command → workload writing there |',
  '| --- | --- | --- |',
  ...rows,
  '',
  `Large / small disk, to writing: ${String(out['ratioLargeToSmall'])} (aim: within 20 %); command → QEMU aim ≤ 2 s. Reproduce: \`npm run bench -- --only rto\`.`,
].join('\n');
process.stdout.write(`${JSON.stringify(out)}\n`);
