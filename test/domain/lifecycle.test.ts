// The protected-item state machine: every action from every state (both directions), the option
// rules of failover/failback, the refusal sentences, and properties over random walks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ReboundError } from '../../src/domain/errors.ts';
import {
  INTERNAL_ACTIONS,
  REPLICATING_STATES,
  decide,
  expectedActiveSite,
  transition,
} from '../../src/domain/lifecycle.ts';
import type { LifecycleAction, LifecycleContext, LifecycleItem } from '../../src/domain/lifecycle.ts';
import { ITEM_STATES } from '../../src/domain/model.ts';
import type { Direction, ItemState } from '../../src/domain/model.ts';

const ctx: LifecycleContext = { primarySite: 'site-a', recoverySite: 'site-b', points: 3, canStopSource: true };

function itemIn(state: ItemState, direction: Direction = 'forward'): LifecycleItem {
  const base = { machine: 'web-01', state, direction, activeSite: '' };
  return { ...base, activeSite: expectedActiveSite(base, ctx) };
}

// The columns of the table: one representative of each action.
const ACTIONS: Record<string, LifecycleAction> = {
  protect: { kind: 'protect' },
  'test-failover': { kind: 'test-failover' },
  'test-cleanup': { kind: 'test-cleanup', notes: 'drill fine' },
  planned: { kind: 'failover', mode: 'planned' },
  unplanned: { kind: 'failover', mode: 'unplanned' },
  cancel: { kind: 'cancel-failover' },
  complete: { kind: 'complete-failover' },
  commit: { kind: 'commit' },
  reverse: { kind: 'reverse-replicate' },
  disable: { kind: 'disable' },
  ...Object.fromEntries(INTERNAL_ACTIONS.map((k) => [k, { kind: k } as LifecycleAction])),
};

// Expected outcome: a next state, 'removed', or '!code' for a refusal. Cells not listed for a
// state are refusals: 'wrong-state' for operator actions, 'unexpected-transition' for internal ones.
const ALLOWED: Record<ItemState, Record<string, string>> = {
  'initial-replication': {
    protect: '!already-protected', 'test-failover': '!no-recovery-point', planned: '!no-recovery-point',
    unplanned: '!no-recovery-point', disable: 'disabling', 'initial-replication-done': 'protected',
  },
  protected: {
    protect: '!already-protected', 'test-failover': 'test-failover', planned: 'failing-over',
    unplanned: 'failing-over', disable: 'disabling',
  },
  'test-failover': {
    protect: '!already-protected', 'test-failover': '!test-failover-running', 'test-cleanup': 'protected',
    planned: '!test-failover-running', unplanned: 'failing-over', disable: '!test-failover-running',
    'test-failover-failed': 'protected',
  },
  'failing-over': {
    protect: '!already-protected', cancel: 'failover-cancelled', disable: '!failover-in-progress',
    'failover-done': 'failed-over', 'failover-failed': 'failover-cancelled', 'failover-aborted': 'protected',
  },
  'failover-cancelled': {
    protect: 'initial-replication', planned: 'failing-over', unplanned: 'failing-over', disable: 'disabling',
  },
  'failed-over': { protect: '!already-protected', commit: 'committed', disable: 'disabling' },
  'failback-syncing': {
    protect: '!already-protected', cancel: 'protected', disable: '!failover-in-progress',
    'sync-done': 'failback-ready', 'sync-failed': 'protected',
  },
  'failback-ready': {
    protect: '!already-protected', cancel: 'protected', complete: 'failing-over', disable: '!failover-in-progress',
  },
  committed: { protect: '!already-protected', reverse: 'reprotecting', disable: 'disabling' },
  reprotecting: { protect: '!already-protected', disable: 'disabling', 'reprotect-done': 'protected' },
  disabling: { protect: '!already-protected', disable: '!already-disabling', 'disable-done': 'removed' },
};
// In reverse direction a planned failover from protected is a failback: sync before by default.
const REVERSE_OVERRIDES: Partial<Record<ItemState, Record<string, string>>> = {
  protected: { planned: 'failback-syncing' },
};

