// The REST API against a real `rebound serve` subprocess, on SQLite and on PostgreSQL: health,
// OpenAPI, metrics, every role on every route, the vault's rules (site roots, pairings, machine
// disks confined to the root), pagination, jobs with their event stream, tokens, audit.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { freshPostgresDatabase, dialects } from '../support/db.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import type { Store } from '../../src/store/open.ts';
import { newId } from '../../src/store/open.ts';
import { call, isErrorBody, openVault } from './helpers.ts';

type Role = 'reader' | 'operator' | 'admin';

for (const dialect of dialects) {
  describe(`API on ${dialect}`, () => {
    let s: ServerProcess;
    let vault: Store;
    const tokens: Record<Role, string> = { reader: '', operator: '', admin: '' };
    let api: (method: string, p: string, opts?: { as?: Role | 'none' | string; body?: unknown }) => ReturnType<typeof call>;

    before(async () => {
      const dbUrl = dialect === 'postgres' ? await freshPostgresDatabase() : undefined;
      s = await startServerProcess({ ...(dbUrl ? { dbUrl } : {}), env: { REBOUND_ENABLE_TEST_JOBS: '1' } });
      vault = await openVault(dbUrl ? { url: dbUrl } : { dataDir: s.dataDir });
      tokens.admin = s.token;
      api = (method, p, opts = {}) => {
        const as = opts.as ?? 'admin';
        const token = as === 'none' ? undefined : as in tokens ? tokens[as as Role] : as;
        return call(s.url, method, `/api/v1${p}`, { token, body: opts.body });
      };
      for (const role of ['reader', 'operator'] as const) {
        const r = await api('POST', '/tokens', { body: { name: `t-${role}`, role } });
        assert.equal(r.status, 201, r.text);
        tokens[role] = (r.body as { token: string }).token;
      }
    });
    after(async () => {
      await vault?.close();
      await s?.cleanup();
    });

    it('answers /healthz without a token and names its store', async () => {
      const r = await call(s.url, 'GET', '/healthz');
      assert.equal(r.status, 200);
      assert.deepEqual({ ...(r.body as object), version: 'v' }, { ok: true, version: 'v', store: dialect });
    });

    it('publishes an OpenAPI 3 document with every route, and Swagger UI', async () => {
      const r = await call(s.url, 'GET', '/api/v1/openapi.json');
      assert.equal(r.status, 200);
      const doc = r.body as { openapi: string; paths: Record<string, Record<string, unknown>> };
      assert.match(doc.openapi, /^3\./);
      const have = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
      for (const want of [
        'GET /healthz', 'GET /metrics', 'GET /api/v1/whoami', 'GET /api/v1/tokens', 'POST /api/v1/tokens', 'DELETE /api/v1/tokens/{id}',
        'GET /api/v1/sites', 'POST /api/v1/sites', 'GET /api/v1/sites/{name}', 'GET /api/v1/sites/{name}/hosts', 'POST /api/v1/sites/{name}/hosts',
        'GET /api/v1/policies', 'POST /api/v1/policies', 'GET /api/v1/pairings', 'POST /api/v1/pairings', 'GET /api/v1/machines', 'POST /api/v1/machines',
        'GET /api/v1/machines/{name}', 'GET /api/v1/items', 'GET /api/v1/items/{machine}', 'GET /api/v1/jobs', 'GET /api/v1/jobs/{id}',
        'POST /api/v1/jobs/{id}/cancel', 'POST /api/v1/jobs/{id}/resume', 'GET /api/v1/jobs/{id}/events', 'GET /api/v1/events', 'GET /api/v1/audit',
        'POST /api/v1/diag/jobs',
      ]) assert.ok(have.includes(want), `${want} missing from the OpenAPI document`);
      const ui = await fetch(`${s.url}/api/v1/docs`);
      assert.equal(ui.status, 200);
      await ui.text();
    });

    it('applies roles on every route: no token 401, reader cannot write, operator cannot manage the vault, admin can', async () => {
      // [method, path, role needed]
      const routes: [string, string, Role][] = [
        ['GET', '/whoami', 'reader'], ['GET', '/sites', 'reader'], ['GET', '/sites/x', 'reader'], ['GET', '/sites/x/hosts', 'reader'],
        ['GET', '/policies', 'reader'], ['GET', '/pairings', 'reader'], ['GET', '/machines', 'reader'], ['GET', '/machines/x', 'reader'],
        ['GET', '/items', 'reader'], ['GET', '/items/x', 'reader'], ['GET', '/jobs', 'reader'], ['GET', `/jobs/${newId()}`, 'reader'],
        ['GET', `/jobs/${newId()}/events`, 'reader'], ['GET', '/events', 'reader'],
        ['POST', '/machines', 'operator'], ['POST', `/jobs/${newId()}/cancel`, 'operator'], ['POST', `/jobs/${newId()}/resume`, 'operator'],
        ['GET', '/audit', 'admin'], ['GET', '/tokens', 'admin'], ['POST', '/tokens', 'admin'], ['DELETE', `/tokens/${newId()}`, 'admin'],
        ['POST', '/sites', 'admin'], ['POST', '/sites/x/hosts', 'admin'], ['POST', '/policies', 'admin'], ['POST', '/pairings', 'admin'],
        ['POST', '/diag/jobs', 'admin'],
      ];
      const rank: Record<Role, number> = { reader: 0, operator: 1, admin: 2 };
      for (const [method, p, need] of routes) {
        const body = method === 'POST' ? {} : undefined;
        const none = await api(method, p, { as: 'none', body });
        assert.equal(none.status, 401, `${method} ${p} without a token`);
        assert.ok(isErrorBody(none.body));
        const bad = await api(method, p, { as: 'rbd_not-a-real-token', body });
        assert.equal(bad.status, 401, `${method} ${p} with a bad token`);
        for (const role of ['reader', 'operator', 'admin'] as const) {
          const r = await api(method, p, { as: role, body });
          if (rank[role] < rank[need]) {
            assert.equal(r.status, 403, `${method} ${p} as ${role}: ${r.text}`);
            assert.ok(isErrorBody(r.body));
          } else {
            assert.ok(r.status !== 401 && r.status !== 403 && r.status < 500, `${method} ${p} as ${role}: ${r.status} ${r.text}`);
          }
        }
      }
      const me = await api('GET', '/whoami', { as: 'operator' });
      assert.deepEqual(me.body, { name: 't-operator', role: 'operator' });
    });

    it('creates sites with their root and a default container, and refuses bad roots and duplicates', async () => {
      const root = path.join(s.dataDir, 'sites', 'a');
      const r = await api('POST', '/sites', { body: { name: 'site-a', provider: 'physical', root } });
      assert.equal(r.status, 201, r.text);
      assert.ok(existsSync(root));
      const site = r.body as { id: string };
      const containers = await vault.db.selectFrom('containers').select('name').where('site_id', '=', site.id).execute();
      assert.deepEqual(containers.map((c) => c.name), ['default']);
      assert.equal((await api('POST', '/sites', { body: { name: 'site-a', provider: 'qemu', root } })).status, 409);
      const file = path.join(s.dataDir, 'plain-file');
      writeFileSync(file, 'x');
      const refused = await api('POST', '/sites', { body: { name: 'site-f', provider: 'qemu', root: file } });
      assert.equal(refused.status, 400);
      assert.equal((refused.body as { error: { code: string } }).error.code, 'invalid-root');
      assert.equal((await api('POST', '/sites', { body: { name: 'site-r', provider: 'qemu', root: 'relative/dir' } })).status, 400);
      assert.equal((await api('POST', '/sites', { body: { name: 'Bad Name', provider: 'qemu', root } })).status, 400);
      assert.equal((await api('POST', '/sites', { body: { name: 'site-q', provider: 'qemu', root: path.join(s.dataDir, 'sites', 'q') } })).status, 201);
      const host = await api('POST', '/sites/site-a/hosts', { body: { name: 'h1', address: '10.0.0.1' } });
      assert.equal(host.status, 201, host.text);
      assert.equal((await api('POST', '/sites/site-a/hosts', { body: { name: 'h1' } })).status, 409);
      const hosts = await api('GET', '/sites/site-a/hosts', { as: 'reader' });
      assert.deepEqual((hosts.body as { items: { name: string; site: string }[] }).items.map((h) => [h.name, h.site]), [['h1', 'site-a']]);
      assert.equal((await api('GET', '/sites/nope', { as: 'reader' })).status, 404);
    });

    it('validates policies with the domain rules and pairs only compatible, distinct, existing sites', async () => {
      const bad = await api('POST', '/policies', { body: { name: 'p-bad', frequency: '30s', retention: '10s' } });
      assert.equal(bad.status, 400);
      assert.equal((bad.body as { error: { code: string } }).error.code, 'invalid-policy');
      const ok = await api('POST', '/policies', { body: { name: 'gold', frequency: '30s', retention: '24h', appConsistent: '4h', bandwidth: '10M' } });
      assert.equal(ok.status, 201, ok.text);
      assert.equal((ok.body as { bandwidthBps: number }).bandwidthBps, 10 * 1024 * 1024);
      assert.equal((await api('POST', '/policies', { body: { name: 'gold' } })).status, 409);
      assert.equal((await api('POST', '/pairings', { body: { primary: 'site-a', recovery: 'site-a', policy: 'gold' } })).status, 400);
      assert.equal((await api('POST', '/pairings', { body: { primary: 'site-a', recovery: 'nope', policy: 'gold' } })).status, 404);
      assert.equal((await api('POST', '/pairings', { body: { primary: 'site-a', recovery: 'site-q', policy: 'nope' } })).status, 404);
      const incompatible = await api('POST', '/pairings', { body: { primary: 'site-q', recovery: 'site-a', policy: 'gold' } });
      assert.equal(incompatible.status, 400);
      assert.equal((incompatible.body as { error: { code: string } }).error.code, 'pairing.incompatible');
      const p = await api('POST', '/pairings', { body: { primary: 'site-a', recovery: 'site-q', policy: 'gold' } });
      assert.equal(p.status, 201, p.text);
      assert.deepEqual({ ...(p.body as object), id: '', createdAt: 0 }, { id: '', primary: 'site-a', recovery: 'site-q', policy: 'gold', createdAt: 0 });
      assert.equal((await api('POST', '/pairings', { body: { primary: 'site-a', recovery: 'site-q', policy: 'gold' } })).status, 409);
    });

    it('adds machines whose disks exist inside the site root, refusing .. and escaping symlinks', async () => {
      const root = path.join(s.dataDir, 'sites', 'a');
      mkdirSync(path.join(root, 'img'), { recursive: true });
      const disk = path.join(root, 'img', 'web-01.raw');
      writeFileSync(disk, Buffer.alloc(65536));
      const qcow = path.join(root, 'img', 'web-01b.qcow2');
      const header = Buffer.alloc(512);
      header.writeUInt32BE(0x514649fb, 0);
      header.writeBigUInt64BE(1n << 30n, 24);
      writeFileSync(qcow, header);
      const outside = path.join(s.dataDir, 'outside.raw');
      writeFileSync(outside, 'secret');
      symlinkSync(outside, path.join(root, 'img', 'escape.raw'));
      const add = (name: string, disks: string[], as: Role = 'operator') => api('POST', '/machines', { as, body: { name, site: 'site-a', disks } });
      const ok = await add('web-01', [disk, qcow]);
      assert.equal(ok.status, 201, ok.text);
      const m = ok.body as { kind: string; disks: { path: string; sizeBytes: number; format: string }[] };
      assert.equal(m.kind, 'physical');
      assert.deepEqual(m.disks.map((d) => [d.path, d.sizeBytes, d.format]), [[disk, 65536, 'raw'], [qcow, 1 << 30, 'qcow2']]);
      for (const [disks, why] of [
        [[path.join(root, 'img', '..', '..', 'outside.raw')], '..'],
        [[path.join(root, 'img', 'escape.raw')], 'symlink escaping the root'],
        [[outside], 'outside the root'],
        [[path.join(root, 'img', 'missing.raw')], 'missing'],
        [['img/web-01.raw'], 'relative'],
        [[root], 'a directory'],
      ] as [string[], string][]) {
        const r = await add('web-02', disks);
        assert.equal(r.status, 400, `${why}: ${r.text}`);
        assert.equal((r.body as { error: { code: string } }).error.code, 'invalid-disk', why);
      }
      assert.equal((await add('web-01', [disk])).status, 409);
      assert.equal((await add('web-03', [disk], 'reader')).status, 403);
      const list = await api('GET', '/machines?site=site-a', { as: 'reader' });
      assert.deepEqual((list.body as { items: { name: string }[] }).items.map((x) => x.name), ['web-01']);
      assert.deepEqual((await api('GET', '/machines?site=site-q', { as: 'reader' })).body, { items: [], next: null });
      assert.equal((await api('GET', '/machines/web-01', { as: 'reader' })).status, 200);
    });

    it('lists protected items in pages with filters and shows one with its RPO', async () => {
      const machine = await vault.db.selectFrom('machines').selectAll().where('name', '=', 'web-01').executeTakeFirstOrThrow();
      const pairing = await vault.db.selectFrom('pairings').selectAll().executeTakeFirstOrThrow();
      const t = Date.now();
      const rows = [];
      for (let i = 0; i < 5; i++) {
        const mid = i === 0 ? machine.id : newId();
        if (i > 0) await vault.db.insertInto('machines').values({ ...machine, id: mid, name: `db-${i}` }).execute();
        rows.push({
          id: newId(), machine_id: mid, pairing_id: pairing.id, state: i % 2 || i === 4 ? 'protected' : 'initial-replication', direction: 'forward',
          // db-4's newest point is a month old: critical under any policy (the server's health
          // monitor agrees with the fixture, so it does not change it under the test).
          active_site_id: machine.site_id, group_name: null, health: i === 4 ? 'critical' : 'normal', last_point_at: i === 0 ? t - 42_000 : i === 4 ? t - 30 * 86_400_000 : null,
          details: '{}', version: 1, created_at: t, updated_at: t,
        });
      }
      await vault.db.insertInto('protected_items').values(rows).execute();
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const r = await api('GET', `/items?limit=2${cursor ? `&cursor=${cursor}` : ''}`, { as: 'reader' });
        assert.equal(r.status, 200, r.text);
        const page = r.body as { items: { id: string }[]; next: string | null };
        assert.ok(page.items.length <= 2);
        seen.push(...page.items.map((x) => x.id));
        cursor = page.next;
        pages++;
      } while (cursor);
      assert.equal(pages, 3);
      assert.deepEqual(seen, rows.map((r) => r.id).sort());
      const prot = await api('GET', '/items?state=protected', { as: 'reader' });
      assert.equal((prot.body as { items: unknown[] }).items.length, 3);
      const crit = await api('GET', '/items?health=critical', { as: 'reader' });
      assert.deepEqual((crit.body as { items: { machine: string }[] }).items.map((x) => x.machine), ['db-4']);
      assert.equal((await api('GET', '/items?state=bogus', { as: 'reader' })).status, 400);
      assert.equal((await api('GET', '/items?limit=501', { as: 'reader' })).status, 400);
      const one = await api('GET', '/items/web-01', { as: 'reader' });
      const item = one.body as { machine: string; rpoSeconds: number; activeSite: string };
      assert.equal(item.machine, 'web-01');
      assert.equal(item.activeSite, 'site-a');
      assert.ok(item.rpoSeconds >= 42 && item.rpoSeconds < 120, String(item.rpoSeconds));
      assert.equal((await api('GET', '/items/nope', { as: 'reader' })).status, 404);
    });

    it('runs a job, streams its events until it ends, and refuses to cancel or resume a finished job', async () => {
      const file = path.join(s.dataDir, 'seq-events');
      const started = await api('POST', '/diag/jobs', { body: { file, tasks: 3, sleepMs: 50 } });
      assert.equal(started.status, 202, started.text);
      const id = (started.body as { job: { id: string } }).job.id;
      const res = await fetch(`${s.url}/api/v1/jobs/${id}/events`, { headers: { authorization: `Bearer ${tokens.reader}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
      const text = await res.text(); // ends when the job ends
      const events = [...text.matchAll(/event: (\w+)\ndata: (.*)\n/g)].map((m) => ({ event: m[1], data: JSON.parse(m[2] ?? 'null') as { state: string } }));
      assert.equal(events.at(-1)?.event, 'end');
      assert.equal(events.at(-1)?.data.state, 'succeeded');
      assert.ok(events.filter((e) => e.event === 'job').length >= 2, text);
      assert.equal(readFileSync(file, 'utf8'), '0\n1\n2\n');
      const job = await api('GET', `/jobs/${id}`, { as: 'reader' });
      const j = job.body as { state: string; tasks: { state: string }[]; log: unknown[] };
      assert.equal(j.state, 'succeeded');
      assert.deepEqual(j.tasks.map((t) => t.state), ['succeeded', 'succeeded', 'succeeded']);
      assert.equal((await api('POST', `/jobs/${id}/cancel`, { as: 'operator' })).status, 409);
      assert.equal((await api('POST', `/jobs/${id}/resume`, { as: 'operator' })).status, 409);
      assert.equal((await api('POST', `/jobs/${newId()}/cancel`, { as: 'operator' })).status, 404);
      const list = await api('GET', '/jobs?state=succeeded&kind=diag.sequence', { as: 'reader' });
      assert.ok((list.body as { items: { id: string }[] }).items.some((x) => x.id === id));
      const slow = await api('POST', '/diag/jobs', { body: { file: path.join(s.dataDir, 'seq-cancel'), tasks: 5, sleepMs: 2000 } });
      const sid = (slow.body as { job: { id: string } }).job.id;
      const cancelled = await api('POST', `/jobs/${sid}/cancel`, { as: 'operator' });
      assert.equal(cancelled.status, 200, cancelled.text);
      assert.equal((cancelled.body as { cancelRequested: boolean }).cancelRequested, true);
    });

    it('expires and revokes tokens, records last use, and never shows secrets again', async () => {
      const short = await api('POST', '/tokens', { body: { name: 'short', role: 'reader', expiresIn: '1s' } });
      assert.equal(short.status, 201, short.text);
      const shortToken = (short.body as { token: string }).token;
      assert.equal((await api('GET', '/whoami', { as: shortToken })).status, 200);
      await new Promise((r) => setTimeout(r, 1100));
      const expired = await api('GET', '/whoami', { as: shortToken });
      assert.equal(expired.status, 401);
      assert.match((expired.body as { error: { message: string } }).error.message, /expired/);
      const victim = await api('POST', '/tokens', { body: { name: 'victim', role: 'operator' } });
      const v = victim.body as { id: string; token: string };
      assert.equal((await api('GET', '/whoami', { as: v.token })).status, 200);
      const revoked = await api('DELETE', `/tokens/${v.id}`);
      assert.equal(revoked.status, 200);
      assert.equal(typeof (revoked.body as { revokedAt: number }).revokedAt, 'number');
      assert.equal((await api('GET', '/whoami', { as: v.token })).status, 401);
      const list = await api('GET', '/tokens');
      assert.doesNotMatch(list.text, /rbd_/);
      const reader = (list.body as { items: { name: string; lastUsedAt: number | null }[] }).items.find((t) => t.name === 't-reader');
      assert.equal(typeof reader?.lastUsedAt, 'number');
      const stored = await vault.db.selectFrom('tokens').select('hash').where('id', '=', v.id).executeTakeFirstOrThrow();
      assert.match(stored.hash, /^[0-9a-f]{64}$/);
      assert.ok(!JSON.stringify(await vault.db.selectFrom('tokens').selectAll().execute()).includes(v.token));
    });

    it('audits every state-changing call, refused ones too, without secrets; only admin reads it', async () => {
      const r = await api('GET', '/audit?limit=500');
      assert.equal(r.status, 200);
      const entries = (r.body as { items: { actor: string; action: string; target: string; status: number }[] }).items;
      assert.ok(entries.some((e) => e.actor === 'admin' && e.action === 'POST /api/v1/sites' && e.target === 'site-a' && e.status === 201));
      assert.ok(entries.some((e) => e.actor === 't-reader' && e.action === 'POST /api/v1/machines' && e.status === 403));
      assert.ok(entries.some((e) => e.actor === 'anonymous' && e.status === 401));
      assert.ok(!entries.some((e) => e.action.startsWith('GET ')));
      assert.doesNotMatch(r.text, /rbd_/);
      assert.equal((await api('GET', '/audit', { as: 'operator' })).status, 403);
      const page = await api('GET', '/audit?limit=2');
      const next = (page.body as { next: string }).next;
      const page2 = await api('GET', `/audit?limit=2&cursor=${next}`);
      const ids = [...(page.body as { items: { id: number }[] }).items, ...(page2.body as { items: { id: number }[] }).items].map((e) => e.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => b - a));
      assert.equal(new Set(ids).size, 4);
    });

    it('exposes request latency, jobs by state and items by health on /metrics', async () => {
      const r = await call(s.url, 'GET', '/metrics');
      assert.equal(r.status, 200);
      assert.match(r.text, /rebound_http_request_duration_seconds_bucket\{[^}]*route="\/api\/v1\/sites"[^}]*status="201"/);
      assert.match(r.text, /rebound_jobs\{state="succeeded"\} [1-9]/);
      assert.match(r.text, /rebound_protected_items\{health="critical"\} 1/);
      assert.match(r.text, /rebound_protected_items\{health="normal"\} 4/);
    });
  });
}
