// The provider contract: what Rebound needs from a hypervisor (or a host of plain machines) to
// protect and recover its machines. The qemu provider implements all of it; a Hyper-V or VMware
// provider would implement the same methods over WMI/PowerShell or the vSphere API. Optional
// capabilities are optional methods: a caller checks for them and says plainly when one is
// missing (for instance, no change tracking → replication compares block digests instead).
// Every async call takes an AbortSignal; errors are ReboundErrors with stable codes.
// docs/providers.md explains the contract in prose.

/** The network a NIC joins. `isolated` networks have no path to `production` (test failover). */
export type NetworkKind = 'production' | 'isolated' | 'none';

export interface DiskSpec {
  /** Image path on the host (absolute, or relative to the machine's directory). */
  path: string;
  format: 'qcow2' | 'raw';
}

export interface NicSpec {
  network: NetworkKind;
  /** 52:54:00:xx:xx:xx style; kept across failover so guest network config still matches. */
  mac: string;
  /** For `isolated`: the isolated network's name; NICs with the same name reach each other
   * (a test failover of a recovery plan puts its machines on one). Default: the machine's own. */
  isolation?: string;
}

export type BootSpec =
  | { kind: 'kernel'; kernel: string; initrd?: string; append?: string }
  | { kind: 'disk'; disk: number };

export interface MachineDefinition {
  name: string;
  cpus: number;
  memoryMiB: number;
  disks: DiskSpec[];
  nics: NicSpec[];
  boot: BootSpec;
  /** Secrets the hypervisor loads before opening the disks, for images whose backing chain is
   * encrypted (a recovered machine running over the replica store until commit). `file` holds the
   * passphrase (mode 0600); `id` is the secret id the images name. */
  secrets?: { id: string; file: string }[];
}

export type PowerState = 'running' | 'paused' | 'stopped' | 'crashed';

export interface MachineInfo {
  name: string;
  state: PowerState;
  definition: MachineDefinition;
  /** Hypervisor process or handle, when the provider has one (diagnostics only). */
  pid?: number;
  /** Where the machine's console output is kept, when the provider keeps it. */
  consoleLog?: string;
}

export interface DiskInfo {
  /** Stable id of the disk within the machine (the qemu provider uses its block node name). */
  id: string;
  path: string;
  format: 'qcow2' | 'raw';
  sizeBytes: number;
}

export interface Extent {
  offset: number;
  length: number;
}

/** What a point knows about the changes on one disk since the previous point. */
export type DiskChanges =
  | { kind: 'extents'; extents: Extent[]; granularity: number }
  /** No previous point (first point after tracking started): copy everything allocated. */
  | { kind: 'all'; reason: string };

export interface PointDisk {
  disk: DiskInfo;
  changes: DiskChanges;
  /** Reads the disk as it was at the point's instant (not as it is now). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
  /** Extents of the point's view that may hold data (holes and known-zero ranges left out), so
   * a full copy skips them. Optional: without it, read everything. */
  allocated?(signal?: AbortSignal): Promise<Extent[]>;
  /** Where the point's view of this disk can be read by other tools (e.g. nbdcopy), if anywhere. */
  uri?: string;
}

/** A consistent view of all disks of a machine at one instant. */
export interface Point {
  id: string;
  machine: string;
  takenAt: Date;
  disks: PointDisk[];
  /** `app` when the machine's applications were frozen (flushed) for the instant; else `crash`. */
  consistency?: 'crash' | 'app';
  /** Why an app-consistent point was asked for but this one is only crash-consistent. */
  freezeError?: string;
}

export interface TakePointOptions {
  /** Freeze the guest's filesystems (QEMU: the guest freeze agent; physical: freeze/thaw hooks)
   * around the instant; on failure the point is still taken, crash-consistent, with the reason. */
  appConsistent?: boolean;
  freezeTimeoutMs?: number;
}

/** Points of several machines taken at one barrier (a replication group). */
export interface GroupPoints {
  /** One per machine, in the order asked; each is released on its own (releasePoint). */
  points: Point[];
  /** How long the machines were held at the barrier (QEMU: from the first `stop` to the last
   * `cont`), in ms. */
  pauseMs: number;
}

export interface ReleaseOptions {
  /** True when the caller stored the point's changes; false keeps them for the next point,
   * so a failed transfer never loses a change. */
  consumed: boolean;
}

export interface TrackingStatus {
  state: 'off' | 'active' | 'lost';
  /** For `lost`: which disks and why (bitmap missing or inconsistent after a crash). */
  problems: { disk: string; reason: string }[];
}

