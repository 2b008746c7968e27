// Calls to the REST API with the session's token. Errors become ApiError with the API's code and
// sentence; a route this server does not have (404 route-not-found) is told apart, so a page can
// say "not available on this server" instead of failing. A 401 signs the user out.
import { loadSession, saveSession } from './session.ts';
import type { ApiErrorBody, Page } from './types.ts';

export const API = '/api/v1';

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly hint: string | undefined;
  constructor(status: number, body: ApiErrorBody) {
    super(body.message);
    this.status = status;
    this.code = body.code;
    this.hint = body.hint;
  }
  /** The server has no such route: the feature has not arrived on this server. */
  get notAvailable(): boolean {
    return this.status === 404 && this.code === 'route-not-found';
  }
}

let onSignedOut: (() => void) | undefined;
export function whenSignedOut(fn: () => void): void {
  onSignedOut = fn;
}

export async function request<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const t = token ?? loadSession()?.token;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (t !== undefined) headers['authorization'] = `Bearer ${t}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(API + path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    const err = (parsed as { error?: ApiErrorBody } | undefined)?.error ?? { code: `http-${res.status}`, message: `the server answered ${res.status} ${res.statusText}.` };
    if (res.status === 401 && token === undefined) {
      saveSession(null);
      onSignedOut?.();
    }
    throw new ApiError(res.status, err);
  }
  return parsed as T;
}

export const get = <T>(path: string): Promise<T> => request<T>('GET', path);
export const post = <T>(path: string, body: unknown = {}): Promise<T> => request<T>('POST', path, body);

/** Every page of a list (the portal shows vaults of a few thousand items at most). */
export async function all<T>(path: string, max = 5000): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | null = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page: Page<T> = await get<Page<T>>(`${path}${sep}limit=500${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
    out.push(...page.items);
    cursor = page.next;
  } while (cursor !== null && out.length < max);
  return out;
}

/** A path segment (machine, site or plan name) for a URL. */
export const seg = (s: string): string => encodeURIComponent(s);

export function describeError(err: unknown): string {
  if (err instanceof ApiError) return err.hint === undefined ? err.message : `${err.message} ${err.hint}`;
  return err instanceof Error ? err.message : String(err);
}
