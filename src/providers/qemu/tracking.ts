// Changed-block tracking with QEMU's persistent dirty bitmaps, and points in time by fleecing.
//
// Each qcow2 disk node carries bitmaps named `rebound-N` (granularity 64 KiB, persistent, so a
// clean QEMU exit stores them in the image). Exactly one is recording between points. Taking a
// point is one QMP `transaction` across all disks of the VM — add `rebound-N+1`, disable
// `rebound-N`, and `blockdev-backup sync=none` from each disk into a fresh qcow2 fleecing overlay
// backed by that disk — so the overlays show every disk at the same instant (QEMU copies old
// data into them before the guest overwrites it) and `rebound-N` names exactly the clusters
// written since the previous point. The overlays are exported read-only over NBD on the VM's
// nbd.sock with `rebound-N` as the `qemu:dirty-bitmap:rebound-N` meta context.
// Releasing a consumed point drops `rebound-N`; releasing an unconsumed one merges `rebound-N+1`
// into `rebound-N` and re-enables it, so changes are kept for the next point, never lost.
// A bitmap that is missing or `inconsistent` (QEMU was killed, so the image was not closed
// cleanly) means the changes since the last point are unknown: that is reported as `cbt-lost`,
// and the caller must resync by digest comparison — never a silent full copy, never a guess.
import { execFile } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { conflict, ReboundError } from '../../domain/errors.ts';
import { NbdClient } from '../../nbd/client.ts';
import type { QmpClient } from '../../qmp/client.ts';
import { QmpError } from '../../qmp/client.ts';
import type { DirtyBitmapInfo, TransactionAction } from '../../qmp/types.ts';
import type { DiskInfo, Extent, MachineDefinition, TrackingStatus } from '../provider.ts';
import { diskNode } from './command-line.ts';
import type { VmPaths } from './definition.ts';

const run = promisify(execFile);
export const GRANULARITY = 65536;
const PREFIX = 'rebound-';
const fleeceNode = (i: number): string => `fleece${i}`;
const fleeceJob = (i: number): string => `fleece-job${i}`;
const exportName = (i: number): string => `disk${i}`;
const bitmapName = (gen: number): string => `${PREFIX}${gen}`;

interface DiskBitmaps {
  disk: number;
  /** rebound-* bitmaps on this disk, by generation. */
  bitmaps: Map<number, DirtyBitmapInfo>;
}

/** The tracking marker: written when tracking starts, so missing bitmaps later read as lost. */
interface Marker {
  startedAt: string;
  /** Tracking started from a state the replica already holds (a recovered VM started from a
   * point): generation 0 then names the writes since the start, not "everything". */
  baseline?: boolean;
}

export async function readBitmaps(qmp: QmpClient, def: MachineDefinition, signal?: AbortSignal): Promise<DiskBitmaps[]> {
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true }, { signal });
  return def.disks.map((_, i) => {
    const node = nodes.find((n) => n['node-name'] === diskNode(i));
    const bitmaps = new Map<number, DirtyBitmapInfo>();
    for (const b of node?.['dirty-bitmaps'] ?? []) {
      const m = /^rebound-(\d+)$/.exec(b.name ?? '');
      if (m) bitmaps.set(Number(m[1]), b);
    }
    return { disk: i, bitmaps };
  });
}

async function readMarker(paths: VmPaths): Promise<Marker | undefined> {
  try {
    return JSON.parse(await readFile(paths.tracking, 'utf8')) as Marker;
  } catch {
    return undefined;
  }
}

export interface TrackingView {
  status: TrackingStatus;
  /** The recording generation, when active. */
  active?: number;
  /** A disabled generation left by a point that was never released (crash, other process). */
  stale?: number;
}

