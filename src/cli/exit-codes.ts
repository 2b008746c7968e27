// The CLI's exit codes, one place for main.ts, the help epilog and docs/cli.md to agree on.
// Scripts branch on these, so they are part of the interface contract: add, never renumber.

export const EXIT = {
  ok: 0,
  jobFailed: 1, // the followed job failed or was cancelled
  usage: 2, // bad arguments, or the API said 400
  auth: 3, // 401 / 403
  notFound: 4, // 404
  conflict: 5, // 409: the current state does not allow it
  other: 6, // server unreachable, 5xx, anything else
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export function exitCodeForStatus(status: number): ExitCode {
  if (status === 400 || status === 422) return EXIT.usage;
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  return EXIT.other;
}

export const EXIT_CODES_HELP = `Exit codes:
  0  ok
  1  the job failed or was cancelled (--wait, job wait)
  2  usage error or bad input (HTTP 400)
  3  not authenticated or not allowed (HTTP 401/403)
  4  not found (HTTP 404)
  5  the current state does not allow it (HTTP 409)
  6  server unreachable or another error`;
