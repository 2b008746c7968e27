// The master target: at the recovery site, writes received transfers into each disk's replica
// (src/replica: qcow2 chains, encrypted at rest), names a recovery point in the vault once every
// disk of the machine holds it, applies the policy's retention and scrubs. One transfer per
// disk at a time; a transfer of a point the disk already holds is answered "all acknowledged",
// so a relay that crashed after the master target committed does not write it twice.
import { mkdir, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { PeerCertificate } from 'node:tls';
import type { Logger } from 'pino';
import type { DigestMap } from '../datapath/digest.ts';
import { receiveTransfer } from '../datapath/frame-stream.ts';
import { conflict, invalid, ReboundError } from '../domain/errors.ts';
import { ReplicaDisk } from '../replica/replica-disk.ts';
import type { AtRestKey, PointWriter } from '../replica/replica-disk.ts';
import type { MasterTargetLink } from './link.ts';
import { listenTransfers } from './wire.ts';
import type { DataListener, TlsMaterial, TransferHeader } from './wire.ts';

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$/;

export interface MasterTargetOptions {
  transportKey: Buffer;
  /** Current at-rest key first; older ones for replicas not yet rekeyed. */
  atRestKeys: AtRestKey[];
  material: TlsMaterial | null;
  host?: string;
  port?: number;
  logger: Logger;
  link: MasterTargetLink;
  checkPeer?: (cert: PeerCertificate) => void;
}

interface Progress { transferId: string; ackedThrough: number }
const isProgress = (p: unknown): p is Progress => typeof p === 'object' && p !== null && typeof (p as Progress).transferId === 'string';

export class MasterTarget {
  readonly #o: MasterTargetOptions;
  #listener: DataListener | undefined;
  readonly #disks = new Map<string, Promise<ReplicaDisk>>();
  readonly #busy = new Set<string>();
  /** Items whose transfers fail because the recovery site is full (see #spaceProblem). */
  readonly #full = new Set<string>();
  /** Serializes work per item (commit bookkeeping, retention, views). */
  readonly #itemLocks = new Map<string, Promise<unknown>>();
  stats = { transfers: 0, points: 0, bytes: 0, discarded: 0 };

  constructor(o: MasterTargetOptions) { this.#o = o; }

  get address(): string {
    if (!this.#listener) throw new Error('master target not started');
    return this.#listener.address;
  }

  async start(): Promise<void> {
    this.#listener = await listenTransfers({
      host: this.#o.host,
      port: this.#o.port,
      material: this.#o.material,
      checkPeer: this.#o.checkPeer,
      accept: (h) => this.#accept(h),
      handle: (h, socket) => this.#receive(h, socket),
      onError: (err) => this.#o.logger.debug({ err }, 'master target: transfer ended with an error'),
    });
  }

  async close(): Promise<void> {
    await this.#listener?.close();
    await Promise.all([...this.#itemLocks.values()].map((p) => p.catch(() => undefined)));
  }

  async itemDir(siteId: string, itemId: string): Promise<string> {
    if (!ID_RE.test(itemId)) throw invalid('item-id-invalid', `Item id '${itemId}' is not valid.`);
    return join(await this.#o.link.siteRoot(siteId), 'replicas', itemId);
  }

  async #accept(h: TransferHeader): Promise<void> {
    if (typeof h?.transferId !== 'string' || !ID_RE.test(h.itemId ?? '') || !ID_RE.test(h.diskId ?? '') || !ID_RE.test(h.pointId ?? '')) throw invalid('transfer-header-invalid', 'A transfer header names an invalid item, disk or point.');
    if (!Number.isInteger(h.diskSize) || h.diskSize <= 0 || h.diskSize % 512 !== 0) throw invalid('transfer-header-invalid', `A transfer header gives a disk size of ${h.diskSize}.`);
    const root = await this.#o.link.siteRoot(h.targetSiteId); // the site must exist
    await this.itemDir(h.targetSiteId, h.itemId);
    // While the recovery site is known to be full (#spaceProblem), a transfer is refused at its
    // hello, before its frames cross the WAN only to fail again on the first write. The sender
    // retries with its back-off; once space is freed the check passes and the transfer goes on.
    if (this.#full.has(h.itemId)) {
      const free = await statfs(root).then((st) => Number(st.bavail) * Number(st.bsize)).catch(() => null);
      if (free !== null && free < LOW_SPACE_BYTES) {
        throw conflict('recovery-site-full', `The recovery site's storage (${root}) is still full (${Math.floor(free / 1024)} KiB free) for ${h.machine}: free space there; replication resumes by itself.`, { retryable: true });
      }
    }
    const key = `${h.itemId}/${h.diskId}`;
    if (this.#busy.has(key)) throw conflict('transfer-busy', `Disk ${key} is already receiving a transfer; retry when it ends.`, { retryable: true });
    // Reserved here, in the same tick as the check, and held until #receive ends: reserved only
    // in #receive (as before), two connections for one disk (a sender's retry while its earlier
    // connection was still open here) could both pass this check during the awaits below, and
    // the second then resumed or discarded the point the first was writing.
    this.#busy.add(key);
    try {
      // Point ids are time-ordered (UUIDv7): a point older than the newest one this disk holds,
      // and not held itself, was merged away by retention — applying it again would lay old data
      // over newer (a replayed or re-forwarded transfer). Refused; the sender treats it as done.
      const disk = await this.#disk(h).catch(async (err: unknown) => {
        await this.#spaceProblem(h, err);
        throw err;
      });
      const pts = disk.points();
      const newest = pts.at(-1)?.id;
      if (newest !== undefined && h.pointId < newest && !pts.some((p) => p.id === h.pointId)) {
        throw conflict('transfer-replayed', `Point ${h.pointId} of ${h.machine} is older than the newest point ${newest} and no longer retained: it was applied before and merged away.`, { retryable: false });
      }
    } catch (err) {
      this.#busy.delete(key);
      throw err;
    }
  }

  /** The replica in `dir`, opened once and shared; created (empty, `size` bytes) when asked. */
  #replica(dir: string, create?: { size: number; encrypt: boolean }): Promise<ReplicaDisk> {
    let p = this.#disks.get(dir);
    if (!p) {
      p = (async () => {
        try {
          return await ReplicaDisk.open(dir, { keys: this.#o.atRestKeys });
        } catch (err) {
          if (!create || !(err instanceof ReboundError && err.kind === 'not-found')) throw err;
          await mkdir(dir, { recursive: true });
          return ReplicaDisk.create(dir, { size: create.size, ...(create.encrypt ? { key: this.#o.atRestKeys[0]! } : {}) });
        }
      })();
      this.#disks.set(dir, p);
      p.catch(() => this.#disks.delete(dir));
    }
    return p;
  }

  async #disk(h: TransferHeader): Promise<ReplicaDisk> {
    return this.#replica(join(await this.itemDir(h.targetSiteId, h.itemId), h.diskId), { size: h.diskSize, encrypt: h.encryption !== 'none' });
  }

  /** The recovery site ran out of space under a transfer of the item: told once, as an event,
   * until a point commits again. */
  async #spaceProblem(h: TransferHeader, err: unknown): Promise<void> {
    if (this.#full.has(h.itemId)) return;
    // Not every tool says ENOSPC (qemu-nbd only says it "failed to write pid file"), so a
    // failure with next to no space left at the site's root counts too.
    const root = await this.#o.link.siteRoot(h.targetSiteId).catch(() => null);
    const free = root === null ? null : await statfs(root).then((s) => Number(s.bavail) * Number(s.bsize)).catch(() => null);
    if (!isNoSpace(err) && !(free !== null && free < LOW_SPACE_BYTES)) return;
    this.#full.add(h.itemId);
    this.#o.logger.error({ item: h.itemId, err: { message: (err as Error).message } }, 'master target: the recovery site is out of space; replication of the item is paused');
    await this.#o.link.event?.(h.itemId, 'recovery-site-full', `Replication of ${h.machine} is paused: the recovery site's storage (${root ?? 'its root'}) is full${free === null ? '' : ` (${Math.floor(free / 1024)} KiB free)`}: ${(err as Error).message} Nothing acknowledged is lost: the process server keeps the changes in its cache and sends them, as differences, once space is freed there.`, { siteId: h.targetSiteId, freeBytes: free }).catch(() => undefined);
  }

  async #spaceBack(h: TransferHeader): Promise<void> {
    if (!this.#full.delete(h.itemId)) return;
    await this.#o.link.event?.(h.itemId, 'recovery-site-space-ok', `Replication of ${h.machine} resumed: the recovery site has space again and point ${h.pointId} was written.`, { siteId: h.targetSiteId }).catch(() => undefined);
  }

  async #receive(h: TransferHeader, socket: Duplex): Promise<void> {
    const key = `${h.itemId}/${h.diskId}`; // reserved by #accept
    let writer: PointWriter | undefined;
    try {
      const disk = await this.#disk(h);
      if (disk.size !== h.diskSize) throw conflict('replica-size-changed', `Disk ${h.diskId} of ${h.machine} is ${h.diskSize} bytes now, its replica ${disk.size}: a resized disk needs replication re-enabled.`);
      let committedNow = false;
      await receiveTransfer(socket, {
        vaultKey: this.#o.transportKey,
        ackedThrough: async (tid) => {
          if (tid !== h.transferId) throw invalid('transfer-id-mismatch', `The stream says transfer ${tid}, its header ${h.transferId}.`);
          if (disk.points().some((p) => p.id === h.pointId)) return h.frames;
          const staged = disk.staged();
          if (!staged) return -1;
          const progress = isProgress(staged.progress) ? staged.progress : null;
          const same = staged.pointId === h.pointId && progress?.transferId === tid;
          if (staged.committing) {
            // Received whole, and its commit cut short after the checkpoint that said so (a
            // failed write): named now. Answering "all acknowledged" without naming it, as
            // before, let the relay forget a point this disk never named (soak seeds 16032 and
            // 21008, where a kill cut the commit short: data lost).
            await disk.finishCommit();
            this.#o.logger.info({ item: h.itemId, disk: h.diskId, point: staged.pointId }, 'master target: a point received whole and left committing (a cut-short commit) is named now');
            if (same) {
              committedNow = true;
              return h.frames;
            }
            return -1;
          }
          if (same && progress) {
            writer = await disk.resumePoint();
            return progress.ackedThrough;
          }
          // A point that will never be finished (its relay dropped it): discard it.
          this.#o.logger.info({ item: h.itemId, disk: h.diskId, point: staged.pointId, for: h.pointId }, 'master target: discarding a partly received point its relay abandoned');
          await (await disk.resumePoint()).abort();
          return -1;
        },
        apply: async (frame, tid) => {
          const fh = frame.header;
          if (fh.itemId !== h.itemId || fh.diskId !== h.diskId || fh.pointId !== h.pointId) throw invalid('transfer-wrong-disk', `A frame for ${fh.itemId}/${fh.diskId}/${fh.pointId} arrived in transfer ${h.transferId}.`);
          writer ??= await disk.beginPoint(h.pointId, { progress: { transferId: tid, ackedThrough: -1 } satisfies Progress });
          await writer.write(fh.offset, frame.data);
          this.stats.bytes += frame.data.length;
        },
        checkpoint: async (tid, seq) => { await writer?.checkpoint({ transferId: tid, ackedThrough: seq } satisfies Progress); },
        complete: async (tid, frames) => {
          if (disk.points().some((p) => p.id === h.pointId)) return;
          writer ??= await disk.beginPoint(h.pointId, { progress: { transferId: tid, ackedThrough: -1 } satisfies Progress });
          await writer.commit({ createdAt: new Date(h.takenAt).toISOString(), progress: { transferId: tid, ackedThrough: frames } satisfies Progress });
          writer = undefined;
          committedNow = true;
        },
      });
      this.stats.transfers++;
      if (committedNow || disk.points().some((p) => p.id === h.pointId)) await this.#withItem(h.itemId, () => this.#afterCommit(h));
      if (committedNow) await this.#spaceBack(h);
    } catch (err) {
      await this.#spaceProblem(h, err);
      throw err;
    } finally {
      if (writer) await writer.abandon().catch(() => undefined);
      this.#busy.delete(key);
    }
  }

  #withItem<T>(itemId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#itemLocks.get(itemId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.#itemLocks.set(itemId, next);
    void next.finally(() => { if (this.#itemLocks.get(itemId) === next) this.#itemLocks.delete(itemId); }).catch(() => undefined);
    return next;
  }

  /** The replicas of an item's disks that exist. */
  async #itemDisks(siteId: string, itemId: string): Promise<{ diskId: string; disk: ReplicaDisk }[]> {
    const dir = await this.itemDir(siteId, itemId);
    let names: string[];
    try { names = (await readdir(dir)).filter((n) => ID_RE.test(n)); } catch { return []; }
    const out: { diskId: string; disk: ReplicaDisk }[] = [];
    for (const n of names.sort()) {
      try { out.push({ diskId: n, disk: await this.#replica(join(dir, n)) }); } catch { /* not a replica (half-created): skipped */ }
    }
    return out;
  }

  /** Points every disk of the item holds (good ones), oldest first. */
  async commonPoints(siteId: string, itemId: string, diskCount?: number): Promise<{ id: string; createdAt: string }[]> {
    const disks = await this.#itemDisks(siteId, itemId);
    if (disks.length === 0 || (diskCount !== undefined && disks.length < diskCount)) return [];
    const [first, ...rest] = disks;
    return first!.disk.points().filter((p) => !p.bad && rest.every((d) => d.disk.points().some((q) => q.id === p.id && !q.bad))).map((p) => ({ id: p.id, createdAt: p.createdAt }));
  }

  async #afterCommit(h: TransferHeader): Promise<void> {
    const common = await this.commonPoints(h.targetSiteId, h.itemId, h.diskCount);
    if (!common.some((p) => p.id === h.pointId)) return; // other disks of this point still to come
    const disks = await this.#itemDisks(h.targetSiteId, h.itemId);
    // The oldest point every disk holds (bad ones too: the vault keeps them listed as bad): a
    // point one disk no longer holds (merged there while another disk's merge was deferred) is
    // no recovery point, and the vault drops it.
    const heldFrom = disks.map((d) => d.disk.points()[0]?.id).filter((id): id is string => id !== undefined).sort().at(-1);
    const verdict = await this.#o.link.recordPoint({
      itemId: h.itemId,
      pointId: h.pointId,
      pointSeq: h.pointSeq,
      takenAt: h.takenAt,
      kind: h.pointKind,
      disks: disks.map((d) => ({ id: d.diskId, sizeBytes: d.disk.size, bytes: 0 })),
      siteId: h.targetSiteId,
      ...(heldFrom ? { heldFrom } : {}),
    });
    if (verdict !== 'recorded') {
      await this.#discard(h, disks, verdict);
      return;
    }
    this.stats.points++;
    await this.#retain(h.targetSiteId, h.itemId, h.retentionSeconds, h.takenAt);
  }

  /** A point the vault refused: removed from every disk, and the item's replica here with it
   * when that point was all it held (a replica a late cycle made after a commit removed the
   * item's replica). Nothing else is touched: older points stay as they were. */
  async #discard(h: TransferHeader, disks: { diskId: string; disk: ReplicaDisk }[], verdict: 'stale' | 'gone'): Promise<void> {
    let removed = 0;
    for (const { disk } of disks) if (await disk.discardNewest(h.pointId)) removed++;
    const empty = disks.every(({ disk }) => disk.points().length === 0 && disk.views().length === 0);
    if (empty) await this.#removeItemDir(await this.itemDir(h.targetSiteId, h.itemId));
    this.stats.discarded++;
    this.#o.logger.warn({ item: h.itemId, point: h.pointId, site: h.targetSiteId, verdict, removedFrom: removed, replicaRemoved: empty }, 'master target: the vault refused a point; discarded');
    if (verdict === 'stale') {
      await this.#o.link.event?.(h.itemId, 'point-discarded', `Point ${h.pointId} reached the replica at site ${h.targetSiteId} after the machine had failed over to that site (the cycle that took it was still in flight); it was discarded${empty ? ', with the replica it alone made' : ''} and is not a recovery point.`, { pointId: h.pointId, siteId: h.targetSiteId }).catch(() => undefined);
    }
  }

  /** Removes an item's replica directory and forgets the replicas opened in it (the caller holds
   * the item's lock). */
  async #removeItemDir(dir: string): Promise<void> {
    for (const key of [...this.#disks.keys()]) if (key.startsWith(`${dir}/`)) this.#disks.delete(key);
    await rm(dir, { recursive: true, force: true });
  }

  /** Keeps every point taken within `retentionSeconds` before the newest, plus the newest one
   * older than that (the window's edge); older points are merged into the base. A disk whose
   * merge is deferred (a view, or a point being received, holds its chain) is merged at a later
   * point; disks already merged are told to the vault at once, since a point one disk no longer
   * holds is no recovery point. Before, a deferred disk ended the pass before the vault heard of
   * the others' merges, and no later pass came back to it while the oldest common point was
   * already the window's edge (soak seed 16007: points listed that one disk had merged away). */
  async #retain(siteId: string, itemId: string, retentionSeconds: number, newestAt: number): Promise<void> {
    const common = await this.commonPoints(siteId, itemId);
    const edge = newestAt - retentionSeconds * 1000;
    let oldestKept: string | undefined;
    for (const p of common) if (Date.parse(p.createdAt) <= edge) oldestKept = p.id;
    if (!oldestKept) return;
    const dropped = new Set<string>();
    for (const { disk } of await this.#itemDisks(siteId, itemId)) {
      const oldest = disk.points()[0]?.id;
      if (oldest === undefined || oldest >= oldestKept) continue; // nothing older here
      const r = await disk.retain(oldestKept);
      for (const id of r.dropped) dropped.add(id);
    }
    if (dropped.size > 0) await this.#o.link.prunePoints(itemId, [...dropped]);
  }

  /**
   * Exports one point of every disk of the item as plain qcow2 overlays at `paths[diskId]` (a
   * recovered machine's own directory), copy-on-write, in time independent of disk size.
   * Idempotent per `tag`: a retried task gets the exports it made before.
   */
  async exportPoint(siteId: string, itemId: string, pointId: string, paths: Record<string, string>, tag: string): Promise<{ diskId: string; path: string; sizeBytes: number }[]> {
    return this.#withItem(itemId, async () => {
      const disks = await this.#itemDisks(siteId, itemId);
      if (disks.length === 0) throw conflict('no-replica', `Item ${itemId} has no replica at this site.`);
      const out: { diskId: string; path: string; sizeBytes: number }[] = [];
      for (const { diskId, disk } of disks) {
        const path = paths[diskId];
        if (!path) throw invalid('export-path-missing', `No export path was given for disk ${diskId}.`);
        const have = disk.views().find((v) => v.id === tag);
        if (!have) await disk.exportPoint(pointId, path, tag);
        else if (have.pointId !== pointId || have.file !== path) throw conflict('export-exists', `Disk ${diskId} already has an export ${tag} of point ${have.pointId}.`);
        out.push({ diskId, path, sizeBytes: disk.size });
      }
      return out;
    });
  }

  /** Closes the exports made under `tag`; their files are kept when `keepFiles` (committed). */
  async closeExports(siteId: string, itemId: string, tag: string, keepFiles: boolean): Promise<void> {
    await this.#withItem(itemId, async () => {
      for (const { disk } of await this.#itemDisks(siteId, itemId)) await disk.closeView(tag, { keepFile: keepFiles });
    });
  }

  /** The QEMU secrets that open the item's (encrypted) replica images; empty when plain. */
  async secrets(siteId: string, itemId: string): Promise<{ id: string; data: string }[]> {
    const disks = await this.#itemDisks(siteId, itemId);
    return disks[0]?.disk.secrets() ?? [];
  }

  /** Removes the item's replicas and every point in them (commit). Open exports must be closed. */
  async dropReplicas(siteId: string, itemId: string): Promise<void> {
    await this.#withItem(itemId, async () => {
      const dir = await this.itemDir(siteId, itemId);
      for (const { disk } of await this.#itemDisks(siteId, itemId)) {
        const open = disk.views().filter((v) => v.file.startsWith('/'));
        if (open.length > 0) throw conflict('replica-exported', `The replica of ${itemId} still has ${open.length} export(s) a machine may run on: close them first.`);
      }
      await this.#removeItemDir(dir);
    });
  }

  /**
   * Starts the item's replicas at this site from existing images (reverse replication over the
   * machine's old disks): each base reads as its image until points arrive, so a resync by
   * digests sends only the differences. Replaces any replica the item had here.
   */
  async seed(siteId: string, itemId: string, disks: { diskId: string; path: string; format: 'raw' | 'qcow2'; sizeBytes: number }[], encrypt: boolean): Promise<void> {
    await this.#withItem(itemId, async () => {
      const dir = await this.itemDir(siteId, itemId);
      await this.#removeItemDir(dir);
      for (const d of disks) {
        if (!ID_RE.test(d.diskId)) throw invalid('disk-id-invalid', `Disk id '${d.diskId}' is not valid.`);
        await mkdir(join(dir, d.diskId), { recursive: true });
        await ReplicaDisk.create(join(dir, d.diskId), { size: d.sizeBytes, seed: { path: d.path, format: d.format }, ...(encrypt ? { key: this.#o.atRestKeys[0]! } : {}) });
      }
    });
  }

  /** Digests of a disk's newest replica content, or null when there is no replica of it here. */
  async digests(siteId: string, itemId: string, diskId: string, blockSize: number, signal?: AbortSignal): Promise<DigestMap | null> {
    if (!ID_RE.test(diskId)) throw invalid('disk-id-invalid', `Disk id '${diskId}' is not valid.`);
    let disk: ReplicaDisk;
    try {
      disk = await this.#replica(join(await this.itemDir(siteId, itemId), diskId));
    } catch (err) {
      if (err instanceof ReboundError && err.kind === 'not-found') return null;
      throw err;
    }
    return disk.digests(blockSize, signal);
  }

  /** Re-reads every stored block of the item's replicas; damaged points are marked bad. */
  async scrub(siteId: string, itemId: string): Promise<{ checkedBlocks: number; badPoints: string[] }> {
    return this.#withItem(itemId, async () => {
      let checkedBlocks = 0;
      const bad = new Set<string>();
      for (const { disk } of await this.#itemDisks(siteId, itemId)) {
        const r = await disk.scrub();
        checkedBlocks += r.checkedBlocks;
        for (const p of r.badPoints) bad.add(p);
      }
      if (bad.size > 0) await this.#o.link.markBad(itemId, [...bad], 'scrub found blocks that no longer match their checksums');
      return { checkedBlocks, badPoints: [...bad] };
    });
  }
}

/** Free space under which a failed transfer is put down to a full recovery site. */
const LOW_SPACE_BYTES = 8 * 1024 * 1024;

/** Whether `err` (or a cause of it) is a file system out of space: ENOSPC from Node, from
 * qemu-nbd over NBD, or in a QEMU tool's message. */
export function isNoSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e && depth < 6; e = (e as { cause?: unknown }).cause, depth++) {
    const x = e as { code?: unknown; message?: unknown; details?: { errnoName?: unknown } };
    if (x.code === 'ENOSPC' || x.details?.errnoName === 'ENOSPC') return true;
    if (typeof x.message === 'string' && /ENOSPC|No space left on device/i.test(x.message)) return true;
  }
  return false;
}
