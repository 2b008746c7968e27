// The embedded mode's data path: agent, process server and master target inside `rebound serve`
// (seed 004's configuration server), talking to each other over the same TLS data connections
// they use as separate processes, and to the vault through direct store calls. Also the health
// monitor and the job kinds that need these roles.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { JobEngine } from '../jobs/engine.ts';
import type { MachineProvider } from '../providers/provider.ts';
import { QemuProvider } from '../providers/qemu/qemu-provider.ts';
import { PhysicalProvider } from '../providers/physical/physical-provider.ts';
import { physicalMachine } from '../providers/physical/definition.ts';
import { Agent } from '../replication/agent.ts';
import type { Assignment } from '../replication/link.ts';
import { MasterTarget } from '../replication/master-target.ts';
import { ProcessServer } from '../replication/process-server.ts';
import type { EmbeddedMaterial } from '../pki/embedded.ts';
import { peerChecker, RevocationList } from '../pki/tls.ts';
import type { Store } from '../store/open.ts';
import { startHealthMonitor } from '../vault/health-monitor.ts';
import { ItemActions } from '../vault/item-actions.ts';
import { protectJob } from '../vault/jobs/protect.ts';
import { scrubJob } from '../vault/jobs/scrub.ts';
import { commitJob } from '../vault/jobs/commit.ts';
import { failoverJobs } from '../vault/jobs/failover.ts';
import { planJobs } from '../vault/jobs/plan.ts';
import type { RecoveryPlane } from '../vault/recovery-plane.ts';
import type { VaultKeys } from '../vault/keys.ts';
import { ReplicationCatalogue } from '../vault/replication-catalogue.ts';
import { ReboundError } from '../domain/errors.ts';

export interface DataRolesOptions {
  store: Store;
  jobs: JobEngine;
  logger: Logger;
  dataDir: string;
  keys: VaultKeys;
  /** TLS material for each embedded role (issued by the vault CA; src/pki/embedded.ts). */
  material: EmbeddedMaterial;
  /** Run agent / process server / master target here (default all). */
  roles?: { agent?: boolean; processServer?: boolean; masterTarget?: boolean };
  onRpo?(machine: string, seconds: number | null): void;
}

export interface DataRoles {
  actions: ItemActions;
  catalogue: ReplicationCatalogue;
  agent: Agent | undefined;
  processServer: ProcessServer | undefined;
  masterTarget: MasterTarget | undefined;
  stats(): Record<string, number>;
  close(): Promise<void>;
}

/** One provider instance per site root and kind, shared by every item of the site. */
export function providerCache(): (a: Pick<Assignment, 'provider' | 'sourceRoot'>) => MachineProvider {
  const cache = new Map<string, MachineProvider>();
  return (a) => {
    const key = `${a.provider}:${a.sourceRoot}`;
    let p = cache.get(key);
    if (!p) {
      if (a.provider === 'qemu') p = new QemuProvider({ root: a.sourceRoot });
      else if (a.provider === 'physical') p = new PhysicalProvider({ root: a.sourceRoot });
      else throw new ReboundError('conflict', 'provider-unavailable', `The ${String(a.provider)} provider is not available in this build.`);
      cache.set(key, p);
    }
    return p;
  };
}

/** Before a physical machine's cycle: its definition file matches the vault's machine row. */
export async function preparePhysical(p: MachineProvider, a: Assignment): Promise<void> {
  if (!(p instanceof PhysicalProvider)) return;
  const hooks = (a.config['hooks'] ?? undefined) as Parameters<typeof physicalMachine>[2];
  await p.ensureDefined(physicalMachine(a.machine, a.disks.map((d) => d.path), hooks));
}

/**
 * Fault-injection knob (the soak, RELIABILITY.md): REBOUND_PROCESS_SERVER_PORT and
 * REBOUND_MASTER_TARGET_PORT fix the embedded listeners' ports (default: any free port), and
 * REBOUND_PROCESS_SERVER_VIA / REBOUND_MASTER_TARGET_VIA (host:port) are the addresses the other
 * roles are told to dial instead of the listener's own, e.g. a fault proxy in front of it.
 */
function dataRoute(role: 'PROCESS_SERVER' | 'MASTER_TARGET'): { port?: number; via?: string } {
  const port = process.env[`REBOUND_${role}_PORT`];
  const via = process.env[`REBOUND_${role}_VIA`];
  const out: { port?: number; via?: string } = {};
  if (port) {
    const n = Number(port);
    if (!Number.isInteger(n) || n <= 0 || n > 65535) throw new ReboundError('invalid', 'bad-port', `REBOUND_${role}_PORT=${port} is not a TCP port (1-65535); unset it to listen on any free port.`);
    out.port = n;
  }
  if (via) {
    if (!/^\[?[^\]\s]+\]?:\d{1,5}$/.test(via)) throw new ReboundError('invalid', 'bad-address', `REBOUND_${role}_VIA=${via} is not a host:port address; unset it to dial the listener directly.`);
    out.via = via;
  }
  return out;
}

