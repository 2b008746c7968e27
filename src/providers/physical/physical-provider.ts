// The physical provider: Linux machines known by their block devices or raw disk images, read
// by the agent where it runs. There is no hypervisor to ask, so
//   - power is hook commands from the machine's definition (start, stop, status); without a
//     stop hook the machine cannot be shut down, and planned failover is refused;
//   - changes are found by digesting every disk (BLAKE3 per 64 KiB block) at each point and
//     comparing with the digests saved when the previous point was consumed; a disk with no
//     earlier digests (a first copy, a resync) is sent whole and its digests are learnt from the
//     reads that send it, so its data is read once, not twice;
//   - consistency is the freeze/thaw hooks around the digest pass (fsfreeze, a database's
//     backup mode); without them a point is only as consistent as a disk read while it changes.
// A point reads the live disks, so its content is not frozen in time: a block written after
// the digest pass is sent as it is now. Every block read is digested again, and one whose
// content differs from the point's digest is saved in the base with a digest no content has,
// so the next point sends it again whatever happens to it meanwhile (see docs/providers.md). All
// state is on disk (tracking-state.ts), so a restarted agent adopts the point it had open, with
// the same id, instant and changes (a learnt map is updated in its file as blocks are read, so
// what the killed agent learnt is kept).
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, open as fsOpen, readdir, rename, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { dataExtents } from '../../datapath/allocation.ts';
import { blockDigest, DEFAULT_DIGEST_BLOCK, DIGEST_BYTES, diffDigests, digestFile } from '../../datapath/digest.ts';
import type { DigestMap } from '../../datapath/digest.ts';
import { conflict, invalid, notFound, ReboundError } from '../../domain/errors.ts';
import { fsyncDir, fsyncPath } from '../../replica/durable.ts';
import type {
  DiskInfo,
  MachineDefinition,
  MachineInfo,
  MachineProvider,
  Point,
  PointDisk,
  ReleaseOptions,
  ReplicaSpec,
  TrackingStatus,
} from '../provider.ts';
import {
  checkDiskPaths,
  checkNotQcow2,
  listDefinitionNames,
  machinePaths,
  readDefinition,
  validateDefinition,
  writeDefinition,
} from './definition.ts';
import type { PhysicalDefinition, PhysicalHooks } from './definition.ts';
import { runHook, runHookChecked } from './hooks.ts';
import { TrackingFiles } from './tracking-state.ts';
import type { MapUpdater, OpenDisk, OpenState } from './tracking-state.ts';

const run = promisify(execFile);

/** Allocation granularity for a first copy: holes are skipped in units of this size. */
const ALLOCATION_BLOCK = 64 * 1024;
/** Changed extents are whole digest blocks; the last one is clipped to the disk's size. */
export const PHYSICAL_DIGEST_BLOCK = DEFAULT_DIGEST_BLOCK;

export interface PhysicalProviderOptions {
  /** The site's root directory: definitions under ROOT/.rebound/physical, replica disks under
   * ROOT/machines. */
  root: string;
  /** Where tracking state lives (STATE/NAME/…); default ROOT/.rebound/physical/NAME/state. */
  stateDir?: string;
  /** Deadline of start, status, freeze and thaw hooks (default 60 s; shutdown has its own). */
  hookTimeoutMs?: number;
  /** Digest block size (default 256 KiB). */
  blockSize?: number;
  /** Hooks given to replicas this provider creates when the spec brings none. */
  replicaHooks?: PhysicalHooks;
}

/** A replica spec as a physical recovery site takes it: the recovery machine's own hooks. */
export interface PhysicalReplicaSpec extends ReplicaSpec {
  hooks?: PhysicalHooks;
}

export class PhysicalProvider implements MachineProvider {
  readonly kind = 'physical';
  readonly root: string;
  readonly #opts: PhysicalProviderOptions;
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Per open point this process hands out: file handles (closed at release), its digest maps
   * and the blocks whose reads were checked against them. */
  readonly #handles = new Map<string, PointReads>();

