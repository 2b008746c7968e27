// The vault's side of replication: which items each agent replicates (assignments), the
// recovery-point catalogue the master target writes, and the progress the agent reports. Used
// directly by the embedded roles (LocalLink) and by the /replication API routes that separate
// role processes call. Writes are idempotent so a role that retries after a crash records once.
import { createHash } from 'node:crypto';
import { REPLICATING_STATES } from '../domain/lifecycle.ts';
import type { Store } from '../store/open.ts';
import { now, parseJson } from '../store/open.ts';
import { transaction } from '../store/tx.ts';
import type { AgentLink, Assignment, AssignedDisk, GroupPointRecord, MasterTargetLink, PointRecord, PointVerdict, ProgressReport } from '../replication/link.ts';
import { recordEvent } from './events.ts';
import { ScrubBroker } from './scrub-broker.ts';
import { notFound } from '../domain/errors.ts';

/** The embedded roles' data addresses ('' when the role does not run embedded). */
export interface Endpoints {
  processServer(itemId: string): string;
  masterTarget(siteId: string): string;
}

/** A registered process server or master target counts as up while its last heartbeat is this
 * recent (role processes send one every 5 s). */
export const COMPONENT_FRESH_MS = 30_000;

/** A registered, unrevoked process server or master target with a data address. */
interface RegisteredEndpoint { name: string; role: string; siteId: string | null; address: string; fresh: boolean }

type Details = Record<string, unknown> & { replication?: Record<string, unknown>; resync?: string | null };

export class ReplicationCatalogue {
  readonly store: Store;
  readonly #endpoints: Endpoints;
  /** Scrub requests for master targets that run as their own processes. */
  readonly scrubs = new ScrubBroker();

  constructor(store: Store, endpoints: Endpoints) {
    this.store = store;
    this.#endpoints = endpoints;
  }

  /** Items that replicate now whose source is one of `siteIds` (all sites when undefined). */
  async assignments(siteIds?: readonly string[]): Promise<Assignment[]> {
    return this.#assignments(siteIds);
  }

  /** One item's assignment whatever its state (a failover's last sync after replication stopped). */
  async assignmentFor(itemId: string): Promise<Assignment> {
    const [a] = await this.#assignments(undefined, itemId);
    if (!a) throw notFound('item.not-found', `protected item ${itemId} no longer exists (or its source site is gone).`);
    return a;
  }

