// Operator actions on protected items: load the item with its pairing, ask the lifecycle state
// machine (src/domain/lifecycle.ts) whether the action is allowed, write the next state with an
// optimistic version check, and queue the job that carries the action out. Internal transitions
// reported by jobs go through the same decide() so a job can never move an item where the
// lifecycle does not allow.
import { conflict, notFound } from '../domain/errors.ts';
import { decide } from '../domain/lifecycle.ts';
import type { InternalAction, JobPlan, LifecycleContext, LifecycleItem, OperatorAction } from '../domain/lifecycle.ts';
import type { Direction, ItemState } from '../domain/model.ts';
import type { JobEngine } from '../jobs/engine.ts';
import type { JobView } from '../jobs/types.ts';
import type { Store } from '../store/open.ts';
import { newId, now, parseJson } from '../store/open.ts';
import type { Row } from '../store/schema.ts';
import { transaction } from '../store/tx.ts';
import { QemuProvider } from '../providers/qemu/qemu-provider.ts';
import { discoverQemuSite } from './discovery.ts';
import { recordEvent } from './events.ts';

export interface JobParams {
  itemId: string;
  machine: string;
  plan: JobPlan;
}

export interface LoadedItem {
  machine: Row<'machines'>;
  pairing: Row<'pairings'>;
  item: Row<'protected_items'> | null;
  ctx: LifecycleContext;
}

const lifecycleOf = (machine: string, r: Row<'protected_items'>): LifecycleItem => ({
  machine,
  state: r.state as ItemState,
  direction: r.direction as Direction,
  activeSite: r.active_site_id,
});

export class ItemActions {
  readonly store: Store;
  readonly jobs: JobEngine;

  constructor(store: Store, jobs: JobEngine) {
    this.store = store;
    this.jobs = jobs;
  }

