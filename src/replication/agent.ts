// The agent: at the source site, replicates each machine it is assigned. A cycle takes one
// crash-consistent point across all the machine's disks (QEMU: dirty bitmaps + fleecing;
// physical: block digests), plans the changed ranges, and sends each disk's ranges to the
// process server, which acknowledges once they are in its cache. Only when every disk's
// transfer is acknowledged is the point released as consumed at the source; until then the
// changes stay tracked, so nothing acknowledged is sent twice and nothing unacknowledged is lost.
// The open point and its plans are saved in the agent's state directory, so a killed agent
// adopts the same point on restart and resumes each transfer after its last acknowledgement.
// The first point of an item is the initial replication (allocated data only, progress in %);
// writes made meanwhile are in the next point's changes.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { sendTransfer } from '../datapath/frame-stream.ts';
import type { PlannedExtent } from '../datapath/frame-stream.ts';
import { ReboundError } from '../domain/errors.ts';
import { diffDigests, digestReader } from '../datapath/digest.ts';
import type { DigestMap } from '../datapath/digest.ts';
import type { MachineProvider, Point, PointDisk } from '../providers/provider.ts';
import { groupKey, groupPointKind } from './group.ts';
import { writeFileAtomic } from '../replica/durable.ts';
import { DEFAULT_REPLICA_BLOCK } from '../replica/replica-disk.ts';
import { newId } from '../store/ids.ts';
import type { AgentLink, Assignment, GroupPointRecord } from './link.ts';
import { planDisk } from './plan.ts';
import type { DiskPlan } from './plan.ts';
import { openTransfer } from './wire.ts';
import type { TlsMaterial, TransferHeader } from './wire.ts';

export type ProviderFor = (a: Assignment) => MachineProvider;

export interface AgentOptions {
  stateDir: string;
  link: AgentLink;
  providerFor: ProviderFor;
  /** Runs before each cycle (e.g. makes a physical machine's definition match the vault). */
  prepare?(p: MachineProvider, a: Assignment): Promise<void>;
  transportKey: Buffer;
  material: TlsMaterial | null;
  logger: Logger;
  /** Digests of the replica's newest content at the target (for a resync by digests); null when
   * there is no replica there. `holding`: the replica must hold this point (the last one the
   * agent sent) first, else what is still on its way could be missed; null when it does not in
   * time. Without it a digests resync falls back to a full copy. */
  targetDigests?(a: Assignment, diskId: string, blockSize: number, signal: AbortSignal, holding?: string): Promise<DigestMap | null>;
  /** How often assignments are re-read. */
  pollMs?: number;
  /** Frames in flight; default: sized for each transfer (windowFor). */
  window?: number;
}

interface OpenState {
  pointId: string;
  /** Point kind as recorded in the vault: app-consistent only when the freeze succeeded. */
  kind?: 'crash' | 'app';
  pointSeq: number;
  providerPointId: string;
  takenAt: number;
  initial: boolean;
  /** How a first copy or resync chose its ranges (reported with its progress). */
  method?: 'full' | 'digests' | 'cbt';
  plans: DiskPlan[];
  disks: { id: string; sizeBytes: number }[];
  /** The replication group's point this member point belongs to. */
  group?: { name: string; groupPointId: string; seq: number };
}

/** A point taken for #cycle by a replication group's barrier (not by #cycle itself). */
interface GivenPoint {
  point: Point;
  pointId: string;
  group: { name: string; groupPointId: string; seq: number };
}

/** A replication group's own state (state dir groups/KEY.json): its last barrier. */
interface GroupState {
  seq: number;
  takenAt: number;
  appAt?: number;
  groupPointId: string;
}

interface GroupWorker {
  stop: AbortController;
  done: Promise<void>;
  members: Assignment[];
}

interface LastState {
  pointSeq: number;
  takenAt: number;
  /** When the last app-consistent point was taken (its policy frequency counts from there). */
  appAt?: number;
  /** The point sent then: the next point's id must sort after it (pointIdAfter). */
  pointId?: string;
  /** A first copy finished for this item. */
  seeded: boolean;
}

/** How long an assignment read before the vault took note of a finished resync may still ask
 * for it (an assignment poll in flight, a slow vault). */
