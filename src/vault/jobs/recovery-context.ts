// What every failover-family job reads about an item: its machine, pairing, sites, policy and
// the details the jobs keep on it (where the machine has a definition at each site, the test
// machine of a drill, the exports a failed-over machine runs on). Also the recovery-point choice
// and the small file helpers the jobs share.
import { mkdir, realpath, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { conflict, invalid, notFound } from '../../domain/errors.ts';
import { isInside } from '../../domain/paths.ts';
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
  /** An alternate host of the site (a failback with --host): its name and the directory its
   * machines live under. Absent: the site's own root. */
  host?: string;
  root?: string;
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
  /** An alternate host (failback --host): its name and root, as in Placement. */
  host?: string;
  root?: string;
}

export interface TrackedSinceFailover {
  /** The site the recovered machine runs at (the source of the reverse replication). */
  siteId: string;
  name: string;
  pointId: string;
  startedAt: number;
  /** The old disks at the other site when the recovered machine started. */
  oldDisks: { path: string; mtimeMs: number }[];
}

export interface ItemDetails extends Record<string, unknown> {
  template?: MachineDefinition;
  placements?: Record<string, Placement>;
  test?: Recovered | null;
  failover?: Recovered | null;
  resync?: string | null;
  resyncMode?: 'full' | 'digests' | 'cbt' | null;
  /** Set when a failover started the recovered machine with change tracking from its first
   * instant and the source's disks held exactly the point it started from (nothing was lost):
   * reverse replication can then send what the tracking recorded instead of comparing digests,
   * as long as the old disks have not changed since (checked by mtime). */
  trackedSinceFailover?: TrackedSinceFailover | null;
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
/** The site as seen from one host: its root is the host's root when the machine was placed on an
 * alternate host, so providers and machine directories are that host's. */
export function onHost(s: Row<'sites'>, at: { root?: string | undefined } | null | undefined): Row<'sites'> {
  return at?.root ? { ...s, root: at.root } : s;
}

/**
 * A host of a site that machines can be placed on (failback --host): its name and the directory
 * its machines live under — `config.root` when set (it must lie inside the site's root), else
 * `SITE_ROOT/hosts/NAME`. Machines on a host with an address would be run by a host agent there,
 * which this build does not have: such a host is refused with what to use instead.
 */
export async function resolveHost(store: Store, siteId: string, name: string): Promise<{ name: string; root: string }> {
  const s = await store.db.selectFrom('sites').selectAll().where('id', '=', siteId).executeTakeFirst();
  if (!s) throw notFound('site.not-found', `site ${siteId} no longer exists.`);
  const h = await store.db.selectFrom('hosts').selectAll().where('site_id', '=', siteId).where('name', '=', name).executeTakeFirst();
  if (!h) {
    const known = (await store.db.selectFrom('hosts').select('name').where('site_id', '=', siteId).orderBy('name').execute()).map((r) => r.name);
    throw notFound('host.not-found', `site ${s.name} has no host named '${name}'${known.length ? ` (its hosts: ${known.join(', ')})` : ''}: add it with rebound site host-add ${s.name} ${name} (POST /sites/${s.name}/hosts), or drop --host.`);
  }
  if (h.address) {
    throw conflict('host-remote', `host ${name} of site ${s.name} has the address ${h.address}: machines on remote hosts are run by a host agent there, which this build does not have. Fail back to a local host of ${s.name} (one without an address), or drop --host.`);
  }
  const cfg = parseJson<{ root?: unknown }>(h.config, {});
  const root = typeof cfg.root === 'string' ? resolve(s.root, cfg.root) : join(s.root, 'hosts', h.name);
  if (!isInside(s.root, root)) {
    throw invalid('host-root-outside-site', `host ${name}'s root ${root} is not inside site ${s.name}'s root ${s.root}: every path Rebound writes stays under its site's root. Set the host's config.root to a directory inside ${s.root}.`);
  }
  // No symlink escape either: the deepest part of the path that exists must resolve inside too.
  let probe = root;
  while (!(await exists(probe)) && probe !== s.root) probe = dirname(probe);
  const [realProbe, realSite] = await Promise.all([realpath(probe).catch(() => probe), realpath(s.root).catch(() => s.root)]);
  if (realProbe !== realSite && !isInside(realSite, realProbe)) {
    throw invalid('host-root-outside-site', `host ${name}'s root ${root} leads outside site ${s.name}'s root through a symbolic link (${probe} is ${realProbe}): remove the link or choose another config.root.`);
  }
  return { name: h.name, root };
}

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
