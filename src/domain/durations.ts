// Durations as people write them in policies and flags: a whole number and one unit,
// '1s', '30s', '15m', '4h', '24h', '7d'. Parsed to whole seconds; formatted back to the largest
// unit that divides exactly, so formatDuration(parseDuration(x)) is the canonical form of x.
import { invalid } from './errors.ts';

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86_400 } as const;
type Unit = keyof typeof UNIT_SECONDS;

const FORM = /^(\d{1,9})([smhd])$/;
const ACCEPTED = "a whole number followed by s, m, h or d, such as '30s', '15m', '4h' or '7d'";

/** Parses '30s' → 30. `what` names the field in the refusal (e.g. 'frequency'). */
export function parseDuration(text: string, what = 'duration'): number {
  const m = FORM.exec(text.trim());
  if (!m) {
    throw invalid('invalid-duration', `${what} '${text}' is not a duration: write ${ACCEPTED}.`, {
      details: { field: what, value: text },
    });
  }
  return Number(m[1]) * UNIT_SECONDS[m[2] as Unit];
}

/** Formats whole seconds in the largest exact unit: 90 → '90s', 3600 → '1h', 0 → '0s'. */
export function formatDuration(seconds: number): string {
  if (!Number.isInteger(seconds) || seconds < 0) {
    throw invalid('invalid-duration', `cannot format ${seconds} as a duration: it must be a whole number of seconds, 0 or more.`);
  }
  if (seconds === 0) return '0s';
  for (const unit of ['d', 'h', 'm'] as const) {
    const size = UNIT_SECONDS[unit];
    if (seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/** For people: an age like 75 s → '1m15s', 0 → '0s'; rounds to whole seconds. */
export function formatAge(seconds: number): string {
  let rest = Math.max(0, Math.round(seconds));
  if (rest === 0) return '0s';
  const parts: string[] = [];
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNIT_SECONDS[unit];
    const n = Math.floor(rest / size);
    if (n > 0) parts.push(`${n}${unit}`);
    rest -= n * size;
    if (parts.length === 2) break;
  }
  return parts.join('');
}
