// Runs a physical machine's hook commands (start, stop, freeze, thaw, status): `sh -c COMMAND`
// in its own process group with a deadline, so a hung hook (an ssh to a dead host, a freeze
// that never returns) is killed with everything it started instead of stalling replication or
// a failover. Hooks learn which machine they act on from the environment:
// REBOUND_MACHINE (its name), REBOUND_DISKS (its disk paths, one a line) and REBOUND_ACTION
// (the hook's purpose: start, shutdown, poweroff, freeze, thaw, status).
import { spawn } from 'node:child_process';
import { ReboundError } from '../../domain/errors.ts';
import type { HookName, PhysicalDefinition } from './definition.ts';

/** Output kept from a hook, for error messages (the tail is where failures are explained). */
const KEEP_OUTPUT = 4096;

export interface HookResult {
  exitCode: number | null;
  timedOut: boolean;
  /** The tail of stdout and stderr together. */
  output: string;
  elapsedMs: number;
}

export interface RunHookOptions {
  timeoutMs: number;
  action: string;
  cwd?: string;
  signal?: AbortSignal;
}

/** Runs one hook and reports how it ended; never throws for a failing command (the caller
 * decides what a non-zero exit means), only for an aborted signal. */
export function runHook(def: PhysicalDefinition, hook: HookName, opts: RunHookOptions): Promise<HookResult> {
  const command = def.hooks?.[hook];
  if (command === undefined) throw new ReboundError('internal', 'hook-missing', `Physical machine "${def.name}" has no ${hook} hook.`);
  opts.signal?.throwIfAborted();
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], {
      cwd: opts.cwd,
      detached: true, // its own process group: the deadline kills the hook's children too
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, REBOUND_MACHINE: def.name, REBOUND_DISKS: def.disks.map((d) => d.path).join('\n'), REBOUND_ACTION: opts.action },
    });
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-KEEP_OUTPUT);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    let settled = false;
    const killGroup = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, opts.timeoutMs);
    const onAbort = (): void => killGroup();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new ReboundError('unavailable', 'hook-spawn-failed', `Cannot run the ${hook} hook of physical machine "${def.name}": ${err.message}.`, { cause: err }));
    });
    // Resolved at 'close' (all output read) or shortly after 'exit': a start hook may leave a
    // daemon holding our pipes open, and that daemon is the point of the hook, so it is neither
    // waited for nor killed.
    const finish = (code: number | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      child.stdout.destroy();
      child.stderr.destroy();
      if (opts.signal?.aborted) reject(opts.signal.reason);
      else resolve({ exitCode: code, timedOut, output: output.trim(), elapsedMs: Date.now() - started });
    };
    child.on('exit', (code) => {
      setTimeout(() => finish(code), 200);
    });
    child.on('close', (code) => finish(code));
  });
}

/** Runs a hook that must succeed; a non-zero exit or a timeout becomes `machine-hook-failed`. */
export async function runHookChecked(def: PhysicalDefinition, hook: HookName, opts: RunHookOptions): Promise<HookResult> {
  const r = await runHook(def, hook, opts);
  if (r.timedOut) {
    throw new ReboundError('unavailable', 'machine-hook-timeout', `The ${hook} hook of physical machine "${def.name}" did not finish within ${(opts.timeoutMs / 1000).toFixed(1)} s and was killed.${tail(r.output)}`, {
      hint: `Check the command in its machine.json (${def.hooks?.[hook]}); make it finish in time or raise the hook timeout.`,
      details: { machine: def.name, hook },
    });
  }
  if (r.exitCode !== 0) {
    throw new ReboundError('unavailable', 'machine-hook-failed', `The ${hook} hook of physical machine "${def.name}" exited with ${r.exitCode === null ? 'a signal' : `status ${r.exitCode}`}.${tail(r.output)}`, {
      hint: `Run it by hand (REBOUND_MACHINE=${def.name} sh -c '${def.hooks?.[hook]}') and fix what it reports.`,
      details: { machine: def.name, hook, exitCode: r.exitCode },
    });
  }
  return r;
}

const tail = (output: string): string => (output === '' ? '' : ` It said: ${output.slice(-500)}`);
