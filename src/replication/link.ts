// What the data-path roles need from the vault, as small interfaces: the agent asks what to
// replicate and reports progress; the master target asks where a site's replicas live and
// records, prunes and condemns points; the process server asks for a resync when its cache lost
// data. In the embedded mode these are direct store calls (local-link.ts); a role running as its
// own process reaches the same calls over the vault's HTTPS API (http-link.ts).

export interface AssignedDisk {
  id: string;
  path: string;
  sizeBytes: number;
  format: 'qcow2' | 'raw';
}

export interface Assignment {
  itemId: string;
  machine: string;
  state: string;
  direction: 'forward' | 'reverse';
  sourceSiteId: string;
  targetSiteId: string;
  provider: 'qemu' | 'physical';
  sourceRoot: string;
  disks: AssignedDisk[];
  policy: {
    frequencySeconds: number;
    retentionSeconds: number;
    appConsistentSeconds: number;
    compression: 'zstd' | 'none';
    encryption: 'aes-256-gcm' | 'none';
    bandwidthBps: number;
  };
  processServer: string;
  masterTarget: string;
  /** The master target lost data or a cache was damaged: the next point must be a full copy. */
  resync: string | null;
  /** How the resync is done: `full` copies everything allocated; `digests` compares block
   * digests with the replica at the target and sends only differing blocks (reverse replication
   * over the old disks); `cbt` sends the blocks the source's change tracking recorded since it
   * started, when the replica's base is exactly what the source started from (reverse
   * replication after a failover that lost nothing), and falls back to digests when that tracking
   * is no longer intact. Null when no resync is asked. */
  resyncMode: 'full' | 'digests' | 'cbt' | null;
  /** Machine config (physical hooks etc.). */
  config: Record<string, unknown>;
  /** Replication group: the agent takes the group's points at one barrier across its machines
   * (every member shares the pairing, so the policy and source site). Null: on its own. */
  group: string | null;
}

export interface ProgressReport {
  itemId: string;
  pointId: string;
  initial: boolean;
  bytesDone: number;
  bytesTotal: number;
  /** Bytes skipped because a previous session had them acknowledged. */
  bytesSkipped: number;
  /** The transfer finished and the point's changes were released at the source. */
  sent: boolean;
  takenAt: number;
  /** How a first copy or resync chose what to send: everything allocated (`full`), blocks that
   * differ from the replica (`digests`), or the source's change tracking (`cbt`). */
  method?: 'full' | 'digests' | 'cbt';
}

/** A replication group's point: one barrier across its members, one point per member. */
export interface GroupPointRecord {
  groupPointId: string;
  group: string;
  /** The group's point sequence (from 1). */
  seq: number;
  takenAt: number;
  /** 'app' only when every member's freeze succeeded. */
  kind: 'crash' | 'app';
  /** How long the members were held at the barrier (ms). */
  pauseMs: number;
  members: { itemId: string; pointId: string }[];
}

export interface AgentLink {
  /** Items whose source is one of this agent's sites and which replicate now. */
  assignments(): Promise<Assignment[]>;
  progress(report: ProgressReport): Promise<void>;
  /** The agent did the full copy a resync asked for. */
  resynced(itemId: string): Promise<void>;
  event(itemId: string, kind: string, message: string, data?: Record<string, unknown>): Promise<void>;
  /** Records a group point before its member points are sent (idempotent); the vault ties each
   * member's recovery point to it when the master target records that point. */
  groupPoint(r: GroupPointRecord): Promise<void>;
}

export interface PointRecord {
  itemId: string;
  pointId: string;
  pointSeq: number;
  takenAt: number;
  kind: 'crash' | 'app';
  disks: { id: string; sizeBytes: number; bytes: number }[];
  /** The site whose replica holds the point. */
  siteId: string;
  /** The oldest point the replica still holds: any older point the vault lists was merged away
   * (retention merges, then tells the vault; a kill in between left it listed). */
  heldFrom?: string;
}

/** What the vault made of a point: `recorded` (or already known); `stale` when the machine now
 * runs at the replica's site (a cycle that was in flight when a failover finished: its replica
 * is of the machine's past, and the point must not be offered); `gone` when the item no longer
 * exists. The master target discards a point that is not recorded. */
export type PointVerdict = 'recorded' | 'stale' | 'gone';

export interface MasterTargetLink {
  siteRoot(siteId: string): Promise<string>;
  /** Idempotent: recording a point twice records it once. */
  recordPoint(p: PointRecord): Promise<PointVerdict>;
  prunePoints(itemId: string, pointIds: string[]): Promise<void>;
  markBad(itemId: string, pointIds: string[], reason: string): Promise<void>;
  requestResync(itemId: string, reason: string): Promise<void>;
  /** An event for operators (e.g. the recovery site ran out of space); optional for links that
   * cannot record one. */
  event?(itemId: string, kind: string, message: string, data?: Record<string, unknown>): Promise<void>;
}

export interface ProcessServerLink {
  requestResync(itemId: string, reason: string): Promise<void>;
}
