// Mutual TLS between the roles with certificates from the vault's CA: node:tls options for both
// ends (TLS 1.3 only, the peer must present a certificate this CA signed), the identity a peer
// certificate carries (its component URI and serial), and the revocation list a server consults
// right after the handshake — the handshake itself cannot ask it, so a revoked peer completes
// the handshake and is then cut off before any byte of a transfer is read.
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { ReboundError } from '../domain/errors.ts';
import type { Store } from '../store/open.ts';
import type { ComponentRole } from './ca.ts';
import { normalizeSerial } from './x509.ts';

/** PEM texts: the vault CA's certificate, this process's certificate and its private key. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

export interface PeerIdentity {
  componentId: string;
  role: ComponentRole;
  /** Lower-case hex without leading zeros, as in the components table. */
  serial: string;
}

const URI = /(?:^|,\s*)URI:urn:rebound:component:([A-Za-z0-9._-]+):(agent|process-server|master-target)(?=,|$)/;

export function serverOptions(m: TlsMaterial): tls.TlsOptions {
  return { ca: m.ca, cert: m.cert, key: m.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' };
}

export interface ServerExpectation {
  /** The server's role, when the connection is for one (an agent opens to a process server). */
  role?: ComponentRole;
  /** Refuse a server whose certificate the vault revoked. */
  revocations?: RevocationList;
}

/**
 * Options for tls.connect. With `servername` (a DNS name or an IP) the server's certificate must
 * name it; without, any certificate of this CA that names a component is accepted (data
 * addresses are often bare IPs behind NAT). `expect` pins the server's role and consults the
 * revocation list.
 */
export function clientOptions(m: TlsMaterial, servername?: string, expect: ServerExpectation = {}): tls.ConnectionOptions {
  return {
    ca: m.ca,
    cert: m.cert,
    key: m.key,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    ...(servername !== undefined && isIP(servername) === 0 ? { servername } : {}),
    checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
      if (servername !== undefined) {
        const e = tls.checkServerIdentity(servername, cert);
        if (e) return e;
      }
      try {
        const id = identityFromCertificate(cert);
        if (expect.role !== undefined && id.role !== expect.role) {
          return new Error(`the server is a ${id.role} (component ${id.componentId}), not the ${expect.role} this connection is for`);
        }
        if (expect.revocations?.isRevoked(id.serial)) {
          return new Error(`the server (${id.role} ${id.componentId}) presented certificate ${id.serial}, which the vault has revoked`);
        }
      } catch (err) {
        return err as Error;
      }
      return undefined;
    },
  };
}

/** The identity in a peer certificate (as node:tls reports it, or DER/PEM bytes). */
export function identityFromCertificate(cert: PeerCertificate | X509Certificate | Buffer | string): PeerIdentity {
  let san: string | undefined;
  let serial: string | undefined;
  if (typeof cert === 'string' || Buffer.isBuffer(cert) || cert instanceof X509Certificate) {
    const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
    san = x.subjectAltName;
    serial = x.serialNumber;
  } else {
    san = cert.subjectaltname;
    serial = cert.serialNumber;
  }
  const m = san ? URI.exec(san) : null;
  if (!m || !serial) {
    throw new ReboundError('forbidden', 'peer-not-a-component', 'the peer certificate names no Rebound component (no urn:rebound:component URI): only certificates the vault CA issued at registration are accepted; register the component with the vault.');
  }
  return { componentId: m[1]!, role: m[2] as ComponentRole, serial: normalizeSerial(serial) };
}

const VERIFY_REASONS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'it was signed by another CA',
  UNABLE_TO_GET_ISSUER_CERT: 'it was signed by another CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'it was signed by another CA',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'it is self-signed',
  SELF_SIGNED_CERT_IN_CHAIN: 'its chain ends at another CA',
  CERT_HAS_EXPIRED: 'it has expired',
  CERT_NOT_YET_VALID: 'it is not valid yet (check the clocks)',
  CERT_SIGNATURE_FAILURE: 'its signature does not verify',
};

/** The identity of the other end of a TLS connection whose certificate chains to the vault CA. */
export function peerIdentity(socket: TLSSocket): PeerIdentity {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) {
    throw new ReboundError('forbidden', 'peer-no-certificate', 'the peer presented no certificate: register the component with the vault and use the certificate it issued.');
  }
  if (!socket.authorized) {
    const e = socket.authorizationError as unknown;
    const code = e instanceof Error ? ((e as Error & { code?: string }).code ?? e.message) : String(e ?? 'unknown');
    throw new ReboundError('forbidden', 'peer-not-authorized', `the peer's certificate (${cert.subject?.CN ?? 'no name'}, serial ${normalizeSerial(cert.serialNumber ?? '')}) was refused: ${VERIFY_REASONS[code] ?? 'it does not verify'} (${code}). Use the certificate this vault's CA issued at registration.`);
  }
  return identityFromCertificate(cert);
}

