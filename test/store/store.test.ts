// The vault's store on real SQLite and PostgreSQL: the migration creates exactly schema.ts's
// tables, constraints and foreign keys hold, re-opening migrates nothing twice, times come back
// as numbers, the transaction helper is atomic and serialises read-modify-write, and opening
// fails with a sentence on a bad URL or an unreachable server.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ReboundError } from '../../src/domain/errors.ts';
import { newId, now, openStore, parseJson, toJson, transaction } from '../../src/store/open.ts';
import type { Store } from '../../src/store/open.ts';
import { freePort } from '../support/postgres.ts';
import { dialects, freshPostgresDatabase, withStore } from '../support/db.ts';

// schema.ts is the contract: every table and column, by name.
const expected: Record<string, string[]> = {
  sites: ['id', 'name', 'provider', 'root', 'config', 'created_at'],
  hosts: ['id', 'site_id', 'name', 'address', 'config', 'created_at'],
  containers: ['id', 'site_id', 'name', 'created_at'],
  policies: ['id', 'name', 'frequency_s', 'retention_s', 'app_consistent_s', 'compression', 'encryption', 'bandwidth_bps', 'initial_start', 'created_at'],
  pairings: ['id', 'primary_site_id', 'recovery_site_id', 'policy_id', 'created_at'],
  machines: ['id', 'name', 'site_id', 'host_id', 'kind', 'disks', 'config', 'created_at'],
  protected_items: ['id', 'machine_id', 'pairing_id', 'state', 'direction', 'active_site_id', 'group_name', 'health', 'last_point_at', 'details', 'version', 'created_at', 'updated_at'],
  recovery_points: ['id', 'item_id', 'taken_at', 'kind', 'group_point_id', 'status', 'disks', 'created_at'],
  group_points: ['id', 'group_name', 'seq', 'taken_at', 'kind', 'pause_ms', 'created_at'],
  group_point_members: ['point_id', 'group_point_id', 'item_id'],
  recovery_plans: ['id', 'name', 'spec', 'created_at', 'updated_at'],
  jobs: ['id', 'kind', 'target', 'state', 'params', 'result', 'error', 'progress', 'attempts', 'max_attempts', 'run_after', 'locked_by', 'locked_at', 'lease_expires_at', 'cancel_requested', 'idempotency_key', 'created_by', 'created_at', 'started_at', 'finished_at', 'updated_at'],
  tasks: ['id', 'job_id', 'seq', 'name', 'state', 'progress', 'checkpoint', 'result', 'error', 'started_at', 'finished_at', 'resumed_at'],
  job_log: ['id', 'job_id', 'task_seq', 'at', 'level', 'message'],
  tokens: ['id', 'name', 'role', 'hash', 'created_at', 'expires_at', 'revoked_at', 'last_used_at'],
  audit: ['id', 'at', 'actor', 'action', 'target', 'status', 'detail'],
  events: ['id', 'at', 'kind', 'item_id', 'message', 'data'],
  settings: ['key', 'value', 'updated_at'],
  components: ['id', 'name', 'role', 'site_id', 'address', 'token_id', 'cert_serial', 'cert_pem', 'status', 'registered_at', 'last_seen_at', 'revoked_at'],
};

async function site(store: Store, name: string): Promise<string> {
  const id = newId();
  await store.db.insertInto('sites').values({ id, name, provider: 'qemu', root: `/srv/${name}`, config: '{}', created_at: now() }).execute();
  return id;
}

async function job(store: Store, idempotencyKey: string | null = null): Promise<string> {
  const id = newId();
  const t = now();
  await store.db
    .insertInto('jobs')
    .values({ id, kind: 'k', target: '', state: 'queued', params: '{}', result: null, error: null, progress: 0, attempts: 0, max_attempts: 1, run_after: t, locked_by: null, locked_at: null, lease_expires_at: null, cancel_requested: 0, idempotency_key: idempotencyKey, created_by: 'test', created_at: t, started_at: null, finished_at: null, updated_at: t })
    .execute();
  return id;
}

