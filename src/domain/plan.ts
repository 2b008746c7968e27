// Recovery plans: validation, order of execution, direction inference and point choice.
// - A plan has ≥ 1 group; each group ≥ 1 machine; every machine appears exactly once.
// - Execution: groups in order; for each group its before-actions in order, then its machines
//   in parallel, then its after-actions. A planned failover shuts the sources down in the
//   reverse group order first (front ends before the databases they write to), as ASR does.
// - Direction: every machine of the plan must be protected and run at one site; the plan fails
//   over away from that site. It is a failback when that site is every item's recovery site.
// - Points: `latest` / `latest-processed` → each machine its own newest point, except machines of
//   one replication group, which take their newest common point (same groupPointId); and
//   `latest-app-consistent` → likewise with app-consistent points only. A point id names one
//   machine's point, so it is refused for a plan.
import { ReboundError, conflict, invalid } from './errors.ts';
import type { Direction, ItemState, PlanAction, PlanGroup, PointChoice, RecoveryPoint } from './model.ts';
import { validateName } from './names.ts';

export interface PlanInput {
  name: string;
  groups: { machines: string[]; before?: PlanAction[]; after?: PlanAction[] }[];
}

export interface PlanSpec {
  name: string;
  groups: PlanGroup[];
}

/** Validates a plan; `known` (when given) is the set of machine names the vault has. */
export function validatePlan(input: PlanInput, known?: ReadonlySet<string>): PlanSpec {
  const name = validateName(input.name, 'plan');
  if (input.groups.length === 0) {
    throw invalid('invalid-plan', `plan ${name} has no groups: give at least one group of machines (--group M1,M2).`);
  }
  const seen = new Map<string, number>();
  const groups = input.groups.map((g, i) => {
    if (g.machines.length === 0) {
      throw invalid('invalid-plan', `group ${i + 1} of plan ${name} has no machines: list at least one, or leave the group out.`);
    }
    for (const machine of g.machines) {
      validateName(machine, 'machine');
      const earlier = seen.get(machine);
      if (earlier !== undefined) {
        const where = earlier === i ? `twice in group ${i + 1}` : `in groups ${earlier + 1} and ${i + 1}`;
        throw invalid('invalid-plan', `machine ${machine} is ${where} of plan ${name}: each machine may appear once.`);
      }
      seen.set(machine, i);
      if (known && !known.has(machine)) {
        throw new ReboundError('not-found', 'machine-not-found', `plan ${name} names machine ${machine}, which the vault does not know: add it first (rebound machine add) or fix the name.`);
      }
    }
    const before = (g.before ?? []).map((a) => validateAction(a, name, i));
    const after = (g.after ?? []).map((a) => validateAction(a, name, i));
    return { machines: [...g.machines], before, after };
  });
  return { name, groups };
}

export function validateAction(action: PlanAction, plan: string, groupIndex: number): PlanAction {
  if (action.kind === 'script') {
    if (!action.path.startsWith('/')) {
      throw invalid('invalid-plan', `script '${action.path}' in group ${groupIndex + 1} of plan ${plan} is not an absolute path: give the full path, the job runs it from the vault's directory.`);
    }
    if (action.timeoutSeconds !== undefined && (!Number.isInteger(action.timeoutSeconds) || action.timeoutSeconds <= 0)) {
      throw invalid('invalid-plan', `script timeout ${action.timeoutSeconds} in plan ${plan} is not a positive whole number of seconds.`);
    }
    return { ...action };
  }
  if (action.text.trim() === '') {
    throw invalid('invalid-plan', `a manual action in group ${groupIndex + 1} of plan ${plan} has no text: say what the operator must do.`);
  }
  return { ...action };
}

export type PlanStep =
  | { kind: 'shutdown'; machines: string[] }
  | { kind: 'action'; group: number; when: 'before' | 'after'; action: PlanAction }
  | { kind: 'failover'; group: number; machines: string[] };

/** The steps of a plan's failover job in order. `planned` adds source shutdowns, last group first. */
export function executionOrder(plan: Pick<PlanSpec, 'groups'>, opts: { planned: boolean }): PlanStep[] {
  const steps: PlanStep[] = [];
  if (opts.planned) {
    for (let i = plan.groups.length - 1; i >= 0; i--) {
      steps.push({ kind: 'shutdown', machines: [...(plan.groups[i]?.machines ?? [])] });
    }
  }
  plan.groups.forEach((g, i) => {
    for (const action of g.before) steps.push({ kind: 'action', group: i, when: 'before', action });
    steps.push({ kind: 'failover', group: i, machines: [...g.machines] });
    for (const action of g.after) steps.push({ kind: 'action', group: i, when: 'after', action });
  });
  return steps;
}

export interface PlanItemView {
  machine: string;
  /** null when the machine is not protected. */
  state: ItemState | null;
  direction: Direction;
  activeSite: string;
}

export interface PlanDirection {
  /** Where every machine of the plan runs now; the failover goes away from here. */
  activeSite: string;
  /** The items' replication direction: 'reverse' means the plan's failover is a failback. */
  direction: Direction;
  failback: boolean;
}

