// Output for people and for scripts. With --json a verb prints the API's JSON as received, one
// document on stdout; without it, aligned tables and short sentences. Errors go to stderr as
// "rebound: <message>" with an optional hint line, so stdout stays parseable either way.
import { formatAge } from '../domain/durations.ts';

export interface Column<T> {
  header: string;
  value: (row: T) => string;
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function table<T>(rows: readonly T[], columns: readonly Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => oneLine(c.value(r))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]?.length ?? 0)));
  const line = (values: readonly string[]) =>
    values.map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ');
}

/** Key/value lines, keys aligned: for `show` verbs. */
export function fields(pairs: readonly [string, string][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${v}`).join('\n');
}

/** An epoch-ms time as a UTC ISO string without milliseconds; '-' when absent. */
export function time(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** An epoch-ms time as an age relative to now: '3m12s ago'. */
export function ago(ms: number | null | undefined, now = Date.now()): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '-';
  return `${formatAge((now - ms) / 1000)} ago`;
}

export const dash = (v: unknown): string => (v === null || v === undefined || v === '' ? '-' : String(v));

export interface Printer {
  json: boolean;
  out(text: string): void;
  err(text: string): void;
}

export function makePrinter(json: boolean): Printer {
  return {
    json,
    out: (text) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`),
    err: (text) => process.stderr.write(text.endsWith('\n') ? text : `${text}\n`),
  };
}

/** Prints `data` as JSON with --json, else the human rendering. */
export function emit(p: Printer, data: unknown, human: () => string): void {
  if (p.json) p.out(JSON.stringify(data, null, 2));
  else p.out(human());
}