/** Works out the tracking state from the disks' bitmaps and the marker file. */
export async function inspect(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal): Promise<TrackingView> {
  const disks = await readBitmaps(qmp, def, signal);
  const marker = await readMarker(paths);
  const problems: { disk: string; reason: string }[] = [];
  const actives = new Set<number>();
  const stales = new Set<number>();
  let any = false;
  for (const d of disks) {
    const name = diskNode(d.disk);
    if (def.disks[d.disk]!.format !== 'qcow2') {
      problems.push({ disk: name, reason: 'raw disk: persistent dirty bitmaps need qcow2' });
      continue;
    }
    if (d.bitmaps.size > 0) any = true;
    for (const [gen, b] of d.bitmaps) {
      if (b.inconsistent) problems.push({ disk: name, reason: `bitmap ${bitmapName(gen)} is inconsistent (QEMU stopped without closing the image, e.g. it was killed)` });
      else if (b.recording) actives.add(gen);
      else stales.add(gen);
    }
    const recording = [...d.bitmaps.entries()].filter(([, b]) => b.recording && !b.inconsistent);
    if (marker && recording.length === 0 && !problems.some((p) => p.disk === name)) {
      problems.push({ disk: name, reason: 'its tracking bitmap is missing (QEMU stopped without saving it — killed before any clean exit since tracking started — or the image was replaced)' });
    }
  }
  if (!marker && !any) return { status: { state: 'off', problems } };
  if (actives.size > 1) problems.push({ disk: '*', reason: `disks record different generations (${[...actives].join(', ')})` });
  if (problems.length > 0) return { status: { state: 'lost', problems } };
  const active = [...actives][0];
  const stale = [...stales].sort((a, b) => b - a)[0];
  return { status: { state: 'active', problems: [] }, ...(active === undefined ? {} : { active }), ...(stale === undefined ? {} : { stale }) };
}

export async function startTracking(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal, baseline = false): Promise<TrackingStatus> {
  const raw = def.disks.findIndex((d) => d.format !== 'qcow2');
  if (raw >= 0) {
    throw conflict('cbt-unsupported', `Disk ${raw} of VM "${def.name}" is raw; QEMU keeps persistent dirty bitmaps only in qcow2 images.`, {
      hint: 'Convert the disk to qcow2, or protect the VM with digest comparison (no change tracking).',
    });
  }
  const view = await inspect(qmp, def, paths, signal);
  if (view.status.state === 'active') return view.status;
  if (view.status.state === 'lost') throw lostError(def.name, view.status);
  await qmp.execute('transaction', {
    actions: def.disks.map((_, i) => ({ type: 'block-dirty-bitmap-add', data: { node: diskNode(i), name: bitmapName(0), granularity: GRANULARITY, persistent: true } })),
  }, { signal });
  await writeFile(paths.tracking, JSON.stringify({ startedAt: new Date().toISOString(), ...(baseline ? { baseline: true } : {}) } satisfies Marker) + '\n');
  return { state: 'active', problems: [] };
}

/** Removes every rebound-* bitmap (inconsistent ones included) and starts again at generation 0. */
export async function resetTracking(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal, baseline = false): Promise<TrackingStatus> {
  await closeStalePoint(qmp, def, paths, signal);
  const disks = await readBitmaps(qmp, def, signal);
  for (const d of disks) {
    for (const gen of d.bitmaps.keys()) await qmp.execute('block-dirty-bitmap-remove', { node: diskNode(d.disk), name: bitmapName(gen) }, { signal });
  }
  await rm(paths.tracking, { force: true });
  return startTracking(qmp, def, paths, signal, baseline);
}

export function lostError(name: string, status: TrackingStatus): ReboundError {
  const list = status.problems.map((p) => `${p.disk}: ${p.reason}`).join('; ');
  return new ReboundError('conflict', 'cbt-lost', `Change tracking of VM "${name}" cannot say what changed since the last point (${list}).`, {
    hint: 'Resynchronise the replica by digest comparison (not a blind full copy), then reset tracking so the next point starts afresh.',
    details: { machine: name, problems: status.problems, fallback: 'digest-resync' },
  });
}

export interface OpenPoint {
  id: string;
  generation: number;
  takenAt: Date;
  disks: { info: DiskInfo; changes: { kind: 'extents'; extents: Extent[]; granularity: number } | { kind: 'all'; reason: string }; client: NbdClient }[];
}

/** Takes a point: the transaction, the fleecing overlays, the NBD exports, the changed extents. */
export async function takePoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal): Promise<OpenPoint> {
  const prepared = await preparePoint(qmp, def, paths, signal);
  const takenAt = await commitPoint(qmp, def, paths, prepared, signal);
  return openPoint(qmp, def, paths, prepared, takenAt, signal);
}

