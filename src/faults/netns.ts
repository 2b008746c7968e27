// Network namespaces for fault tests and the soak: two namespaces joined by a veth pair with
// addresses (two "sites" with a real link between them), commands and Node children run inside
// either, and link faults — a cut (link down for N s), a bandwidth cap (tbf) and, where the
// kernel has sch_netem, delay and loss. Needs root and iproute2. Everything made is removed by
// destroy(), and by an exit hook if the process ends without it; children started here are
// killed first, since a process inside a namespace keeps it alive after its name is gone.
// Where netem is missing (this machine's kernel has no sch_netem), netem() throws
// 'netem-unavailable': use the TCP fault proxy (src/faults/tcp-proxy.ts) for delay and loss.
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcess, SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';
import { ReboundError } from '../domain/errors.ts';

const run = promisify(execFile);

export interface NetnsSide {
  /** Namespace name. */
  ns: string;
  /** The veth end inside it. */
  dev: string;
  /** Its address (no prefix length). */
  addr: string;
}

export interface NetemOptions {
  delayMs?: number;
  jitterMs?: number;
  lossPercent?: number;
}

export interface NetnsLink {
  a: NetnsSide;
  b: NetnsSide;
  /** Runs a command in a namespace; resolves with its stdout, rejects on a non-zero exit. */
  exec(side: 'a' | 'b', cmd: string, args?: readonly string[]): Promise<string>;
  /** Starts a process in a namespace (killed by destroy()). */
  spawn(side: 'a' | 'b', cmd: string, args?: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Starts this Node (process.execPath) with `args` in a namespace. */
  spawnNode(side: 'a' | 'b', args: readonly string[], opts?: SpawnOptions): ChildProcess;
  /** Takes the link down on both ends; resolves once it is up again after `seconds`. */
  cut(seconds: number): Promise<void>;
  down(): Promise<void>;
  up(): Promise<void>;
  /** Caps what leaves `side` to `bitsPerSecond` (tbf). */
  rate(side: 'a' | 'b', bitsPerSecond: number): Promise<void>;
  /** Delay, jitter and loss on what leaves `side` (tc netem). */
  netem(side: 'a' | 'b', opts: NetemOptions): Promise<void>;
  /** Removes any qdisc this helper set on `side`. */
  clear(side: 'a' | 'b'): Promise<void>;
  destroy(): Promise<void>;
}

let counter = 0;
const alive = new Set<string>();
let hooked = false;

function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const ns of alive) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  });
}

async function ip(args: readonly string[]): Promise<string> {
  try {
    return (await run('ip', args)).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new ReboundError('unavailable', 'netns-command-failed', `ip ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}.`, {
      hint: 'Network namespaces need root and iproute2 (apt-get install iproute2).',
    });
  }
}

/** Whether namespaces can be made here (root, iproute2, a kernel that allows it). */
export async function netnsAvailable(): Promise<boolean> {
  const ns = `rbprobe-${process.pid}-${counter++}`;
  try {
    await run('ip', ['netns', 'add', ns]);
    await run('ip', ['netns', 'del', ns]);
    return true;
  } catch {
    return false;
  }
}

/** Whether tc netem works here (the kernel needs sch_netem). */
export async function netemAvailable(): Promise<boolean> {
  const ns = `rbprobe-${process.pid}-${counter++}`;
  try {
    await run('ip', ['netns', 'add', ns]);
  } catch {
    return false;
  }
  try {
    await run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'delay', '1ms']);
    return true;
  } catch {
    return false;
  } finally {
    await run('ip', ['netns', 'del', ns]).catch(() => {});
  }
}

/**
 * Makes two namespaces joined by a veth pair, `a` at 10.<x>.<y>.1 and `b` at .2 (/30), loopback
 * up in both. Names carry the pid so parallel test files do not collide.
 */
