// A TCP fault proxy for tests and the soak: it forwards connections from `listen` to `target`
// and, on command, breaks them the ways a WAN link between two sites breaks — every connection
// reset and new ones refused for a while (cut), everything silently lost (drop), one direction
// black-holed while the connection stays up (half-open), added latency, and a bandwidth cap.
// Faults apply to live connections at once. Data keeps its order in each direction; a capped or
// delayed direction holds at most a bounded backlog and pauses its reader beyond it, so a fast
// sender meets back-pressure as it would on a slow link.
import { createConnection, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

export interface Endpoint {
  host?: string;
  port: number;
}

export type Direction = 'to-target' | 'to-client';

export interface FaultProxyStats {
  connections: number;
  open: number;
  refused: number;
  forwarded: Record<Direction, number>;
  dropped: Record<Direction, number>;
}

export interface FaultProxy {
  readonly port: number;
  readonly host: string;
  /** Resets every open connection (RST) and refuses new ones for `ms`. */
  cut(ms: number): void;
  /** While on, bytes in both directions are silently discarded; connections stay open. */
  drop(on: boolean): void;
  /** Stops forwarding one direction (default: replies to the client) without closing anything;
   * the bytes are discarded. `heal()` restores it. */
  halfOpen(direction?: Direction): void;
  /** Delays every chunk by `ms` in each direction (0 to stop). */
  latency(ms: number): void;
  /** Caps each direction of each connection to `bytesPerSecond` (null: no cap). */
  bandwidth(bytesPerSecond: number | null): void;
  /** Removes every fault (a running cut ends at once). */
  heal(): void;
  stats(): FaultProxyStats;
  close(): Promise<void>;
}

// Backlog one direction may hold before its reader is paused.
const HIGH_WATER = 1024 * 1024;
// A capped direction sends in slices of at most this many milliseconds' worth of bytes.
const SLICE_MS = 20;

interface Pending {
  data: Buffer;
  due: number;
}

/** One direction of one connection: an ordered queue, drained as latency and cap allow. */
class Lane {
  #queue: Pending[] = [];
  #queued = 0;
  #busy = false;
  #nextFree = 0;
  #timer: NodeJS.Timeout | undefined;
  private readonly from: Socket;
  private readonly to: Socket;
  private readonly dir: Direction;
  private readonly proxy: ProxyState;
  constructor(from: Socket, to: Socket, dir: Direction, proxy: ProxyState) {
    this.from = from;
    this.to = to;
    this.dir = dir;
    this.proxy = proxy;
    from.on('data', (d: Buffer) => this.#take(d));
  }

  #take(d: Buffer): void {
    const p = this.proxy;
    if (p.dropAll || p.blocked === this.dir) {
      p.stats.dropped[this.dir] += d.length;
      return;
    }
    this.#queue.push({ data: d, due: Date.now() + p.latencyMs });
    this.#queued += d.length;
    if (this.#queued > HIGH_WATER) this.from.pause();
    this.#pump();
  }

  #pump(): void {
    if (this.#busy) return;
    const head = this.#queue[0];
    if (!head || this.to.destroyed) return;
    const now = Date.now();
    const rate = this.proxy.rate;
    const start = Math.max(head.due, rate === null ? 0 : this.#nextFree);
    if (start > now) {
      this.#timer = setTimeout(() => { this.#timer = undefined; this.#pump(); }, start - now);
      return;
    }
    let piece = head.data;
    if (rate !== null) {
      const max = Math.max(1, Math.floor((rate * SLICE_MS) / 1000));
      if (piece.length > max) {
        piece = head.data.subarray(0, max);
        head.data = head.data.subarray(max);
      } else this.#queue.shift();
      this.#nextFree = Math.max(this.#nextFree, now) + (piece.length * 1000) / rate;
    } else this.#queue.shift();
    this.#queued -= piece.length;
    if (this.#queued <= HIGH_WATER / 2 && this.from.isPaused()) this.from.resume();
    // Faults switched on after the bytes were queued still apply.
    if (this.proxy.dropAll || this.proxy.blocked === this.dir) {
      this.proxy.stats.dropped[this.dir] += piece.length;
      setImmediate(() => this.#pump());
      return;
    }
    this.proxy.stats.forwarded[this.dir] += piece.length;
    if (this.to.write(piece)) {
      setImmediate(() => this.#pump());
    } else {
      this.#busy = true;
      this.to.once('drain', () => { this.#busy = false; this.#pump(); });
    }
  }

  /** Forwards what is still queued, then passes the end on. */
  end(): void {
    const finish = (): void => {
      if (this.#queue.length === 0 && !this.#busy) {
        if (!this.to.destroyed) this.to.end();
        return;
      }
      setTimeout(finish, 5);
    };
    finish();
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#queue = [];
  }
}

interface ProxyState {
  dropAll: boolean;
  blocked: Direction | null;
  latencyMs: number;
  rate: number | null;
  refuseUntil: number;
  stats: FaultProxyStats;
}

/** Starts a proxy listening on `listen` (port 0: any free port) that forwards to `target`. */
export async function startFaultProxy(opts: { listen?: Endpoint; target: Endpoint }): Promise<FaultProxy> {
  const state: ProxyState = {
    dropAll: false,
    blocked: null,
    latencyMs: 0,
    rate: null,
    refuseUntil: 0,
    stats: { connections: 0, open: 0, refused: 0, forwarded: { 'to-target': 0, 'to-client': 0 }, dropped: { 'to-target': 0, 'to-client': 0 } },
  };
  const live = new Set<{ client: Socket; upstream: Socket; lanes: Lane[] }>();

  const reset = (s: Socket): void => {
    if (!s.destroyed) s.resetAndDestroy();
  };

  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    client.on('error', () => {});
    if (Date.now() < state.refuseUntil) {
      state.stats.refused++;
      reset(client);
      return;
    }
    state.stats.connections++;
    state.stats.open++;
    const upstream = createConnection({ host: opts.target.host ?? '127.0.0.1', port: opts.target.port, allowHalfOpen: true });
    upstream.on('error', () => {});
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const conn = { client, upstream, lanes: [] as Lane[] };
    live.add(conn);
    upstream.once('connect', () => {
      const up = new Lane(client, upstream, 'to-target', state);
      const down = new Lane(upstream, client, 'to-client', state);
      conn.lanes.push(up, down);
      client.on('end', () => up.end());
      upstream.on('end', () => down.end());
      client.resume();
    });
    let closed = false;
    const onClose = (hadError: boolean, peer: Socket): void => {
      if (closed) return;
      closed = true;
      state.stats.open--;
      live.delete(conn);
      for (const l of conn.lanes) l.stop();
      // An error on one side (a reset) is passed on as a reset; a clean close as a close.
      if (hadError) reset(peer);
      else peer.end();
    };
    client.once('close', (e) => onClose(e, upstream));
    upstream.once('close', (e) => onClose(e, client));
  });

  const host = opts.listen?.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen?.port ?? 0, host, () => { server.off('error', reject); resolve(); });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    host,
    cut(ms) {
      state.refuseUntil = Date.now() + ms;
      for (const c of [...live]) {
        reset(c.client);
        reset(c.upstream);
      }
    },
    drop(on) { state.dropAll = on; },
    halfOpen(direction = 'to-client') { state.blocked = direction; },
    latency(ms) { state.latencyMs = Math.max(0, ms); },
    bandwidth(bps) {
      if (bps !== null && !(bps > 0)) throw new RangeError(`A bandwidth cap of ${bps} bytes/s is not positive; pass null for no cap.`);
      state.rate = bps;
    },
    heal() {
      state.dropAll = false;
      state.blocked = null;
      state.latencyMs = 0;
      state.rate = null;
      state.refuseUntil = 0;
    },
    stats: () => structuredClone(state.stats),
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of [...live]) {
          c.client.destroy();
          c.upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
