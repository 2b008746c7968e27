// Replication groups on the agent's side: which worker a grouped assignment belongs to, and the
// kind of a group point. Pure helpers (the barrier itself is provider.takeGroupPoints; the
// worker is in agent.ts).
import { createHash } from 'node:crypto';
import type { Point } from '../providers/provider.ts';
import type { Assignment } from './link.ts';

/** A group is named per vault; its machines share a pairing, so one source site. The key is a
 * safe file name (the group's state file in the agent's state directory). */
export function groupKey(a: Pick<Assignment, 'group' | 'sourceSiteId'>): string {
  const id = `${a.sourceSiteId}\n${a.group ?? ''}`;
  return `g-${createHash('sha256').update(id).digest('hex').slice(0, 24)}`;
}

/** A group point is app-consistent only when every member's freeze (and thaw) succeeded. */
export function groupPointKind(points: readonly Pick<Point, 'consistency'>[]): 'crash' | 'app' {
  return points.length > 0 && points.every((p) => p.consistency === 'app') ? 'app' : 'crash';
}
