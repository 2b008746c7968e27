// The lifecycle of a protected item, as an explicit state machine. `decide(item, action, ctx)`
// is the only place that says whether an action is allowed now; the API calls it before it queues
// a job, and the job engine calls it for the internal transitions its jobs report.
//
// Words. A pairing names a primary site P and a recovery site R. `direction` says which way
// replication runs: forward = P → R, reverse = R → P. The *source* is where replication reads
// (P when forward, R when reverse); the *target* is where the replica and recovery points live.
// `activeSite` is where the machine runs now. No item (null) means the machine is not protected.
//
// States (the machine runs at the source unless said otherwise):
//   initial-replication  replication enabled; the first full copy is running. No point yet.
//   protected            delta replication at the policy's frequency; points accumulate.
//   test-failover        a drill: a replica machine runs isolated at the target; replication
//                        continues. Ends with test-cleanup.
//   failing-over         a failover job runs; replication has stopped.
//   failover-cancelled   a failover was cancelled or failed after replication had stopped. The
//                        machine still runs at the source. Next: fail over again, `protect` to
//                        resume replication in the same direction (a differences-only resync),
//                        or disable.
//   failed-over          the machine runs at the target (activeSite = target) and waits for commit.
//   failback-syncing     failback with --sync before, phase 1: a snapshot is copied to P while
//                        the machine keeps running at R; replication R → P continues.
//   failback-ready       phase 1 done; waits for complete-failover (phase 2: shut down at R,
//                        send the last differences, start at P).
//   committed            the failover is final; its points (and, on failback, the recovery-site
//                        machine and disks) are removed. The machine runs at the target and is
//                        not protected until reverse-replicate.
//   reprotecting         reverse replication's initial sync: the direction has flipped, so the
//                        site the machine runs at is the new source; differences only where the
//                        old disks still exist.
//   disabling            replication is being removed; ends with the item gone (null).
//
// Operator actions:
//   protect              none → initial-replication (forward, active P); failover-cancelled →
//                        initial-replication (same direction). Refused when already protected.
//   test-failover        protected → test-failover. Needs ≥ 1 point.
//   test-cleanup         test-failover → protected. Needs notes (what the drill showed).
//   failover planned     protected, forward → failing-over. Needs ≥ 1 point and a way to stop
//                        the source (a qemu VM, or a physical machine with a stop hook). No
//                        --point: a planned failover uses the data sent after shutdown.
//                        Also from failover-cancelled (a retry), same rules.
//   failover planned     protected, reverse = failback. --sync before (default) →
//     (failback)         failback-syncing; --sync full → failing-over. --host picks an
//                        alternate host at P.
//   failover unplanned   protected, test-failover (a disaster does not wait for a drill's
//                        cleanup: the job removes the test machine first) or failover-cancelled
//                        → failing-over. Needs ≥ 1 point. --shutdown-source is best effort.
//                        --sync and --host are refused: they belong to a planned failback.
//   cancel-failover      failing-over → failover-cancelled (replication has already stopped, and
//                        the job says so); failback-syncing and failback-ready → protected
//                        (reverse): phase 1 never stopped replication and the target stays at its
//                        last consistent state, so the cancel loses nothing.
//   complete-failover    failback-ready → failing-over.
//   commit               failed-over → committed.
//   reverse-replicate    committed → reprotecting; direction flips, activeSite stays.
//   disable              initial-replication, protected, failover-cancelled, failed-over,
//                        committed, reprotecting → disabling. Refused while a test failover runs
//                        (clean it up first) and while a failover is in progress.
// Internal transitions (reported by jobs; refused from any other state):
//   initial-replication-done  initial-replication → protected
//   reprotect-done            reprotecting → protected
//   sync-done                 failback-syncing → failback-ready
//   sync-failed               failback-syncing → protected (reverse; nothing was lost)
//   failover-done             failing-over → failed-over, activeSite = target
//   failover-failed           failing-over → failover-cancelled
//   failover-aborted          failing-over → protected: the job stopped before it changed anything
//                             (a planned failover whose source refused to shut down keeps
//                             running there, so replication simply resumes)
//   test-failover-failed      test-failover → protected: the drill could not start; its
//                             partial test machine was removed
//   disable-done              disabling → null
// Every refusal is ReboundError('conflict', code, sentence) naming the machine, why, and what to
// do first. Invariant kept by every transition: the machine runs at the source, except in
// failed-over and committed, where it runs at the target.
import { conflict, invalid } from './errors.ts';
import type { ReboundError } from './errors.ts';
import type { Direction, ItemState, PointChoice } from './model.ts';

