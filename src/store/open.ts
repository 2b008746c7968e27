// Opens the vault's store: a SQLite file in the data directory (the embedded default) or a
// PostgreSQL database (scale-out), behind one Kysely instance, migrated to the latest schema.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { Logger } from 'pino';
import { ReboundError } from '../domain/errors.ts';
import type { Dialect } from './dialect.ts';
import { migrations } from './migrations/index.ts';
import { NodeSqliteDatabase } from './node-sqlite-adapter.ts';
import type { Database } from './schema.ts';

export { newId, now, parseJson, toJson } from './ids.ts';
export { transaction } from './tx.ts';
export type { Tx } from './tx.ts';

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  /** Where it lives, without credentials (for logs and /healthz). */
  describe: string;
  close(): Promise<void>;
}

export interface OpenStoreOptions {
  /** `postgres://…` for PostgreSQL; otherwise ignored. */
  url?: string | undefined;
  /** Directory for the SQLite file (`vault.db`) when no PostgreSQL URL is given. */
  dataDir?: string | undefined;
  /** Connections in the PostgreSQL pool. */
  poolSize?: number;
  /** Gets one line per migration applied. */
  logger?: Logger | undefined;
}

// BIGINT (int8) columns hold epoch milliseconds, well inside 2^53: parse them as numbers.
pg.types.setTypeParser(20, (v) => Number(v));

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable url)';
  }
}

export async function openStore(opts: OpenStoreOptions): Promise<Store> {
  const url = opts.url;
  let db: Kysely<Database>;
  let dialect: Dialect;
  let describe: string;
  if (url !== undefined && /^postgres(ql)?:\/\//.test(url)) {
    dialect = 'postgres';
    describe = redact(url);
    const pool = new pg.Pool({ connectionString: url, max: opts.poolSize ?? 10 });
    // An idle connection that breaks (server restart, network cut) is dropped by the pool; without
    // a listener its 'error' event would take the whole process down. The next query reconnects.
    pool.on('error', (err) => opts.logger?.warn({ err }, 'PostgreSQL connection lost; the pool will reconnect'));
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    try {
      await db.selectNoFrom((eb) => eb.lit(1).as('one')).execute();
    } catch (err) {
      await db.destroy();
      throw new ReboundError('unavailable', 'store.unreachable', `cannot reach PostgreSQL at ${describe}: ${(err as Error).message}`, {
        hint: 'check that the server runs and the URL (host, port, user, database) is right',
        cause: err,
      });
    }
  } else if (url !== undefined && url !== '') {
    throw new ReboundError('invalid', 'store.bad-url', `'${url}' is not a PostgreSQL URL`, {
      hint: 'use --db postgres://USER@HOST:PORT/DB, or leave --db out to use the SQLite file in the data directory',
    });
  } else {
    dialect = 'sqlite';
    const dir = path.resolve(opts.dataDir ?? '.rebound');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'vault.db');
    describe = file;
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: new NodeSqliteDatabase(file) }) });
  }
  try {
    await migrate(db, dialect, opts.logger);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return { db, dialect, describe, close: () => db.destroy() };
}

async function migrate(db: Kysely<Database>, dialect: Dialect, logger: Logger | undefined): Promise<void> {
  const migrator = new Migrator({ db, provider: migrations(dialect), migrationTableName: 'rebound_migration', migrationLockTableName: 'rebound_migration_lock' });
  const { error, results } = await migrator.migrateToLatest();
  for (const r of results ?? []) if (r.status === 'Success') logger?.info({ migration: r.migrationName }, 'store migrated');
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new ReboundError('internal', 'store.migration-failed', `store migration ${failed} failed: ${(error as Error).message}`, { cause: error });
  }
}
