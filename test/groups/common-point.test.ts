// Replication groups in the vault, on SQLite and PostgreSQL: a group point recorded by the agent
// (before its member points are sent) and the member points recorded by the master target (in
// either order) tie together; the plan's point choice takes each group's newest point that every
// member holds (`latest`, `latest-app-consistent`), a machine outside a group its own newest;
// pruning one member's point of a group point makes that group point incomplete, so the choice
// falls back to the newest complete one. Also the group rules: one pairing per group, and no
// change of group while a failover runs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReboundError } from '../../src/domain/errors.ts';
import { checkGroupChange, checkGroupMembership } from '../../src/domain/groups.ts';
import { choosePoints } from '../../src/domain/plan.ts';
import { newId, now } from '../../src/store/open.ts';
import type { Store } from '../../src/store/open.ts';
import { machinePoints } from '../../src/vault/jobs/plan.ts';
import { setGroup } from '../../src/vault/groups.ts';
import { ReplicationCatalogue } from '../../src/vault/replication-catalogue.ts';
import { groupKey, groupPointKind } from '../../src/replication/group.ts';
import { dialects, withStore } from '../support/db.ts';

const refused = (code: string) => (e: unknown): boolean => {
  assert.ok(e instanceof ReboundError, String(e));
  assert.equal(e.code, code, e.message);
  return true;
};

interface World { items: Map<string, string>; pairing: string; other: string; dc2: string }

async function world(store: Store): Promise<World> {
  const t = now();
  const site = async (name: string): Promise<string> => {
    const id = newId();
    await store.db.insertInto('sites').values({ id, name, provider: 'physical', root: `/srv/${name}`, config: '{}', created_at: t }).execute();
    return id;
  };
  const [dc1, dc2, dc3] = [await site('dc1'), await site('dc2'), await site('dc3')];
  const policy = newId();
  await store.db.insertInto('policies').values({ id: policy, name: 'gold', frequency_s: 30, retention_s: 86_400, app_consistent_s: 3600, compression: 'zstd', encryption: 'aes-256-gcm', bandwidth_bps: 0, initial_start: 'now', created_at: t }).execute();
  const pairing = newId();
  const other = newId();
  await store.db.insertInto('pairings').values({ id: pairing, primary_site_id: dc1, recovery_site_id: dc2, policy_id: policy, created_at: t }).execute();
  await store.db.insertInto('pairings').values({ id: other, primary_site_id: dc1, recovery_site_id: dc3, policy_id: policy, created_at: t + 1 }).execute();
  const items = new Map<string, string>();
  for (const [name, group] of [['db', 'app'], ['web', 'app'], ['solo', null], ['far', null]] as const) {
    const mid = newId();
    await store.db.insertInto('machines').values({ id: mid, name, site_id: dc1, host_id: null, kind: 'physical', disks: '[]', config: '{}', created_at: t }).execute();
    const id = newId();
    await store.db.insertInto('protected_items').values({
      id, machine_id: mid, pairing_id: name === 'far' ? other : pairing, state: 'protected', direction: 'forward', active_site_id: dc1,
      group_name: group, health: 'normal', last_point_at: null, details: '{}', version: 1, created_at: t, updated_at: t,
    }).execute();
    items.set(name, id);
  }
  return { items, pairing, other, dc2 };
}

const disks = [{ id: 'disk0', sizeBytes: 1 << 20, bytes: 4096 }];