/** A point made ready but not yet taken: its fleecing overlays exist; the transaction has not run. */
export interface PreparedPoint {
  generation: number;
  disks: DiskInfo[];
}

/**
 * takePoint in three steps, so that a replication group's barrier holds its VMs only for the
 * instant itself: preparePoint (overlays created and added; nothing observable changes),
 * commitPoint (the one QMP transaction: the point's instant), openPoint (NBD exports and
 * clients). A prepared point that is not committed is undone by abandonPoint.
 */
export async function preparePoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal): Promise<PreparedPoint> {
  let view = await inspect(qmp, def, paths, signal);
  if (view.status.state === 'off') throw conflict('cbt-not-started', `Change tracking is not started for VM "${def.name}".`, { hint: 'Start tracking first (startTracking).' });
  if (view.status.state === 'lost') throw lostError(def.name, view.status);
  if (view.stale !== undefined || (await qmp.execute('query-block-exports', undefined, { signal })).length > 0) {
    await closeStalePoint(qmp, def, paths, signal);
    view = await inspect(qmp, def, paths, signal);
  }
  const gen = view.active!;
  // Sizes from QEMU itself (no qemu-img process per disk), overlays created in parallel.
  let nodes = await qmp.execute('query-named-block-nodes', { flat: true }, { signal });
  // Overlays of a point that was prepared but never taken (its process was killed before the
  // transaction; no bitmap changed): removed, or their files stay locked by QEMU.
  const leftover = def.disks.map((_, i) => i).filter((i) => nodes.some((n) => n['node-name'] === fleeceNode(i)));
  if (leftover.length > 0) {
    await removeOverlays(qmp, paths, leftover);
    nodes = await qmp.execute('query-named-block-nodes', { flat: true }, { signal });
  }
  const disks: DiskInfo[] = def.disks.map((d, i) => ({
    id: diskNode(i), path: d.path, format: d.format,
    sizeBytes: nodes.find((n) => n['node-name'] === diskNode(i))?.image['virtual-size'] ?? 0,
  }));
  await Promise.all(disks.map((d, i) => run('qemu-img', ['create', '-q', '-f', 'qcow2', join(paths.run, `fleece${i}.qcow2`), String(d.sizeBytes)])));
  const created: number[] = [];
  try {
    for (let i = 0; i < def.disks.length; i++) {
      const file = join(paths.run, `fleece${i}.qcow2`);
      await qmp.execute('blockdev-add', {
        driver: 'qcow2', 'node-name': fleeceNode(i), backing: diskNode(i),
        file: { driver: 'file', filename: file },
      }, { signal });
      created.push(i);
    }
  } catch (err) {
    await removeOverlays(qmp, paths, created);
    throw err;
  }
  return { generation: gen, disks };
}

/** The point's instant: one transaction across the VM's disks. On failure the overlays are gone. */
export async function commitPoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, prepared: PreparedPoint, signal?: AbortSignal): Promise<Date> {
  const gen = prepared.generation;
  const actions: TransactionAction[] = [];
  def.disks.forEach((_, i) => {
    actions.push({ type: 'block-dirty-bitmap-add', data: { node: diskNode(i), name: bitmapName(gen + 1), granularity: GRANULARITY, persistent: true } });
    actions.push({ type: 'block-dirty-bitmap-disable', data: { node: diskNode(i), name: bitmapName(gen) } });
    actions.push({ type: 'blockdev-backup', data: { 'job-id': fleeceJob(i), device: diskNode(i), target: fleeceNode(i), sync: 'none', 'auto-finalize': true, 'auto-dismiss': true } });
  });
  try {
    await qmp.execute('transaction', { actions }, { signal });
  } catch (err) {
    await abandonPoint(qmp, def, paths, prepared);
    throw err;
  }
  return new Date();
}

