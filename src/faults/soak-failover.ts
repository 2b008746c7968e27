// The soak's failover runs (issue 9): the same physical machine and writer as the replication
// runs (soak.ts), but the fault lands in a step of the failover cycle instead of in replication.
// One run walks the cycle only as far as its phase needs:
//   protect → writer → unplanned failover from `latest`            (phase failover)
//           → commit                                               (phase commit)
//           → writer at the recovery site → reverse replication     (phase reverse)
//           → writer there again → failback --sync full → commit   (phase failback)
// The scenario's fault (soak-scenarios.ts: kill -9 of `rebound serve` at a random moment of the
// step's job, then a restart on the same data directory) is injected right after that step's job
// was started. After every step:
//   - the job finished, or failed with an error code and message; a failed job is followed by
//     what the API allows an operator (the action again), which must then succeed;
//   - the item is in the state the lifecycle names for the end of that step (never left in a
//     transitional state such as failing-over once no job runs);
//   - nothing half-written is where a user would boot it: every image file under the target
//     site's machines directory (the failed-over overlays, the committed raw images) verifies —
//     records without corruption, every stamp valid — or is absent;
//   - what the writer acknowledged before the step is on the images the item now points at:
//     records 1..N and every stamp at the generation acknowledged last.
// After reverse replication, the replica at the primary site is checked like a replication run's
// (soak-verify.ts) against the images at the recovery site.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as delay } from 'node:timers/promises';
import { verifyDisk } from '../guest/verify.ts';
import type { Prng } from './prng.ts';
import { prefill, scanStamps, STAMP_SIZE } from './soak-content.ts';
import { soakApi, startSoakServer } from './soak-server.ts';
import type { SoakServer } from './soak-server.ts';
import type { Phase, RunContext, Scenario, SoakEvent } from './soak-scenarios.ts';
import { checkReplica } from './soak-verify.ts';
import type { WriterLedger } from './soak-writer.ts';
import { points, soakContent, SOAK_SHAPE, stageClock, startWriter, waitJob } from './soak.ts';
import type { JobView, RunResult, SoakOptions } from './soak.ts';

const run = promisify(execFile);

export const FAILOVER_PHASES = ['failover', 'commit', 'reverse', 'failback'] as const;
export type FailoverPhase = (typeof FAILOVER_PHASES)[number];
export const isFailoverPhase = (p: Phase): p is FailoverPhase => (FAILOVER_PHASES as readonly string[]).includes(p);

/** States an item may rest in once no job of it runs (the lifecycle's transitional ones are not). */
const RESTING = ['protected', 'failover-cancelled', 'failed-over', 'failback-ready', 'committed', 'test-failover'];

interface ItemView {
  id: string;
  state: string;
  direction: string;
  health: string;
  details: {
    failover?: { siteId: string; disks: { id: string; path: string; format: string }[] } | null;
    placements?: Record<string, { name: string; disks: { id: string; path: string; format: string }[] }>;
  };
}

/** What a disk image holds, checked against what the writer acknowledged. */
export interface ImageCheck {
  problems: string[];
  /** Acknowledged data missing (records or stamp generations). */
  lost: boolean;
}

async function rawOf(path: string, scratch: string): Promise<{ path: string; done(): Promise<void> }> {
  if (!path.endsWith('.qcow2')) return { path, done: async () => undefined };
  const out = join(scratch, `view-${Date.now()}-${Math.floor(Math.random() * 1e9)}.raw`);
  // -U: the image may be open in a qemu-nbd the server keeps (exports of a recovered machine).
  await run('qemu-img', ['convert', '-U', '-q', '-f', 'qcow2', '-O', 'raw', path, out]);
  return { path: out, done: () => rm(out, { force: true }) };
}

/** Checks one image (raw, or qcow2 read through qemu-img) of the records disk (disk0) or the
 * stamps disk (disk1, `stampsBytes` long). `acked` null: only that it is not damaged (an image
 * nothing acknowledged needs to be on). */