for (const dialect of dialects) {
  describe(`replication groups on ${dialect}`, () => {
    it('the common point is the newest group point every member holds, whichever was recorded first', async () => {
      await withStore(dialect, async ({ store }) => {
        const w = await world(store);
        const cat = new ReplicationCatalogue(store, { processServer: () => '', masterTarget: () => '' });
        const db = w.items.get('db')!;
        const web = w.items.get('web')!;
        const solo = w.items.get('solo')!;
        const t0 = 1_700_000_000_000;
        let seq = 0;
        const point = async (item: string, takenAt: number, kind: 'crash' | 'app' = 'crash'): Promise<string> => {
          const id = newId();
          await cat.recordPoint({ itemId: item, pointId: id, pointSeq: ++seq, takenAt, kind, disks, siteId: w.dc2 });
          return id;
        };
        const group = async (n: number, takenAt: number, kind: 'crash' | 'app', members: [string, string][]): Promise<string> => {
          const id = newId();
          await cat.recordGroupPoint({ groupPointId: id, group: 'app', seq: n, takenAt, kind, pauseMs: 12, members: members.map(([itemId, pointId]) => ({ itemId, pointId })) });
          return id;
        };

        // G1 (app): group point recorded first, then both member points (the agent's order).
        const [db1, web1] = [newId(), newId()];
        const g1 = await group(1, t0, 'app', [[db, db1], [web, web1]]);
        await cat.recordPoint({ itemId: db, pointId: db1, pointSeq: ++seq, takenAt: t0, kind: 'app', disks, siteId: w.dc2 });
        await cat.recordPoint({ itemId: web, pointId: web1, pointSeq: ++seq, takenAt: t0 + 3, kind: 'app', disks, siteId: w.dc2 });
        // G2 (crash): the member points reach the vault before the group point (a retried call).
        const db2 = await point(db, t0 + 30_000);
        const web2 = await point(web, t0 + 30_002);
        const g2 = await group(2, t0 + 30_000, 'crash', [[db, db2], [web, web2]]);
        // Recording the same group point again changes nothing.
        await cat.recordGroupPoint({ groupPointId: g2, group: 'app', seq: 2, takenAt: t0 + 30_000, kind: 'crash', pauseMs: 12, members: [{ itemId: db, pointId: db2 }, { itemId: web, pointId: web2 }] });
        // G3: only db's member point arrived (web's is still on its way): not common yet.
        const db3 = newId();
        await group(3, t0 + 60_000, 'crash', [[db, db3], [web, newId()]]);
        await cat.recordPoint({ itemId: db, pointId: db3, pointSeq: ++seq, takenAt: t0 + 60_000, kind: 'crash', disks, siteId: w.dc2 });
        // Points of their own, newer than every group point (a member outside the group's cycle).
        const webOwn = await point(web, t0 + 90_000);
        const soloLatest = await point(solo, t0 + 95_000);
        await point(solo, t0 + 10_000, 'app');

        const rows = await store.db.selectFrom('recovery_points').select(['id', 'group_point_id']).where('item_id', 'in', [db, web]).execute();
        const gp = new Map(rows.map((r) => [r.id, r.group_point_id]));
        assert.equal(gp.get(db1), g1);
        assert.equal(gp.get(web2), g2);
        assert.equal(gp.get(webOwn), null);

        const machines = ['db', 'web', 'solo'];
        let chosen = choosePoints('plan p', await machinePoints(store, machines, 'latest'), 'latest');
        assert.equal(chosen.get('db')?.id, db2, 'db takes the group\'s common latest (G2), not its own newest (G3)');
        assert.equal(chosen.get('web')?.id, web2, 'web takes G2, not its own newer point');
        assert.equal(chosen.get('solo')?.id, soloLatest, 'a machine outside a group takes its own latest');

        chosen = choosePoints('plan p', await machinePoints(store, machines, 'latest-app-consistent'), 'latest-app-consistent');
        assert.equal(chosen.get('db')?.groupPointId, g1);
        assert.equal(chosen.get('web')?.id, web1);

        // A plan naming one member still keeps its group together (the peer is looked up too).
        chosen = choosePoints('plan p', await machinePoints(store, ['web'], 'latest'), 'latest');
        assert.equal(chosen.get('web')?.id, web2);

        // Retention prunes web's G2 point: G2 is no longer common, the choice falls back to G1.
        await cat.prunePoints(web, [web2]);
        chosen = choosePoints('plan p', await machinePoints(store, machines, 'latest'), 'latest');
        assert.equal(chosen.get('db')?.groupPointId, g1);
        assert.equal(chosen.get('web')?.groupPointId, g1);
        // …and its membership row is gone with it; G2 remains for db's point only.
        assert.equal((await store.db.selectFrom('group_point_members').select('point_id').where('point_id', '=', web2).execute()).length, 0);
        await cat.prunePoints(db, [db2]);
        assert.equal((await store.db.selectFrom('group_points').select('id').where('id', '=', g2).execute()).length, 0, 'a group point with no member left is removed');

        // No common point at all: refused with a sentence that names the group.
        await cat.prunePoints(db, [db1]);
        await assert.rejects(async () => choosePoints('plan p', await machinePoints(store, machines, 'latest'), 'latest'), refused('no-common-point'));
      });
    });

    it('a group shares one pairing, and its membership does not change while a failover runs', async () => {
      await withStore(dialect, async ({ store }) => {
        const w = await world(store);
        await assert.rejects(setGroup(store, 'far', 'app'), (e: unknown) => {
          refused('group-pairing-mismatch')(e);
          assert.match((e as Error).message, /replication group app has machines paired dc1 → dc2 under policy gold \(db, web\); far is paired dc1 → dc3 under policy gold/);
          return true;
        });
        assert.deepEqual(await setGroup(store, 'solo', 'app'), { from: null, to: 'app' });
        assert.deepEqual(await setGroup(store, 'solo', null), { from: 'app', to: null });
        await store.db.updateTable('protected_items').set({ state: 'failing-over' }).where('id', '=', w.items.get('web')!).execute();
        await assert.rejects(setGroup(store, 'web', null), (e: unknown) => {
          refused('group-change-refused')(e);
          assert.match((e as Error).message, /web cannot leave replication group app now: its state is failing-over/);
          return true;
        });
        // A failover job of the machine that has not moved its state yet refuses too.
        const t = now();
        await store.db.insertInto('jobs').values({ id: 'j-1', kind: 'failover', target: 'db', state: 'queued', params: '{}', result: null, error: null, progress: 0, attempts: 0, max_attempts: 1, run_after: t, locked_by: null, locked_at: null, lease_expires_at: null, cancel_requested: 0, idempotency_key: null, created_by: 'test', created_at: t, started_at: null, finished_at: null, updated_at: t }).execute();
        await assert.rejects(setGroup(store, 'db', 'other'), refused('group-change-refused'));
        await assert.rejects(setGroup(store, 'nope', 'app'), refused('item.not-found'));
        const events = await store.db.selectFrom('events').select(['kind', 'message']).where('kind', '=', 'group-changed').execute();
        assert.deepEqual(events.map((e) => e.message), ['solo joined replication group app', 'solo left replication group app']);
      });
    });
  });
}

