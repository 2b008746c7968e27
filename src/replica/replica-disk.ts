// The replica of one disk at the recovery site: standard qcow2 files QEMU opens directly.
//
//   base.qcow2 ← p-<id1>.qcow2 ← p-<id2>.qcow2 ← …        views/<view>.qcow2 → any point's layer
//
// Receiving a cycle creates a new overlay on the newest layer (the manifest records it as
// "staging", not as a point) and writes the received extents into it through qemu-nbd. A
// checkpoint flushes the overlay, appends the blocks' checksums to a journal, fsyncs it, and
// records the caller's progress in the manifest: what the transfer acknowledges. Committing
// turns the journal into the point's checksum file and names the point. A kill at any moment
// leaves the manifest naming complete points only; the staged overlay resumes from its last
// checkpoint, and files no manifest entry names are deleted when the replica is next opened.
// A view is a fresh overlay on a point's layer (copy-on-write, constant time whatever the disk
// size); the point's own layers are never written. Retention merges the oldest layer into the
// base (`qemu-img commit`, then the next layer's backing pointer moved to the base, then the
// manifest) — every step leaves each named point readable and correct, and an interrupted merge
// is finished on open. Merges wait while any view is open: a running view holds the chain.
// Encryption at rest is qcow2's LUKS, so QEMU still opens the images given the secret; key
// rotation adds a keyslot for the new key and removes the old one in every file without
// rewriting data. Block checksums of an encrypted replica are keyed (BLAKE3 with a random
// per-replica key sealed under the at-rest key), so they reveal nothing about the data.
// scrub() re-reads every written block of every layer and marks the points whose data it
// cannot vouch for as bad; a bad point is never served as a view. A layer it cannot read for a
// passing reason (qemu-nbd slow to start, another process holding the image) is tried again,
// and then fails the scrub rather than condemning good data.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { conflict, invalid, notFound, ReboundError } from '../domain/errors.ts';
import { checksum, keyedChecksum } from '../datapath/checksum.ts';
import { digestReader } from '../datapath/digest.ts';
import type { DigestMap } from '../datapath/digest.ts';
import { NbdClient } from '../nbd/client.ts';
import { readSums, writeSums } from './block-sums.ts';
import type { BlockSums } from './block-sums.ts';
import { fsyncDir, fsyncPath } from './durable.ts';
import { loadManifest, MANIFEST, saveManifest } from './manifest.ts';
import type { LayerEntry, Manifest, ViewEntry } from './manifest.ts';
import { backingName, jsonName, runQemu, SECRET_ID, spawnWithSecrets } from './qemu.ts';
import type { Secret } from './qemu.ts';

export const DEFAULT_REPLICA_BLOCK = 64 * 1024;
const NEW_SECRET_ID = 'rebound-replica-key-next';
/** The replica's empty encrypted image new layers are copied from (see #template). */
const TEMPLATE = 'template.qcow2';
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$/;
const MAX_WRITE = 4 * 1024 * 1024;
const IN_FLIGHT = 16;
const JOURNAL_RECORD = 8 + 32; // u64 block index | BLAKE3
const START_TIMEOUT_MS = 30_000;
/** Attempts scrub makes at a layer it cannot open for a passing reason (a busy machine, another
 * process holding the image's lock) before it gives up without judging the layer. */
const SCRUB_ATTEMPTS = 3;
const LOST_CONNECTION = new Set(['nbd-closed', 'nbd-timeout']);
/** LUKS PBKDF time per keyslot. The secret is a random 256-bit key, not a password, so key
 * stretching adds nothing; QEMU's benchmark still costs ~1 s per image created or rekeyed (so
 * images are copies of a template). Every image of a chain is unlocked each time the chain is
 * opened (a point's qemu-nbd, a view): measured here, 21 ms per image at 10 ms, 9 ms at 2 ms,
 * 5 ms unencrypted, which at a 1 s policy's dozens of layers was most of a point's cost. 1 ms is
 * too short for QEMU to calibrate ("Unable to get accurate CPU usage", 1 time in 6; runQemu
 * retries that). */
const LUKS_ITER_MS = 2;

export interface AtRestKey {
  id: string;
  /** The LUKS passphrase: printable text derived from the vault key. */
  secret: string;
}

/** The at-rest key with id `keyId` for replicas of this vault. */
export function deriveAtRestKey(vaultKey: Uint8Array, keyId: string): AtRestKey {
  const k = Buffer.from(hkdfSync('sha256', vaultKey, Buffer.from('rebound/replica-at-rest/v1'), Buffer.from(keyId), 32));
  return { id: keyId, secret: k.toString('hex') };
}

/** An existing image a new replica starts from (reverse replication over the old disks): the
 * base reads as this image until points are written, so only differences need sending. The image
 * must not change while the replica uses it. */
export interface SeedImage {
  path: string;
  format: 'raw' | 'qcow2';
}

export interface PointInfo {
  id: string;
  createdAt: string;
  bad: boolean;
}

export interface ReplicaView {
  id: string;
  pointId: string;
  /** The view's qcow2 file: give it to QEMU as the disk. */
  path: string;
  /** A `json:` filename for QEMU; for encrypted replicas pass the secret too (see `secret`). */
  drive: string;
  /** For encrypted replicas: `--object secret,id=<id>,…` must define this id. */
  secretId: string | null;
}

export interface ApplyExtent {
  offset: number;
  data: Uint8Array;
}