function expected(state: ItemState, direction: Direction, column: string): string {
  const override = direction === 'reverse' ? REVERSE_OVERRIDES[state]?.[column] : undefined;
  if (override) return override;
  const cell = ALLOWED[state][column];
  if (cell) return cell;
  return (INTERNAL_ACTIONS as readonly string[]).includes(column) ? '!unexpected-transition' : '!wrong-state';
}

function outcome(item: LifecycleItem | null, action: LifecycleAction, c = ctx): string {
  const d = decide(item, action, c, 'web-01');
  if (!d.ok) return `!${d.error.code}`;
  return d.next === null ? 'removed' : d.next.state;
}

void test('every action from every state, in both directions, gives the specified outcome', () => {
  let cells = 0;
  for (const direction of ['forward', 'reverse'] as const) {
    for (const state of ITEM_STATES) {
      for (const [column, action] of Object.entries(ACTIONS)) {
        assert.equal(outcome(itemIn(state, direction), action), expected(state, direction, column), `${state} (${direction}) + ${column}`);
        cells++;
      }
    }
  }
  assert.equal(cells, 2 * 11 * 19);
});

void test('an unprotected machine can only be protected, forward, running at the primary', () => {
  const d = decide(null, { kind: 'protect', group: 'g1' }, ctx, 'web-01');
  assert.ok(d.ok);
  assert.deepEqual(d.next, { machine: 'web-01', state: 'initial-replication', direction: 'forward', activeSite: 'site-a' });
  assert.deepEqual(d.job, { kind: 'protect', from: 'site-a', to: 'site-b', group: 'g1' });
  for (const [column, action] of Object.entries(ACTIONS)) {
    if (column === 'protect') continue;
    assert.equal(outcome(null, action), '!not-protected', column);
  }
  const refused = decide(null, { kind: 'commit' }, ctx, 'web-01');
  assert.ok(!refused.ok);
  assert.equal(refused.error.message, 'commit needs a protected machine; web-01 is not protected: protect it first (rebound protect web-01).');
});

void test('refusals are conflicts whose sentence names the machine and what to do first', () => {
  const commit = decide(itemIn('protected'), { kind: 'commit' }, ctx);
  assert.ok(!commit.ok);
  assert.equal(commit.error.kind, 'conflict');
  assert.equal(commit.error.message, 'commit needs a completed failover; web-01 is protected: fail it over first (rebound failover web-01 --planned or --unplanned).');

  const early = decide(itemIn('initial-replication'), { kind: 'failover', mode: 'unplanned' }, ctx);
  assert.ok(!early.ok);
  assert.equal(early.error.message, 'web-01 has no recovery point yet: wait for initial replication to finish before failing over.');

  const reverse = decide(itemIn('failed-over'), { kind: 'reverse-replicate' }, ctx);
  assert.ok(!reverse.ok);
  assert.equal(reverse.error.message, 'reverse-replicate needs a committed failover; web-01 is failed over and waiting for commit: commit it first (rebound commit web-01).');

  for (const direction of ['forward', 'reverse'] as const) {
    for (const state of ITEM_STATES) {
      for (const action of Object.values(ACTIONS)) {
        const d = decide(itemIn(state, direction), action, ctx);
        if (d.ok) continue;
        assert.ok(d.error instanceof ReboundError);
        assert.equal(d.error.kind, 'conflict');
        assert.match(d.error.message, /web-01/);
        assert.match(d.error.message, /[:.]/);
      }
    }
  }
});

void test('failover and test failover need at least one recovery point', () => {
  const none = { ...ctx, points: 0 };
  for (const action of [ACTIONS.planned!, ACTIONS.unplanned!, ACTIONS['test-failover']!]) {
    assert.equal(outcome(itemIn('protected'), action, none), '!no-recovery-point');
    assert.equal(outcome(itemIn('protected', 'reverse'), action, none), '!no-recovery-point');
  }
  const d = decide(itemIn('protected', 'reverse'), ACTIONS.planned!, none);
  assert.ok(!d.ok);
  assert.equal(d.error.message, 'web-01 has no recovery point yet: wait for the next replication cycle to make one before failing back.');
});

