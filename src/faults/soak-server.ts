// A real `rebound serve` as a child process for the soak: started on a data directory with a
// free HTTP port (port 0, read back from the --json line), extra environment (fault routes, the
// clock knob), its stderr kept for the report, stopped by SIGTERM or killed by SIGKILL. Its log
// level is warn, or REBOUND_SOAK_LOG_LEVEL.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';

const REPO = path.resolve(import.meta.dirname, '../..');

export interface SoakServer {
  url: string;
  token: string;
  dataDir: string;
  pid: number;
  proc: ChildProcess;
  logs(): string;
  stop(): Promise<void>;
  kill9(): Promise<void>;
  alive(): boolean;
}

export async function startSoakServer(o: { dataDir: string; env?: Record<string, string>; token?: string; timeoutMs?: number; logFile?: string }): Promise<SoakServer> {
  const proc = spawn(path.join(REPO, 'bin/rebound'), ['--json', 'serve', '--data', o.dataDir, '--port', '0'], {
    cwd: o.dataDir,
    env: { ...process.env, REBOUND_LOG_LEVEL: process.env['REBOUND_SOAK_LOG_LEVEL'] ?? 'warn', ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  // The whole log also goes to `logFile` (appended across restarts), kept with a failed run.
  const log = o.logFile ? createWriteStream(o.logFile, { flags: 'a' }) : null;
  log?.on('error', () => undefined);
  proc.once('exit', () => log?.end());
  proc.stderr?.on('data', (d: Buffer) => {
    log?.write(d);
    stderr += d.toString();
    if (stderr.length > 400_000) stderr = stderr.slice(-200_000);
  });
  const exited = new Promise<void>((done) => proc.once('exit', () => done()));
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rebound serve did not start within ${o.timeoutMs ?? 60_000} ms:\n${stderr.slice(-4000)}`)), o.timeoutMs ?? 60_000);
    const rl = createInterface({ input: proc.stdout! });
    rl.once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`rebound serve exited (${code ?? signal}) before it was ready:\n${stderr.slice(-4000)}`));
    });
  }).catch(async (err: unknown) => {
    proc.kill('SIGKILL');
    await exited;
    throw err;
  });
  proc.stdout?.resume();
  const info = JSON.parse(line) as { url: string; adminToken?: string };
  const tokenFile = path.join(o.dataDir, 'admin.token');
  const token = info.adminToken ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : o.token ?? '');
  const alive = (): boolean => proc.exitCode === null && proc.signalCode === null;
  return {
    url: info.url,
    token,
    dataDir: o.dataDir,
    pid: proc.pid!,
    proc,
    logs: () => stderr,
    alive,
    async stop() {
      if (!alive()) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(t);
    },
    async kill9() {
      if (!alive()) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** An API call as `s`'s admin; throws with the answer unless it is 2xx. */
export async function soakApi<T = unknown>(s: Pick<SoakServer, 'url' | 'token'>, method: string, route: string, body?: unknown): Promise<T> {
  const r = await fetch(`${s.url}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${s.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await r.text();
  if (r.status < 200 || r.status > 299) throw new Error(`${method} ${route} → ${r.status}: ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

/** The data-path byte counters of `/metrics` (rebound_replication_bytes{counter=…}). */
export async function replicationBytes(s: Pick<SoakServer, 'url'>): Promise<Record<string, number>> {
  const text = await (await fetch(`${s.url}/metrics`, { signal: AbortSignal.timeout(30_000) })).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^rebound_replication_bytes\{counter="([a-z_]+)"\} (\d+(?:\.\d+)?(?:e\+?\d+)?)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}
