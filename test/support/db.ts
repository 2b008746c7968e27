// Fresh stores for tests, one per dialect: a SQLite file in a temp dir, and a new database on the
// suite's throwaway PostgreSQL (REBOUND_TEST_PG_URL), or on a cluster started for this file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/open.ts';
import { startPostgres } from './postgres.ts';
import type { ThrowawayPostgres } from './postgres.ts';

export type DialectName = 'sqlite' | 'postgres';
export const dialects: DialectName[] = ['sqlite', 'postgres'];

let ownCluster: ThrowawayPostgres | undefined;
let counter = 0;

/** A PostgreSQL server URL for this test process (the suite's, or one started here). */
export async function postgresServerUrl(): Promise<string> {
  const env = process.env['REBOUND_TEST_PG_URL'];
  if (env) return env;
  if (!ownCluster) {
    ownCluster = await startPostgres(mkdtempSync(path.join(tmpdir(), 'rebound-pg-')));
    process.once('exit', () => ownCluster?.stop());
  }
  return ownCluster.url;
}

/** Creates an empty database and returns its URL. */
export async function freshPostgresDatabase(): Promise<string> {
  const server = await postgresServerUrl();
  const name = `t_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  const client = new pg.Client({ connectionString: server });
  await client.connect();
  try {
    await client.query(`create database ${name}`);
  } finally {
    await client.end();
  }
  const u = new URL(server);
  u.pathname = `/${name}`;
  return u.toString();
}

export interface TestStore {
  store: Store;
  /** SQLite: the data dir; PostgreSQL: the database URL. Open it again with reopen(). */
  location: { dataDir?: string; url?: string };
  reopen(): Promise<Store>;
  cleanup(): Promise<void>;
}

export async function freshStore(dialect: DialectName): Promise<TestStore> {
  if (dialect === 'sqlite') {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'rebound-store-'));
    const store = await openStore({ dataDir });
    return {
      store,
      location: { dataDir },
      reopen: () => openStore({ dataDir }),
      cleanup: async () => {
        await store.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  const url = await freshPostgresDatabase();
  const store = await openStore({ url });
  return { store, location: { url }, reopen: () => openStore({ url }), cleanup: () => store.close() };
}

/** Runs `fn` on a fresh store of the dialect and cleans up after it, even when it throws. */
export async function withStore<T>(dialect: DialectName, fn: (ts: TestStore) => Promise<T>): Promise<T> {
  const ts = await freshStore(dialect);
  try {
    return await fn(ts);
  } finally {
    await ts.cleanup();
  }
}

/** Runs `fn` once per dialect (SQLite, then PostgreSQL), each on a fresh store. */
export async function withStores(fn: (ts: TestStore, dialect: DialectName) => Promise<void>): Promise<void> {
  for (const d of dialects) await withStore(d, (ts) => fn(ts, d));
}
