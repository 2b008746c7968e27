// `protect`: enable replication. The agent at the source does the copying (it sees the item in
// its assignments as soon as the item exists); this job follows the initial replication the
// agent reports — progress in % of the allocated bytes — until the master target has recorded
// the first recovery point, then moves the item to `protected` (delta replication at the
// policy's frequency). Also used for reverse replication's initial sync (reprotect-done).
import { stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ReboundError } from '../../domain/errors.ts';
import { conflict } from '../../domain/errors.ts';
import type { JobDefinition, TaskContext } from '../../jobs/types.ts';
import type { RecoveryPlane } from '../recovery-plane.ts';
import { stateOrNull } from './failover.ts';
import { newestFirst } from './recovery-context.ts';
import { exists, loadRecovery, onHost, placementAt, site, updateDetails } from './recovery-context.ts';
import type { TrackedSinceFailover } from './recovery-context.ts';
import { parseJson } from '../../store/open.ts';
import type { Store } from '../../store/open.ts';
import type { ItemActions, JobParams } from '../item-actions.ts';

export function protectJob(store: Store, actions: ItemActions, kind: 'protect' | 'reverse-replicate' = 'protect', plane?: RecoveryPlane): JobDefinition<JobParams> {
  const follow = followJob(store, actions, plane);
  return {
    kind,
    describe: (p) => [...(p.plan.resync ? [{ name: kind === 'reverse-replicate' ? 'prepare the replica from the old disks' : 'prepare a resync by differences' }] : []), ...follow.steps],
    cancellable: false,
    notCancellableReason: 'Initial replication cannot be cancelled half-way; it resumes after any interruption.',
    async runTask(ctx) {
      if (!ctx.params.plan.resync) return follow.run(ctx, ctx.task.seq);
      if (ctx.task.seq > 0) return follow.run(ctx, ctx.task.seq - 1);
      return prepareResync(store, ctx, kind, plane);
    },
  };
}

/** Before a resync: reverse replication seeds the replica at the new target from the machine's
 * old disks there (so only differences are sent), or starts it empty (a full copy) where they are
 * gone; a protect after a cancelled failover compares with the replica that is already there. */
async function prepareResync(store: Store, ctx: TaskContext<JobParams>, kind: string, plane: RecoveryPlane | undefined): Promise<unknown> {
  const { itemId, machine, plan } = ctx.params;
  if (kind !== 'reverse-replicate') {
    await updateDetails(store, itemId, (d) => ({ ...d, resync: 'resume after a cancelled failover', resyncMode: 'digests', preparing: false }));
    await ctx.log(`${machine}'s replica is kept: the first cycle compares block digests and sends only what differs.`);
    return { mode: 'digests' };
  }
  if (!plane) throw new ReboundError('unavailable', 'no-master-target', 'reverse replication needs the master target in this server.');
  const rc = await loadRecovery(store, itemId);
  const to = site(rc, plan.to);
  const from = site(rc, plan.from);
  const old = placementAt(rc, plan.to);
  const src = placementAt(rc, plan.from);
  if (!src) throw conflict('no-source-machine', `${machine} has no machine at ${from.name} to replicate from.`);
  if (old && to.provider === 'qemu') {
    const st = await stateOrNull(plane.provider(onHost(to, old)), old.name, ctx.signal);
    if (st && st.state !== 'stopped') throw conflict('old-copy-running', `${old.name} is running at ${to.name}, but ${machine} is active at ${from.name}: shut the old copy down first (its disks will be overwritten by reverse replication), then resume this job.`);
  }
  let usable = old !== null && old.disks.length === src.disks.length;
  for (const [i, d] of (old?.disks ?? []).entries()) {
    if (!usable) break;
    usable = (await exists(d.path)) && d.sizeBytes === src.disks[i]?.sizeBytes;
  }
  const tracked = usable && old ? await trackedSince(rc.details.trackedSinceFailover, plan.from, src.name, old.disks) : null;
  if (usable && old) {
    await plane.seed(plan.to, itemId, src.disks.map((d, i) => ({ diskId: d.id, path: old.disks[i]!.path, format: old.disks[i]!.format, sizeBytes: d.sizeBytes })), rc.policy.encryption !== 'none');
    if (tracked === true) await ctx.log(`the replica at ${to.name} starts from ${machine}'s old disks there (${old.disks.map((d) => d.path).join(', ')}), which hold exactly the point ${src.name} started from: only the blocks its change tracking recorded since the failover are sent (no digest pass).`);
    else await ctx.log(`the replica at ${to.name} starts from ${machine}'s old disks there (${old.disks.map((d) => d.path).join(', ')}): only the blocks that differ are sent (digest comparison${tracked ? `; ${tracked}` : ''}).`);
  } else {
    await plane.dropReplicas(plan.to, itemId);
    await ctx.log(`${machine} has no usable old disks at ${to.name}: a full copy is sent.`);
  }
  const mode = !usable ? 'full' : tracked === true ? 'cbt' : 'digests';
  await updateDetails(store, itemId, (d) => ({ ...d, resync: 'reverse replication', resyncMode: mode, preparing: false, trackedSinceFailover: null }));
  return { mode };
}

