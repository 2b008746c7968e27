// What the portal needs to know of a protected item's lifecycle (src/domain/lifecycle.ts decides;
// the server has the last word and its refusal is shown as it says it): which actions a state
// offers, which way a failover goes, and whether it is a failback.
import type { Item, Job, Machine, Pairing } from './api/types.ts';

export type ItemVerb = 'protect' | 'test-failover' | 'test-cleanup' | 'failover' | 'complete-failover' | 'commit' | 'reverse-replicate';

export const VERB_LABELS: Record<ItemVerb, string> = {
  protect: 'Enable replication',
  'test-failover': 'Test failover',
  'test-cleanup': 'Cleanup test failover',
  failover: 'Failover',
  'complete-failover': 'Complete failover',
  commit: 'Commit',
  'reverse-replicate': 'Reverse replicate',
};

/** The actions an item's state allows (null: the machine is not protected). */
export function allowedVerbs(item: Pick<Item, 'state'> | null): ItemVerb[] {
  if (item === null) return ['protect'];
  switch (item.state) {
    case 'protected':
      return ['test-failover', 'failover'];
    case 'test-failover':
      return ['test-cleanup', 'failover'];
    case 'failover-cancelled':
      return ['failover', 'protect'];
    case 'failback-ready':
      return ['complete-failover'];
    case 'failed-over':
      return ['commit'];
    case 'committed':
      return ['reverse-replicate'];
    default:
      return [];
  }
}

export interface Way {
  /** Where replication reads and the machine runs before a failover. */
  from: string;
  /** Where the replica and points are; where a failover starts the machine. */
  to: string;
  /** Replication runs recovery → primary: a planned failover now is a failback. */
  failback: boolean;
}

/** Which way replication (and so a failover) goes for an item under its pairing. */
export function wayOf(item: Pick<Item, 'direction'>, pairing: Pick<Pairing, 'primary' | 'recovery'> | null): Way {
  const failback = item.direction === 'reverse';
  if (pairing === null) return { from: '?', to: '?', failback };
  return failback ? { from: pairing.recovery, to: pairing.primary, failback } : { from: pairing.primary, to: pairing.recovery, failback };
}

/** "Fail over" or "Fail back", for the words of a dialog or a button. */
export const failWord = (w: Way): string => (w.failback ? 'Fail back' : 'Fail over');

/** A physical machine without a stop hook cannot be shut down on request: no planned failover. */
export function canStop(machine: Machine | null): boolean {
  if (machine === null || machine.kind !== 'physical') return true;
  const hooks = machine.config?.['hooks'];
  return typeof hooks === 'object' && hooks !== null && typeof (hooks as Record<string, unknown>)['stop'] === 'string';
}

/** A failback synced before, waiting after phase 1 for "Complete failover". */
export const isFailbackWait = (j: Pick<Job, 'state' | 'kind'>): boolean => j.state === 'waiting' && j.kind === 'failback-sync';

/** The reason a waiting job gives (the engine logs it when the job starts waiting). */
export function waitingReason(j: Pick<Job, 'state' | 'log'>): string | null {
  if (j.state !== 'waiting') return null;
  for (let i = j.log.length - 1; i >= 0; i--) {
    const m = /^waiting for an operator: (.*?)(?: \(resume with: .*\))?$/s.exec(j.log[i]?.message ?? '');
    if (m) return m[1] ?? null;
  }
  return null;
}