void test('a planned failover needs a way to stop the source; unplanned does not', () => {
  const noHook = { ...ctx, canStopSource: false };
  const d = decide(itemIn('protected'), ACTIONS.planned!, noHook);
  assert.ok(!d.ok);
  assert.equal(d.error.code, 'no-stop-hook');
  assert.equal(d.error.message, 'a planned failover of web-01 needs a way to shut it down at site-a, and it has no stop hook: add one to the machine, or use --unplanned.');
  assert.equal(outcome(itemIn('protected'), ACTIONS.unplanned!, noHook), 'failing-over');
});

void test('--sync and --host belong to a planned failback only; --point is refused for planned', () => {
  const fwd = itemIn('protected');
  const rev = itemIn('protected', 'reverse');
  assert.equal(outcome(fwd, { kind: 'failover', mode: 'planned', sync: 'before' }), '!option-not-applicable');
  assert.equal(outcome(fwd, { kind: 'failover', mode: 'planned', host: 'h2' }), '!option-not-applicable');
  assert.equal(outcome(fwd, { kind: 'failover', mode: 'unplanned', sync: 'full' }), '!option-not-applicable');
  assert.equal(outcome(rev, { kind: 'failover', mode: 'unplanned', host: 'h2' }), '!option-not-applicable');
  assert.equal(outcome(fwd, { kind: 'failover', mode: 'planned', point: 'latest' }), '!option-not-applicable');
  assert.equal(outcome(rev, { kind: 'failover', mode: 'planned', sync: 'full' }), 'failing-over');
  assert.equal(outcome(rev, { kind: 'failover', mode: 'unplanned', point: { id: 'p1' } }), 'failing-over');

  const failback = decide(rev, { kind: 'failover', mode: 'planned', sync: 'before', host: 'h2' }, ctx);
  assert.ok(failback.ok);
  assert.deepEqual(failback.job, { kind: 'failback-sync', from: 'site-b', to: 'site-a', planned: true, shutdownSource: true, sync: 'before', host: 'h2' });
});

void test('jobs carry what they must do: sites, point, cleanup of a drill, removal on failback commit', () => {
  const u = transition(itemIn('test-failover'), { kind: 'failover', mode: 'unplanned', shutdownSource: true, point: 'latest-app-consistent' }, ctx);
  assert.deepEqual(u.job, { kind: 'failover', from: 'site-a', to: 'site-b', planned: false, point: 'latest-app-consistent', shutdownSource: true, cleanupTest: true });
  assert.equal(transition(itemIn('failed-over'), ACTIONS.commit!, ctx).job?.removeRecoveryMachine, false);
  assert.equal(transition(itemIn('failed-over', 'reverse'), ACTIONS.commit!, ctx).job?.removeRecoveryMachine, true);
  const r = transition(itemIn('committed'), ACTIONS.reverse!, ctx);
  assert.deepEqual(r.next, { machine: 'web-01', state: 'reprotecting', direction: 'reverse', activeSite: 'site-b' });
  assert.deepEqual(r.job, { kind: 'reverse-replicate', from: 'site-b', to: 'site-a', resync: true });
  assert.throws(() => transition(itemIn('protected'), ACTIONS.commit!, ctx), (e: unknown) => e instanceof ReboundError && e.code === 'wrong-state');
  assert.equal(outcome(itemIn('test-failover'), { kind: 'test-cleanup', notes: '  ' }), '!notes-required');
});

