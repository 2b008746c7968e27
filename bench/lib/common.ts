// Helpers shared by the bench scripts (a folder, so the harness does not run it as a benchmark):
// figures as "median (min–max, n)", the mode from argv, the commit and load average each section
// reports, CPU time of a process from /proc, and page-cache eviction of one file.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

export const run = promisify(execFile);
export const REPO = resolve(import.meta.dirname, '../..');
export const MiB = 2 ** 20;

export type Mode = 'full' | 'quick' | 'smoke';
export function benchMode(argv = process.argv): Mode {
  return argv.includes('--smoke') ? 'smoke' : argv.includes('--quick') ? 'quick' : 'full';
}

export interface Fig { median: number; min: number; max: number; n: number }
const round = (v: number, digits: number): number => (Number.isFinite(v) ? Number(v.toPrecision(digits)) : v);
/** Median (mean of the middle two for an even count), min, max and count, to `digits` significant digits. */
export function fig(values: number[], digits = 3): Fig {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return { median: round(mid, digits), min: round(s[0] ?? NaN, digits), max: round(s.at(-1) ?? NaN, digits), n: s.length };
}
/** "median (min–max, n)" with a unit. */
export const show = (f: Fig, unit = ''): string => `${f.median}${unit} (${f.min}–${f.max}, n=${f.n})`;
/** Nearest-rank percentile of sorted values. */
export const pct = (sorted: number[], p: number): number => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;

export async function commit(): Promise<string> {
  return run('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).then((r) => r.stdout.trim(), () => 'unknown');
}
export const load = (): number[] => loadavg().map((x) => Math.round(x * 100) / 100);

/** User + system CPU seconds of a live process, and of its waited-for children (/proc/PID/stat). */
export async function cpuSeconds(pid: number): Promise<{ self: number; children: number }> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at ") ".
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const tick = 100; // USER_HZ on Linux
  const n = (i: number): number => Number(f[i - 3] ?? NaN); // field i (1-based) of the full line
  return { self: (n(14) + n(15)) / tick, children: (n(16) + n(17)) / tick };
}

/** Writes a file's dirty pages out and drops it from the page cache, so the next read comes from disk. */
export async function evict(path: string): Promise<void> {
  await run('sync', [path]);
  await run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

