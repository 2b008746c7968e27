// The soak harness (issue 9): randomized runs of real replication under injected faults. One run:
// a fresh data directory and a real `rebound serve` (child process); a physical machine made of
// two image files that a writer process keeps writing with verifiable content
// (soak-content.ts); protect; one fault from soak-scenarios.ts at a random moment (during the
// first copy or during delta cycles); recovery; then the checks:
//   - nothing acknowledged lost: after the writer stops and replication catches up, the replica
//     at its latest point is byte-identical to the source and holds every write the writer
//     acknowledged;
//   - every retained point verifies (record verifier, stamp checks, scrub) and no point holds
//     older data than the one before it;
//   - every job finished, or failed with an error code and message;
//   - catch-up by differences, not a full reseed: the bytes the agent and the master target moved
//     after the fault (rebound_replication_bytes on /metrics) stay below a full copy, no resync
//     was requested, and the first copy was not started again.
// A seeded PRNG makes every choice, so `--seed` reproduces a run (timing on a busy machine aside).
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, statfs, writeFile, open } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path, { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { Prng, runSeed } from './prng.ts';
import { prefill, STAMP_SIZE } from './soak-content.ts';
import type { ContentSpec } from './soak-content.ts';
import type { WriterConfig, WriterLedger } from './soak-writer.ts';
import { replicationBytes, soakApi, startSoakServer } from './soak-server.ts';
import type { SoakServer } from './soak-server.ts';
import { SCENARIOS, scenarioByName } from './soak-scenarios.ts';
import type { Phase, RunContext, Scenario, SoakEvent } from './soak-scenarios.ts';
import { checkReplica, checkSource } from './soak-verify.ts';
import { isFailoverPhase, runFailoverOne } from './soak-failover.ts';
import { startFaultProxy } from './tcp-proxy.ts';
import type { FaultProxy } from './tcp-proxy.ts';

const run = promisify(execFile);
const REPO = path.resolve(import.meta.dirname, '../..');
const MIB = 1024 * 1024;

/** Sizes and pace of one run's machine and policy. */
export const SOAK_SHAPE = {
  recordsBytes: 16 * MIB,
  prefillRecords: 2048, // 8 MiB
  stampsBytes: 48 * MIB, // every block stamped before protection
  writerRate: 5, // ticks per second (one record + one stamp each)
  hotRegions: 2,
  frequency: '2s',
  /** Encrypted replicas pay ~1 s of QEMU's LUKS setup per layer and view: a slower cycle. */
  frequencyEncrypted: '10s',
  /** Share of runs whose policy encrypts replicas at rest. */
  encryptedShare: 0.15,
  retention: '10s',
  bandwidth: '16M',
  recoveryFsBytes: 160 * MIB,
};

/** The two image files of a run's machine under `src` and the writer's identity for `seed`. */
export function soakContent(src: string, seed: number): ContentSpec {
  return { recordsPath: join(src, 'd0.img'), stampsPath: join(src, 'd1.img'), recordsBytes: SOAK_SHAPE.recordsBytes, stampsBytes: SOAK_SHAPE.stampsBytes, writer: BigInt(seed) + 1n };
}

/** Seconds spent per stage of a run: `stage(name)` closes the stage that ran since the last call
 * (or since `from`, a Date.now() value). */
export function stageClock(): { stages: Record<string, number>; stage(name: string, from?: number): void } {
  let mark = Date.now();
  const stages: Record<string, number> = {};
  return {
    stages,
    stage(name, from = mark) {
      stages[name] = Math.round((Date.now() - from) / 100) / 10;
      mark = Date.now();
    },
  };
}

export interface SoakOptions {
  runs: number;
  seed: number;
  /** Only these scenarios (default: all, one picked at random per run). */
  scenarios?: string[];
  /** Keep the directory of a failed run (default: removed). */
  keepFailed?: boolean;
  /** Called with each line worth printing while runs go. */
  log?(line: string): void;
  /** Called after each run. */
  onRun?(r: RunResult): void;
  /** Limits per wait (ms). */
  timeouts?: { protect?: number; catchUp?: number };
  /** Stops the soak after the runs under way. */
  signal?: AbortSignal;
  /** Runs going at once (default 1). Each run has its own server, directories and proxies, and
   * every choice in it comes from its own seed, so runs are the same whatever the parallelism
   * (the timing aside: a busier machine stretches every run). */
  parallel?: number;
}

export interface RunResult {
  index: number;
  seed: number;
  scenario: string;
  phase: Phase;
  ok: boolean;
  dataLost: boolean;
  failures: string[];
  notes: string[];
  fault: Record<string, unknown>;
  /** Bytes moved from the fault's end until the catch-up point (agent sent, master target
   * written; after a restart the new process's counters), the most a catch-up by differences may
   * move (limits), a full copy's size, and what the master target wrote while the fault lasted. */
  bytes: { agentCatchUp: number; masterTargetCatchUp: number; fullCopy: number; restarted: boolean; agentLimit?: number; masterTargetLimit?: number; masterTargetDuringFault?: number; processServerOutDuringFault?: number };
  points: number;
  recordGapPoints: number;
  writer: { ticks: number; seq: number };
  seconds: number;
  /** Seconds per stage of the run. */
  stages: Record<string, number>;
  /** Kept for a failed run with keepFailed. */
  dir?: string;
  /** The server's last log lines, for a failed run. */
  logTail?: string;
}

export interface SummaryRow {
  scenario: string;
  runs: number;
  failures: number;
  dataLost: number;
}

export interface SoakReport {
  seed: number;
  runs: number;
  startedAt: string;
  seconds: number;
  summary: SummaryRow[];
  results: RunResult[];
}

export async function runSoak(o: SoakOptions): Promise<SoakReport> {
  const pool = o.scenarios && o.scenarios.length > 0 ? o.scenarios.map(scenarioByName) : [...SCENARIOS];
  const t0 = Date.now();
  const results: RunResult[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < o.runs && !o.signal?.aborted) {
      const i = next++;
      const seed = runSeed(o.seed, i);
      const rng = new Prng(seed);
      const scenario = rng.pick(pool);
      const phase = rng.pick(scenario.phases);
      const r = isFailoverPhase(phase) ? await runFailoverOne({ index: i, seed, rng, scenario, phase, opts: o }) : await runOne({ index: i, seed, rng, scenario, phase, opts: o });
      results.push(r);
      o.onRun?.(r);
    }
  };
  const parallel = Math.max(1, Math.min(o.parallel ?? 1, o.runs));
  await Promise.all(Array.from({ length: parallel }, () => worker()));
  results.sort((a, b) => a.index - b.index);
  return { seed: o.seed, runs: results.length, startedAt: new Date(t0).toISOString(), seconds: Math.round((Date.now() - t0) / 1000), summary: summarize(results), results };
}

