// The composition root of the embedded mode (`rebound serve`): opens the store (SQLite in the
// data directory unless a PostgreSQL URL is given), builds the job engine and registers the job
// kinds that exist, builds the API, listens, and on a vault's first start creates an admin
// token, prints it once and writes it to DATA/admin.token (mode 0600). Every role the process
// plays (API, job worker; later the scheduler and supervisor) is wired here and nowhere else.
// Environment: REBOUND_JOB_LEASE_MS (lease length), REBOUND_ENABLE_TEST_JOBS=1 (diag.sequence
// and POST /api/v1/diag/jobs), REBOUND_LOG_LEVEL.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { buildApp } from '../api/app.ts';
import { createToken } from '../api/auth.ts';
import { JobEngine } from '../jobs/engine.ts';
import { openStore } from '../store/open.ts';
import { diagSequence } from './diag-sequence.ts';
import { startDataRoles } from './data-roles.ts';
import type { DataRoles } from './data-roles.ts';
import { loadVaultKeys } from '../vault/keys.ts';
import { loadEmbeddedTls } from '../pki/embedded.ts';

export interface StartServerOptions {
  dataDir: string;
  dbUrl?: string;
  port: number;
  host?: string;
  logLevel?: string;
  /** Which data-path roles run in this process (default: all three). */
  roles?: { agent: boolean; processServer: boolean; masterTarget: boolean };
}

export interface RunningServer {
  url: string;
  /** Set on the vault's first start only. */
  adminToken?: string;
  close(): Promise<void>;
}

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}=${v} is not a positive whole number of milliseconds.`);
  return n;
}

export async function startServer(opts: StartServerOptions): Promise<RunningServer> {
  const dataDir = path.resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true });
  // Logs go to stderr so stdout stays for the CLI's own output (serve --json prints one line).
  const logger = pino(
    { level: opts.logLevel ?? process.env['REBOUND_LOG_LEVEL'] ?? 'info', redact: { paths: ['req.headers.authorization', 'req.headers.cookie', '*.token'], censor: '[redacted]' } },
    pino.destination(2),
  );
  const testJobs = process.env['REBOUND_ENABLE_TEST_JOBS'] === '1';
  const store = await openStore({ url: opts.dbUrl, dataDir });
  const leaseMs = envInt('REBOUND_JOB_LEASE_MS');
  // Most jobs spend their time waiting (a protect job follows an initial copy for hours, a plan
  // follows its machines' jobs), so a server runs many at once; a handful of slots would let a
  // few long protects or plans starve a failover.
  const jobs = new JobEngine({ store, concurrency: 32, logger: logger.child({ role: 'jobs' }), ...(leaseMs === undefined ? {} : { leaseMs, pollMs: Math.max(20, Math.min(250, Math.floor(leaseMs / 4))) }) });
  if (testJobs) jobs.register(diagSequence);
  let app;
  let roles: DataRoles | undefined;
  try {
    const keys = await loadVaultKeys(store);
    // The embedded roles' data connections are mutual TLS with certificates from the vault CA.
    const { material } = await loadEmbeddedTls(store, keys.wrap);
    roles = await startDataRoles({ store, jobs, logger, dataDir, keys, material, ...(opts.roles ? { roles: opts.roles } : {}) });
    app = await buildApp({ store, jobs, logger, version: version(), diagRoutes: testJobs, ...(roles ? { actions: roles.actions, catalogue: roles.catalogue, dataStats: () => roles!.stats() } : {}) });
    await app.listen({ port: opts.port, host: opts.host ?? '127.0.0.1' });
  } catch (err) {
    await roles?.close();
    await store.close();
    throw err;
  }

  let adminToken: string | undefined;
  const anyToken = await store.db.selectFrom('tokens').select('id').limit(1).executeTakeFirst();
  if (!anyToken) {
    const created = await createToken(store, 'admin', 'admin');
    adminToken = created.token;
    writeFileSync(path.join(dataDir, 'admin.token'), `${adminToken}\n`, { mode: 0o600 });
    process.stderr.write(`first admin token: ${adminToken}\n(written to ${path.join(dataDir, 'admin.token')}; it is not shown again)\n`);
  }
  jobs.start();

  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port;
  const host = opts.host ?? '127.0.0.1';
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      // Stop taking requests first, then hand running jobs back (no lease left behind), then the store.
      const server = app;
      await server.close();
      await roles?.close();
      await jobs.stop();
      await store.close();
      logger.flush();
    })();
    return closing;
  };
  return adminToken === undefined ? { url, close } : { url, adminToken, close };
}
