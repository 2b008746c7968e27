// The three data-path roles as their own processes (`rebound agent|process-server|master-target`)
// against `rebound serve --roles none`: they register with the vault (certificate + token kept in
// their data directories), the vault sends the agent to the registered process server and that to
// the registered master target, and a physical machine (image files written by a writer)
// replicates through them. Each role is killed with SIGKILL in turn during the initial copy and
// again during delta replication; after each restart replication resumes, the byte counters the
// roles serve on /healthz show that acknowledged data was not sent again (at most one window of
// unacknowledged frames is), and the replica at the latest point after the writer stops is
// byte-identical to the source. Agent → process server goes through a capped TCP proxy (the
// process server advertises the proxy's address) and process server → master target is capped by
// the policy, so each kill lands in the middle of a transfer. The second cap is the lower: the
// process server forwards what it has cached while the agent still sends, so only a slower link
// leaves it a backlog to forward after the agent is done (when the test kills it).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm, mkdir, open, readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { startFaultProxy } from '../../src/faults/tcp-proxy.ts';
import type { FaultProxy } from '../../src/faults/tcp-proxy.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import { PHYSICAL_DIGEST_BLOCK } from '../../src/providers/physical/physical-provider.ts';
import { parseNbdUri } from '../../src/nbd/uri.ts';
import { serveReplicaImage } from '../../src/replica/serve-view.ts';
import { newId } from '../../src/store/ids.ts';
import { openStore } from '../../src/store/open.ts';
import { COMPONENT_FRESH_MS, ReplicationCatalogue } from '../../src/vault/replication-catalogue.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, openReplicas, points, waitFor, waitJob } from './support.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const MIB = 2 ** 20;
const D0 = 160 * MIB;
const D1 = 16 * MIB;
/** The first copy: all of d0 (random), three 64 KiB blocks of d1. */
const TOTAL = D0 + 3 * 64 * 1024;
/** Frames of 1 MiB a receiver may have applied but not yet acknowledged: it checkpoints and
 * acknowledges every 16 (half the sender's window), the first time in a session after 17. What a
 * kill of either end may cause to be sent again. */
const HALF = 17 * MIB;
/** Frames a sender may have on the wire unacknowledged (its window of 32). */
const WINDOW = 32 * MIB;
const CAP = 32 * MIB; // bytes/s on agent → process server (proxy)
const FORWARD_CAP = '12M'; // process server → master target (the policy's bandwidth, 12 MiB/s)
const BURST = 96 * MIB;

let dir: string;
let server: ServerProcess;
let proxy: FaultProxy;
let psPort: number;
let mtPort: number;
const running = new Set<RoleProcess>();

interface Stats { [counter: string]: number }
interface Ready { ready: boolean; role: string; name: string; componentId: string; pid: number; registration: string; address?: string; metrics: string }