export function summarize(results: readonly RunResult[]): SummaryRow[] {
  const rows = new Map<string, SummaryRow>();
  for (const s of SCENARIOS) rows.set(s.name, { scenario: s.name, runs: 0, failures: 0, dataLost: 0 });
  for (const r of results) {
    const row = rows.get(r.scenario) ?? { scenario: r.scenario, runs: 0, failures: 0, dataLost: 0 };
    row.runs++;
    if (!r.ok) row.failures++;
    if (r.dataLost) row.dataLost++;
    rows.set(r.scenario, row);
  }
  const out = [...rows.values()].filter((r) => r.runs > 0);
  out.push(out.reduce((t, r) => ({ scenario: 'total', runs: t.runs + r.runs, failures: t.failures + r.failures, dataLost: t.dataLost + r.dataLost }), { scenario: 'total', runs: 0, failures: 0, dataLost: 0 }));
  return out;
}

export function formatRunLine(r: RunResult): string {
  const verdict = r.ok ? 'ok  ' : r.dataLost ? 'LOST' : 'FAIL';
  const fault = Object.entries(r.fault).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(' ');
  const mib = (n: number): string => (n / MIB).toFixed(1);
  return `#${r.index} seed=${r.seed} ${verdict} ${r.scenario}/${r.phase} ${r.seconds}s points=${r.points} catch-up agent=${mib(r.bytes.agentCatchUp)}MiB mt=${mib(r.bytes.masterTargetCatchUp)}MiB (full ${mib(r.bytes.fullCopy)}MiB) ${fault}${r.ok ? '' : ` :: ${r.failures.join(' | ')}`}`;
}