/** Exports a committed point over NBD and connects to it. */
export async function openPoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, prepared: PreparedPoint, takenAt: Date, signal?: AbortSignal): Promise<OpenPoint> {
  const gen = prepared.generation;
  try {
    await startNbdServer(qmp, paths, signal);
    for (let i = 0; i < def.disks.length; i++) {
      await qmp.execute('block-export-add', { type: 'nbd', id: exportName(i), 'node-name': fleeceNode(i), name: exportName(i), writable: false, bitmaps: [bitmapName(gen)] }, { signal });
    }
    // What a later process needs to adopt this point if this one dies holding it.
    await writeFile(join(paths.run, 'point.json'), JSON.stringify({ generation: gen, takenAt: takenAt.toISOString() }) + '\n');
    return { id: `${def.name}@${gen}`, generation: gen, takenAt, disks: await attach(paths, gen, prepared.disks, (await readMarker(paths))?.baseline === true) };
  } catch (err) {
    await releasePoint(qmp, def, paths, gen, false).catch(() => undefined);
    throw err;
  }
}

/** Undoes a prepared point that was not committed (its overlays are removed). */
export async function abandonPoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, _prepared: PreparedPoint): Promise<void> {
  await removeOverlays(qmp, paths, def.disks.map((_, i) => i));
}

async function removeOverlays(qmp: QmpClient, paths: VmPaths, disks: number[]): Promise<void> {
  for (const i of disks) {
    await qmp.execute('blockdev-del', { 'node-name': fleeceNode(i) }).catch(() => undefined);
    await rm(join(paths.run, `fleece${i}.qcow2`), { force: true });
  }
}

async function attach(paths: VmPaths, gen: number, disks: DiskInfo[], baseline: boolean): Promise<OpenPoint['disks']> {
  const out: OpenPoint['disks'] = [];
  try {
    for (let i = 0; i < disks.length; i++) {
      const context = `qemu:dirty-bitmap:${bitmapName(gen)}`;
      const client = await NbdClient.connect({ path: paths.nbd }, { exportName: exportName(i), metaContexts: ['base:allocation', context] });
      out.push({ info: disks[i]!, changes: { kind: 'all', reason: '' }, client });
      if (gen === 0 && !baseline) {
        out[i]!.changes = { kind: 'all', reason: 'first point since tracking started: there is no previous point to compare with' };
      } else {
        const extents = await client.blockStatusAll(context);
        out[i]!.changes = { kind: 'extents', extents: mergeExtents(extents.filter((e) => (e.flags & 1) !== 0)), granularity: GRANULARITY };
      }
    }
  } catch (err) {
    for (const d of out) await d.client.disconnect().catch(() => undefined);
    throw err;
  }
  return out;
}

/**
 * Re-attaches to the point a previous process took and never released — same generation, same
 * instant, same changes — when QEMU still holds its fleecing overlays and exports. Null when
 * there is none or it did not survive (QEMU restarted); the caller then takes a new point, and
 * takePoint folds the old point's changes into it.
 */
export async function adoptPoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal): Promise<OpenPoint | null> {
  const view = await inspect(qmp, def, paths, signal);
  if (view.status.state !== 'active' || view.stale === undefined) return null;
  const gen = view.stale;
  let meta: { generation: number; takenAt: string };
  try {
    meta = JSON.parse(await readFile(join(paths.run, 'point.json'), 'utf8')) as { generation: number; takenAt: string };
  } catch {
    return null;
  }
  if (meta.generation !== gen) return null;
  const jobs = new Set((await qmp.execute('query-block-jobs', undefined, { signal })).map((j) => j.device));
  const exports = new Set((await qmp.execute('query-block-exports', undefined, { signal })).map((e) => e.id));
  if (def.disks.some((_, i) => !jobs.has(fleeceJob(i)) || !exports.has(exportName(i)))) return null;
  const nodes = await qmp.execute('query-named-block-nodes', { flat: true }, { signal });
  const disks: DiskInfo[] = def.disks.map((d, i) => ({
    id: diskNode(i), path: d.path, format: d.format,
    sizeBytes: nodes.find((n) => n['node-name'] === diskNode(i))?.image['virtual-size'] ?? 0,
  }));
  return { id: `${def.name}@${gen}`, generation: gen, takenAt: new Date(meta.takenAt), disks: await attach(paths, gen, disks, (await readMarker(paths))?.baseline === true) };
}