export interface LifecycleItem {
  machine: string;
  state: ItemState;
  direction: Direction;
  activeSite: string;
}

export interface LifecycleContext {
  /** The pairing's sites. */
  primarySite: string;
  recoverySite: string;
  /** Usable (status 'ok') recovery points at the target. */
  points: number;
  /** Whether the source can be shut down on request (qemu: yes; physical: only with a stop hook). */
  canStopSource: boolean;
}

export type SyncMode = 'before' | 'full';

export interface FailoverOptions {
  mode: 'planned' | 'unplanned';
  point?: PointChoice;
  shutdownSource?: boolean;
  sync?: SyncMode;
  host?: string;
}

export type OperatorAction =
  | { kind: 'protect'; group?: string }
  | { kind: 'test-failover'; point?: PointChoice }
  | { kind: 'test-cleanup'; notes: string }
  | ({ kind: 'failover' } & FailoverOptions)
  | { kind: 'cancel-failover' }
  | { kind: 'complete-failover' }
  | { kind: 'commit' }
  | { kind: 'reverse-replicate' }
  | { kind: 'disable' };

export type InternalAction =
  | { kind: 'initial-replication-done' }
  | { kind: 'reprotect-done' }
  | { kind: 'sync-done' }
  | { kind: 'sync-failed' }
  | { kind: 'failover-done' }
  | { kind: 'failover-failed' }
  | { kind: 'failover-aborted' }
  | { kind: 'test-failover-failed' }
  | { kind: 'disable-done' };

export type LifecycleAction = OperatorAction | InternalAction;
export type ActionKind = LifecycleAction['kind'];

export const OPERATOR_ACTIONS: readonly OperatorAction['kind'][] = [
  'protect',
  'test-failover',
  'test-cleanup',
  'failover',
  'cancel-failover',
  'complete-failover',
  'commit',
  'reverse-replicate',
  'disable',
];
export const INTERNAL_ACTIONS: readonly InternalAction['kind'][] = [
  'initial-replication-done',
  'reprotect-done',
  'sync-done',
  'sync-failed',
  'failover-done',
  'failover-failed',
  'failover-aborted',
  'test-failover-failed',
  'disable-done',
];

/** What the job queued for an operator action must do (internal transitions queue nothing). */
export interface JobPlan {
  kind:
    | 'protect'
    | 'test-failover'
    | 'test-cleanup'
    | 'failover'
    | 'failback-sync'
    | 'complete-failover'
    | 'cancel-failover'
    | 'commit'
    | 'reverse-replicate'
    | 'disable';
  /** Replication reads here. */
  from: string;
  /** Replica, points and (on failover) the started machine are here. */
  to: string;
  planned?: boolean;
  point?: PointChoice;
  shutdownSource?: boolean;
  sync?: SyncMode;
  host?: string;
  /** Unplanned failover during a drill: remove the test machine first. */
  cleanupTest?: boolean;
  /** protect from failover-cancelled and reverse-replicate: compare digests, send differences. */
  resync?: boolean;
  /** commit of a failback: also remove the recovery-site machine and its disks. */
  removeRecoveryMachine?: boolean;
  group?: string;
  notes?: string;
}

export type Decision =
  | { ok: true; next: LifecycleItem | null; job: JobPlan | null }
  | { ok: false; error: ReboundError };

export function sourceSite(direction: Direction, ctx: LifecycleContext): string {
  return direction === 'forward' ? ctx.primarySite : ctx.recoverySite;
}
export function targetSite(direction: Direction, ctx: LifecycleContext): string {
  return direction === 'forward' ? ctx.recoverySite : ctx.primarySite;
}
const flip = (d: Direction): Direction => (d === 'forward' ? 'reverse' : 'forward');

/** Where the machine must run in a state (the invariant every transition keeps). */
export function expectedActiveSite(item: Pick<LifecycleItem, 'state' | 'direction'>, ctx: LifecycleContext): string {
  return item.state === 'failed-over' || item.state === 'committed'
    ? targetSite(item.direction, ctx)
    : sourceSite(item.direction, ctx);
}

/**
 * States in which replication runs (the scheduler takes cycles for these). In test-failover the
 * drill runs beside replication; in failback-syncing and failback-ready the machine still runs at
 * the recovery site and keeps replicating until phase 2 shuts it down.
 */
export const REPLICATING_STATES: readonly ItemState[] = [
  'initial-replication',
  'protected',
  'test-failover',
  'failback-syncing',
  'failback-ready',
  'reprotecting',
];

