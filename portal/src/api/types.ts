// The REST API's shapes as the portal reads them (docs/api.md, src/api/schemas.ts).
export type Role = 'reader' | 'operator' | 'admin';

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface Site {
  id: string;
  name: string;
  provider: string;
  root: string;
  config: Record<string, unknown>;
  createdAt: number;
}

export interface Host {
  id: string;
  site: string;
  name: string;
  address: string | null;
  createdAt: number;
}

export interface Policy {
  id: string;
  name: string;
  frequencySeconds: number;
  retentionSeconds: number;
  appConsistentSeconds: number;
  compression: string;
  encryption: string;
  bandwidthBps: number;
  createdAt: number;
}

export interface Pairing {
  id: string;
  primary: string;
  recovery: string;
  policy: string;
  createdAt: number;
}

export interface Machine {
  id: string;
  name: string;
  site: string;
  host: string | null;
  kind: string;
  disks: { id: string; path: string; sizeBytes: number; format: string }[];
  /** A physical machine's power hooks live here (`hooks.stop` makes a planned failover possible). */
  config?: Record<string, unknown>;
  createdAt: number;
}

export type Health = 'normal' | 'warning' | 'critical';

export interface Item {
  id: string;
  machine: string;
  pairing: string;
  state: string;
  direction: 'forward' | 'reverse';
  activeSite: string;
  group: string | null;
  health: Health;
  lastPointAt: number | null;
  rpoSeconds: number | null;
  details: ItemDetails;
  updatedAt: number;
}

/** A disk a recovered, test or placed machine runs on. */
export interface PlacedDisk {
  id: string;
  path: string;
  sizeBytes?: number;
  format?: string;
}

/** The exports a failed-over or test machine runs on (src/vault/jobs/recovery-context.ts). */
export interface Recovered {
  siteId: string;
  name: string;
  tag: string;
  pointId: string;
  disks: PlacedDisk[];
}

/** What the vault's jobs keep on an item; every field may be missing. Site keys are site ids. */
export interface ItemDetails extends Record<string, unknown> {
  placements?: Record<string, { name: string; disks: PlacedDisk[] }>;
  test?: Recovered | null;
  failover?: Recovered | null;
  replication?: { bytesDone?: number; bytesTotal?: number };
}

export interface RecoveryPoint {
  id: string;
  takenAt: number;
  kind: 'crash' | 'app';
  status: 'ok' | 'bad' | 'pruned';
  groupPointId: string | null;
  disks: { id: string; sizeBytes: number }[];
}

export interface Task {
  seq: number;
  name: string;
  state: string;
  progress: number;
  startedAt: number | null;
  finishedAt: number | null;
  error?: ApiErrorBody;
}

export interface ApiErrorBody {
  code: string;
  message: string;
  hint?: string;
}

export interface Job {
  id: string;
  kind: string;
  target: string;
  state: 'queued' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled';
  progress: number;
  params: unknown;
  error?: ApiErrorBody;
  cancelRequested: boolean;
  createdBy: string;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  tasks: Task[];
  result?: unknown;
  updatedAt?: number;
  log: { at: number; level: string; task: number | null; message: string }[];
}

export interface VaultEvent {
  id: number;
  at: number;
  kind: string;
  item: string | null;
  message: string;
}

export type PlanAction = { kind: 'script'; path: string; timeoutSeconds?: number } | { kind: 'manual'; text: string };

export interface PlanGroup {
  machines: string[];
  before?: PlanAction[];
  after?: PlanAction[];
}

export interface Plan {
  id: string;
  name: string;
  groups: PlanGroup[];
  createdAt?: number;
  updatedAt: number;
}

export const FINISHED_JOB_STATES: readonly Job['state'][] = ['succeeded', 'failed', 'cancelled'];