export function formatSummary(rows: readonly SummaryRow[]): string {
  const w = Math.max(8, ...rows.map((r) => r.scenario.length));
  const lines = [`${'scenario'.padEnd(w)}  runs  failures  data lost`, `${'-'.repeat(w)}  ----  --------  ---------`];
  for (const r of rows) lines.push(`${r.scenario.padEnd(w)}  ${String(r.runs).padStart(4)}  ${String(r.failures).padStart(8)}  ${String(r.dataLost).padStart(9)}`);
  return lines.join('\n');
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface WriterHandle {
  proc: ChildProcess;
  last(): string;
  stop(): Promise<WriterLedger>;
}

export async function startWriter(cfg: WriterConfig): Promise<WriterHandle> {
  const proc = spawn(process.execPath, [join(REPO, 'src/faults/soak-writer.ts'), JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let last = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const rl = createInterface({ input: proc.stdout! });
  let sawDone = false;
  const ready = new Promise<void>((resolve, reject) => {
    rl.on('line', (l) => {
      if (l.startsWith('ready')) resolve();
      if (l === 'done') sawDone = true;
      else last = l;
    });
    void exited.then((code) => reject(new Error(`the writer exited (${code}) before it was ready: ${err}`)));
  });
  await ready;
  return {
    proc,
    last: () => last,
    async stop() {
      proc.kill('SIGTERM');
      const code = await exited;
      if (code !== 0 || !sawDone) throw new Error(`the writer exited with ${code}${sawDone ? '' : ' without finishing'}: ${err}`);
      return JSON.parse(await readFile(cfg.ledgerPath, 'utf8')) as WriterLedger;
    },
  };
}

export interface JobView { id: string; kind: string; state: string; error?: { code?: string; message?: string } }

export async function waitJob(s: SoakServer, id: string, timeoutMs: number): Promise<JobView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await soakApi<JobView>(s, 'GET', `/jobs/${id}`).catch(() => null);
    if (j && ['succeeded', 'failed', 'cancelled'].includes(j.state)) return j;
    if (Date.now() > deadline) throw new Error(`job ${id} (${j?.kind ?? '?'}) still ${j?.state ?? 'unreadable'} after ${Math.round(timeoutMs / 1000)} s`);
    await delay(250);
  }
}

export interface PointView { id: string; takenAt: number; status: string }

export const points = async (s: SoakServer): Promise<PointView[]> => (await soakApi<{ items: PointView[] }>(s, 'GET', '/items/db1/points?limit=500')).items;

async function runOne(a: { index: number; seed: number; rng: Prng; scenario: Scenario; phase: Phase; opts: SoakOptions }): Promise<RunResult> {
  const { rng, scenario } = a;
  let phase = a.phase;
  const t0 = Date.now();
  const failures: string[] = [];
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'rebound-soak-'));
  const src = join(dir, 'a');
  const recoveryRoot = join(dir, 'b');
  const dataDir = join(dir, 'vault');
  for (const d of [src, recoveryRoot, dataDir]) await mkdir(d, { recursive: true });
  const setup = scenario.setup ?? {};
  let mounted = false;
  let proxies: { agent: FaultProxy; masterTarget: FaultProxy } | null = null;
  let server: SoakServer | undefined;
  let writer: WriterHandle | undefined;
  let ledger: WriterLedger | undefined;
  let fault: Record<string, unknown> = {};
  let clockOffset = 0;
  const clockFile = join(dir, 'clock-offset');
  const ballast = join(recoveryRoot, 'ballast');
  const bytes: RunResult['bytes'] = { agentCatchUp: 0, masterTargetCatchUp: 0, fullCopy: 0, restarted: false };
  let pointCount = 0;
  let recordGapPoints = 0;
  let dataLost = false;
  let logTail = '';
  const timeouts = { protect: 240_000, catchUp: 240_000, ...a.opts.timeouts };
  const { stages, stage } = stageClock();
  const spec = soakContent(src, a.seed);
  try {
    if (setup.recoveryFs) {
      if (process.getuid?.() !== 0) throw new Error(`scenario ${scenario.name} mounts a tmpfs as the recovery site and needs root`);
      await run('mount', ['-t', 'tmpfs', '-o', `size=${SOAK_SHAPE.recoveryFsBytes},mode=0755`, 'rebound-soak', recoveryRoot]);
      mounted = true;
    }
    stage('mount');
    const pre = await prefill(spec, { records: SOAK_SHAPE.prefillRecords, stampEvery: 1 });
    const prefillGens = new Float64Array(SOAK_SHAPE.stampsBytes / STAMP_SIZE);
    for (let i = 0; i < prefillGens.length; i++) prefillGens[i] = i + 1;
    bytes.fullCopy = SOAK_SHAPE.prefillRecords * 4096 + SOAK_SHAPE.stampsBytes;

    // A stalled data connection is given up after 15 s here (60 s by default), so the soak's
    // black-holed links end in a retry within a run's time.
    const env: Record<string, string> = { REBOUND_DATA_IDLE_TIMEOUT_MS: '15000' };
    if (setup.proxies) {
      const psPort = await freePort();
      const mtPort = await freePort();
      proxies = {
        agent: await startFaultProxy({ target: { port: psPort } }),
        masterTarget: await startFaultProxy({ target: { port: mtPort } }),
      };
      Object.assign(env, {
        REBOUND_PROCESS_SERVER_PORT: String(psPort),
        REBOUND_MASTER_TARGET_PORT: String(mtPort),
        REBOUND_PROCESS_SERVER_VIA: `127.0.0.1:${proxies.agent.port}`,
        REBOUND_MASTER_TARGET_VIA: `127.0.0.1:${proxies.masterTarget.port}`,
      });
    }
    if (setup.clock) {
      await writeFile(clockFile, '0');
      env['NODE_OPTIONS'] = `${process.env['NODE_OPTIONS'] ?? ''} --import=${join(REPO, 'src/faults/clock-skew.ts')}`.trim();
      env['REBOUND_TEST_CLOCK_FILE'] = clockFile;
    }
    server = await startSoakServer({ dataDir, env, logFile: join(dir, 'server.log') });
    const s0 = server;
    await soakApi(s0, 'POST', '/sites', { name: 'srv', provider: 'physical', root: src });
    await soakApi(s0, 'POST', '/sites', { name: 'dr', provider: 'physical', root: recoveryRoot });
    const encrypted = rng.float() < SOAK_SHAPE.encryptedShare;
    fault['atRest'] = encrypted ? 'aes' : 'plain';
    await soakApi(s0, 'POST', '/policies', {
      name: 'soak',
      frequency: encrypted ? SOAK_SHAPE.frequencyEncrypted : SOAK_SHAPE.frequency,
      retention: SOAK_SHAPE.retention,
      appConsistent: '0s',
      bandwidth: SOAK_SHAPE.bandwidth,
      encryption: encrypted ? 'aes-256-gcm' : 'none',
      compression: rng.pick(['zstd', 'none']),
    });
    await soakApi(s0, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'soak' });
    await soakApi(s0, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [spec.recordsPath, spec.stampsPath] });
    const protectJobId = (await soakApi<{ job: { id: string } }>(s0, 'POST', '/items/db1/protect', {})).job.id;
    const itemId = (await soakApi<{ id: string }>(s0, 'GET', '/items/db1')).id;
    stage('setup');
    writer = await startWriter({
      recordsPath: spec.recordsPath,
      stampsPath: spec.stampsPath,
      recordsBytes: spec.recordsBytes,
      stampsBytes: spec.stampsBytes,
      writer: spec.writer.toString(),
      startSeq: pre.records,
      startGen: pre.gen,
      rate: SOAK_SHAPE.writerRate,
      seed: a.seed,
      hotRegions: SOAK_SHAPE.hotRegions,
      ledgerPath: join(dir, 'ledger.json'),
    });

    // The moment of the fault.
    if (phase === 'initial') {
      const frac = rng.float() * 0.8 + 0.05;
      const target = frac * bytes.fullCopy;
      fault['atFraction'] = Number(frac.toFixed(2));
      const deadline = Date.now() + timeouts.protect;
      for (;;) {
        const b = await replicationBytes(server);
        if ((b['master_target_written'] ?? 0) >= target) break;
        const j = await soakApi<JobView>(server, 'GET', `/jobs/${protectJobId}`);
        if (j.state !== 'running' && j.state !== 'queued') {
          notes.push(`the first copy finished before ${Math.round(frac * 100)} % was seen written; the fault landed in delta cycles`);
          phase = 'delta';
          break;
        }
        if (Date.now() > deadline) throw new Error('the first copy made no progress');
        await delay(100);
      }
    } else {
      const j = await waitJob(server, protectJobId, timeouts.protect);
      if (j.state !== 'succeeded') failures.push(`protect ended ${j.state} before any fault: ${j.error?.code}: ${j.error?.message}`);
      const wait = rng.int(500, 6000);
      fault['afterFirstPointMs'] = wait;
      await delay(wait);
    }
    const initialBefore = (await soakApi<{ details: { replication?: { pointId?: string; bytesTotal?: number } } }>(server, 'GET', '/items/db1')).details.replication;
    stage('untilFault');
    const before = await replicationBytes(server);
    const faultAt = Date.now();
    const eventsAfter = (await soakApi<{ items: SoakEvent[] }>(server, 'GET', `/events?item=${itemId}&limit=1`)).items[0]?.id ?? 0;

    const ctx: RunContext = {
      rng: rng.fork('fault'),
      get server() { return server!; },
      runDir: dir,
      recoveryRoot,
      proxies,
      async restart(how, pauseMs = 0) {
        const old = server!;
        if (how === 'kill9') await old.kill9();
        else await old.stop();
        logTail += old.logs().slice(-20_000);
        bytes.restarted = true;
        if (pauseMs > 0) await delay(pauseMs);
        server = await startSoakServer({ dataDir, env, token: old.token, logFile: join(dir, 'server.log') });
      },
      async jumpClock(ms) {
        if (!setup.clock) throw new Error(`scenario ${scenario.name} did not ask for the clock knob`);
        clockOffset += ms;
        await writeFile(clockFile, String(clockOffset));
        process.kill(server!.pid, 'SIGUSR2');
      },
      async fillRecoverySite() {
        if (!mounted) throw new Error(`scenario ${scenario.name} did not ask for a small recovery file system`);
        const st = await statfs(recoveryRoot);
        const free = Number(st.bavail) * Number(st.bsize);
        await run('fallocate', ['-l', String(free), ballast]).catch(() => undefined);
        // Whatever fallocate left (rounding, a racing writer) is taken by plain writes.
        const fh = await open(ballast, 'a');
        let taken = 0;
        try {
          const chunk = Buffer.alloc(64 * 1024, 0xa5);
          for (;;) await fh.write(chunk).then(() => { taken += chunk.length; });
        } catch {
          // ENOSPC: full.
        } finally {
          await fh.close();
        }
        return free + taken;
      },
      async freeRecoverySite() { await rm(ballast, { force: true }); },
      sleep: (ms) => delay(ms),
      note: (t) => notes.push(t),
      async events() {
        const page = await soakApi<{ items: SoakEvent[] }>(server!, 'GET', `/events?item=${itemId}&limit=200`);
        return page.items.filter((e) => e.id > eventsAfter).reverse();
      },
      item: () => soakApi(server!, 'GET', '/items/db1'),
    };
    fault = { ...fault, ...(await scenario.inject(ctx, phase)) };
    stage('fault');
    // Catch-up is measured from here, the fault's end: what a faulty link or a full disk made
    // the roles retry meanwhile is reported apart.
    const healed = await replicationBytes(server);
    if (!bytes.restarted) {
      bytes.masterTargetDuringFault = (healed['master_target_written'] ?? 0) - (before['master_target_written'] ?? 0);
      // What the process server sent towards the master target meanwhile (the WAN side).
      bytes.processServerOutDuringFault = (healed['process_server_out'] ?? 0) - (before['process_server_out'] ?? 0);
    }

    // Recovery: the first copy finishes, the writer runs on a little, stops, and a point taken
    // after that reaches the vault.
    // A protect job that never ends is a failure, but the replica is still checked.
    const pj = await waitJob(server, protectJobId, timeouts.protect).catch((err: unknown) => {
      failures.push((err as Error).message);
      return null;
    });
    if (pj && pj.state !== 'succeeded') failures.push(`protect ended ${pj.state}: ${pj.error?.code}: ${pj.error?.message}`);
    await delay(rng.int(1000, 4000));
    ledger = await writer.stop();
    writer = undefined;
    const stoppedAt = Date.now() + clockOffset;
    let latest: PointView | undefined;
    const deadline = Date.now() + timeouts.catchUp;
    while (!latest) {
      // Taken after the stop by the server's clock, and not in its future: after a backward
      // clock jump the points from before the jump carry later times than the new ones.
      const nowServer = Date.now() + clockOffset;
      latest = (await points(server).catch(() => [])).find((p) => p.takenAt > stoppedAt + 20 && p.takenAt <= nowServer + 1000 && p.status === 'ok');
      if (latest) break;
      if (Date.now() > deadline) {
        failures.push(`replication did not catch up: no point taken after the writer stopped within ${Math.round(timeouts.catchUp / 1000)} s`);
        break;
      }
      await delay(500);
    }
    stage('catchUp');
    const after = await replicationBytes(server);
    const moved = (k: string): number => (after[k] ?? 0) - (healed[k] ?? 0);
    bytes.agentCatchUp = moved('agent_sent');
    bytes.masterTargetCatchUp = moved('master_target_written');
    // Catch-up by differences: what is left of the first copy (less what was acknowledged before
    // the fault, give or take one unacknowledged window of frames) plus each cycle's changes —
    // the writer's hot regions, the records' tail, its few cold writes, each possibly sent twice
    // (a block read while it changed is resent by the next point). A reseed adds a full copy.
    const windowSec = (Date.now() - faultAt) / 1000; // from the fault's start: generous
    const cycles = moved('agent_points') + 2;
    const coldWrites = Math.ceil(0.1 * SOAK_SHAPE.writerRate * windowSec) + 2;
    const deltaBudget = 2 * 256 * 1024 * (cycles * (SOAK_SHAPE.hotRegions + 2) + coldWrites);
    const slack = phase === 'initial' ? 16 * MIB : 4 * MIB;
    const agentLimit = (phase === 'initial' ? Math.max(0, bytes.fullCopy - (before['process_server_in'] ?? 0)) : 0) + slack + deltaBudget;
    const mtLimit = (phase === 'initial' ? Math.max(0, bytes.fullCopy - (before['master_target_written'] ?? 0)) : 0) + slack + deltaBudget;
    Object.assign(bytes, { agentLimit, masterTargetLimit: mtLimit });
    if (bytes.agentCatchUp > agentLimit) failures.push(`after the fault the agent sent ${bytes.agentCatchUp} bytes, more than the ${agentLimit} a catch-up by differences needs at most (a full copy is ${bytes.fullCopy}): a reseed`);
    if (bytes.masterTargetCatchUp > mtLimit) failures.push(`after the fault the master target wrote ${bytes.masterTargetCatchUp} bytes, more than the ${mtLimit} a catch-up by differences needs at most (a full copy is ${bytes.fullCopy}): a reseed`);
    const initialAfter = (await soakApi<{ details: { replication?: { pointId?: string } } }>(server, 'GET', '/items/db1')).details.replication;
    if (phase === 'delta' && initialBefore?.pointId && initialAfter?.pointId !== initialBefore.pointId) {
      failures.push(`a new first copy (point ${initialAfter?.pointId}) replaced the one of point ${initialBefore.pointId}: the item was reseeded`);
    }
    const evs = await ctx.events();
    const resync = evs.filter((e) => e.kind === 'resync-requested');
    if (resync.length > 0) failures.push(`a full resync was requested: ${resync[0]!.message}`);
    if (scenario.check) failures.push(...(await scenario.check(ctx, fault)));
    // Every job finished, or failed saying why.
    const jobs = (await soakApi<{ items: JobView[] }>(server, 'GET', '/jobs?limit=100')).items;
    for (const j of jobs) {
      if (!['succeeded', 'failed', 'cancelled'].includes(j.state)) failures.push(`job ${j.id} (${j.kind}) is still ${j.state}`);
      else if (j.state === 'failed' && !(j.error?.code && j.error.message)) failures.push(`job ${j.id} (${j.kind}) failed without an error code and message`);
    }
    logTail += server.logs().slice(-20_000);
    await server.stop();
    if (proxies) {
      await proxies.agent.close();
      await proxies.masterTarget.close();
      proxies = null;
    }
    await rm(ballast, { force: true });

    stage('checksOnline');
    const expectedGens = Float64Array.from(prefillGens);
    for (const [block, gen] of ledger.stamps) expectedGens[block] = gen;
    const srcProblems = await checkSource({ sources: [spec.recordsPath, spec.stampsPath], ackedSeq: ledger.seq, expectedGens });
    failures.push(...srcProblems.map((p) => `harness: ${p}`));
    // Without a caught-up point the retained ones are still checked; whether acknowledged
    // data would be lost is then unknown (it is still at the source and in the caches).
    const rc = await checkReplica({ dataDir, recoveryRoot, itemId, sources: [spec.recordsPath, spec.stampsPath], ackedSeq: ledger.seq, expectedGens, prefillGens, caughtUp: latest ? { id: latest.id, takenAt: latest.takenAt } : null });
    failures.push(...rc.failures);
    notes.push(...rc.notes);
    dataLost ||= rc.dataLost;
    pointCount = rc.points.length;
    recordGapPoints = rc.points.filter((p) => p.recordGaps > 0).length;
    stage('verify');
  } catch (err) {
    failures.push(`harness error: ${(err as Error).stack ?? String(err)}`);
  } finally {
    if (writer) await writer.stop().then((l) => (ledger ??= l)).catch(() => writer!.proc.kill('SIGKILL'));
    if (server) {
      if (failures.length > 0) logTail += server.logs().slice(-20_000);
      await server.stop().catch(() => undefined);
    }
    if (proxies) {
      await proxies.agent.close().catch(() => undefined);
      await proxies.masterTarget.close().catch(() => undefined);
    }
    if (mounted) {
      // A failed run kept for inspection keeps the recovery site's files too (the tmpfs goes).
      if (failures.length > 0 && a.opts.keepFailed) await run('cp', ['-a', recoveryRoot, `${recoveryRoot}.kept`]).catch(() => undefined);
      await run('umount', ['-l', recoveryRoot]).catch(() => undefined);
    }
  }
  const ok = failures.length === 0;
  const keep = !ok && a.opts.keepFailed;
  if (!keep) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  return {
    index: a.index,
    seed: a.seed,
    scenario: scenario.name,
    phase,
    ok,
    dataLost,
    failures,
    notes,
    fault,
    bytes,
    points: pointCount,
    recordGapPoints,
    writer: { ticks: ledger?.ticks ?? 0, seq: ledger?.seq ?? 0 },
    seconds: Math.round((Date.now() - t0) / 1000),
    stages,
    ...(keep ? { dir } : {}),
    ...(ok ? {} : { logTail: logTail.slice(-20_000) }),
  };
}