interface RoleProcess {
  ready: Ready;
  proc: ChildProcess;
  logs(): string;
  stats(): Promise<Stats>;
  kill9(): Promise<void>;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number | null>;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function startRole(role: 'agent' | 'process-server' | 'master-target', args: string[]): Promise<RoleProcess> {
  const data = join(dir, role);
  const proc = spawn(join(REPO, 'bin/rebound'), ['--json', role, '--vault', server.url, '--token', server.token, '--data', data, '--name', role, '--metrics', '127.0.0.1:0', ...args], {
    env: { ...process.env, REBOUND_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const keep = process.env['REBOUND_TEST_LOG_DIR'];
  proc.stderr!.on('data', (d: Buffer) => {
    if (keep) appendFileSync(join(keep, `${role}.log`), d);
    stderr += d.toString();
    if (stderr.length > 400_000) stderr = stderr.slice(-200_000);
  });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const line = await new Promise<string>((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`rebound ${role} did not get ready:\n${stderr}`)), 60_000);
    createInterface({ input: proc.stdout! }).once('line', (l) => { clearTimeout(timer); ok(l); });
    proc.once('exit', (code) => { clearTimeout(timer); fail(new Error(`rebound ${role} exited with ${code}:\n${stderr}`)); });
  });
  proc.stdout!.resume();
  const ready = JSON.parse(line) as Ready;
  const rp: RoleProcess = {
    ready,
    proc,
    logs: () => stderr,
    stats: async () => ((await (await fetch(`http://${ready.metrics}/healthz`)).json()) as { stats: Stats }).stats,
    kill9: async () => {
      proc.kill('SIGKILL');
      await exited;
      running.delete(rp);
    },
    stop: async () => {
      proc.kill('SIGTERM');
      // Generous: a nice'd test on a machine shared with TCG guests may get little CPU.
      const t = setTimeout(() => proc.kill('SIGKILL'), 60_000);
      const code = await exited;
      clearTimeout(t);
      running.delete(rp);
      return code;
    },
  };
  running.add(rp);
  return rp;
}

const roles = {
  masterTarget: () => startRole('master-target', ['--listen', `127.0.0.1:${mtPort}`, '--site', 'dr']),
  processServer: () => startRole('process-server', ['--listen', `127.0.0.1:${psPort}`, '--advertise', `127.0.0.1:${proxy.port}`]),
  agent: () => startRole('agent', ['--site', 'srv']),
};

/** Polls a role's counter until `pred` holds; returns the value then. */
async function until(r: RoleProcess, counter: string, pred: (v: number) => boolean, what: string, timeoutMs = 60_000): Promise<number> {
  return waitFor(what, async () => {
    const v = (await r.stats())[counter] ?? 0;
    return pred(v) ? { v } : false;
  }, timeoutMs, 50).then((x) => x.v);
}

const mib = (n: number | undefined): string => ((n ?? 0) / MIB).toFixed(1);

async function writeRandomBlocks(file: string, size: number, n: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    for (let i = 0; i < n; i++) await fh.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * (size / 4096)) * 4096);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-roles-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
  await run('dd', ['if=/dev/urandom', `of=${join(dir, 'a', 'd0.img')}`, 'bs=1M', `count=${D0 / MIB}`, 'status=none']);
  await run('truncate', ['-s', String(D1), join(dir, 'a', 'd1.img')]);
  await run('dd', ['if=/dev/urandom', `of=${join(dir, 'a', 'd1.img')}`, 'bs=64K', 'count=3', 'seek=40', 'conv=notrunc', 'status=none']);
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_ROLES: 'none' } });
  await api(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dr', provider: 'qemu', root: join(dir, 'b') });
  // Replicas unencrypted at rest: an encrypted layer costs a LUKS key setup per disk and point
  // (~1-2 s of CPU here), which on this shared 2-core machine makes the master target fall
  // behind a 4 s policy; the keys a master target process gets are checked on their own below.
  await api(server, 'POST', '/policies', { name: 'p', frequency: '4s', retention: '1h', appConsistent: '0s', bandwidth: FORWARD_CAP, encryption: 'none' });
  await api(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
  await api(server, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [join(dir, 'a', 'd0.img'), join(dir, 'a', 'd1.img')] });
  psPort = await freePort();
  mtPort = await freePort();
  proxy = await startFaultProxy({ listen: { host: '127.0.0.1', port: 0 }, target: { host: '127.0.0.1', port: psPort } });
  proxy.bandwidth(CAP);
});