  async #machine(name: string): Promise<Row<'machines'>> {
    const find = () => this.store.db.selectFrom('machines').selectAll().where('name', '=', name).executeTakeFirst();
    let m = await find();
    if (!m) {
      // A VM defined on a qemu site since the last look: discover, then look again.
      for (const s of await this.store.db.selectFrom('sites').selectAll().where('provider', '=', 'qemu').execute()) await discoverQemuSite(this.store, s).catch(() => undefined);
      m = await find();
    }
    if (!m) throw notFound('machine.not-found', `no machine is named '${name}': add it with rebound machine add ${name} --site SITE --disk FILE, or define the VM on a qemu site.`);
    return m;
  }

  async load(machineName: string): Promise<LoadedItem> {
    const machine = await this.#machine(machineName);
    const item = (await this.store.db.selectFrom('protected_items').selectAll().where('machine_id', '=', machine.id).executeTakeFirst()) ?? null;
    const pairing = item
      ? await this.store.db.selectFrom('pairings').selectAll().where('id', '=', item.pairing_id).executeTakeFirstOrThrow()
      : await this.store.db.selectFrom('pairings').selectAll().where('primary_site_id', '=', machine.site_id).orderBy('created_at').executeTakeFirst();
    if (!pairing) {
      const site = await this.store.db.selectFrom('sites').select('name').where('id', '=', machine.site_id).executeTakeFirst();
      throw conflict('no-pairing', `${machineName} is at site ${site?.name ?? '?'}, which is not paired with a recovery site: pair it first (rebound pair ${site?.name ?? 'PRIMARY'} RECOVERY --policy NAME).`);
    }
    const points = item
      ? Number((await this.store.db.selectFrom('recovery_points').select((eb) => eb.fn.countAll().as('n')).where('item_id', '=', item.id).where('status', '=', 'ok').executeTakeFirstOrThrow()).n)
      : 0;
    const config = parseJson<{ hooks?: { stop?: string } }>(machine.config, {});
    const canStopSource = machine.kind === 'vm' || typeof config.hooks?.stop === 'string';
    return { machine, pairing, item, ctx: { primarySite: pairing.primary_site_id, recoverySite: pairing.recovery_site_id, points, canStopSource } };
  }

  /** Decides and applies an operator action; returns the queued job. */
  async act(machineName: string, action: OperatorAction, createdBy: string): Promise<JobView> {
    const l = await this.load(machineName);
    const d = decide(l.item ? lifecycleOf(l.machine.name, l.item) : null, action, l.ctx, l.machine.name);
    if (!d.ok) throw d.error;
    if (!d.job) throw conflict('no-job', `${action.kind} of ${machineName} needs no job.`);
    const t = now();
    let itemId: string;
    let undo: () => Promise<void>;
    if (l.item === null) {
      if (!d.next) throw conflict('no-item', `${action.kind} did not create an item.`);
      itemId = newId();
      const details = await this.#initialDetails(l.machine);
      await this.store.db
        .insertInto('protected_items')
        .values({
          id: itemId, machine_id: l.machine.id, pairing_id: l.pairing.id, state: d.next.state, direction: d.next.direction, active_site_id: d.next.activeSite,
          group_name: action.kind === 'protect' ? (action.group ?? null) : null, health: 'normal', last_point_at: null, details: JSON.stringify(details), version: 1, created_at: t, updated_at: t,
        })
        .execute()
        .catch(async (err: unknown) => {
          if (await this.store.db.selectFrom('protected_items').select('id').where('machine_id', '=', l.machine.id).executeTakeFirst()) {
            throw conflict('item-exists', `${machineName} was protected by another request a moment ago.`);
          }
          throw err;
        });
      undo = async () => { await this.store.db.deleteFrom('protected_items').where('id', '=', itemId).execute(); };
    } else {
      const prev = l.item;
      itemId = prev.id;
      const next = d.next!;
      // A resync is prepared by its job (seeding the replica from old disks) before the agent
      // may start: until then the item is not assigned.
      const details = d.job.resync ? JSON.stringify({ ...parseJson<Record<string, unknown>>(prev.details, {}), preparing: true }) : prev.details;
      const res = await this.store.db
        .updateTable('protected_items')
        .set({ state: next.state, direction: next.direction, active_site_id: next.activeSite, details, version: prev.version + 1, updated_at: t })
        .where('id', '=', prev.id)
        .where('version', '=', prev.version)
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) throw conflict('item-changed', `${machineName} changed while the request was decided: look at it again (rebound item show ${machineName}) and retry.`);
      undo = async () => {
        await this.store.db.updateTable('protected_items').set({ state: prev.state, direction: prev.direction, active_site_id: prev.active_site_id, details: prev.details, version: prev.version + 2, updated_at: now() }).where('id', '=', prev.id).execute();
      };
    }
    try {
      const job = await this.jobs.enqueue({ kind: d.job.kind, target: l.machine.name, params: { itemId, machine: l.machine.name, plan: d.job } satisfies JobParams, createdBy });
      await recordEvent(this.store, { kind: 'state-changed', itemId, message: `${l.machine.name}: ${l.item?.state ?? 'unprotected'} → ${d.next?.state ?? 'removed'} (${action.kind}, job ${job.id})`, data: { from: l.item?.state ?? null, to: d.next?.state ?? null, job: job.id } });
      return job;
    } catch (err) {
      await undo();
      throw err;
    }
  }

  /** What a new item starts with: for a VM, its definition as a template (cpus, memory, boot,
   * MACs), so a failover can build the machine at the recovery site even when the primary is gone. */
  async #initialDetails(machine: Row<'machines'>): Promise<Record<string, unknown>> {
    if (machine.kind !== 'vm') return {};
    const s = await this.store.db.selectFrom('sites').select(['root', 'provider']).where('id', '=', machine.site_id).executeTakeFirst();
    if (s?.provider !== 'qemu') return {};
    const info = await new QemuProvider({ root: s.root }).state(machine.name).catch(() => null);
    return info ? { template: info.definition } : {};
  }

  /** Applies an internal transition a job reports. Idempotent: already there → nothing. */
  async internal(itemId: string, action: InternalAction | { kind: 'cancel-failover' } | { kind: 'complete-failover' }, patch: { details?: (d: Record<string, unknown>) => Record<string, unknown> } = {}): Promise<void> {
    await transaction(this.store, async (tx) => {
      const item = await tx.selectFrom('protected_items').selectAll().where('id', '=', itemId).executeTakeFirst();
      if (!item) throw notFound('item.not-found', `protected item ${itemId} no longer exists.`);
      const machine = await tx.selectFrom('machines').select('name').where('id', '=', item.machine_id).executeTakeFirstOrThrow();
      const pairing = await tx.selectFrom('pairings').selectAll().where('id', '=', item.pairing_id).executeTakeFirstOrThrow();
      const ctx: LifecycleContext = { primarySite: pairing.primary_site_id, recoverySite: pairing.recovery_site_id, points: 1, canStopSource: true };
      const d = decide(lifecycleOf(machine.name, item), action, ctx, machine.name);
      if (!d.ok) throw d.error;
      const details = patch.details ? JSON.stringify(patch.details(parseJson<Record<string, unknown>>(item.details, {}))) : item.details;
      if (d.next === null) {
        await tx.deleteFrom('recovery_points').where('item_id', '=', itemId).execute();
        await tx.deleteFrom('protected_items').where('id', '=', itemId).execute();
      } else {
        await tx
          .updateTable('protected_items')
          .set({ state: d.next.state, direction: d.next.direction, active_site_id: d.next.activeSite, details, version: item.version + 1, updated_at: now() })
          .where('id', '=', itemId)
          .execute();
      }
      await tx.insertInto('events').values({ at: now(), kind: 'state-changed', item_id: itemId, message: `${machine.name}: ${item.state} → ${d.next?.state ?? 'removed'} (${action.kind})`, data: JSON.stringify({ from: item.state, to: d.next?.state ?? null }) }).execute();
    });
  }
}
