// The vault's tables, as Kysely sees them. One schema for SQLite and PostgreSQL: ids are text
// (UUIDs), times are epoch milliseconds (INTEGER / BIGINT, parsed to number on pg), structured
// values are JSON text. The migrations in ./migrations create exactly these tables; change both
// together, forward only.
import type { Generated, Insertable, Selectable, Updateable } from 'kysely';

export interface SiteTable {
  id: string;
  name: string; // unique
  provider: string; // 'qemu' | 'physical'
  root: string; // absolute directory the site's files live under
  config: string; // JSON: provider-specific settings
  created_at: number;
}

export interface HostTable {
  id: string;
  site_id: string;
  name: string; // unique within a site
  address: string | null; // null = local
  config: string; // JSON
  created_at: number;
}

export interface ContainerTable {
  id: string;
  site_id: string;
  name: string; // unique within a site; every site has a 'default' container
  created_at: number;
}

export interface PolicyTable {
  id: string;
  name: string; // unique
  frequency_s: number; // copy frequency (RPO target)
  retention_s: number; // recovery-point window
  app_consistent_s: number; // 0 = no app-consistent points
  compression: string; // 'zstd' | 'none'
  encryption: string; // 'aes-256-gcm' | 'none'
  bandwidth_bps: number; // 0 = no cap
  initial_start: string; // 'immediate' or 'HH:MM' (UTC)
  created_at: number;
}

export interface PairingTable {
  id: string;
  primary_site_id: string;
  recovery_site_id: string;
  policy_id: string;
  created_at: number;
}

export interface MachineTable {
  id: string;
  name: string; // unique across the vault (CLI targets name machines)
  site_id: string; // where it was discovered/added (its home site)
  host_id: string | null;
  kind: string; // 'vm' | 'physical'
  disks: string; // JSON: [{ id, path, sizeBytes, format }]
  config: string; // JSON: provider-specific (definition file path, hooks, ...)
  created_at: number;
}

export interface ProtectedItemTable {
  id: string;
  machine_id: string; // unique
  pairing_id: string;
  state: string; // see domain/lifecycle.ts ItemState
  direction: string; // 'forward' (primary→recovery) | 'reverse'
  active_site_id: string; // where the machine runs now
  group_name: string | null; // replication group
  health: string; // 'normal' | 'warning' | 'critical'
  last_point_at: number | null;
  details: string; // JSON: failover outputs (disk paths), notes, replication progress
  version: number; // optimistic concurrency: bumped on every change
  created_at: number;
  updated_at: number;
}

export interface RecoveryPointTable {
  id: string;
  item_id: string;
  taken_at: number;
  kind: string; // 'crash' | 'app'
  group_point_id: string | null; // shared by the points of a replication group taken together
  status: string; // 'ok' | 'bad' | 'pruned'
  disks: string; // JSON: per-disk sizes and store references
  created_at: number;
}

/** A point of a replication group: one barrier across all its machines (migration 0003). */
export interface GroupPointTable {
  id: string;
  group_name: string;
  seq: number; // the group's point sequence, from 1
  taken_at: number; // the barrier's instant
  kind: string; // 'crash' | 'app' (app only when every member's freeze succeeded)
  pause_ms: number | null; // how long the members were held at the barrier
  created_at: number;
}

/** Which member point (one item's recovery point) belongs to which group point. */
export interface GroupPointMemberTable {
  point_id: string;
  group_point_id: string;
  item_id: string;
}

export interface RecoveryPlanTable {
  id: string;
  name: string; // unique
  spec: string; // JSON: { groups: [{ machines: string[], before: Action[], after: Action[] }] }
  created_at: number;
  updated_at: number;
}

export interface JobTable {
  id: string;
  kind: string; // handler name, e.g. 'failover', 'protect'
  target: string; // machine name, 'plan:NAME', or '' when none
  state: string; // 'queued' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled'
  params: string; // JSON
  result: string | null; // JSON
  error: string | null; // JSON { code, message, hint }
  progress: number; // 0..100
  attempts: number;
  max_attempts: number;
  run_after: number; // not claimable before (backoff)
  locked_by: string | null; // worker id holding the lease
  locked_at: number | null;
  lease_expires_at: number | null;
  cancel_requested: number; // 0/1
  idempotency_key: string | null; // unique when set
  created_by: string; // token name or 'system'
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
}

export interface TaskTable {
  id: string;
  job_id: string;
  seq: number; // order within the job, from 0
  name: string;
  state: string; // 'pending' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'skipped' | 'cancelled'
  progress: number; // 0..100
  checkpoint: string | null; // JSON: where a resumed task continues
  result: string | null; // JSON
  error: string | null; // JSON
  started_at: number | null;
  finished_at: number | null;
  resumed_at: number | null; // set by resume(): the task's manual action was completed
}

export interface JobLogTable {
  id: Generated<number>;
  job_id: string;
  task_seq: number | null;
  at: number;
  level: string; // 'info' | 'warn' | 'error'
  message: string;
}

export interface TokenTable {
  id: string;
  name: string;
  role: string; // 'reader' | 'operator' | 'admin'
  hash: string; // sha256 of the secret, hex; unique
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

export interface AuditTable {
  id: Generated<number>;
  at: number;
  actor: string; // token name
  action: string; // e.g. 'POST /api/v1/sites'
  target: string;
  status: number; // HTTP status of the result
  detail: string | null; // JSON, never secrets
}

export interface EventTable {
  id: Generated<number>;
  at: number;
  kind: string; // 'health-changed', 'state-changed', ...
  item_id: string | null;
  message: string;
  data: string | null; // JSON
}

export interface SettingTable {
  key: string;
  value: string; // JSON
  updated_at: number;
}

export interface ComponentTable {
  id: string;
  name: string; // unique
  role: string; // 'agent' | 'process-server' | 'master-target'
  site_id: string | null; // the site it serves
  address: string | null; // host:port of its data listener (process server, master target)
  token_id: string | null; // the token bound to it
  cert_serial: string | null; // hex serial of the certificate the vault CA issued it
  cert_pem: string | null;
  status: string; // 'active' | 'revoked'
  registered_at: number;
  last_seen_at: number | null;
  revoked_at: number | null;
}

export interface Database {
  sites: SiteTable;
  hosts: HostTable;
  containers: ContainerTable;
  policies: PolicyTable;
  pairings: PairingTable;
  machines: MachineTable;
  protected_items: ProtectedItemTable;
  recovery_points: RecoveryPointTable;
  group_points: GroupPointTable;
  group_point_members: GroupPointMemberTable;
  recovery_plans: RecoveryPlanTable;
  jobs: JobTable;
  tasks: TaskTable;
  job_log: JobLogTable;
  tokens: TokenTable;
  audit: AuditTable;
  events: EventTable;
  settings: SettingTable;
  components: ComponentTable;
}

export type Row<T extends keyof Database> = Selectable<Database[T]>;
export type NewRow<T extends keyof Database> = Insertable<Database[T]>;
export type RowUpdate<T extends keyof Database> = Updateable<Database[T]>;
