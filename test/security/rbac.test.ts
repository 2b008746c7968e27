// Roles on every route, against a real `rebound serve`: the routes come from its OpenAPI
// document, so a new route is covered without touching this file. The expected role of each
// documented route is transcribed here from docs/api.md (not taken from src/domain/rbac.ts), and
// rbac.ts's requiredRole is checked against it; routes the document does not list yet are named
// in the output and held to the document's general rules (reader: GET only; no token: 401) and
// to requiredRole. Every route × no token, reader, operator, admin: 401 without a token, 403
// below the role, neither at or above it (the calls carry a bad body or a missing name, so an
// allowed call is refused by validation or lookup, never performed), no 500, and the vault's
// tables are unchanged by all of it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { requiredRole, roleAllows } from '../../src/domain/rbac.ts';
import type { Role } from '../../src/domain/model.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { call, isErrorBody, openVault, snapshot } from '../api/helpers.ts';

// docs/api.md, the route table and the paragraph after it (POST /diag/jobs: admin).
const ITEM_ACTIONS = ['protect', 'test-failover', 'test-cleanup', 'failover', 'commit', 'reverse-replicate'];
const DOCUMENTED: Record<string, Role> = {
  'GET /whoami': 'reader',
  'GET /tokens': 'admin',
  'POST /tokens': 'admin',
  'DELETE /tokens/{id}': 'admin',
  'GET /sites': 'reader',
  'POST /sites': 'admin',
  'GET /sites/{name}': 'reader',
  'GET /sites/{name}/hosts': 'reader',
  'POST /sites/{name}/hosts': 'admin',
  'GET /policies': 'reader',
  'POST /policies': 'admin',
  'GET /pairings': 'reader',
  'POST /pairings': 'admin',
  'GET /machines': 'reader',
  'POST /machines': 'operator',
  'GET /machines/{name}': 'reader',
  'GET /items': 'reader',
  'GET /items/{machine}': 'reader',
  'GET /items/{machine}/points': 'reader',
  ...Object.fromEntries(ITEM_ACTIONS.map((a) => [`POST /items/{machine}/${a}`, 'operator' as Role])),
  'GET /plans': 'reader',
  'POST /plans': 'operator',
  'GET /plans/{name}': 'reader',
  'POST /plans/{name}/actions': 'operator',
  'PUT /plans/{name}': 'operator',
  'GET /jobs': 'reader',
  'GET /jobs/{id}': 'reader',
  'GET /jobs/{id}/events': 'reader',
  'POST /jobs/{id}/cancel': 'operator',
  'POST /jobs/{id}/resume': 'operator',
  'POST /jobs/{id}/complete': 'operator',
  'GET /events': 'reader',
  'GET /audit': 'admin',
  'POST /diag/jobs': 'admin',
};

interface Route { method: string; path: string; }

let s: ServerProcess;
let routes: Route[] = [];
const tokens: Record<Role, string> = { reader: '', operator: '', admin: '' };

before(async () => {
  s = await startServerProcess({ env: { REBOUND_ENABLE_TEST_JOBS: '1' } });
  tokens.admin = s.token;
  for (const role of ['reader', 'operator'] as const) {
    const r = await call(s.url, 'POST', '/api/v1/tokens', { token: s.token, body: { name: `rbac-${role}`, role } });
    assert.equal(r.status, 201, r.text);
    tokens[role] = (r.body as { token: string }).token;
  }
  const doc = (await (await fetch(`${s.url}/api/v1/openapi.json`)).json()) as { paths: Record<string, Record<string, { security?: unknown[] }>> };
  for (const [p, ops] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(ops)) {
      if (!p.startsWith('/api/v1/') || (Array.isArray(op.security) && op.security.length === 0)) continue;
      routes.push({ method: m.toUpperCase(), path: p.slice('/api/v1'.length) });
    }
  }
  routes = routes.sort((a, b) => `${a.path} ${a.method}`.localeCompare(`${b.path} ${b.method}`));
});
after(async () => { await s?.cleanup(); });

const key = (r: Route): string => `${r.method} ${r.path}`;
const express = (p: string): string => p.replace(/\{(\w+)\}/g, ':$1');

test('requiredRole agrees with docs/api.md on every documented route the server has', () => {
  assert.ok(routes.length >= 20, `${routes.length} routes in the OpenAPI document`);
  const documented = routes.filter((r) => key(r) in DOCUMENTED);
  assert.ok(documented.length >= 20);
  for (const r of documented) assert.equal(requiredRole(r.method, `/api/v1${express(r.path)}`), DOCUMENTED[key(r)], key(r));
  // The document's general rules hold for the rest too: writes are never for readers.
  const undocumented = routes.filter((r) => !(key(r) in DOCUMENTED));
  for (const r of undocumented) if (r.method !== 'GET') assert.notEqual(requiredRole(r.method, `/api/v1${express(r.path)}`), 'reader', key(r));
  if (undocumented.length) console.log(`routes not in docs/api.md (held to requiredRole): ${undocumented.map(key).join(', ')}`);
});

test('every route × no token, reader, operator, admin: 401, 403 below the role, allowed at or above it; nothing changes', async () => {
  const vault = await openVault({ dataDir: s.dataDir });
  try {
    const before = await snapshot(vault);
    const failures: string[] = [];
    const stricter: string[] = [];
    for (const r of routes) {
      const documented = DOCUMENTED[key(r)];
      const need = documented ?? requiredRole(r.method, `/api/v1${express(r.path)}`);
      const url = `/api/v1${r.path.replace(/\{\w+\}/g, 'zz-none')}`;
      const body = r.method === 'GET' || r.method === 'DELETE' ? undefined : { zz_unknown_field: 1 };
      for (const as of ['none', 'reader', 'operator', 'admin'] as const) {
        const ans = await call(s.url, r.method, url, { token: as === 'none' ? undefined : tokens[as], body });
        const want = as === 'none' ? 401 : roleAllows(as, need) ? 'allowed' : 403;
        let ok = want === 'allowed' ? ans.status !== 401 && ans.status !== 403 && ans.status < 500 : ans.status === want;
        // An undocumented route may be stricter than rbac.ts says (the replication control
        // plane checks for a registered component itself), never looser; admin may do anything.
        if (!ok && documented === undefined && want === 'allowed' && as !== 'admin' && ans.status === 403) {
          ok = true;
          stricter.push(`${key(r)} as ${as}`);
        }
        if (!ok) failures.push(`${key(r)} as ${as}: ${ans.status} (want ${want}) ${ans.text.slice(0, 160)}`);
        else if (ans.status >= 400 && !ans.type.includes('text/event-stream')) assert.ok(isErrorBody(ans.body), `${key(r)} as ${as}: error body`);
        if (as === 'reader' && r.method !== 'GET' && ans.status !== 403) failures.push(`${key(r)}: a reader got ${ans.status} on a write`);
      }
    }
    assert.deepEqual(failures, []);
    if (stricter.length) console.log(`stricter than requiredRole (route's own check): ${stricter.join(', ')}`);
    assert.equal(await snapshot(vault), before, 'the calls changed the vault');
  } finally {
    await vault.close();
  }
});