export async function createNetnsLink(opts: { prefix?: string; addrA?: string; addrB?: string } = {}): Promise<NetnsLink> {
  const id = `${opts.prefix ?? 'rb'}${process.pid}x${counter++}`;
  const a: NetnsSide = { ns: `${id}-a`, dev: 'veth-a', addr: opts.addrA ?? '10.201.0.1' };
  const b: NetnsSide = { ns: `${id}-b`, dev: 'veth-b', addr: opts.addrB ?? '10.201.0.2' };
  const children = new Set<ChildProcess>();
  hookExit();
  const made: string[] = [];
  const destroy = async (): Promise<void> => {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        const exited = new Promise((r) => c.once('exit', r));
        c.kill('SIGKILL');
        await exited;
      }
    }
    children.clear();
    for (const ns of made.splice(0)) {
      await run('ip', ['netns', 'del', ns]).catch(() => {});
      alive.delete(ns);
    }
  };
  try {
    for (const s of [a, b]) {
      await ip(['netns', 'add', s.ns]);
      made.push(s.ns);
      alive.add(s.ns);
    }
    // Created straight inside the namespaces, so the names never meet in the root namespace.
    await ip(['link', 'add', a.dev, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns]);
    for (const s of [a, b]) {
      await ip(['-n', s.ns, 'addr', 'add', `${s.addr}/30`, 'dev', s.dev]);
      await ip(['-n', s.ns, 'link', 'set', s.dev, 'up']);
      await ip(['-n', s.ns, 'link', 'set', 'lo', 'up']);
    }
  } catch (err) {
    await destroy();
    throw err;
  }
  const side = (x: 'a' | 'b'): NetnsSide => (x === 'a' ? a : b);
  const tc = async (x: 'a' | 'b', args: readonly string[]): Promise<void> => {
    try {
      await run('ip', ['netns', 'exec', side(x).ns, 'tc', ...args]);
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      const msg = (e.stderr ?? e.message).trim();
      if (args.includes('netem') && /unknown|not found|No such file/i.test(msg)) {
        throw new ReboundError('unavailable', 'netem-unavailable', `tc netem is not available here (${msg}): this kernel lacks the sch_netem module.`, {
          hint: 'Use the TCP fault proxy (src/faults/tcp-proxy.ts) for delay and loss; cuts (link down) and rate caps (tbf) work without netem.',
        });
      }
      throw new ReboundError('unavailable', 'netns-command-failed', `tc ${args.join(' ')} in ${side(x).ns} failed: ${msg}.`);
    }
  };
  const setLink = async (state: 'up' | 'down'): Promise<void> => {
    for (const s of [a, b]) await ip(['-n', s.ns, 'link', 'set', s.dev, state]);
  };
  const spawnIn = (x: 'a' | 'b', cmd: string, args: readonly string[] = [], o: SpawnOptions = {}): ChildProcess => {
    const c = spawn('ip', ['netns', 'exec', side(x).ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...o });
    children.add(c);
    c.once('exit', () => children.delete(c));
    return c;
  };
  return {
    a,
    b,
    exec: async (x, cmd, args = []) => (await run('ip', ['netns', 'exec', side(x).ns, cmd, ...args])).stdout,
    spawn: spawnIn,
    spawnNode: (x, args, o) => spawnIn(x, process.execPath, args, o),
    cut: async (seconds) => {
      await setLink('down');
      try {
        await new Promise((r) => setTimeout(r, seconds * 1000));
      } finally {
        await setLink('up');
      }
    },
    down: () => setLink('down'),
    up: () => setLink('up'),
    rate: async (x, bps) => {
      const burst = Math.max(16 * 1024, Math.ceil(bps / 8 / 100)); // ≥ 10 ms worth
      await tc(x, ['qdisc', 'replace', 'dev', side(x).dev, 'root', 'tbf', 'rate', `${Math.round(bps)}bit`, 'burst', String(burst), 'latency', '200ms']);
    },
    netem: async (x, o) => {
      const args = ['qdisc', 'replace', 'dev', side(x).dev, 'root', 'netem'];
      if (o.delayMs !== undefined) args.push('delay', `${o.delayMs}ms`, ...(o.jitterMs !== undefined ? [`${o.jitterMs}ms`] : []));
      if (o.lossPercent !== undefined) args.push('loss', `${o.lossPercent}%`);
      await tc(x, args);
    },
    clear: async (x) => {
      await run('ip', ['netns', 'exec', side(x).ns, 'tc', 'qdisc', 'del', 'dev', side(x).dev, 'root']).catch(() => {});
    },
    destroy,
  };
}