export function replicates(state: ItemState): boolean {
  return REPLICATING_STATES.includes(state);
}

/** How a state reads after the machine's name: "web-01 is protected". */
export function describeState(state: ItemState): string {
  switch (state) {
    case 'initial-replication':
      return 'is still in initial replication';
    case 'protected':
      return 'is protected';
    case 'test-failover':
      return 'is running a test failover';
    case 'failing-over':
      return 'is failing over';
    case 'failover-cancelled':
      return 'had its failover cancelled and is not replicating';
    case 'failed-over':
      return 'is failed over and waiting for commit';
    case 'failback-syncing':
      return 'is syncing data for failback';
    case 'failback-ready':
      return 'has finished failback sync and waits for complete-failover';
    case 'committed':
      return 'is committed and not protected until reverse replication';
    case 'reprotecting':
      return 'is being reprotected';
    case 'disabling':
      return 'is being disabled';
  }
}

/** What to do first, per state, for an operator whose action the state does not allow. */
function nextStepFrom(item: LifecycleItem): string {
  const m = item.machine;
  switch (item.state) {
    case 'initial-replication':
      return 'wait for initial replication to finish';
    case 'protected':
      return item.direction === 'reverse'
        ? `fail it back first (rebound failover ${m} --planned)`
        : `fail it over first (rebound failover ${m} --planned or --unplanned)`;
    case 'test-failover':
      return `clean up the test failover first (rebound test-cleanup ${m} --notes TEXT)`;
    case 'failing-over':
      return 'wait for the failover job to finish, or cancel it';
    case 'failover-cancelled':
      return `fail it over again, or resume replication with rebound protect ${m}`;
    case 'failed-over':
      return `commit it first (rebound commit ${m})`;
    case 'failback-syncing':
      return 'wait for the failback sync to finish, or cancel it';
    case 'failback-ready':
      return 'complete the failback (rebound complete-failover JOB) or cancel it';
    case 'committed':
      return `start reverse replication first (rebound reverse-replicate ${m})`;
    case 'reprotecting':
      return 'wait for reverse replication to finish its initial sync';
    case 'disabling':
      return 'wait for it to be disabled, then protect it again if needed';
  }
}

function refuse(code: string, message: string, item: LifecycleItem | null, action: ActionKind): Decision {
  return {
    ok: false,
    error: conflict(code, message, { details: { state: item?.state ?? 'unprotected', action } }),
  };
}

function wrongState(item: LifecycleItem, action: ActionKind, needs: string): Decision {
  return refuse(
    'wrong-state',
    `${action} needs ${needs}; ${item.machine} ${describeState(item.state)}: ${nextStepFrom(item)}.`,
    item,
    action,
  );
}

function noPoint(item: LifecycleItem, action: ActionKind, verb: string): Decision {
  const wait =
    item.state === 'initial-replication'
      ? `wait for initial replication to finish before ${verb}`
      : `wait for the next replication cycle to make one before ${verb}`;
  return refuse('no-recovery-point', `${item.machine} has no recovery point yet: ${wait}.`, item, action);
}

const ok = (next: LifecycleItem | null, job: JobPlan | null = null): Decision => ({ ok: true, next, job });
const withState = (item: LifecycleItem, state: ItemState, patch: Partial<LifecycleItem> = {}): LifecycleItem => ({
  ...item,
  ...patch,
  state,
});

/**
 * Decides an action on an item (null = the machine is not protected). Pure: never changes `item`.
 * Returns the next item (null when it is removed) and the job to queue, or a refusal.
 */
