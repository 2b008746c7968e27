// The REST client the CLI speaks through (docs/api.md): base URL and bearer token resolved from
// flags, environment and the embedded default's token file; JSON in and out; API errors turned
// into CliErrors carrying the API's message, hint and the documented exit code.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { CliError } from './cli-error.ts';
import { EXIT, exitCodeForStatus } from './exit-codes.ts';

export const DEFAULT_URL = 'http://127.0.0.1:7480';
/** The embedded default's data dir (rebound serve without --data) keeps the first admin token here. */
export const DEFAULT_TOKEN_FILE = '.rebound/admin.token';

export interface ConnectionOptions {
  url?: string;
  token?: string;
}

export interface Connection {
  url: string;
  token: string | undefined;
  /** Where the token came from, for error hints. */
  tokenSource: 'flag' | 'env' | 'file' | 'none';
}

export function resolveConnection(opts: ConnectionOptions, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Connection {
  const url = (opts.url ?? env.REBOUND_URL ?? DEFAULT_URL).replace(/\/+$/, '');
  if (opts.token) return { url, token: opts.token, tokenSource: 'flag' };
  if (env.REBOUND_TOKEN) return { url, token: env.REBOUND_TOKEN, tokenSource: 'env' };
  const file = resolve(cwd, DEFAULT_TOKEN_FILE);
  if (existsSync(file)) {
    const token = readFileSync(file, 'utf8').trim();
    if (token) return { url, token, tokenSource: 'file' };
  }
  return { url, token: undefined, tokenSource: 'none' };
}

export interface ApiErrorBody {
  error: { code: string; message: string; hint?: string };
}

function isApiErrorBody(value: unknown): value is ApiErrorBody {
  if (typeof value !== 'object' || value === null) return false;
  const e = (value as { error?: unknown }).error;
  return typeof e === 'object' && e !== null && typeof (e as { message?: unknown }).message === 'string';
}

export class ApiClient {
  readonly conn: Connection;

  constructor(conn: Connection) {
    this.conn = conn;
  }

  get<T = unknown>(path: string, query?: Record<string, string | number | undefined>): Promise<T> {
    return this.request<T>('GET', withQuery(path, query));
  }
  post<T = unknown>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }
  delete<T = unknown>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /** Follows `next` cursors and returns every item, in the API's list shape. */
  async list<T = unknown>(path: string, query: Record<string, string | number | undefined> = {}): Promise<{ items: T[]; next: null }> {
    const items: T[] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await this.get<{ items?: T[]; next?: string | null } | T[]>(path, { ...query, cursor });
      if (Array.isArray(page)) return { items: page, next: null }; // a bare array: not paginated
      items.push(...(page.items ?? []));
      if (!page.next) return { items, next: null };
      cursor = page.next;
    }
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = `${this.conn.url}/api/v1${path}`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.conn.token) headers.authorization = `Bearer ${this.conn.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      const reason = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(`cannot reach the Rebound server at ${this.conn.url} (${reason?.code ?? reason?.message ?? String(err)}).`, {
        exitCode: EXIT.other,
        code: 'unreachable',
        hint: 'start it with `rebound serve`, or point --url / REBOUND_URL at a running server.',
      });
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (res.ok) return parsed as T;
    throw this.errorFor(res.status, parsed, text);
  }

  private errorFor(status: number, parsed: unknown, text: string): CliError {
    const exitCode = exitCodeForStatus(status);
    if (isApiErrorBody(parsed)) {
      let hint = parsed.error.hint;
      if (status === 401 && hint === undefined) hint = this.authHint();
      return new CliError(parsed.error.message, { exitCode, hint, code: parsed.error.code, body: parsed });
    }
    const snippet = text.trim().slice(0, 200);
    return new CliError(`the server answered HTTP ${status}${snippet ? `: ${snippet}` : ''}.`, {
      exitCode,
      code: `http-${status}`,
      hint: status === 401 ? this.authHint() : undefined,
    });
  }

  private authHint(): string {
    switch (this.conn.tokenSource) {
      case 'none':
        return 'give a token with --token or REBOUND_TOKEN (rebound serve printed the first admin token and wrote it to DATA/admin.token).';
      case 'file':
        return `the token in ./${DEFAULT_TOKEN_FILE} was refused; give another with --token or REBOUND_TOKEN.`;
      default:
        return `the token from ${this.conn.tokenSource === 'flag' ? '--token' : 'REBOUND_TOKEN'} was refused: check it, or create a new one (rebound token create).`;
    }
  }
}

function withQuery(path: string, query?: Record<string, string | number | undefined>): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') params.set(k, String(v));
  const q = params.toString();
  return q ? `${path}?${q}` : path;
}

/** Path segment for a name or id. */
export const seg = (s: string): string => encodeURIComponent(s);
