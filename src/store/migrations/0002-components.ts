// Vault settings (the vault's own secrets and CA, one row per key) and the components that
// registered with the vault (agents, process servers, master targets running as their own
// processes), with the certificate each was issued and whether it was revoked.
import type { Kysely } from 'kysely';

import type { Dialect } from '../dialect.ts';

export function up(dialect: Dialect) {
  const ms = dialect === 'postgres' ? 'bigint' : 'integer';
  return async (db: Kysely<unknown>): Promise<void> => {
    await db.schema
      .createTable('settings')
      .addColumn('key', 'text', (c) => c.primaryKey())
      .addColumn('value', 'text', (c) => c.notNull())
      .addColumn('updated_at', ms, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('components')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('role', 'text', (c) => c.notNull())
      .addColumn('site_id', 'text', (c) => c.references('sites.id').onDelete('set null'))
      .addColumn('address', 'text')
      .addColumn('token_id', 'text')
      .addColumn('cert_serial', 'text')
      .addColumn('cert_pem', 'text')
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('registered_at', ms, (c) => c.notNull())
      .addColumn('last_seen_at', ms)
      .addColumn('revoked_at', ms)
      .execute();
    await db.schema.createIndex('components_role').on('components').columns(['role', 'status']).execute();
  };
}