/** Infers where a plan fails over from; refuses unprotected machines and mixed sites or directions. */
export function inferDirection(planName: string, items: readonly PlanItemView[]): PlanDirection {
  const first = items[0];
  if (!first) throw invalid('invalid-plan', `plan ${planName} has no machines.`);
  const unprotected = items.filter((i) => i.state === null).map((i) => i.machine);
  if (unprotected.length > 0) {
    throw conflict('not-protected', `plan ${planName} has machines that are not protected: ${unprotected.join(', ')}: protect them first.`);
  }
  const sites = new Map<string, string[]>();
  for (const i of items) sites.set(i.activeSite, [...(sites.get(i.activeSite) ?? []), i.machine]);
  if (sites.size > 1) {
    const where = [...sites].map(([site, ms]) => `${ms.join(', ')} at ${site}`).join('; ');
    throw conflict('plan-mixed-sites', `plan ${planName} has machines running at different sites (${where}): fail them over separately, or bring them to one site first.`);
  }
  const directions = new Set(items.map((i) => i.direction));
  if (directions.size > 1) {
    const reverse = items.filter((i) => i.direction === 'reverse').map((i) => i.machine);
    throw conflict('plan-mixed-directions', `plan ${planName} mixes machines replicating forward and in reverse (${reverse.join(', ')} in reverse): reprotect them so they all replicate the same way first.`);
  }
  return { activeSite: first.activeSite, direction: first.direction, failback: first.direction === 'reverse' };
}

export interface MachinePoints {
  machine: string;
  /** Replication group, or null. */
  group: string | null;
  points: readonly RecoveryPoint[];
}

/**
 * Chooses each machine's point for a plan's (or a machine's) failover. Considers only points
 * with status 'ok'. Members of a replication group are taken from `machines` itself, so callers
 * pass every member of a group the plan touches.
 */
export function choosePoints(target: string, machines: readonly MachinePoints[], choice: PointChoice): Map<string, RecoveryPoint> {
  if (typeof choice === 'object') {
    if (machines.length !== 1 || !machines[0]) {
      throw invalid('invalid-point', `a point id names one machine's point, and ${target} has ${machines.length} machines: use latest, latest-processed or latest-app-consistent.`);
    }
    const m = machines[0];
    const p = m.points.find((x) => x.id === choice.id);
    if (!p) throw new ReboundError('not-found', 'point-not-found', `${m.machine} has no recovery point ${choice.id}: list them with rebound points ${m.machine}.`);
    if (p.status !== 'ok') throw conflict('point-unusable', `recovery point ${choice.id} of ${m.machine} is ${p.status}: choose another (rebound points ${m.machine}).`);
    return new Map([[m.machine, p]]);
  }
  const appOnly = choice === 'latest-app-consistent';
  const usable = (m: MachinePoints) => m.points.filter((p) => p.status === 'ok' && (!appOnly || p.kind === 'app'));
  const kindWord = appOnly ? 'app-consistent ' : '';
  const out = new Map<string, RecoveryPoint>();

  const groups = new Map<string, MachinePoints[]>();
  for (const m of machines) {
    if (m.group === null) {
      const newest = newestOf(usable(m));
      if (!newest) {
        throw conflict('no-recovery-point', `${m.machine} has no ${kindWord}recovery point yet: wait for ${appOnly ? 'the next app-consistent cycle, or choose latest' : 'initial replication to finish'}.`);
      }
      out.set(m.machine, newest);
    } else {
      groups.set(m.group, [...(groups.get(m.group) ?? []), m]);
    }
  }
  for (const [group, members] of groups) {
    // A common point is a groupPointId every member holds; among those, the newest wins.
    const ids = new Set<string>();
    for (const m of members) for (const p of usable(m)) if (p.groupPointId !== null) ids.add(p.groupPointId);
    let best: { takenAt: number; chosen: Map<string, RecoveryPoint> } | null = null;
    for (const id of ids) {
      const chosen = new Map<string, RecoveryPoint>();
      for (const m of members) {
        const p = usable(m).find((x) => x.groupPointId === id);
        if (p) chosen.set(m.machine, p);
      }
      if (chosen.size !== members.length) continue;
      const takenAt = Math.min(...[...chosen.values()].map((p) => p.takenAt));
      if (!best || takenAt > best.takenAt) best = { takenAt, chosen };
    }
    if (!best) {
      const names = members.map((m) => m.machine).join(', ');
      throw conflict('no-common-point', `replication group ${group} has no ${kindWord}recovery point common to ${names}: wait for the next ${appOnly ? 'app-consistent ' : ''}cycle of the group${appOnly ? ', or choose latest' : ''}.`);
    }
    for (const [machine, p] of best.chosen) out.set(machine, p);
  }
  return out;
}

function newestOf(points: readonly RecoveryPoint[]): RecoveryPoint | undefined {
  let best: RecoveryPoint | undefined;
  for (const p of points) if (!best || p.takenAt > best.takenAt) best = p;
  return best;
}
