// Recovery plans: validation, the order a plan's failover runs in, where it fails over from, and
// which point each machine gets (replication groups share theirs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReboundError } from '../../src/domain/errors.ts';
import { choosePoints, executionOrder, inferDirection, validatePlan } from '../../src/domain/plan.ts';
import type { MachinePoints, PlanItemView } from '../../src/domain/plan.ts';
import { formatPointChoice, parsePointChoice } from '../../src/domain/points.ts';
import type { RecoveryPoint } from '../../src/domain/model.ts';

const refusedWith = (code: string, message?: string) => (e: unknown) => {
  assert.ok(e instanceof ReboundError, String(e));
  assert.equal(e.code, code);
  if (message !== undefined) assert.equal(e.message, message);
  return true;
};

void test('a plan needs at least one group, non-empty groups, and every machine once', () => {
  const spec = validatePlan({ name: 'app', groups: [{ machines: ['db-01'] }, { machines: ['web-01', 'web-02'], before: [{ kind: 'manual', text: 'check DNS' }] }] });
  assert.deepEqual(spec.groups[1], { machines: ['web-01', 'web-02'], before: [{ kind: 'manual', text: 'check DNS' }], after: [] });
  assert.throws(() => validatePlan({ name: 'app', groups: [] }), refusedWith('invalid-plan', 'plan app has no groups: give at least one group of machines (--group M1,M2).'));
  assert.throws(() => validatePlan({ name: 'app', groups: [{ machines: [] }] }), refusedWith('invalid-plan'));
  assert.throws(
    () => validatePlan({ name: 'app', groups: [{ machines: ['db-01'] }, { machines: ['web-01', 'db-01'] }] }),
    refusedWith('invalid-plan', 'machine db-01 is in groups 1 and 2 of plan app: each machine may appear once.'),
  );
  assert.throws(() => validatePlan({ name: 'app', groups: [{ machines: ['a', 'a'] }] }), refusedWith('invalid-plan', 'machine a is twice in group 1 of plan app: each machine may appear once.'));
  assert.throws(() => validatePlan({ name: 'app', groups: [{ machines: ['ghost'] }] }, new Set(['db-01'])), refusedWith('machine-not-found'));
  assert.throws(() => validatePlan({ name: 'app', groups: [{ machines: ['a'], after: [{ kind: 'script', path: 'rel.sh' }] }] }), refusedWith('invalid-plan'));
  assert.throws(() => validatePlan({ name: 'app', groups: [{ machines: ['a'], after: [{ kind: 'manual', text: ' ' }] }] }), refusedWith('invalid-plan'));
  assert.throws(() => validatePlan({ name: 'App', groups: [{ machines: ['a'] }] }), refusedWith('invalid-name'));
});

void test('execution: groups in order with their actions around them; planned shuts sources down last group first', () => {
  const spec = validatePlan({
    name: 'app',
    groups: [
      { machines: ['db-01'], after: [{ kind: 'script', path: '/opt/check-db.sh' }] },
      { machines: ['web-01', 'web-02'], before: [{ kind: 'manual', text: 'switch DNS' }] },
    ],
  });
  assert.deepEqual(executionOrder(spec, { planned: false }), [
    { kind: 'failover', group: 0, machines: ['db-01'] },
    { kind: 'action', group: 0, when: 'after', action: { kind: 'script', path: '/opt/check-db.sh' } },
    { kind: 'action', group: 1, when: 'before', action: { kind: 'manual', text: 'switch DNS' } },
    { kind: 'failover', group: 1, machines: ['web-01', 'web-02'] },
  ]);
  const planned = executionOrder(spec, { planned: true });
  assert.deepEqual(planned.slice(0, 2), [
    { kind: 'shutdown', machines: ['web-01', 'web-02'] },
    { kind: 'shutdown', machines: ['db-01'] },
  ]);
  assert.equal(planned.length, 6);
});

void test('property: every machine fails over exactly once, in group order', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 6 }), (sizes) => {
      let n = 0;
      const groups = sizes.map((size) => ({ machines: Array.from({ length: size }, () => `m${n++}`) }));
      const steps = executionOrder(validatePlan({ name: 'p', groups }), { planned: false });
      const order = steps.flatMap((s) => (s.kind === 'failover' ? s.machines : []));
      assert.deepEqual(order, Array.from({ length: n }, (_, i) => `m${i}`));
    }),
  );
});

const view = (machine: string, activeSite: string, direction: 'forward' | 'reverse' = 'forward'): PlanItemView => ({ machine, state: 'protected', direction, activeSite });

