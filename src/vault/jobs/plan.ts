// Recovery plans as jobs: one job per plan verb (plan-failover, plan-test-failover,
// plan-test-cleanup, plan-commit, plan-reverse-replicate) whose tasks are the plan's steps in the
// order domain/plan.ts gives them, fixed when the job is queued:
//   [failback synced before: phase 1 of every machine]
//   [planned: shut the sources down, last group first]
//   for each group: its before-actions, its machines in parallel, its after-actions
// A group's machines go through ItemActions.act exactly as `rebound failover MACHINE` would, at
// most PLAN_CONCURRENCY at a time, and the plan follows each child job to its end. The child ids
// are the task's checkpoint, so a retried task (after a failure, a crash or `rebound job resume`)
// follows the children it started instead of starting them again; a child that failed is started
// anew (failover family: its failure hook put the item where the lifecycle allows a retry) or
// resumed (commit, reverse replication). A failback synced before is followed to its waiting
// phase and then completed by the plan itself. Script actions run with the plan, group, direction
// and machines in their environment and a timeout; manual actions wait for `rebound job resume`.
// Actions run for failover and test failover only: cleanup, commit and reverse replication take
// the groups in order without them.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { conflict, invalid, notFound, ReboundError, toReboundError } from '../../domain/errors.ts';
import { decide } from '../../domain/lifecycle.ts';
import type { OperatorAction } from '../../domain/lifecycle.ts';
import type { Direction, ItemState, PlanAction, PlanGroup, PointChoice, RecoveryPoint } from '../../domain/model.ts';
import { choosePoints, executionOrder, inferDirection } from '../../domain/plan.ts';
import type { MachinePoints, PlanItemView } from '../../domain/plan.ts';
import type { HookContext, JobDefinition, JobView, TaskContext } from '../../jobs/types.ts';
import type { Store } from '../../store/open.ts';
import { parseJson } from '../../store/open.ts';
import type { Row } from '../../store/schema.ts';
import type { ItemActions, JobParams } from '../item-actions.ts';
import type { RecoveryPlane } from '../recovery-plane.ts';
import { loadRecovery, onHost, placementAt, site } from './recovery-context.ts';

export const PLAN_VERBS = ['test-failover', 'test-cleanup', 'failover', 'commit', 'reverse-replicate'] as const;
export type PlanVerb = (typeof PLAN_VERBS)[number];
/** Machines of one group handled at once. */
export const PLAN_CONCURRENCY = 4;
/** A script action's timeout when the action names none. */
export const DEFAULT_SCRIPT_TIMEOUT_S = 300;
const SHUTDOWN_MS = 120_000;
const FOLLOW_MS = 1000;
const OUTPUT_MAX = 64 * 1024;

export type PlanStepParams =
  | { kind: 'sync'; machines: string[] }
  | { kind: 'shutdown'; group: number; machines: string[] }
  | { kind: 'action'; group: number; when: 'before' | 'after'; action: PlanAction }
  | { kind: 'machines'; group: number; machines: string[] };

export interface PlanJobParams {
  plan: string;
  verb: PlanVerb;
  /** What each machine gets (a replication group's members get their common point pinned). */
  action: OperatorAction;
  steps: PlanStepParams[];
  /** The items' replication direction; 'reverse' means a failover of the plan is a failback. */
  direction: Direction;
  failback: boolean;
  /** Site names: where the machines run now and where the verb takes them. */
  fromSite: string;
  toSite: string;
  /** Who started the plan; child jobs are created by `BY via plan:NAME (job ID)`. */
  by: string;
  concurrency: number;
}

export const planJobKind = (verb: PlanVerb): string => `plan-${verb}`;

/** Failed children of these kinds are started anew: their failure hooks left the item where the
 * lifecycle takes the same action again. Others (commit, reverse replication, cleanup) moved the
 * item on when they were queued, so their job is retried instead. */
const RESTARTED_KINDS = new Set(['failover', 'failback-sync', 'test-failover']);

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

function listNames(names: readonly string[], max = 6): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