const rejectsConstraint = (p: Promise<unknown>) => assert.rejects(p, (e: Error) => /unique|foreign key|constraint/i.test(e.message));

for (const dialect of dialects) {
  describe(`store on ${dialect}`, () => {
    it('migrates to exactly the tables and columns of schema.ts, once', async () => {
      await withStore(dialect, async (ts) => {
        const tables = (await ts.store.db.introspection.getTables()).filter((t) => !t.name.startsWith('rebound_migration'));
        const actual = Object.fromEntries(tables.map((t) => [t.name, t.columns.map((c) => c.name).sort()]));
        const want = Object.fromEntries(Object.entries(expected).map(([t, cols]) => [t, [...cols].sort()]));
        assert.deepEqual(actual, want);
        // Re-opening (another process starting) applies nothing again.
        const again = await ts.reopen();
        try {
          const applied = await again.db
            .selectFrom('rebound_migration' as 'sites')
            .select('name')
            .execute();
          assert.deepEqual(applied.map((r) => r.name), ['0001-initial', '0002-components', '0003-replication-groups']);
        } finally {
          await again.close();
        }
      });
    });

    it('enforces unique constraints and foreign keys, cascades deletes', async () => {
      await withStore(dialect, async ({ store }) => {
        const a = await site(store, 'primary');
        await rejectsConstraint(site(store, 'primary'));
        const host = { id: newId(), site_id: a, name: 'kvm1', address: null, config: '{}', created_at: now() };
        await store.db.insertInto('hosts').values(host).execute();
        await rejectsConstraint(store.db.insertInto('hosts').values({ ...host, id: newId() }).execute());
        await rejectsConstraint(store.db.insertInto('hosts').values({ ...host, id: newId(), name: 'x', site_id: newId() }).execute());
        await store.db.deleteFrom('sites').where('id', '=', a).execute();
        assert.equal((await store.db.selectFrom('hosts').selectAll().execute()).length, 0, 'hosts go with their site');

        // Idempotency keys: unique when set, any number of NULLs.
        await job(store, 'key-1');
        await rejectsConstraint(job(store, 'key-1'));
        const j1 = await job(store);
        await job(store);
        const task = { id: newId(), job_id: j1, seq: 0, name: 't', state: 'pending', progress: 0, checkpoint: null, result: null, error: null, started_at: null, finished_at: null, resumed_at: null };
        await store.db.insertInto('tasks').values(task).execute();
        await rejectsConstraint(store.db.insertInto('tasks').values({ ...task, id: newId() }).execute());
        await rejectsConstraint(store.db.insertInto('tasks').values({ ...task, id: newId(), job_id: newId() }).execute());
        await store.db.insertInto('job_log').values({ job_id: j1, task_seq: 0, at: now(), level: 'info', message: 'one' }).execute();
        await store.db.insertInto('job_log').values({ job_id: j1, task_seq: null, at: now(), level: 'info', message: 'two' }).execute();
        const log = await store.db.selectFrom('job_log').selectAll().orderBy('id').execute();
        assert.deepEqual(log.map((l) => l.message), ['one', 'two']);
        assert.ok(log[0] && log[1] && typeof log[0].id === 'number' && log[1].id > log[0].id, 'log ids are ascending numbers');
        await store.db.deleteFrom('jobs').where('id', '=', j1).execute();
        assert.equal((await store.db.selectFrom('tasks').selectAll().execute()).length, 0, 'tasks go with their job');
      });
    });

    it('returns epoch-millisecond times and JSON columns as they went in', async () => {
      await withStore(dialect, async ({ store }) => {
        const t = Date.UTC(2040, 0, 1, 12, 0, 0, 123);
        const id = newId();
        const config = { bridge: 'br0', ports: [1, 2], nested: { ok: true }, text: 'é "q" \\' };
        await store.db.insertInto('sites').values({ id, name: 's', provider: 'qemu', root: '/srv', config: toJson(config) ?? '{}', created_at: t }).execute();
        const row = await store.db.selectFrom('sites').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
        assert.equal(row.created_at, t);
        assert.equal(typeof row.created_at, 'number');
        assert.deepEqual(parseJson(row.config, {}), config);
        assert.deepEqual(parseJson(null, { none: true }), { none: true });
        assert.equal(toJson(undefined), null);
      });
    });

    it('transaction() rolls back on a throw and serialises read-modify-write', async () => {
      await withStore(dialect, async ({ store }) => {
        const id = await site(store, 'counter');
        await assert.rejects(
          transaction(store, async (tx) => {
            await tx.updateTable('sites').set({ config: '{"n":100}' }).where('id', '=', id).execute();
            throw new Error('boom');
          }),
          /boom/,
        );
        const read = async () => parseJson<{ n?: number }>((await store.db.selectFrom('sites').select('config').where('id', '=', id).executeTakeFirstOrThrow()).config, {});
        assert.deepEqual(await read(), {});
        // 20 concurrent increments: none may be lost.
        await Promise.all(
          Array.from({ length: 20 }, () =>
            transaction(store, async (tx) => {
              let q = tx.selectFrom('sites').select('config').where('id', '=', id);
              if (store.dialect === 'postgres') q = q.forUpdate();
              const cur = parseJson<{ n?: number }>((await q.executeTakeFirstOrThrow()).config, {});
              await new Promise((r) => setImmediate(r));
              await tx.updateTable('sites').set({ config: JSON.stringify({ n: (cur.n ?? 0) + 1 }) }).where('id', '=', id).execute();
            }),
          ),
        );
        assert.deepEqual(await read(), { n: 20 });
      });
    });
  });
}

