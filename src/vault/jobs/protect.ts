// `protect`: enable replication. The agent at the source does the copying (it sees the item in
// its assignments as soon as the item exists); this job follows the initial replication the
// agent reports — progress in % of the allocated bytes — until the master target has recorded
// the first recovery point, then moves the item to `protected` (delta replication at the
// policy's frequency). Also used for reverse replication's initial sync (reprotect-done).
import { setTimeout as sleep } from 'node:timers/promises';
import { ReboundError } from '../../domain/errors.ts';
import type { JobDefinition } from '../../jobs/types.ts';
import { parseJson } from '../../store/open.ts';
import type { Store } from '../../store/open.ts';
import type { ItemActions, JobParams } from '../item-actions.ts';

export function protectJob(store: Store, actions: ItemActions, kind: 'protect' | 'reverse-replicate' = 'protect'): JobDefinition<JobParams> {
  return {
    kind,
    describe: () => [{ name: 'initial replication' }, { name: 'start delta replication' }],
    cancellable: false,
    notCancellableReason: 'Initial replication cannot be cancelled half-way; it resumes after any interruption.',
    async runTask(ctx) {
      const { itemId, machine } = ctx.params;
      if (ctx.task.seq === 0) {
        let lastPct = -1;
        let logged = false;
        for (;;) {
          ctx.signal.throwIfAborted();
          const item = await store.db.selectFrom('protected_items').select(['last_point_at', 'details', 'state']).where('id', '=', itemId).executeTakeFirst();
          if (!item) throw new ReboundError('not-found', 'item.not-found', `${machine} is no longer protected.`);
          const d = parseJson<{ replication?: { bytesDone?: number; bytesTotal?: number; pointId?: string } }>(item.details, {});
          const newest = await store.db.selectFrom('recovery_points').select(['id', 'taken_at']).where('item_id', '=', itemId).where('status', '=', 'ok').orderBy('taken_at', 'desc').limit(1).executeTakeFirst();
          if (newest) {
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