  async #assignments(siteIds?: readonly string[], itemId?: string): Promise<Assignment[]> {
    const q = this.store.db
      .selectFrom('protected_items as i')
      .innerJoin('machines as m', 'm.id', 'i.machine_id')
      .innerJoin('pairings as p', 'p.id', 'i.pairing_id')
      .innerJoin('policies as pol', 'pol.id', 'p.policy_id')
      .select([
        'i.id as itemId', 'i.state', 'i.direction', 'i.details', 'i.group_name', 'm.name as machine', 'm.disks', 'm.config', 'm.kind',
        'p.primary_site_id', 'p.recovery_site_id', 'pol.frequency_s', 'pol.retention_s', 'pol.app_consistent_s', 'pol.compression', 'pol.encryption', 'pol.bandwidth_bps',
      ])
      .$call((b) => (itemId === undefined ? b.where('i.state', 'in', [...REPLICATING_STATES]) : b.where('i.id', '=', itemId)));
    const rows = await q.execute();
    const registered = rows.length > 0 ? await this.#registeredEndpoints() : [];
    const sites = new Map((await this.store.db.selectFrom('sites').select(['id', 'root', 'provider']).execute()).map((s) => [s.id, s]));
    const out: Assignment[] = [];
    for (const r of rows) {
      const forward = r.direction === 'forward';
      const sourceSiteId = forward ? r.primary_site_id : r.recovery_site_id;
      const targetSiteId = forward ? r.recovery_site_id : r.primary_site_id;
      if (siteIds && !siteIds.includes(sourceSiteId)) continue;
      const source = sites.get(sourceSiteId);
      if (!source) continue;
      const details = parseJson<Details>(r.details, {});
      if (itemId === undefined && details['preparing'] === true) continue; // its job prepares a resync first
      // After a failover the machine runs as the machine recorded for that site on the item.
      const placements = (details['placements'] ?? {}) as Record<string, { name?: string; disks?: AssignedDisk[]; root?: string }>;
      const running = placements[sourceSiteId] ?? (details['runningAs'] as { name?: string; disks?: AssignedDisk[]; root?: string } | undefined) ?? undefined;
      out.push({
        itemId: r.itemId,
        machine: running?.name ?? r.machine,
        state: r.state,
        direction: r.direction as 'forward' | 'reverse',
        sourceSiteId,
        targetSiteId,
        provider: source.provider as 'qemu' | 'physical',
        // A machine placed on an alternate host (failback --host) is read from that host's root.
        sourceRoot: running?.root ?? source.root,
        disks: running?.disks ?? parseJson<AssignedDisk[]>(r.disks, []),
        policy: {
          frequencySeconds: r.frequency_s,
          retentionSeconds: r.retention_s,
          appConsistentSeconds: r.app_consistent_s,
          compression: r.compression === 'zstd' ? 'zstd' : 'none',
          encryption: r.encryption === 'none' ? 'none' : 'aes-256-gcm',
          bandwidthBps: Number(r.bandwidth_bps),
        },
        processServer: this.#chooseProcessServer(registered, r.itemId, sourceSiteId),
        masterTarget: this.#chooseMasterTarget(registered, targetSiteId),
        resync: typeof details.resync === 'string' ? details.resync : null,
        resyncMode: typeof details.resync === 'string' ? (details['resyncMode'] === 'digests' || details['resyncMode'] === 'cbt' ? details['resyncMode'] : 'full') : null,
        config: parseJson<Record<string, unknown>>(r.config, {}),
        group: r.group_name,
      });
    }
    return out;
  }

  // --- Endpoints: where agents send and where process servers forward. A registered component
  // (its own process, `rebound process-server|master-target`) that is unrevoked and recently
  // seen wins over the embedded role; a stale registered one is used only when nothing else is.

  async #registeredEndpoints(): Promise<RegisteredEndpoint[]> {
    const rows = await this.store.db
      .selectFrom('components')
      .select(['name', 'role', 'site_id', 'address', 'last_seen_at'])
      .where('status', '=', 'active')
      .where('role', 'in', ['process-server', 'master-target'])
      .where('address', 'is not', null)
      .orderBy('name')
      .execute();
    const freshSince = now() - COMPONENT_FRESH_MS;
    return rows.map((r) => ({ name: r.name, role: r.role, siteId: r.site_id, address: r.address ?? '', fresh: r.last_seen_at !== null && Number(r.last_seen_at) >= freshSince }));
  }

  /** One of `list`, the same for an item while the list stays the same (spreads items over
   * several process servers; keeps an item's transfers on one). */
  static #pick(list: RegisteredEndpoint[], key: string): string | undefined {
    if (list.length === 0) return undefined;
    return list[createHash('sha256').update(key).digest().readUInt32BE(0) % list.length]!.address;
  }

  #chooseProcessServer(reg: RegisteredEndpoint[], itemId: string, sourceSiteId: string): string {
    const ps = reg.filter((c) => c.role === 'process-server');
    const local = ps.filter((c) => c.siteId === sourceSiteId || c.siteId === null);
    return ReplicationCatalogue.#pick(local.filter((c) => c.fresh), itemId)
      || this.#endpoints.processServer(itemId)
      || ReplicationCatalogue.#pick(ps.filter((c) => c.fresh), itemId)
      || ReplicationCatalogue.#pick(local, itemId)
      || '';
  }

  #chooseMasterTarget(reg: RegisteredEndpoint[], siteId: string): string {
    // A master target registered for the site first, then one registered for every site.
    const mt = reg.filter((c) => c.role === 'master-target');
    const own = mt.filter((c) => c.siteId === siteId);
    const any = mt.filter((c) => c.siteId === null);
    return ReplicationCatalogue.#pick(own.filter((c) => c.fresh), siteId)
      || ReplicationCatalogue.#pick(any.filter((c) => c.fresh), siteId)
      || this.#endpoints.masterTarget(siteId)
      || ReplicationCatalogue.#pick(own, siteId)
      || ReplicationCatalogue.#pick(any, siteId)
      || '';
  }

  /** Where a process server forwards a transfer for `siteId` now ('' when no master target is known). */
  async masterTargetAddress(siteId: string): Promise<string> {
    return this.#chooseMasterTarget(await this.#registeredEndpoints(), siteId);
  }

  /** Whether the site's replicas are with this process's embedded master target (else with a
   * registered one, or with none when the address is ''). */
  async masterTargetIsEmbedded(siteId: string): Promise<boolean> {
    const chosen = await this.masterTargetAddress(siteId);
    return chosen !== '' && chosen === this.#endpoints.masterTarget(siteId);
  }

  async #updateDetails(itemId: string, fn: (d: Details) => Details | null): Promise<void> {
    await transaction(this.store, async (tx) => {
      const row = await tx.selectFrom('protected_items').select(['details']).where('id', '=', itemId).executeTakeFirst();
      if (!row) return;
      const next = fn(parseJson<Details>(row.details, {}));
      if (next === null) return;
      await tx.updateTable('protected_items').set({ details: JSON.stringify(next), updated_at: now() }).where('id', '=', itemId).execute();
    });
  }

  async progress(r: ProgressReport): Promise<void> {
    // Delta cycles report nothing here: RPO comes from the points. Initial copies report % often.
    if (!r.initial) return;
    await this.#updateDetails(r.itemId, (d) => ({
      ...d,
      replication: { phase: r.sent ? 'initial-sent' : 'initial', pointId: r.pointId, bytesDone: r.bytesDone, bytesTotal: r.bytesTotal, bytesSkipped: r.bytesSkipped, ...(r.method ? { method: r.method } : {}), at: now() },
    }));
  }

  async resynced(itemId: string): Promise<void> {
    await this.#updateDetails(itemId, (d) => (d.resync ? { ...d, resync: null, resyncMode: null } : null));
  }

  async requestResync(itemId: string, reason: string): Promise<void> {
    await this.#updateDetails(itemId, (d) => ({ ...d, resync: reason, resyncMode: 'full' }));
    await recordEvent(this.store, { kind: 'resync-requested', itemId, message: `A full resynchronisation was requested: ${reason}` });
  }

  async event(itemId: string, kind: string, message: string, data?: Record<string, unknown>): Promise<void> {
    await recordEvent(this.store, { kind, itemId, message, ...(data ? { data } : {}) });
  }

  async siteRoot(siteId: string): Promise<string> {
    const s = await this.store.db.selectFrom('sites').select('root').where('id', '=', siteId).executeTakeFirst();
    if (!s) throw notFound('site.not-found', `No site has id ${siteId}.`);
    return s.root;
  }

  async recordPoint(p: PointRecord): Promise<PointVerdict> {
    const verdict = await this.#recordPoint(p);
    if (verdict === 'recorded' && p.heldFrom !== undefined && p.heldFrom <= p.pointId) {
      // Points older than the replica's oldest were merged away by retention; a kill between the
      // merge and its prune left them listed, and a point must never be offered that the replica
      // no longer holds (soak seed 9506, kill9-delta).
      const gone = await this.store.db.selectFrom('recovery_points').select('id').where('item_id', '=', p.itemId).where('id', '<', p.heldFrom).execute();
      await this.prunePoints(p.itemId, gone.map((g) => g.id));
    }
    return verdict;
  }

  async #recordPoint(p: PointRecord): Promise<PointVerdict> {
    return transaction(this.store, async (tx): Promise<PointVerdict> => {
      const item = await tx.selectFrom('protected_items').select(['id', 'last_point_at', 'active_site_id']).where('id', '=', p.itemId).executeTakeFirst();
      if (!item) return 'gone'; // replication was disabled meanwhile
      const have = await tx.selectFrom('recovery_points').select('id').where('id', '=', p.pointId).executeTakeFirst();
      if (have) return 'recorded';
      // A point whose replica is where the machine runs now was taken by a cycle still in flight
      // when a failover to that site finished (soak seed 7543: recorded after the failover's
      // commit had removed the points). It is of the machine's past, not a recovery point.
      if (item.active_site_id === p.siteId) return 'stale';
      // A member of a replication group's point (recorded by the agent before it sent the point).
      const member = await tx.selectFrom('group_point_members').select('group_point_id').where('point_id', '=', p.pointId).where('item_id', '=', p.itemId).executeTakeFirst();
      await tx
        .insertInto('recovery_points')
        .values({ id: p.pointId, item_id: p.itemId, taken_at: p.takenAt, kind: p.kind, group_point_id: member?.group_point_id ?? null, status: 'ok', disks: JSON.stringify({ seq: p.pointSeq, disks: p.disks }), created_at: now() })
        .execute();
      // The item's last point is its newest in the order points are taken (their ids only grow,
      // newestFirst in recovery-context.ts), whatever the clock said: after a backward clock jump
      // the newest point carries an earlier time than older ones, and RPO and health must follow
      // it, not a time that only passes once the clock catches up.
      const others = await tx.selectFrom('recovery_points').select('id').where('item_id', '=', p.itemId).execute();
      const newest = others.every((o) => o.id <= p.pointId);
      if (newest && (item.last_point_at === null || Number(item.last_point_at) !== p.takenAt)) {
        await tx.updateTable('protected_items').set({ last_point_at: p.takenAt, updated_at: now() }).where('id', '=', p.itemId).execute();
      }
      return 'recorded';
    });
  }

  async prunePoints(itemId: string, pointIds: string[]): Promise<void> {
    if (pointIds.length === 0) return;
    await this.store.db.deleteFrom('recovery_points').where('item_id', '=', itemId).where('id', 'in', pointIds).execute();
    // A group point loses that member; one with no member left is gone.
    const gone = await this.store.db.selectFrom('group_point_members').select('group_point_id').where('item_id', '=', itemId).where('point_id', 'in', pointIds).execute();
    if (gone.length === 0) return;
    await this.store.db.deleteFrom('group_point_members').where('item_id', '=', itemId).where('point_id', 'in', pointIds).execute();
    const ids = [...new Set(gone.map((g) => g.group_point_id))];
    await this.store.db.deleteFrom('group_points').where('id', 'in', ids).where((eb) => eb.not(eb.exists(eb.selectFrom('group_point_members as m').select('m.point_id').whereRef('m.group_point_id', '=', 'group_points.id')))).execute();
  }

  /** Records a replication group's point and ties each member's recovery point to it (now for
   * the points already recorded, at recordPoint for the others). Idempotent. */
  async recordGroupPoint(r: GroupPointRecord): Promise<void> {
    await transaction(this.store, async (tx) => {
      const have = await tx.selectFrom('group_points').select('id').where('id', '=', r.groupPointId).executeTakeFirst();
      if (!have) {
        await tx.insertInto('group_points').values({ id: r.groupPointId, group_name: r.group, seq: r.seq, taken_at: r.takenAt, kind: r.kind, pause_ms: Math.round(r.pauseMs), created_at: now() }).execute();
      }
      const items = new Set((await tx.selectFrom('protected_items').select('id').where('id', 'in', r.members.map((m) => m.itemId)).execute()).map((i) => i.id));
      for (const m of r.members) {
        if (!items.has(m.itemId)) continue; // replication of that member was disabled meanwhile
        const known = await tx.selectFrom('group_point_members').select('group_point_id').where('point_id', '=', m.pointId).executeTakeFirst();
        if (!known) await tx.insertInto('group_point_members').values({ point_id: m.pointId, group_point_id: r.groupPointId, item_id: m.itemId }).execute();
        await tx.updateTable('recovery_points').set({ group_point_id: r.groupPointId }).where('id', '=', m.pointId).where('item_id', '=', m.itemId).execute();
      }
    });
  }

  async markBad(itemId: string, pointIds: string[], reason: string): Promise<void> {
    if (pointIds.length === 0) return;
    await this.store.db.updateTable('recovery_points').set({ status: 'bad' }).where('item_id', '=', itemId).where('id', 'in', pointIds).execute();
    await recordEvent(this.store, { kind: 'points-bad', itemId, message: `${pointIds.length} recovery point(s) marked bad: ${reason}. They are never used for failover.`, data: { points: pointIds } });
  }

  agentLink(siteIds?: readonly string[]): AgentLink {
    return {
      assignments: () => this.assignments(siteIds),
      progress: (r) => this.progress(r),
      resynced: (id) => this.resynced(id),
      event: (id, kind, message, data) => this.event(id, kind, message, data),
      groupPoint: (r) => this.recordGroupPoint(r),
    };
  }

  masterTargetLink(): MasterTargetLink {
    return {
      siteRoot: (id) => this.siteRoot(id),
      recordPoint: (p) => this.recordPoint(p),
      prunePoints: (id, ids) => this.prunePoints(id, ids),
      markBad: (id, ids, reason) => this.markBad(id, ids, reason),
      requestResync: (id, reason) => this.requestResync(id, reason),
      event: (id, kind, message, data) => this.event(id, kind, message, data),
    };
  }
}