void test('direction: all machines at one site; failback when they all replicate in reverse', () => {
  assert.deepEqual(inferDirection('app', [view('a', 'site-a'), view('b', 'site-a')]), { activeSite: 'site-a', direction: 'forward', failback: false });
  assert.deepEqual(inferDirection('app', [view('a', 'site-b', 'reverse'), view('b', 'site-b', 'reverse')]), { activeSite: 'site-b', direction: 'reverse', failback: true });
  assert.throws(
    () => inferDirection('app', [view('a', 'site-a'), view('b', 'site-b', 'reverse')]),
    refusedWith('plan-mixed-sites', 'plan app has machines running at different sites (a at site-a; b at site-b): fail them over separately, or bring them to one site first.'),
  );
  assert.throws(() => inferDirection('app', [view('a', 'site-a'), view('b', 'site-a', 'reverse')]), refusedWith('plan-mixed-directions'));
  assert.throws(() => inferDirection('app', [view('a', 'site-a'), { ...view('b', 'site-a'), state: null }]), refusedWith('not-protected'));
});

let seq = 0;
const point = (item: string, takenAt: number, kind: 'crash' | 'app' = 'crash', groupPointId: string | null = null, status: 'ok' | 'bad' = 'ok'): RecoveryPoint => ({
  id: `p${seq++}`, item, takenAt, kind, groupPointId, status,
});

void test('latest: each machine its own newest usable point; a replication group its newest common one', () => {
  const solo: MachinePoints = { machine: 'solo', group: null, points: [point('solo', 10), point('solo', 30), point('solo', 40, 'crash', null, 'bad')] };
  // g1: db has the newest group point G3 but web lacks it (its copy failed), so G2 is the common one.
  const db: MachinePoints = { machine: 'db', group: 'g1', points: [point('db', 100, 'crash', 'G1'), point('db', 200, 'app', 'G2'), point('db', 300, 'crash', 'G3')] };
  const web: MachinePoints = { machine: 'web', group: 'g1', points: [point('web', 101, 'crash', 'G1'), point('web', 201, 'app', 'G2'), point('web', 301, 'crash', 'G3', 'bad'), point('web', 350)] };
  const chosen = choosePoints('plan:app', [solo, db, web], 'latest');
  assert.equal(chosen.get('solo')?.takenAt, 30);
  assert.equal(chosen.get('db')?.groupPointId, 'G2');
  assert.equal(chosen.get('web')?.groupPointId, 'G2');
  assert.equal(choosePoints('plan:app', [solo, db, web], 'latest-processed').get('db')?.groupPointId, 'G2');
});

void test('latest-app-consistent: only app points, common within a group; refused when there is none', () => {
  const db: MachinePoints = { machine: 'db', group: 'g1', points: [point('db', 100, 'app', 'G1'), point('db', 200, 'crash', 'G2'), point('db', 300, 'app', 'G3')] };
  const web: MachinePoints = { machine: 'web', group: 'g1', points: [point('web', 100, 'app', 'G1'), point('web', 200, 'crash', 'G2')] };
  const chosen = choosePoints('plan:app', [db, web], 'latest-app-consistent');
  assert.equal(chosen.get('db')?.groupPointId, 'G1');
  assert.equal(chosen.get('web')?.groupPointId, 'G1');

  const noApp: MachinePoints = { machine: 'cache', group: null, points: [point('cache', 5)] };
  assert.throws(() => choosePoints('cache', [noApp], 'latest-app-consistent'), refusedWith('no-recovery-point', 'cache has no app-consistent recovery point yet: wait for the next app-consistent cycle, or choose latest.'));
  const lonely: MachinePoints = { machine: 'web', group: 'g2', points: [point('web', 1, 'app', 'X')] };
  const other: MachinePoints = { machine: 'db', group: 'g2', points: [point('db', 1, 'app', 'Y')] };
  assert.throws(() => choosePoints('plan:app', [lonely, other], 'latest'), refusedWith('no-common-point', 'replication group g2 has no recovery point common to web, db: wait for the next cycle of the group.'));
});

void test('a point id picks that point of one machine; refused for plans, unknown or unusable ids', () => {
  const p = point('solo', 10);
  const bad = point('solo', 20, 'crash', null, 'bad');
  const solo: MachinePoints = { machine: 'solo', group: null, points: [p, bad] };
  assert.equal(choosePoints('solo', [solo], { id: p.id }).get('solo'), p);
  assert.throws(() => choosePoints('solo', [solo], { id: 'nope' }), refusedWith('point-not-found'));
  assert.throws(() => choosePoints('solo', [solo], { id: bad.id }), refusedWith('point-unusable'));
  assert.throws(() => choosePoints('plan:app', [solo, { ...solo, machine: 'two' }], { id: p.id }), refusedWith('invalid-point'));
});

void test('point choices: the three names or an id; anything else is refused with the accepted forms', () => {
  assert.equal(parsePointChoice(undefined), 'latest');
  assert.equal(parsePointChoice('latest-app-consistent'), 'latest-app-consistent');
  assert.deepEqual(parsePointChoice('3f2a-77'), { id: '3f2a-77' });
  assert.equal(formatPointChoice({ id: 'p1' }), 'p1');
  for (const bad of ['', 'latest-ish', 'a b', '../x']) {
    assert.throws(() => parsePointChoice(bad), refusedWith('invalid-point'), bad);
  }
});
