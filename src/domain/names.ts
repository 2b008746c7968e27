// Names of sites, hosts, machines, policies, plans, groups and tokens: they are keys in URLs
// and CLI arguments, so they stay short, lower-case and shell-safe. Upper case is refused rather
// than folded, so that 'Web-01' and 'web-01' can never be two spellings of one machine in scripts.
import { invalid } from './errors.ts';

export const NAME_MAX = 63;
const FORM = /^[a-z0-9][a-z0-9._-]*$/;

/** Returns the reason `name` is not a valid name, or null when it is. */
export function nameProblem(name: string): string | null {
  if (name.length === 0) return 'it is empty';
  if (name.length > NAME_MAX) return `it is ${name.length} characters long (at most ${NAME_MAX})`;
  if (/[A-Z]/.test(name) && FORM.test(name.toLowerCase())) return `it has upper-case letters (use '${name.toLowerCase()}')`;
  if (!/^[a-z0-9]/.test(name)) return 'it must start with a lower-case letter or a digit';
  if (!FORM.test(name)) return "it may only contain lower-case letters, digits, '.', '_' and '-'";
  if (name.includes('..')) return "it may not contain '..'";
  return null;
}

/** Throws ReboundError('invalid', 'invalid-name') unless `name` is valid. `what` = 'site', 'machine'… */
export function validateName(name: string, what = 'name'): string {
  const problem = nameProblem(name);
  if (problem !== null) {
    throw invalid('invalid-name', `${what} name '${name}' is not valid: ${problem}.`, {
      hint: `names are 1-${NAME_MAX} characters: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit.`,
      details: { field: what, value: name },
    });
  }
  return name;
}
