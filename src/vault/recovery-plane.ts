// What the failover jobs need from the data path, as one small interface: a point taken now at
// the source (the agent), the process server's backlog for an item, and at the target the
// master target's exports, replicas and secrets, plus a provider for each site. The embedded
// mode implements it over the roles inside `rebound serve` (src/server/data-roles.ts).
import type { DigestMap } from '../datapath/digest.ts';
import type { MachineProvider } from '../providers/provider.ts';
import type { Assignment } from '../replication/link.ts';

export interface ExportedDisk {
  diskId: string;
  path: string;
  sizeBytes: number;
}

export interface RecoveryPlane {
  /** The item's replication assignment whatever its state (for a last sync after replication stopped). */
  assignment(itemId: string): Promise<Assignment>;
  /** Takes and sends a point now; resolves when the process server holds all of it. */
  syncNow(a: Assignment, signal: AbortSignal): Promise<{ pointId: string; pointSeq: number; takenAt: number }>;
  /** Ids of the item's transfers the process server still holds (complete ones are being forwarded). */
  pending(itemId: string): { complete: string[]; arriving: string[] };
  exportPoint(siteId: string, itemId: string, pointId: string, paths: Record<string, string>, tag: string): Promise<ExportedDisk[]>;
  closeExports(siteId: string, itemId: string, tag: string, keepFiles: boolean): Promise<void>;
  secrets(siteId: string, itemId: string): Promise<{ id: string; data: string }[]>;
  dropReplicas(siteId: string, itemId: string): Promise<void>;
  seed(siteId: string, itemId: string, disks: { diskId: string; path: string; format: 'raw' | 'qcow2'; sizeBytes: number }[], encrypt: boolean): Promise<void>;
  digests?(siteId: string, itemId: string, diskId: string, blockSize: number, signal?: AbortSignal): Promise<DigestMap | null>;
  /** The provider of a site's machines. */
  provider(site: { provider: string; root: string }): MachineProvider;
  /** Replication of an item starts (protect, reverse replication): an embedded agent reads its
   * assignments now rather than at its next poll. */
  replicationStarted?(itemId: string): void;
}
