// Checks on arguments the CLI can make before calling the server, so that a typo is refused
// with the same sentence the API would give, exit code 2, and no round trip.
import { CliError } from '../cli-error.ts';
import { EXIT } from '../exit-codes.ts';
import { ReboundError } from '../../domain/errors.ts';
import { validateName } from '../../domain/names.ts';

/** Runs a domain validation; its ReboundError becomes a usage CliError. */
export function checked<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof ReboundError) throw new CliError(err.message, { exitCode: EXIT.usage, hint: err.hint, code: err.code });
    throw err;
  }
}

export function validName(name: string, what: string): string {
  return checked(() => validateName(name, what));
}

export function parseJsonOption(text: string, flag: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CliError(`${flag} must be a JSON object, such as '{"key":"value"}'.`, { exitCode: EXIT.usage, code: 'invalid-json' });
  }
  return value as Record<string, unknown>;
}

/** Commander collector for repeatable options (--disk A --disk B). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
