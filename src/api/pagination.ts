// Opaque cursors for keyset pagination: the cursor wraps the last row's sort key, so a page costs
// an index range scan however deep the walk goes, and rows added meanwhile do not shift pages.
import { invalid } from '../domain/errors.ts';

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 500;

export function pageLimit(limit: number | undefined): number {
  return Math.min(Math.max(limit ?? DEFAULT_LIMIT, 1), MAX_LIMIT);
}

export function encodeCursor(key: string | number): string {
  return Buffer.from(JSON.stringify({ k: key })).toString('base64url');
}

const badCursor = () => invalid('bad-cursor', 'the cursor is not one this server gave out.', { hint: 'start the list again without a cursor.' });

export function decodeTextCursor(cursor: string): string {
  const k = decode(cursor);
  if (typeof k !== 'string') throw badCursor();
  return k;
}

export function decodeNumberCursor(cursor: string): number {
  const k = decode(cursor);
  if (typeof k !== 'number' || !Number.isSafeInteger(k)) throw badCursor();
  return k;
}

function decode(cursor: string): unknown {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && 'k' in v) return (v as { k: unknown }).k;
  } catch {
    // fall through
  }
  throw badCursor();
}

/** Splits rows fetched with limit + 1 into a page and the next cursor. */
export function toPage<R, V>(rows: R[], limit: number, key: (r: R) => string | number, view: (r: R) => V): { items: V[]; next: string | null } {
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return { items: page.map(view), next: rows.length > limit && last !== undefined ? encodeCursor(key(last)) : null };
}