function verbWords(verb: PlanVerb, failback: boolean): string {
  switch (verb) {
    case 'failover':
      return failback ? 'fail back' : 'fail over';
    case 'test-failover':
      return 'test failover of';
    case 'test-cleanup':
      return 'clean up the test of';
    case 'commit':
      return 'commit';
    case 'reverse-replicate':
      return 'reverse-replicate';
  }
}

export function describeAction(a: PlanAction): string {
  return a.kind === 'script' ? `script ${a.path}` : `manual: ${a.text}`;
}

function stepName(p: Pick<PlanJobParams, 'verb' | 'failback' | 'fromSite' | 'toSite'>, s: PlanStepParams): string {
  switch (s.kind) {
    case 'sync':
      return `sync every machine to ${p.toSite} while it runs (failback phase 1): ${listNames(s.machines)}`;
    case 'shutdown':
      return `group ${s.group + 1}: shut down ${listNames(s.machines)} at ${p.fromSite}`;
    case 'action':
      return `group ${s.group + 1}, ${s.when}: ${describeAction(s.action)}`;
    case 'machines':
      return `group ${s.group + 1}: ${verbWords(p.verb, p.failback)} ${listNames(s.machines)}`;
  }
}

// ---- queueing a plan run --------------------------------------------------------------------

export interface PlanRow {
  name: string;
  groups: PlanGroup[];
}

/** A plan's row by name, or a 404 that says how to make it. */
export async function planRow(store: Store, name: string): Promise<Row<'recovery_plans'>> {
  const row = await store.db.selectFrom('recovery_plans').selectAll().where('name', '=', name).executeTakeFirst();
  if (!row) throw notFound('plan.not-found', `no plan is named '${name}': create it with rebound plan create ${name} --group M1,M2 (rebound plan list shows the plans).`);
  return row;
}

export async function loadPlan(store: Store, name: string): Promise<PlanRow> {
  const row = await planRow(store, name);
  return { name: row.name, groups: parseJson<{ groups?: PlanGroup[] }>(row.spec, {}).groups ?? [] };
}

/** The unfinished job of a plan, if one exists (a plan runs one verb at a time). */
export async function activePlanJob(store: Store, name: string): Promise<{ id: string; kind: string; state: string } | undefined> {
  return store.db
    .selectFrom('jobs')
    .select(['id', 'kind', 'state'])
    .where('target', '=', `plan:${name}`)
    .where('kind', 'in', PLAN_VERBS.map(planJobKind))
    .where('state', 'in', ['queued', 'running', 'waiting'])
    .orderBy('created_at', 'desc')
    .executeTakeFirst();
}

/**
 * What choosePoints needs to decide for these machines: a replication group's members (the plan's
 * and their peers outside it) with their group points, every other machine with its newest usable
 * point only (enough for its own latest), and for a point id just that point.
 */
export async function machinePoints(store: Store, machines: readonly string[], choice: PointChoice): Promise<MachinePoints[]> {
  const db = store.db;
  const items = await db.selectFrom('protected_items as i').innerJoin('machines as m', 'm.id', 'i.machine_id').select(['i.id', 'm.name', 'i.group_name']).where('m.name', 'in', [...machines]).execute();
  const groups = [...new Set(items.map((i) => i.group_name).filter((g): g is string => g !== null))];
  const peers = groups.length === 0 ? [] : await db.selectFrom('protected_items as i').innerJoin('machines as m', 'm.id', 'i.machine_id').select(['i.id', 'm.name', 'i.group_name']).where('i.group_name', 'in', groups).execute();
  const all = new Map([...items, ...peers].map((i) => [i.id, i]));
  const grouped = [...all.values()].filter((i) => i.group_name !== null).map((i) => i.id);
  const single = [...all.values()].filter((i) => i.group_name === null).map((i) => i.id);
  const kinds = choice === 'latest-app-consistent' ? ['app'] : ['app', 'crash'];
  const rows: Row<'recovery_points'>[] = [];
  if (typeof choice === 'object') {
    if (all.size > 0) rows.push(...(await db.selectFrom('recovery_points').selectAll().where('item_id', 'in', [...all.keys()]).where('id', '=', choice.id).execute()));
  } else {
    if (single.length > 0) {
      rows.push(
        ...(await db
          .selectFrom('recovery_points as rp')
          .selectAll('rp')
          .where('rp.item_id', 'in', single)
          .where('rp.status', '=', 'ok')
          .where('rp.kind', 'in', kinds)
          .where('rp.taken_at', '=', (eb) => eb.selectFrom('recovery_points as p2').select((e) => e.fn.max('p2.taken_at').as('t')).whereRef('p2.item_id', '=', 'rp.item_id').where('p2.status', '=', 'ok').where('p2.kind', 'in', kinds))
          .execute()),
      );
    }
    if (grouped.length > 0) {
      rows.push(...(await db.selectFrom('recovery_points').selectAll().where('item_id', 'in', grouped).where('status', '=', 'ok').where('kind', 'in', kinds).where('group_point_id', 'is not', null).execute()));
    }
  }
  return [...all.values()].map((i) => ({
    machine: i.name,
    group: i.group_name,
    points: rows.filter((r) => r.item_id === i.id).map((r): RecoveryPoint => ({ id: r.id, item: r.item_id, takenAt: Number(r.taken_at), kind: r.kind as RecoveryPoint['kind'], groupPointId: r.group_point_id, status: r.status as RecoveryPoint['status'] })),
  }));
}