after(async () => {
  for (const r of [...running]) await r.kill9().catch(() => undefined);
  // A master target killed while it started a qemu-nbd for a replica layer leaves that child
  // behind (it waits for a client that is gone): end the ones serving files of this test.
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (dir && cmd.startsWith('qemu-nbd') && cmd.includes(dir)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
  }
  await proxy?.close().catch(() => undefined);
  await server?.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

test('agent, process server and master target as separate processes: kill -9 of each during initial and delta replication loses and resends nothing acknowledged; the replica is byte-identical', { timeout: 420_000 }, async () => {
  const t0 = Date.now();
  const secs = (): string => ((Date.now() - t0) / 1000).toFixed(0);
  // REBOUND_TEST_LOG_DIR=DIR keeps the roles' logs and a trace of their counters each second.
  const trace = process.env['REBOUND_TEST_LOG_DIR'] ? setInterval(() => {
    void Promise.all([...running].map(async (r) => [r.ready.role, await r.stats().catch(() => ({}))] as const)).then((all) => appendFileSync(join(process.env['REBOUND_TEST_LOG_DIR']!, 'trace.log'), `${secs()} ${JSON.stringify(Object.fromEntries(all))}\n`));
  }, 1000) : undefined;
  try {
    await scenario(t0, secs);
  } finally {
    clearInterval(trace);
  }
});

async function scenario(t0: number, secs: () => string): Promise<void> {
  let mt = await roles.masterTarget();
  let ps = await roles.processServer();
  let agent = await roles.agent();
  for (const r of [mt, ps, agent]) {
    assert.equal(r.ready.registration, 'registered', `${r.ready.role} registered on its first start`);
    const d = join(dir, r.ready.role);
    assert.equal(statSync(join(d, 'key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(d, 'token')).mode & 0o777, 0o600);
    assert.equal(Number(readFileSync(join(d, 'pid'), 'utf8')), r.ready.pid);
  }
  assert.equal(ps.ready.address, `127.0.0.1:${proxy.port}`);
  assert.equal(mt.ready.address, `127.0.0.1:${mtPort}`);
  // The vault sends the agent to the registered process server and names the registered master target.
  const comps = await api<{ items: { name: string; role: string; status: string; address: string | null; lastSeenAt: number | null }[] }>(server, 'GET', '/components');
  assert.deepEqual(comps.items.map((c) => [c.name, c.status, c.address]).sort(), [['agent', 'active', null], ['master-target', 'active', `127.0.0.1:${mtPort}`], ['process-server', 'active', `127.0.0.1:${proxy.port}`]]);
  // Each role gets the keys its role needs from the vault, with its own component token.
  const keysOf = async (role: string) => {
    const token = readFileSync(join(dir, role, 'token'), 'utf8').trim();
    return api<{ role: string; transport: string; atRest?: { id: string; secret: string }[] }>({ url: server.url, token }, 'GET', '/replication/keys');
  };
  const [mtKeys, agentKeys] = [await keysOf('master-target'), await keysOf('agent')];
  assert.equal(mtKeys.role, 'master-target');
  assert.equal(Buffer.from(mtKeys.transport, 'base64').length, 32);
  assert.equal(agentKeys.transport, mtKeys.transport);
  assert.ok((mtKeys.atRest ?? []).length >= 1, 'a master target gets the at-rest keys');
  assert.equal(agentKeys.atRest, undefined, 'an agent does not');

  const { job } = await api<{ job: { id: string } }>(server, 'POST', '/items/db1/protect', {});
  const [assignment] = await api<{ processServer: string; masterTarget: string }[]>(server, 'GET', '/replication/assignments?site=srv');
  assert.equal(assignment?.processServer, `127.0.0.1:${proxy.port}`);
  assert.equal(assignment?.masterTarget, `127.0.0.1:${mtPort}`);

  // --- Initial replication. 1) The agent dies a third of the way into its transfer.
  const acked1 = await until(ps, 'process_server_in', (v) => v >= 48 * MIB, 'the process server holding 48 MiB of the first copy');
  await agent.kill9();
  agent = await roles.agent();
  assert.equal(agent.ready.registration, 'saved', 'a restarted role reuses its registration');
  await until(agent, 'agent_points', (v) => v >= 1, 'the restarted agent finishing the first copy');
  let a = await agent.stats();
  let p = await ps.stats();
  console.log(`initial, agent killed at ${mib(acked1)} MiB received: restarted agent sent ${mib(a['agent_sent'])} MiB, skipped ${mib(a['agent_skipped'])} MiB; process server received ${mib(p['process_server_in'])} MiB of ${mib(TOTAL)}`);
  assert.ok(a['agent_skipped']! >= acked1 - HALF, `the restarted agent skipped ${a['agent_skipped']} bytes; the process server had ${acked1} before the kill`);
  assert.equal(a['agent_sent']! + a['agent_skipped']!, TOTAL, 'the restarted agent accounts for every byte of the first copy once');
  assert.ok(p['process_server_in']! <= TOTAL + HALF, `the process server received ${p['process_server_in']} bytes for a first copy of ${TOTAL}`);

  // 2) The process server dies while forwarding (capped) to the master target.
  const written1 = await until(mt, 'master_target_written', (v) => v >= 64 * MIB, 'the master target writing 64 MiB of the first copy');
  const agentSent = (await agent.stats())['agent_sent']!;
  await ps.kill9();
  ps = await roles.processServer();
  // 3) The master target dies once the new process server forwarded 32 MiB more.
  const written2 = await until(mt, 'master_target_written', (v) => v >= written1 + 32 * MIB, 'the master target writing 32 MiB more after the process server restarted');
  await mt.kill9();
  mt = await roles.masterTarget();
  await waitJob(server, job.id, 120_000);
  await until(ps, 'process_server_forwarded', (v) => v >= 2, 'the process server forwarding both disks of the first copy');
  p = await ps.stats();
  const m = await mt.stats();
  a = await agent.stats();
  console.log(`initial, process server killed at ${mib(written1)} MiB written, master target at ${mib(written2)} MiB: new process server received ${p['process_server_in']} B, forwarded ${mib(p['process_server_out'])} MiB; new master target wrote ${mib(m['master_target_written'])} MiB; ${secs()} s`);
  assert.equal(a['agent_sent'], agentSent, 'the agent sent nothing again: its transfers were acknowledged by the process server\'s cache');
  assert.equal(p['process_server_in'], 0, 'the restarted process server received nothing again from the agent');
  // It resumes where the master target acknowledged; the master target's kill adds at most the
  // frames that were on the wire then.
  assert.ok(p['process_server_out']! <= TOTAL - written1 + HALF + WINDOW, `the restarted process server forwarded ${p['process_server_out']} bytes; ${written1} of ${TOTAL} were written before its kill`);
  // Its own counter also counted frames written after its last checkpoint (up to HALF) and
  // frames still arriving when it was killed (up to WINDOW): both are written again.
  assert.ok(m['master_target_written']! <= TOTAL - written2 + HALF + WINDOW, `the restarted master target wrote ${m['master_target_written']} bytes; ${written2} of ${TOTAL} were written before its kill`);

  // --- Delta replication: the writer writes a 96 MiB burst (a bulk load) for each kill, right
  // after the agent released a point, so that the burst is in one point and written before the
  // next point is taken.
  const d0 = join(dir, 'a', 'd0.img');
  const d1 = join(dir, 'a', 'd1.img');
  /** Writes a burst at `at` in d0; returns when it was written (its point is taken after). */
  const burst = async (at: number, extra?: () => Promise<void>): Promise<number> => {
    const data = randomBytes(BURST);
    const n = (await agent.stats())['agent_points']!;
    await until(agent, 'agent_points', (v) => v > n, 'the agent releasing a point');
    const fh = await open(d0, 'r+');
    try {
      await fh.write(data, 0, BURST, at);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await extra?.();
    return Date.now();
  };
  const pointAfter = (t: number, what: string) => waitFor(what, async () => (await points(server, 'db1')).find((x) => x.takenAt > t && x.status === 'ok'), 90_000, 200);
  // 4) The agent dies while sending a burst.
  let base = (await ps.stats())['process_server_in']!;
  const at4 = await burst(0, () => writeRandomBlocks(d1, D1, 20));
  const acked4 = (await until(ps, 'process_server_in', (v) => v >= base + 48 * MIB, 'the process server holding 48 MiB of the first burst')) - base;
  await agent.kill9();
  agent = await roles.agent();
  await until(ps, 'process_server_in', (v) => v >= base + BURST, 'the burst reaching the process server');
  await until(agent, 'agent_points', (v) => v >= 1, 'the restarted agent releasing the burst\'s point');
  a = await agent.stats();
  const burstIn = (await ps.stats())['process_server_in']! - base;
  // Each burst is at the recovery site before the next one, so that counters are the burst's own.
  await pointAfter(at4, 'the point of the first burst');
  console.log(`delta, agent killed at ${mib(acked4)} MiB of a ${mib(BURST)} MiB burst: restarted agent sent ${mib(a['agent_sent'])} MiB, skipped ${mib(a['agent_skipped'])} MiB; process server received ${mib(burstIn)} MiB; ${secs()} s`);
  assert.ok(a['agent_skipped']! >= acked4 - HALF, `the restarted agent skipped ${a['agent_skipped']} bytes; ${acked4} were received before the kill`);
  // The burst's blocks plus d1's 20 scattered 4 KiB writes (a digest block each), plus what was unacknowledged.
  assert.ok(burstIn <= BURST + 20 * PHYSICAL_DIGEST_BLOCK + HALF, `the process server received ${burstIn} bytes for a burst of ${BURST}`);

  // 5) The process server dies while forwarding a burst.
  base = (await mt.stats())['master_target_written']!;
  let psIn = (await ps.stats())['process_server_in']!;
  const at5 = await burst(16 * MIB);
  await until(ps, 'process_server_in', (v) => v >= psIn + BURST, 'the second burst reaching the process server');
  const written5 = (await until(mt, 'master_target_written', (v) => v >= base + 48 * MIB, 'the master target writing 48 MiB of the second burst')) - base;
  const agentSent5 = (await agent.stats())['agent_sent']!;
  await ps.kill9();
  ps = await roles.processServer();
  await pointAfter(at5, 'the point of the second burst');
  p = await ps.stats();
  console.log(`delta, process server killed at ${mib(written5)} MiB of a burst written: restarted process server forwarded ${mib(p['process_server_out'])} MiB, received ${p['process_server_in']} B; ${secs()} s`);
  assert.ok(p['process_server_out']! <= BURST - written5 + HALF, `the restarted process server forwarded ${p['process_server_out']} bytes; ${written5} of ${BURST} were written before its kill`);
  assert.equal(p['process_server_in'], 0, 'the agent sent nothing again after the process server restarted');
  assert.equal((await agent.stats())['agent_sent'], agentSent5);

  // 6) The master target dies while writing a burst.
  psIn = (await ps.stats())['process_server_in']!;
  const psOut = (await ps.stats())['process_server_out']!;
  base = (await mt.stats())['master_target_written']!;
  const at6 = await burst(32 * MIB);
  await until(ps, 'process_server_in', (v) => v >= psIn + BURST, 'the third burst reaching the process server');
  const written6 = (await until(mt, 'master_target_written', (v) => v >= base + 48 * MIB, 'the master target writing 48 MiB of the third burst')) - base;
  await mt.kill9();
  mt = await roles.masterTarget();
  await pointAfter(at6, 'the point of the third burst');
  const mt6 = (await mt.stats())['master_target_written']!;
  const out6 = (await ps.stats())['process_server_out']! - psOut;
  console.log(`delta, master target killed at ${mib(written6)} MiB of a burst written: restarted master target wrote ${mib(mt6)} MiB; process server forwarded ${mib(out6)} MiB for the burst; ${secs()} s`);
  assert.ok(mt6 <= BURST - written6 + HALF, `the restarted master target wrote ${mt6} bytes; ${written6} of ${BURST} were written before its kill`);
  assert.ok(out6 <= BURST + WINDOW, `the process server forwarded ${out6} bytes for a burst of ${BURST}`);

  // --- A steady writer for a few cycles, then stop it: the latest point after that is the source.
  const stopAt = Date.now() + 8000;
  while (Date.now() < stopAt) {
    await writeRandomBlocks(d0, D0, 40);
    await writeRandomBlocks(d1, D1, 10);
    await new Promise((r) => setTimeout(r, 300));
  }
  const stoppedAt = Date.now();
  const last = await waitFor('a point taken after the writer stopped', async () => (await points(server, 'db1')).find((x) => x.takenAt > stoppedAt + 100 && x.status === 'ok'), 90_000, 300);
  const item = await api<{ id: string }>(server, 'GET', '/items/db1');
  // Revoked, a role exits 3 at its next heartbeat; started again with an admin token it registers anew.
  const exited = new Promise<number | null>((r) => agent.proc.once('exit', (code) => r(code)));
  await api(server, 'DELETE', '/components/agent');
  assert.equal(await exited, 3, `a revoked agent exits 3:\n${agent.logs().slice(-1000)}`);
  assert.match(agent.logs(), /no longer accepts agent 'agent'/);
  running.delete(agent);
  agent = await roles.agent();
  assert.equal(agent.ready.registration, 'registered');
  for (const r of [agent, ps, mt]) {
    const code = await r.stop();
    assert.equal(code, 0, `${r.ready.role} stops cleanly on SIGTERM:\n${r.logs().slice(-2000)}`);
    assert.equal(existsSync(join(dir, r.ready.role, 'pid')), false, `${r.ready.role} removed its pid file`);
  }
  await server.stop();
  const reps = await openReplicas(join(dir, 'vault'), join(dir, 'b'), item.id);
  assert.equal(reps.size, 2);
  for (const [i, disk] of [...reps.values()].entries()) {
    const src = join(dir, 'a', `d${i}.img`);
    const view = await disk.openView(last.id);
    const served = await serveReplicaImage(view.drive, disk.secrets());
    try {
      const c = await NbdClient.connect(parseNbdUri(served.uri).address, { exportName: '' });
      const fh = await open(src, 'r');
      try {
        for (let at = 0; at < disk.size; at += MIB) {
          const want = Buffer.alloc(MIB);
          await fh.read(want, 0, MIB, at);
          assert.ok((await c.read(at, MIB)).equals(want), `disk ${i} differs from the source in the MiB at ${at}`);
        }
      } finally {
        await fh.close();
        await c.disconnect();
      }
    } finally {
      await served.close();
      await disk.closeView(view.id);
    }
  }

  // Scrub through the separate master target: the vault cannot call into it, so the scrub job
  // leaves a request the master target polls for. A byte flipped in the newest point's layer is
  // found there and that point is marked bad; the older points stay usable.
  server = await startServerProcess({ dataDir: join(dir, 'vault'), token: server.token, env: { REBOUND_ROLES: 'none' } });
  mt = await roles.masterTarget();
  // The newest point whose layer holds data of its own (an empty cycle's layer holds none).
  let damaged: { id: string; layer: string; offset: number } | undefined;
  for (const p of (await points(server, 'db1')).filter((x) => x.status === 'ok').sort((x, y) => y.takenAt - x.takenAt)) {
    const layer = join(dir, 'b', 'replicas', item.id, 'disk0', `p-${p.id}.qcow2`);
    if (!existsSync(layer)) continue;
    const map = JSON.parse((await run('qemu-img', ['map', '-U', '--output=json', '-f', 'qcow2', layer])).stdout) as { data: boolean; depth: number; offset?: number }[];
    const own = map.find((e) => e.data && e.depth === 0 && e.offset !== undefined);
    if (own) {
      damaged = { id: p.id, layer, offset: own.offset! };
      break;
    }
  }
  assert.ok(damaged, 'a point layer with data of its own');
  const layer = damaged.layer;
  const own = { offset: damaged.offset };
  const fh = await open(layer, 'r+');
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, own.offset! + 100);
  b[0] = b[0]! ^ 0x5a;
  await fh.write(b, 0, 1, own.offset! + 100);
  await fh.close();
  const scrubId = (await api<{ job: { id: string } }>(server, 'POST', '/items/db1/scrub')).job.id;
  await waitJob(server, scrubId, 120_000);
  const scrubLog = (await api<{ log: { message: string }[] }>(server, 'GET', `/jobs/${scrubId}`)).log.map((l) => l.message);
  assert.ok(scrubLog.some((m) => /its own process/.test(m)), JSON.stringify(scrubLog));
  assert.match(mt.logs(), /scrub asked by the vault/);
  const after = await points(server, 'db1');
  assert.equal(after.find((x) => x.id === damaged.id)?.status, 'bad', `the damaged point is marked bad: ${JSON.stringify(scrubLog)}`);
  assert.ok(after.some((x) => x.status === 'ok'), 'older points stay usable');
  assert.equal(await mt.stop(), 0);
  await server.stop();
  console.log(`whole run ${secs()} s (${((Date.now() - t0) / 1000).toFixed(1)})`);
}

test('endpoint choice: a registered, unrevoked, recently seen process server or master target wins over the embedded one', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'rb-endpoints-'));
  const store = await openStore({ dataDir: tmp });
  try {
    const db = store.db;
    const t = Date.now();
    const site = async (name: string) => {
      const id = newId();
      await db.insertInto('sites').values({ id, name, provider: 'physical', root: `/srv/${name}`, config: '{}', created_at: t }).execute();
      return id;
    };
    const [src, dst, other] = [await site('src'), await site('dst'), await site('other')];
    const policy = newId();
    await db.insertInto('policies').values({ id: policy, name: 'p', frequency_s: 30, retention_s: 3600, app_consistent_s: 0, compression: 'zstd', encryption: 'none', bandwidth_bps: 0, initial_start: 'immediate', created_at: t }).execute();
    const pairing = newId();
    await db.insertInto('pairings').values({ id: pairing, primary_site_id: src, recovery_site_id: dst, policy_id: policy, created_at: t }).execute();
    const machine = newId();
    await db.insertInto('machines').values({ id: machine, name: 'm1', site_id: src, host_id: null, kind: 'physical', disks: '[]', config: '{}', created_at: t }).execute();
    await db.insertInto('protected_items').values({ id: newId(), machine_id: machine, pairing_id: pairing, state: 'protected', direction: 'forward', active_site_id: src, group_name: null, health: 'normal', last_point_at: null, details: '{}', version: 1, created_at: t, updated_at: t }).execute();
    const component = async (name: string, role: string, siteId: string | null, address: string, seenAgo: number | null, status = 'active') => {
      await db.insertInto('components').values({ id: newId(), name, role, site_id: siteId, address, token_id: null, cert_serial: null, cert_pem: null, status, registered_at: t, last_seen_at: seenAgo === null ? null : Date.now() - seenAgo, revoked_at: null }).execute();
    };
    const drop = (name: string) => db.deleteFrom('components').where('name', '=', name).execute();
    let embedded = { ps: 'embedded:1', mt: 'embedded:2' };
    const cat = new ReplicationCatalogue(store, { processServer: () => embedded.ps, masterTarget: () => embedded.mt });
    const chosen = async () => {
      const [a] = await cat.assignments();
      return { ps: a!.processServer, mt: a!.masterTarget, forwardTo: await cat.masterTargetAddress(dst) };
    };
    const stale = COMPONENT_FRESH_MS + 5000;

    assert.deepEqual(await chosen(), { ps: 'embedded:1', mt: 'embedded:2', forwardTo: 'embedded:2' }, 'nothing registered: the embedded roles');
    await component('ps-old', 'process-server', src, 'old:1', stale);
    await component('mt-old', 'master-target', dst, 'old:2', stale);
    await component('ps-gone', 'process-server', src, 'gone:1', 1000, 'revoked');
    await component('mt-gone', 'master-target', dst, 'gone:2', 1000, 'revoked');
    await component('mt-elsewhere', 'master-target', other, 'elsewhere:2', 1000);
    assert.deepEqual(await chosen(), { ps: 'embedded:1', mt: 'embedded:2', forwardTo: 'embedded:2' }, 'stale, revoked and other sites\' components lose to the embedded roles');
    await component('ps-any', 'process-server', null, 'any:1', 1000);
    await component('mt-any', 'master-target', null, 'any:2', 1000);
    assert.deepEqual(await chosen(), { ps: 'any:1', mt: 'any:2', forwardTo: 'any:2' }, 'fresh components serving every site win');
    await component('ps-src', 'process-server', src, 'src:1', 1000);
    await component('mt-dst', 'master-target', dst, 'dst:2', 1000);
    const c = await chosen();
    assert.ok(['any:1', 'src:1'].includes(c.ps), c.ps);
    assert.equal(c.mt, 'dst:2', 'a master target registered for the site wins over one for every site');
    assert.equal(c.forwardTo, 'dst:2');
    await drop('ps-any');
    await drop('mt-dst');
    await drop('mt-any');
    assert.deepEqual(await chosen(), { ps: 'src:1', mt: 'embedded:2', forwardTo: 'embedded:2' });
    // Without embedded roles (rebound serve --roles none) a stale registered one is better than nothing.
    embedded = { ps: '', mt: '' };
    await drop('ps-src');
    assert.deepEqual(await chosen(), { ps: 'old:1', mt: 'old:2', forwardTo: 'old:2' });
    await component('ps-other', 'process-server', other, 'other:1', 1000);
    assert.equal((await chosen()).ps, 'other:1', 'a fresh process server of another site beats a stale one of the source site');
  } finally {
    await store.close();
    await rm(tmp, { recursive: true, force: true });
  }
});
