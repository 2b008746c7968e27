// Which SQL database a store runs on. Almost all code is dialect-free Kysely; the few places
// that differ (row locking, column types in migrations) branch on this.
export type Dialect = 'sqlite' | 'postgres';
