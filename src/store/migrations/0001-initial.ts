// The vault's first schema (see ../schema.ts). Valid on SQLite and PostgreSQL: times are
// 64-bit integers (bigint on pg), ids text, structured values JSON text.
import type { Kysely } from 'kysely';

import type { Dialect } from '../dialect.ts';

export function up(dialect: Dialect) {
  const ms = dialect === 'postgres' ? 'bigint' : 'integer';
  return async (db: Kysely<unknown>): Promise<void> => {

    await db.schema
      .createTable('sites')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('provider', 'text', (c) => c.notNull())
      .addColumn('root', 'text', (c) => c.notNull())
      .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
      .addColumn('created_at', ms, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('hosts')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('site_id', 'text', (c) => c.notNull().references('sites.id').onDelete('cascade'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('address', 'text')
      .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
      .addColumn('created_at', ms, (c) => c.notNull())
      .addUniqueConstraint('hosts_site_name', ['site_id', 'name'])
      .execute();

    await db.schema
      .createTable('containers')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('site_id', 'text', (c) => c.notNull().references('sites.id').onDelete('cascade'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('created_at', ms, (c) => c.notNull())
      .addUniqueConstraint('containers_site_name', ['site_id', 'name'])
      .execute();

    await db.schema
      .createTable('policies')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('frequency_s', 'integer', (c) => c.notNull())
      .addColumn('retention_s', 'integer', (c) => c.notNull())
      .addColumn('app_consistent_s', 'integer', (c) => c.notNull())
      .addColumn('compression', 'text', (c) => c.notNull())
      .addColumn('encryption', 'text', (c) => c.notNull())
      .addColumn('bandwidth_bps', ms, (c) => c.notNull())
      .addColumn('initial_start', 'text', (c) => c.notNull())
      .addColumn('created_at', ms, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('pairings')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('primary_site_id', 'text', (c) => c.notNull().references('sites.id'))
      .addColumn('recovery_site_id', 'text', (c) => c.notNull().references('sites.id'))
      .addColumn('policy_id', 'text', (c) => c.notNull().references('policies.id'))
      .addColumn('created_at', ms, (c) => c.notNull())
      .addUniqueConstraint('pairings_sites', ['primary_site_id', 'recovery_site_id'])
      .execute();

    await db.schema
      .createTable('machines')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('site_id', 'text', (c) => c.notNull().references('sites.id'))
      .addColumn('host_id', 'text', (c) => c.references('hosts.id'))
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('disks', 'text', (c) => c.notNull().defaultTo('[]'))
      .addColumn('config', 'text', (c) => c.notNull().defaultTo('{}'))
      .addColumn('created_at', ms, (c) => c.notNull())
      .execute();
    await db.schema.createIndex('machines_site').on('machines').column('site_id').execute();

    await db.schema
      .createTable('protected_items')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('machine_id', 'text', (c) => c.notNull().unique().references('machines.id'))
      .addColumn('pairing_id', 'text', (c) => c.notNull().references('pairings.id'))
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('direction', 'text', (c) => c.notNull())
      .addColumn('active_site_id', 'text', (c) => c.notNull().references('sites.id'))
      .addColumn('group_name', 'text')
      .addColumn('health', 'text', (c) => c.notNull())
      .addColumn('last_point_at', ms)
      .addColumn('details', 'text', (c) => c.notNull().defaultTo('{}'))
      .addColumn('version', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('created_at', ms, (c) => c.notNull())
      .addColumn('updated_at', ms, (c) => c.notNull())
      .execute();
    await db.schema.createIndex('items_state').on('protected_items').columns(['state', 'id']).execute();
    await db.schema.createIndex('items_health').on('protected_items').columns(['health', 'id']).execute();

    await db.schema
      .createTable('recovery_points')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('item_id', 'text', (c) => c.notNull().references('protected_items.id').onDelete('cascade'))
      .addColumn('taken_at', ms, (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('group_point_id', 'text')
      .addColumn('status', 'text', (c) => c.notNull())
      .addColumn('disks', 'text', (c) => c.notNull().defaultTo('[]'))
      .addColumn('created_at', ms, (c) => c.notNull())
      .execute();
    await db.schema.createIndex('points_item_time').on('recovery_points').columns(['item_id', 'taken_at']).execute();

    await db.schema
      .createTable('recovery_plans')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull().unique())
      .addColumn('spec', 'text', (c) => c.notNull())
      .addColumn('created_at', ms, (c) => c.notNull())
      .addColumn('updated_at', ms, (c) => c.notNull())
      .execute();

    await db.schema
      .createTable('jobs')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('target', 'text', (c) => c.notNull().defaultTo(''))
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('params', 'text', (c) => c.notNull())
      .addColumn('result', 'text')
      .addColumn('error', 'text')
      .addColumn('progress', 'real', (c) => c.notNull().defaultTo(0))
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('max_attempts', 'integer', (c) => c.notNull().defaultTo(1))
      .addColumn('run_after', ms, (c) => c.notNull())
      .addColumn('locked_by', 'text')
      .addColumn('locked_at', ms)
      .addColumn('lease_expires_at', ms)
      .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('idempotency_key', 'text', (c) => c.unique())
      .addColumn('created_by', 'text', (c) => c.notNull())
      .addColumn('created_at', ms, (c) => c.notNull())
      .addColumn('started_at', ms)
      .addColumn('finished_at', ms)
      .addColumn('updated_at', ms, (c) => c.notNull())
      .execute();
    await db.schema.createIndex('jobs_claim').on('jobs').columns(['state', 'run_after']).execute();
    await db.schema.createIndex('jobs_created').on('jobs').columns(['created_at', 'id']).execute();
    await db.schema.createIndex('jobs_target').on('jobs').columns(['target', 'created_at']).execute();

    await db.schema
      .createTable('tasks')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id').onDelete('cascade'))
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('progress', 'real', (c) => c.notNull().defaultTo(0))
      .addColumn('checkpoint', 'text')
      .addColumn('result', 'text')
      .addColumn('error', 'text')
      .addColumn('started_at', ms)
      .addColumn('finished_at', ms)
      .addColumn('resumed_at', ms)
      .addUniqueConstraint('tasks_job_seq', ['job_id', 'seq'])
      .execute();

    const auto = (t: Parameters<typeof db.schema.createTable>[0]) => {
      const b = db.schema.createTable(t);
      return dialect === 'postgres'
        ? b.addColumn('id', 'bigserial', (c) => c.primaryKey())
        : b.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
    };

    await auto('job_log')
      .addColumn('job_id', 'text', (c) => c.notNull().references('jobs.id').onDelete('cascade'))
      .addColumn('task_seq', 'integer')
      .addColumn('at', ms, (c) => c.notNull())
      .addColumn('level', 'text', (c) => c.notNull())
      .addColumn('message', 'text', (c) => c.notNull())
      .execute();
    await db.schema.createIndex('job_log_job').on('job_log').columns(['job_id', 'id']).execute();

    await db.schema
      .createTable('tokens')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('role', 'text', (c) => c.notNull())
      .addColumn('hash', 'text', (c) => c.notNull().unique())
      .addColumn('created_at', ms, (c) => c.notNull())
      .addColumn('expires_at', ms)
      .addColumn('revoked_at', ms)
      .addColumn('last_used_at', ms)
      .execute();

    await auto('audit')
      .addColumn('at', ms, (c) => c.notNull())
      .addColumn('actor', 'text', (c) => c.notNull())
      .addColumn('action', 'text', (c) => c.notNull())
      .addColumn('target', 'text', (c) => c.notNull())
      .addColumn('status', 'integer', (c) => c.notNull())
      .addColumn('detail', 'text')
      .execute();

    await auto('events')
      .addColumn('at', ms, (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('item_id', 'text')
      .addColumn('message', 'text', (c) => c.notNull())
      .addColumn('data', 'text')
      .execute();
  };
}
