// `scrub`: re-reads every stored block of an item's replicas at the master target and checks it
// against the checksum recorded when it was written; points that would read a damaged block are
// marked bad in the vault and are never used for failover. A master target running as its own
// process gets the request through the vault (scrub-broker.ts) and answers there.
import { ReboundError } from '../../domain/errors.ts';
import type { JobDefinition } from '../../jobs/types.ts';
import type { MasterTarget } from '../../replication/master-target.ts';
import type { Store } from '../../store/open.ts';
import type { ReplicationCatalogue } from '../replication-catalogue.ts';

export interface ScrubParams { itemId: string; machine: string }

export function scrubJob(store: Store, embedded: () => MasterTarget | undefined, catalogue: ReplicationCatalogue): JobDefinition<ScrubParams> {
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
      let r;
      const mt = embedded();
      if (mt && (await catalogue.masterTargetIsEmbedded(target))) {
        r = await mt.scrub(target, itemId);
      } else {
        const at = await catalogue.masterTargetAddress(target);
        if (at === '') throw new ReboundError('unavailable', 'no-master-target', `no master target serves the site that holds ${machine}'s replica: start one (rebound master-target --site NAME) and resume this job.`, { retryable: true });
        await ctx.log(`${machine}'s replica is with the master target at ${at} (its own process): the scrub is asked of it; it takes the request within seconds.`);
        r = await catalogue.scrubs.ask(target, itemId, ctx.signal);
      }
      await ctx.log(r.badPoints.length === 0
        ? `checked ${r.checkedBlocks} stored blocks of ${machine}: all match their checksums.`
        : `checked ${r.checkedBlocks} stored blocks of ${machine}: ${r.badPoints.length} point(s) marked bad (${r.badPoints.join(', ')}).`, r.badPoints.length === 0 ? 'info' : 'error');
      return r;
    },
  };
}