/** The verb's action as one machine of the plan gets it. */
export function machineAction(verb: PlanVerb, opts: { point?: PointChoice; notes?: string; failover?: Extract<OperatorAction, { kind: 'failover' }> }): OperatorAction {
  switch (verb) {
    case 'test-failover':
      return { kind: 'test-failover', ...(opts.point === undefined ? {} : { point: opts.point }) };
    case 'test-cleanup':
      return { kind: 'test-cleanup', notes: opts.notes ?? '' };
    case 'failover':
      if (!opts.failover) throw invalid('failover-options-required', 'a plan failover needs its mode: planned or unplanned.');
      return opts.failover;
    case 'commit':
      return { kind: 'commit' };
    case 'reverse-replicate':
      return { kind: 'reverse-replicate' };
  }
}

/**
 * Checks that the plan can run `verb` now and builds the job's parameters: every machine
 * protected and running at one site (inferDirection), the lifecycle allows the action on every
 * machine (all refusals named at once), the chosen points exist, and no other job of the plan is
 * unfinished. Nothing changes here; the caller queues the job.
 */
export async function preparePlanRun(store: Store, actions: ItemActions, planName: string, verb: PlanVerb, action: OperatorAction, by: string): Promise<{ kind: string; target: string; params: PlanJobParams }> {
  const plan = await loadPlan(store, planName);
  const busy = await activePlanJob(store, plan.name);
  if (busy) {
    throw conflict('plan-busy', `plan ${plan.name} already has job ${busy.id} (${busy.kind}, ${busy.state}): let it finish, resume it (rebound job resume ${busy.id}) or cancel it (rebound job cancel ${busy.id}) first.`);
  }
  const machines = plan.groups.flatMap((g) => g.machines);
  const loaded = await Promise.all(machines.map((m) => actions.load(m)));
  const siteRows = await store.db.selectFrom('sites').select(['id', 'name']).execute();
  const siteName = (id: string): string => siteRows.find((s) => s.id === id)?.name ?? id;
  const views: PlanItemView[] = loaded.map((l) => ({
    machine: l.machine.name,
    state: (l.item?.state ?? null) as ItemState | null,
    direction: (l.item?.direction ?? 'forward') as Direction,
    activeSite: l.item ? siteName(l.item.active_site_id) : '',
  }));
  const where = inferDirection(plan.name, views);

  const refusals: string[] = [];
  const jobs = loaded.map((l) => {
    const d = decide(l.item ? { machine: l.machine.name, state: l.item.state as ItemState, direction: l.item.direction as Direction, activeSite: l.item.active_site_id } : null, action, l.ctx, l.machine.name);
    if (!d.ok) refusals.push(d.error.message);
    return d.ok ? d.job : null;
  });
  if (refusals.length > 0) {
    throw conflict('plan-refused', `${verb} of plan ${plan.name} is refused for ${refusals.length} of its ${plural(machines.length, 'machine')}: ${refusals.join(' ')}`, { details: { plan: plan.name, verb, refused: refusals.length } });
  }
  const first = jobs[0];
  const planned = first?.planned === true;
  const phased = jobs.some((j) => j?.kind === 'failback-sync');
  const toSite = [...new Set(jobs.map((j) => siteName(j?.to ?? '')))].join(', ');

  // Points: fail early when the choice cannot be met (no app-consistent point, no common point of
  // a replication group, a point id for several machines).
  if ((action.kind === 'test-failover' || (action.kind === 'failover' && action.mode === 'unplanned'))) {
    const choice = action.point ?? 'latest';
    choosePoints(`plan ${plan.name}`, await machinePoints(store, machines, choice), choice);
  }

  const withActions = verb === 'failover' || verb === 'test-failover';
  const groups = withActions ? plan.groups : plan.groups.map((g) => ({ ...g, before: [], after: [] }));
  const n = groups.length;
  let shutdowns = 0;
  const steps: PlanStepParams[] = [];
  if (phased) steps.push({ kind: 'sync', machines });
  for (const s of executionOrder({ groups }, { planned: verb === 'failover' && planned })) {
    if (s.kind === 'shutdown') steps.push({ kind: 'shutdown', group: n - 1 - shutdowns++, machines: s.machines });
    else if (s.kind === 'action') steps.push(s);
    else steps.push({ kind: 'machines', group: s.group, machines: s.machines });
  }
  return {
    kind: planJobKind(verb),
    target: `plan:${plan.name}`,
    params: { plan: plan.name, verb, action, steps, direction: where.direction, failback: where.failback, fromSite: where.activeSite, toSite, by, concurrency: PLAN_CONCURRENCY },
  };
}