  constructor(opts: PhysicalProviderOptions) {
    this.root = opts.root;
    this.#opts = opts;
  }

  get #hookTimeoutMs(): number {
    return this.#opts.hookTimeoutMs ?? 60_000;
  }

  get #blockSize(): number {
    return this.#opts.blockSize ?? PHYSICAL_DIGEST_BLOCK;
  }

  tracking(name: string): TrackingFiles {
    return new TrackingFiles(this.#opts.stateDir ? join(this.#opts.stateDir, name) : join(machinePaths(this.root, name).dir, 'state'));
  }

  async discover(signal?: AbortSignal): Promise<MachineInfo[]> {
    const out: MachineInfo[] = [];
    for (const name of await listDefinitionNames(this.root)) {
      signal?.throwIfAborted();
      try {
        out.push(await this.state(name, signal));
      } catch (err) {
        if (err instanceof ReboundError && err.code === 'machine-not-found') continue; // a directory without machine.json
        throw err;
      }
    }
    return out;
  }

  async define(def: MachineDefinition & { hooks?: PhysicalHooks }, signal?: AbortSignal): Promise<MachineInfo> {
    const valid = validateDefinition(this.root, def);
    return this.#locked(valid.name, async () => {
      signal?.throwIfAborted();
      const exists = await stat(machinePaths(this.root, valid.name).file).then(() => true, () => false);
      if (exists) throw conflict('machine-exists', `A physical machine named "${valid.name}" is already defined at this site.`, { hint: 'Pick another name, or undefine the old one first.' });
      await checkDiskPaths(this.root, valid);
      await checkNotQcow2(valid);
      // Asked before writing, so a status hook that fails refuses the definition instead of
      // leaving one behind a failed call.
      const info = await this.#info(valid, signal);
      await writeDefinition(this.root, valid);
      return info;
    });
  }

  /** Makes the definition on disk match `def` (the vault's machine row: its disks and hooks),
   * writing it only when absent or different, without asking the machine anything. Tracking
   * state is kept: a disk whose path changed gets a full copy at the next point. */
  async ensureDefined(def: PhysicalDefinition, signal?: AbortSignal): Promise<PhysicalDefinition> {
    const valid = validateDefinition(this.root, def);
    return this.#locked(valid.name, async () => {
      signal?.throwIfAborted();
      const current = await readDefinition(this.root, valid.name).catch((err: unknown) => {
        if (err instanceof ReboundError && err.code === 'machine-not-found') return undefined;
        throw err;
      });
      await checkDiskPaths(this.root, valid);
      if (current && JSON.stringify(current) === JSON.stringify(valid)) return current;
      await checkNotQcow2(valid);
      await writeDefinition(this.root, valid);
      return valid;
    });
  }

  /** Removes the definition and its tracking state; the machine and its disks are untouched. */
  async undefine(name: string, signal?: AbortSignal): Promise<void> {
    await this.#locked(name, async () => {
      await readDefinition(this.root, name);
      signal?.throwIfAborted();
      await this.tracking(name).removeAll();
      await rm(machinePaths(this.root, name).dir, { recursive: true, force: true });
    });
  }

  async state(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    return this.#info(await readDefinition(this.root, name), signal);
  }

  async #info(def: PhysicalDefinition, signal?: AbortSignal): Promise<MachineInfo> {
    return { name: def.name, definition: def, state: await this.#power(def, signal) };
  }

  /** The status hook's answer (exit 0: running, anything else: stopped), or 'running' without
   * one: a physical machine nobody can ask is assumed to be up. */
  async #power(def: PhysicalDefinition, signal?: AbortSignal): Promise<'running' | 'stopped'> {
    if (!def.hooks?.status) return 'running';
    const r = await runHook(def, 'status', { timeoutMs: this.#hookTimeoutMs, action: 'status', cwd: this.root, ...(signal ? { signal } : {}) });
    if (r.timedOut) {
      throw new ReboundError('unavailable', 'machine-hook-timeout', `The status hook of physical machine "${def.name}" did not answer within ${seconds(this.#hookTimeoutMs)} s.`, {
        hint: 'Check the machine is reachable and the status command returns promptly.',
      });
    }
    return r.exitCode === 0 ? 'running' : 'stopped';
  }

  async start(name: string, signal?: AbortSignal): Promise<MachineInfo> {
    const def = await readDefinition(this.root, name);
    if (!def.hooks?.start) {
      if ((await this.#power(def, signal)) === 'running') return this.#info(def, signal);
      throw conflict('machine-no-start-hook', `Physical machine "${name}" is stopped and has no start hook, so Rebound cannot start it.`, {
        hint: 'Power it on by hand, or add a start hook (for instance an IPMI or wake-on-LAN command) to its definition.',
      });
    }
    await runHookChecked(def, 'start', { timeoutMs: this.#hookTimeoutMs, action: 'start', cwd: this.root, ...(signal ? { signal } : {}) });
    return this.#info(def, signal);
  }

  async shutdown(name: string, opts: { timeoutMs: number }, signal?: AbortSignal): Promise<void> {
    const def = await readDefinition(this.root, name);
    if (!def.hooks?.stop) {
      throw conflict('machine-no-stop-hook', `Physical machine "${name}" has no stop hook, so Rebound cannot shut it down; planned failover needs one to stop the source before the last sync.`, {
        hint: 'Add a stop hook (e.g. `ssh root@HOST poweroff`) to its definition, or use an unplanned failover.',
        details: { machine: name },
      });
    }
    const deadline = Date.now() + opts.timeoutMs;
    const r = await runHook(def, 'stop', { timeoutMs: opts.timeoutMs, action: 'shutdown', cwd: this.root, ...(signal ? { signal } : {}) });
    if (!r.timedOut && r.exitCode !== 0) {
      throw new ReboundError('unavailable', 'machine-hook-failed', `The stop hook of physical machine "${name}" exited with status ${r.exitCode}.${r.output ? ` It said: ${r.output.slice(-500)}` : ''}`, {
        hint: 'Run the stop command by hand and fix what it reports.',
      });
    }
    // With a status hook, stopped means the status hook says so; without one, the stop hook's
    // success is all there is to go by.
    while (!r.timedOut && def.hooks.status) {
      if ((await this.#power(def, signal)) === 'stopped') return;
      if (Date.now() >= deadline) break;
      await new Promise((res) => setTimeout(res, Math.min(500, Math.max(0, deadline - Date.now()))));
    }
    if (!r.timedOut && !def.hooks.status) return;
    throw new ReboundError('unavailable', 'machine-shutdown-timeout', `Physical machine "${name}" did not shut down within ${Math.round(opts.timeoutMs / 1000)} s of its stop hook.`, {
      hint: 'The machine may be busy or its stop command ineffective; wait longer, or power it off.',
      retryable: true,
    });
  }

  /** Runs the stop hook with REBOUND_ACTION=poweroff (the hook decides how hard to stop). */
  async powerOff(name: string, signal?: AbortSignal): Promise<void> {
    const def = await readDefinition(this.root, name);
    if (!def.hooks?.stop) {
      throw conflict('machine-no-stop-hook', `Physical machine "${name}" has no stop hook, so Rebound cannot power it off.`, {
        hint: 'Power it off by hand, or add a stop hook to its definition.',
        details: { machine: name },
      });
    }
    await runHookChecked(def, 'stop', { timeoutMs: this.#hookTimeoutMs, action: 'poweroff', cwd: this.root, ...(signal ? { signal } : {}) });
  }

  async disks(name: string, signal?: AbortSignal): Promise<DiskInfo[]> {
    const def = await readDefinition(this.root, name);
    await checkDiskPaths(this.root, def);
    const out: DiskInfo[] = [];
    for (const [i, d] of def.disks.entries()) {
      signal?.throwIfAborted();
      out.push({ id: `disk${i}`, path: d.path, format: 'raw', sizeBytes: await sizeOf(d.path) });
    }
    return out;
  }

  // ---- tracking by digests ----

  async startTracking(name: string, signal?: AbortSignal): Promise<TrackingStatus> {
    await readDefinition(this.root, name);
    return this.#locked(name, async () => {
      signal?.throwIfAborted();
      const files = this.tracking(name);
      if (!(await files.readMarker())) await files.writeMarker({ startedAt: new Date().toISOString(), blockSize: this.#blockSize });
      return this.#status(name);
    });
  }

  async trackingStatus(name: string, signal?: AbortSignal): Promise<TrackingStatus> {
    await readDefinition(this.root, name);
    signal?.throwIfAborted();
    return this.#status(name);
  }

  async resetTracking(name: string, signal?: AbortSignal): Promise<TrackingStatus> {
    await readDefinition(this.root, name);
    return this.#locked(name, async () => {
      signal?.throwIfAborted();
      const files = this.tracking(name);
      const open = await files.readOpen();
      if (open) await this.#closeHandles(open.id);
      await files.removeAll();
      await files.writeMarker({ startedAt: new Date().toISOString(), blockSize: this.#blockSize });
      return this.#status(name);
    });
  }

  /** off: never started; lost: the saved base names a digest map that is gone or damaged, so
   * the next point's changes cannot be known (never silently replaced by a full copy). */
  async #status(name: string): Promise<TrackingStatus> {
    const files = this.tracking(name);
    if (!(await files.readMarker())) return { state: 'off', problems: [] };
    const base = await files.readBase();
    const problems: TrackingStatus['problems'] = [];
    for (const [i, d] of (base?.disks ?? []).entries()) {
      const map = await files.readMap(d.map);
      if (typeof map === 'string') problems.push({ disk: `disk${i}`, reason: map });
    }
    return problems.length > 0 ? { state: 'lost', problems } : { state: 'active', problems: [] };
  }

  async takePoint(name: string, signal?: AbortSignal): Promise<Point> {
    const def = await readDefinition(this.root, name);
    const open = await this.#locked(name, async () => {
      const files = this.tracking(name);
      const marker = await files.readMarker();
      if (!marker) throw conflict('cbt-not-started', `Digest tracking is not started for physical machine "${name}".`, { hint: 'Start tracking first (startTracking).' });
      const previous = await files.readOpen();
      if (previous) {
        if (this.#handles.has(previous.id)) throw conflict('point-open', `Physical machine "${name}" already has an open point; release it before taking the next.`);
        // Left by a process that is gone: its changes were never consumed, and the base is
        // still the one before it, so dropping it folds them into this point.
        await files.removeOpen();
        await files.removeDirty(previous.id);
      }
      const status = await this.#status(name);
      if (status.state === 'lost') throw lostError(name, status);
      const base = await files.readBase();
      await checkDiskPaths(this.root, def);

      const id = randomUUID();
      const disks: OpenDisk[] = [];
      const takenAt = new Date();
      // A disk with no earlier digests to compare with (the first point since tracking started,
      // a disk now at another path or digested by another block size) sends all its data anyway:
      // its digests are learnt from the reads that send it (#check), not from a pass of their
      // own, which read the whole disk once more before its first byte went out.
      const earlier: (DigestMap | string)[] = [];
      for (const [i, d] of def.disks.entries()) earlier.push(await this.#earlierDigests(files, base?.disks[i], d.path, marker.blockSize));
      const maps: DigestMap[] = [];
      // Only a digest pass is frozen: nothing to freeze around when every disk is learnt.
      if (earlier.some((e) => typeof e !== 'string')) {
        await this.#frozen(def, signal, async () => {
          for (const [i, d] of def.disks.entries()) {
            signal?.throwIfAborted();
            if (typeof earlier[i] !== 'string') maps[i] = await digestFile(d.path, { blockSize: marker.blockSize, ...(signal ? { signal } : {}) });
          }
        });
      }
      for (const [i, d] of def.disks.entries()) {
        const old = earlier[i]!;
        const map = typeof old === 'string' ? await unknownMap(d.path, marker.blockSize) : maps[i]!;
        const info: DiskInfo = { id: `disk${i}`, path: d.path, format: 'raw', sizeBytes: map.size };
        const mapName = `${id}.${i}.dg`;
        await files.writeMap(mapName, map);
        disks.push(typeof old === 'string'
          ? { disk: info, changes: { kind: 'all', reason: old }, map: mapName, learn: true }
          : { disk: info, changes: { kind: 'extents', extents: diffDigests(old, map), granularity: map.blockSize }, map: mapName });
      }
      await fsyncDir(files.mapsDir);
      const state: OpenState = { id, machine: name, takenAt: takenAt.toISOString(), disks };
      await files.writeOpen(state);
      this.#handles.set(id, newReads());
      return state;
    });
    // The freeze hook (when there is one) ran and succeeded around the digest pass; a disk read
    // live as it is sent (learnt) cannot be frozen, so such a point is crash-consistent.
    const live = open.disks.some((d) => d.learn);
    if (def.hooks?.freeze && live) return { ...this.#point(open), consistency: 'crash', freezeError: 'a disk with no earlier digests is read as it is sent, so this point cannot be frozen' };
    return { ...this.#point(open), consistency: def.hooks?.freeze ? 'app' : 'crash' };
  }

  /** The base's digests of a disk to compare with, or why there are none to compare with. */
  async #earlierDigests(files: TrackingFiles, base: { path: string; map: string } | undefined, path: string, blockSize: number): Promise<DigestMap | string> {
    if (!base) return 'first point since tracking started: no earlier digests to compare with';
    if (base.path !== path) return `the disk is now ${path}, not ${base.path}`;
    const old = await files.readMap(base.map);
    if (typeof old === 'string') throw new ReboundError('internal', 'digest-map-vanished', `The digest map of ${path} disappeared while a point was taken: ${old}.`);
    if (old.blockSize !== blockSize) return `the digest block size changed from ${old.blockSize} to ${blockSize}`;
    return old;
  }

  /** Runs `work` between the freeze and thaw hooks (either may be absent). A failed freeze
   * takes no point; thaw always runs after a freeze was attempted, and its failure fails the
   * point, since applications left frozen need someone to know now. */
  async #frozen(def: PhysicalDefinition, signal: AbortSignal | undefined, work: () => Promise<void>): Promise<void> {
    // Thaw gets no signal: an aborted point must still thaw what it froze.
    const base = { timeoutMs: this.#hookTimeoutMs, cwd: this.root };
    const thaw = async (): Promise<void> => {
      if (def.hooks?.thaw) await runHookChecked(def, 'thaw', { ...base, action: 'thaw' }).catch((err: unknown) => {
        throw new ReboundError('unavailable', 'machine-thaw-failed', `Physical machine "${def.name}" may still be frozen: ${(err as Error).message}`, {
          hint: 'Thaw it by hand now (run its thaw command), then find why the hook failed.',
          cause: err,
        });
      });
    };
    if (def.hooks?.freeze) {
      try {
        await runHookChecked(def, 'freeze', { ...base, action: 'freeze', ...(signal ? { signal } : {}) });
      } catch (err) {
        await thaw().catch(() => undefined);
        throw new ReboundError('unavailable', 'machine-freeze-failed', `No point was taken of physical machine "${def.name}": its freeze hook failed (${(err as Error).message})`, {
          hint: 'Fix the freeze command, or remove it to take crash-consistent points.',
          cause: err,
          retryable: true,
        });
      }
    }
    let failed: unknown;
    try {
      await work();
    } catch (err) {
      failed = err;
    }
    await thaw();
    if (failed !== undefined) throw failed;
  }

  async adoptPoint(name: string, signal?: AbortSignal): Promise<Point | null> {
    await readDefinition(this.root, name);
    return this.#locked(name, async () => {
      signal?.throwIfAborted();
      const open = await this.tracking(name).readOpen();
      if (!open) return null;
      for (const d of open.disks) {
        if (typeof (await this.tracking(name).readMap(d.map)) === 'string') return null;
      }
      if (!this.#handles.has(open.id)) this.#handles.set(open.id, newReads());
      return this.#point(open);
    });
  }

  async releasePoint(point: Point, opts: ReleaseOptions, signal?: AbortSignal): Promise<void> {
    await this.#locked(point.machine, async () => {
      signal?.throwIfAborted();
      const files = this.tracking(point.machine);
      const open = await files.readOpen();
      await this.#closeHandles(point.id);
      if (!open || open.id !== point.id) {
        // Released twice (a restart between saving the base and removing open.json): nothing left to do.
        return;
      }
      if (opts.consumed) {
        // Blocks sent with other content than digested get a digest no content has, so the
        // next point sends them again (a block changed after the digest and changed back
        // before the next one would otherwise be missed).
        // A learnt map was updated in place as its blocks were read (by this process, or by one
        // killed before it): made durable before the base names it.
        for (const d of open.disks) if (d.learn) await fsyncPath(files.mapFile(d.map));
        const dirty = await files.readDirty(open.id);
        for (const [i, d] of open.disks.entries()) {
          const blocks = dirty.filter((x) => x.disk === i);
          if (blocks.length === 0) continue;
          const map = await files.readMap(d.map);
          if (typeof map === 'string') throw lostError(point.machine, { state: 'lost', problems: [{ disk: d.disk.id, reason: map }] });
          for (const { block } of blocks) map.digests.fill(0xff, block * DIGEST_BYTES, (block + 1) * DIGEST_BYTES);
          await files.writeMap(d.map, map);
        }
        await files.writeBase({ pointId: open.id, takenAt: open.takenAt, disks: open.disks.map((d) => ({ path: d.disk.path, sizeBytes: d.disk.sizeBytes, map: d.map })) });
      }
      await files.removeOpen();
      await files.removeDirty(open.id);
      await files.pruneMaps();
    });
  }

  #point(open: OpenState): Point {
    const disks: PointDisk[] = open.disks.map((d, i) => ({
      disk: d.disk,
      changes: d.changes,
      read: (offset, length, signal) => this.#read(open, i, offset, length, signal),
      allocated: async (signal) => {
        signal?.throwIfAborted();
        return dataExtents(d.disk.path, ALLOCATION_BLOCK, d.disk.sizeBytes);
      },
    }));
    return { id: open.id, machine: open.machine, takenAt: new Date(open.takenAt), disks };
  }

  async #read(open: OpenState, disk: number, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    signal?.throwIfAborted();
    const reads = this.#handles.get(open.id);
    if (!reads) throw conflict('point-released', `Point ${open.id} was released; take or adopt a point to read the disk again.`);
    const d = open.disks[disk]!;
    let h = reads.files.get(disk);
    if (!h) {
      h = fsOpen(d.disk.path, 'r');
      reads.files.set(disk, h);
    }
    const fh = await h;
    const buf = await readAt(fh, offset, length);
    await this.#check(open, reads, disk, fh, offset, buf);
    return buf;
  }

  /** The point's content is the live disk, so what is sent may be newer than what was
   * digested. Each block read is digested again; one that differs is recorded as dirty and
   * gets a digest no content has in the saved base (releasePoint), so the next point resends
   * it. A block read only in part is read whole once to check it. */
  async #check(open: OpenState, reads: PointReads, disk: number, fh: FileHandle, offset: number, buf: Buffer): Promise<void> {
    const d = open.disks[disk]!;
    const lost = (reason: string): ReboundError => lostError(open.machine, { state: 'lost', problems: [{ disk: d.disk.id, reason }] });
    if (d.learn) {
      let upP = reads.learnt.get(disk);
      if (!upP) {
        upP = this.tracking(open.machine).openMapForUpdate(d.map);
        reads.learnt.set(disk, upP);
      }
      const up = await upP;
      if (typeof up === 'string') throw lost(up);
      const { firstBlock, digests } = learn(up, offset, buf);
      await up.write(firstBlock, digests);
      return;
    }
    let mapP = reads.maps.get(disk);
    if (!mapP) {
      mapP = this.tracking(open.machine).readMap(d.map);
      reads.maps.set(disk, mapP);
    }
    const map = await mapP;
    if (typeof map === 'string') throw lost(map);
    let verified = reads.verified.get(disk);
    if (!verified) reads.verified.set(disk, (verified = new Set()));
    const bs = map.blockSize;
    const end = Math.min(offset + buf.length, map.size);
    for (let b = Math.floor(offset / bs); b * bs < end; b++) {
      if (verified.has(b)) continue;
      const start = b * bs;
      const blockLen = Math.min(bs, map.size - start);
      const whole = start >= offset && start + blockLen <= offset + buf.length ? buf.subarray(start - offset, start - offset + blockLen) : await readAt(fh, start, blockLen);
      verified.add(b);
      if (blockDigest(whole).compare(map.digests, b * DIGEST_BYTES, (b + 1) * DIGEST_BYTES) !== 0) {
        await this.tracking(open.machine).addDirty(open.id, disk, b);
      }
    }
  }

  async #closeHandles(pointId: string): Promise<void> {
    const reads = this.#handles.get(pointId);
    this.#handles.delete(pointId);
    for (const h of reads?.files.values() ?? []) await (await h.catch(() => undefined))?.close();
    for (const u of reads?.learnt.values() ?? []) {
      const up = await u.catch(() => undefined);
      if (up && typeof up !== 'string') await up.close();
    }
  }

  // ---- recovery side ----

  /** Converts the replica's disks (qcow2 views of the replica store) into standard raw images
   * under ROOT/machines/NAME/, writes a definition naming them, and runs the start hook if one
   * is set. */
  async createReplica(spec: PhysicalReplicaSpec, signal?: AbortSignal): Promise<MachineInfo> {
    if (spec.disks.length === 0) throw invalid('replica-no-disks', `Replica "${spec.name}" has no disks to create it from.`);
    const target = join(this.root, 'machines', spec.name);
    const hooks = spec.hooks ?? this.#opts.replicaHooks;
    const def = validateDefinition(this.root, {
      ...spec.template,
      name: spec.name,
      disks: spec.disks.map((_, i) => ({ path: join(target, `disk${i}.raw`), format: 'raw' })),
      ...(hooks ? { hooks } : {}),
    });
    return this.#locked(def.name, async () => {
      if (await exists(machinePaths(this.root, def.name).file)) {
        throw conflict('machine-exists', `A physical machine named "${def.name}" is already defined at this site.`, { hint: 'Undefine it (its disk images stay) or pick another name.' });
      }
      if ((await readdir(target).catch(() => [])).length > 0) {
        throw conflict('replica-disks-exist', `${target} already holds files; a replica's disks are not written over existing ones.`, { hint: 'Move or remove them first.' });
      }
      await mkdir(target, { recursive: true });
      try {
        for (const [i, src] of spec.disks.entries()) {
          signal?.throwIfAborted();
          if (!(await exists(src.path))) throw notFound('replica-source-missing', `Disk ${i} of replica "${spec.name}" (${src.path}) does not exist.`, { hint: 'Check the recovery point still exists at the replica store.' });
          const dest = def.disks[i]!.path;
          const tmp = `${dest}.partial`;
          try {
            await run('qemu-img', ['convert', '-f', src.format, '-O', 'raw', src.path, tmp], { maxBuffer: 16 * 1024 * 1024, ...(signal ? { signal } : {}) });
          } catch (err) {
            const stderr = (err as { stderr?: string }).stderr?.trim();
            throw new ReboundError('unavailable', 'replica-convert-failed', `Cannot convert disk ${i} of replica "${spec.name}" (${src.path}) into a raw image: ${stderr || (err as Error).message}.`, {
              hint: 'Check free space under the site root and that the image is not damaged (qemu-img check).',
              cause: err,
            });
          }
          await fsyncPath(tmp);
          await rename(tmp, dest);
        }
        await fsyncDir(target);
      } catch (err) {
        await rm(target, { recursive: true, force: true });
        throw err;
      }
      await writeDefinition(this.root, def);
      if (def.hooks?.start) {
        try {
          await runHookChecked(def, 'start', { timeoutMs: this.#hookTimeoutMs, action: 'start', cwd: this.root, ...(signal ? { signal } : {}) });
        } catch (err) {
          const e = err as ReboundError;
          throw new ReboundError('unavailable', 'replica-start-failed', `Replica "${def.name}" has its disks at ${target}, but its start hook failed: ${e.message}`, {
            hint: 'Fix the start hook and start the machine again (its disks and definition are kept).',
            cause: err,
          });
        }
      }
      return this.#info(def, signal);
    });
  }

  /** Serialises calls on one machine within this process (tracking files are read-modify-write). */
  async #locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(name) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.#locks.set(name, settled);
    try {
      return await next;
    } finally {
      if (this.#locks.get(name) === settled) this.#locks.delete(name);
    }
  }
}

