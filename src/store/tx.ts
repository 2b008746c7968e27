// Transactions that behave the same on both dialects. On SQLite a plain BEGIN is deferred: a
// transaction that reads and then writes can fail at once with SQLITE_BUSY when another process
// wrote in between (WAL cannot upgrade a stale snapshot, and the busy timeout does not apply).
// BEGIN IMMEDIATE takes the write lock up front, waiting out other writers under the busy timeout,
// so read-modify-write code is safe. On PostgreSQL it is an ordinary READ COMMITTED transaction;
// lock what you read with FOR UPDATE where it matters.
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { Store } from './open.ts';
import type { Database } from './schema.ts';

export type Tx = Kysely<Database>;

export async function transaction<T>(store: Pick<Store, 'db' | 'dialect'>, fn: (tx: Tx) => Promise<T>): Promise<T> {
  if (store.dialect === 'postgres') return await store.db.transaction().execute(fn);
  return await store.db.connection().execute(async (conn) => {
    await sql`begin immediate`.execute(conn);
    let result: T;
    try {
      result = await fn(conn);
    } catch (err) {
      await sql`rollback`.execute(conn).catch(() => undefined);
      throw err;
    }
    await sql`commit`.execute(conn);
    return result;
  });
}