const RESYNC_ECHO_MS = 30_000;

export class Agent {
  readonly #o: AgentOptions;
  readonly #workers = new Map<string, { stop: AbortController; done: Promise<void>; assignment: Assignment }>();
  /** Items whose resync (by reason) this agent finished, and when, until an assignment shows it
   * cleared. Past RESYNC_ECHO_MS an assignment still asking is a new request and is done again. */
  readonly #resynced = new Map<string, { reason: string; at: number }>();
  /** Replication groups' workers by groupKey; an item of a group has no worker of its own. */
  readonly #groups = new Map<string, GroupWorker>();
  /** Items a syncNow replicates right now: no group worker takes them meanwhile. */
  readonly #syncing = new Set<string>();
  /** Groups already told that their provider has no barrier. */
  readonly #noBarrier = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #polling: Promise<void> | undefined;
  /** wake() came while a poll ran: the next poll follows that one at once. */
  #again = false;
  stats = { points: 0, bytesSent: 0, bytesSkipped: 0 };

  constructor(o: AgentOptions) { this.#o = o; }

  readonly #tick = (): void => {
    if (this.#stopped) return;
    this.#timer = undefined;
    this.#again = false;
    this.#polling = this.#poll().catch((err: unknown) => this.#o.logger.warn({ err }, 'agent: cannot read assignments')).finally(() => {
      if (!this.#stopped) this.#timer = setTimeout(this.#tick, this.#again ? 0 : this.#o.pollMs ?? 1000);
    });
  };

  start(): void {
    this.#tick();
  }