/** Joins touching extents (flags dropped). */
export function mergeExtents(extents: { offset: number; length: number }[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const last = out[out.length - 1];
    if (last && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length });
  }
  return out;
}

async function startNbdServer(qmp: QmpClient, paths: VmPaths, signal?: AbortSignal): Promise<void> {
  try {
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: paths.nbd } } }, { signal });
  } catch (err) {
    if (!(err instanceof QmpError && /already running/i.test(err.message))) throw err;
  }
}

/**
 * Tears a point down: exports, fleecing jobs, overlay nodes and files, then either drops the
 * point's bitmap (consumed) or folds the newer bitmap back into it (not consumed).
 * Each step tolerates "already gone", so it also cleans up after a crash half-way.
 */
export async function releasePoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, gen: number, consumed: boolean, signal?: AbortSignal): Promise<void> {
  const exports = new Set((await qmp.execute('query-block-exports', undefined, { signal })).map((e) => e.id));
  const jobs = new Set((await qmp.execute('query-block-jobs', undefined, { signal })).map((j) => j.device));
  const nodes = new Set((await qmp.execute('query-named-block-nodes', { flat: true }, { signal })).map((n) => n['node-name']));
  for (let i = 0; i < def.disks.length; i++) {
    if (exports.has(exportName(i))) {
      const gone = qmp.waitEvent('BLOCK_EXPORT_DELETED', (d) => d['id'] === exportName(i), 10_000, signal);
      await qmp.execute('block-export-del', { id: exportName(i), mode: 'hard' }, { signal });
      await gone;
    }
    if (jobs.has(fleeceJob(i))) {
      const cancelled = qmp.waitEvent('BLOCK_JOB_CANCELLED', (d) => d['device'] === fleeceJob(i), 10_000, signal);
      await qmp.execute('block-job-cancel', { device: fleeceJob(i), force: true }, { signal });
      await cancelled;
    }
    if (nodes.has(fleeceNode(i))) await qmp.execute('blockdev-del', { 'node-name': fleeceNode(i) }, { signal });
    await rm(join(paths.run, `fleece${i}.qcow2`), { force: true });
  }
  await rm(join(paths.run, 'point.json'), { force: true });
  const disks = await readBitmaps(qmp, def, signal);
  const has = (gen2: number): boolean => disks.every((d) => d.bitmaps.has(gen2));
  if (!has(gen)) return;
  if (consumed) {
    await qmp.execute('transaction', { actions: def.disks.map((_, i) => ({ type: 'block-dirty-bitmap-remove', data: { node: diskNode(i), name: bitmapName(gen) } })) }, { signal });
    return;
  }
  if (has(gen + 1)) {
    // Both record from here on, so removing the newer one afterwards loses nothing.
    await qmp.execute('transaction', {
      actions: def.disks.flatMap((_, i) => [
        { type: 'block-dirty-bitmap-merge' as const, data: { node: diskNode(i), target: bitmapName(gen), bitmaps: [bitmapName(gen + 1)] } },
        { type: 'block-dirty-bitmap-enable' as const, data: { node: diskNode(i), name: bitmapName(gen) } },
      ]),
    }, { signal });
    await qmp.execute('transaction', { actions: def.disks.map((_, i) => ({ type: 'block-dirty-bitmap-remove', data: { node: diskNode(i), name: bitmapName(gen + 1) } })) }, { signal });
  } else {
    await qmp.execute('transaction', { actions: def.disks.map((_, i) => ({ type: 'block-dirty-bitmap-enable', data: { node: diskNode(i), name: bitmapName(gen) } })) }, { signal });
  }
}

/** Releases, as not consumed, a point this process does not hold (left by a crash or restart). */
export async function closeStalePoint(qmp: QmpClient, def: MachineDefinition, paths: VmPaths, signal?: AbortSignal): Promise<void> {
  const disks = await readBitmaps(qmp, def, signal);
  const stale = disks.flatMap((d) => [...d.bitmaps.entries()].filter(([, b]) => !b.recording && !b.inconsistent).map(([g]) => g));
  const gen = stale.sort((a, b) => b - a)[0];
  await releasePoint(qmp, def, paths, gen ?? -1, false, signal);
}