it('group rules without a store: pairing and direction shared; frozen states named', () => {
  const m = (machine: string, pairingId = 'p1', direction: 'forward' | 'reverse' = 'forward') => ({ machine, pairingId, pairing: pairingId, direction });
  checkGroupMembership('g', m('a'), []);
  checkGroupMembership('g', m('a'), [m('a', 'p2')]); // itself, with its old pairing: no peer
  checkGroupMembership('g', m('a'), [m('b'), m('c')]);
  assert.throws(() => checkGroupMembership('g', m('a', 'p2'), [m('b')]), refused('group-pairing-mismatch'));
  assert.throws(() => checkGroupMembership('g', m('a', 'p1', 'reverse'), [m('b')]), refused('group-direction-mismatch'));
  for (const s of ['test-failover', 'failing-over', 'failback-syncing', 'failback-ready'] as const) assert.throws(() => checkGroupChange('a', s, 'g', null), refused('group-change-refused'));
  for (const s of ['protected', 'initial-replication', 'failed-over', 'committed'] as const) checkGroupChange('a', s, 'g', null);
});

it('a group point is app-consistent only when every member froze; group keys are per source site and name', () => {
  assert.equal(groupPointKind([{ consistency: 'app' }, { consistency: 'app' }]), 'app');
  assert.equal(groupPointKind([{ consistency: 'app' }, { consistency: 'crash' }]), 'crash');
  assert.equal(groupPointKind([{ consistency: 'app' }, {}]), 'crash');
  assert.equal(groupPointKind([]), 'crash');
  const k = groupKey({ group: 'g', sourceSiteId: 's1' });
  assert.match(k, /^g-[0-9a-f]{24}$/);
  assert.equal(groupKey({ group: 'g', sourceSiteId: 's1' }), k);
  assert.notEqual(groupKey({ group: 'g', sourceSiteId: 's2' }), k);
  assert.notEqual(groupKey({ group: 'h', sourceSiteId: 's1' }), k);
});
