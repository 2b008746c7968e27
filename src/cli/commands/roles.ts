// `rebound agent`, `rebound process-server`, `rebound master-target`: one data-path role as its
// own process (src/server/role-process.ts). The first start registers with the vault using an
// admin token (--token, or REBOUND_TOKEN) and keeps the certificate, key and component token in
// --data; later starts need no token. Prints one ready line (JSON with --json), logs with pino
// on stderr, stops cleanly on SIGTERM/SIGINT, and exits 3 when the vault revokes it.
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { EXIT } from '../exit-codes.ts';
import { verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { collect } from './args.ts';

type Role = 'agent' | 'process-server' | 'master-target';

interface RoleModule {
  startRoleProcess(o: {
    role: Role;
    vaultUrl: string;
    token?: string | undefined;
    dataDir: string;
    name?: string | undefined;
    sites?: readonly string[];
    listen?: string | undefined;
    advertise?: string | undefined;
    metrics?: string | undefined;
    signal?: AbortSignal;
  }): Promise<{
    role: Role;
    name: string;
    componentId: string;
    pid: number;
    registration: 'registered' | 'saved';
    address?: string;
    metrics?: string;
    revoked: Promise<string>;
    close(): Promise<void>;
  }>;
}

interface RoleOpts {
  vault?: string;
  url?: string;
  token?: string;
  data: string;
  name?: string;
  site?: string[];
  listen?: string;
  advertise?: string;
  metrics?: string;
}

const SPECS: { role: Role; description: string; sites: string; listens: boolean }[] = [
  { role: 'agent', description: 'run an agent: replicates the machines of its sites to the process server the vault names', sites: 'source site it replicates (repeatable; default: every site)', listens: false },
  { role: 'process-server', description: 'run a process server: caches what agents send and forwards it to the master target', sites: 'the site it serves (default: every site)', listens: true },
  { role: 'master-target', description: 'run a master target: writes replicas and recovery points at the recovery site', sites: 'target site it serves (repeatable; default: every site)', listens: true },
];

export function registerRoles(program: Command): void {
  for (const spec of SPECS) {
    const cmd = program
      .command(spec.role)
      .description(spec.description)
      .option('--vault <url>', 'the vault URL, http(s)://HOST:PORT (env REBOUND_URL; also --url)')
      .requiredOption('--data <dir>', 'state directory: registration (key.pem, token: 0600), agent state or process-server cache')
      .option('--name <name>', `component name (default ${spec.role}-HOSTNAME)`)
      .option('--site <site>', spec.sites, collect)
      .option('--metrics <host:port>', 'serve /metrics and /healthz here (port 0: any free port)')
      .addHelpText('after', `\nThe first start registers with the vault and needs an admin token: --token T (a global option) or REBOUND_TOKEN.\nLater starts reuse the registration kept in --data. Docs: docs/cli.md, docs/security.md.`);
    if (spec.listens) {
      cmd
        .requiredOption('--listen <host:port>', 'address the data listener binds (port 0: any free port)')
        .option('--advertise <host:port>', 'address peers dial when it is not the --listen address (NAT, a proxy; required with a 0.0.0.0 bind)');
    }
    cmd.action(verb((ctx) => runRole(ctx, spec.role)));
  }
}

async function runRole(ctx: Ctx, role: Role): Promise<number> {
  const o = ctx.opts as unknown as RoleOpts & { json?: boolean };
  const vaultUrl = o.vault ?? o.url ?? process.env['REBOUND_URL'];
  if (!vaultUrl) throw new CliError(`${role} needs the vault's URL: give --vault http(s)://HOST:PORT or set REBOUND_URL.`, { exitCode: EXIT.usage, code: 'vault-url-missing' });
  let u: URL;
  try {
    u = new URL(vaultUrl);
  } catch {
    throw new CliError(`--vault ${vaultUrl} is not a URL: give http(s)://HOST:PORT, such as https://vault.example.net:7480.`, { exitCode: EXIT.usage, code: 'invalid-url' });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new CliError(`--vault ${vaultUrl} is not http:// or https://.`, { exitCode: EXIT.usage, code: 'invalid-url' });
  const token = o.token ?? process.env['REBOUND_TOKEN'];
  // Loaded by URL so the client-only verbs start fast and type-check without the server code.
  const mod = (await import(new URL('../../server/role-process.ts', import.meta.url).href)) as RoleModule;
  const abort = new AbortController();
  let signalled: string | undefined;
  const early = (sig: string) => () => { signalled = sig; abort.abort(); };
  const onTerm = early('SIGTERM');
  const onInt = early('SIGINT');
  process.once('SIGTERM', onTerm);
  process.once('SIGINT', onInt);
  let running: Awaited<ReturnType<RoleModule['startRoleProcess']>>;
  try {
    running = await mod.startRoleProcess({
      role,
      vaultUrl,
      token,
      dataDir: o.data,
      name: o.name,
      sites: o.site ?? [],
      listen: o.listen,
      advertise: o.advertise,
      metrics: o.metrics,
      signal: abort.signal,
    });
  } catch (err) {
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    if (signalled) {
      ctx.p.err(`rebound: ${signalled} while starting; stopped.`);
      return EXIT.ok;
    }
    throw err;
  }
  // The running process's handlers go in before the start-up ones come off and before "ready" is
  // printed: with no listener for a moment Node restores the default action, and a SIGTERM sent
  // on seeing "ready" killed the process (exit by signal, not 0; separate-roles test, 1 run in 3).
  const finished = new Promise<number>((done) => {
    let closing = false;
    const stop = (why: string, code: number) => {
      if (closing) return;
      closing = true;
      ctx.p.err(`rebound: ${why}`);
      running.close().then(() => done(code), (err: unknown) => {
        ctx.p.err(`rebound: shutdown failed: ${err instanceof Error ? err.message : String(err)}`);
        done(EXIT.other);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM, shutting down', EXIT.ok));
    process.once('SIGINT', () => stop('SIGINT, shutting down', EXIT.ok));
    void running.revoked.then((why) => stop(why, EXIT.auth));
    if (signalled) stop(`${signalled} while starting, shutting down`, EXIT.ok);
  });
  process.off('SIGTERM', onTerm);
  process.off('SIGINT', onInt);
  const ready = { ready: true, role: running.role, name: running.name, componentId: running.componentId, pid: running.pid, registration: running.registration, ...(running.address ? { address: running.address } : {}), ...(running.metrics ? { metrics: running.metrics } : {}) };
  if (ctx.p.json) ctx.p.out(JSON.stringify(ready));
  else ctx.p.out(`ready: ${role} ${running.name} pid ${running.pid} (${running.registration === 'registered' ? 'registered now' : 'saved registration'})${running.address ? `, data listener ${running.address}` : ''}${running.metrics ? `, metrics http://${running.metrics}/metrics` : ''}`);
  return finished;
}
