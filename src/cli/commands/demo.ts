// `rebound demo`: the quickest way to see Rebound work. Two local qemu sites, a tiny Linux VM
// writing numbered, checksummed records to its disk, and the whole life of a protected machine
// through a real `rebound serve` — protect, drill, planned failover, commit, reverse replication,
// failback and commit — narrated step by step, with the record numbers that prove nothing was
// lost. Everything lives under one directory (default ./.rebound-demo); --keep leaves the server
// and the VM running at the end.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { ensureGuestKit, guestCmdline, makeDataDisk } from '../../guest/kit.ts';
import { verifyDisk } from '../../guest/verify.ts';
import { QemuProvider } from '../../providers/qemu/qemu-provider.ts';
import { CliError } from '../cli-error.ts';
import { EXIT } from '../exit-codes.ts';

const BIN = resolve(import.meta.dirname, '../../../bin/rebound');
const VM = 'web1';

interface Job { id: string; state: string; tasks: { name: string; state: string; startedAt: number | null; finishedAt: number | null }[]; error?: { message: string }; log?: { message: string }[] }

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('two local sites, a real tiny VM writing records, protected, failed over and back — narrated')
    .option('--dir <dir>', 'where the demo keeps its sites and vault', '.rebound-demo')
    .option('--keep', 'leave the server and the VM running at the end')
    .action(async (o: { dir: string; keep?: boolean }) => {
      await runDemo(resolve(o.dir), o.keep === true);
    });
}

