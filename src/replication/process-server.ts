// The process server: receives transfers from agents into its disk cache (spool.ts), which is
// what it acknowledges, and forwards each cached transfer to the master target — compressed
// (zstd, per the policy) and encrypted (AES-256-GCM session keys) on that link, under the
// policy's bandwidth cap — strictly in point order per item, resuming where the master target's
// acknowledgements stop. A transfer is forwarded while it still arrives, one durable (and so
// acknowledged) record behind the agent's stream at most: the two hops overlap instead of
// running one after the other; its end goes on only once the whole transfer is cached. Finished
// transfers leave a tombstone so an agent that reconnects after a crash hears "already
// acknowledged" rather than sending again.
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { PeerCertificate } from 'node:tls';
import type { Duplex } from 'node:stream';
import { receiveTransfer, sendTransfer } from '../datapath/frame-stream.ts';
import type { PlannedExtent } from '../datapath/frame-stream.ts';
import { conflict, invalid, ReboundError } from '../domain/errors.ts';
import { Spool, SpoolReader } from './spool.ts';
import type { SpoolEntry } from './spool.ts';
import type { ProcessServerLink } from './link.ts';
import { listenTransfers, openTransfer } from './wire.ts';
import type { DataListener, TlsMaterial, TransferHeader } from './wire.ts';
import { Throttle } from './throttle.ts';

export interface ProcessServerOptions {
  dir: string;
  transportKey: Buffer;
  material: TlsMaterial | null;
  host?: string;
  port?: number;
  logger: Logger;
  link?: ProcessServerLink;
  checkPeer?: (cert: PeerCertificate) => void;
  /** Frames in flight on the forwarding link; default: sized for each transfer (windowFor). */
  window?: number;
  /** Where the master target of a transfer's target site listens now (it may have moved since
   * the transfer was cached, e.g. after a restart); default: the address in the header. */
  masterTargetFor?(header: TransferHeader): Promise<string> | string;
}

/** A tombstone of an item's newest point is kept this long after the item's last transfer (an
 * agent may be down for hours and then resend its open point); older points' go at once. */
const TOMBSTONE_MS = 7 * 24 * 3600_000;

/** A master target still busy with a disk's last connection is retried quietly this long. */
const BUSY_QUIET_MS = 30_000;

/** What a forwarded transfer leaves for a sender that comes back (older ones have frames and at only). */
interface Tombstone { frames: number; at: number; itemId?: string; targetSiteId?: string; pointSeq?: number }

/** Tombstones are kept per item and direction (its target site): point sequences are the agent's. */
const stoneKey = (t: { itemId: string; targetSiteId?: string | undefined }): string => `${t.itemId}>${t.targetSiteId ?? ''}`;
/** A cached transfer, in memory: its header, how much of it is durable, and who waits for more. */
interface Cached {
  header: TransferHeader;
  complete: boolean;
  /** The last record made durable (acknowledged to the agent); -1 if none. */
  durable: number;
  /** Its cache is damaged while it still arrives: dropped once the agent's connection ends. */
  condemned?: boolean;
  /** Forwarders waiting for more of it (woken on progress, its end, its sender leaving, its drop). */
  waiters: Set<() => void>;
}

/** Forwarding order within an item: points in sequence, disks in order within a point. */
const before = (a: TransferHeader, b: TransferHeader): boolean => a.pointSeq < b.pointSeq || (a.pointSeq === b.pointSeq && a.diskIndex < b.diskIndex);

export class ProcessServer {
  readonly #o: ProcessServerOptions;
  readonly #spool: Spool;
  #listener: DataListener | undefined;
  readonly #receiving = new Set<string>();
  /** The cache's transfers, in memory: read from disk once at start, then kept up to date, so
   * picking the next transfer to forward reads no files. */
  readonly #cached = new Map<string, Cached>();
  /** Per item and direction, the point sequence of its newest tombstones and their names. */
  readonly #stones = new Map<string, { pointSeq: number; names: string[] }>();
  /** Per item: the forwarding loop, woken when a transfer completes. */
  readonly #forwarders = new Map<string, { wake: () => void; running: Promise<void> }>();
  #closed = false;
  readonly #abort = new AbortController();
  stats = { received: 0, forwarded: 0, bytesIn: 0, bytesOut: 0 };