export async function checkImage(path: string, disk: 'records' | 'stamps', acked: { seq: number; gens: Float64Array } | null, scratch: string, stampsBytes: number = SOAK_SHAPE.stampsBytes): Promise<ImageCheck> {
  const problems: string[] = [];
  let lost = false;
  const raw = await rawOf(path, scratch);
  try {
    if (disk === 'records') {
      const r = await verifyDisk(raw.path, acked ? { expectSeq: acked.seq } : {});
      if (r.counts.corrupt > 0) problems.push(`${path}: ${r.counts.corrupt} corrupt record(s), first at ${r.corrupt[0]?.offset}: ${r.corrupt[0]?.reason}`);
      if (r.counts.outOfOrder > 0) problems.push(`${path}: ${r.counts.outOfOrder} misplaced record(s): ${r.outOfOrder[0]?.reason}`);
      if (acked && (r.highestContiguousSeq < acked.seq || r.counts.gaps > 0)) {
        problems.push(`${path}: holds records 1..${r.highestContiguousSeq} with ${r.counts.gaps} gap(s); the writer acknowledged ${acked.seq}`);
        lost = true;
      }
    } else {
      const fh = await open(raw.path, 'r');
      try {
        const size = stampsBytes;
        const s = await scanStamps(async (at, n) => {
          const b = Buffer.alloc(n);
          const { bytesRead } = await fh.read(b, 0, n, at);
          return b.subarray(0, bytesRead);
        }, size);
        if (s.bad.length > 0) problems.push(`${path}: ${s.bad.length} bad stamp block(s), first at ${s.bad[0]!.offset}: ${s.bad[0]!.reason}`);
        if (acked) {
          for (let i = 0; i < s.gens.length; i++) {
            if (s.gens[i] !== acked.gens[i]) {
              problems.push(`${path}: the stamp block at ${i * STAMP_SIZE} holds generation ${s.gens[i]}; the writer acknowledged ${acked.gens[i]}`);
              lost = true;
              break;
            }
          }
        }
      } finally {
        await fh.close();
      }
    }
  } finally {
    await raw.done();
  }
  return { problems, lost };
}

const diskKind = (idOrPath: string): 'records' | 'stamps' | null => (/disk0/.test(idOrPath) ? 'records' : /disk1/.test(idOrPath) ? 'stamps' : null);

async function imagesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (/\.(qcow2|raw|img)$/.test(e.name)) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

