// The failover family of jobs, each a list of tasks an operator can follow:
//   test-failover      choose the point → create the test machine (isolated) → start it
//   test-cleanup       remove the test machine; the notes stay on the job
//   failover           stop the source → send the last changes → choose the point →
//                      create the machine at the target → start it
//   failback-sync      sync a snapshot to the primary → wait for complete-failover → the five
//                      failover tasks (phase 2)
// The machine at the target runs on plain qcow2 overlays in its own directory over the chosen
// point of the replica store (copy-on-write: constant time, whatever the disk size); commit
// (commit.ts) streams the store's data into them. Cancel and failure undo what the job made at
// the target and put the item in the state the lifecycle names for it; a planned failover whose
// source refuses to shut down changes nothing and replication resumes.
import { rm, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { conflict, ReboundError } from '../../domain/errors.ts';
import type { JobPlan } from '../../domain/lifecycle.ts';
import type { HookContext, JobDefinition, TaskContext, TaskPlan } from '../../jobs/types.ts';
import { formatPointChoice } from '../../domain/points.ts';
import type { MachineDefinition, MachineProvider } from '../../providers/provider.ts';
import type { Store } from '../../store/open.ts';
import type { ItemActions, JobParams } from '../item-actions.ts';
import type { RecoveryPlane } from '../recovery-plane.ts';
import { choosePoint, loadRecovery, machineDir, onHost, placementAt, resolveHost, site, updateDetails, when, writeKeyFile } from './recovery-context.ts';
import type { RecoveryContext, Recovered, TrackedSinceFailover } from './recovery-context.ts';

const SHUTDOWN_MS = 120_000;
const UNPLANNED_SHUTDOWN_MS = 30_000;
const BEST_EFFORT_SYNC_MS = 120_000;
const DRAIN_MS = 10 * 60_000;

const shortId = (id: string): string => id.replace(/-/g, '').slice(-10);

function failoverTasks(plan: JobPlan): string[] {
  const stop = plan.planned ? 'shut down the source' : plan.shutdownSource ? 'try to shut down the source' : 'leave the source as it is';
  return [stop, 'send the last changes', 'choose the recovery point', 'create the machine at the target site', 'start the machine at the target site'];
}

type Ctx = TaskContext<JobParams>;

export function failoverJobs(store: Store, actions: ItemActions, plane: RecoveryPlane): JobDefinition<JobParams>[] {
  const siteNames = async (p: JobParams): Promise<{ from: string; to: string }> => {
    const rows = await store.db.selectFrom('sites').select(['id', 'name']).where('id', 'in', [p.plan.from, p.plan.to]).execute();
    const name = (id: string): string => rows.find((r) => r.id === id)?.name ?? id;
    return { from: name(p.plan.from), to: name(p.plan.to) };
  };
  // describe() is synchronous; the sites' names are in the task logs.
  const names = (plan: JobPlan): TaskPlan[] => failoverTasks(plan).map((name) => ({ name }));

  // ---- shared steps ------------------------------------------------------------------------

  async function stopSource(ctx: Ctx): Promise<unknown> {
    const { plan, itemId } = ctx.params;
    const rc = await loadRecovery(store, itemId);
    const from = site(rc, plan.from);
    const source = placementAt(rc, plan.from);
    if (!source) throw conflict('no-source-machine', `${rc.machine.name} has no machine at ${from.name} to stop.`);
    const p = plane.provider(onHost(from, source));
    if (plan.planned) {
      // Already stopped (a recovery plan shuts its sources down first, last group first).
      const st = await p.state(source.name, ctx.signal).catch(() => null);
      if (st?.state === 'stopped') {
        await ctx.log(`${source.name} is already stopped at ${from.name}.`);
        return { stopped: true };
      }
      await ctx.log(`shutting down ${source.name} at ${from.name} (ACPI, up to ${SHUTDOWN_MS / 1000} s); a planned failover needs it stopped so that every write is sent.`);
      try {
        await p.shutdown(source.name, { timeoutMs: SHUTDOWN_MS }, ctx.signal);
      } catch (err) {
        const e = err instanceof ReboundError ? err : new ReboundError('unavailable', 'shutdown-failed', String(err));
        throw new ReboundError('conflict', 'source-did-not-stop', `${source.name} did not shut down at ${from.name}: ${e.message} Nothing has changed: it keeps running there and replication resumes. Stop what keeps it from shutting down and retry, or use --unplanned.`, { cause: err });
      }
      await ctx.log(`${source.name} is shut down at ${from.name}.`);
      return { stopped: true };
    }
    if (!plan.shutdownSource) {
      await ctx.log(`the source at ${from.name} is left as it is (no --shutdown-source); if it still runs, it keeps running.`);
      return { stopped: false };
    }
    try {
      await p.shutdown(source.name, { timeoutMs: UNPLANNED_SHUTDOWN_MS }, ctx.signal);
      await ctx.log(`${source.name} is shut down at ${from.name}.`);
      return { stopped: true };
    } catch (err) {
      ctx.signal.throwIfAborted();
      await ctx.log(`could not shut down ${source.name} at ${from.name} (${(err as Error).message}); the failover goes on without it.`, 'warn');
      return { stopped: false };
    }
  }

  async function waitRecorded(ctx: Ctx, pointId: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const row = await store.db.selectFrom('recovery_points').select('status').where('id', '=', pointId).executeTakeFirst();
      if (row?.status === 'ok') return true;
      if (Date.now() > deadline) return false;
      await sleep(250, undefined, { signal: ctx.signal });
    }
  }

  /** Waits until the transfers the process server held complete when this was called have been
   * forwarded (newer ones, from replication that keeps running, are not waited for). */
  async function drain(ctx: Ctx, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    const waiting = new Set(plane.pending(ctx.params.itemId).complete);
    for (;;) {
      const now = new Set(plane.pending(ctx.params.itemId).complete);
      const left = [...waiting].filter((id) => now.has(id)).length;
      if (left === 0 || Date.now() > deadline) return left;
      await sleep(250, undefined, { signal: ctx.signal });
    }
  }

  async function sendLast(ctx: Ctx): Promise<unknown> {
    const { plan, itemId } = ctx.params;
    const stopped = (ctx.results.get(ctx.task.seq - 1) as { stopped?: boolean } | undefined)?.stopped === true;
    if (plan.planned) {
      if (plan.sync === 'full') {
        // Failback with a full download: no digests, no reliance on what the target holds.
        await updateDetails(store, itemId, (d) => ({ ...d, resync: 'failback with --sync full', resyncMode: 'full' }));
        await ctx.log('--sync full: every allocated block of the stopped machine is sent (no digest comparison).');
      }
      const a = await plane.assignment(itemId);
      await ctx.log('taking the last point of the stopped source and sending it.');
      const r = await plane.syncNow(a, ctx.signal);
      await ctx.log(`last point ${r.pointId} (${when(r.takenAt)}) sent; waiting until the master target holds it.`);
      if (!(await waitRecorded(ctx, r.pointId, DRAIN_MS))) throw new ReboundError('unavailable', 'last-point-not-recorded', `the last point ${r.pointId} did not reach the recovery site within ${DRAIN_MS / 60_000} min; the process server keeps it and resume retries.`, { retryable: true });
      return { pointId: r.pointId, takenAt: r.takenAt };
    }
    let sent: { pointId: string; takenAt: number } | undefined;
    if (stopped) {
      try {
        const a = await plane.assignment(itemId);
        const r = await plane.syncNow(a, AbortSignal.any([ctx.signal, AbortSignal.timeout(BEST_EFFORT_SYNC_MS)]));
        sent = { pointId: r.pointId, takenAt: r.takenAt };
        await ctx.log(`sent what the source had not sent: point ${r.pointId} (${when(r.takenAt)}).`);
      } catch (err) {
        ctx.signal.throwIfAborted();
        await ctx.log(`could not send the source's unsent changes (${(err as Error).message}); going on with what the recovery site has.`, 'warn');
      }
    }
    if (plan.point === 'latest' || sent) {
      const left = await drain(ctx, sent ? DRAIN_MS : 60_000);
      if (sent && left === 0) await waitRecorded(ctx, sent.pointId, 60_000);
      if (left > 0) await ctx.log(`${left} transfer(s) still wait at the process server; the failover uses what has arrived.`, 'warn');
    }
    return sent ?? {};
  }

  async function pickPoint(ctx: Ctx): Promise<unknown> {
    const { plan, itemId, machine } = ctx.params;
    const sent = ctx.results.get(ctx.task.seq - 1) as { pointId?: string; takenAt?: number } | undefined;
    if (plan.planned) {
      if (!sent?.pointId) throw new ReboundError('internal', 'no-last-point', 'the last point of the planned failover is unknown.');
      const newest = await choosePoint(store, itemId, machine, 'latest');
      if (newest.id !== sent.pointId) throw new ReboundError('internal', 'last-point-not-newest', `the newest point ${newest.id} is not the last one sent (${sent.pointId}).`);
      await ctx.log(`using the last point ${newest.id} (${when(newest.takenAt)}): it holds every write the source made before it shut down — no data lost.`);
      return { pointId: newest.id, takenAt: newest.takenAt };
    }
    const choice = formatPointChoice(plan.point ?? 'latest');
    const p = await choosePoint(store, itemId, machine, choice);
    const age = Math.max(0, Date.now() - p.takenAt);
    if (sent?.pointId === p.id) await ctx.log(`using point ${p.id} (${when(p.takenAt)}, ${p.kind}), taken after the source stopped: nothing it wrote is lost.`);
    else await ctx.log(`using point ${p.id} (${when(p.takenAt)}, ${p.kind}, ${choice}). Writes made at the source after ${when(p.takenAt)} (up to ${Math.round(age / 1000)} s before this failover) are not in it and are lost.`, 'warn');
    return { pointId: p.id, takenAt: p.takenAt };
  }

  async function createAtTarget(ctx: Ctx): Promise<unknown> {
    const { plan, itemId } = ctx.params;
    const chosen = ctx.results.get(ctx.task.seq - 1) as { pointId: string };
    const rc = await loadRecovery(store, itemId);
    const to = site(rc, plan.to);
    const tag = `fo-${shortId(ctx.job.id)}`;
    // --host: an alternate host of the site; the machine's definition there (if any) is left alone.
    const host = plan.host === undefined ? null : await resolveHost(store, plan.to, plan.host);
    const existing = placementAt(rc, plan.to);
    const name = existing?.name ?? rc.machine.name;
    const rec = await makeMachine(ctx, rc, { siteId: plan.to, name, tag, pointId: chosen.pointId, network: 'production', ...(host ? { host } : {}) });
    await updateDetails(store, itemId, (d) => ({ ...d, failover: rec }));
    await ctx.log(`${name} is defined at ${to.name}${host ? ` on host ${host.name} (${host.root})` : ''} on ${rec.disks.map((d) => d.path).join(', ')} (copy-on-write over point ${chosen.pointId}).`);
    if (host && existing) await ctx.log(`the machine ${existing.name} at ${to.name}'s own host is left as it was (stopped, its disks untouched); remove it when it is no longer needed.`);
    return { name, disks: rec.disks };
  }

  async function startAtTarget(ctx: Ctx): Promise<unknown> {
    const { plan, itemId, machine } = ctx.params;
    const rc = await loadRecovery(store, itemId);
    const to = site(rc, plan.to);
    const rec = rc.details.failover;
    if (!rec) throw new ReboundError('internal', 'no-recovered-machine', `${machine} has no machine made at ${to.name} by this failover.`);
    if (to.provider === 'qemu') {
      const p = plane.provider(onHost(to, rec));
      const st = await p.state(rec.name, ctx.signal);
      const tracked = st.state === 'stopped' ? await startTracked(ctx, p, rec) : st.state === 'paused' && p.resume ? (await p.resume(rec.name, ctx.signal), null) : null;
      await ctx.log(`${rec.name} runs at ${to.name}${rec.host ? ` on host ${rec.host}` : ''}.`);
      if (tracked) {
        const exact = await lostNothing(ctx);
        const old = placementAt(rc, plan.from);
        const oldDisks = exact && old ? await Promise.all(old.disks.map(async (d) => ({ path: d.path, mtimeMs: (await stat(d.path).catch(() => null))?.mtimeMs ?? -1 }))) : [];
        const record: TrackedSinceFailover | null = exact && oldDisks.length > 0 && oldDisks.every((d) => d.mtimeMs >= 0) ? { siteId: plan.to, name: rec.name, pointId: rec.pointId, startedAt: tracked.at, oldDisks } : null;
        await updateDetails(store, itemId, (d) => ({ ...d, trackedSinceFailover: record }));
        if (record) await ctx.log(`change tracking on ${rec.name} started before its first instruction; ${site(rc, plan.from).name}'s disks hold exactly point ${rec.pointId}, so reverse replication will send only what ${rec.name} writes from now on (no digest pass).`);
      }
    } else {
      await ctx.log(`${machine}'s disk images are ready at ${to.name}: ${rec.disks.map((d) => d.path).join(', ')}.`);
    }
    await actions.internal(itemId, { kind: 'failover-done' }, {
      details: (d) => ({ ...d, placements: { ...((d['placements'] ?? {}) as Record<string, unknown>), [plan.to]: { name: rec.name, disks: rec.disks, ...(rec.host ? { host: rec.host, root: rec.root } : {}) } } }),
    });
    await ctx.log(`${machine} is failed over to ${to.name}. Check it, then commit (rebound commit ${machine}); after commit, rebound reverse-replicate ${machine} protects it back toward ${site(rc, plan.from).name}.`);
    return { machine: rec.name, site: to.name, disks: rec.disks.map((d) => d.path) };
  }

  /** Starts a recovered QEMU machine with its CPUs stopped, starts change tracking on it, then
   * lets it run: every write it makes is tracked. Null when tracking could not start (the machine
   * then runs anyway, and reverse replication compares digests). */
  async function startTracked(ctx: Ctx, p: MachineProvider, rec: Recovered): Promise<{ at: number } | null> {
    if (!p.startPaused || !p.resume || !p.resetTracking) {
      await p.start(rec.name, ctx.signal);
      return null;
    }
    await p.startPaused(rec.name, ctx.signal);
    let at: number | null = null;
    try {
      await p.resetTracking(rec.name, ctx.signal, { baseline: true });
      at = Date.now();
    } catch (err) {
      ctx.signal.throwIfAborted();
      await ctx.log(`change tracking could not start on ${rec.name} (${(err as Error).message}); it runs without, and reverse replication will compare digests.`, 'warn');
    }
    await p.resume(rec.name, ctx.signal);
    return at === null ? null : { at };
  }

  /** Whether the source's disks hold exactly the point the failover started from: a planned
   * failover, or an unplanned one whose source was stopped and whose last changes were sent
   * and chosen. */
  async function lostNothing(ctx: Ctx): Promise<boolean> {
    if (ctx.params.plan.planned) return true;
    const base = ctx.task.seq - 4;
    const stopped = (ctx.results.get(base) as { stopped?: boolean } | undefined)?.stopped === true;
    const sent = (ctx.results.get(base + 1) as { pointId?: string } | undefined)?.pointId;
    const chosen = (ctx.results.get(base + 2) as { pointId?: string } | undefined)?.pointId;
    return stopped && sent !== undefined && sent === chosen;
  }

  /** Exports the point into the machine's directory at the site and defines (or redefines) it. */
  async function makeMachine(ctx: Ctx, rc: RecoveryContext, o: { siteId: string; name: string; tag: string; pointId: string; network: 'production' | 'isolated'; host?: { name: string; root: string } }): Promise<Recovered> {
    const s = onHost(site(rc, o.siteId), o.host);
    const dir = machineDir(s, o.name);
    const disks = await diskIds(rc);
    const paths = Object.fromEntries(disks.map((d) => [d, `${dir}/rb-${o.tag}-${d}.qcow2`]));
    const exported = await plane.exportPoint(o.siteId, rc.item.id, o.pointId, paths, o.tag);
    const assigned = exported.map((e) => ({ id: e.diskId, path: e.path, sizeBytes: e.sizeBytes, format: 'qcow2' as const }));
    const secrets = await writeKeyFile(dir, await plane.secrets(o.siteId, rc.item.id));
    const rec: Recovered = { siteId: o.siteId, name: o.name, tag: o.tag, pointId: o.pointId, disks: assigned, ...(o.host ? { host: o.host.name, root: o.host.root } : {}) };
    if (s.provider !== 'qemu') return rec;
    const p = plane.provider(s);
    const current = await p.state(o.name, ctx.signal).catch((err: unknown) => {
      if (err instanceof ReboundError && err.kind === 'not-found') return null;
      throw err;
    });
    const diskSpecs = assigned.map((d) => ({ path: d.path, format: 'qcow2' as const }));
    if (current) {
      if (current.definition.disks.every((d, i) => d.path === diskSpecs[i]?.path)) return { ...rec, ...(rc.details.failover?.previous ? { previous: rc.details.failover.previous } : {}) };
      if (current.state !== 'stopped') throw conflict('machine-running', `${o.name} is running at ${s.name}: it must be stopped before it is recovered there (it is the old copy of ${rc.machine.name}).`);
      if (!p.redefine) throw conflict('provider-cannot-redefine', `the ${s.provider} provider cannot change ${o.name}'s disks.`);
      const next: MachineDefinition = { ...current.definition, disks: diskSpecs, ...(secrets ? { secrets } : {}) };
      if (o.network === 'isolated') next.nics = next.nics.map((n) => ({ network: 'isolated', mac: n.mac, isolation: o.name }));
      await p.redefine(next, ctx.signal);
      return { ...rec, previous: current.definition };
    }
    const template = rc.details.template;
    if (!template) throw conflict('no-template', `${rc.machine.name} has no machine template recorded (cpus, memory, boot); it was protected before templates were kept. Define ${o.name} at ${s.name} by hand over ${assigned.map((d) => d.path).join(', ')}.`);
    if (!p.createReplica) throw conflict('provider-cannot-create', `the ${s.provider} provider cannot create machines.`);
    await p.createReplica({ name: o.name, disks: diskSpecs, template, network: o.network, ...(o.network === 'isolated' ? { isolation: o.name } : {}), ...(secrets ? { secrets } : {}) }, ctx.signal);
    return { ...rec, created: true };
  }

  async function diskIds(rc: RecoveryContext): Promise<string[]> {
    const rows = await store.db.selectFrom('recovery_points').select('disks').where('item_id', '=', rc.item.id).where('status', '=', 'ok').orderBy('taken_at', 'desc').limit(1).executeTakeFirst();
    const d = rows ? (JSON.parse(rows.disks) as { disks?: { id: string }[] }).disks ?? [] : [];
    if (d.length === 0) throw conflict('no-recovery-point', `${rc.machine.name} has no usable recovery point.`);
    return d.map((x) => x.id);
  }

  /** Removes what a job made at a site for a recovered or test machine. */
  async function unmake(rc: RecoveryContext, rec: Recovered, log: (m: string, l?: 'info' | 'warn') => Promise<void>): Promise<void> {
    const s = site(rc, rec.siteId);
    if (s.provider === 'qemu') {
      const p = plane.provider(onHost(s, rec));
      await p.powerOff(rec.name).catch(() => undefined);
      if (rec.created) await p.undefine(rec.name).catch(() => undefined);
      else if (rec.previous && p.redefine) await p.redefine(rec.previous).catch(async (err: unknown) => log(`could not restore ${rec.name}'s definition: ${(err as Error).message}`, 'warn'));
    }
    await plane.closeExports(rec.siteId, rc.item.id, rec.tag, false);
    for (const d of rec.disks) await rm(d.path, { force: true });
    await log(`removed ${rec.name}'s recovered disks at ${s.name}${rec.previous ? ' and restored its previous definition' : ''}.`);
  }

  async function undoFailover(h: HookContext<JobParams>, why: 'cancel' | 'fail'): Promise<void> {
    const { itemId, machine, plan } = h.params;
    const rc = await loadRecovery(store, itemId).catch(() => null);
    if (!rc) return;
    const state = rc.item.state;
    const log = (m: string, l: 'info' | 'warn' = 'info'): Promise<void> => h.log(m, l);
    if (state === 'failback-syncing' || state === 'failback-ready') {
      await actions.internal(itemId, why === 'cancel' ? { kind: 'cancel-failover' } : { kind: 'sync-failed' });
      await log(`failback of ${machine} stopped before anything changed at ${site(rc, plan.to).name}: its machine there stays at its last consistent state; ${machine} keeps running and replicating at ${site(rc, plan.from).name}.`);
      return;
    }
    if (state !== 'failing-over') return;
    if (rc.details.failover && rc.details.failover.siteId === plan.to) {
      await unmake(rc, rc.details.failover, log);
      await updateDetails(store, itemId, (d) => ({ ...d, failover: null }));
    }
    const stopTask = h.job.tasks.find((t) => t.seq === (h.job.kind === 'failback-sync' ? 2 : 0));
    if (why === 'fail' && plan.planned && stopTask && stopTask.state !== 'succeeded') {
      await actions.internal(itemId, { kind: 'failover-aborted' });
      await log(`nothing has changed: ${machine} keeps running at ${site(rc, plan.from).name} and replication resumes.`);
      return;
    }
    await actions.internal(itemId, why === 'cancel' ? { kind: 'cancel-failover' } : { kind: 'failover-failed' });
    await log(`replication of ${machine} has stopped. ${plan.planned ? `The source at ${site(rc, plan.from).name} is shut down. ` : ''}Next: fail over again, or start the source and resume replication with rebound protect ${machine} (differences only).`, 'warn');
  }

  const notStarted = (job: { tasks: { name: string; state: string }[] }): boolean =>
    !job.tasks.some((t) => (t.name.startsWith('create the machine') || t.name.startsWith('start the machine')) && t.state !== 'pending');

  const failover: JobDefinition<JobParams> = {
    kind: 'failover',
    describe: (p) => names(p.plan),
    cancellable: notStarted,
    notCancellableReason: 'The machine is being created or started at the target; let the failover finish, then fail back if needed.',
    retry: { maxAttempts: 3, nonRetryableCodes: ['source-did-not-stop', 'no-recovery-point', 'point-bad', 'no-app-consistent-point', 'point.not-found', 'machine-running', 'no-template'] },
    async runTask(ctx) {
      if (ctx.task.seq === 0) {
        const n = await siteNames(ctx.params);
        await ctx.log(`${ctx.params.plan.planned ? 'planned' : 'unplanned'} failover of ${ctx.params.machine} from ${n.from} to ${n.to}; replication has stopped.`);
      }
      return [stopSource, sendLast, pickPoint, createAtTarget, startAtTarget][ctx.task.seq]!(ctx);
    },
    onCancel: (h) => undoFailover(h, 'cancel'),
    compensateUnstarted: true,
    onFail: (h) => undoFailover(h, 'fail'),
  };

  const failbackSync: JobDefinition<JobParams> = {
    kind: 'failback-sync',
    describe: (p) => [{ name: 'sync a snapshot to the primary site' }, { name: 'wait for complete-failover' }, ...names(p.plan)],
    cancellable: notStarted,
    notCancellableReason: failover.notCancellableReason!,
    retry: failover.retry!,
    async runTask(ctx) {
      const { itemId, machine } = ctx.params;
      if (ctx.task.seq === 0) {
        const n = await siteNames(ctx.params);
        await ctx.log(`failback of ${machine} from ${n.from} to ${n.to}, phase 1: ${machine} keeps running at ${n.from} while a snapshot is synced to ${n.to}.`);
        const since = ctx.job.createdAt;
        for (;;) {
          const p = await store.db.selectFrom('recovery_points').select(['id', 'taken_at']).where('item_id', '=', itemId).where('status', '=', 'ok').where('taken_at', '>', since).orderBy('taken_at', 'desc').limit(1).executeTakeFirst();
          if (p) {
            await ctx.log(`${n.to} holds point ${p.id} (${when(Number(p.taken_at))}); what changes after it is sent in phase 2.`);
            break;
          }
          await sleep(500, undefined, { signal: ctx.signal });
        }
        const item = await store.db.selectFrom('protected_items').select('state').where('id', '=', itemId).executeTakeFirst();
        if (item?.state === 'failback-syncing') await actions.internal(itemId, { kind: 'sync-done' });
        return { synced: true };
      }
      if (ctx.task.seq === 1) {
        await ctx.waitForResume(`phase 1 is done; complete the failback with rebound complete-failover ${ctx.job.id} (or cancel the job)`);
        await ctx.log('phase 2: shut down at the recovery site, send the last differences, start at the primary.');
        return { completed: true };
      }
      return [stopSource, sendLast, pickPoint, createAtTarget, startAtTarget][ctx.task.seq - 2]!(ctx);
    },
    onCancel: (h) => undoFailover(h, 'cancel'),
    compensateUnstarted: true,
    onFail: (h) => undoFailover(h, 'fail'),
  };

  const testFailover: JobDefinition<JobParams> = {
    kind: 'test-failover',
    describe: () => [{ name: 'choose the recovery point' }, { name: 'create the test machine (isolated network)' }, { name: 'start the test machine' }],
    retry: { maxAttempts: 3, nonRetryableCodes: ['no-recovery-point', 'point-bad', 'no-app-consistent-point', 'point.not-found', 'no-template', 'machine-exists'] },
    async runTask(ctx) {
      const { plan, itemId, machine } = ctx.params;
      if (ctx.task.seq === 0) {
        if (plan.point === 'latest') {
          const left = await drain(ctx, 60_000);
          if (left > 0) await ctx.log(`${left} transfer(s) still wait at the process server; the drill uses what has arrived.`, 'warn');
        }
        const p = await choosePoint(store, itemId, machine, formatPointChoice(plan.point ?? 'latest'));
        await ctx.log(`test failover of ${machine} from point ${p.id} (${when(p.takenAt)}, ${p.kind}); replication keeps running.`);
        return { pointId: p.id, takenAt: p.takenAt };
      }
      const rc = await loadRecovery(store, itemId);
      if (ctx.task.seq === 1) {
        const chosen = ctx.results.get(0) as { pointId: string };
        const name = `${machine}-test`;
        const rec = rc.details.test ?? (await makeMachine(ctx, rc, { siteId: plan.to, name, tag: `tf-${shortId(ctx.job.id)}`, pointId: chosen.pointId, network: 'isolated' }));
        await updateDetails(store, itemId, (d) => ({ ...d, test: rec }));
        return { name: rec.name, disks: rec.disks.map((d) => d.path) };
      }
      const rec = rc.details.test;
      if (!rec) throw new ReboundError('internal', 'no-test-machine', `${machine} has no test machine.`);
      const s = site(rc, rec.siteId);
      if (s.provider === 'qemu') {
        const p = plane.provider(s);
        if ((await p.state(rec.name, ctx.signal)).state === 'stopped') await p.start(rec.name, ctx.signal);
        await ctx.log(`${rec.name} runs at ${s.name} in an isolated network. Check it, then clean up: rebound test-cleanup ${machine} --notes "what the drill showed".`);
      } else {
        await ctx.log(`test images of ${machine} are ready at ${s.name}: ${rec.disks.map((d) => d.path).join(', ')}. Clean up with rebound test-cleanup ${machine} --notes TEXT.`);
      }
      return { machine: rec.name, site: s.name, disks: rec.disks.map((d) => d.path) };
    },
    async onFail(h) {
      const rc = await loadRecovery(store, h.params.itemId).catch(() => null);
      if (!rc || rc.item.state !== 'test-failover') return;
      if (rc.details.test) await unmake(rc, rc.details.test, (m, l) => h.log(m, l));
      await updateDetails(store, h.params.itemId, (d) => ({ ...d, test: null }));
      await actions.internal(h.params.itemId, { kind: 'test-failover-failed' });
    },
    async onCancel(h) {
      await testFailover.onFail!(h);
    },
    compensateUnstarted: true,
  };

  const testCleanup: JobDefinition<JobParams> = {
    kind: 'test-cleanup',
    describe: () => [{ name: 'remove the test machine' }],
    async runTask(ctx) {
      const { itemId, machine, plan } = ctx.params;
      const rc = await loadRecovery(store, itemId);
      const rec = rc.details.test;
      if (rec) {
        await unmake(rc, rec, (m, l) => ctx.log(m, l));
        if (rec.created && site(rc, rec.siteId).provider !== 'qemu') await rm(machineDir(site(rc, rec.siteId), rec.name), { recursive: true, force: true });
        await updateDetails(store, itemId, (d) => ({ ...d, test: null }));
      }
      await ctx.log(`drill notes for ${machine}: ${plan.notes ?? ''}`);
      return { notes: plan.notes ?? '', removed: rec?.name ?? null };
    },
  };

  return [failover, failbackSync, testFailover, testCleanup];
}

/** A provider's machine, or null when it is not defined there. */
export async function stateOrNull(p: MachineProvider, name: string, signal?: AbortSignal): Promise<Awaited<ReturnType<MachineProvider['state']>> | null> {
  try {
    return await p.state(name, signal);
  } catch (err) {
    if (err instanceof ReboundError && err.kind === 'not-found') return null;
    throw err;
  }
}
