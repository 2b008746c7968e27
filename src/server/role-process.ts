// One data-path role as its own process (`rebound agent|process-server|master-target`, issue 4):
// it registers with the vault on its first start (a CSR to the vault CA, src/pki/register.ts) and
// keeps its key, certificate and component token in its data directory; later starts reuse them.
// It then fetches the keys its role needs (GET /replication/keys), the revoked serials its data
// listener refuses (GET /replication/revoked, refreshed every 10 s), and runs the same Agent,
// ProcessServer or MasterTarget class as `rebound serve` does, with the vault reached over HTTP(S)
// (src/replication/http-link.ts) instead of direct store calls. A heartbeat every 5 s tells the
// vault it is alive and, for a process server or master target, the address peers dial; the vault
// then sends agents to this process server and process servers to this master target
// (ReplicationCatalogue's endpoint choice). Optionally it serves /metrics and /healthz.
import { hostname } from 'node:os';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { pino } from 'pino';
import type { Logger } from 'pino';
import { Gauge, Registry } from 'prom-client';
import { ReboundError } from '../domain/errors.ts';
import { validateName } from '../domain/names.ts';
import type { ComponentRole } from '../pki/ca.ts';
import { registerComponent } from '../pki/register.ts';
import type { RegisteredComponent } from '../pki/register.ts';
import { peerChecker, RevocationList } from '../pki/tls.ts';
import type { AtRestKey } from '../replica/replica-disk.ts';
import { Agent } from '../replication/agent.ts';
import { VaultClient } from '../replication/http-link.ts';
import type { AgentLink, MasterTargetLink } from '../replication/link.ts';
import { MasterTarget } from '../replication/master-target.ts';
import { ProcessServer } from '../replication/process-server.ts';
import { parseAddress } from '../replication/wire.ts';
import { preparePhysical, providerCache } from './data-roles.ts';

export interface RoleProcessOptions {
  role: ComponentRole;
  /** The vault's base URL (http:// or https://). */
  vaultUrl: string;
  /** An admin token, needed only to register (first start, or after a revocation). */
  token?: string | undefined;
  dataDir: string;
  /** Component name (default `<role>-<hostname>`). */
  name?: string | undefined;
  /** Agent: the source sites it replicates (none: every site). Master target: the target sites
   * it serves (none: every site). Process server: at most one, the site it serves. */
  sites?: readonly string[];
  /** Process server, master target: host:port the data listener binds (port 0: any free one). */
  listen?: string | undefined;
  /** host:port peers are told to dial, when it is not the listen address (NAT, a proxy). */
  advertise?: string | undefined;
  /** host:port of an HTTP listener for /metrics and /healthz (port 0: any free one). */
  metrics?: string | undefined;
  logLevel?: string | undefined;
  heartbeatMs?: number;
  /** How often a master target asks the vault for scrubs to do (default 2 s). */
  scrubPollMs?: number;
  /** Logs go here (default: stderr). */
  logger?: Logger;
  /** Aborts a start that is still waiting for the vault. */
  signal?: AbortSignal;
}

export interface RunningRole {
  role: ComponentRole;
  name: string;
  componentId: string;
  pid: number;
  /** 'registered' on the first start (or after a revocation), 'saved' when reused. */
  registration: 'registered' | 'saved';
  /** Where peers reach the data listener (process server, master target). */
  address?: string;
  /** Where /metrics is served, when asked. */
  metrics?: string;
  stats(): Record<string, number>;
  /** Settles with a sentence when the vault revoked this component (the process should exit). */
  revoked: Promise<string>;
  close(): Promise<void>;
}

const ROLES: readonly ComponentRole[] = ['agent', 'process-server', 'master-target'];

/** host:port with a port 0–65535, or a ReboundError saying what was expected. */
export function checkAddress(text: string, flag: string): { host: string; port: number } {
  let a: { host: string; port: number } | undefined;
  try {
    a = parseAddress(text);
  } catch {
    a = undefined;
  }
  if (!a || !a.host || !Number.isInteger(a.port) || a.port < 0 || a.port > 65535) {
    throw new ReboundError('invalid', 'invalid-address', `${flag} ${text} is not host:port: give an address such as 0.0.0.0:7481, 10.0.0.5:7481 or [::1]:7481 (port 0 picks a free port).`);
  }
  return a;
}