export function lostError(name: string, status: TrackingStatus): ReboundError {
  const list = status.problems.map((p) => `${p.disk}: ${p.reason}`).join('; ');
  return new ReboundError('conflict', 'cbt-lost', `Digest tracking of physical machine "${name}" cannot say what changed since the last point (${list}).`, {
    hint: 'Resynchronise the replica by digest comparison (not a blind full copy), then reset tracking so the next point starts afresh.',
    details: { machine: name, problems: status.problems, fallback: 'digest-resync' },
  });
}

interface PointReads {
  files: Map<number, Promise<FileHandle>>;
  maps: Map<number, Promise<DigestMap | string>>;
  verified: Map<number, Set<number>>;
  /** Learnt maps, updated in place as their blocks are read (or why they cannot be). */
  learnt: Map<number, Promise<MapUpdater | string>>;
}

const newReads = (): PointReads => ({ files: new Map(), maps: new Map(), verified: new Map(), learnt: new Map() });

/** A map for a disk whose digests are to be learnt: "no content has" on its data, zeros (the
 * digest of a zero block) on its holes. A block never read stays "no content has", so it is sent
 * again by the next point unless it is a hole still. */
async function unknownMap(path: string, blockSize: number): Promise<DigestMap> {
  const size = await sizeOf(path);
  const digests = Buffer.alloc(Math.ceil(size / blockSize) * DIGEST_BYTES);
  for (const e of await dataExtents(path, blockSize, size)) {
    digests.fill(0xff, Math.floor(e.offset / blockSize) * DIGEST_BYTES, Math.ceil((e.offset + e.length) / blockSize) * DIGEST_BYTES);
  }
  return { blockSize, size, digests };
}

