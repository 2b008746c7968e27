// Forward-only migrations, in order. Never edit a released migration: add the next one.
import type { Migration, MigrationProvider } from 'kysely/migration';
import type { Dialect } from '../dialect.ts';
import { up as initial } from './0001-initial.ts';
import { up as components } from './0002-components.ts';
import { up as groups } from './0003-replication-groups.ts';

export function migrations(dialect: Dialect): MigrationProvider {
  const list: Record<string, Migration> = {
    '0001-initial': { up: initial(dialect) },
    '0002-components': { up: components(dialect) },
    '0003-replication-groups': { up: groups(dialect) },
  };
  return { getMigrations: () => Promise.resolve(list) };
}
