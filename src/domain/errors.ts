// The error taxonomy every layer speaks. A ReboundError carries a stable `code` scripts can
// match on, a plain sentence for people (what was wrong and what to do), and a `kind` the API
// maps to an HTTP status. Anything else thrown is normalised to an internal error.

export type ErrorKind =
  | 'invalid' // 400: the input is wrong
  | 'unauthenticated' // 401: no or bad token
  | 'forbidden' // 403: the token's role does not allow it
  | 'not-found' // 404
  | 'conflict' // 409: the current state does not allow the action
  | 'unavailable' // 503: a dependency is down; try again
  | 'internal'; // 500: a bug

export interface ReboundErrorOptions {
  /** What to do next, when the message alone does not say it. */
  hint?: string;
  /** Machine-readable details (field names, states); never secrets. */
  details?: Record<string, unknown>;
  /** Whether retrying the same operation may succeed (used by the job engine's retry policy). */
  retryable?: boolean;
  cause?: unknown;
}

export class ReboundError extends Error {
  readonly code: string;
  readonly kind: ErrorKind;
  readonly hint: string | undefined;
  readonly details: Record<string, unknown> | undefined;
  readonly retryable: boolean;

  constructor(kind: ErrorKind, code: string, message: string, opts: ReboundErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ReboundError';
    this.kind = kind;
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
    this.retryable = opts.retryable ?? kind === 'unavailable';
  }
}

export const invalid = (code: string, message: string, opts?: ReboundErrorOptions): ReboundError =>
  new ReboundError('invalid', code, message, opts);
export const notFound = (code: string, message: string, opts?: ReboundErrorOptions): ReboundError =>
  new ReboundError('not-found', code, message, opts);
export const conflict = (code: string, message: string, opts?: ReboundErrorOptions): ReboundError =>
  new ReboundError('conflict', code, message, opts);

export const httpStatusOf: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  unavailable: 503,
  internal: 500,
};

/** Normalises anything thrown into a ReboundError (unknown errors become `internal`). */
export function toReboundError(err: unknown): ReboundError {
  if (err instanceof ReboundError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ReboundError('internal', 'internal', message, { cause: err });
}
