// `rebound serve`: vault, process server and master target in one process (embedded mode).
// The server module is loaded only here, so the other verbs start fast and work from a
// machine that only has the client.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { EXIT } from '../exit-codes.ts';
import { verb } from '../context.ts';
import type { Ctx } from '../context.ts';

interface ServeModule {
  startServer(opts: { dataDir: string; dbUrl?: string; port: number; host?: string; roles?: { agent: boolean; processServer: boolean; masterTarget: boolean } }): Promise<{
    url: string;
    adminToken?: string;
    close(): Promise<void>;
  }>;
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run the vault (API, scheduler, data path) in this process')
    .option('--data <dir>', 'data directory (SQLite file, replicas, admin.token)', '.rebound')
    .option('--db <url>', 'PostgreSQL URL (postgres://…) instead of the SQLite file')
    .option('--port <n>', 'HTTP port', (v) => Number.parseInt(v, 10), 7480)
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--roles <list>', 'data-path roles run in this process: all, none, or a list of agent,process-server,master-target (env REBOUND_ROLES)', process.env['REBOUND_ROLES'] ?? 'all')
    .action(
      verb(async (ctx: Ctx) => {
        const o = ctx.opts as { data: string; db?: string; port: number; host: string; roles: string };
        const roles = parseRoles(o.roles);
        if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
          throw new CliError(`--port ${String(o.port)} is not a port: give a number from 0 to 65535.`, { exitCode: EXIT.usage, code: 'invalid-port' });
        }
        // Loaded by URL so the CLI type-checks and runs without the server module present.
        const modUrl = new URL('../../server/serve.ts', import.meta.url).href;
        const mod = (await import(modUrl)) as ServeModule;
        const dataDir = resolve(o.data);
        const server = await mod.startServer({ dataDir, port: o.port, host: o.host, roles, ...(o.db === undefined ? {} : { dbUrl: o.db }) });
        // startServer itself prints the first admin token once; --json repeats it as a field so
        // that scripts can read one JSON line instead of scraping text.
        if (ctx.p.json) {
          ctx.p.out(JSON.stringify({ url: server.url, dataDir, ...(server.adminToken ? { adminToken: server.adminToken } : {}) }));
        } else {
          ctx.p.err(`rebound: serving at ${server.url} (data in ${dataDir}${server.adminToken ? `; admin token in ${dataDir}/admin.token` : ''})`);
        }
        await new Promise<void>((done) => {
          let closing = false;
          const stop = (signal: string) => {
            if (closing) return;
            closing = true;
            if (!ctx.p.json) ctx.p.err(`rebound: ${signal}, shutting down`);
            server.close().then(done, (err: unknown) => {
              ctx.p.err(`rebound: shutdown failed: ${err instanceof Error ? err.message : String(err)}`);
              process.exitCode = EXIT.other;
              done();
            });
          };
          process.once('SIGINT', () => stop('SIGINT'));
          process.once('SIGTERM', () => stop('SIGTERM'));
        });
      }),
    );
}

const ROLE_NAMES = ['agent', 'process-server', 'master-target'] as const;

/** `all`, `none`, or a comma list of role names. */
export function parseRoles(text: string): { agent: boolean; processServer: boolean; masterTarget: boolean } {
  const t = text.trim();
  if (t === 'all') return { agent: true, processServer: true, masterTarget: true };
  if (t === 'none') return { agent: false, processServer: false, masterTarget: false };
  const list = t.split(',').map((x) => x.trim()).filter(Boolean);
  const bad = list.filter((x) => !(ROLE_NAMES as readonly string[]).includes(x));
  if (bad.length > 0 || list.length === 0) {
    throw new CliError(`--roles ${text} is not understood: give all, none, or a comma list of ${ROLE_NAMES.join(', ')}.`, { exitCode: EXIT.usage, code: 'invalid-roles' });
  }
  return { agent: list.includes('agent'), processServer: list.includes('process-server'), masterTarget: list.includes('master-target') };
}