/**
 * Serials of revoked certificates. `refresh()` reads them from the components table (every vault
 * server and the embedded roles share it); `add()` takes one pushed by the revoking server so
 * that it applies at once there; `start()` refreshes periodically for the other servers.
 */
export class RevocationList {
  readonly #store: Store | undefined;
  #serials = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #refreshedAt = 0;

  constructor(store?: Store, serials: Iterable<string> = []) {
    this.#store = store;
    for (const s of serials) this.#serials.add(normalizeSerial(s));
  }

  isRevoked(serial: string): boolean {
    return this.#serials.has(normalizeSerial(serial));
  }

  add(serial: string): void {
    this.#serials.add(normalizeSerial(serial));
  }

  get size(): number {
    return this.#serials.size;
  }

  /** When the list was last read from the store (epoch ms; 0 = never). */
  get refreshedAt(): number {
    return this.#refreshedAt;
  }

  async refresh(): Promise<void> {
    if (!this.#store) return;
    const rows = await this.#store.db.selectFrom('components').select('cert_serial').where('status', '=', 'revoked').where('cert_serial', 'is not', null).execute();
    // Pushed serials stay: a revocation is never undone, and the row may not be visible yet.
    for (const r of rows) if (r.cert_serial) this.#serials.add(normalizeSerial(r.cert_serial));
    this.#refreshedAt = Date.now();
  }

  /** Refreshes every `intervalMs` until stop(); a failed refresh keeps the list it had. */
  start(intervalMs = 10_000, onError?: (err: unknown) => void): void {
    this.stop();
    this.#timer = setInterval(() => {
      this.refresh().catch((err: unknown) => onError?.(err));
    }, intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

export interface PeerPolicy {
  revocations?: RevocationList;
  /** Roles allowed to connect (default: any component role). */
  roles?: readonly ComponentRole[];
}

/**
 * A check for a server to run on each peer right after the handshake (for listenTransfers'
 * `checkPeer`, or createMtlsServer): returns the peer's identity, or throws a ReboundError
 * 'forbidden' saying why it is refused.
 */
export function peerChecker(policy: PeerPolicy = {}): (cert: PeerCertificate | TLSSocket) => PeerIdentity {
  return (c) => {
    const id = c instanceof tls.TLSSocket ? peerIdentity(c) : identityFromCertificate(c);
    if (policy.revocations?.isRevoked(id.serial)) {
      throw new ReboundError('forbidden', 'peer-revoked', `component ${id.componentId} (${id.role}) presented certificate ${id.serial}, which the vault has revoked: register the component again to get a new certificate.`);
    }
    if (policy.roles && !policy.roles.includes(id.role)) {
      throw new ReboundError('forbidden', 'peer-role-refused', `component ${id.componentId} is a ${id.role}; this listener takes connections from ${policy.roles.join(' or ')} only.`);
    }
    return id;
  };
}

export interface MtlsServerOptions {
  material: TlsMaterial;
  check?: (socket: TLSSocket) => PeerIdentity;
  /** Why a peer was refused, during the handshake (no/unknown certificate) or after it. */
  onRefused?: (err: ReboundError) => void;
}

/**
 * A TLS server that hands `onPeer` only connections whose peer passed the CA and `check`.
 * Node's own rejectUnauthorized cuts a peer with an unknown CA off without saying why (the server
 * sees only "socket hang up"), so here the chain check is made explicitly, first thing after the
 * handshake: the peer must have presented a certificate and `socket.authorized` must be true
 * (peerIdentity refuses otherwise, with OpenSSL's reason). `onPeer` must read the socket (or
 * resume it): a socket nobody reads never sees the peer leave, and server.close() waits for it.
 */
export function createMtlsServer(o: MtlsServerOptions, onPeer: (socket: TLSSocket, peer: PeerIdentity) => void): tls.Server {
  const check = o.check ?? peerChecker();
  const server = tls.createServer({ ...serverOptions(o.material), rejectUnauthorized: false }, (socket) => {
    let id: PeerIdentity;
    try {
      peerIdentity(socket); // throws peer-no-certificate / peer-not-authorized with the reason
      id = check(socket);
    } catch (err) {
      socket.destroy();
      o.onRefused?.(err instanceof ReboundError ? err : new ReboundError('forbidden', 'peer-refused', (err as Error).message));
      return;
    }
    onPeer(socket, id);
  });
  server.on('tlsClientError', (err: Error & { code?: string; reason?: string }, socket) => {
    const remote = socket.remoteAddress ? ` from ${socket.remoteAddress}` : '';
    o.onRefused?.(new ReboundError('forbidden', 'peer-handshake-refused', `a TLS handshake${remote} was refused (${err.reason ?? err.message}): the peer must present a certificate the vault CA issued.`, { cause: err }));
  });
  return server;
}
