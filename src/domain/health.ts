// RPO health of a protected item, from the age of its newest recovery point.
// - normal:   age ≤ 2 × frequency. One cycle can run late (a slow copy, a busy host) without
//             alarming anyone; ASR likewise warns only once the RPO threshold is crossed.
// - warning:  age ≤ 6 × frequency, and at least frequency + 5 minutes' grace for the briefest
//             policies so a 1s policy does not flap to critical on a GC pause.
// - critical: older than that.
// - no point yet (initial replication): normal, or warning once the first copy has run longer
//             than the critical threshold (a slow first copy is expected, not an outage).
// Pure: (now, lastPointAt, policy) in, health out.
import type { Health, ItemState } from './model.ts';
import { replicates } from './lifecycle.ts';

export interface HealthPolicy {
  frequencySeconds: number;
}

export interface RpoThresholds {
  warningAfterMs: number;
  criticalAfterMs: number;
}

export function rpoThresholds(policy: HealthPolicy): RpoThresholds {
  const f = policy.frequencySeconds * 1000;
  return {
    warningAfterMs: 2 * f,
    criticalAfterMs: Math.max(6 * f, f + 5 * 60_000),
  };
}

/**
 * Health at `now`. Without a point (`lastPointAt` null) the item is in initial replication:
 * normal while it is, unless `initialSince` says it has run longer than the critical threshold
 * without producing anything — then warning, since a long first copy is expected, not an outage.
 */
export function rpoHealth(now: number, lastPointAt: number | null, policy: HealthPolicy, initialSince?: number): Health {
  const t = rpoThresholds(policy);
  if (lastPointAt === null) {
    if (initialSince !== undefined && now - initialSince > t.criticalAfterMs) return 'warning';
    return 'normal';
  }
  const age = now - lastPointAt;
  if (age <= t.warningAfterMs) return 'normal';
  if (age <= t.criticalAfterMs) return 'warning';
  return 'critical';
}

/** RPO in seconds (age of the newest point), or null without one. */
export function rpoSeconds(now: number, lastPointAt: number | null): number | null {
  return lastPointAt === null ? null : Math.max(0, Math.round((now - lastPointAt) / 1000));
}

/**
 * Health of an item in any state. Replicating states are judged by RPO. A machine that is not
 * replicating (failover cancelled, failed over, committed) is not protected: warning, so that it
 * stands out until someone commits and reprotects it. disabling and failing-over are normal:
 * an operator asked for them and a job is on it.
 */
export function itemHealth(now: number, state: ItemState, lastPointAt: number | null, policy: HealthPolicy, initialSince?: number): Health {
  if (replicates(state)) return rpoHealth(now, lastPointAt, policy, initialSince);
  if (state === 'failover-cancelled' || state === 'failed-over' || state === 'committed') return 'warning';
  return 'normal';
}