// ---- the job --------------------------------------------------------------------------------

type Ctx = TaskContext<PlanJobParams>;

interface ChildCheckpoint {
  /** machine → its child job. */
  children: Record<string, string>;
  /** machine → pinned point id (replication groups' common points). */
  pins?: Record<string, string>;
}

interface MachinesResult {
  machines: Record<string, { job: string; state: string }>;
  pins: Record<string, string>;
}

/** Runs fn over items, at most `limit` at once; never rejects (each outcome is returned). */
async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]!) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

export function planJobs(store: Store, actions: ItemActions, plane: RecoveryPlane): JobDefinition<PlanJobParams>[] {
  const jobs = actions.jobs;
  const creator = (ctx: { params: PlanJobParams; job: { id: string } }): string => `${ctx.params.by} via plan:${ctx.params.plan} (job ${ctx.job.id})`;

  /** Resolves when this worker reports a change of job `id`, or after `ms` (a child may run on
   * another vault process of a scale-out vault, whose changes only the store shows). */
  function changeOf(id: string, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        jobs.off('job', seen);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const seen = (v: JobView): void => {
        if (v.id === id) done();
      };
      const timer = setTimeout(done, ms);
      jobs.on('job', seen);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** Follows a job until it ends or waits for an operator; reports its progress. */
  async function follow(ctx: Ctx, id: string, onProgress: (pct: number) => void): Promise<JobView> {
    for (;;) {
      const j = await jobs.get(id, 0);
      if (!j) throw notFound('job.not-found', `child job ${id} of plan ${ctx.params.plan} no longer exists.`);
      onProgress(j.progress);
      if (j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled' || j.state === 'waiting') return j;
      await changeOf(id, FOLLOW_MS, ctx.signal);
      ctx.signal.throwIfAborted();
    }
  }

  /** The newest child this plan job made for a machine (after a crash between queueing it and saving its id). */
  async function adopt(ctx: Ctx, machine: string): Promise<string | undefined> {
    const row = await store.db.selectFrom('jobs').select('id').where('target', '=', machine).where('created_by', '=', creator(ctx)).where('created_at', '>=', ctx.job.createdAt).orderBy('created_at', 'desc').limit(1).executeTakeFirst();
    return row?.id;
  }

  /** Replication groups' common points, chosen once per plan job and kept by every later task. */
  async function pinsFor(ctx: Ctx, cp: ChildCheckpoint, machines: readonly string[]): Promise<Record<string, string>> {
    const pins: Record<string, string> = { ...cp.pins };
    for (const r of ctx.results.values()) Object.assign(pins, (r as Partial<MachinesResult> | null)?.pins ?? {});
    const a = ctx.params.action;
    if (a.kind !== 'test-failover' && !(a.kind === 'failover' && a.mode === 'unplanned')) return pins;
    const choice = a.point ?? 'latest';
    if (typeof choice === 'object') return pins; // a point id: one machine, passed as it is
    const all = ctx.params.steps.flatMap((s) => (s.kind === 'machines' ? s.machines : []));
    const mp = await machinePoints(store, all, choice);
    const grouped = mp.filter((m) => m.group !== null && machines.includes(m.machine) && pins[m.machine] === undefined);
    if (grouped.length === 0) return pins;
    const touched = new Set(grouped.map((m) => m.group));
    const chosen = choosePoints(`plan ${ctx.params.plan}`, mp.filter((m) => m.group !== null && touched.has(m.group)), choice);
    for (const [machine, p] of chosen) {
      if (!all.includes(machine) || pins[machine] !== undefined) continue;
      pins[machine] = p.id;
      await ctx.log(`${machine} uses point ${p.id} (${new Date(p.takenAt).toISOString()}), the newest ${choice === 'latest-app-consistent' ? 'app-consistent ' : ''}point common to its replication group ${mp.find((m) => m.machine === machine)?.group ?? ''}.`);
    }
    return pins;
  }

  /** A group's machines (or, for the failback's phase 1, every machine) through their child jobs. */
  async function runMachines(ctx: Ctx, machines: readonly string[], phase: 'sync' | 'run', group: number | null): Promise<MachinesResult> {
    const p = ctx.params;
    const cp: ChildCheckpoint = { children: {}, ...(ctx.checkpoint as ChildCheckpoint | undefined) };
    cp.children = { ...cp.children };
    // A failback's phase 1 started the children that the group tasks now complete.
    const inherited: Record<string, string> = {};
    for (const r of ctx.results.values()) Object.assign(inherited, Object.fromEntries(Object.entries((r as Partial<MachinesResult> | null)?.machines ?? {}).map(([m, x]) => [m, x.job])));
    cp.pins = await pinsFor(ctx, cp, machines);
    let saving = Promise.resolve();
    const save = (): Promise<void> => (saving = saving.then(() => ctx.saveCheckpoint({ children: { ...cp.children }, pins: { ...cp.pins } })));
    await save();

    const progress = new Map<string, number>();
    let lastPct = -1;
    const report = (): void => {
      const pct = Math.floor([...progress.values()].reduce((a, b) => a + b, 0) / machines.length);
      if (pct !== lastPct) {
        lastPct = pct;
        void ctx.progress(Math.min(99, pct)).catch(() => undefined);
      }
    };
    const where = group === null ? '' : ` (group ${group + 1})`;

    const one = async (m: string): Promise<{ job: string; state: string }> => {
      let id = cp.children[m] ?? inherited[m] ?? (await adopt(ctx, m));
      let j = id ? await jobs.get(id, 0) : undefined;
      if (j && (j.state === 'failed' || j.state === 'cancelled')) {
        if (RESTARTED_KINDS.has(j.kind)) {
          await ctx.log(`${m}: its earlier ${j.kind} job ${j.id} ${j.state}${j.error ? ` (${j.error.message})` : ''}; starting it again.`);
          j = undefined;
        } else if (j.state === 'failed') {
          j = await jobs.resume(j.id, creator(ctx));
          await ctx.log(`${m}: retrying its ${j.kind} job ${j.id}.`);
        } else {
          throw conflict('child-cancelled', `${m}'s ${j.kind} job ${j.id} was cancelled; do that step by hand (rebound ${j.kind} ${m}), then resume the plan.`);
        }
      }
      if (!j) {
        const action = cp.pins?.[m] !== undefined && (p.action.kind === 'test-failover' || p.action.kind === 'failover') ? { ...p.action, point: { id: cp.pins[m]! } } : p.action;
        j = await actions.act(m, action, creator(ctx));
        await ctx.log(`${m}: ${j.kind} job ${j.id} started${where}.`);
      }
      id = j.id;
      if (cp.children[m] !== id) {
        cp.children[m] = id;
        await save();
      }
      for (;;) {
        j = await follow(ctx, id, (pct) => {
          progress.set(m, phase === 'sync' ? 0 : pct);
          report();
        });
        if (j.state === 'waiting' && j.kind === 'failback-sync') {
          if (phase === 'sync') {
            progress.set(m, 100);
            report();
            await ctx.log(`${m}: phase 1 of failback job ${j.id} is done; it waits for the plan to complete it.`);
            return { job: j.id, state: j.state };
          }
          const itemId = (j.params as JobParams).itemId;
          const item = await store.db.selectFrom('protected_items').select('state').where('id', '=', itemId).executeTakeFirst();
          if (item?.state === 'failback-ready') await actions.internal(itemId, { kind: 'complete-failover' });
          await jobs.resume(j.id, creator(ctx));
          await ctx.log(`${m}: the plan completes failback job ${j.id} itself (as rebound complete-failover ${j.id} would): shut down at ${p.fromSite}, last differences, start at ${p.toSite}.`);
          continue;
        }
        if (j.state === 'waiting') throw conflict('child-waiting', `${m}'s ${j.kind} job ${j.id} waits for an operator: see rebound job show ${j.id}.`);
        if (j.state !== 'succeeded') {
          throw new ReboundError('conflict', 'child-failed', `${m}'s ${j.kind} job ${j.id} ${j.state}${j.error ? `: ${j.error.message}` : ''}`);
        }
        progress.set(m, 100);
        report();
        await ctx.log(`${m}: ${j.kind} job ${j.id} succeeded.`);
        return { job: j.id, state: j.state };
      }
    };

    const outcomes = await pool(machines, p.concurrency, one);
    await saving;
    ctx.signal.throwIfAborted();
    const done: Record<string, { job: string; state: string }> = {};
    const failed: string[] = [];
    outcomes.forEach((o, i) => {
      const m = machines[i]!;
      if (o.status === 'fulfilled') done[m] = o.value;
      else failed.push(`${toReboundError(o.reason).message.replace(/[.\s]+$/, '')}.`);
    });
    if (failed.length > 0) {
      const ok = Object.keys(done);
      throw new ReboundError('conflict', 'plan-machines-failed', `${plural(failed.length, 'machine')} of ${group === null ? `plan ${p.plan}` : `group ${group + 1} of plan ${p.plan}`} did not ${phase === 'sync' ? 'finish phase 1' : verbWords(p.verb, p.failback).replace(/ of$/, '')}: ${failed.join(' ')}${ok.length ? ` Done: ${listNames(ok)}.` : ''}`, {
        hint: `fix the cause, then retry from this step with rebound job resume ${ctx.job.id}: machines already done are not done again.`,
        retryable: false,
      });
    }
    return { machines: done, pins: cp.pins };
  }

  /** Planned failover: the sources of one group shut down (the plan does it last group first). */
  async function shutdownGroup(ctx: Ctx, machines: readonly string[]): Promise<unknown> {
    const outcomes = await pool(machines, ctx.params.concurrency, async (m) => {
      const l = await actions.load(m);
      if (!l.item) throw conflict('not-protected', `${m} is not protected.`);
      const rc = await loadRecovery(store, l.item.id);
      const from = site(rc, l.item.active_site_id);
      const source = placementAt(rc, from.id);
      if (!source) throw conflict('no-source-machine', `${m} has no machine at ${from.name} to shut down.`);
      await plane.provider(onHost(from, source)).shutdown(source.name, { timeoutMs: SHUTDOWN_MS }, ctx.signal);
      await ctx.log(`${m}: ${source.name} is shut down at ${from.name}.`);
      return m;
    });
    ctx.signal.throwIfAborted();
    const stopped = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`${machines[i]}: ${toReboundError(o.reason).message}`] : []));
    if (failed.length > 0) {
      throw new ReboundError('conflict', 'plan-shutdown-failed', `${plural(failed.length, 'source')} did not shut down: ${failed.join(' ')}${stopped.length ? ` Shut down: ${stopped.join(', ')}.` : ''}`, {
        hint: `make them stop (or use an unplanned failover), then retry from this step with rebound job resume ${ctx.job.id}.`,
        retryable: false,
      });
    }
    return { stopped };
  }

  async function runScript(ctx: Ctx, step: Extract<PlanStepParams, { kind: 'action' }>, action: Extract<PlanAction, { kind: 'script' }>): Promise<unknown> {
    const p = ctx.params;
    const where = `${step.when} group ${step.group + 1} of plan ${p.plan}`;
    const fix = `fix it, then retry from this step with rebound job resume ${ctx.job.id}`;
    await checkScript(action.path).catch((err: unknown) => {
      throw new ReboundError('conflict', 'plan-script-unusable', `script ${action.path} (${where}) cannot run: ${toReboundError(err).message} ${fix}.`, { retryable: false });
    });
    const g = p.steps.find((s): s is Extract<PlanStepParams, { kind: 'machines' }> => s.kind === 'machines' && s.group === step.group);
    const timeoutS = action.timeoutSeconds ?? DEFAULT_SCRIPT_TIMEOUT_S;
    const env: Record<string, string> = {
      PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: process.env['HOME'] ?? '/',
      LANG: process.env['LANG'] ?? 'C.UTF-8',
      REBOUND_PLAN: p.plan,
      REBOUND_GROUP: String(step.group + 1),
      REBOUND_WHEN: step.when,
      REBOUND_DIRECTION: p.direction,
      REBOUND_OPERATION: p.verb,
      REBOUND_FAILOVER_TYPE: p.action.kind === 'failover' ? p.action.mode : 'test',
      REBOUND_FAILBACK: p.failback ? '1' : '0',
      REBOUND_MACHINES: (g?.machines ?? []).join(','),
      REBOUND_FROM_SITE: p.fromSite,
      REBOUND_TO_SITE: p.toSite,
      REBOUND_JOB: ctx.job.id,
    };
    await ctx.log(`running ${action.path} (${where}, timeout ${timeoutS} s) for ${env['REBOUND_MACHINES']}.`);
    const t0 = Date.now();
    const r = await runProcess(action.path, env, timeoutS * 1000, ctx.signal);
    ctx.signal.throwIfAborted();
    const said = r.output.trim().split('\n').slice(-20).join('\n');
    if (said) await ctx.log(`${action.path} said:\n${said}`, r.code === 0 ? 'info' : 'warn');
    if (r.timedOut) {
      throw new ReboundError('conflict', 'plan-script-timeout', `script ${action.path} (${where}) did not finish within ${timeoutS} s and was stopped; ${fix} (or give it a longer timeout).`, { retryable: false });
    }
    if (r.code !== 0) {
      throw new ReboundError('conflict', 'plan-script-failed', `script ${action.path} (${where}) ${r.signal ? `was killed by ${r.signal}` : `exited with status ${r.code}`}${said ? `; its last output: ${said.split('\n').slice(-3).join(' / ')}` : ''}. The plan stopped here: ${fix}.`, { retryable: false });
    }
    await ctx.log(`${action.path} succeeded in ${((Date.now() - t0) / 1000).toFixed(1)} s.`);
    return { script: action.path, exitCode: 0, seconds: (Date.now() - t0) / 1000 };
  }

  async function runTask(ctx: Ctx): Promise<unknown> {
    const p = ctx.params;
    const step = p.steps[ctx.task.seq];
    if (!step) throw new ReboundError('internal', 'plan-step-missing', `plan job ${ctx.job.id} has no step ${ctx.task.seq}.`);
    if (ctx.task.seq === 0 && ctx.checkpoint === undefined) {
      const groups = p.steps.filter((s) => s.kind === 'machines').length;
      const route = p.verb === 'failover' || p.verb === 'test-failover' ? ` from ${p.fromSite} to ${p.toSite}` : '';
      await ctx.log(`${verbWords(p.verb, p.failback)} plan ${p.plan}${route}: ${plural(groups, 'group')} in order, at most ${p.concurrency} machines of a group at once.`);
    }
    switch (step.kind) {
      case 'sync':
        return runMachines(ctx, step.machines, 'sync', null);
      case 'shutdown':
        return shutdownGroup(ctx, step.machines);
      case 'machines':
        return runMachines(ctx, step.machines, 'run', step.group);
      case 'action':
        if (step.action.kind === 'script') return runScript(ctx, step, step.action);
        await ctx.waitForResume(`manual action ${step.when} group ${step.group + 1} of plan ${p.plan}: ${step.action.text}`);
        await ctx.log(`manual action done: ${step.action.text}`);
        return { manual: step.action.text };
    }
  }

  /** On cancel: cancel the children still running, where their kind allows it now. */
  async function onCancel(h: HookContext<PlanJobParams>): Promise<void> {
    const rows = await store.db.selectFrom('tasks').select('checkpoint').where('job_id', '=', h.job.id).execute();
    const ids = new Set<string>();
    for (const r of rows) for (const id of Object.values(parseJson<Partial<ChildCheckpoint>>(r.checkpoint, {}).children ?? {})) ids.add(id);
    for (const id of ids) {
      const j = await jobs.get(id, 0);
      if (!j || j.state === 'succeeded' || j.state === 'failed' || j.state === 'cancelled') continue;
      try {
        await jobs.cancel(id, `${h.params.by} (cancel of plan ${h.params.plan})`);
        await h.log(`cancelled ${j.target}'s ${j.kind} job ${id}.`, 'warn');
      } catch (err) {
        await h.log(`${j.target}'s ${j.kind} job ${id} goes on: ${toReboundError(err).message}`, 'warn');
      }
    }
  }

  return PLAN_VERBS.map((verb) => ({
    kind: planJobKind(verb),
    describe: (p: PlanJobParams) => p.steps.map((s) => ({ name: stepName(p, s) })),
    // A failure stops the plan for an operator: `rebound job resume` retries from the failed step.
    retry: { maxAttempts: 1 },
    runTask,
    onCancel,
  }));
}

