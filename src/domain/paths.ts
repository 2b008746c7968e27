// Confinement of paths to a root, as plain string logic (no I/O: callers resolve symlinks with
// realpath first when the path exists). Every path Rebound writes stays under its site's root.
import { isAbsolute, relative, resolve } from 'node:path';

/** True when `path` lies strictly inside `root` (not the root itself), after normalising both. */
export function isInside(root: string, path: string): boolean {
  const rel = relative(resolve(root), resolve(root, path));
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}