const fmt = (host: string, port: number): string => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** Retries `fn` while the vault cannot be reached (it may start after us); other errors pass. */
async function whileUnreachable<T>(what: string, log: Logger, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  let wait = 500;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = err as ReboundError;
      const unreachable = e instanceof ReboundError && (e.code === 'vault-unreachable' || e.kind === 'unavailable');
      if (!unreachable) throw err;
      if (attempt === 1 || attempt % 10 === 0) log.warn({ err: { code: e.code, message: e.message } }, `${what}: the vault is not reachable yet; retrying`);
      await delay(wait, undefined, signal ? { signal } : {});
      wait = Math.min(wait * 2, 5000);
    }
  }
}

export async function startRoleProcess(o: RoleProcessOptions): Promise<RunningRole> {
  if (!ROLES.includes(o.role)) throw new ReboundError('invalid', 'component-role-invalid', `role '${o.role}' is not one of ${ROLES.join(', ')}.`);
  const role = o.role;
  const dataDir = resolve(o.dataDir);
  const name = validateName(o.name ?? `${role}-${hostname().split('.')[0] ?? 'host'}`.toLowerCase().replace(/[^a-z0-9._-]/g, '-'), 'component');
  const sites = [...new Set(o.sites ?? [])];
  for (const s of sites) validateName(s, 'site');
  if (role === 'process-server' && sites.length > 1) throw new ReboundError('invalid', 'too-many-sites', `a process server serves one site (or every site): give --site at most once, not ${sites.join(', ')}.`);
  const listens = role !== 'agent';
  if (listens && o.listen === undefined) throw new ReboundError('invalid', 'listen-missing', `a ${role} needs --listen HOST:PORT, the address its data listener binds (such as 0.0.0.0:7481).`);
  if (!listens && (o.listen !== undefined || o.advertise !== undefined)) throw new ReboundError('invalid', 'listen-not-for-agents', 'an agent has no data listener: drop --listen/--advertise.');
  const listen = o.listen === undefined ? undefined : checkAddress(o.listen, '--listen');
  const advertise = o.advertise === undefined ? undefined : checkAddress(o.advertise, '--advertise');
  if (advertise && advertise.port === 0) throw new ReboundError('invalid', 'invalid-address', `--advertise ${o.advertise} needs the real port peers dial, not 0.`);
  const wildcard = (h: string): boolean => h === '0.0.0.0' || h === '::';
  if (listen && wildcard(listen.host) && !advertise) throw new ReboundError('invalid', 'advertise-missing', `--listen ${o.listen ?? ''} binds every interface, which is no address to dial: give --advertise HOST:PORT, the address agents or process servers reach this ${role} at.`);
  const metricsAt = o.metrics === undefined ? undefined : checkAddress(o.metrics, '--metrics');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });

  const log = o.logger ?? pino({ level: o.logLevel ?? process.env['REBOUND_LOG_LEVEL'] ?? 'info', base: { pid: process.pid, role, component: name }, redact: { paths: ['*.token', 'token'], censor: '[redacted]' } }, pino.destination(2));
  const signal = o.signal;

  // 1. Registration (or the saved one). The address is given at registration when it is known
  // already (it goes into the certificate as a SAN); with port 0 the heartbeat tells it later.
  const saved = existsSync(join(dataDir, 'component.json'));
  if (!saved && !o.token) {
    throw new ReboundError('unauthenticated', 'registration-token-missing', `${role} '${name}' is not registered yet (no ${join(dataDir, 'component.json')}): give --token with an admin token of the vault (rebound token create NAME --role admin) for its first start.`);
  }
  const knownAddress = advertise ?? (listen && listen.port !== 0 ? listen : undefined);
  const reg: RegisteredComponent = await whileUnreachable('registration', log, signal, () =>
    registerComponent({
      vaultUrl: o.vaultUrl,
      token: o.token ?? '',
      name,
      role,
      ...(sites.length === 1 ? { site: sites[0]! } : {}),
      ...(knownAddress ? { address: fmt(knownAddress.host, knownAddress.port) } : {}),
      stateDir: dataDir,
    }).catch((err: unknown) => {
      // Saved state the vault no longer accepts, and no token to register again with.
      if (!o.token && err instanceof ReboundError && err.kind === 'unauthenticated') {
        throw new ReboundError('unauthenticated', 'registration-token-missing', `${role} '${name}' must register again (${err.message}): start it with --token and an admin token of the vault.`, { cause: err });
      }
      throw err;
    }),
  );
  log.info({ componentId: reg.id, serial: reg.serial, source: reg.source, verified: reg.verified, ...(reg.reason ? { reason: reg.reason } : {}) }, reg.source === 'registered' ? 'registered with the vault' : 'reusing the saved registration');
  const vault = new VaultClient(o.vaultUrl, reg.token);

  // 2. The keys this role needs, and the ids of the sites it is limited to.
  const keys = await whileUnreachable('keys', log, signal, () => vault.call<{ role: string; transport: string; atRest?: AtRestKey[] }>('GET', '/replication/keys'));
  const transportKey = Buffer.from(keys.transport, 'base64');
  if (transportKey.length !== 32) throw new ReboundError('internal', 'vault-keys-invalid', `the vault answered a transport key of ${transportKey.length} bytes, not 32.`);
  const atRestKeys: AtRestKey[] = keys.atRest ?? [];
  if (role === 'master-target' && atRestKeys.length === 0) throw new ReboundError('internal', 'vault-keys-invalid', 'the vault gave this master target no at-rest keys.');
  const siteIds = new Map<string, string>();
  for (const s of sites) {
    const site = await whileUnreachable('sites', log, signal, () => vault.call<{ id: string; name: string }>('GET', `/sites/${encodeURIComponent(s)}`));
    siteIds.set(site.id, site.name);
  }

  // 3. Revocations, for the data listener's peer check.
  const revocations = new RevocationList();
  const refreshRevocations = async (): Promise<void> => {
    const r = await vault.call<{ serials: string[] }>('GET', '/replication/revoked');
    for (const s of r.serials) revocations.add(s);
  };
  await whileUnreachable('revocation list', log, signal, refreshRevocations);

  // 4. The role.
  const started: { close(): Promise<void> }[] = [];
  let agent: Agent | undefined;
  let ps: ProcessServer | undefined;
  let mt: MasterTarget | undefined;
  let address: string | undefined;
  const rlog = log.child({});
  try {
    if (role === 'agent') {
      agent = new Agent({ stateDir: join(dataDir, 'agent'), link: agentLink(vault, sites), providerFor: providerCache(), prepare: preparePhysical, transportKey, material: reg.material, logger: rlog });
      agent.start();
      const a = agent;
      started.push({ close: () => a.stop() });
    } else if (role === 'process-server') {
      ps = new ProcessServer({
        dir: join(dataDir, 'process-server'),
        transportKey,
        material: reg.material,
        host: listen!.host,
        port: listen!.port,
        logger: rlog,
        link: vault.processServerLink(),
        checkPeer: peerChecker({ revocations, roles: ['agent'] }),
        // Asked at each forward: the master target of the site may have moved since the agent sent.
        masterTargetFor: async (h) => {
          try {
            return (await vault.call<{ address: string | null }>('GET', `/replication/sites/${encodeURIComponent(h.targetSiteId)}/master-target`)).address ?? '';
          } catch (err) {
            rlog.debug({ err }, 'cannot ask the vault where the master target is; using the address the agent sent');
            return '';
          }
        },
      });
      await ps.start();
      started.push(ps);
      address = ps.address;
    } else {
      mt = new MasterTarget({
        transportKey,
        atRestKeys,
        material: reg.material,
        host: listen!.host,
        port: listen!.port,
        logger: rlog,
        link: masterTargetLink(vault, siteIds),
        checkPeer: peerChecker({ revocations, roles: ['process-server'] }),
      });
      await mt.start();
      started.push(mt);
      address = mt.address;
    }
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    throw err;
  }
  if (address !== undefined && advertise) address = fmt(advertise.host, advertise.port);

  const stats = (): Record<string, number> => ({
    ...(agent ? { agent_sent: agent.stats.bytesSent, agent_skipped: agent.stats.bytesSkipped, agent_points: agent.stats.points } : {}),
    ...(ps ? { process_server_in: ps.stats.bytesIn, process_server_out: ps.stats.bytesOut, process_server_received: ps.stats.received, process_server_forwarded: ps.stats.forwarded } : {}),
    ...(mt ? { master_target_written: mt.stats.bytes, master_target_points: mt.stats.points, master_target_transfers: mt.stats.transfers } : {}),
  });

  // 5. Heartbeats (with the data address) and revocation refreshes.
  let onRevoked: (why: string) => void = () => undefined;
  const revoked = new Promise<string>((r) => { onRevoked = r; });
  const timers: NodeJS.Timeout[] = [];
  let lastBeatFailed = false;
  const beat = async (): Promise<void> => {
    try {
      await vault.call('POST', `/components/${encodeURIComponent(name)}/heartbeat${address === undefined ? '' : `?address=${encodeURIComponent(address)}`}`);
      if (lastBeatFailed) log.info('heartbeat: the vault answers again');
      lastBeatFailed = false;
    } catch (err) {
      const e = err as ReboundError;
      if (e instanceof ReboundError && (e.kind === 'unauthenticated' || e.code === 'component.not-found')) {
        onRevoked(`the vault no longer accepts ${role} '${name}' (${e.message}): it was revoked or removed. To bring it back, start it again with --token and an admin token: it registers anew.`);
        return;
      }
      if (!lastBeatFailed) log.warn({ err: { code: e.code, message: e.message } }, 'heartbeat failed; retrying');
      lastBeatFailed = true;
    }
  };
  await beat();
  const every = o.heartbeatMs ?? 5000;
  timers.push(setInterval(() => void beat(), every));
  timers.push(setInterval(() => void refreshRevocations().catch((err: unknown) => log.debug({ err }, 'revocation refresh failed')), 10_000));
  if (mt) {
    // A key rotation at the vault adds an at-rest key: refresh the list in place (the master
    // target reads it whenever it opens or creates a replica).
    timers.push(setInterval(() => {
      void vault.call<{ atRest?: AtRestKey[] }>('GET', '/replication/keys').then((k) => {
        if (k.atRest && k.atRest.length > 0 && k.atRest.map((x) => x.id).join() !== atRestKeys.map((x) => x.id).join()) {
          atRestKeys.splice(0, atRestKeys.length, ...k.atRest);
          log.info({ keys: atRestKeys.map((x) => x.id) }, 'at-rest keys changed at the vault');
        }
      }, (err: unknown) => log.debug({ err }, 'key refresh failed'));
    }, 60_000));
  }
  if (mt) {
    // Scrubs the vault asks of this master target (a scrub job cannot call into a separate
    // process): poll for its sites' requests, one scrub at a time, and answer each.
    const scrubber = mt;
    const working: string[] = [];
    const sites = siteIds.size > 0 ? [...siteIds.keys()] : null;
    let polling = false;
    const pollScrubs = async (): Promise<void> => {
      if (polling) {
        // A scrub runs: tell the vault it is still under way, so it is not offered again.
        await vault.call('POST', '/replication/scrubs/poll', { sites, working, take: false }).catch(() => undefined);
        return;
      }
      polling = true;
      try {
        const reqs = await vault.call<{ id: string; siteId: string; itemId: string }[]>('POST', '/replication/scrubs/poll', { sites, working: [] });
        for (const r of reqs) {
          working.push(r.id);
          log.info({ item: r.itemId, site: r.siteId }, 'scrub asked by the vault');
          const answer = await scrubber.scrub(r.siteId, r.itemId).then(
            (x) => ({ checkedBlocks: x.checkedBlocks, badPoints: x.badPoints }),
            (err: unknown) => ({ error: err instanceof Error ? err.message : String(err) }),
          );
          working.splice(working.indexOf(r.id), 1);
          await vault.call('POST', `/replication/scrubs/${encodeURIComponent(r.id)}`, answer);
          log.info({ item: r.itemId, ...answer }, 'scrub answered');
        }
      } catch (err) {
        log.debug({ err }, 'scrub poll failed');
      } finally {
        polling = false;
      }
    };
    timers.push(setInterval(() => void pollScrubs(), o.scrubPollMs ?? 2000));
  }
  for (const t of timers) t.unref();

  // 6. /metrics and /healthz.
  let metricsServer: Server | undefined;
  let metrics: string | undefined;
  if (metricsAt) {
    const registry = new Registry();
    new Gauge({
      name: 'rebound_replication_bytes',
      help: 'Bytes and counts of this role process since it started (same counters as rebound serve)',
      labelNames: ['counter'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [k, v] of Object.entries(stats())) this.set({ counter: k }, v);
      },
    });
    metricsServer = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method === 'GET' && path === '/metrics') {
        registry.metrics().then((text) => { res.writeHead(200, { 'content-type': registry.contentType }); res.end(text); }, (err: unknown) => { res.writeHead(500); res.end(String(err)); });
      } else if (req.method === 'GET' && path === '/healthz') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ ok: true, role, name, componentId: reg.id, ...(address ? { address } : {}), stats: stats() }));
      } else {
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'not-found', message: `${req.method ?? ''} ${path ?? ''} is not here: this listener serves GET /metrics and GET /healthz.` } }));
      }
    });
    const srv = metricsServer;
    await new Promise<void>((ok, fail) => {
      srv.once('error', (err) => fail(new ReboundError('unavailable', 'metrics-listen-failed', `cannot listen for /metrics on ${o.metrics ?? ''}: ${err.message}`)));
      srv.listen(metricsAt.port, metricsAt.host, () => ok());
    });
    const a = srv.address();
    metrics = fmt(metricsAt.host, typeof a === 'object' && a ? a.port : metricsAt.port);
  }

  const pidFile = join(dataDir, 'pid');
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  log.info({ ...(address ? { address } : {}), ...(metrics ? { metrics } : {}), sites }, `${role} ready`);

  let closing: Promise<void> | undefined;
  return {
    role,
    name,
    componentId: reg.id,
    pid: process.pid,
    registration: reg.source,
    ...(address ? { address } : {}),
    ...(metrics ? { metrics } : {}),
    stats,
    revoked,
    close() {
      closing ??= (async () => {
        for (const t of timers) clearInterval(t);
        for (const s of started.reverse()) await s.close().catch((err: unknown) => log.warn({ err }, 'stopping the role failed'));
        if (metricsServer) {
          const srv = metricsServer;
          srv.closeAllConnections();
          await new Promise<void>((r) => srv.close(() => r()));
        }
        // Only our own pid file: a newer process may have replaced it.
        try {
          if (readFileSync(pidFile, 'utf8').trim() === String(process.pid)) rmSync(pidFile, { force: true });
        } catch { /* already gone */ }
        log.info({ stats: stats() }, `${role} stopped`);
        log.flush();
      })();
      return closing;
    },
  };
}

/** The agent's link: assignments of its sites (every site when none is given). */
function agentLink(vault: VaultClient, sites: readonly string[]): AgentLink {
  if (sites.length <= 1) return vault.agentLink(sites[0]);
  const base = vault.agentLink();
  return { ...base, assignments: async () => (await Promise.all(sites.map((s) => vault.agentLink(s).assignments()))).flat() };
}

/** The master target's link; with sites given, a transfer for another site is refused (the
 * site's root is asked first thing when a transfer arrives). */
function masterTargetLink(vault: VaultClient, siteIds: Map<string, string>): MasterTargetLink {
  const base = vault.masterTargetLink();
  if (siteIds.size === 0) return base;
  return {
    ...base,
    siteRoot: async (id) => {
      if (!siteIds.has(id)) {
        throw new ReboundError('forbidden', 'site-not-served', `this master target serves ${[...siteIds.values()].join(', ')} only, not site ${id}: start a master target for that site (rebound master-target --site NAME).`, { retryable: true });
      }
      return base.siteRoot(id);
    },
  };
}