void test('a full round trip: protect, fail over, commit, reprotect, fail back with sync, commit, reprotect', () => {
  const steps: [LifecycleAction, ItemState | null, string][] = [
    [{ kind: 'protect' }, 'initial-replication', 'site-a'],
    [{ kind: 'initial-replication-done' }, 'protected', 'site-a'],
    [{ kind: 'failover', mode: 'planned' }, 'failing-over', 'site-a'],
    [{ kind: 'failover-done' }, 'failed-over', 'site-b'],
    [{ kind: 'commit' }, 'committed', 'site-b'],
    [{ kind: 'reverse-replicate' }, 'reprotecting', 'site-b'],
    [{ kind: 'reprotect-done' }, 'protected', 'site-b'],
    [{ kind: 'failover', mode: 'planned' }, 'failback-syncing', 'site-b'],
    [{ kind: 'sync-done' }, 'failback-ready', 'site-b'],
    [{ kind: 'complete-failover' }, 'failing-over', 'site-b'],
    [{ kind: 'failover-done' }, 'failed-over', 'site-a'],
    [{ kind: 'commit' }, 'committed', 'site-a'],
    [{ kind: 'reverse-replicate' }, 'reprotecting', 'site-a'],
    [{ kind: 'reprotect-done' }, 'protected', 'site-a'],
    [{ kind: 'disable' }, 'disabling', 'site-a'],
    [{ kind: 'disable-done' }, null, ''],
  ];
  let item: LifecycleItem | null = null;
  for (const [action, state, site] of steps) {
    item = transition(item, action, ctx, 'web-01').next;
    assert.equal(item?.state ?? null, state, action.kind);
    if (item) assert.equal(item.activeSite, site, action.kind);
  }
  assert.equal(item, null);
});

// ---- properties -------------------------------------------------------------------------------

const actionArb: fc.Arbitrary<LifecycleAction> = fc.oneof(
  fc.constantFrom(...Object.values(ACTIONS)),
  fc.record({
    kind: fc.constant('failover' as const),
    mode: fc.constantFrom('planned' as const, 'unplanned' as const),
    sync: fc.option(fc.constantFrom('before' as const, 'full' as const), { nil: undefined }),
    host: fc.option(fc.constant('h2'), { nil: undefined }),
    shutdownSource: fc.option(fc.boolean(), { nil: undefined }),
  }),
);
const ctxArb: fc.Arbitrary<LifecycleContext> = fc.record({
  primarySite: fc.constant('site-a'),
  recoverySite: fc.constant('site-b'),
  points: fc.nat(3),
  canStopSource: fc.boolean(),
});

void test('property: decide never changes its inputs, and a refusal carries a sentence', () => {
  fc.assert(
    fc.property(fc.constantFrom(...ITEM_STATES), fc.constantFrom('forward' as const, 'reverse' as const), actionArb, ctxArb, (state, dir, action, c) => {
      const item = itemIn(state, dir);
      const before = JSON.stringify({ item, action, c });
      const d = decide(Object.freeze(item), Object.freeze(action), Object.freeze(c));
      assert.equal(JSON.stringify({ item, action, c }), before);
      if (!d.ok) assert.ok(d.error.message.includes('web-01') && d.error.message.length > 20);
    }),
    { numRuns: 500 },
  );
});

void test('property: along any walk the machine runs where the state says, and protected stays reachable', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(actionArb, ctxArb), { maxLength: 40 }), (walk) => {
      let item: LifecycleItem | null = null;
      for (const [action, c] of walk) {
        const d = decide(item, action, c, 'web-01');
        if (!d.ok) continue;
        item = d.next;
        if (item) {
          assert.equal(item.activeSite, expectedActiveSite(item, ctx), `${item.state} ${item.direction}`);
          assert.ok(canReachProtected(item), `${item.state} is a dead end`);
        }
      }
    }),
    { numRuns: 300 },
  );
});

/** Breadth-first over all actions with a permissive context: can this item get back to protected? */
function canReachProtected(start: LifecycleItem): boolean {
  const easy: LifecycleContext = { ...ctx, points: 1, canStopSource: true };
  const seen = new Set<string>();
  const queue: LifecycleItem[] = [start];
  while (queue.length > 0) {
    const item = queue.shift()!;
    if (item.state === 'protected') return true;
    const key = `${item.state}/${item.direction}`;
    if (seen.has(key)) continue;
    seen.add(key);
    for (const action of Object.values(ACTIONS)) {
      const d = decide(item, action, easy);
      if (d.ok && d.next) queue.push(d.next);
      // A removed item can be protected again from scratch.
      if (d.ok && d.next === null) return true;
    }
  }
  return false;
}

void test('replication runs in the states where the machine is still protected at its source', () => {
  assert.deepEqual([...REPLICATING_STATES].sort(), ['failback-ready', 'failback-syncing', 'initial-replication', 'protected', 'reprotecting', 'test-failover']);
});
