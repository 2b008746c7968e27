// Reads what the test guest says on its serial console (guest/init and the workload programs
// print `REBOUND …` lines): booted, ready, the last durable record or file generation, errors.
// Providers, the demo and tests use it to wait for a guest and to know what it has promised is
// on disk (anything the console called durable must be on every later recovery point).
import { open } from 'node:fs/promises';
import { ReboundError } from '../domain/errors.ts';

export interface GuestConsoleState {
  /** init ran (`REBOUND boot`). */
  booted: boolean;
  kernel?: string;
  workload?: string;
  /** eth0's IPv4 address with prefix, when the guest has a NIC. */
  address?: string;
  /** The workload started (`REBOUND ready`). */
  ready: boolean;
  /** Record writer: its writer id and where it resumed. */
  writer?: string;
  resumeSeq?: number;
  /** Highest `REBOUND seq=N durable` (0 when none); with several data disks, the lowest of
   * their highest, i.e. every disk has at least this many durable records. */
  lastDurableSeq: number;
  /** Record writer, per data disk (lines name it; one writer runs per disk). */
  disks: Map<string, { writer?: string; resumeSeq?: number; durableSeq: number; done: boolean }>;
  /** fs writer: file index → highest durable generation. */
  durableFiles: Map<number, number>;
  /** The workload finished (`REBOUND done`; with several disks, on all of them). */
  done: boolean;
  poweroff: boolean;
  /** `REBOUND error …` lines, without the prefix. */
  errors: string[];
}

const emptyState = (): GuestConsoleState => ({ booted: false, ready: false, lastDurableSeq: 0, disks: new Map(), durableFiles: new Map(), done: false, poweroff: false, errors: [] });

/** Feeds console output in any chunks; only complete lines count. */
export class ConsoleParser {
  readonly state: GuestConsoleState = emptyState();
  #partial = '';

  feed(chunk: string): GuestConsoleState {
    const lines = (this.#partial + chunk).split('\n');
    this.#partial = lines.pop() ?? '';
    for (const line of lines) this.#line(line.replace(/\r$/, ''));
    return this.state;
  }

  #line(line: string): void {
    // Kernel messages can share a line with ours on a busy console; look anywhere in it.
    const at = line.indexOf('REBOUND ');
    if (at < 0) return;
    const text = line.slice(at + 8);
    const s = this.state;
    let m: RegExpExecArray | null;
    const records = /^(seq=\d+ durable|ready workload=records|done workload=records)/.test(text);
    const disk = records ? this.#disk(/ disk=(\S+)/.exec(text)?.[1]) : undefined;
    if ((m = /^seq=(\d+) durable/.exec(text)) && disk) {
      disk.durableSeq = Math.max(disk.durableSeq, Number(m[1]));
      s.lastDurableSeq = Math.min(...[...s.disks.values()].map((d) => d.durableSeq));
    } else if ((m = /^file=(\d+) gen=(\d+) durable/.exec(text))) {
      const index = Number(m[1]);
      s.durableFiles.set(index, Math.max(s.durableFiles.get(index) ?? 0, Number(m[2])));
    } else if (text.startsWith('boot ')) {
      s.booted = true;
      s.kernel = /kernel=(\S+)/.exec(text)?.[1];
      s.workload = /workload=(\S+)/.exec(text)?.[1];
    } else if (text.startsWith('ready')) {
      s.ready = true;
      const writer = /writer=(\d+)/.exec(text)?.[1];
      const resume = /resume_seq=(\d+)/.exec(text)?.[1];
      if (writer !== undefined) s.writer = writer;
      if (resume !== undefined) s.resumeSeq = Number(resume);
      if (disk && writer !== undefined) disk.writer = writer;
      if (disk && resume !== undefined) disk.resumeSeq = Number(resume);
    } else if ((m = /^net eth0 (\S*)/.exec(text))) {
      s.address = m[1];
    } else if (text.startsWith('done')) {
      if (disk) disk.done = true;
      s.done = [...s.disks.values()].every((d) => d.done);
    } else if (text.startsWith('poweroff')) {
      s.poweroff = true;
    } else if (text.startsWith('error')) {
      s.errors.push(text);
    }
  }

  /** The disk a record writer's line names; without one (older kits) it is /dev/vda. */
  #disk(name = '/dev/vda'): { writer?: string; resumeSeq?: number; durableSeq: number; done: boolean } {
    let d = this.state.disks.get(name);
    if (!d) this.state.disks.set(name, (d = { durableSeq: 0, done: false }));
    return d;
  }
}

/** Parses a whole console transcript. */
export function parseConsole(text: string): GuestConsoleState {
  return new ConsoleParser().feed(text.endsWith('\n') ? text : `${text}\n`);
}

export interface WaitOptions {
  timeoutMs?: number;
  pollMs?: number;
  signal?: AbortSignal;
}

/**
 * Follows a serial log file (QEMU `-serial file:PATH`, which may not exist yet) until `until`
 * holds for the state parsed so far, and returns that state. Fails with guest-console-timeout
 * (quoting the log's tail) when it does not hold in time, and at once on a `REBOUND error` line.
 */
export async function waitForConsole(logPath: string, until: (s: GuestConsoleState) => boolean, opts: WaitOptions = {}): Promise<GuestConsoleState> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  const parser = new ConsoleParser();
  let offset = 0;
  let tail = '';
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    opts.signal?.throwIfAborted();
    const fh = await open(logPath, 'r').catch(() => undefined);
    if (fh) {
      try {
        for (;;) {
          const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
          if (bytesRead === 0) break;
          offset += bytesRead;
          const text = buf.toString('latin1', 0, bytesRead);
          tail = (tail + text).slice(-2000);
          parser.feed(text);
          if (until(parser.state)) return parser.state;
        }
      } finally {
        await fh.close();
      }
    }
    if (until(parser.state)) return parser.state;
    if (parser.state.errors.length > 0) {
      throw new ReboundError('unavailable', 'guest-workload-failed', `The guest's workload reported an error: ${parser.state.errors.join('; ')}.`, {
        hint: `The console log ${logPath} has the whole story.`,
        details: { log: logPath },
      });
    }
    if (Date.now() > deadline) {
      throw new ReboundError('unavailable', 'guest-console-timeout', `The guest's console (${logPath}) did not show what was awaited within ${opts.timeoutMs ?? 60_000} ms. Its last lines:\n${tail.split('\n').slice(-15).join('\n')}`, {
        hint: 'Check that QEMU is running and was started with the guest kit (var/guest) and this serial log.',
        details: { log: logPath },
      });
    }
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 100));
  }
}