describe('openStore', () => {
  it('two servers opening one new PostgreSQL database at once both come up, migrated once', async () => {
    const url = await freshPostgresDatabase();
    const [a, b] = await Promise.all([openStore({ url }), openStore({ url })]);
    try {
      assert.equal(a.dialect, 'postgres');
      const tables = (await b.db.introspection.getTables()).map((t) => t.name).sort();
      assert.deepEqual(tables, [...Object.keys(expected), 'rebound_migration', 'rebound_migration_lock'].sort());
      const applied = await a.db.selectFrom('rebound_migration' as 'sites').select('name').execute();
      assert.deepEqual(applied.map((r) => r.name), ['0001-initial', '0002-components', '0003-replication-groups']);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('says what is wrong with a bad URL, an unreachable server, and hides the password', async () => {
    await assert.rejects(openStore({ url: 'mysql://x' }), (e: ReboundError) => e.code === 'store.bad-url' && /not a PostgreSQL URL/.test(e.message) && e.hint !== undefined);
    const port = await freePort();
    await assert.rejects(
      openStore({ url: `postgres://rebound:s3cret@127.0.0.1:${port}/vault` }),
      (e: ReboundError) => e.code === 'store.unreachable' && e.kind === 'unavailable' && !e.message.includes('s3cret') && e.message.includes(`127.0.0.1:${port}`),
    );
    const url = await freshPostgresDatabase();
    const s = await openStore({ url });
    try {
      assert.ok(!s.describe.includes('s3cret'));
    } finally {
      await s.close();
    }
  });
});

describe('newId', () => {
  it('makes RFC 9562 version-7 UUIDs that sort in creation order, also within a millisecond', () => {
    const ids = Array.from({ length: 5000 }, () => newId());
    for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual([...ids].sort(), ids);
    assert.equal(new Set(ids).size, ids.length);
    const ms = parseInt(ids[0]?.replaceAll('-', '').slice(0, 12) ?? '', 16);
    assert.ok(Math.abs(ms - Date.now()) < 5000, 'the first 48 bits are the time in ms');
  });
});
