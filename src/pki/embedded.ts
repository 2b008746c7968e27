// TLS material for the roles that run inside `rebound serve` (embedded mode): one certificate per
// role from the vault CA, made in memory at start (no CSR round trip, nothing written to disk),
// so that listeners that pin the peer's role (a process server takes agents, a master target
// takes process servers) work the same embedded as with separate processes. Each start issues
// new ones; they are not registered components, so there is nothing to revoke: they die with
// the process. Nothing renews them while the process runs, so they live a year (EMBEDDED_DAYS):
// longer than a server runs between restarts, and never beyond the vault CA's own expiry.
import { isIP } from 'node:net';
import type { Store } from '../store/open.ts';
import { COMPONENT_ROLES, loadOrCreateCa } from './ca.ts';
import type { Ca, ComponentRole } from './ca.ts';
import type { TlsMaterial } from './tls.ts';

/** Lifetime of the embedded roles' certificates (issued at each start, never renewed in-process). */
export const EMBEDDED_DAYS = 365;

export type EmbeddedMaterial = Record<ComponentRole, TlsMaterial>;

export interface EmbeddedTlsOptions {
  /** The id in the certificates' component URI, e.g. 'embedded-<host>' (default 'embedded'). */
  componentId?: string;
  /** Names the data listeners are reached at (default 127.0.0.1 and localhost). */
  hosts?: readonly string[];
  days?: number;
}

export async function issueEmbeddedMaterial(ca: Ca, o: EmbeddedTlsOptions = {}): Promise<EmbeddedMaterial> {
  const hosts = o.hosts ?? ['127.0.0.1', 'localhost'];
  const ips = hosts.filter((h) => isIP(h) !== 0);
  const dnsNames = hosts.filter((h) => isIP(h) === 0);
  const out = {} as EmbeddedMaterial;
  for (const role of COMPONENT_ROLES) {
    const l = await ca.issueLocal({ commonName: `embedded ${role}`, role, componentId: o.componentId ?? 'embedded', ips, dnsNames, days: o.days ?? EMBEDDED_DAYS });
    out[role] = { ca: ca.certPem, cert: l.certPem, key: l.keyPem };
  }
  return out;
}

/** The vault CA (created on first use) and embedded material from it, in one call for serve. */
export async function loadEmbeddedTls(store: Store, wrapKey: Buffer, o: EmbeddedTlsOptions = {}): Promise<{ ca: Ca; material: EmbeddedMaterial }> {
  const ca = await loadOrCreateCa(store, wrapKey);
  return { ca, material: await issueEmbeddedMaterial(ca, o) };
}
