// The soak's fault scenarios. Each injects one fault into a running replication at a moment the
// harness chose (during the first copy or during delta cycles) and undoes it (heal, restart,
// space freed) before returning; the harness then lets replication catch up and runs the same
// checks after every scenario. A scenario may add checks of its own (what an operator must have
// been told). The failover scenarios have phases of their own (a step of the failover cycle);
// their runs follow soak-failover.ts, which injects the fault right after that step's job started.
import type { FaultProxy } from './tcp-proxy.ts';
import type { Prng } from './prng.ts';
import type { SoakServer } from './soak-server.ts';

/** When the fault lands: during the first copy, or once delta cycles run; or in a step of the
 * failover cycle (soak-failover.ts): an unplanned failover, its commit, reverse replication's
 * first sync, a failback with --sync full. */
export type Phase = 'initial' | 'delta' | 'failover' | 'commit' | 'reverse' | 'failback';

export interface SoakEvent { id: number; at: number; kind: string; item: string | null; message: string; data: unknown }

export interface RunContext {
  readonly rng: Prng;
  /** The current server (replaced by restart()). */
  readonly server: SoakServer;
  readonly runDir: string;
  readonly recoveryRoot: string;
  /** Fault proxies in front of the process server (agent → PS) and the master target (PS → MT),
   * when the scenario asked for them. */
  readonly proxies: { agent: FaultProxy; masterTarget: FaultProxy } | null;
  /** Restarts `rebound serve` on the same data directory (SIGKILL or SIGTERM first). */
  restart(how: 'kill9' | 'stop', pauseMs?: number): Promise<void>;
  /** Moves the server's wall clock by `ms` (needs setup.clock). */
  jumpClock(ms: number): Promise<void>;
  /** Fills the recovery site's file system (needs setup.recoveryFs); returns the bytes taken. */
  fillRecoverySite(): Promise<number>;
  freeRecoverySite(): Promise<void>;
  sleep(ms: number): Promise<void>;
  note(text: string): void;
  /** The item's events since the run started (oldest first). */
  events(): Promise<SoakEvent[]>;
  /** The item as the API shows it. */
  item(): Promise<{ state: string; health: string; details: Record<string, unknown> }>;
  /** In a failover run: the job of the step under way (null when none). */
  stepJob?(): Promise<{ state: string; tasks: { name: string; state: string }[] } | null>;
}

export interface ScenarioSetup {
  proxies?: boolean;
  /** The recovery site's root on a size-limited tmpfs (root only). */
  recoveryFs?: boolean;
  clock?: boolean;
}

export interface Scenario {
  name: string;
  description: string;
  phases: readonly Phase[];
  setup?: ScenarioSetup;
  /** Injects the fault and undoes it; returns what was done (reported as JSON). */
  inject(ctx: RunContext, phase: Phase): Promise<Record<string, unknown>>;
  /** Extra checks once replication caught up; each returned sentence is a failure. */
  check?(ctx: RunContext, fault: Record<string, unknown>): Promise<string[]>;
}

const kill9 = (phase: Phase): Scenario => ({
  name: `kill9-${phase}`,
  description: `kill -9 of rebound serve during ${phase === 'initial' ? 'the initial replication' : 'delta cycles'}, then a restart on the same data directory`,
  phases: [phase],
  async inject(ctx) {
    const pauseMs = ctx.rng.int(0, 3000);
    await ctx.restart('kill9', pauseMs);
    return { restartAfterMs: pauseMs };
  },
});

/** kill -9 of rebound serve at a random moment of a failover step's job: a task of the job is
 * picked at random (or, in one run of n+1, the job's end), the harness polls the job every 10 ms
 * until that task runs, waits 0–`jitterMs` more and kills; then a restart on the same data
 * directory after 0–3 s. Most tasks of these jobs take a fraction of a second here, so a plain
 * random delay would mostly land after the job ended. */
const kill9Step = (phase: 'failover' | 'commit' | 'reverse' | 'failback', what: string, jitterMs: number): Scenario => ({
  name: `kill9-${phase}`,
  description: `kill -9 of rebound serve while a random task of ${what} runs (physical sites), then a restart; the job ends or is started again, the images verify and hold what was acknowledged`,
  phases: [phase],
  async inject(ctx) {
    const first = await ctx.stepJob?.();
    const n = first?.tasks.length ?? 1;
    const target = ctx.rng.int(0, n); // n: after the job ended
    const jitter = ctx.rng.int(0, jitterMs);
    const pauseMs = ctx.rng.int(0, 3000);
    const t0 = Date.now();
    let seen = 'the job ended';
    for (;;) {
      const j = await ctx.stepJob?.().catch(() => null);
      if (!j || ['succeeded', 'failed', 'cancelled'].includes(j.state)) break;
      const t = j.tasks[target];
      if (t && t.state !== 'pending') {
        seen = `task ${target} (${t.name}) ${t.state}`;
        break;
      }
      if (Date.now() - t0 > 120_000) {
        seen = 'gave up waiting after 120 s';
        break;
      }
      await ctx.sleep(10);
    }
    await ctx.sleep(jitter);
    await ctx.restart('kill9', pauseMs);
    return { targetTask: target === n ? 'end' : target, reached: seen, jitterMs: jitter, killAfterMs: Date.now() - t0, restartAfterMs: pauseMs };
  },
});