export async function runFailoverOne(a: { index: number; seed: number; rng: Prng; scenario: Scenario; phase: FailoverPhase; opts: SoakOptions }): Promise<RunResult> {
  const { rng, scenario, phase } = a;
  const t0 = Date.now();
  const failures: string[] = [];
  const notes: string[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'rebound-soak-fo-'));
  const src = join(dir, 'a');
  const dr = join(dir, 'b');
  const dataDir = join(dir, 'vault');
  const scratch = join(dir, 'scratch');
  for (const d of [src, dr, dataDir, scratch]) await mkdir(d, { recursive: true });
  let server: SoakServer | undefined;
  let fault: Record<string, unknown> = {};
  let dataLost = false;
  let logTail = '';
  let writerTicks = 0;
  const bytes: RunResult['bytes'] = { agentCatchUp: 0, masterTargetCatchUp: 0, fullCopy: SOAK_SHAPE.prefillRecords * 4096 + SOAK_SHAPE.stampsBytes, restarted: false };
  const { stages, stage } = stageClock();
  const spec = soakContent(src, a.seed);
  // What the writer acknowledged so far, across its sessions at either site.
  const acked = { seq: 0, gen: 0, gens: new Float64Array(SOAK_SHAPE.stampsBytes / STAMP_SIZE) };
  const env: Record<string, string> = { REBOUND_DATA_IDLE_TIMEOUT_MS: '15000' };
  let currentJob: string | null = null;
  let writerRound = 0;

  /** The writer writes `paths` for a while and stops; with `settle`, returns once the vault holds
   * a point taken after the stop (so `latest` carries everything acknowledged). */
  const writeThenSettle = async (paths: [string, string], ms: number, settle = true): Promise<void> => {
    const w = await startWriter({
      recordsPath: paths[0],
      stampsPath: paths[1],
      recordsBytes: SOAK_SHAPE.recordsBytes,
      stampsBytes: SOAK_SHAPE.stampsBytes,
      writer: spec.writer.toString(),
      startSeq: acked.seq,
      startGen: acked.gen,
      rate: SOAK_SHAPE.writerRate,
      seed: a.seed * 10 + writerRound++,
      hotRegions: SOAK_SHAPE.hotRegions,
      ledgerPath: join(dir, `ledger-${writerRound}.json`),
    });
    await delay(ms);
    const l: WriterLedger = await w.stop();
    acked.seq = l.seq;
    acked.gen = l.gen;
    writerTicks += l.ticks;
    for (const [block, gen] of l.stamps) acked.gens[block] = gen;
    if (!settle) return;
    const stoppedAt = Date.now();
    const deadline = Date.now() + 240_000;
    for (;;) {
      const p = (await points(server!).catch(() => [])).find((x) => x.takenAt > stoppedAt + 20 && x.status === 'ok');
      if (p) return;
      if (Date.now() > deadline) throw new Error('replication did not catch up: no point taken after the writer stopped within 240 s');
      await delay(500);
    }
  };

  const item = (): Promise<ItemView> => soakApi<ItemView>(server!, 'GET', '/items/db1');
  let itemId = '';
  let siteIds: { srv: string; dr: string };

  const ctx: RunContext = {
    rng: rng.fork('fault'),
    get server() { return server!; },
    runDir: dir,
    recoveryRoot: dr,
    proxies: null,
    async restart(how, pauseMs = 0) {
      const old = server!;
      // Where the step's job was when the server went away (reported with the fault).
      if (currentJob) {
        const j = await soakApi<JobView & { tasks?: { name: string; state: string }[] }>(old, 'GET', `/jobs/${currentJob}`).catch(() => null);
        fault['jobAtKill'] = j ? `${j.state}${j.tasks ? ` [${j.tasks.map((t) => t.state).join(',')}]` : ''}` : 'unreadable';
      }
      if (how === 'kill9') await old.kill9();
      else await old.stop();
      logTail += old.logs().slice(-20_000);
      bytes.restarted = true;
      if (pauseMs > 0) await delay(pauseMs);
      server = await startSoakServer({ dataDir, env, token: old.token, logFile: join(dir, 'server.log') });
    },
    jumpClock: () => Promise.reject(new Error(`scenario ${scenario.name}: failover runs have no clock knob`)),
    fillRecoverySite: () => Promise.reject(new Error(`scenario ${scenario.name}: failover runs have no small recovery file system`)),
    freeRecoverySite: () => Promise.resolve(),
    sleep: (ms) => delay(ms),
    note: (t) => notes.push(t),
    async events() {
      const page = await soakApi<{ items: SoakEvent[] }>(server!, 'GET', `/events?item=${itemId}&limit=200`);
      return page.items.reverse();
    },
    item: () => soakApi(server!, 'GET', '/items/db1'),
    stepJob: async () => (currentJob ? soakApi<{ state: string; tasks: { name: string; state: string }[] }>(server!, 'GET', `/jobs/${currentJob}`) : null),
  };

  /** One step of the cycle: starts its job, injects the fault when it is this run's phase, waits
   * for the end, and when the job failed does what the API allows (the action again). Returns
   * whether the step got done. */
  const step = async (name: FailoverPhase, route: string, body: unknown, want: { state: string; direction?: string }): Promise<boolean> => {
    const started = Date.now();
    let job = (await soakApi<{ job: { id: string } }>(server!, 'POST', route, body)).job.id;
    currentJob = job;
    if (name === phase) {
      const injected = await scenario.inject(ctx, phase); // sets fault.jobAtKill meanwhile
      fault = { ...fault, ...injected };
    }
    for (let attempt = 1; ; attempt++) {
      const j = await waitJob(server!, job, 300_000);
      if (j.state === 'succeeded') break;
      const why = `${j.error?.code ?? '(no code)'}: ${j.error?.message ?? '(no message)'}`;
      if (!(j.error?.code && j.error.message)) failures.push(`${name}: job ${job} ended ${j.state} without an error code and message`);
      if (name !== phase) failures.push(`${name}: job ${job} ended ${j.state} without a fault in this step: ${why}`);
      else notes.push(`${name}: job ${job} ended ${j.state} after the fault: ${why}`);
      const it = await item();
      if (!RESTING.includes(it.state)) failures.push(`${name}: after job ${job} ended ${j.state} the item rests in '${it.state}', a state only a running job may leave it in`);
      if (attempt >= 3) {
        failures.push(`${name}: not done after ${attempt} attempts (last: ${why}; item ${it.state})`);
        return false;
      }
      // What an operator may do: the action again (the lifecycle refuses it with a reason when
      // the state does not allow it).
      const again = await soakApi<{ job: { id: string } }>(server!, 'POST', route, body).catch((err: unknown) => err as Error);
      if (again instanceof Error) {
        failures.push(`${name}: after job ${job} ended ${j.state} (${why}) the item is '${it.state}' and the action again was refused: ${again.message}`);
        return false;
      }
      notes.push(`${name}: started again as job ${again.job.id}`);
      job = again.job.id;
      currentJob = job;
    }
    currentJob = null;
    stage(name, started);
    const it = await item();
    if (it.state !== want.state || (want.direction && it.direction !== want.direction)) {
      failures.push(`${name}: the job succeeded but the item is '${it.state}' (${it.direction}), not '${want.state}'${want.direction ? ` (${want.direction})` : ''}`);
      return false;
    }
    return true;
  };

  /** The images the item points at now hold what was acknowledged; every image file under
   * `root`'s machines directory verifies. */
  const checkImages = async (when: string, disks: { id: string; path: string }[], root: string): Promise<void> => {
    if (disks.length !== 2) {
      failures.push(`${when}: the item points at ${disks.length} disk image(s), not 2: ${disks.map((d) => d.path).join(', ')}`);
      return;
    }
    for (const d of disks) {
      const kind = diskKind(d.id) ?? diskKind(d.path);
      if (!kind) {
        failures.push(`${when}: cannot tell which disk ${d.id} (${d.path}) is`);
        continue;
      }
      const c = await checkImage(d.path, kind, { seq: acked.seq, gens: acked.gens }, scratch).catch((err: unknown) => ({ problems: [`${d.path} cannot be read: ${(err as Error).message}`], lost: true }));
      failures.push(...c.problems.map((p) => `${when}: ${p}`));
      dataLost ||= c.lost;
    }
    const pointed = new Set(disks.map((d) => d.path));
    for (const f of await imagesUnder(join(root, 'machines'))) {
      if (pointed.has(f)) continue;
      const kind = diskKind(f);
      if (!kind) continue;
      const c = await checkImage(f, kind, null, scratch).catch((err: unknown) => ({ problems: [`${f} cannot be read: ${(err as Error).message}`], lost: false }));
      if (c.problems.length > 0) failures.push(...c.problems.map((p) => `${when}: an image nothing points at is damaged: ${p}`));
      else notes.push(`${when}: ${f} is left beside the item's images (verifies)`);
    }
  };

  try {
    const pre = await prefill(spec, { records: SOAK_SHAPE.prefillRecords, stampEvery: 1 });
    acked.seq = pre.records;
    acked.gen = pre.gen;
    for (let i = 0; i < acked.gens.length; i++) acked.gens[i] = i + 1;
    server = await startSoakServer({ dataDir, env, logFile: join(dir, 'server.log') });
    siteIds = {
      srv: (await soakApi<{ id: string }>(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: src })).id,
      dr: (await soakApi<{ id: string }>(server, 'POST', '/sites', { name: 'dr', provider: 'physical', root: dr })).id,
    };
    // Plain at rest: the harness reads the failed-over overlays with qemu-img directly.
    const compression = rng.pick(['zstd', 'none'] as const);
    fault['compression'] = compression;
    await soakApi(server, 'POST', '/policies', { name: 'soak', frequency: SOAK_SHAPE.frequency, retention: '60s', appConsistent: '0s', bandwidth: SOAK_SHAPE.bandwidth, encryption: 'none', compression });
    await soakApi(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'soak' });
    // The stop hook runs in the site's root (a failback stops the machine at dr that way).
    await soakApi(server, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [spec.recordsPath, spec.stampsPath], config: { hooks: { stop: 'touch stopped' } } });
    const protect = (await soakApi<{ job: { id: string } }>(server, 'POST', '/items/db1/protect', {})).job.id;
    itemId = (await item()).id;
    const pj = await waitJob(server, protect, 240_000);
    if (pj.state !== 'succeeded') throw new Error(`protect ended ${pj.state}: ${pj.error?.code}: ${pj.error?.message}`);
    stage('protect');
    await writeThenSettle([spec.recordsPath, spec.stampsPath], rng.int(1000, 4000));
    stage('write');

    // Unplanned failover from `latest` (the source is left as it is: it "failed").
    if (!(await step('failover', '/items/db1/failover', { mode: 'unplanned', point: 'latest' }, { state: 'failed-over' }))) return finish();
    const fo = (await item()).details.failover;
    await checkImages('after the failover', fo?.disks ?? [], dr);
    if (phase === 'failover') return finish();

    if (!(await step('commit', '/items/db1/commit', {}, { state: 'committed' }))) return finish();
    const atDr = (await item()).details.placements?.[siteIds.dr]?.disks ?? [];
    await checkImages('after the commit', atDr, dr);
    if (phase === 'commit') return finish();

    // The machine runs at dr now and changes there.
    const drPaths = (['disk0', 'disk1'] as const).map((id) => atDr.find((d) => d.id === id)?.path ?? atDr[id === 'disk0' ? 0 : 1]?.path ?? '') as [string, string];
    await writeThenSettle(drPaths, rng.int(1000, 3000), false); // not protected yet: no point to wait for
    if (!(await step('reverse', '/items/db1/reverse-replicate', {}, { state: 'protected', direction: 'reverse' }))) return finish();
    if (phase === 'reverse') {
      // The replica at srv, as a replication run checks it: a point after the writer's last
      // stop exists, and it equals the images at dr.
      await writeThenSettle(drPaths, rng.int(1000, 3000));
      const latest = (await points(server)).find((p) => p.status === 'ok');
      await server.stop();
      const rc = await checkReplica({ dataDir, recoveryRoot: src, itemId, sources: drPaths, ackedSeq: acked.seq, expectedGens: acked.gens, prefillGens: Float64Array.from(acked.gens, (_g, i) => i + 1), caughtUp: latest ? { id: latest.id, takenAt: latest.takenAt } : null });
      failures.push(...rc.failures.map((f) => `reverse replica: ${f}`));
      notes.push(...rc.notes);
      dataLost ||= rc.dataLost;
      return finish();
    }

    // Failback with a full download, then its commit.
    await writeThenSettle(drPaths, rng.int(1000, 3000));
    if (!(await step('failback', '/items/db1/failover', { mode: 'planned', sync: 'full' }, { state: 'failed-over' }))) return finish();
    const fb = (await item()).details.failover;
    await checkImages('after the failback', fb?.disks ?? [], src);
    const c = await waitJob(server, (await soakApi<{ job: { id: string } }>(server, 'POST', '/items/db1/commit', {})).job.id, 300_000);
    if (c.state !== 'succeeded') failures.push(`the failback's commit ended ${c.state}: ${c.error?.code}: ${c.error?.message}`);
    const home = (await item()).details.placements?.[siteIds.srv]?.disks ?? [];
    await checkImages('after the failback commit', home, src);
    return finish();
  } catch (err) {
    failures.push(`harness error: ${(err as Error).stack ?? String(err)}`);
    return finish();
  }

  async function finish(): Promise<RunResult> {
    try {
      if (server?.alive()) {
        const jobs = (await soakApi<{ items: JobView[] }>(server, 'GET', '/jobs?limit=100')).items;
        for (const j of jobs) {
          if (!['succeeded', 'failed', 'cancelled'].includes(j.state)) failures.push(`job ${j.id} (${j.kind}) is still ${j.state}`);
          else if (j.state === 'failed' && !(j.error?.code && j.error.message)) failures.push(`job ${j.id} (${j.kind}) failed without an error code and message`);
        }
      }
    } catch (err) {
      failures.push(`harness error at the end: ${(err as Error).message}`);
    }
    if (server) {
      logTail += server.logs().slice(-20_000);
      await server.stop().catch(() => undefined);
    }
    stage('end');
    const ok = failures.length === 0;
    const keep = !ok && a.opts.keepFailed;
    if (!keep) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    else await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
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
      points: 0,
      recordGapPoints: 0,
      writer: { ticks: writerTicks, seq: acked.seq },
      seconds: Math.round((Date.now() - t0) / 1000),
      stages,
      ...(keep ? { dir } : {}),
      ...(ok ? {} : { logTail: logTail.slice(-20_000) }),
    };
  }
}