/** The digests of the blocks a read covers (what is sent of them), to write into a learnt map: a
 * block read only in part is "no content has" until it is read whole. */
function learn(map: { blockSize: number; size: number }, offset: number, buf: Buffer): { firstBlock: number; digests: Buffer } {
  const bs = map.blockSize;
  const end = Math.min(offset + buf.length, map.size);
  const first = Math.floor(offset / bs);
  const count = Math.max(0, Math.ceil(end / bs) - first);
  const digests = Buffer.alloc(count * DIGEST_BYTES, 0xff);
  for (let k = 0; k < count; k++) {
    const start = (first + k) * bs;
    const len = Math.min(bs, map.size - start);
    if (start >= offset && start + len <= offset + buf.length) blockDigest(buf.subarray(start - offset, start - offset + len)).copy(digests, k * DIGEST_BYTES);
  }
  return { firstBlock: first, digests };
}

async function readAt(fh: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
    if (bytesRead === 0) {
      buf.fill(0, got); // past the end of a disk that shrank: the rest reads as zeros
      break;
    }
    got += bytesRead;
  }
  return buf;
}

const seconds = (ms: number): string => (ms < 10_000 ? (ms / 1000).toFixed(1) : String(Math.round(ms / 1000)));

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** Size of an image file, or of a block device (whose stat size is 0). */
export async function sizeOf(path: string): Promise<number> {
  const st = await stat(path);
  if (!st.isBlockDevice()) return st.size;
  const { stdout } = await run('blockdev', ['--getsize64', path]);
  return Number(stdout.trim());
}