// ---- scripts --------------------------------------------------------------------------------

/** Refuses a script path that is not an executable regular file (checked at add and at run). */
export async function checkScript(path: string): Promise<void> {
  const s = await stat(path).catch(() => null);
  if (!s) throw invalid('script-not-found', `${path} does not exist on the server: put the script there first (the vault runs it on its own machine).`);
  if (!s.isFile()) throw invalid('script-not-a-file', `${path} is not a regular file: name the script itself.`);
  await access(path, constants.X_OK).catch(() => {
    throw invalid('script-not-executable', `${path} is not executable by the server: chmod +x it (and give it a #! line).`);
  });
}

interface ProcessResult {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  output: string;
}

/** Runs an executable in its own process group; on timeout or abort the whole group is stopped. */
function runProcess(path: string, env: Record<string, string>, timeoutMs: number, signal: AbortSignal): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    let output = '';
    let timedOut = false;
    const child = spawn(path, [], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const add = (d: Buffer): void => {
      output += d.toString();
      if (output.length > OUTPUT_MAX) output = output.slice(-OUTPUT_MAX / 2);
    };
    child.stdout.on('data', add);
    child.stderr.on('data', add);
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, sig);
      } catch {
        // already gone
      }
    };
    let hard: NodeJS.Timeout | undefined;
    const stop = (): void => {
      killGroup('SIGTERM');
      hard ??= setTimeout(() => killGroup('SIGKILL'), 5000);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, timeoutMs);
    signal.addEventListener('abort', stop, { once: true });
    child.once('error', (err) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', stop);
      reject(invalid('script-failed-to-start', `${path} could not be started: ${err.message}`));
    });
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      if (hard) clearTimeout(hard);
      signal.removeEventListener('abort', stop);
      killGroup('SIGKILL'); // whatever it left behind in its group
      resolve({ code, signal: sig, timedOut, output });
    });
  });
}
