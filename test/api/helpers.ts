// Shared by the API tests: a tiny JSON client over fetch, and a snapshot of the vault's tables
// (read straight from the store) to prove that refused calls changed nothing.
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/open.ts';
import type { Database } from '../../src/store/schema.ts';

export interface Answer {
  status: number;
  body: unknown;
  text: string;
  type: string;
}

export async function call(base: string, method: string, path: string, opts: { token?: string | undefined; body?: unknown; raw?: string; contentType?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.raw !== undefined) body = opts.raw;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed, text, type: res.headers.get('content-type') ?? '' };
}

export function isErrorBody(b: unknown): boolean {
  if (typeof b !== 'object' || b === null) return false;
  const e = (b as { error?: unknown }).error as { code?: unknown; message?: unknown } | undefined;
  return typeof e === 'object' && e !== null && typeof e.code === 'string' && e.code !== '' && typeof e.message === 'string' && e.message !== '';
}

const TABLES: (keyof Database)[] = [
  'sites',
  'hosts',
  'containers',
  'policies',
  'pairings',
  'machines',
  'protected_items',
  'recovery_points',
  'recovery_plans',
  'jobs',
  'tasks',
  'job_log',
  'tokens',
  'events',
];

/**
 * Every table but the audit log (which records refused calls too, by design), with the tokens'
 * last_used_at left out (a read updates it).
 */
export async function snapshot(store: Store): Promise<string> {
  const out: Record<string, unknown[]> = {};
  for (const t of TABLES) {
    const rows = (await store.db.selectFrom(t).selectAll().execute()) as Record<string, unknown>[];
    out[t] = rows.map((r) => (t === 'tokens' ? { ...r, last_used_at: null } : r)).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  }
  return JSON.stringify(out);
}

export async function openVault(loc: { dataDir?: string; url?: string }): Promise<Store> {
  return openStore(loc.url ? { url: loc.url } : { dataDir: loc.dataDir });
}