/** Creates a machine at the recovery side from disk images that are already there. */
export interface ReplicaSpec {
  name: string;
  secrets?: { id: string; file: string }[];
  /** Images the replica runs on (qcow2 overlays over the replica store's images, typically). */
  disks: DiskSpec[];
  /** Taken from the protected machine's definition: cpus, memory, boot, MACs. */
  template: MachineDefinition;
  network: NetworkKind;
  isolation?: string;
}

export interface MachineProvider {
  /** 'qemu', 'physical', 'hyperv', … */
  readonly kind: string;

  /** The machines on this host, with their live state. */
  discover(signal?: AbortSignal): Promise<MachineInfo[]>;
  /** Writes a new machine definition (fails with `machine-exists` if the name is taken). */
  define(def: MachineDefinition, signal?: AbortSignal): Promise<MachineInfo>;
  /** Removes a stopped machine's definition (its disk images stay). */
  undefine(name: string, signal?: AbortSignal): Promise<void>;
  start(name: string, signal?: AbortSignal): Promise<MachineInfo>;
  /** Graceful shutdown (ACPI); `machine-shutdown-timeout` if the guest does not stop in time. */
  shutdown(name: string, opts: { timeoutMs: number }, signal?: AbortSignal): Promise<void>;
  /** Hard power off; always succeeds on a reachable host. */
  powerOff(name: string, signal?: AbortSignal): Promise<void>;
  state(name: string, signal?: AbortSignal): Promise<MachineInfo>;
  disks(name: string, signal?: AbortSignal): Promise<DiskInfo[]>;

  // Change tracking (optional; without it replication compares digests).
  startTracking?(name: string, signal?: AbortSignal): Promise<TrackingStatus>;
  trackingStatus?(name: string, signal?: AbortSignal): Promise<TrackingStatus>;
  /** Throws `cbt-lost` when tracking cannot say what changed; the caller must resync by digest
   * comparison and then call resetTracking. */
  takePoint?(name: string, signal?: AbortSignal, opts?: TakePointOptions): Promise<Point>;
  /** The point a previous process took and never released, when it is still intact (same id,
   * instant and changes), so a restarted agent resumes its transfer instead of sending it again;
   * null when there is none. */
  adoptPoint?(name: string, signal?: AbortSignal): Promise<Point | null>;
  releasePoint?(point: Point, opts: ReleaseOptions, signal?: AbortSignal): Promise<void>;
  /** Points of several machines of this provider at one instant (a replication group): with
   * `appConsistent`, every machine is frozen first; then all are held (QEMU: `stop` on every VM),
   * each takes its point, and all run again (`cont`), then thaw. A machine whose freeze failed
   * gets a crash-consistent point with the reason. Any other failure takes no point at all. */
  takeGroupPoints?(names: string[], signal?: AbortSignal, opts?: TakePointOptions): Promise<GroupPoints>;
  /** Drops all tracking state and starts afresh (after a digest resync). The first point after
   * it reports every block as changed (`all`), unless `baseline`: the disks are at a state the
   * replica already holds (a recovered machine started from a point), so the first point's
   * changes are the writes made since this call. */
  resetTracking?(name: string, signal?: AbortSignal, opts?: { baseline?: boolean }): Promise<TrackingStatus>;

  /** Opens a stopped machine's disks without running it (QEMU: started with the CPUs stopped),
   * so a point can be taken of its final state; stop it with powerOff. */
  startPaused?(name: string, signal?: AbortSignal): Promise<MachineInfo>;
  /** Lets a machine opened with startPaused run (QEMU: `cont`), e.g. once change tracking has
   * started on it, so that not one of its writes escapes the tracking. */
  resume?(name: string, signal?: AbortSignal): Promise<MachineInfo>;

  // Recovery side.
  createReplica?(spec: ReplicaSpec, signal?: AbortSignal): Promise<MachineInfo>;
  /** Replaces a stopped machine's definition (same name): new disks after a failback. */
  redefine?(def: MachineDefinition, signal?: AbortSignal): Promise<MachineInfo>;
  /** Makes every disk of the machine standalone: its backing chain (the replica store) is copied
   * into the disk's own image, live when the machine runs, and the definition loses its secrets.
   * Afterwards the machine depends on nothing but its own images (commit). */
  consolidate?(name: string, signal?: AbortSignal): Promise<MachineInfo>;
  /** Moves a stopped machine's NICs to another network. */
  setNetwork?(name: string, network: NetworkKind, isolation?: string, signal?: AbortSignal): Promise<MachineInfo>;
}