  constructor(o: ProcessServerOptions) {
    this.#o = o;
    this.#spool = new Spool(join(o.dir, 'cache'));
  }

  get address(): string {
    if (!this.#listener) throw new Error('process server not started');
    return this.#listener.address;
  }

  async start(): Promise<void> {
    await mkdir(join(this.#o.dir, 'done'), { recursive: true });
    this.#listener = await listenTransfers({
      host: this.#o.host,
      port: this.#o.port,
      material: this.#o.material,
      checkPeer: this.#o.checkPeer,
      accept: (h) => this.#accept(h),
      handle: (h, socket) => this.#receive(h, socket),
      onError: (err) => this.#o.logger.debug({ err }, 'process server: transfer ended with an error'),
    });
    for (const t of await this.#spool.list()) this.#cached.set(t.transferId, { header: t.header, complete: t.complete, durable: t.ackedThrough, waiters: new Set() });
    for (const t of this.#cached.values()) this.#kick(t.header.itemId);
    await this.#pruneTombstones();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    await this.#listener?.close();
    for (const f of this.#forwarders.values()) f.wake();
    for (const c of this.#cached.values()) for (const w of c.waiters) w();
    await Promise.all([...this.#forwarders.values()].map((f) => f.running.catch(() => undefined)));
  }

  async #accept(h: TransferHeader): Promise<void> {
    if (this.#closed) throw new ReboundError('unavailable', 'process-server-closing', 'The process server is shutting down.', { retryable: true });
    if (typeof h?.transferId !== 'string' || typeof h.itemId !== 'string' || !Number.isInteger(h.frames) || h.frames < 0) throw invalid('transfer-header-invalid', 'A transfer header is missing fields.');
    this.#spool.dirOf(h.transferId);
    if (this.#receiving.has(h.transferId)) throw conflict('transfer-busy', `Transfer ${h.transferId} is already being received; retry when that connection ends.`, { retryable: true });
  }

  async #receive(h: TransferHeader, socket: Duplex): Promise<void> {
    this.#receiving.add(h.transferId);
    let entry: SpoolEntry | undefined;
    try {
      const done = await this.#tombstone(h.transferId);
      entry = done === null ? await this.#spool.open(h) : undefined;
      if (entry) {
        const c = this.#cached.get(h.transferId);
        if (c) Object.assign(c, { complete: entry.complete, durable: entry.ackedThrough });
        else this.#cached.set(h.transferId, { header: h, complete: entry.complete, durable: entry.ackedThrough, waiters: new Set() });
        // Forwarding starts now, as the frames arrive (and the forwarder drops older points'
        // unfinished transfers: a newer point means the agent abandoned them).
        this.#kick(h.itemId);
      }
      await receiveTransfer(socket, {
        vaultKey: this.#o.transportKey,
        ackedThrough: async (tid) => {
          if (tid !== h.transferId) throw invalid('transfer-id-mismatch', `The stream says transfer ${tid}, its header ${h.transferId}.`);
          if (done !== null || entry!.complete) return h.frames;
          return entry!.ackedThrough;
        },
        apply: async (frame) => {
          const fh = frame.header;
          if (fh.itemId !== h.itemId || fh.diskId !== h.diskId || fh.pointId !== h.pointId) throw invalid('transfer-wrong-disk', `A frame for ${fh.itemId}/${fh.diskId}/${fh.pointId} arrived in transfer ${h.transferId}.`);
          await entry!.append(fh.seq, fh.offset, frame.data, frame.checksum);
          this.stats.bytesIn += frame.data.length;
        },
        checkpoint: async (_tid, seq) => {
          await entry!.checkpoint(seq);
          this.#progress(h.transferId, { durable: seq });
        },
        complete: async (_tid, frames) => {
          if (entry && !entry.complete) await entry.checkpoint(frames - 1, true);
          this.#progress(h.transferId, { durable: frames - 1, complete: true });
        },
      });
      this.stats.received++;
    } finally {
      this.#receiving.delete(h.transferId);
      await entry?.close();
      const c = this.#cached.get(h.transferId);
      if (c?.condemned) await this.#drop(h.transferId);
      else this.#progress(h.transferId, {}); // a forwarder waiting for more learns the sender left
      this.#kick(h.itemId);
    }
  }

  /** Records how far a cached transfer is durable and wakes whoever forwards it. */
  #progress(transferId: string, to: { durable?: number; complete?: boolean }): void {
    const c = this.#cached.get(transferId);
    if (!c) return;
    if (to.durable !== undefined) c.durable = Math.max(c.durable, to.durable);
    if (to.complete) c.complete = true;
    for (const w of c.waiters) w();
  }

  /** Waits until record `seq` of a transfer may be forwarded: durable, and for its last record
   * the whole transfer cached (so the end frame never goes ahead of the agent's). Throws when the
   * transfer was dropped, or its sender left before sending it (the forward pauses until the
   * sender is back; the master target keeps what it acknowledged). */
  async #forwardable(transferId: string, seq: number): Promise<void> {
    for (;;) {
      const c = this.#cached.get(transferId);
      if (!c) throw new ReboundError('unavailable', 'transfer-dropped', `Transfer ${transferId} was dropped from the cache while it was forwarded.`, { retryable: true });
      if (c.complete || (c.durable >= seq && seq < c.header.frames - 1)) return;
      if (!this.#receiving.has(transferId) || c.condemned) throw new ReboundError('unavailable', 'transfer-source-paused', `The sender of transfer ${transferId} left after record ${c.durable}; forwarding goes on when it resends.`, { retryable: true });
      if (this.#closed) throw new ReboundError('unavailable', 'process-server-closing', 'The process server is shutting down.', { retryable: true });
      await new Promise<void>((resolve) => {
        const w = (): void => { c.waiters.delete(w); resolve(); };
        c.waiters.add(w);
      });
    }
  }

  /** Drops the item's unfinished transfers that nobody sends any more, of points before the
   * newest it has cached: the agent takes a point only after its last one is cached whole or
   * abandoned. Says whether there were any. */
  async #dropAbandoned(itemId: string): Promise<boolean> {
    let newest = -Infinity;
    for (const t of this.#cached.values()) if (t.header.itemId === itemId) newest = Math.max(newest, t.header.pointSeq);
    let any = false;
    for (const [id, t] of this.#cached) {
      if (t.header.itemId === itemId && t.header.pointSeq < newest && !t.complete && !this.#receiving.has(id)) {
        this.#o.logger.info({ transfer: id }, 'process server: dropping an unfinished transfer the agent abandoned');
        await this.#drop(id);
        any = true;
      }
    }
    return any;
  }

  async #drop(transferId: string): Promise<void> {
    const c = this.#cached.get(transferId);
    this.#cached.delete(transferId);
    for (const w of c?.waiters ?? []) w();
    await rm(join(this.#spool.root, transferId), { recursive: true, force: true });
  }

  #kick(itemId: string): void {
    const f = this.#forwarders.get(itemId);
    if (f) return f.wake();
    let wake: () => void = () => undefined;
    let woken = false;
    const state = { wake: () => { woken = true; wake(); }, running: Promise.resolve() };
    // Registered before the loop starts: with nothing cached the loop ends at once, in this same
    // tick, and must remove its own entry. Registered after, a finished loop stayed in the map and
    // every later kick woke nothing, so the item's cache was never forwarded again (found by the
    // soak: an agent resending a transfer the process server had already forwarded, after a
    // dropped acknowledgement, kicked an empty cache; net-drop-agent-ps, seed 3021).
    this.#forwarders.set(itemId, state);
    state.running = (async () => {
      let backoff = 500;
      /** Since when the master target says the disk is still busy with this server's last
       * connection (it ends that one a moment after we close it, e.g. after a paused forward). */
      let busySince: number | null = null;
      while (!this.#closed) {
        woken = false;
        const next = this.#nextFor(itemId);
        if (next === null) break; // nothing cached for the item
        if (next === undefined) {
          // The next transfer in order waits for its sender — unless a later point of the item
          // has arrived since, whenever its own connection ended.
          if (await this.#dropAbandoned(itemId)) continue;
          if (!woken) await new Promise<void>((r) => { wake = r; setTimeout(r, 1000); });
          continue;
        }
        try {
          await this.#forward(next);
          backoff = 500;
          busySince = null;
        } catch (err) {
          if (this.#closed) break;
          // The transfer's sender left before sending all of it (the loop waits for it to come
          // back), or the transfer was dropped (abandoned, or damaged): nothing to retry.
          if (err instanceof ReboundError && (err.code === 'transfer-source-paused' || err.code === 'transfer-dropped')) continue;
          if (err instanceof ReboundError && err.code === 'transfer-replayed') {
            // The master target applied this point long ago (we crashed before forgetting it).
            this.#o.logger.info({ transfer: next.header.transferId }, 'process server: the master target applied this transfer already; forgetting it');
            try {
              await this.#done(next.header);
            } catch (e) {
              this.#o.logger.warn({ err: e, transfer: next.header.transferId }, 'process server: cannot free an already-applied transfer');
            }
            continue;
          }
          if (err instanceof ReboundError && err.code === 'spool-checksum-mismatch') {
            await this.#condemn(itemId, err.message);
            continue;
          }
          const code = (err as ReboundError).code;
          busySince = code === 'transfer-busy' ? (busySince ?? Date.now()) : null;
          const quiet = busySince !== null && Date.now() - busySince < BUSY_QUIET_MS;
          this.#o.logger[quiet ? 'debug' : 'warn']({ err: { code, message: (err as Error).message }, transfer: next.header.transferId }, 'process server: forwarding failed; retrying');
          await new Promise<void>((r) => { wake = r; setTimeout(r, backoff); });
          backoff = Math.min(backoff * 2, 15_000);
        }
      }
      if (this.#forwarders.get(itemId) === state) this.#forwarders.delete(itemId);
    })();
  }

  /** What the cache still holds for an item: transfers received in full and waiting to be
   * forwarded, and transfers still arriving (or abandoned by an agent that went away). */
  pending(itemId: string): { complete: string[]; arriving: string[] } {
    const complete: string[] = [];
    const arriving: string[] = [];
    for (const [id, t] of this.#cached) {
      if (t.header.itemId !== itemId) continue;
      (t.complete ? complete : arriving).push(id);
    }
    return { complete, arriving };
  }

  /** The item's oldest cached transfer if it can be forwarded (cached whole, or arriving now);
   * undefined if it waits for its sender to come back; null if the item has nothing cached. */
  #nextFor(itemId: string): Cached | null | undefined {
    let first: Cached | undefined;
    for (const c of this.#cached.values()) {
      if (c.header.itemId !== itemId) continue;
      if (!first || before(c.header, first.header)) first = c;
    }
    if (!first) return null;
    // One with no frames is all end frame: that goes only once the agent's is here.
    const arriving = this.#receiving.has(first.header.transferId) && !first.condemned && first.header.frames > 0;
    return first.complete || arriving ? first : undefined;
  }

  async #forward(c: Cached): Promise<void> {
    const h = c.header;
    const reader = await SpoolReader.open(this.#spool.dirOf(h.transferId), h.transferId);
    try {
      const throttle = h.bandwidthBps > 0 ? new Throttle(h.bandwidthBps) : null;
      const to = (await this.#o.masterTargetFor?.(h)) || h.masterTarget;
      const socket = await openTransfer(to, h, this.#o.material, { signal: this.#abort.signal });
      await sendTransfer(socket, {
        vaultKey: this.#o.transportKey,
        transferId: h.transferId,
        window: this.#o.window,
        zstdLevel: h.compression === 'zstd' ? undefined : null,
        stream: {
          frames: h.frames,
          bytes: h.bytes,
          next: async (seq) => {
            await this.#forwardable(h.transferId, seq);
            // Verified against the source's checksum as it is read: the frame reuses it.
            const { offset, data, checksum } = await reader.read(seq);
            if (throttle) await throttle.take(data.length, this.#abort.signal);
            this.stats.bytesOut += data.length;
            return { extent: { itemId: h.itemId, diskId: h.diskId, pointId: h.pointId, offset, length: data.length } satisfies PlannedExtent, data, checksum };
          },
        },
      });
      await this.#done(h);
      this.stats.forwarded++;
    } finally {
      await reader.close().catch(() => undefined);
    }
  }

  /** Forwarded (or found already applied): a tombstone for late senders, and the cache freed. */
  async #done(h: TransferHeader): Promise<void> {
    await writeFile(join(this.#o.dir, 'done', h.transferId), JSON.stringify({ frames: h.frames, at: Date.now(), itemId: h.itemId, targetSiteId: h.targetSiteId, pointSeq: h.pointSeq } satisfies Tombstone));
    await this.#keepTombstone(stoneKey(h), h.pointSeq, h.transferId);
    await this.#drop(h.transferId);
  }

  async #condemn(itemId: string, reason: string): Promise<void> {
    this.#o.logger.error({ item: itemId, reason }, 'process server: cached data is damaged; dropping the item\'s cache and asking for a resync');
    for (const [id, t] of this.#cached) {
      if (t.header.itemId !== itemId) continue;
      // One still arriving goes when its sender's connection ends (#receive).
      if (this.#receiving.has(id)) t.condemned = true;
      else await this.#drop(id);
    }
    await this.#o.link?.requestResync(itemId, reason);
  }

  async #tombstone(transferId: string): Promise<number | null> {
    try {
      return (JSON.parse(await readFile(join(this.#o.dir, 'done', transferId), 'utf8')) as { frames: number }).frames;
    } catch {
      return null;
    }
  }

  /** Records a tombstone as its item's newest; the item's tombstones of earlier points go. */
  async #keepTombstone(key: string, pointSeq: number, name: string): Promise<void> {
    const have = this.#stones.get(key);
    if (have && have.pointSeq > pointSeq) {
      await rm(join(this.#o.dir, 'done', name), { force: true });
      return;
    }
    if (have && have.pointSeq === pointSeq) {
      if (!have.names.includes(name)) have.names.push(name);
      return;
    }
    this.#stones.set(key, { pointSeq, names: [name] });
    for (const n of have?.names ?? []) await rm(join(this.#o.dir, 'done', n), { force: true });
  }

  /** An agent resends only its open point's transfers, and takes an item's next point only after
   * releasing (or abandoning) the last, so a tombstone is needed until a later point of its item
   * has one: those go at once, whatever the clocks say. Before, tombstones went by age against
   * the wall clock, and a forward step of an hour (soak, clock-forward) dropped them all. Only
   * an item's newest tombstones are kept, for TOMBSTONE_MS, and unreadable ones are dropped. */
  async #pruneTombstones(): Promise<void> {
    const dir = join(this.#o.dir, 'done');
    const stones: { name: string; t: Tombstone | null; mtimeMs: number }[] = [];
    for (const name of await readdir(dir)) {
      const s = await stat(join(dir, name)).catch(() => null);
      if (!s) continue;
      const t = await readFile(join(dir, name), 'utf8').then((x) => JSON.parse(x) as Tombstone).catch(() => null);
      stones.push({ name, t, mtimeMs: s.mtimeMs });
    }
    // Tombstones written before they named their item and point are kept until they are old;
    // of the others, #keepTombstone keeps each item's newest point's and removes the rest.
    for (const { name, t, mtimeMs } of stones) {
      const old = Date.now() - mtimeMs > TOMBSTONE_MS && Date.now() - (t?.at ?? 0) > TOMBSTONE_MS;
      if (t === null || old) await rm(join(dir, name), { force: true });
      else if (t.itemId !== undefined && t.pointSeq !== undefined) await this.#keepTombstone(stoneKey({ itemId: t.itemId, targetSiteId: t.targetSiteId }), t.pointSeq, name);
    }
  }
}
