// Failback of a QEMU VM after 1 % of its data disk changed at the other site (issue 5): reverse
// replication's first sync by changed-block tracking since the failover (resync mode `cbt`: the
// recovered VM was started with tracking, and the old disks still hold the failover's point)
// against the same sync by block digests (forced by touching the old disk, which makes its
// content unknown to the tracking). One TCG guest is failed over back and forth; before each
// reverse replication 1 % of the disk is written inside the running QEMU (HMP `qemu-io` on the
// disk node, so the writes go through the block layer like the guest's own). Full mode: a 4 GiB
// disk, 3 syncs per method; --quick: 512 MiB, 1 each. The full download and rsync of an image of
// the same size are measured on physical machines by bench/failback.ts. Prints one JSON document
// (with a `markdown` summary) on its last line.
import { mkdir, mkdtemp, readFile, rm, utimes } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fig as figOf } from './lib/common.ts';
import { startServerProcess } from '../test/support/server.ts';
import type { ServerProcess } from '../test/support/server.ts';
import type { Fig } from './lib/common.ts';
import { ensureGuestKit, guestCmdline, makeDataDisk } from '../src/guest/kit.ts';
import { QemuProvider } from '../src/providers/qemu/qemu-provider.ts';
import { QmpClient } from '../src/qmp/client.ts';

const quick = process.argv.includes('--quick');
const RUNS = Number(process.env['REBOUND_BENCH_RUNS'] ?? (quick ? 1 : 3));
const DISK_MIB = quick ? 512 : 4096;
const CHUNK = 256 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const fig = (v: number[]): Fig => figOf(v, 3);

interface Item { id: string; state: string; direction: string; activeSite: string; details: { replication?: { bytesTotal?: number; method?: string }; placements?: Record<string, { disks: { path: string }[] }> } }
interface Job { id: string; state: string; error?: unknown; log: { message: string }[] }

