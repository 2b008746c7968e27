// Data connections between the roles (agent → process server → master target). Each connection
// carries one transfer: the opener sends a preamble (a length-prefixed JSON TransferHeader saying
// which item, disk and point the frames are for), the listener answers accept or a refusal with
// a clear error, and then the frame stream of src/datapath/frame-stream.ts runs over the same
// socket. Connections are TLS 1.3 with certificates from the vault's CA on both sides when TLS
// material is given; plain TCP only where a test of pure framing asks for it.
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { ReboundError } from '../domain/errors.ts';

const PREAMBLE = 0x52425431; // "RBT1"
const REPLY = 0x52425432; // "RBT2"
const MAX_PREAMBLE = 64 * 1024;
/** A data connection on which nothing moves in either direction for this long is closed, so a
 * black-holed or half-open link (bytes lost, the TCP connection still up) ends in a retry after
 * the last acknowledgement instead of a transfer that waits forever. A healthy transfer is never
 * that quiet: frames flow, and the receiver acknowledges every half window. Override with
 * REBOUND_DATA_IDLE_TIMEOUT_MS (the soak uses a shorter one). */
const DEFAULT_IDLE_MS = 60_000;

export function dataIdleTimeoutMs(): number {
  const v = process.env['REBOUND_DATA_IDLE_TIMEOUT_MS'];
  if (v === undefined || v === '') return DEFAULT_IDLE_MS;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1000) throw new ReboundError('invalid', 'bad-idle-timeout', `REBOUND_DATA_IDLE_TIMEOUT_MS=${v} is not a whole number of milliseconds of at least 1000; unset it for the default of ${DEFAULT_IDLE_MS}.`);
  return n;
}

/** Closes `socket` with a retryable 'transfer-stalled' error after `ms` without traffic. */
function closeWhenIdle(socket: Duplex, ms: number, peer: string): void {
  const s = socket as net.Socket;
  s.setTimeout(ms);
  s.once('timeout', () => {
    s.destroy(new ReboundError('unavailable', 'transfer-stalled', `Nothing moved on the data connection with ${peer} for ${Math.round(ms / 1000)} s (a stalled or black-holed link); it was closed and the transfer resumes after its last acknowledgement on a new connection.`, { retryable: true }));
  });
}

export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

/** What a transfer is: sent first on every data connection. */
export interface TransferHeader {
  transferId: string;
  itemId: string;
  machine: string;
  diskId: string;
  diskIndex: number;
  diskCount: number;
  diskSize: number;
  pointId: string;
  /** Per-item sequence of points, so relays keep them in order. */
  pointSeq: number;
  takenAt: number;
  pointKind: 'crash' | 'app';
  /** Frames in the transfer (its END frame's sequence number). */
  frames: number;
  bytes: number;
  /** Where the replica lives: the target site's id (the master target resolves its root). */
  targetSiteId: string;
  /** Host:port of the master target (the process server forwards there). */
  masterTarget: string;
  retentionSeconds: number;
  compression: 'zstd' | 'none';
  /** At rest: 'aes-256-gcm' → the replica's qcow2 images are LUKS-encrypted with the vault key. */
  encryption: 'aes-256-gcm' | 'none';
  bandwidthBps: number;
  /** First copy of this disk (a full copy), for progress and accounting. */
  initial: boolean;
}

export interface Endpoint {
  host: string;
  port: number;
}

export function parseAddress(address: string): Endpoint {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(address);
  if (!m) throw new ReboundError('invalid', 'bad-address', `'${address}' is not a host:port address.`);
  return { host: m[1]!, port: Number(m[2]) };
}

function message(magic: number, body: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body), 'utf8');
  const b = Buffer.alloc(8 + json.length);
  b.writeUInt32BE(4 + json.length, 0);
  b.writeUInt32BE(magic, 4);
  json.copy(b, 8);
  return b;
}

/** Reads one length-prefixed JSON message and leaves the socket paused at the next byte. */
function readMessage(socket: Duplex, magic: number, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: unknown, value?: unknown, rest?: Buffer): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      socket.pause();
      if (rest && rest.length > 0) socket.unshift(rest);
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 8) return;
      const n = buf.readUInt32BE(0);
      if (n > MAX_PREAMBLE || buf.readUInt32BE(4) !== magic) return done(new ReboundError('invalid', 'transfer-preamble-malformed', 'A data connection did not start with a transfer preamble.'));
      if (buf.length < 4 + n) return;
      try {
        done(null, JSON.parse(buf.toString('utf8', 8, 4 + n)), buf.subarray(4 + n));
      } catch {
        done(new ReboundError('invalid', 'transfer-preamble-malformed', 'A transfer preamble is not JSON.'));
      }
    };
    const onError = (err: Error): void => done(new ReboundError('unavailable', 'transfer-connection-lost', `The data connection failed: ${err.message}`, { retryable: true }));
    const onClose = (): void => done(new ReboundError('unavailable', 'transfer-connection-lost', 'The data connection closed during its preamble.', { retryable: true }));
    const timer = setTimeout(() => done(new ReboundError('unavailable', 'transfer-preamble-timeout', `No transfer preamble within ${timeoutMs} ms.`, { retryable: true })), timeoutMs);
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('close', onClose);
    socket.resume();
  });
}

