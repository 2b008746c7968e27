// Replication groups: machines that share crash- and app-consistent points, taken at one barrier
// across all their disks. The rules (no I/O here):
// - a group's machines share one pairing (so one source site, one recovery site and one policy,
//   hence one frequency and one app-consistent frequency) and replicate the same way;
// - joining, changing or leaving a group is refused while a failover of the machine runs
//   (the failover has chosen its point; the group decides which points the plan may choose).
import { conflict } from './errors.ts';
import type { Direction, ItemState } from './model.ts';
import { validateName } from './names.ts';

export interface GroupMemberView {
  machine: string;
  pairingId: string;
  /** How the pairing reads: "dc1 → dc2 under policy gold". */
  pairing: string;
  direction: Direction;
}

/** States in which a failover (or drill, or failback) of the machine is under way. */
export const GROUP_FROZEN_STATES: readonly ItemState[] = ['test-failover', 'failing-over', 'failback-syncing', 'failback-ready', 'disabling'];

/** A group name as the API takes it (the same rules as every other name). */
export function validateGroupName(name: string): string {
  return validateName(name, 'replication group');
}

/** Refuses `candidate` joining `group` unless it shares the pairing and direction of the others. */
export function checkGroupMembership(group: string, candidate: GroupMemberView, others: readonly GroupMemberView[]): void {
  const peers = others.filter((o) => o.machine !== candidate.machine);
  const first = peers[0];
  if (!first) return;
  const mismatch = peers.find((o) => o.pairingId !== candidate.pairingId);
  if (mismatch) {
    const names = peers.filter((o) => o.pairingId === mismatch.pairingId).map((o) => o.machine).join(', ');
    throw conflict('group-pairing-mismatch', `replication group ${group} has machines paired ${mismatch.pairing} (${names}); ${candidate.machine} is paired ${candidate.pairing}: a group's machines share one pairing and so one policy. Put ${candidate.machine} in another group, or protect it under the same pairing.`, { details: { group, machine: candidate.machine } });
  }
  const other = peers.find((o) => o.direction !== candidate.direction);
  if (other) {
    throw conflict('group-direction-mismatch', `replication group ${group} has ${other.machine} replicating ${other.direction === 'forward' ? 'forward' : 'in reverse'}, and ${candidate.machine} ${candidate.direction === 'forward' ? 'forward' : 'in reverse'}: a group's machines replicate the same way. Reprotect them to one direction first.`, { details: { group, machine: candidate.machine } });
  }
}

/** Refuses changing a machine's group while a failover of it runs (by its state or a job of it). */
export function checkGroupChange(machine: string, state: ItemState, from: string | null, to: string | null, runningJob?: { id: string; kind: string }): void {
  const what = to === null ? `leave replication group ${from ?? ''}` : from === null ? `join replication group ${to}` : `move from replication group ${from} to ${to}`;
  if (GROUP_FROZEN_STATES.includes(state)) {
    throw conflict('group-change-refused', `${machine} cannot ${what} now: its state is ${state}, a failover (or drill) of it is under way. Finish it first (commit, test-cleanup, or cancel the job), then change the group.`, { details: { machine, state } });
  }
  if (runningJob) {
    throw conflict('group-change-refused', `${machine} cannot ${what} now: its ${runningJob.kind} job ${runningJob.id} is running. Wait for it to end (rebound job wait ${runningJob.id}), then change the group.`, { details: { machine, job: runningJob.id } });
  }
}
