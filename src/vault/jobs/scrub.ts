// `scrub`: re-reads every stored block of an item's replicas at the master target and checks it
// against the checksum recorded when it was written; points that would read a damaged block are
// marked bad in the vault and are never used for failover.
import { ReboundError } from '../../domain/errors.ts';
import type { JobDefinition } from '../../jobs/types.ts';
import type { MasterTarget } from '../../replication/master-target.ts';
import type { Store } from '../../store/open.ts';

export interface ScrubParams { itemId: string; machine: string }

export function scrubJob(store: Store, mt: MasterTarget): JobDefinition<ScrubParams> {
  return {
    kind: 'scrub',
    describe: () => [{ name: 'verify stored blocks' }],
    async runTask(ctx) {
      const { itemId, machine } = ctx.params;
      const row = await store.db
        .selectFrom('protected_items as i')
        .innerJoin('pairings as p', 'p.id', 'i.pairing_id')
        .select(['i.direction', 'p.primary_site_id', 'p.recovery_site_id'])
        .where('i.id', '=', itemId)
        .executeTakeFirst();
      if (!row) throw new ReboundError('not-found', 'item.not-found', `${machine} is no longer protected.`);
      const target = row.direction === 'forward' ? row.recovery_site_id : row.primary_site_id;
      const r = await mt.scrub(target, itemId);
      await ctx.log(r.badPoints.length === 0
        ? `checked ${r.checkedBlocks} stored blocks of ${machine}: all match their checksums.`
        : `checked ${r.checkedBlocks} stored blocks of ${machine}: ${r.badPoints.length} point(s) marked bad (${r.badPoints.join(', ')}).`, r.badPoints.length === 0 ? 'info' : 'error');
      return r;
    },
  };
}