  /** Reads the assignments now instead of at the next poll: the embedded vault calls it when
   * replication of an item starts, so a first copy does not wait up to a poll interval (1 s) to
   * begin. A poll already running is followed by another at once (it may have read the
   * assignments just before the change). */
  wake(): void {
    if (this.#stopped || this.#polling === undefined) return; // not started: start() polls
    if (this.#timer === undefined) {
      this.#again = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#polling;
    for (const w of [...this.#workers.values(), ...this.#groups.values()]) w.stop.abort();
    await Promise.all([...this.#workers.values(), ...this.#groups.values()].map((w) => w.done));
    this.#workers.clear();
    this.#groups.clear();
  }

  /**
   * Takes and sends one point of the item now, outside its schedule (a planned failover's last
   * changes after the source shut down, or an unplanned one's best effort). The item's worker is
   * stopped first, so its cycle in flight (if any) is adopted and finished, never duplicated. A
   * stopped QEMU machine is opened paused for the point and closed again. Resolves when every
   * disk's transfer is acknowledged by the process server.
   */
  async syncNow(a: Assignment, signal: AbortSignal): Promise<{ pointId: string; pointSeq: number; takenAt: number }> {
    // Marked first: no poll makes a worker for the item (its own or its group's) meanwhile.
    this.#syncing.add(a.itemId);
    try {
      const w = this.#workers.get(a.itemId);
      if (w) {
        w.stop.abort();
        await w.done;
        this.#workers.delete(a.itemId);
      }
      await this.#stopGroupOf(a.itemId);
      return await this.#syncNow(a, signal);
    } finally {
      this.#syncing.delete(a.itemId);
    }
  }

  async #syncNow(a: Assignment, signal: AbortSignal): Promise<{ pointId: string; pointSeq: number; takenAt: number }> {
    const p = this.#o.providerFor(a);
    await this.#o.prepare?.(p, a);
    let opened = false;
    if (p.startPaused) {
      const st = await p.state(a.machine, signal);
      if (st.state === 'stopped') {
        await p.startPaused(a.machine, signal);
        opened = true;
      }
    }
    try {
      const since = Date.now();
      const first = await this.#cycle(a, signal, true);
      // A point the worker had open was adopted and finished first; it was taken before this
      // call (before the source stopped, in a planned failover), so the last point is a new one.
      return first.takenAt < since ? await this.#cycle(a, signal, true) : first;
    } finally {
      if (opened) await p.powerOff(a.machine).catch((err: unknown) => this.#o.logger.warn({ err, item: a.itemId }, 'agent: closing the paused machine failed'));
    }
  }

  async #poll(): Promise<void> {
    const all = await this.#o.link.assignments();
    for (const id of [...this.#resynced.keys()]) {
      const a = all.find((x) => x.itemId === id);
      if (!a || a.resync === null) this.#resynced.delete(id); // the vault has taken note
    }
    const list = all.filter((a) => a.group === null || this.#syncing.has(a.itemId));
    await this.#pollGroups(all.filter((a) => a.group !== null && !this.#syncing.has(a.itemId)));
    const seen = new Set<string>();
    for (const a of list) {
      if (this.#syncing.has(a.itemId)) continue;
      seen.add(a.itemId);
      const w = this.#workers.get(a.itemId);
      if (w) {
        w.assignment = a;
        continue;
      }
      const stop = new AbortController();
      const entry = { stop, assignment: a, done: Promise.resolve() };
      entry.done = this.#run(entry, stop.signal).catch((err: unknown) => this.#o.logger.error({ err, item: a.itemId }, 'agent: item worker stopped'));
      this.#workers.set(a.itemId, entry);
    }
    for (const [id, w] of this.#workers) {
      if (!seen.has(id)) {
        w.stop.abort();
        await w.done;
        this.#workers.delete(id);
      }
    }
  }

  #dir(itemId: string): string { return join(this.#o.stateDir, 'items', itemId); }

  async #read<T>(itemId: string, file: string): Promise<T | null> {
    try {
      return JSON.parse(await readFile(join(this.#dir(itemId), file), 'utf8')) as T;
    } catch {
      return null;
    }
  }

  async #write(itemId: string, file: string, v: unknown): Promise<void> {
    await mkdir(this.#dir(itemId), { recursive: true });
    await writeFileAtomic(join(this.#dir(itemId), file), JSON.stringify(v));
  }

  async #run(w: { assignment: Assignment }, signal: AbortSignal): Promise<void> {
    let backoff = 1000;
    while (!signal.aborted) {
      try {
        await this.#cycle(w.assignment, signal);
        backoff = 1000;
      } catch (err) {
        if (signal.aborted) return;
        const e = err as ReboundError;
        this.#o.logger.warn({ item: w.assignment.itemId, err: { code: e.code, message: e.message } }, 'agent: replication cycle failed; retrying');
        await sleep(backoff, signal).catch(() => undefined); // aborted: the loop ends
        backoff = Math.min(backoff * 2, 15_000);
      }
    }
  }

  /** One cycle: adopt or take a point, send it, release it. Waits for the next due time first. */
  async #cycle(assigned: Assignment, signal: AbortSignal, now = false, given?: GivenPoint): Promise<{ pointId: string; pointSeq: number; takenAt: number }> {
    // A resync this agent has done already, in an assignment read before the vault cleared it:
    // doing it again would send the same differences (or the whole disk) twice.
    const finished = this.#resynced.get(assigned.itemId);
    const echo = assigned.resync !== null && finished?.reason === assigned.resync && Date.now() - finished.at < RESYNC_ECHO_MS;
    const a = echo ? { ...assigned, resync: null, resyncMode: null } : assigned;
    const p = this.#o.providerFor(a);
    await this.#o.prepare?.(p, a);
    const last = await this.#read<LastState>(a.itemId, 'last.json');
    let open = await this.#read<OpenState>(a.itemId, 'open.json');
    if (given && open) {
      await p.releasePoint?.(given.point, { consumed: false }, signal).catch(() => undefined);
      throw new ReboundError('conflict', 'point-open', `${a.machine} still has point ${open.pointId} open; it is finished before the group's next point.`, { retryable: true });
    }
    let point: Point | null = null;
    let floorSeq = last?.pointSeq ?? 0;
    /** An open point that did not survive: the next point's id follows it, and its ranges are
     * sent again with the next point's. */
    let abandoned: OpenState | null = null;
    if (open) {
      floorSeq = Math.max(floorSeq, open.pointSeq);
      point = (await p.adoptPoint?.(a.machine, signal)) ?? null;
      if (point && (point.id !== open.providerPointId || point.takenAt.getTime() !== open.takenAt)) {
        await p.releasePoint?.(point, { consumed: false }, signal);
        point = null;
      }
      if (!point) {
        // The point did not survive (the VM restarted, …): its changes were folded back into
        // tracking, so a new point carries them. The process server drops the abandoned transfers.
        // Some of its transfers may have reached the replica already (complete at the process
        // server, which forwards them), laying blocks as they were when read; the new point
        // sends those ranges again, so a block that changed back since is not left that way.
        abandoned = open;
        await rm(join(this.#dir(a.itemId), 'open.json'), { force: true });
        open = null;
      }
    }
    if (!open) {
      const due = (last?.takenAt ?? 0) + a.policy.frequencySeconds * 1000;
      // At most one period: after the wall clock went back, `due` lies far in the future.
      if (last?.seeded && !a.resync && !now) await sleep(Math.min(due - Date.now(), a.policy.frequencySeconds * 1000), signal);
      if (!p.takePoint) throw new ReboundError('conflict', 'provider-no-points', `The ${p.kind} provider cannot take points of ${a.machine}.`);
      const status = await p.trackingStatus?.(a.machine, signal);
      const fullCopy = !last?.seeded || a.resync !== null || status?.state !== 'active';
      // Reverse replication after a failover that lost nothing: the replica's base is what the
      // machine started from, and its tracking has recorded every write since, so the tracked
      // changes are the differences (no digest pass over whole disks). Tracking that is no longer
      // intact falls back to digests.
      const byTracking = a.resync !== null && a.resyncMode === 'cbt' && status?.state === 'active';
      if (a.resyncMode === 'cbt' && a.resync !== null && !byTracking) {
        this.#o.logger.warn({ item: a.itemId, tracking: status?.state ?? 'none' }, 'agent: change tracking since the failover is not intact; resync by digests');
      }
      if (status?.state === 'lost' || (a.resync !== null && last?.seeded && !byTracking)) {
        await p.resetTracking?.(a.machine, signal);
      } else if (status?.state !== 'active') {
        await p.startTracking?.(a.machine, signal);
      }
      const appEvery = a.policy.appConsistentSeconds * 1000;
      const appDue = appEvery > 0 && (last?.seeded ?? false) && Date.now() - (last?.appAt ?? 0) >= appEvery;
      point = given?.point ?? await p.takePoint(a.machine, signal, appDue ? { appConsistent: true } : {});
      if (!given && appDue && point.consistency !== 'app') {
        await this.#o.link.event(a.itemId, 'app-consistent-failed', `${a.machine}: an app-consistent point was due but the freeze failed (${point.freezeError ?? 'no reason given'}); this point is crash-consistent.`).catch(() => undefined);
      }
      try {
        const plans: DiskPlan[] = [];
        let method: 'full' | 'digests' | 'cbt' = 'full';
        for (const d of point.disks) {
          let ranges;
          // Change tracking since the failover, when it can say what changed (a baseline).
          const tracked = byTracking && d.changes.kind === 'extents' ? d.changes.extents : null;
          // Differences by digests: a resync that asks for them (reverse replication over old
          // disks, or tracking that cannot stand in), and a seeded item whose change tracking was
          // lost (QEMU killed): only the blocks that differ from the replica are sent, never a
          // silent full copy.
          const byDigests = fullCopy && tracked === null && (a.resyncMode === 'digests' || a.resyncMode === 'cbt' || (a.resync === null && last?.seeded === true && status?.state === 'lost'));
          const digests = byDigests ? await this.#differences(a, d, signal, a.resync !== null ? undefined : last?.pointId) : null;
          if (tracked) {
            ranges = tracked;
            if (method === 'full') method = 'cbt';
            this.#o.logger.info({ item: a.itemId, disk: d.disk.id, changed: ranges.reduce((n, e) => n + e.length, 0), size: d.disk.sizeBytes }, 'agent: resync by change tracking since the failover');
          } else if (digests) {
            ranges = digests;
            method = 'digests';
          }
          // A full resync over a replica that already holds data must also overwrite what is a
          // hole at the source now, or old data would stay there: the whole disk is sent.
          else if (fullCopy && a.resync !== null && last?.seeded === true) ranges = [{ offset: 0, length: d.disk.sizeBytes }];
          else if (fullCopy || d.changes.kind === 'all') ranges = d.allocated ? await d.allocated(signal) : [{ offset: 0, length: d.disk.sizeBytes }];
          else ranges = d.changes.extents;
          const again = abandoned?.plans.find((pl) => pl.diskId === d.disk.id)?.extents ?? [];
          if (again.length > 0) ranges = [...ranges, ...again];
          plans.push(planDisk(d.disk.id, d.disk.sizeBytes, ranges, DEFAULT_REPLICA_BLOCK));
        }
        open = {
          // Point ids only grow, past an abandoned point's too: its id came from a clock that
          // may have been ahead (a wall-clock step back since), and the master target orders a
          // disk's points by id (a point older than its newest is never laid on top).
          pointId: given?.pointId ?? pointIdAfter(maxId(last?.pointId, abandoned?.pointId)),
          kind: point.consistency === 'app' ? 'app' : 'crash',
          pointSeq: floorSeq + 1,
          providerPointId: point.id,
          takenAt: point.takenAt.getTime(),
          initial: fullCopy,
          ...(fullCopy ? { method } : {}),
          plans,
          disks: point.disks.map((d) => ({ id: d.disk.id, sizeBytes: d.disk.sizeBytes })),
          ...(given ? { group: given.group } : {}),
        };
        await this.#write(a.itemId, 'open.json', open);
      } catch (err) {
        await p.releasePoint?.(point, { consumed: false }).catch(() => undefined);
        throw err;
      }
    }
    const pt = point!;
    const o = open;
    const total = o.plans.reduce((n, pl) => n + pl.bytes, 0);
    let done = 0;
    let skipped = 0;
    let lastReport = 0;
    const report = async (sent: boolean): Promise<void> => {
      lastReport = Date.now();
      await this.#o.link.progress({ itemId: a.itemId, pointId: o.pointId, initial: o.initial, bytesDone: done, bytesTotal: total, bytesSkipped: skipped, sent, takenAt: o.takenAt, ...(o.initial && o.method ? { method: o.method } : {}) }).catch(() => undefined);
    };
    if (o.initial) await report(false);
    // A failure leaves the point open (and saved): the next cycle adopts it and resumes.
    {
      for (let i = 0; i < o.plans.length; i++) {
        const plan = o.plans[i]!;
        const disk = pt.disks[i]!;
        const header: TransferHeader = {
          transferId: `${o.pointId}.${i}`,
          itemId: a.itemId,
          machine: a.machine,
          diskId: plan.diskId,
          diskIndex: i,
          diskCount: o.plans.length,
          diskSize: plan.sizeBytes,
          pointId: o.pointId,
          pointSeq: o.pointSeq,
          takenAt: o.takenAt,
          pointKind: o.kind ?? 'crash',
          frames: plan.extents.length,
          bytes: plan.bytes,
          targetSiteId: a.targetSiteId,
          masterTarget: a.masterTarget,
          retentionSeconds: a.policy.retentionSeconds,
          compression: a.policy.compression,
          encryption: a.policy.encryption,
          bandwidthBps: a.policy.bandwidthBps,
          initial: o.initial,
        };
        const frames: PlannedExtent[] = plan.extents.map((e) => ({ itemId: a.itemId, diskId: plan.diskId, pointId: o.pointId, offset: e.offset, length: e.length }));
        const socket = await openTransfer(a.processServer, header, this.#o.material, { signal });
        // Stopping (shutdown, failover) must not wait for a slow transfer's acknowledgements:
        // the connection goes, and the open point resumes after its last acknowledgement.
        const cut = (): void => { socket.destroy(); };
        signal.addEventListener('abort', cut, { once: true });
        const before = done;
        const upTo: number[] = [];
        frames.reduce((n, f, k) => (upTo[k] = n + f.length), 0);
        let r: Awaited<ReturnType<typeof sendTransfer>>;
        try {
          r = await sendTransfer(socket, {
            vaultKey: this.#o.transportKey,
            transferId: header.transferId,
            plan: frames,
            window: this.#o.window,
            // The link to the process server is local or LAN; compression happens on its WAN side.
            zstdLevel: null,
            read: (e) => disk.read(e.offset, e.length, signal),
            onAck: (seq) => {
              done = before + (upTo[seq] ?? 0);
              if (o.initial && Date.now() - lastReport > 1000) void report(false);
            },
          });
        } finally {
          signal.removeEventListener('abort', cut);
        }
        const skippedBytes = r.skipped > 0 ? (upTo[Math.min(r.skipped, frames.length) - 1] ?? 0) : 0;
        skipped += skippedBytes;
        done = before + plan.bytes;
        this.stats.bytesSent += plan.bytes - skippedBytes;
        this.stats.bytesSkipped += skippedBytes;
      }
    }
    // Recorded before the release: a kill in between adopts the point again, finds every
    // transfer acknowledged, and releases it then.
    const appAt = o.kind === 'app' ? o.takenAt : last?.appAt;
    await this.#write(a.itemId, 'last.json', { pointSeq: o.pointSeq, pointId: o.pointId, takenAt: o.takenAt, seeded: true, ...(appAt === undefined ? {} : { appAt }) } satisfies LastState);
    await p.releasePoint?.(pt, { consumed: true }, signal);
    await rm(join(this.#dir(a.itemId), 'open.json'), { force: true });
    this.stats.points++;
    if (a.resync !== null && o.initial) {
      this.#resynced.set(a.itemId, { reason: a.resync, at: Date.now() });
      await this.#o.link.resynced(a.itemId).catch(() => undefined);
    }
    await report(true);
    return { pointId: o.pointId, pointSeq: o.pointSeq, takenAt: o.takenAt };
  }

  // --- Replication groups: one worker per group takes the group's points at one barrier across
  // its members (provider.takeGroupPoints), records the group point in the vault, then sends
  // each member's point through #cycle as a given point. Members that are not steady (first
  // copy, resync, tracking not active) and open points left by a stopped worker or a killed
  // agent are finished by #cycle on their own first; the group's next barrier waits for them.

  async #pollGroups(members: Assignment[]): Promise<void> {
    const byKey = new Map<string, Assignment[]>();
    for (const a of members) byKey.set(groupKey(a), [...(byKey.get(groupKey(a)) ?? []), a]);
    for (const [key, w] of this.#groups) {
      const now = byKey.get(key);
      const same = now !== undefined && now.length === w.members.length && now.every((a) => w.members.some((m) => m.itemId === a.itemId));
      if (same) {
        w.members = now;
        continue;
      }
      // Membership changed (an item joined, left or fails over): the worker restarts with the
      // new members; its points in flight are adopted and finished by the next one.
      w.stop.abort();
      await w.done;
      this.#groups.delete(key);
    }
    for (const [key, list] of byKey) {
      // An item that just joined a group stops its own worker first (its open point is adopted).
      for (const a of list) {
        const solo = this.#workers.get(a.itemId);
        if (!solo) continue;
        solo.stop.abort();
        await solo.done;
        this.#workers.delete(a.itemId);
      }
      if (this.#groups.has(key)) continue;
      const stop = new AbortController();
      const w: GroupWorker = { stop, members: list, done: Promise.resolve() };
      w.done = this.#runGroup(key, w, stop.signal).catch((err: unknown) => this.#o.logger.error({ err, group: key }, 'agent: group worker stopped'));
      this.#groups.set(key, w);
    }
  }

  async #stopGroupOf(itemId: string): Promise<void> {
    for (const [key, w] of this.#groups) {
      if (!w.members.some((m) => m.itemId === itemId)) continue;
      w.stop.abort();
      await w.done;
      this.#groups.delete(key);
    }
  }

  async #runGroup(key: string, w: GroupWorker, signal: AbortSignal): Promise<void> {
    let backoff = 1000;
    let failures = 0;
    while (!signal.aborted) {
      try {
        await this.#groupCycle(key, w.members, signal);
        backoff = 1000;
        failures = 0;
      } catch (err) {
        if (signal.aborted) return;
        const e = err as ReboundError;
        this.#o.logger.warn({ group: key, err: { code: e.code, message: e.message } }, 'agent: replication group cycle failed; retrying');
        if (++failures >= 2) {
          // The group cannot take a point together (a member's machine is down, …): meanwhile
          // every member that can replicates on its own, so its RPO does not suffer; the group's
          // common point waits until every member takes part again.
          if (failures === 2) {
            for (const a of w.members) await this.#o.link.event(a.itemId, 'group-point-failed', `replication group ${a.group ?? ''}: no point of the whole group can be taken (${e.message}); ${a.machine} replicates on its own until every member can take part, and the group's common point does not advance.`).catch(() => undefined);
          }
          const solo = await Promise.allSettled(w.members.map((a) => this.#cycle(a, signal)));
          if (signal.aborted) return;
          solo.forEach((r, i) => {
            if (r.status === 'rejected') this.#o.logger.warn({ item: w.members[i]?.itemId, err: { code: (r.reason as ReboundError).code, message: (r.reason as Error).message } }, 'agent: replication cycle failed; retrying');
          });
          if (solo.some((r) => r.status === 'fulfilled')) continue;
        }
        await sleep(backoff, signal).catch(() => undefined);
        backoff = Math.min(backoff * 2, 15_000);
      }
    }
  }

  async #groupState(key: string): Promise<GroupState | null> {
    try {
      return JSON.parse(await readFile(join(this.#o.stateDir, 'groups', `${key}.json`), 'utf8')) as GroupState;
    } catch {
      return null;
    }
  }

  /** Runs #cycle for each of `list` at once; waits for all, then throws the first failure. */
  async #each(list: Assignment[], signal: AbortSignal, given?: (a: Assignment, i: number) => GivenPoint): Promise<void> {
    const r = await Promise.allSettled(list.map((a, i) => this.#cycle(a, signal, true, given?.(a, i))));
    const failed = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** One round of a group: finish what is open or not steady, else one barrier and its sends. */
  async #groupCycle(key: string, members: Assignment[], signal: AbortSignal): Promise<void> {
    const first = members[0];
    if (!first) return;
    const name = first.group ?? key;
    // Points left open (a stopped worker, a killed agent): adopted and finished on their own.
    const open = (await Promise.all(members.map(async (a) => ((await this.#read<OpenState>(a.itemId, 'open.json')) ? a : null)))).filter((a): a is Assignment => a !== null);
    if (open.length > 0) return this.#each(open, signal);
    const p = this.#o.providerFor(first);
    for (const a of members) {
      if (this.#o.providerFor(a) !== p) {
        throw new ReboundError('conflict', 'group-mixed-sources', `replication group ${name} has machines at different source sites (${first.machine} and ${a.machine}); a group's points are taken at one barrier on one site.`);
      }
      await this.#o.prepare?.(p, a);
    }
    // Members that still need a first copy or a resync, or whose tracking is not active, take
    // their own point first (a copy of everything or of differences): group points need them steady.
    const unsteady: Assignment[] = [];
    for (const a of members) {
      const last = await this.#read<LastState>(a.itemId, 'last.json');
      const status = await p.trackingStatus?.(a.machine, signal);
      if (!last?.seeded || a.resync !== null || status?.state !== 'active') unsteady.push(a);
    }
    if (unsteady.length > 0) return this.#each(unsteady, signal);
    if (!p.takeGroupPoints) {
      // A provider without a barrier: each member replicates on its own (no common points).
      if (!this.#noBarrier.has(key)) {
        this.#noBarrier.add(key);
        this.#o.logger.warn({ group: name, provider: p.kind }, 'agent: the provider cannot take group points; the group\'s machines replicate on their own');
        for (const a of members) await this.#o.link.event(a.itemId, 'group-no-barrier', `replication group ${name}: the ${p.kind} provider cannot take points of several machines at one instant; ${a.machine} replicates on its own and the group has no common point.`).catch(() => undefined);
      }
      return this.#each(members, signal).then(async () => { await sleep(first.policy.frequencySeconds * 1000, signal); });
    }

    const state = await this.#groupState(key);
    const every = first.policy.frequencySeconds * 1000;
    const due = (state?.takenAt ?? 0) + every;
    await sleep(Math.min(due - Date.now(), every), signal);
    const appEvery = first.policy.appConsistentSeconds * 1000;
    const appDue = appEvery > 0 && Date.now() - (state?.appAt ?? 0) >= appEvery;
    const names = members.map((a) => a.machine);
    const taken = await p.takeGroupPoints(names, signal, appDue ? { appConsistent: true } : {});
    const kind = groupPointKind(taken.points);
    const lasts = await Promise.all(members.map((a) => this.#read<LastState>(a.itemId, 'last.json')));
    const seq = (state?.seq ?? 0) + 1;
    const record: GroupPointRecord = {
      groupPointId: newId(),
      group: name,
      seq,
      takenAt: Math.min(...taken.points.map((pt) => pt.takenAt.getTime())),
      kind,
      pauseMs: taken.pauseMs,
      members: members.map((a, i) => ({ itemId: a.itemId, pointId: pointIdAfter(lasts[i]?.pointId) })),
    };
    this.#o.logger.info({ group: name, seq, members: names, pauseMs: taken.pauseMs, kind }, 'agent: group point taken at one barrier');
    if (appDue && kind !== 'app') {
      const why = taken.points.filter((pt) => pt.consistency !== 'app').map((pt) => `${pt.machine}: ${pt.freezeError ?? 'no reason given'}`).join('; ');
      for (const a of members) await this.#o.link.event(a.itemId, 'app-consistent-failed', `replication group ${name}: an app-consistent point was due but not every member froze (${why}); this group point is crash-consistent.`).catch(() => undefined);
    }
    try {
      await mkdir(join(this.#o.stateDir, 'groups'), { recursive: true });
      const appAt = kind === 'app' ? record.takenAt : state?.appAt;
      await writeFileAtomic(join(this.#o.stateDir, 'groups', `${key}.json`), JSON.stringify({ seq, takenAt: record.takenAt, groupPointId: record.groupPointId, ...(appAt === undefined ? {} : { appAt }) } satisfies GroupState));
      // Recorded before anything is sent: a member point the master target records later finds
      // its group point. A kill before every member's point is open leaves a group point that is
      // never complete, so never chosen.
      await this.#o.link.groupPoint(record);
    } catch (err) {
      for (const pt of taken.points) await p.releasePoint?.(pt, { consumed: false }).catch(() => undefined);
      throw err;
    }
    const group = { name, groupPointId: record.groupPointId, seq };
    await this.#each(members, signal, (_a, i) => ({ point: { ...taken.points[i]!, consistency: kind }, pointId: record.members[i]!.pointId, group }));
  }

  /** The blocks of a point's disk that differ from the replica at the target (null: no replica
   * there or no way to ask, so the caller copies everything allocated). */
  async #differences(a: Assignment, d: PointDisk, signal: AbortSignal, holding?: string): Promise<{ offset: number; length: number }[] | null> {
    const bs = DEFAULT_REPLICA_BLOCK;
    const theirs = await this.#o.targetDigests?.(a, d.disk.id, bs, signal, holding);
    if (!theirs) return null;
    const allocated = d.allocated ? await d.allocated(signal) : undefined;
    const data = allocated?.map((e) => {
      const start = Math.floor(e.offset / bs) * bs;
      return { offset: start, length: Math.min(d.disk.sizeBytes, Math.ceil((e.offset + e.length) / bs) * bs) - start };
    });
    const ours = await digestReader({ size: d.disk.sizeBytes, read: (o, l) => d.read(o, l, signal) }, { blockSize: bs, signal, ...(data ? { dataExtents: data } : {}) });
    const diff = diffDigests(ours, theirs);
    this.#o.logger.info({ item: a.itemId, disk: d.disk.id, differing: diff.reduce((n, e) => n + e.length, 0), size: d.disk.sizeBytes }, 'agent: resync by digests');
    return diff;
  }
}

/**
 * A new point id (UUIDv7, time-ordered) that sorts after `prev`. The master target refuses a
 * point older than its newest as a replay, so an item's point ids must only grow, even when the
 * wall clock goes back (an NTP step, a host clock set back, a restart after either): then the
 * new id takes the millisecond after `prev`'s.
 */
function maxId(a: string | undefined, b: string | undefined): string | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a > b ? a : b;
}

export function pointIdAfter(prev: string | undefined): string {
  const id = newId();
  if (prev === undefined || id > prev) return id;
  const ms = Number.parseInt(prev.slice(0, 8) + prev.slice(9, 13), 16) + 1;
  const hex = ms.toString(16).padStart(12, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}${id.slice(13)}`;
}

const sleep = (ms: number, signal: AbortSignal): Promise<unknown> => (ms > 0 ? delay(ms, undefined, { signal }) : Promise.resolve());
