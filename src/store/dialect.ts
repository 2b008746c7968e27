// Which SQL database a store runs on. Almost all code is dialect-free Kysely; the few places
// that differ (row locking, column types in migrations) branch on this. The SQLite driver is
// node:sqlite; node-sqlite-adapter.ts has the measurements against better-sqlite3.
export type Dialect = 'sqlite' | 'postgres';