type NetKind = 'cut' | 'drop' | 'half-open';
const network = (kind: NetKind, link: 'agent' | 'mt'): Scenario => ({
  name: `net-${kind}-${link === 'agent' ? 'agent-ps' : 'ps-mt'}`,
  description: `${kind === 'cut' ? 'connections reset and refused' : kind === 'drop' ? 'every byte silently dropped' : 'one direction black-holed, connections left open'} for a few seconds between ${link === 'agent' ? 'agent and process server' : 'process server and master target'} (TCP fault proxy)`,
  phases: ['initial', 'delta'],
  setup: { proxies: true },
  async inject(ctx) {
    const proxy = link === 'agent' ? ctx.proxies!.agent : ctx.proxies!.masterTarget;
    const ms = ctx.rng.int(1000, 8000);
    const before = proxy.stats();
    const fault: Record<string, unknown> = { link: link === 'agent' ? 'agent→process-server' : 'process-server→master-target', kind, ms };
    if (kind === 'cut') {
      proxy.cut(ms);
      await ctx.sleep(ms);
    } else if (kind === 'drop') {
      proxy.drop(true);
      await ctx.sleep(ms);
      proxy.drop(false);
    } else {
      const dir = ctx.rng.pick(['to-client', 'to-target'] as const);
      fault['direction'] = dir;
      proxy.halfOpen(dir);
      await ctx.sleep(ms);
    }
    proxy.heal();
    const after = proxy.stats();
    fault['refused'] = after.refused - before.refused;
    fault['droppedBytes'] = after.dropped['to-target'] + after.dropped['to-client'] - before.dropped['to-target'] - before.dropped['to-client'];
    return fault;
  },
});

const diskFull: Scenario = {
  name: 'disk-full-recovery',
  description: 'the recovery site\'s file system (a size-limited tmpfs) fills up for 11-18 s (longer than a cycle), then the space is freed',
  phases: ['initial', 'delta'],
  setup: { recoveryFs: true },
  async inject(ctx) {
    // Longer than the slowest policy's cycle (10 s, encrypted runs), so a cycle writes while the
    // site is full: a shorter window could fall between two cycles, when nothing is written and
    // there is nothing to tell (seed 14116: 3.0 s between points 10 s apart).
    const ms = ctx.rng.int(11_000, 18_000);
    const taken = await ctx.fillRecoverySite();
    await ctx.sleep(ms);
    const during = await ctx.item();
    await ctx.freeRecoverySite();
    return { fullForMs: ms, ballastBytes: taken, healthWhileFull: during.health };
  },
  async check(ctx) {
    // The operator must hear why replication stopped: an event naming the full recovery site.
    const evs = await ctx.events();
    const told = evs.some((e) => /space|full|ENOSPC/i.test(e.message));
    return told ? [] : [`no event told that the recovery site ran out of space (events: ${evs.map((e) => e.kind).join(', ') || 'none'})`];
  },
};

const clock = (direction: 'forward' | 'backward'): Scenario => ({
  name: `clock-${direction}`,
  description: `the server's wall clock jumps ${direction} by minutes to hours (test knob src/faults/clock-skew.ts), sometimes followed by a restart`,
  phases: ['initial', 'delta'],
  setup: { clock: true },
  async inject(ctx) {
    const ms = ctx.rng.int(5 * 60_000, 3 * 3600_000) * (direction === 'forward' ? 1 : -1);
    await ctx.jumpClock(ms);
    const restart = ctx.rng.float() < 0.5;
    if (restart) {
      await ctx.sleep(ctx.rng.int(500, 4000));
      await ctx.restart(ctx.rng.pick(['kill9', 'stop'] as const));
    }
    return { jumpMs: ms, restartAfter: restart };
  },
});

export const SCENARIOS: readonly Scenario[] = [
  kill9('initial'),
  kill9('delta'),
  network('cut', 'agent'),
  network('cut', 'mt'),
  network('drop', 'agent'),
  network('drop', 'mt'),
  network('half-open', 'agent'),
  network('half-open', 'mt'),
  diskFull,
  clock('forward'),
  clock('backward'),
  kill9Step('failover', 'an unplanned failover', 100),
  kill9Step('commit', "a failover's commit", 100),
  // After the long task (the first sync, the full download) the rest of these jobs takes well
  // under a second: a longer jitter lands after the job ended (seeds 9100-9139 used 2 s and 1 s).
  kill9Step('reverse', "reverse replication's first sync", 1000),
  kill9Step('failback', 'a failback with --sync full', 300),
];

export function scenarioByName(name: string): Scenario {
  const s = SCENARIOS.find((x) => x.name === name);
  if (!s) throw new Error(`There is no soak scenario '${name}'. Scenarios: ${SCENARIOS.map((x) => x.name).join(', ')}.`);
  return s;
}
