// The vault's nouns as the API and CLI show them: sites, hosts, containers, pairings, policies,
// machines, protected items, recovery points, replication groups, recovery plans, jobs and tasks.
// These are view types (times as epoch milliseconds, names instead of foreign keys where people
// read them); the store maps its rows to them and the API serialises them as they are.

export type ProviderName = 'qemu' | 'physical';
export const PROVIDERS: readonly ProviderName[] = ['qemu', 'physical'];

export type Role = 'reader' | 'operator' | 'admin';
export const ROLES: readonly Role[] = ['reader', 'operator', 'admin'];

export interface Site {
  id: string;
  name: string;
  provider: ProviderName;
  /** Absolute directory the site's files (replicas, failed-over disks) live under. */
  root: string;
  config: Record<string, unknown>;
  createdAt: number;
}

export interface Host {
  id: string;
  site: string;
  name: string;
  /** null = the local machine. */
  address: string | null;
  config: Record<string, unknown>;
  createdAt: number;
}

export interface Container {
  id: string;
  site: string;
  name: string;
  createdAt: number;
}

export type Compression = 'zstd' | 'none';
export type Encryption = 'aes-256-gcm' | 'none';

/** A replication policy with every value resolved (see policy.ts for defaults and limits). */
export interface Policy {
  id: string;
  name: string;
  frequencySeconds: number;
  retentionSeconds: number;
  /** 0 = no app-consistent points. */
  appConsistentSeconds: number;
  compression: Compression;
  encryption: Encryption;
  /** Bytes per second; 0 = no cap. */
  bandwidthBps: number;
  /** 'immediate' or 'HH:MM' (UTC). */
  initialStart: string;
  createdAt: number;
}

export interface Pairing {
  id: string;
  primary: string;
  recovery: string;
  policy: string;
  createdAt: number;
}

export interface MachineDisk {
  id: string;
  path: string;
  sizeBytes: number;
  format: 'raw' | 'qcow2';
}

export type MachineKind = 'vm' | 'physical';

export interface Machine {
  id: string;
  name: string;
  /** Home site: where it was discovered or added. */
  site: string;
  host: string | null;
  kind: MachineKind;
  disks: MachineDisk[];
  config: Record<string, unknown>;
  createdAt: number;
}

export type ItemState =
  | 'initial-replication'
  | 'protected'
  | 'test-failover'
  | 'failing-over'
  | 'failover-cancelled'
  | 'failed-over'
  | 'failback-syncing'
  | 'failback-ready'
  | 'committed'
  | 'reprotecting'
  | 'disabling';

export const ITEM_STATES: readonly ItemState[] = [
  'initial-replication',
  'protected',
  'test-failover',
  'failing-over',
  'failover-cancelled',
  'failed-over',
  'failback-syncing',
  'failback-ready',
  'committed',
  'reprotecting',
  'disabling',
];

/** forward = primary → recovery as the pairing names them; reverse = recovery → primary. */
export type Direction = 'forward' | 'reverse';

export type Health = 'normal' | 'warning' | 'critical';

export interface ProtectedItem {
  id: string;
  machine: string;
  pairing: string;
  state: ItemState;
  direction: Direction;
  /** Site the machine runs at now. */
  activeSite: string;
  group: string | null;
  health: Health;
  lastPointAt: number | null;
  /** Age of the newest point in seconds at the time of the read; null without a point. */
  rpoSeconds: number | null;
  /** Failover outputs (disk paths of failed-over or test machines), notes, progress. */
  details: Record<string, unknown>;
  version: number;
  createdAt: number;
  updatedAt: number;
}

export type PointKind = 'crash' | 'app';
export type PointStatus = 'ok' | 'bad' | 'pruned';

export interface RecoveryPoint {
  id: string;
  item: string;
  takenAt: number;
  kind: PointKind;
  /** Shared by the points of a replication group taken together. */
  groupPointId: string | null;
  status: PointStatus;
}

export interface ReplicationGroup {
  name: string;
  machines: string[];
}

/** Where a failover takes its point from: a named choice or a point id. */
export type PointChoice = 'latest' | 'latest-processed' | 'latest-app-consistent' | { id: string };

export type PlanAction =
  | { kind: 'script'; path: string; timeoutSeconds?: number }
  | { kind: 'manual'; text: string };

export interface PlanGroup {
  machines: string[];
  before: PlanAction[];
  after: PlanAction[];
}

export interface RecoveryPlan {
  id: string;
  name: string;
  groups: PlanGroup[];
  createdAt: number;
  updatedAt: number;
}

export type JobState = 'queued' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'];
export const FINISHED_JOB_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

export type TaskState = 'pending' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'skipped' | 'cancelled';

export interface ErrorView {
  code: string;
  message: string;
  hint?: string;
}

export interface Task {
  seq: number;
  name: string;
  state: TaskState;
  progress: number;
  startedAt: number | null;
  finishedAt: number | null;
  error?: ErrorView;
}

export interface JobLogLine {
  at: number;
  level: 'info' | 'warn' | 'error';
  message: string;
}

export interface Job {
  id: string;
  kind: string;
  target: string;
  state: JobState;
  progress: number;
  tasks: Task[];
  log: JobLogLine[];
  result?: unknown;
  error?: ErrorView;
  createdAt: number;
  startedAt?: number | null;
  finishedAt?: number | null;
  createdBy: string;
}

export interface TokenView {
  id: string;
  name: string;
  role: Role;
  createdAt: number;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

export function isFinished(state: JobState): boolean {
  return FINISHED_JOB_STATES.includes(state);
}
