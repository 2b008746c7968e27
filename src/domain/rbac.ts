// Roles and what each API action needs (docs/api.md). Roles are ordered: reader < operator <
// admin; a token may do what its role or any lower role may. Reader reads; operator runs the
// lifecycle (protect, failovers, commit…), adds machines and plans, cancels and resumes jobs;
// admin changes the vault's shape (sites, hosts, policies, pairings) and manages tokens and audit.
import { ReboundError } from './errors.ts';
import type { Role } from './model.ts';

const RANK: Record<Role, number> = { reader: 0, operator: 1, admin: 2 };

export function isRole(value: string): value is Role {
  return Object.hasOwn(RANK, value);
}

export function roleAllows(have: Role, need: Role): boolean {
  return RANK[have] >= RANK[need];
}

interface Rule {
  method: string;
  /** Path under /api/v1 with :params, e.g. '/items/:machine/failover'. */
  path: string;
  role: Role;
}

// Order matters only for readability; paths do not overlap once params are matched segment-wise.
const RULES: readonly Rule[] = [
  { method: 'GET', path: '/audit', role: 'admin' },
  { method: 'GET', path: '/tokens', role: 'admin' },
  { method: 'POST', path: '/tokens', role: 'admin' },
  { method: 'DELETE', path: '/tokens/:id', role: 'admin' },
  { method: 'POST', path: '/sites', role: 'admin' },
  { method: 'POST', path: '/sites/:name/hosts', role: 'admin' },
  { method: 'POST', path: '/policies', role: 'admin' },
  { method: 'POST', path: '/pairings', role: 'admin' },
  { method: 'POST', path: '/machines', role: 'operator' },
  { method: 'POST', path: '/items/:machine/:action', role: 'operator' },
  { method: 'POST', path: '/plans', role: 'operator' },
  { method: 'POST', path: '/plans/:name/actions', role: 'operator' },
  { method: 'POST', path: '/plans/:name/:action', role: 'operator' },
  { method: 'PUT', path: '/plans/:name', role: 'operator' },
  { method: 'DELETE', path: '/plans/:name', role: 'operator' },
  { method: 'POST', path: '/jobs/:id/cancel', role: 'operator' },
  { method: 'POST', path: '/jobs/:id/resume', role: 'operator' },
  { method: 'POST', path: '/jobs/:id/complete', role: 'operator' },
  // A component's own token (operator, named component:NAME; the route checks it is its own).
  { method: 'POST', path: '/components/:name/heartbeat', role: 'operator' },
  // Components' control plane: operator-level tokens named component:NAME (checked in the route).
  { method: 'POST', path: '/replication/:call', role: 'operator' },
  { method: 'POST', path: '/replication/points/:call', role: 'operator' },
  { method: 'POST', path: '/replication/scrubs/:call', role: 'operator' },
];

function matches(pattern: string, path: string): boolean {
  const a = pattern.split('/');
  const b = path.split('/');
  if (a.length !== b.length) return false;
  return a.every((seg, i) => seg.startsWith(':') ? (b[i] ?? '') !== '' : seg === b[i]);
}

/**
 * The role a call needs. `path` is relative to /api/v1 (a leading '/api/v1' and a query string
 * are stripped). GET and HEAD need reader unless a rule says more; any other write not in the
 * table needs admin, so a new route is closed until someone decides otherwise.
 */
export function requiredRole(method: string, path: string): Role {
  const m = method.toUpperCase();
  const p = (path.split('?')[0] ?? '').replace(/^\/api\/v1(?=\/|$)/, '').replace(/\/+$/, '') || '/';
  const rule = RULES.find((r) => r.method === m && matches(r.path, p));
  if (rule) return rule.role;
  return m === 'GET' || m === 'HEAD' ? 'reader' : 'admin';
}

/** Throws 403 with a sentence when `have` may not do what needs `need`. */
export function assertRole(have: Role, need: Role, what: string): void {
  if (!roleAllows(have, need)) {
    throw new ReboundError('forbidden', 'forbidden', `${what} needs the ${need} role; this token is ${have}: use a token with the ${need} role (rebound token create NAME --role ${need}).`);
  }
}
