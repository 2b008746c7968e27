// What every failover-family job reads about an item: its machine, pairing, sites, policy and
// the details the jobs keep on it (where the machine has a definition at each site, the test
// machine of a drill, the exports a failed-over machine runs on). Also the recovery-point choice
// and the small file helpers the jobs share.
import { stat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { conflict, invalid, notFound } from '../../domain/errors.ts';
import type { MachineDefinition } from '../../providers/provider.ts';
import type { AssignedDisk } from '../../replication/link.ts';
import type { Store } from '../../store/open.ts';
import { now, parseJson } from '../../store/open.ts';
import type { Row } from '../../store/schema.ts';
import { transaction } from '../../store/tx.ts';

/** A machine's definition at one site: the disks it runs on there. */
export interface Placement {
  name: string;
  disks: AssignedDisk[];
}

/** The exports a recovered (or test) machine runs on until commit (or cleanup). */
export interface Recovered {
  siteId: string;
  name: string;
  tag: string;
  pointId: string;
  disks: AssignedDisk[];
  /** The definition the machine had at that site before a failback redefined it. */
  previous?: MachineDefinition;
  /** True when this job created the machine's definition (removed on cancel). */
  created?: boolean;
}

export interface ItemDetails extends Record<string, unknown> {
  template?: MachineDefinition;
  placements?: Record<string, Placement>;
  test?: Recovered | null;
  failover?: Recovered | null;
  resync?: string | null;
  resyncMode?: 'full' | 'digests' | null;
  preparing?: boolean;
}

export interface RecoveryContext {
  item: Row<'protected_items'>;
  machine: Row<'machines'>;
  pairing: Row<'pairings'>;
  policy: Row<'policies'>;
  sites: Map<string, Row<'sites'>>;
  details: ItemDetails;
}

export async function loadRecovery(store: Store, itemId: string): Promise<RecoveryContext> {
  const item = await store.db.selectFrom('protected_items').selectAll().where('id', '=', itemId).executeTakeFirst();
  if (!item) throw notFound('item.not-found', `protected item ${itemId} no longer exists.`);
  const machine = await store.db.selectFrom('machines').selectAll().where('id', '=', item.machine_id).executeTakeFirstOrThrow();
  const pairing = await store.db.selectFrom('pairings').selectAll().where('id', '=', item.pairing_id).executeTakeFirstOrThrow();
  const policy = await store.db.selectFrom('policies').selectAll().where('id', '=', pairing.policy_id).executeTakeFirstOrThrow();
  const sites = new Map((await store.db.selectFrom('sites').selectAll().where('id', 'in', [pairing.primary_site_id, pairing.recovery_site_id]).execute()).map((s) => [s.id, s]));
  return { item, machine, pairing, policy, sites, details: parseJson<ItemDetails>(item.details, {}) };
}

export function site(rc: RecoveryContext, id: string): Row<'sites'> {
  const s = rc.sites.get(id);
  if (!s) throw notFound('site.not-found', `site ${id} of ${rc.machine.name}'s pairing no longer exists.`);
  return s;
}

/** Where the machine is defined at a site: its placement, or at its home site the machine row. */
export function placementAt(rc: RecoveryContext, siteId: string): Placement | null {
  const p = rc.details.placements?.[siteId];
  if (p) return p;
  if (siteId === rc.machine.site_id) return { name: rc.machine.name, disks: parseJson<AssignedDisk[]>(rc.machine.disks, []) };
  return null;
}

/** Changes the item's details in one transaction (read, change, write). */
export async function updateDetails(store: Store, itemId: string, fn: (d: ItemDetails) => ItemDetails): Promise<void> {
  await transaction(store, async (tx) => {
    const row = await tx.selectFrom('protected_items').select('details').where('id', '=', itemId).executeTakeFirst();
    if (!row) return;
    await tx.updateTable('protected_items').set({ details: JSON.stringify(fn(parseJson<ItemDetails>(row.details, {}))), updated_at: now() }).where('id', '=', itemId).execute();
  });
}

export interface ChosenPoint {
  id: string;
  takenAt: number;
  kind: string;
}

/**
 * An item's points, newest first, in the order they were taken — not by `taken_at`, which goes
 * back with the wall clock (after a backward jump the newest point carries an earlier time than
 * older ones). Point ids only grow per item: they are UUIDv7, the agent takes the id after its
 * last one when the clock went back (pointIdAfter), and the replica store refuses a point whose
 * id is not newer than its newest. The points' sequence numbers (`disks.seq`) grow too, but
 * start again at 1 when an agent's state is lost, while ids keep growing; so ids decide.
 * Compared as strings in JavaScript (code-point order), not by a database collation.
 */
export function newestFirst<T extends { id: string }>(rows: readonly T[]): T[] {
  return [...rows].sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

/** Resolves a point choice against the item's usable points (newest first, newestFirst). */
export async function choosePoint(store: Store, itemId: string, machine: string, choice: string): Promise<ChosenPoint> {
  let q = store.db.selectFrom('recovery_points').select(['id', 'taken_at', 'kind', 'status']).where('item_id', '=', itemId);
  if (choice === 'latest' || choice === 'latest-processed') q = q.where('status', '=', 'ok');
  else if (choice === 'latest-app-consistent') q = q.where('status', '=', 'ok').where('kind', '=', 'app');
  else q = q.where('id', '=', choice);
  const row = newestFirst(await q.execute())[0];
  if (!row) {
    if (choice === 'latest-app-consistent') throw conflict('no-app-consistent-point', `${machine} has no app-consistent recovery point: choose latest or a point id (rebound points ${machine}), or set an app-consistent frequency on its policy.`);
    if (choice === 'latest' || choice === 'latest-processed') throw conflict('no-recovery-point', `${machine} has no usable recovery point.`);
    throw notFound('point.not-found', `${machine} has no recovery point ${choice}: list them with rebound points ${machine}.`);
  }
  if (row.status !== 'ok') throw conflict('point-bad', `recovery point ${choice} of ${machine} failed verification (scrub) and cannot be used: choose another (rebound points ${machine}).`);
  return { id: row.id, takenAt: Number(row.taken_at), kind: row.kind };
}

/** The directory a machine's files live in at a site (qemu: its VM directory). */
export function machineDir(s: Row<'sites'>, name: string): string {
  return join(s.root, s.provider === 'qemu' ? 'vms' : 'machines', name);
}

/** Writes the at-rest passphrase a recovered machine needs beside it (0600); null when plain. */
export async function writeKeyFile(dir: string, secrets: { id: string; data: string }[]): Promise<{ id: string; file: string }[] | undefined> {
  if (secrets.length === 0) return undefined;
  await mkdir(dir, { recursive: true });
  const out: { id: string; file: string }[] = [];
  for (const s of secrets) {
    if (!/^[a-z][a-z0-9-]*$/i.test(s.id)) throw invalid('secret-id-invalid', `secret id ${s.id} is not valid.`);
    const file = join(dir, `${s.id}.key`);
    await writeFile(file, s.data, { mode: 0o600 });
    out.push({ id: s.id, file });
  }
  return out;
}

export const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

export const when = (ms: number): string => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