/** A point being received (see beginPoint). */
export interface PointWriter {
  readonly pointId: string;
  /** The progress recorded by the last checkpoint (the caller's own record). */
  readonly progress: unknown;
  /** Queues a write of whole blocks; resolves when it is queued (back-pressure), not durable. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes everything written so far durable and records `progress` with it. */
  checkpoint(progress: unknown): Promise<void>;
  /** Checkpoints, closes, and names the point. */
  commit(opts?: { createdAt?: string; progress?: unknown }): Promise<PointInfo>;
  /** Discards the point being received. */
  abort(): Promise<void>;
  /** Closes the writer but keeps the point staged at its last checkpoint (resumePoint). */
  abandon(): Promise<void>;
}

export interface ScrubReport {
  checkedBlocks: number;
  /** Damaged blocks by offset; `offset: null` when the whole layer cannot be vouched for, with
   * `reason` saying why. */
  damaged: { pointId: string | null; file: string; offset: number | null; reason?: string }[];
  badPoints: string[];
}

interface Holder {
  pointId: string | null;
  file: string;
  sums: string | null;
}

export class ReplicaDisk {
  readonly dir: string;
  #m: Manifest;
  #keys: Map<string, AtRestKey>;
  /** Key of the keyed block checksums of an encrypted replica (null: plain BLAKE3). */
  #sumsKey: Buffer | null = null;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, m: Manifest, keys: readonly AtRestKey[]) {
    this.dir = dir;
    this.#m = m;
    this.#keys = new Map(keys.map((k) => [k.id, k]));
  }

  /** Creates an empty replica (a base of `size` bytes, no points yet) in `dir`. */
  static async create(dir: string, opts: { size: number; blockSize?: number; key?: AtRestKey; seed?: SeedImage }): Promise<ReplicaDisk> {
    const blockSize = opts.blockSize ?? DEFAULT_REPLICA_BLOCK;
    if (blockSize < 4096 || blockSize > 2 * 1024 * 1024 || (blockSize & (blockSize - 1)) !== 0) {
      throw invalid('replica-block-size', `A replica block size of ${blockSize} is not a power of two between 4 KiB and 2 MiB.`);
    }
    if (!Number.isInteger(opts.size) || opts.size <= 0 || opts.size % 512 !== 0) throw invalid('replica-size', `A disk size of ${opts.size} bytes is not a positive multiple of 512.`);
    await mkdir(join(dir, 'views'), { recursive: true });
    if (await exists(join(dir, MANIFEST))) throw conflict('replica-exists', `A replica already exists in ${dir}.`, { hint: 'Open it instead, or remove it first.' });
    const m: Manifest = {
      version: 1,
      size: opts.size,
      blockSize,
      encryption: null,
      base: { file: 'base.qcow2', pointId: null, sums: null, createdAt: null, bad: false },
      layers: [],
      merging: null,
      views: [],
      staging: null,
    };
    const disk = new ReplicaDisk(dir, m, opts.key ? [opts.key] : []);
    if (opts.key) {
      disk.#sumsKey = randomBytes(32);
      m.encryption = { keyId: opts.key.id, rotatingTo: null, sealedSumsKey: sealKey(disk.#sumsKey, opts.key) };
    }
    await rm(join(dir, 'base.qcow2'), { force: true }); // from a create that died before its manifest
    await disk.#createImage('base.qcow2', null, '', opts.seed ? { name: opts.seed.path, format: opts.seed.format } : undefined);
    await fsyncDir(dir);
    await saveManifest(dir, m);
    return disk;
  }

  /** Opens a replica and finishes or cleans up whatever a killed process left. `keys` holds the
   * at-rest keys it may need (the current one; both during a key rotation). */
  static async open(dir: string, opts: { keys?: readonly AtRestKey[] } = {}): Promise<ReplicaDisk> {
    const m = await loadManifest(dir);
    m.staging ??= null;
    const disk = new ReplicaDisk(dir, m, opts.keys ?? []);
    if (m.encryption && !disk.#keys.has(m.encryption.keyId)) {
      throw new ReboundError('forbidden', 'replica-key-missing', `The replica in ${dir} is encrypted with key ${m.encryption.keyId}, which was not given.`, {
        hint: 'Pass the vault key the replica was written with.',
      });
    }
    if (m.encryption) disk.#sumsKey = openSealedKey(m.encryption.sealedSumsKey, disk.#keys.get(m.encryption.keyId)!, dir);
    await disk.#serial(() => disk.#recover());
    return disk;
  }

  get size(): number { return this.#m.size; }
  get blockSize(): number { return this.#m.blockSize; }
  get keyId(): string | null { return this.#m.encryption?.keyId ?? null; }

  /** Named points, oldest first (during a merge the base's own old point is no longer one). */
  points(): PointInfo[] {
    const out: PointInfo[] = [];
    const b = this.#m.base;
    if (b.pointId && !this.#m.merging) out.push({ id: b.pointId, createdAt: b.createdAt ?? '', bad: b.bad });
    for (const l of this.#m.layers) out.push({ id: l.pointId, createdAt: l.createdAt, bad: l.bad });
    return out;
  }

  views(): ViewEntry[] { return this.#m.views.map((v) => ({ ...v })); }

  /** Files the replica holds (for storage accounting). */
  files(): string[] {
    return [this.#m.base.file, ...(this.#m.base.sums ? [this.#m.base.sums] : []), ...this.#m.layers.flatMap((l) => [l.file, l.sums]), ...this.#m.views.filter((v) => !isAbsolute(v.file)).map((v) => v.file)].map((f) => join(this.dir, f));
  }

  /**
   * Writes one recovery point: the extents changed since the newest point. Offsets must be
   * aligned to the block size and lengths whole blocks (the last block of the disk may be short).
   * Resolves once the point is durable and named; on failure nothing is named or left behind.
   */
  async applyPoint(pointId: string, extents: AsyncIterable<ApplyExtent> | Iterable<ApplyExtent>, opts: { createdAt?: string } = {}): Promise<PointInfo & { bytes: number }> {
    const w = await this.beginPoint(pointId);
    let bytes = 0;
    try {
      for await (const e of extents) {
        await w.write(e.offset, e.data);
        bytes += e.data.length;
      }
      return { ...(await w.commit(opts)), bytes };
    } catch (err) {
      await w.abort().catch(() => {});
      throw err;
    }
  }

  /**
   * Starts receiving a point: an overlay on the newest layer that takes writes, checkpoints
   * (durable; the caller acknowledges up to there) and finally becomes a named point. One point
   * is received at a time; an unfinished one survives restarts and is taken up by resumePoint().
   */
  beginPoint(pointId: string, opts: { progress?: unknown } = {}): Promise<PointWriter> {
    return this.#serial(async () => {
      checkId(pointId, 'point');
      if (this.points().some((p) => p.id === pointId) || this.#m.merging === pointId) throw conflict('replica-point-exists', `Point ${pointId} already exists in ${this.dir}.`);
      if (this.#m.staging) {
        throw conflict('replica-point-in-progress', `Point ${this.#m.staging.pointId} is still being received in ${this.dir}.`, { hint: 'Resume it, or abort it before starting another.' });
      }
      const file = `p-${pointId}.qcow2`;
      const journal = `p-${pointId}.journal`;
      await rm(join(this.dir, file), { force: true });
      await this.#createImage(file, this.#top());
      await writeFile(join(this.dir, journal), '');
      await fsyncPath(join(this.dir, journal));
      await fsyncDir(this.dir);
      this.#m.staging = { pointId, file, journal, journalLength: 0, progress: opts.progress ?? null };
      await this.#save();
      return this.#openWriter();
    });
  }

  /** The point being received, if any, with the progress its last checkpoint recorded;
   * `committing` when it was received whole and a commit that failed after its last checkpoint
   * left it unnamed (finishCommit names it). */
  staged(): { pointId: string; progress: unknown; committing: boolean } | null {
    const s = this.#m.staging;
    return s ? { pointId: s.pointId, progress: s.progress, committing: s.committing !== undefined } : null;
  }

  /** Names the staged point whose commit failed after its last checkpoint (see staged()). */
  finishCommit(): Promise<PointInfo> {
    return this.#serial(() => this.#finishCommit());
  }

  /** Takes up the point being received where its last checkpoint left it. */
  resumePoint(): Promise<PointWriter> {
    return this.#serial(async () => {
      const s = this.#m.staging;
      if (!s) throw notFound('replica-no-point-in-progress', `No point is being received in ${this.dir}.`);
      if (s.committing) throw conflict('replica-point-committing', `Point ${s.pointId} in ${this.dir} was received whole and is being committed; it takes no more writes.`, { hint: 'Finish its commit (finishCommit).' });
      await truncate(join(this.dir, s.journal), s.journalLength); // records after the checkpoint are not acknowledged
      return this.#openWriter();
    });
  }

  /** A bootable qcow2 of a point: a fresh overlay on its layer, in time independent of size. */
  openView(pointId: string, viewId: string = randomUUID()): Promise<ReplicaView> {
    return this.#serial(async () => {
      checkId(viewId, 'view');
      const point = this.points().find((p) => p.id === pointId);
      if (!point) throw notFound('replica-point-not-found', `Point ${pointId} is not retained in ${this.dir}.`, { hint: 'List the points and choose a retained one.' });
      if (point.bad) throw conflict('replica-point-bad', `Point ${pointId} failed verification and cannot be used.`, { hint: 'Choose another point; scrub reported which points are damaged.' });
      if (this.#m.views.some((v) => v.id === viewId)) throw conflict('replica-view-exists', `A view ${viewId} already exists.`);
      const layerFile = this.#m.base.pointId === pointId ? this.#m.base.file : this.#m.layers.find((l) => l.pointId === pointId)!.file;
      const file = join('views', `${viewId}.qcow2`);
      await rm(join(this.dir, file), { force: true });
      await this.#createImage(file, layerFile, '../');
      await fsyncDir(join(this.dir, 'views'));
      this.#m.views.push({ id: viewId, pointId, file, createdAt: new Date().toISOString() });
      await this.#save();
      return this.#viewOf(viewId, pointId, file);
    });
  }

  /** Closes a view (or export); its file is removed unless `keepFile` (an export whose machine
   * made it standalone, or that the caller removes itself). */
  closeView(viewId: string, opts: { keepFile?: boolean } = {}): Promise<void> {
    return this.#serial(async () => {
      const v = this.#m.views.find((x) => x.id === viewId);
      if (!v) return;
      this.#m.views = this.#m.views.filter((x) => x.id !== viewId);
      await this.#save();
      if (!opts.keepFile) await rm(resolve(this.dir, v.file), { force: true });
    });
  }

  /**
   * Exports a point as a plain qcow2 overlay at `path`, outside the replica (a recovered machine's
   * own directory): copy-on-write over the point's layer, in time independent of the disk size.
   * The machine's writes stay in that file (unencrypted, like any production disk); the point's
   * layers are never written. Like a view it holds the chain (retention waits) until closed. Its
   * backing chain is encrypted when the replica is, so QEMU needs `secrets()` to open it until
   * the machine streams the chain into the file (commit).
   */
  exportPoint(pointId: string, path: string, viewId: string = randomUUID()): Promise<ReplicaView> {
    return this.#serial(async () => {
      checkId(viewId, 'view');
      if (!isAbsolute(path)) throw invalid('replica-export-path', `An export path must be absolute; ${path} is not.`);
      const point = this.points().find((p) => p.id === pointId);
      if (!point) throw notFound('replica-point-not-found', `Point ${pointId} is not retained in ${this.dir}.`, { hint: 'List the points and choose a retained one.' });
      if (point.bad) throw conflict('replica-point-bad', `Point ${pointId} failed verification and cannot be used.`, { hint: 'Choose another point; scrub reported which points are damaged.' });
      if (this.#m.views.some((v) => v.id === viewId)) throw conflict('replica-view-exists', `A view ${viewId} already exists.`);
      const layerFile = this.#m.base.pointId === pointId ? this.#m.base.file : this.#m.layers.find((l) => l.pointId === pointId)!.file;
      const abs = join(this.dir, layerFile);
      await mkdir(dirname(path), { recursive: true });
      await rm(path, { force: true });
      await this.#createImage(path, null, '', { name: this.#m.encryption ? jsonName({ path: abs, secretId: SECRET_ID }) : abs, format: 'qcow2' }, true);
      await fsyncDir(dirname(path));
      this.#m.views.push({ id: viewId, pointId, file: path, createdAt: new Date().toISOString() });
      await this.#save();
      return { id: viewId, pointId, path, drive: jsonName({ path, secretId: null }), secretId: this.#m.encryption ? SECRET_ID : null };
    });
  }

  /** Block digests (src/datapath/digest.ts) of the replica's newest content: what a resync by
   * digests compares the source against, so only differing blocks are sent. Holes are not read. */
  digests(blockSize: number, signal?: AbortSignal): Promise<DigestMap> {
    return this.#serial(async () => this.#withNbd(jsonName(this.#spec(this.#top())), true, async (nbd) => {
      const zero = await nbd.blockStatusAll('base:allocation').catch(() => null);
      const data = zero?.filter((e) => (e.flags & 2) === 0).map((e) => {
        const start = Math.floor(e.offset / blockSize) * blockSize;
        return { offset: start, length: Math.min(this.#m.size, Math.ceil((e.offset + e.length) / blockSize) * blockSize) - start };
      });
      return digestReader({ size: this.#m.size, read: (o, l) => { signal?.throwIfAborted(); return nbd.read(o, l); } }, { blockSize, ...(data ? { dataExtents: data } : {}) });
    }));
  }

  /** The secrets a QEMU process needs to open this replica's images (empty when plain). */
  secrets(): Secret[] {
    const k = this.#currentKey();
    return k ? [{ id: SECRET_ID, data: k.secret }] : [];
  }

  /**
   * Keeps `oldestKept` and every newer point; older points are merged into the base, oldest
   * first. Deferred (nothing merged) while any view is open or a point is being received, since
   * both read through the base.
   */
  retain(oldestKept: string): Promise<{ dropped: string[]; deferred: boolean }> {
    return this.#serial(async () => {
      const idx = this.#m.layers.findIndex((l) => l.pointId === oldestKept);
      if (idx < 0) {
        if (this.#m.base.pointId === oldestKept) return { dropped: [], deferred: false };
        throw notFound('replica-point-not-found', `Point ${oldestKept} is not retained in ${this.dir}.`);
      }
      // Views and a point being received hold the chain open (QEMU's image locks agree).
      if (this.#m.views.length > 0 || this.#m.staging) return { dropped: [], deferred: true };
      const dropped: string[] = [];
      for (let i = 0; i <= idx; i++) {
        const l = this.#m.layers[0]!;
        if (this.#m.base.pointId) dropped.push(this.#m.base.pointId);
        this.#m.merging = l.pointId;
        await this.#save();
        await this.#finishMerge();
      }
      return { dropped, deferred: false };
    });
  }

  /** Removes the newest point when it is `pointId` and nothing uses it (no view of it, no point
   * being received on top): a point the vault refused (`stale`) is never offered. Returns
   * whether it was removed; older points are untouched. */
  discardNewest(pointId: string): Promise<boolean> {
    return this.#serial(async () => {
      const last = this.#m.layers.at(-1);
      if (!last || last.pointId !== pointId || this.#m.staging || this.#m.merging) return false;
      if (this.#m.views.some((v) => v.pointId === pointId)) return false;
      this.#m.layers.pop();
      await this.#save();
      await rm(join(this.dir, last.file), { force: true });
      await rm(join(this.dir, last.sums), { force: true });
      return true;
    });
  }

  /** Re-reads every block each layer holds and checks it against its stored checksum. Points
   * whose view would read a damaged block are marked bad (persisted). */
  scrub(): Promise<ScrubReport> {
    return this.#serial(async () => {
      const holders: Holder[] = [{ pointId: this.#m.base.pointId, file: this.#m.base.file, sums: this.#m.base.sums }, ...this.#m.layers];
      const sumsOf: (BlockSums | null)[] = [];
      const damagedOf: (Set<number> | 'all')[] = [];
      const report: ScrubReport = { checkedBlocks: 0, damaged: [], badPoints: [] };
      for (const h of holders) {
        let sums: BlockSums = new Map();
        let damaged: Set<number> | 'all';
        let reason = '';
        try {
          if (h.sums) sums = await readSums(join(this.dir, h.sums), this.#m.blockSize);
          damaged = await this.#verifyLayerPatiently(h.file, sums);
        } catch (err) {
          // Only a verdict on the layer itself (its checksums unreadable, the image refused by
          // QEMU) condemns the whole file; a passing failure to serve it fails the scrub instead,
          // before anything is marked, so a busy machine never turns good points bad.
          if (err instanceof ReboundError && err.retryable) throw err;
          damaged = 'all';
          reason = err instanceof Error ? err.message : String(err);
        }
        report.checkedBlocks += sums.size;
        sumsOf.push(damaged === 'all' ? null : sums);
        damagedOf.push(damaged);
        if (damaged === 'all') report.damaged.push({ pointId: h.pointId, file: h.file, offset: null, reason });
        else for (const b of damaged) report.damaged.push({ pointId: h.pointId, file: h.file, offset: b * this.#m.blockSize });
      }
      // Point k (holder k) is bad when, for some damaged block, the nearest holder at or below k
      // that holds the block is the damaged one.
      const bad = holders.map(() => false);
      damagedOf.forEach((d, h) => {
        if (d === 'all') {
          for (let k = h; k < holders.length; k++) bad[k] = true;
          return;
        }
        for (const block of d) {
          for (let k = h; k < holders.length; k++) {
            if (k > h && sumsOf[k]?.has(block)) break;
            bad[k] = true;
          }
        }
      });
      if (bad[0] && this.#m.base.pointId) this.#m.base.bad = true;
      this.#m.layers.forEach((l, i) => { if (bad[i + 1]) l.bad = true; });
      await this.#save();
      report.badPoints = this.points().filter((p) => p.bad).map((p) => p.id);
      return report;
    });
  }

  /** Re-keys every image of the replica to `next` (add a keyslot, remove the old one); data is
   * not rewritten. Interrupted, it is finished by open() given both keys. */
  rotateKey(next: AtRestKey): Promise<void> {
    return this.#serial(async () => {
      if (!this.#m.encryption) throw conflict('replica-not-encrypted', `The replica in ${this.dir} is not encrypted; there is no key to rotate.`);
      if (next.id === this.#m.encryption.keyId) return;
      this.#keys.set(next.id, next);
      await rm(join(this.dir, TEMPLATE), { force: true }); // it holds the old key: made again
      this.#m.encryption.rotatingTo = next.id;
      await this.#save();
      await this.#finishRotation();
    });
  }

  // ---- internals ----

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  #sum(data: Uint8Array): Buffer {
    return this.#sumsKey ? keyedChecksum(this.#sumsKey, data) : checksum(data);
  }

  #currentKey(): AtRestKey | null {
    const e = this.#m.encryption;
    if (!e) return null;
    const k = this.#keys.get(e.keyId);
    if (!k) throw new ReboundError('forbidden', 'replica-key-missing', `The at-rest key ${e.keyId} of ${this.dir} was not given.`);
    return k;
  }

  #spec(file: string, alone = false): { path: string; secretId: string | null; alone: boolean } {
    return { path: join(this.dir, file), secretId: this.#m.encryption ? SECRET_ID : null, alone };
  }

  /** Writes the manifest. The in-memory manifest is changed before it is written, so when the
   * write fails (a full recovery site) it goes back to the last one written: nothing may act on a
   * state that is not durable. Before, a checkpoint or commit whose manifest write failed left
   * the point acknowledged (or named) in memory only, the master target answered the process
   * server from that, and frames were never sent again that the disk did not hold (soak seed
   * 10091, disk-full-recovery in the first copy: the records disk's first point lost). */
  async #save(): Promise<void> {
    try {
      await saveManifest(this.dir, this.#m);
    } catch (err) {
      this.#m = await loadManifest(this.dir);
      throw err;
    }
  }

  #top(): string {
    return this.#m.layers[this.#m.layers.length - 1]?.file ?? this.#m.base.file;
  }

  #viewOf(id: string, pointId: string, file: string): ReplicaView {
    return { id, pointId, path: join(this.dir, file), drive: jsonName(this.#spec(file)), secretId: this.#m.encryption ? SECRET_ID : null };
  }

  #checkExtent(offset: number, length: number): void {
    const bs = this.#m.blockSize;
    const end = offset + length;
    if (offset % bs !== 0 || (length % bs !== 0 && end !== this.#m.size) || end > this.#m.size || length === 0) {
      throw invalid('replica-extent-unaligned', `An extent at ${offset} of ${length} bytes is not whole ${bs}-byte blocks inside the ${this.#m.size}-byte disk.`, {
        hint: 'Send whole blocks (the digest tracker and CBT produce them).',
      });
    }
  }

  async #createImage(file: string, backingFile: string | null, rel = '', backing?: { name: string; format: 'raw' | 'qcow2' }, plain = false): Promise<void> {
    const opts = [`cluster_size=${this.#m.blockSize}`];
    const secrets = this.secrets();
    if (this.#m.encryption && !plain) {
      // An encrypted image is a copy of the replica's empty encrypted template, a layer's with
      // its backing pointer set (`rebase -u` writes only the header): creating a LUKS image
      // costs about a second of QEMU's PBKDF benchmark, opening one only LUKS_ITER_MS.
      const template = await this.#template();
      const dest = resolve(this.dir, file);
      await copyFile(template, dest);
      if (backing || backingFile) {
        const name = backing?.name ?? backingName(join(this.dir, backingFile!), rel + backingFile!, SECRET_ID);
        await runQemu('qemu-img', ['rebase', '-u', '-b', name, '-F', backing?.format ?? 'qcow2', jsonName({ path: dest, secretId: SECRET_ID })], secrets);
      }
      await fsyncPath(dest);
      return;
    }
    const args = ['create', '-q', '-f', 'qcow2', '-o', opts.join(',')];
    if (backing) args.push('-b', backing.name, '-F', backing.format);
    else if (backingFile) args.push('-b', backingName(join(this.dir, backingFile), rel + backingFile, this.#m.encryption ? SECRET_ID : null), '-F', 'qcow2');
    args.push(resolve(this.dir, file), String(this.#m.size));
    await runQemu('qemu-img', args, secrets);
    await fsyncPath(resolve(this.dir, file));
  }

  /** The replica's empty encrypted image of its size, made once (and again after a key rotation). */
  async #template(): Promise<string> {
    const path = join(this.dir, TEMPLATE);
    if (await exists(path)) return path;
    const tmp = join(this.dir, `${TEMPLATE}.tmp`);
    await rm(tmp, { force: true });
    await runQemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', [`cluster_size=${this.#m.blockSize}`, 'encrypt.format=luks', `encrypt.key-secret=${SECRET_ID}`, `encrypt.iter-time=${LUKS_ITER_MS}`].join(','), tmp, String(this.#m.size)], this.secrets());
    await fsyncPath(tmp);
    await rename(tmp, path);
    return path;
  }

  /** Serves one image over a private qemu-nbd and connects to it. */
  async #serve(name: string, readOnly: boolean, secrets: Secret[] = this.secrets()): Promise<{ nbd: NbdClient; close(): Promise<void> }> {
    const stem = join(this.dir, `.nbd-${process.pid}-${randomUUID().slice(0, 8)}`);
    const sock = `${stem}.sock`;
    // The socket file is no readiness signal: qemu-nbd binds it, then listens, then opens the
    // image, and a busy machine can stop it between bind and listen, when a connect is refused.
    // It writes its pid file only once it listens and has the image open.
    const pidFile = `${stem}.pid`;
    const args = [`--socket=${sock}`, `--pid-file=${pidFile}`, '--cache=writeback', '--aio=threads', ...(readOnly ? ['--read-only'] : []), name];
    const s = await spawnWithSecrets('qemu-nbd', args, secrets);
    let exited = false;
    void s.exited.then(() => (exited = true));
    const stop = async (): Promise<void> => {
      if (!exited) {
        // It exits by itself once its only client disconnects; a refused start may leave it up.
        if (!(await Promise.race([s.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 3000))]))) s.child.kill('SIGTERM');
        const t = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
        await s.exited;
        clearTimeout(t);
      }
      await rm(sock, { force: true });
      await rm(pidFile, { force: true });
    };
    try {
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (!(await exists(pidFile))) {
        if (exited) throw startFailure(name, s.stderr());
        if (Date.now() > deadline) throw new ReboundError('unavailable', 'replica-nbd-failed', `qemu-nbd did not start serving ${name} within ${START_TIMEOUT_MS / 1000} s.`, { hint: 'The machine may be overloaded; try again.' });
        await new Promise((r) => setTimeout(r, 10));
      }
      await s.forgetSecrets();
      const nbd = await NbdClient.connect({ path: sock }, { connectTimeoutMs: Math.max(5000, deadline - Date.now()), metaContexts: ['base:allocation'] }).catch(async (err: unknown) => {
        // Refused or cut during the handshake: if qemu-nbd died, its own words say why.
        if (await Promise.race([s.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1000))])) throw startFailure(name, s.stderr(), err);
        throw err;
      });
      return {
        nbd,
        close: async () => {
          await nbd.disconnect().catch(() => {});
          await stop();
        },
      };
    } catch (err) {
      await stop();
      throw err;
    }
  }

  async #withNbd<T>(name: string, readOnly: boolean, fn: (c: NbdClient) => Promise<T>): Promise<T> {
    const served = await this.#serve(name, readOnly);
    try {
      return await fn(served.nbd);
    } finally {
      await served.close();
    }
  }

  async #openWriter(): Promise<PointWriter> {
    const st = this.#m.staging!;
    const bs = this.#m.blockSize;
    const served = await this.#serve(jsonName(this.#spec(st.file)), false);
    const journal = await open(join(this.dir, st.journal), 'a');
    const inflight = new Set<Promise<void>>();
    let failed: unknown;
    let records: Buffer[] = [];
    let journalLength = st.journalLength;
    let progress = st.progress;
    let closed = false;
    const settle = async (): Promise<void> => {
      await Promise.all(inflight);
      if (failed) throw failed;
    };
    const shut = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await Promise.allSettled(inflight);
      await served.close();
      await journal.close();
    };
    const checkpoint = async (p: unknown, committing?: { createdAt: string }): Promise<void> => {
      await settle();
      await served.nbd.flush();
      const add = Buffer.concat(records);
      records = [];
      if (add.length > 0) {
        await journal.write(add, 0, add.length, null);
        await journal.datasync();
      }
      journalLength += add.length;
      progress = p;
      await this.#serial(async () => {
        this.#m.staging = { ...st, journalLength, progress, ...(committing ? { committing } : {}) };
        await this.#save();
      });
    };
    return {
      pointId: st.pointId,
      get progress() { return progress; },
      write: async (offset: number, data: Uint8Array): Promise<void> => {
        if (closed) throw conflict('replica-writer-closed', `Point ${st.pointId} is no longer open for writing.`);
        if (failed) throw failed;
        this.#checkExtent(offset, data.length);
        for (let at = 0; at < data.length; at += bs) {
          const r = Buffer.alloc(JOURNAL_RECORD);
          r.writeBigUInt64BE(BigInt((offset + at) / bs));
          this.#sum(data.subarray(at, Math.min(data.length, at + bs))).copy(r, 8);
          records.push(r);
        }
        for (let at = 0; at < data.length; at += MAX_WRITE) {
          const p = served.nbd.write(offset + at, data.subarray(at, Math.min(data.length, at + MAX_WRITE))).catch((err: unknown) => { failed ??= err; });
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
          if (inflight.size >= IN_FLIGHT) await Promise.race(inflight);
        }
        if (failed) throw failed;
      },
      checkpoint: (p: unknown) => checkpoint(p),
      commit: async (opts: { createdAt?: string; progress?: unknown } = {}): Promise<PointInfo> => {
        // The last checkpoint says the point is being committed, in the same manifest write as
        // the caller's final progress: a kill from here on leaves a point the next open names
        // (#recover), never one staged with a progress that says it was all received.
        await checkpoint(opts.progress ?? progress, { createdAt: opts.createdAt ?? new Date().toISOString() });
        await shut();
        return this.#serial(() => this.#finishCommit());
      },
      abandon: shut,
      abort: async (): Promise<void> => {
        await shut();
        await this.#serial(async () => {
          if (this.#m.staging?.pointId !== st.pointId) return;
          this.#m.staging = null;
          await this.#save();
          await rm(join(this.dir, st.file), { force: true });
          await rm(join(this.dir, st.journal), { force: true });
        });
      },
    };
  }

  /** #verifyLayer, tried again when the layer could not be served for a passing reason. */
  async #verifyLayerPatiently(file: string, sums: BlockSums): Promise<Set<number>> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#verifyLayer(file, sums);
      } catch (err) {
        if (attempt >= SCRUB_ATTEMPTS || !(err instanceof ReboundError && err.retryable)) throw err;
        await new Promise((r) => setTimeout(r, 250 * attempt));
      }
    }
  }

  async #verifyLayer(file: string, sums: BlockSums): Promise<Set<number>> {
    const damaged = new Set<number>();
    if (sums.size === 0) return damaged;
    const bs = this.#m.blockSize;
    await this.#withNbd(jsonName(this.#spec(file, true)), true, async (nbd) => {
      const blocks = [...sums.keys()];
      for (let i = 0; i < blocks.length; i += IN_FLIGHT) {
        await Promise.all(blocks.slice(i, i + IN_FLIGHT).map(async (b) => {
          const off = b * bs;
          try {
            const data = await nbd.read(off, Math.min(bs, this.#m.size - off));
            if (!this.#sum(data).equals(sums.get(b)!)) damaged.add(b);
          } catch (err) {
            // A lost connection says nothing about the block: the whole layer is tried again.
            if (err instanceof ReboundError && LOST_CONNECTION.has(err.code)) throw err;
            damaged.add(b);
          }
        }));
      }
    });
    return damaged;
  }

  async #finishMerge(): Promise<void> {
    const l = this.#m.layers[0];
    if (!l || l.pointId !== this.#m.merging) throw new ReboundError('internal', 'replica-manifest-damaged', `The replica manifest in ${this.dir} records a merge of ${this.#m.merging} that is not its oldest layer.`);
    const secrets = this.secrets();
    // 1. The layer's data into the base. Idempotent: redone in full after a crash.
    await runQemu('qemu-img', ['commit', '-q', '-d', jsonName(this.#spec(l.file))], secrets);
    await fsyncPath(join(this.dir, this.#m.base.file));
    // 2. The next layer now reads the same through the base as through the merged layer.
    const next = this.#m.layers[1];
    if (next) {
      await runQemu('qemu-img', ['rebase', '-u', '-b', backingName(join(this.dir, this.#m.base.file), this.#m.base.file, this.#m.encryption ? SECRET_ID : null), '-F', 'qcow2', jsonName(this.#spec(next.file, true))], secrets);
      await fsyncPath(join(this.dir, next.file));
    }
    // 3. The base's checksums gain the layer's, then the manifest says so.
    const bs = this.#m.blockSize;
    const sums: BlockSums = this.#m.base.sums ? await readSums(join(this.dir, this.#m.base.sums), bs) : new Map();
    for (const [k, v] of await readSums(join(this.dir, l.sums), bs)) sums.set(k, v);
    const baseSums = `base.${l.pointId}.sums`;
    await writeSums(join(this.dir, baseSums), bs, sums);
    const old = this.#m.base.sums;
    this.#m.base = { file: this.#m.base.file, pointId: l.pointId, sums: baseSums, createdAt: l.createdAt, bad: l.bad };
    this.#m.layers.shift();
    this.#m.merging = null;
    await this.#save();
    // 4. What no longer belongs (also swept on open if this is interrupted).
    await rm(join(this.dir, l.file), { force: true });
    await rm(join(this.dir, l.sums), { force: true });
    if (old && old !== baseSums) await rm(join(this.dir, old), { force: true });
  }

  async #finishRotation(): Promise<void> {
    const e = this.#m.encryption!;
    const oldKey = this.#keys.get(e.keyId);
    const newKey = e.rotatingTo ? this.#keys.get(e.rotatingTo) : undefined;
    if (!oldKey || !newKey) {
      throw new ReboundError('forbidden', 'replica-key-missing', `The replica in ${this.dir} is being re-keyed from ${e.keyId} to ${e.rotatingTo ?? '?'}; both keys are needed to finish.`);
    }
    // Exports (absolute paths) are plain images over the chain: nothing of theirs is keyed.
    const files = [this.#m.base.file, ...this.#m.layers.map((l) => l.file), ...this.#m.views.filter((v) => !isAbsolute(v.file)).map((v) => v.file)];
    for (const file of files) {
      // Each file alone (without backing): during the rotation the chain holds both keys.
      const alone = jsonName({ path: join(this.dir, file), secretId: SECRET_ID, alone: true });
      if (!(await this.#unlocks(file, newKey))) {
        await runQemu('qemu-img', ['amend', '-o', `encrypt.state=active,encrypt.new-secret=${NEW_SECRET_ID},encrypt.iter-time=${LUKS_ITER_MS}`, alone], [
          { id: SECRET_ID, data: oldKey.secret },
          { id: NEW_SECRET_ID, data: newKey.secret },
        ]);
      }
      if (await this.#unlocks(file, oldKey)) {
        await runQemu('qemu-img', ['amend', '-o', `encrypt.state=inactive,encrypt.old-secret=${NEW_SECRET_ID}`, alone], [
          { id: SECRET_ID, data: newKey.secret },
          { id: NEW_SECRET_ID, data: oldKey.secret },
        ]);
      }
      await fsyncPath(join(this.dir, file));
    }
    // The checksum key is re-sealed last: until this save, the old key (still needed) opens it.
    this.#m.encryption = { keyId: newKey.id, rotatingTo: null, sealedSumsKey: sealKey(this.#sumsKey!, newKey) };
    await this.#save();
  }

  async #unlocks(file: string, key: AtRestKey): Promise<boolean> {
    const alone = jsonName({ path: join(this.dir, file), secretId: SECRET_ID, alone: true });
    return runQemu('qemu-io', ['-r', '-c', 'read 0 512', alone], [{ id: SECRET_ID, data: key.secret }]).then(() => true, () => false);
  }

  /** Names the staged point that commit checkpointed as committing: its image is made durable,
   * its block checksums written from the journal, and it becomes the newest layer. Run by commit,
   * and by #recover for a commit a kill cut off. */
  async #finishCommit(): Promise<PointInfo> {
    const st = this.#m.staging;
    if (!st?.committing) throw new ReboundError('internal', 'replica-not-committing', `No point is being committed in ${this.dir}.`);
    await fsyncPath(join(this.dir, st.file));
    const sums: BlockSums = new Map();
    const j = await readFile(join(this.dir, st.journal));
    for (let at = 0; at + JOURNAL_RECORD <= st.journalLength; at += JOURNAL_RECORD) {
      sums.set(Number(j.readBigUInt64BE(at)), Buffer.from(j.subarray(at + 8, at + JOURNAL_RECORD)));
    }
    const sumsFile = `p-${st.pointId}.sums`;
    await writeSums(join(this.dir, sumsFile), this.#m.blockSize, sums);
    const entry: LayerEntry = { pointId: st.pointId, file: st.file, sums: sumsFile, createdAt: st.committing.createdAt, bad: false };
    this.#m.layers.push(entry);
    this.#m.staging = null;
    await this.#save();
    await rm(join(this.dir, st.journal), { force: true });
    return { id: entry.pointId, createdAt: entry.createdAt, bad: false };
  }

  async #recover(): Promise<void> {
    if (this.#m.merging) await this.#finishMerge();
    if (this.#m.staging?.committing) await this.#finishCommit();
    if (this.#m.encryption?.rotatingTo) await this.#finishRotation();
    const staging = this.#m.staging ? [this.#m.staging.file, this.#m.staging.journal] : [];
    if (this.#m.encryption?.rotatingTo) await rm(join(this.dir, TEMPLATE), { force: true });
    const keep = new Set([MANIFEST, 'views', TEMPLATE, this.#m.base.file, ...(this.#m.base.sums ? [this.#m.base.sums] : []), ...this.#m.layers.flatMap((l) => [l.file, l.sums]), ...staging]);
    for (const name of await readdir(this.dir)) if (!keep.has(name)) await rm(join(this.dir, name), { force: true, recursive: true });
    const views = new Set(this.#m.views.map((v) => v.file));
    for (const name of await readdir(join(this.dir, 'views'))) if (!views.has(join('views', name))) await rm(join(this.dir, 'views', name), { force: true });
  }
}

const sealingKey = (k: AtRestKey): Buffer => Buffer.from(hkdfSync('sha256', Buffer.from(k.secret), Buffer.from('rebound/replica-sums-seal/v1'), Buffer.alloc(0), 32));

function sealKey(key: Buffer, with_: AtRestKey): string {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', sealingKey(with_), iv);
  return Buffer.concat([iv, c.update(key), c.final(), c.getAuthTag()]).toString('base64');
}

function openSealedKey(sealed: string, with_: AtRestKey, dir: string): Buffer {
  const b = Buffer.from(sealed, 'base64');
  try {
    const d = createDecipheriv('aes-256-gcm', sealingKey(with_), b.subarray(0, 12));
    d.setAuthTag(b.subarray(b.length - 16));
    return Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()]);
  } catch (err) {
    throw new ReboundError('forbidden', 'replica-key-wrong', `The at-rest key ${with_.id} given for ${dir} is not the one it was written with.`, {
      hint: 'Use the vault key the replica was created with (or rotated to).',
      cause: err,
    });
  }
}

function checkId(id: string, what: string): void {
  if (!ID_RE.test(id)) throw invalid(`replica-${what}-id`, `"${id}" is not a usable ${what} id (letters, digits, '.', '_', '-'; up to 101 characters).`);
}

const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** Why qemu-nbd exited before serving `name`. Another process holding the image's lock is a
 * passing condition (retryable); any other refusal means the image itself cannot be opened. */
function startFailure(name: string, stderr: string, cause?: unknown): ReboundError {
  const why = stderr.trim().split('\n').slice(-3).join(' ') || 'it exited without a message';
  if (/lock/i.test(why)) {
    return new ReboundError('unavailable', 'replica-image-busy', `qemu-nbd could not serve ${name}: ${why}.`, { hint: 'Another process has the image open; close it, or try again later.', cause });
  }
  return new ReboundError('internal', 'replica-image-unreadable', `qemu-nbd could not open ${name}: ${why}.`, { hint: 'Run a scrub; the points that read this image will be marked bad.', cause });
}
