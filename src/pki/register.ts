// The client side of registration, run by a component (agent, process server, master target)
// started as its own process. It makes its key locally, sends only a CSR, and keeps what the
// vault answers in its state directory:
//   STATE/component.json  id, name, role, site, vault URL, certificate serial
//   STATE/key.pem         private key (0600)   STATE/token   its API token (0600)
//   STATE/cert.pem, STATE/ca.pem
// On the next start it reuses them when the vault still knows the component (a heartbeat with
// its token succeeds), and registers again only when they are missing or the vault revoked it.
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ReboundError } from '../domain/errors.ts';
import type { ComponentRole } from './ca.ts';
import { generateKeyAndCsr } from './keys.ts';
import type { TlsMaterial } from './tls.ts';

export interface RegisterOptions {
  vaultUrl: string;
  /** A token allowed to register components (admin); used only when (re-)registering. */
  token: string;
  name: string;
  role: ComponentRole;
  /** The site it serves; undefined: every site. */
  site?: string;
  /** host:port of this component's data listener (process server, master target). */
  address?: string;
  stateDir: string;
  /** For tests and slow links (default 15 s per request). */
  timeoutMs?: number;
}

export interface RegisteredComponent {
  id: string;
  name: string;
  role: ComponentRole;
  serial: string;
  material: TlsMaterial;
  /** The component's own API token (control-plane calls, heartbeats). */
  token: string;
  /** 'saved': reused from stateDir; 'registered': just registered (first start or after a revocation). */
  source: 'saved' | 'registered';
  /** Why it registered again, when it did so over saved state. */
  reason?: string;
  /**
   * False when saved state was reused without the vault confirming it (the vault could not be
   * reached): the component can still serve data connections with it, and should check again.
   */
  verified: boolean;
}

interface SavedState {
  id: string;
  name: string;
  role: ComponentRole;
  site?: string;
  vaultUrl: string;
  serial: string;
  registeredAt: number;
}

const FILES = { state: 'component.json', key: 'key.pem', cert: 'cert.pem', ca: 'ca.pem', token: 'token' } as const;

function writeAtomic(file: string, data: string, mode: number): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode); // the umask may have narrowed or (for an existing file) not applied
  renameSync(tmp, file);
}

function readSaved(dir: string): { state: SavedState; material: TlsMaterial; token: string } | undefined {
  try {
    const state = JSON.parse(readFileSync(path.join(dir, FILES.state), 'utf8')) as SavedState;
    const material = {
      key: readFileSync(path.join(dir, FILES.key), 'utf8'),
      cert: readFileSync(path.join(dir, FILES.cert), 'utf8'),
      ca: readFileSync(path.join(dir, FILES.ca), 'utf8'),
    };
    const token = readFileSync(path.join(dir, FILES.token), 'utf8').trim();
    return { state, material, token };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ReboundError('invalid', 'component-state-unreadable', `the component state in ${dir} cannot be read (${(err as Error).message}): fix or remove the directory to register again.`, { cause: err });
  }
}

async function call(opts: RegisterOptions, method: string, route: string, token: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const url = `${opts.vaultUrl.replace(/\/+$/, '')}/api/v1${route}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
  } catch (err) {
    throw new ReboundError('unavailable', 'vault-unreachable', `the vault at ${opts.vaultUrl} cannot be reached (${(err as Error).message}): check the URL and that rebound serve is running.`, { cause: err });
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON (a proxy's error page): the status alone tells what happened.
  }
  return { status: res.status, json };
}

/** Why saved state cannot be used as it is, or undefined when it can. */
async function problemWith(opts: RegisterOptions, saved: { state: SavedState; material: TlsMaterial; token: string }): Promise<string | undefined> {
  const { state, material } = saved;
  if (state.name !== opts.name || state.role !== opts.role) return `the saved state is for ${state.role} '${state.name}', not ${opts.role} '${opts.name}'`;
  if ((state.site ?? null) !== (opts.site ?? null)) return `it was registered for ${state.site === undefined ? 'every site' : `site '${state.site}'`}, not ${opts.site === undefined ? 'every site' : `site '${opts.site}'`}`;
  const cert = new X509Certificate(material.cert);
  if (Date.parse(cert.validTo) <= Date.now()) return `its certificate expired on ${cert.validTo}`;
  const ca = new X509Certificate(material.ca);
  if (!cert.verify(ca.publicKey)) return 'its certificate was not issued by the saved CA';
  const hb = await call(opts, 'POST', `/components/${encodeURIComponent(opts.name)}/heartbeat`, saved.token);
  if (hb.status === 200) {
    const seen = hb.json as { id?: string; status?: string };
    if (seen.id !== state.id) return 'the vault knows this name as another component';
    return undefined;
  }
  if (hb.status === 401) return 'the vault no longer accepts its token (revoked or unknown)';
  if (hb.status === 404) return 'the vault does not know it';
  const e = (hb.json as { error?: { message?: string } } | undefined)?.error?.message;
  throw new ReboundError('unavailable', 'vault-heartbeat-failed', `the vault answered ${hb.status} to ${opts.name}'s heartbeat${e ? ` (${e})` : ''}: try again later.`, { retryable: true });
}