export function decide(item: LifecycleItem | null, action: LifecycleAction, ctx: LifecycleContext, machine?: string): Decision {
  if (item === null) {
    const name = machine ?? 'the machine';
    if (action.kind === 'protect') {
      const next: LifecycleItem = {
        machine: name,
        state: 'initial-replication',
        direction: 'forward',
        activeSite: ctx.primarySite,
      };
      return ok(next, {
        kind: 'protect',
        from: ctx.primarySite,
        to: ctx.recoverySite,
        ...(action.group === undefined ? {} : { group: action.group }),
      });
    }
    return refuse('not-protected', `${action.kind} needs a protected machine; ${name} is not protected: protect it first (rebound protect ${name}).`, null, action.kind);
  }

  const m = item.machine;
  const from = sourceSite(item.direction, ctx);
  const to = targetSite(item.direction, ctx);

  switch (action.kind) {
    case 'protect': {
      if (item.state === 'failover-cancelled') {
        return ok(withState(item, 'initial-replication'), { kind: 'protect', from, to, resync: true });
      }
      return refuse('already-protected', `protect needs an unprotected machine; ${m} ${describeState(item.state)}: it is already under protection (disable it first to start over).`, item, action.kind);
    }

    case 'test-failover': {
      if (item.state === 'initial-replication') return noPoint(item, action.kind, 'a test failover');
      if (item.state === 'test-failover') {
        return refuse('test-failover-running', `a test failover of ${m} is already running: clean it up first (rebound test-cleanup ${m} --notes TEXT).`, item, action.kind);
      }
      if (item.state !== 'protected') return wrongState(item, action.kind, 'a protected machine');
      if (ctx.points < 1) return noPoint(item, action.kind, 'a test failover');
      return ok(withState(item, 'test-failover'), {
        kind: 'test-failover',
        from,
        to,
        point: action.point ?? 'latest',
      });
    }

    case 'test-cleanup': {
      if (item.state !== 'test-failover') return wrongState(item, action.kind, 'a running test failover');
      if (action.notes.trim() === '') {
        return { ok: false, error: invalid('notes-required', `test-cleanup of ${m} needs notes: say what the drill showed (--notes TEXT).`) };
      }
      return ok(withState(item, 'protected'), { kind: 'test-cleanup', from, to, notes: action.notes });
    }

    case 'failover':
      return decideFailover(item, action, ctx);

    case 'cancel-failover': {
      if (item.state === 'failing-over') {
        return ok(withState(item, 'failover-cancelled'), { kind: 'cancel-failover', from, to });
      }
      if (item.state === 'failback-syncing' || item.state === 'failback-ready') {
        return ok(withState(item, 'protected'), { kind: 'cancel-failover', from, to });
      }
      return wrongState(item, action.kind, 'a failover in progress');
    }

    case 'complete-failover': {
      if (item.state !== 'failback-ready') return wrongState(item, action.kind, 'a failback whose sync has finished');
      return ok(withState(item, 'failing-over'), { kind: 'complete-failover', from, to, planned: true });
    }

    case 'commit': {
      if (item.state !== 'failed-over') return wrongState(item, action.kind, 'a completed failover');
      return ok(withState(item, 'committed'), {
        kind: 'commit',
        from,
        to,
        removeRecoveryMachine: item.direction === 'reverse',
      });
    }

    case 'reverse-replicate': {
      if (item.state !== 'committed') return wrongState(item, action.kind, 'a committed failover');
      const direction = flip(item.direction);
      return ok(withState(item, 'reprotecting', { direction }), {
        kind: 'reverse-replicate',
        from: sourceSite(direction, ctx),
        to: targetSite(direction, ctx),
        resync: true,
      });
    }

    case 'disable': {
      switch (item.state) {
        case 'initial-replication':
        case 'protected':
        case 'failover-cancelled':
        case 'failed-over':
        case 'committed':
        case 'reprotecting':
          return ok(withState(item, 'disabling'), { kind: 'disable', from, to });
        case 'test-failover':
          return refuse('test-failover-running', `disable needs no test failover running; ${m} is running one: clean it up first (rebound test-cleanup ${m} --notes TEXT).`, item, action.kind);
        case 'failing-over':
        case 'failback-syncing':
        case 'failback-ready':
          return refuse('failover-in-progress', `disable needs no failover in progress; ${m} ${describeState(item.state)}: ${nextStepFrom(item)}.`, item, action.kind);
        case 'disabling':
          return refuse('already-disabling', `${m} is already being disabled: wait for it to finish.`, item, action.kind);
      }
      break;
    }

    case 'initial-replication-done':
      return internal(item, action.kind, 'initial-replication', () => withState(item, 'protected'));
    case 'reprotect-done':
      return internal(item, action.kind, 'reprotecting', () => withState(item, 'protected'));
    case 'sync-done':
      return internal(item, action.kind, 'failback-syncing', () => withState(item, 'failback-ready'));
    case 'sync-failed':
      return internal(item, action.kind, 'failback-syncing', () => withState(item, 'protected'));
    case 'failover-done':
      return internal(item, action.kind, 'failing-over', () => withState(item, 'failed-over', { activeSite: to }));
    case 'failover-failed':
      return internal(item, action.kind, 'failing-over', () => withState(item, 'failover-cancelled'));
    case 'failover-aborted':
      return internal(item, action.kind, 'failing-over', () => withState(item, 'protected'));
    case 'test-failover-failed':
      return internal(item, action.kind, 'test-failover', () => withState(item, 'protected'));
    case 'disable-done':
      return internal(item, action.kind, 'disabling', () => null);
  }
  // Unreachable with a well-typed action; a refusal rather than a throw keeps decide total.
  return refuse('unknown-action', `unknown action for ${m}.`, item, (action as { kind: ActionKind }).kind);
}

