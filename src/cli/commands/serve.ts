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
  startServer(opts: { dataDir: string; dbUrl?: string; port: number; host?: string }): Promise<{
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
    .action(
      verb(async (ctx: Ctx) => {
        const o = ctx.opts as { data: string; db?: string; port: number; host: string };
        if (!Number.isInteger(o.port) || o.port < 0 || o.port > 65535) {
          throw new CliError(`--port ${String(o.port)} is not a port: give a number from 0 to 65535.`, { exitCode: EXIT.usage, code: 'invalid-port' });
        }
        // Loaded by URL so the CLI type-checks and runs without the server module present.
        const modUrl = new URL('../../server/serve.ts', import.meta.url).href;
        const mod = (await import(modUrl)) as ServeModule;
        const dataDir = resolve(o.data);
        const server = await mod.startServer({ dataDir, port: o.port, host: o.host, ...(o.db === undefined ? {} : { dbUrl: o.db }) });
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
