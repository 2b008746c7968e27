// Test helpers for the CLI: run bin/rebound as a subprocess, and start a real `rebound serve` in a
// temporary directory on a free port (stopped and removed by stop(), also when a test fails).
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BIN = new URL('../../bin/rebound', import.meta.url).pathname;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/rebound; REBOUND_URL/REBOUND_TOKEN are cleared unless given in env. */
export function rebound(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((done) => {
    execFile(
      BIN,
      args,
      { env: { ...process.env, REBOUND_URL: '', REBOUND_TOKEN: '', ...opts.env }, cwd: opts.cwd ?? tmpdir(), timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => done(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

export interface Served {
  url: string;
  token: string;
  /** The temp dir the server runs in (its data is in DIR/.rebound). */
  dir: string;
  /** The environment that points the CLI at this server as admin. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * Starts `rebound serve` with the cwd in a fresh temp dir and no --data, so the data and the
 * admin token land in DIR/.rebound, exactly where the CLI looks for a token by default.
 */
export async function serve(extraEnv: Record<string, string> = {}): Promise<Served> {
  const dir = mkdtempSync(join(tmpdir(), 'rebound-cli-e2e-'));
  const port = await freePort();
  const child = spawn(BIN, ['serve', '--port', String(port), '--json'], {
    cwd: dir,
    env: { ...process.env, REBOUND_URL: '', REBOUND_TOKEN: '', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const line = await new Promise<string>((done, fail) => {
      let out = '';
      const timer = setTimeout(() => fail(new Error(`rebound serve did not start in 30 s: ${stderr}`)), 30_000);
      // The JSON line `serve --json` prints once listening (the server may print other lines first).
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n').find((l, i, all) => i < all.length - 1 && l.startsWith('{'));
        if (line !== undefined) {
          clearTimeout(timer);
          done(line);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        fail(new Error(`rebound serve exited (${code}) before it started: ${stderr}`));
      });
    });
    const info = JSON.parse(line) as { url: string; adminToken?: string };
    const token = info.adminToken ?? readFileSync(join(dir, '.rebound', 'admin.token'), 'utf8').trim();
    return { url: info.url, token, dir, env: { REBOUND_URL: info.url, REBOUND_TOKEN: token }, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