function internal(item: LifecycleItem, kind: InternalAction['kind'], from: ItemState, next: () => LifecycleItem | null): Decision {
  if (item.state !== from) {
    return refuse(
      'unexpected-transition',
      `${kind} arrived for ${item.machine}, which ${describeState(item.state)} (expected ${from}): the job that reported it is stale; check rebound jobs.`,
      item,
      kind,
    );
  }
  return ok(next());
}

function decideFailover(item: LifecycleItem, action: { kind: 'failover' } & FailoverOptions, ctx: LifecycleContext): Decision {
  const m = item.machine;
  const from = sourceSite(item.direction, ctx);
  const to = targetSite(item.direction, ctx);
  const isFailback = item.direction === 'reverse';
  const what = isFailback ? 'failing back' : 'failing over';

  if (action.mode === 'planned') {
    if (item.state === 'initial-replication') return noPoint(item, 'failover', what);
    if (item.state === 'test-failover') {
      return refuse('test-failover-running', `a planned failover needs no test failover running; ${m} is running one: clean it up first (rebound test-cleanup ${m} --notes TEXT).`, item, 'failover');
    }
    if (item.state !== 'protected' && item.state !== 'failover-cancelled') {
      return wrongState(item, 'failover', 'a protected machine');
    }
    if (action.point !== undefined) {
      return refuse('option-not-applicable', `a planned failover of ${m} always uses the data sent after the source shuts down: drop --point (it is for unplanned and test failover).`, item, 'failover');
    }
    if (ctx.points < 1) return noPoint(item, 'failover', what);
    if (!ctx.canStopSource) {
      return refuse('no-stop-hook', `a planned failover of ${m} needs a way to shut it down at ${from}, and it has no stop hook: add one to the machine, or use --unplanned.`, item, 'failover');
    }
    if (!isFailback || item.state === 'failover-cancelled') {
      if (action.sync !== undefined) {
        return refuse('option-not-applicable', `--sync applies only to a failback (a planned failover while ${m} runs at the recovery site); ${m} ${isFailback ? 'is not in a failback' : 'runs at its primary site'}: drop --sync.`, item, 'failover');
      }
      if (action.host !== undefined) {
        return refuse('option-not-applicable', `--host applies only to a failback; ${m} ${isFailback ? 'is not in a failback' : 'runs at its primary site'}: drop --host.`, item, 'failover');
      }
      return ok(withState(item, 'failing-over'), { kind: 'failover', from, to, planned: true, shutdownSource: true, point: 'latest' });
    }
    const sync = action.sync ?? 'before';
    const job: JobPlan = {
      kind: sync === 'before' ? 'failback-sync' : 'failover',
      from,
      to,
      planned: true,
      shutdownSource: true,
      sync,
      ...(action.host === undefined ? {} : { host: action.host }),
    };
    return ok(withState(item, sync === 'before' ? 'failback-syncing' : 'failing-over'), job);
  }

  // Unplanned.
  if (item.state === 'initial-replication') return noPoint(item, 'failover', what);
  if (item.state !== 'protected' && item.state !== 'test-failover' && item.state !== 'failover-cancelled') {
    return wrongState(item, 'failover', 'a protected machine');
  }
  if (action.sync !== undefined) {
    return refuse('option-not-applicable', `--sync applies only to a planned failback; an unplanned failover of ${m} uses the replica as it is: drop --sync.`, item, 'failover');
  }
  if (action.host !== undefined) {
    return refuse('option-not-applicable', `--host applies only to a planned failback; an unplanned failover of ${m} starts it at ${to}'s host: drop --host.`, item, 'failover');
  }
  if (ctx.points < 1) return noPoint(item, 'failover', what);
  return ok(withState(item, 'failing-over'), {
    kind: 'failover',
    from,
    to,
    planned: false,
    point: action.point ?? 'latest',
    shutdownSource: action.shutdownSource ?? false,
    cleanupTest: item.state === 'test-failover',
  });
}

/** Like decide, but throws the refusal (for callers that want exceptions). */
export function transition(item: LifecycleItem | null, action: LifecycleAction, ctx: LifecycleContext, machine?: string): { next: LifecycleItem | null; job: JobPlan | null } {
  const d = decide(item, action, ctx, machine);
  if (!d.ok) throw d.error;
  return { next: d.next, job: d.job };
}