const say = (s: string): void => { process.stdout.write(`${s}\n`); };
const step = (n: number, s: string): void => say(`\n${n}. ${s}`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function runDemo(dir: string, keep: boolean): Promise<void> {
  const t0 = Date.now();
  say(`Rebound demo in ${dir}: site dc1 (primary) and site dc2 (recovery) on this machine.`);
  say(`The VM "${VM}" writes numbered records (4 KiB each, with a checksum) to its disk, 50 a second;`);
  say('the record numbers show what each copy holds, so "nothing lost" can be checked, not believed.');
  await rm(dir, { recursive: true, force: true });
  for (const d of ['dc1', 'dc2', 'vault']) await mkdir(resolve(dir, d), { recursive: true });
  const dc1 = new QemuProvider({ root: resolve(dir, 'dc1') });
  const dc2 = new QemuProvider({ root: resolve(dir, 'dc2') });
  let server: { url: string; token: string; proc: ChildProcess } | undefined;
  try {
    step(1, `Start ${VM} at dc1.`);
    const kit = await ensureGuestKit();
    const disk = resolve(dir, 'dc1', `${VM}-data.qcow2`);
    await makeDataDisk(disk, { sizeMiB: 64 });
    await dc1.define({
      name: VM, cpus: 1, memoryMiB: 192, nics: [],
      disks: [{ path: disk, format: 'qcow2' }],
      boot: { kind: 'kernel', kernel: kit.kernel, initrd: kit.initrd, append: guestCmdline({ workload: 'records', rate: 50, disk: '/dev/vda' }) },
    });
    const info = await dc1.start(VM);
    await waitLog(info.consoleLog!, /REBOUND seq=\d+ durable/, 120_000);
    say(`   ${VM} booted (QEMU pid ${info.pid}) and writes records; its console is ${info.consoleLog}.`);

    step(2, 'Start the vault (rebound serve: API, process server and master target in one process).');
    server = await startServer(resolve(dir, 'vault'));
    say(`   ${server.url}  (admin token in ${resolve(dir, 'vault', 'admin.token')})`);
    const api = client(server.url, server.token);
    await api('POST', '/sites', { name: 'dc1', provider: 'qemu', root: resolve(dir, 'dc1') });
    await api('POST', '/sites', { name: 'dc2', provider: 'qemu', root: resolve(dir, 'dc2') });
    await api('POST', '/policies', { name: 'demo', frequency: '5s', retention: '1m', appConsistent: '0s' });
    await api('POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'demo' });
    say('   sites dc1 and dc2 paired under policy "demo": a recovery point every 5 s, kept for 1 min, AES-256-GCM on the wire and at rest.');

    step(3, `Protect ${VM}: initial replication (allocated data only), then a point every 5 s.`);
    await follow(api, 'POST', `/items/${VM}/protect`);
    await waitUntil(async () => (await points(api)).length >= 2, 60_000);
    const it = (await api('GET', `/items/${VM}`)) as { rpoSeconds: number | null; health: string };
    say(`   ${(await points(api)).length} recovery points at dc2; RPO ${it.rpoSeconds ?? '?'} s, health ${it.health}.`);

    step(4, 'Test failover (a DR drill): a copy boots at dc2 in an isolated network; replication keeps running.');
    await follow(api, 'POST', `/items/${VM}/test-failover`, { point: 'latest' });
    const test = await dc2.state(`${VM}-test`);
    const testSeq = await readyResume(test.consoleLog!, 0);
    say(`   ${VM}-test booted from the point and found records 1..${testSeq} intact; it continues writing on its own copy.`);
    await follow(api, 'POST', `/items/${VM}/test-cleanup`, { notes: `demo drill: booted, records 1..${testSeq} intact` });
    say('   drill cleaned up; its notes stay on the job.');

    step(5, 'Planned failover to dc2: shut down at dc1, send the last changes, start at dc2 — zero data loss.');
    await follow(api, 'POST', `/items/${VM}/failover`, { mode: 'planned' });
    const last = (await verifyDisk(disk)).highestContiguousSeq;
    const rec = await dc2.state(VM);
    const resumed = await readyResume(rec.consoleLog!, 0);
    say(`   the source's disk ended at record ${last}; ${VM} at dc2 resumed after record ${resumed}: ${resumed === last ? 'nothing lost' : `${last - resumed} records MISSING`}.`);

    step(6, 'Commit: the machine at dc2 stops depending on the replica store; the recovery points go.');
    await follow(api, 'POST', `/items/${VM}/commit`);

    step(7, 'Reverse replication dc2 → dc1: the old disk at dc1 still exists, so only differences travel.');
    await sleep(3000);
    await follow(api, 'POST', `/items/${VM}/reverse-replicate`);
    const rv = (await api('GET', `/items/${VM}`)) as { details: { replication?: { bytesTotal?: number } } };
    say(`   sent ${mib(rv.details.replication?.bytesTotal ?? 0)} of differences for a 64 MiB disk.`);

    step(8, 'Failback, synced before: phase 1 copies while the VM keeps running at dc2…');
    const fb = (await api('POST', `/items/${VM}/failover`, { mode: 'planned' })) as { job: Job };
    const shown = new Set<string>();
    await watch(api, fb.job.id, 'waiting', shown);
    say('   …phase 2 (complete-failover): shut down at dc2, send the last differences, start at dc1.');
    const primLog = resolve(dir, 'dc1', 'vms', VM, 'run', 'serial.log');
    const before = await readies(primLog);
    await api('POST', `/jobs/${fb.job.id}/complete`);
    await watch(api, fb.job.id, 'succeeded', shown);
    const recDisk = rec.definition.disks[0]!.path;
    const recLast = (await verifyDisk(recDisk)).highestContiguousSeq;
    const back = await readyResume(primLog, before);
    say(`   dc2's copy ended at record ${recLast}; ${VM} at dc1 resumed after record ${back}: ${back === recLast ? 'nothing lost' : `${recLast - back} records MISSING`}.`);

    step(9, 'Commit the failback (the machine at dc2 and its disks are removed) and protect dc1 → dc2 again.');
    await follow(api, 'POST', `/items/${VM}/commit`);
    await follow(api, 'POST', `/items/${VM}/reverse-replicate`);
    say(`\nDone in ${Math.round((Date.now() - t0) / 1000)} s. ${VM} runs at dc1 and is protected to dc2 again.`);
    if (keep) {
      say(`The server keeps running (${server.url}); try: REBOUND_URL=${server.url} REBOUND_TOKEN=$(cat ${resolve(dir, 'vault', 'admin.token')}) bin/rebound items`);
      say('Stop it with Ctrl-C.');
      await new Promise<void>((r) => server!.proc.once('exit', () => r()));
    }
  } catch (err) {
    throw new CliError(`the demo stopped: ${(err as Error).message}`, { exitCode: EXIT.other, code: 'demo-failed' });
  } finally {
    if (!keep) {
      server?.proc.kill('SIGTERM');
      if (server) await new Promise<void>((r) => { if (server!.proc.exitCode !== null) r(); else server!.proc.once('exit', () => r()); });
      for (const p of [dc1, dc2]) for (const vm of await p.discover().catch(() => [])) await p.powerOff(vm.name).catch(() => undefined);
    }
  }
}

const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`;

type Api = (method: string, path: string, body?: unknown) => Promise<unknown>;

function client(url: string, token: string): Api {
  return async (method, path, body) => {
    const res = await fetch(`${url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${text}`);
    return text ? JSON.parse(text) : {};
  };
}

async function follow(api: Api, method: string, path: string, body?: unknown): Promise<Job> {
  const { job } = (await api(method, path, body ?? {})) as { job: Job };
  return watch(api, job.id, 'succeeded');
}

/** Prints each task as it finishes, until the job reaches `until` (or fails). */
async function watch(api: Api, id: string, until: 'succeeded' | 'waiting', shown = new Set<string>()): Promise<Job> {
  for (;;) {
    const j = (await api('GET', `/jobs/${id}`)) as Job;
    for (const t of j.tasks) {
      if ((t.state === 'succeeded' || t.state === 'failed') && !shown.has(t.name)) {
        shown.add(t.name);
        const secs = t.startedAt && t.finishedAt ? ` (${((t.finishedAt - t.startedAt) / 1000).toFixed(1)} s)` : '';
        say(`   ${t.state === 'succeeded' ? '✓' : '✗'} ${t.name}${secs}`);
      }
    }
    if (j.state === until) return j;
    if (['failed', 'cancelled'].includes(j.state)) throw new Error(`job ${id} ${j.state}: ${j.error?.message ?? ''}`);
    if (until === 'succeeded' && j.state === 'succeeded') return j;
    await sleep(300);
  }
}

async function points(api: Api): Promise<unknown[]> {
  return ((await api('GET', `/items/${VM}/points`)) as { items: unknown[] }).items;
}

async function waitUntil(fn: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(500);
  }
}

async function waitLog(log: string, re: RegExp, ms: number): Promise<void> {
  await waitUntil(async () => re.test(await readFile(log, 'utf8').catch(() => '')), ms);
}

const readies = async (log: string): Promise<number> => [...(await readFile(log, 'utf8').catch(() => '')).matchAll(/REBOUND ready workload=records/g)].length;

async function readyResume(log: string, skip: number): Promise<number> {
  let seq = -1;
  await waitUntil(async () => {
    const all = [...(await readFile(log, 'utf8').catch(() => '')).matchAll(/REBOUND ready workload=records .*resume_seq=(\d+)/g)];
    if (all.length > skip) seq = Number(all[skip]![1]);
    return seq >= 0;
  }, 180_000);
  return seq;
}

async function startServer(data: string): Promise<{ url: string; token: string; proc: ChildProcess }> {
  const proc = spawn(BIN, ['--json', 'serve', '--data', data, '--port', '0'], { cwd: data, env: { ...process.env, REBOUND_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((ok, fail) => {
    const rl = createInterface({ input: proc.stdout! });
    rl.once('line', ok);
    proc.once('exit', (code) => fail(new Error(`rebound serve exited with ${code}`)));
  });
  proc.stdout?.resume();
  const j = JSON.parse(line) as { url?: string; adminToken?: string };
  const token = j.adminToken ?? (await readFile(resolve(data, 'admin.token'), 'utf8')).trim();
  if (!j.url) throw new Error(`rebound serve said: ${line}`);
  return { url: j.url, token, proc };
}