export async function startDataRoles(o: DataRolesOptions): Promise<DataRoles> {
  const roles = { agent: true, processServer: true, masterTarget: true, ...o.roles };
  let ps: ProcessServer | undefined;
  let mt: MasterTarget | undefined;
  const psRoute = dataRoute('PROCESS_SERVER');
  const mtRoute = dataRoute('MASTER_TARGET');
  const mtAddress = (): string => (mt ? (mtRoute.via ?? mt.address) : '');
  const catalogue = new ReplicationCatalogue(o.store, {
    processServer: () => (ps ? (psRoute.via ?? ps.address) : ''),
    masterTarget: mtAddress,
  });
  const actions = new ItemActions(o.store, o.jobs);
  let agent: Agent | undefined;
  const providers = providerCache();
  const need = <T>(role: T | undefined, name: string): T => {
    if (!role) throw new ReboundError('unavailable', 'role-not-embedded', `failover needs the ${name} inside this server (rebound serve --roles all); roles run as separate processes do not take part in failover yet.`);
    return role;
  };
  const plane: RecoveryPlane = {
    assignment: (id) => catalogue.assignmentFor(id),
    syncNow: (a, signal) => need(agent, 'agent').syncNow(a, signal),
    pending: (id) => ps?.pending(id) ?? { complete: [], arriving: [] },
    exportPoint: (siteId, itemId, pointId, paths, tag) => need(mt, 'master target').exportPoint(siteId, itemId, pointId, paths, tag),
    closeExports: (siteId, itemId, tag, keep) => need(mt, 'master target').closeExports(siteId, itemId, tag, keep),
    secrets: (siteId, itemId) => need(mt, 'master target').secrets(siteId, itemId),
    dropReplicas: (siteId, itemId) => need(mt, 'master target').dropReplicas(siteId, itemId),
    seed: (siteId, itemId, disks, encrypt) => need(mt, 'master target').seed(siteId, itemId, disks, encrypt),
    digests: (siteId, itemId, diskId, bs, signal) => need(mt, 'master target').digests(siteId, itemId, diskId, bs, signal),
    provider: (site) => providers({ provider: site.provider as Assignment['provider'], sourceRoot: site.root }),
    replicationStarted: () => agent?.wake(),
  };
  o.jobs.register(protectJob(o.store, actions, 'protect', plane));
  o.jobs.register(protectJob(o.store, actions, 'reverse-replicate', plane));
  for (const def of failoverJobs(o.store, actions, plane)) o.jobs.register(def);
  o.jobs.register(commitJob(o.store, plane));
  // The embedded master target scrubs what it holds; a separate one is asked through the vault.
  o.jobs.register(scrubJob(o.store, () => mt, catalogue));
  for (const def of planJobs(o.store, actions, plane)) o.jobs.register(def);
  const started: { close(): Promise<void> }[] = [];
  // Registered components (agents, process servers run as their own processes) may connect to
  // the embedded listeners too; a revoked one is refused right after its handshake.
  const revocations = new RevocationList(o.store);
  await revocations.refresh();
  revocations.start();
  started.push({ close: async () => revocations.stop() });
  try {
    if (roles.masterTarget) {
      mt = new MasterTarget({ transportKey: o.keys.transport, atRestKeys: o.keys.atRestKeys, material: o.material['master-target'], checkPeer: peerChecker({ revocations, roles: ['process-server'] }), logger: o.logger.child({ role: 'master-target' }), link: catalogue.masterTargetLink(), ...(mtRoute.port ? { port: mtRoute.port } : {}) });
      await mt.start();
      started.push(mt);
    }
    if (roles.processServer) {
      ps = new ProcessServer({ dir: join(o.dataDir, 'process-server'), transportKey: o.keys.transport, material: o.material['process-server'], checkPeer: peerChecker({ revocations, roles: ['agent'] }), logger: o.logger.child({ role: 'process-server' }), link: catalogue.masterTargetLink(), masterTargetFor: (h) => catalogue.masterTargetAddress(h.targetSiteId), ...(psRoute.port ? { port: psRoute.port } : {}) });
      await ps.start();
      started.push(ps);
    }
    if (roles.agent) {
      agent = new Agent({ stateDir: join(o.dataDir, 'agent'), link: catalogue.agentLink(), providerFor: providers, prepare: preparePhysical, targetDigests: async (a, diskId, bs, signal, holding) => {
        if (holding !== undefined) {
          // The replica must have applied the agent's last sent point before it is compared.
          const deadline = Date.now() + 120_000;
          const newest = async (): Promise<string> => (await need(mt, 'master target').commonPoints(a.targetSiteId, a.itemId)).at(-1)?.id ?? '';
          while ((await newest()) < holding) {
            if (Date.now() > deadline) return null;
            await new Promise((r) => setTimeout(r, 500));
          }
        }
        return plane.digests!(a.targetSiteId, a.itemId, diskId, bs, signal);
      }, transportKey: o.keys.transport, material: o.material.agent, logger: o.logger.child({ role: 'agent' }) });
      agent.start();
      started.push({ close: () => agent!.stop() });
    }
    const health = startHealthMonitor({ store: o.store, logger: o.logger.child({ role: 'health' }), ...(o.onRpo ? { onRpo: o.onRpo } : {}) });
    started.push({ close: () => health.stop() });
    return {
      actions,
      catalogue,
      agent,
      processServer: ps,
      masterTarget: mt,
      stats: () => ({
        agent_sent: agent?.stats.bytesSent ?? 0,
        agent_skipped: agent?.stats.bytesSkipped ?? 0,
        agent_points: agent?.stats.points ?? 0,
        process_server_in: ps?.stats.bytesIn ?? 0,
        process_server_out: ps?.stats.bytesOut ?? 0,
        master_target_written: mt?.stats.bytes ?? 0,
        master_target_points: mt?.stats.points ?? 0,
      }),
      async close() {
        for (const s of started.reverse()) await s.close().catch((err: unknown) => o.logger.warn({ err }, 'stopping a data role failed'));
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    throw err;
  }
}