function followJob(store: Store, actions: ItemActions, plane?: RecoveryPlane): { steps: { name: string }[]; run(ctx: TaskContext<JobParams>, seq: number): Promise<unknown> } {
  return {
    steps: [{ name: 'initial replication' }, { name: 'start delta replication' }],
    async run(ctx, seq) {
      const { itemId, machine } = ctx.params;
      if (seq === 0) {
        let lastPct = -1;
        let logged = false;
        // The point this job waits for is newer (newestFirst: by id, not by time) than every
        // point the item had when the job was created. Not `taken_at >= createdAt`: after the
        // clock went back, no point is taken "after" the job's creation until real time passes
        // the old clock. The points that existed are those created before the job (the vault's
        // clock), found once on the task's first run and kept in its checkpoint; a clock gone
        // back in between makes that set larger, which costs one more cycle at most.
        plane?.replicationStarted?.(itemId);
        let after = (ctx.checkpoint as { afterPoint?: string } | undefined)?.afterPoint;
        if (after === undefined) {
          const existing = await store.db.selectFrom('recovery_points').select('id').where('item_id', '=', itemId).where('created_at', '<', ctx.job.createdAt).execute();
          after = newestFirst(existing)[0]?.id ?? '';
          await ctx.saveCheckpoint({ afterPoint: after });
        }
        for (;;) {
          ctx.signal.throwIfAborted();
          const item = await store.db.selectFrom('protected_items').select(['last_point_at', 'details', 'state']).where('id', '=', itemId).executeTakeFirst();
          if (!item) throw new ReboundError('not-found', 'item.not-found', `${machine} is no longer protected.`);
          const d = parseJson<{ replication?: { bytesDone?: number; bytesTotal?: number; pointId?: string } }>(item.details, {});
          const newest = newestFirst(await store.db.selectFrom('recovery_points').select(['id', 'taken_at']).where('item_id', '=', itemId).where('status', '=', 'ok').execute())[0];
          if (newest && newest.id > after) {
            await ctx.log(`first recovery point ${newest.id} recorded (${new Date(Number(newest.taken_at)).toISOString()}).`);
            return { firstPoint: newest.id };
          }
          const r = d.replication;
          if (r && typeof r.bytesTotal === 'number' && r.bytesTotal >= 0) {
            if (!logged) {
              await ctx.log(`copying ${(r.bytesTotal / 2 ** 20).toFixed(1)} MiB of allocated data (zero and unallocated regions skipped).`);
              logged = true;
            }
            const pct = r.bytesTotal === 0 ? 99 : Math.min(99, Math.floor(((r.bytesDone ?? 0) / r.bytesTotal) * 100));
            if (pct !== lastPct) {
              await ctx.progress(pct);
              lastPct = pct;
            }
          }
          await sleep(500, undefined, { signal: ctx.signal });
        }
      }
      const item = await store.db.selectFrom('protected_items').select('state').where('id', '=', itemId).executeTakeFirst();
      if (item?.state === 'initial-replication') await actions.internal(itemId, { kind: 'initial-replication-done' });
      else if (item?.state === 'reprotecting') await actions.internal(itemId, { kind: 'reprotect-done' });
      await ctx.log(`${machine} is protected: delta replication runs at the policy's frequency.`);
      return { state: 'protected' };
    },
  };
}

/** True when the failover's change tracking can stand for the differences: it ran on the machine
 * that is the source now, from the point the old disks hold, and the old disks have not changed
 * since (mtime as recorded when the machine started). Otherwise why not (or null when
 * no tracking was recorded). */
async function trackedSince(t: TrackedSinceFailover | null | undefined, siteId: string, name: string, old: { path: string }[]): Promise<true | string | null> {
  if (!t) return null;
  if (t.siteId !== siteId || t.name !== name) return null;
  if (t.oldDisks.length !== old.length || t.oldDisks.some((d, i) => d.path !== old[i]?.path)) return 'the old disks are not the ones recorded at the failover';
  for (const d of t.oldDisks) {
    const st = await stat(d.path).catch(() => null);
    if (!st) return `${d.path} is gone`;
    if (st.mtimeMs !== d.mtimeMs) return `${d.path} changed after the failover, so change tracking alone cannot say what differs`;
  }
  return true;
}