/**
 * Registers this component with the vault, or reuses the registration saved in `stateDir`.
 * Throws ReboundError: 'unavailable' when the vault cannot be reached, the vault's own error
 * (invalid, forbidden, conflict…) when it refuses the registration.
 */
export async function registerComponent(opts: RegisterOptions): Promise<RegisteredComponent> {
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const saved = readSaved(opts.stateDir);
  let reason: string | undefined;
  if (saved) {
    const reuse = (verified: boolean): RegisteredComponent => ({ id: saved.state.id, name: saved.state.name, role: saved.state.role, serial: saved.state.serial, material: saved.material, token: saved.token, source: 'saved', verified });
    try {
      reason = await problemWith(opts, saved);
    } catch (err) {
      // A vault outage must not keep a component with a valid registration from starting:
      // data connections need only its certificate, and peers still check revocation.
      if (err instanceof ReboundError && err.code === 'vault-unreachable') return reuse(false);
      throw err;
    }
    if (reason === undefined) return reuse(true);
  }
  const { keyPem, csrPem } = await generateKeyAndCsr(opts.name);
  const res = await call(opts, 'POST', '/components', opts.token, {
    name: opts.name,
    role: opts.role,
    ...(opts.site === undefined ? {} : { site: opts.site }),
    ...(opts.address === undefined ? {} : { address: opts.address }),
    csr: csrPem,
  });
  if (res.status !== 201) {
    const e = (res.json as { error?: { code?: string; message?: string } } | undefined)?.error;
    const kind = res.status === 401 ? 'unauthenticated' : res.status === 403 ? 'forbidden' : res.status === 404 ? 'not-found' : res.status === 409 ? 'conflict' : res.status >= 500 ? 'unavailable' : 'invalid';
    throw new ReboundError(kind, e?.code ?? 'registration-failed', `the vault refused to register ${opts.role} '${opts.name}' (${res.status}): ${e?.message ?? 'no reason given'}`);
  }
  const r = res.json as { id: string; serial: string; cert: string; ca: string; token: string };
  const state: SavedState = { id: r.id, name: opts.name, role: opts.role, ...(opts.site === undefined ? {} : { site: opts.site }), vaultUrl: opts.vaultUrl, serial: r.serial, registeredAt: Date.now() };
  const dir = opts.stateDir;
  // Secrets first, the state file last: a crash in between leaves no state that points at them.
  writeAtomic(path.join(dir, FILES.key), keyPem, 0o600);
  writeAtomic(path.join(dir, FILES.token), `${r.token}\n`, 0o600);
  writeAtomic(path.join(dir, FILES.cert), r.cert, 0o644);
  writeAtomic(path.join(dir, FILES.ca), r.ca, 0o644);
  writeAtomic(path.join(dir, FILES.state), `${JSON.stringify(state, null, 2)}\n`, 0o644);
  return {
    id: r.id,
    name: opts.name,
    role: opts.role,
    serial: r.serial,
    material: { ca: r.ca, cert: r.cert, key: keyPem },
    token: r.token,
    source: 'registered',
    verified: true,
    ...(reason === undefined ? {} : { reason }),
  };
}
