// A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a temporary directory
// (as the `postgres` user when we are root, since initdb refuses root), start on a free loopback
// port with fsync off, and remove it afterwards.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, statSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';

export interface ThrowawayPostgres {
  url: string;
  dir: string;
  stop(): void;
}

function pgBinDir(): string {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')));
    versions.sort((a, b) => Number(b) - Number(a));
    if (versions[0] !== undefined) return path.join(root, versions[0], 'bin');
  }
  const which = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' });
  if (which.status === 0 && which.stdout.trim()) return path.dirname(which.stdout.trim());
  throw new Error('PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/setup, which installs the postgresql package');
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function asPostgres(cmd: string[]): string[] {
  if (process.getuid?.() !== 0) return cmd;
  const quoted = cmd.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return ['su', 'postgres', '-s', '/bin/sh', '-c', quoted];
}

function run(cmd: string[]): void {
  const [file, ...args] = cmd;
  if (file === undefined) throw new Error('empty command');
  const r = spawnSync(file, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${path.basename(cmd[cmd.length > 5 ? 4 : 0] ?? file)} failed: ${(r.stderr || r.stdout).trim()}`);
}

/** The postgres user must be able to walk down to a cluster directory made by root. */
function letPostgresTraverse(dir: string): void {
  for (let d = path.dirname(dir); d !== path.dirname(d); d = path.dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0 && st.uid === process.getuid?.()) chmodSync(d, st.mode | 0o711);
  }
}

/** Starts a cluster in `dir` (created if missing). Takes about 1.5 s. */
export async function startPostgres(dir: string): Promise<ThrowawayPostgres> {
  const bin = pgBinDir();
  mkdirSync(dir, { recursive: true });
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  mkdirSync(sock, { recursive: true });
  if (process.getuid?.() === 0) {
    const pw = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
    if (!pw) throw new Error('no postgres user: run scripts/setup (installs the postgresql package)');
    const [, , uid, gid] = pw.split(':');
    letPostgresTraverse(dir);
    chownSync(dir, Number(uid), Number(gid));
    chownSync(sock, Number(uid), Number(gid));
  }
  run(asPostgres([path.join(bin, 'initdb'), '-D', data, '-U', 'rebound', '--auth=trust', '-E', 'UTF8', '--no-sync']));
  const port = await freePort();
  const opts = `-p ${port} -k ${sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`;
  run(asPostgres([path.join(bin, 'pg_ctl'), '-D', data, '-o', opts, '-l', path.join(dir, 'postgres.log'), '-w', 'start']));
  writeFileSync(path.join(dir, 'port'), String(port));
  const url = `postgres://rebound@127.0.0.1:${port}/postgres`;
  return { url, dir, stop: () => stopPostgres(dir) };
}

export function stopPostgres(dir: string): void {
  const data = path.join(dir, 'data');
  if (existsSync(path.join(data, 'postmaster.pid'))) {
    try {
      run(asPostgres([path.join(pgBinDir(), 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']));
    } catch {
      // already gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
}
