// The vault's side of replication groups: who is in a group (with the pairing each member
// replicates under), the checks before a machine joins one (src/domain/groups.ts), and changing
// or leaving a group of a protected machine.
import { checkGroupChange, checkGroupMembership } from '../domain/groups.ts';
import type { GroupMemberView } from '../domain/groups.ts';
import { conflict, notFound } from '../domain/errors.ts';
import type { Direction, ItemState } from '../domain/model.ts';
import type { Store } from '../store/open.ts';
import { now } from '../store/open.ts';
import type { Row } from '../store/schema.ts';
import { recordEvent } from './events.ts';

/** Failover-family jobs: while one of a machine's is unfinished, its group stays as it is. */
const FAILOVER_KINDS = ['test-failover', 'test-cleanup', 'failover', 'failback-sync', 'complete-failover', 'cancel-failover', 'commit', 'reverse-replicate'];

async function pairingLabel(store: Store, pairing: Row<'pairings'>): Promise<string> {
  const sites = await store.db.selectFrom('sites').select(['id', 'name']).where('id', 'in', [pairing.primary_site_id, pairing.recovery_site_id]).execute();
  const policy = await store.db.selectFrom('policies').select('name').where('id', '=', pairing.policy_id).executeTakeFirst();
  const name = (id: string): string => sites.find((s) => s.id === id)?.name ?? id;
  return `${name(pairing.primary_site_id)} → ${name(pairing.recovery_site_id)} under policy ${policy?.name ?? pairing.policy_id}`;
}

/** The protected machines of a group with their pairings. */
export async function groupMembers(store: Store, group: string): Promise<GroupMemberView[]> {
  const rows = await store.db
    .selectFrom('protected_items as i')
    .innerJoin('machines as m', 'm.id', 'i.machine_id')
    .innerJoin('pairings as p', 'p.id', 'i.pairing_id')
    .selectAll('p')
    .select(['m.name as machine', 'i.direction'])
    .where('i.group_name', '=', group)
    .execute();
  const out: GroupMemberView[] = [];
  for (const r of rows) out.push({ machine: r.machine, pairingId: r.id, pairing: await pairingLabel(store, r), direction: r.direction as Direction });
  return out;
}

/** Refuses a machine joining `group` under `pairing` unless it fits the group's other machines. */
export async function checkJoin(store: Store, machine: string, pairing: Row<'pairings'>, direction: Direction, group: string): Promise<void> {
  checkGroupMembership(group, { machine, pairingId: pairing.id, pairing: await pairingLabel(store, pairing), direction }, await groupMembers(store, group));
}

/**
 * Moves a protected machine into `group`, or out of its group (null). Refused while a failover
 * of it runs. Its next points are the group's (or its own); points taken before keep what they
 * were. Returns the group it was in.
 */
export async function setGroup(store: Store, machine: string, group: string | null): Promise<{ from: string | null; to: string | null }> {
  const row = await store.db
    .selectFrom('protected_items as i')
    .innerJoin('machines as m', 'm.id', 'i.machine_id')
    .innerJoin('pairings as p', 'p.id', 'i.pairing_id')
    .selectAll('i')
    .select(['p.primary_site_id', 'p.recovery_site_id', 'p.policy_id', 'p.created_at as pairing_created_at'])
    .where('m.name', '=', machine)
    .executeTakeFirst();
  if (!row) throw notFound('item.not-found', `machine '${machine}' is not protected (or does not exist): protect it with rebound protect ${machine} --group NAME.`);
  const from = row.group_name;
  if (from === group) return { from, to: group };
  const job = await store.db
    .selectFrom('jobs')
    .select(['id', 'kind'])
    .where('target', '=', machine)
    .where('kind', 'in', FAILOVER_KINDS)
    .where('state', 'in', ['queued', 'running', 'waiting'])
    .orderBy('created_at', 'desc')
    .executeTakeFirst();
  checkGroupChange(machine, row.state as ItemState, from, group, job);
  if (group !== null) {
    const pairing: Row<'pairings'> = { id: row.pairing_id, primary_site_id: row.primary_site_id, recovery_site_id: row.recovery_site_id, policy_id: row.policy_id, created_at: row.pairing_created_at };
    await checkJoin(store, machine, pairing, row.direction as Direction, group);
  }
  const res = await store.db.updateTable('protected_items').set({ group_name: group, version: row.version + 1, updated_at: now() }).where('id', '=', row.id).where('version', '=', row.version).executeTakeFirst();
  if (Number(res.numUpdatedRows) !== 1) {
    throw conflict('item-changed', `${machine} changed while its group was being set: look at it again (rebound item show ${machine}) and retry.`);
  }
  const message = group === null ? `${machine} left replication group ${from ?? ''}` : from === null ? `${machine} joined replication group ${group}` : `${machine} moved from replication group ${from} to ${group}`;
  await recordEvent(store, { kind: 'group-changed', itemId: row.id, message, data: { from, to: group } });
  return { from, to: group };
}
