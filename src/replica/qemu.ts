// Running qemu-img, qemu-io and qemu-nbd on replica images. Encryption secrets never appear on a
// command line or on a persistent disk: QEMU reads them from short-lived files on tmpfs. Images are named by `json:` filenames so paths need
// no escaping and a layer can be opened alone (`backing: null`) for scrubbing.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReboundError } from '../domain/errors.ts';

/** The qemu secret id every encrypted replica image names for itself and its backing files;
 * the passphrase behind it changes on key rotation, the id never does. */
export const SECRET_ID = 'rebound-replica-key';

export interface Secret {
  id: string;
  /** The LUKS passphrase (printable; derived from the vault key). */
  data: string;
}

export interface ImageSpec {
  path: string;
  /** Key secret id the image is encrypted with, or null for a plain image. */
  secretId: string | null;
  /** Open the layer alone, without its backing chain. */
  alone?: boolean;
}

/** A `json:` filename QEMU opens directly. */
export function jsonName(spec: ImageSpec): string {
  const o: Record<string, unknown> = { driver: 'qcow2', file: { driver: 'file', filename: spec.path } };
  if (spec.secretId) o['encrypt.key-secret'] = spec.secretId;
  if (spec.alone) o['backing'] = null;
  return `json:${JSON.stringify(o)}`;
}

/** What a layer's header names as its backing file: a plain relative name for unencrypted
 * chains (QEMU resolves it beside the layer), a json name carrying the secret id otherwise. */
export function backingName(absPath: string, relPath: string, secretId: string | null): string {
  return secretId ? jsonName({ path: absPath, secretId }) : relPath;
}

/**
 * Puts secrets where QEMU can read them: files in a private 0700 directory on tmpfs (/dev/shm;
 * RAM, never the disk the replica is on), removed by `cleanup()` once QEMU has started. Node's
 * child "pipes" are socketpairs, which QEMU cannot open as /dev/fd/N, hence files.
 */
async function secretFiles(secrets: readonly Secret[]): Promise<{ args: string[]; cleanup(): Promise<void> }> {
  if (secrets.length === 0) return { args: [], cleanup: async () => {} };
  const root = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = await mkdtemp(join(root, 'rebound-secret-'));
  await chmod(dir, 0o700);
  const args: string[] = [];
  for (const [i, s] of secrets.entries()) {
    const f = join(dir, String(i));
    await writeFile(f, s.data, { mode: 0o600 });
    args.push('--object', `secret,id=${s.id},file=${f}`);
  }
  return { args, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface Spawned {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<number | null>;
  /** Removes the secret files; call once the process has opened its images. */
  forgetSecrets(): Promise<void>;
}

/** Long-running children (qemu-nbd) die with this process where util-linux's setpriv can ask
 * the kernel for it (PR_SET_PDEATHSIG; setpriv execs, so the pid stays the child's). A qemu-nbd
 * started by a server that is then killed before it connects waits for a first client forever,
 * holding its image's write lock: the restarted master target could never resume that staged
 * point (found by the soak: clock-backward seed 5001, kill -9). */
const SETPRIV = existsSync('/usr/bin/setpriv') ? '/usr/bin/setpriv' : null;

export async function spawnWithSecrets(cmd: string, args: readonly string[], secrets: readonly Secret[]): Promise<Spawned> {
  const sf = await secretFiles(secrets);
  const argv = [...sf.args, ...args];
  const child = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  child.stdout?.resume();
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(-1));
  });
  void exited.then(() => sf.cleanup());
  return { child, stderr: () => err, exited, forgetSecrets: sf.cleanup };
}

/** Runs a qemu tool to completion; throws a ReboundError with its stderr when it fails.
 * QEMU's LUKS code benchmarks PBKDF with getrusage and gives up ("Unable to get accurate CPU
 * usage") when a busy machine starves it; that run changed nothing, so it is retried. */
export async function runQemu(cmd: 'qemu-img' | 'qemu-io', args: readonly string[], secrets: readonly Secret[] = []): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await runQemuOnce(cmd, args, secrets);
    } catch (err) {
      if (attempt >= 5 || !(err instanceof ReboundError) || !/accurate CPU usage/.test(err.message)) throw err;
    }
  }
}

async function runQemuOnce(cmd: 'qemu-img' | 'qemu-io', args: readonly string[], secrets: readonly Secret[]): Promise<string> {
  const sf = await secretFiles(secrets);
  // qemu-img takes options after its subcommand.
  const argv = cmd === 'qemu-img' ? [args[0] ?? '', ...sf.args, ...args.slice(1)] : [...sf.args, ...args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((resolve) => {
    child.once('exit', (c) => resolve(c));
    child.once('error', () => resolve(-1));
  }).finally(() => sf.cleanup());
  // qemu-io reports failed commands on stdout and still exits 0.
  const failed = code !== 0 || (cmd === 'qemu-io' && /(failed|error|Pattern verification)/i.test(out));
  if (failed) {
    throw new ReboundError('internal', 'replica-qemu-failed', `${cmd} ${args[0] ?? ''} failed: ${(err || out).trim().split('\n').slice(-3).join(' ')}`, {
      details: { cmd, args: args.filter((a) => !a.startsWith('secret')) },
    });
  }
  return out;
}
