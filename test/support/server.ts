// A real `rebound serve` as a subprocess for API tests: a fresh data dir (or the one given), a
// free port (port 0, read back from the CLI's --json line), the admin token (from that line on a
// vault's first start, else from DATA/admin.token), stop() by SIGTERM and kill9() for crash tests.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';

const REPO = path.resolve(import.meta.dirname, '../..');

export interface ServerProcess {
  url: string;
  token: string;
  dataDir: string;
  proc: ChildProcess;
  /** stderr so far (logs), for failure messages. */
  logs(): string;
  stop(): Promise<void>;
  kill9(): Promise<void>;
  /** stop() and remove the data dir when this helper created it. */
  cleanup(): Promise<void>;
}

export interface ServerProcessOptions {
  dataDir?: string;
  dbUrl?: string;
  env?: Record<string, string>;
  /** Token to report when the vault already has one and the data dir has no admin.token. */
  token?: string;
  timeoutMs?: number;
}

export async function startServerProcess(opts: ServerProcessOptions = {}): Promise<ServerProcess> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'rebound-api-'));
  const args = ['--json', 'serve', '--data', dataDir, '--port', '0'];
  if (opts.dbUrl) args.push('--db', opts.dbUrl);
  const proc = spawn(path.join(REPO, 'bin/rebound'), args, {
    cwd: dataDir,
    env: { ...process.env, REBOUND_LOG_LEVEL: 'warn', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  // REBOUND_TEST_SERVER_LOG=FILE keeps every line of the server's log (the in-memory copy is
  // only the tail), for debugging a test.
  const keep = process.env['REBOUND_TEST_SERVER_LOG'];
  proc.stderr?.on('data', (d: Buffer) => {
    if (keep) appendFileSync(keep, d);
    stderr += d.toString();
    if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
  });
  const exited = new Promise<void>((done) => proc.once('exit', () => done()));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rebound serve did not start in time:\n${stderr}`)), opts.timeoutMs ?? 30_000);
    const rl = createInterface({ input: proc.stdout! });
    rl.once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`rebound serve exited with ${code}:\n${stderr}`));
    });
  }).catch((err: unknown) => {
    proc.kill('SIGKILL');
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
  proc.stdout?.resume();
  const info = JSON.parse(line) as { url: string; adminToken?: string };
  const tokenFile = path.join(dataDir, 'admin.token');
  const token = info.adminToken ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : opts.token ?? '');
  const health = await fetch(`${info.url}/healthz`);
  if (!health.ok) throw new Error(`healthz answered ${health.status}`);
  const stop = async () => {
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };
  return {
    url: info.url,
    token,
    dataDir,
    proc,
    logs: () => stderr,
    stop,
    kill9: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
    cleanup: async () => {
      await stop();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