const dir = await mkdtemp(join(tmpdir(), 'rb-fbq-'));
const roots = { dc1: join(dir, 'a'), dc2: join(dir, 'b') };
const providers = { dc1: new QemuProvider({ root: roots.dc1 }), dc2: new QemuProvider({ root: roots.dc2 }) };
let server: ServerProcess | undefined;
const t = performance.now();
const out: Record<string, unknown> = { loadAverageAtStart: loadavg().map((x) => Math.round(x * 10) / 10), diskMiB: DISK_MIB, changedMiB: Math.round(DISK_MIB / 100) };
try {
  for (const d of [roots.dc1, roots.dc2, join(dir, 'vault')]) await mkdir(d, { recursive: true });
  const kit = await ensureGuestKit();
  await makeDataDisk(join(roots.dc1, 'data.qcow2'), { sizeMiB: DISK_MIB });
  // A slow writer: the guest runs and shuts down like a real one, but adds little of its own.
  await providers.dc1.define({ name: 'vm', cpus: 1, memoryMiB: 192, nics: [], disks: [{ path: join(roots.dc1, 'data.qcow2'), format: 'qcow2' }], boot: { kind: 'kernel', kernel: kit.kernel, initrd: kit.initrd, append: guestCmdline({ workload: 'records', rate: 2, disk: '/dev/vda' }) } });
  await providers.dc1.start('vm');
  /** Waits until the VM at a site has booted and writes (an ACPI press before that is lost). */
  const booted = async (at: 'dc1' | 'dc2'): Promise<void> => {
    const log = (await providers[at].state('vm')).consoleLog!;
    for (let i = 0; !/REBOUND seq=\d+ durable/.test(await readFile(log, 'utf8').catch(() => '')); i++) {
      if (i > 2400) throw new Error(`the guest at ${at} did not boot`);
      await sleep(250);
    }
  };
  await booted('dc1');
  server = await startServerProcess({ dataDir: join(dir, 'vault'), timeoutMs: 120_000 });
  const s = server;
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const r = await fetch(`${s.url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${s.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    if (!r.ok) throw new Error(`${method} ${path}: ${await r.text()}`);
    return (await r.json()) as T;
  };
  const wait = async (id: string, want = 'succeeded', timeoutMs = 1_800_000): Promise<Job> => {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const j = await api<Job>('GET', `/jobs/${id}`);
      if (j.state === want) return j;
      if (['failed', 'cancelled', 'succeeded'].includes(j.state)) throw new Error(`job ${id} ended ${j.state}: ${JSON.stringify(j.error ?? j.log.slice(-3))}`);
      if (Date.now() > until) throw new Error(`job ${id} still ${j.state}`);
      await sleep(250);
    }
  };
  const start = async (path: string, body: unknown = {}): Promise<string> => (await api<{ job: { id: string } }>('POST', path, body)).job.id;
  await api('POST', '/sites', { name: 'dc1', provider: 'qemu', root: roots.dc1 });
  await api('POST', '/sites', { name: 'dc2', provider: 'qemu', root: roots.dc2 });
  const sites = (await api<{ items: { id: string; name: string }[] }>('GET', '/sites')).items;
  // The item names its active site; placements are keyed by site id.
  const nameOf = (v: string): 'dc1' | 'dc2' => {
    const n = sites.find((x) => x.id === v || x.name === v)?.name;
    if (n !== 'dc1' && n !== 'dc2') throw new Error(`unknown site ${v}`);
    return n;
  };
  await api('POST', '/policies', { name: 'p', frequency: '10s', retention: '10m', appConsistent: '0s', encryption: 'none' });
  await api('POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'p' });
  await wait(await start('/items/vm/protect'));

  /** Writes 1 % of the disk at random 256 KiB-aligned offsets inside the VM's QEMU. */
  const change = async (at: 'dc1' | 'dc2'): Promise<void> => {
    const qmp = await QmpClient.connect(providers[at].paths('vm').qmp);
    try {
      const chunks = Math.ceil((DISK_MIB * 2 ** 20) / 100 / CHUNK);
      const slots = (DISK_MIB * 2 ** 20) / CHUNK;
      const picked = new Set<number>();
      while (picked.size < chunks) picked.add(Math.floor(Math.random() * slots));
      for (const slot of picked) {
        // Through the virtio-blk device's own backend (the disk node itself is write-locked by it).
        const r = await qmp.execute('human-monitor-command', { 'command-line': `qemu-io -d /machine/peripheral/vd0/virtio-backend "write -P 0x${(slot % 255 + 1).toString(16)} ${slot * CHUNK} ${CHUNK}"` });
        if (typeof r === 'string' && r.trim() !== '' && !r.startsWith('wrote')) throw new Error(`qemu-io: ${r}`);
      }
    } finally {
      await qmp.close();
    }
  };

  const results: Record<'cbt' | 'digests', { seconds: number[]; sentMiB: number[] }> = { cbt: { seconds: [], sentMiB: [] }, digests: { seconds: [], sentMiB: [] } };
  const order: ('cbt' | 'digests')[] = [];
  for (let i = 0; i < RUNS; i++) order.push('cbt', 'digests');
  // Each run: planned failover dc1 → dc2, commit, 1 % changed at dc2, reverse replication
  // dc2 → dc1 (measured), then back: failback synced before and completed, commit (which removes
  // the copies at dc2), reverse replication dc1 → dc2 (a full copy, not measured).
  const sync = async (): Promise<void> => {
    const fo = await start('/items/vm/failover', { mode: 'planned' });
    const j = await api<{ kind: string }>('GET', `/jobs/${fo}`);
    if (j.kind === 'failback-sync') {
      await wait(fo, 'waiting');
      await api('POST', `/jobs/${fo}/complete`);
    }
    await wait(fo);
    await wait(await start('/items/vm/commit'));
  };
  const dc1Id = sites.find((x) => x.name === 'dc1')!.id;
  for (const mode of order) {
    await booted('dc1');
    await sync(); // dc1 → dc2
    const now = await api<Item>('GET', '/items/vm');
    if (nameOf(now.activeSite) !== 'dc2') throw new Error(`the machine runs at ${now.activeSite}, not dc2`);
    await change('dc2');
    if (mode === 'digests') {
      // The old disk changed after the failover as far as anyone can tell: digests it is.
      for (const d of now.details.placements?.[dc1Id]?.disks ?? []) await utimes(d.path, new Date(), new Date());
    }
    const t0 = performance.now();
    const rv = await wait(await start('/items/vm/reverse-replicate'));
    const seconds = (performance.now() - t0) / 1000;
    // What the agent really did (it falls back to digests when tracking cannot stand in).
    const rep = (await api<Item>('GET', '/items/vm')).details.replication;
    if (rep?.method !== mode) throw new Error(`reverse replication sent by ${rep?.method ?? '?'}, not ${mode}: ${JSON.stringify(rv.log.map((l) => l.message))}`);
    const sent = rep.bytesTotal ?? NaN;
    results[mode].seconds.push(seconds);
    results[mode].sentMiB.push(sent / 2 ** 20);
    process.stderr.write(`${mode}: ${seconds.toFixed(1)} s, ${(sent / 2 ** 20).toFixed(1)} MiB sent\n`);
    await booted('dc2');
    await sync(); // dc2 → dc1 (failback)
    await wait(await start('/items/vm/reverse-replicate'));
  }
  const c = { seconds: fig(results.cbt.seconds), sentMiB: fig(results.cbt.sentMiB) };
  const g = { seconds: fig(results.digests.seconds), sentMiB: fig(results.digests.sentMiB) };
  out['cbt'] = c;
  out['digests'] = g;
  out['ratioCbtToDigestsSeconds'] = Math.round((c.seconds.median / g.seconds.median) * 100) / 100;
  out['seconds'] = Math.round((performance.now() - t) / 1000);
  out['markdown'] = [
    `Reverse replication's first sync of a QEMU VM (TCG guest) after ${Math.round(DISK_MIB / 100)} MiB (1 %) of its ${DISK_MIB} MiB data disk changed at the active site, ${RUNS} run(s) per method, median (min–max). Time from \`reverse-replicate\` to the item protected again; "sent" is what the first cycle planned to send.`,
    '',
    '| method | time | sent |',
    '| --- | --- | --- |',
    `| changed-block tracking since the failover (\`cbt\`) | ${c.seconds.median} s (${c.seconds.min}–${c.seconds.max}) | ${c.sentMiB.median} MiB (${c.sentMiB.min}–${c.sentMiB.max}) |`,
    `| block digests of the whole disk (\`digests\`) | ${g.seconds.median} s (${g.seconds.min}–${g.seconds.max}) | ${g.sentMiB.median} MiB (${g.sentMiB.min}–${g.sentMiB.max}) |`,
    '',
    `CBT / digests, time: ${String(out['ratioCbtToDigestsSeconds'])}. The full download and rsync of an image of the same size: the failback section (physical machines). Reproduce: \`npm run bench -- --only failback-qemu\`.`,
  ].join('\n');
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  await server?.stop().catch(() => undefined);
  for (const p of Object.values(providers)) for (const vm of await p.discover().catch(() => [])) await p.powerOff(vm.name).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
}
