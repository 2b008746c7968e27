// An error the CLI reports and exits on: a message for stderr (printed as "rebound: <message>"),
// an optional hint on the next line, and the exit code (exit-codes.ts). API errors and local
// failures (unreachable server, unreadable file) both become one.
import { EXIT } from './exit-codes.ts';
import type { ExitCode } from './exit-codes.ts';

export class CliError extends Error {
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;
  /** Machine-readable code (the API's error code, or a local one such as 'unreachable'). */
  readonly code: string;
  /** The API's error body as received, for --json. */
  readonly body: unknown;

  constructor(message: string, opts: { exitCode?: ExitCode; hint?: string; code?: string; body?: unknown } = {}) {
    super(message);
    this.name = 'CliError';
    this.exitCode = opts.exitCode ?? EXIT.other;
    this.hint = opts.hint;
    this.code = opts.code ?? 'error';
    this.body = opts.body;
  }
}