/** Opens a data connection for `header`; resolves once the listener accepted it. */
export async function openTransfer(address: string, header: TransferHeader, material: TlsMaterial | null, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Duplex> {
  const { host, port } = parseAddress(address);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const socket: Duplex = await new Promise((resolve, reject) => {
    // The deadline covers the TLS handshake too: a link that loses the handshake's bytes (a
    // black hole, a half-open middlebox) would otherwise leave the connection waiting forever.
    const ready = (): void => {
      clearTimeout(timer);
      resolve(s);
    };
    const s = material
      ? tls.connect({ host, port, ca: material.ca, cert: material.cert, key: material.key, minVersion: 'TLSv1.3', servername: net.isIP(host) ? undefined : host, checkServerIdentity: () => undefined }, ready)
      : net.connect({ host, port }, ready);
    const timer = setTimeout(() => { s.destroy(); reject(new ReboundError('unavailable', 'transfer-connect-timeout', `No ${material ? 'TLS session' : 'connection'} with ${address} within ${timeoutMs} ms.`, { retryable: true })); }, timeoutMs);
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(new ReboundError('unavailable', 'transfer-connect-failed', `Cannot open a data connection to ${address}: ${err.message}`, { retryable: true }));
    });
  });
  const onAbort = (): void => { socket.destroy(); };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  socket.once('close', () => opts.signal?.removeEventListener('abort', onAbort));
  socket.on('error', () => undefined);
  try {
    socket.write(message(PREAMBLE, header));
    const reply = (await readMessage(socket, REPLY, timeoutMs)) as { ok?: boolean; error?: { code: string; message: string; retryable?: boolean } };
    if (reply.ok !== true) {
      const e = reply.error;
      throw new ReboundError('unavailable', e?.code ?? 'transfer-refused', e?.message ?? `${address} refused the transfer.`, { retryable: e?.retryable ?? true });
    }
    closeWhenIdle(socket, dataIdleTimeoutMs(), address);
    // Left paused: the frame stream's reader takes over (resuming with no reader drops bytes).
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

export type TransferHandler = (header: TransferHeader, socket: Duplex, peer: { authorized: boolean; cert?: tls.PeerCertificate }) => Promise<void>;

export interface DataListener {
  address: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Listens for data connections; `accept` may throw a ReboundError to refuse a header (its code
 * and message go back to the opener), else `handle` runs the transfer.
 */
export async function listenTransfers(opts: {
  host?: string;
  port?: number;
  material: TlsMaterial | null;
  /** Called after the TLS handshake: throw to refuse the peer (revoked, wrong role). */
  checkPeer?: (cert: tls.PeerCertificate) => void;
  accept(header: TransferHeader): Promise<void> | void;
  handle: TransferHandler;
  onError?(err: unknown): void;
}): Promise<DataListener> {
  const sockets = new Set<Duplex>();
  const idleMs = dataIdleTimeoutMs();
  const onSocket = (socket: Duplex, cert?: tls.PeerCertificate): void => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => sockets.delete(socket));
    void (async () => {
      let header: TransferHeader;
      try {
        if (cert && opts.checkPeer) opts.checkPeer(cert);
        header = (await readMessage(socket, PREAMBLE, 15_000)) as TransferHeader;
        await opts.accept(header);
      } catch (err) {
        const e = err instanceof ReboundError ? err : new ReboundError('internal', 'transfer-refused', (err as Error).message);
        if (!socket.destroyed) socket.end(message(REPLY, { ok: false, error: { code: e.code, message: e.message, retryable: e.retryable } }));
        opts.onError?.(err);
        return;
      }
      socket.write(message(REPLY, { ok: true }));
      closeWhenIdle(socket, idleMs, `the sender of transfer ${header.transferId}`);
      try {
        await opts.handle(header, socket, { authorized: true, ...(cert ? { cert } : {}) });
      } catch (err) {
        socket.destroy();
        opts.onError?.(err);
      }
    })();
  };
  const server = opts.material
    ? tls.createServer({ ca: opts.material.ca, cert: opts.material.cert, key: opts.material.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => onSocket(s, s.getPeerCertificate()))
    : net.createServer((s) => onSocket(s));
  server.on('tlsClientError', (err) => opts.onError?.(err));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as net.AddressInfo;
  const host = opts.host ?? '127.0.0.1';
  return {
    port: addr.port,
    address: `${host.includes(':') ? `[${host}]` : host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
