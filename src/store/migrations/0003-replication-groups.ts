// Replication groups (multi-VM consistency): the group points an agent takes at one barrier
// across every machine of a group, and which member point belongs to which group point. A
// member's recovery point carries its group point's id (recovery_points.group_point_id) once both
// are known, whichever the vault learns first: the agent records the group point when it opens
// the members' points, the master target records each member point when every disk holds it.
import type { Kysely } from 'kysely';

import type { Dialect } from '../dialect.ts';

export function up(dialect: Dialect) {
  const ms = dialect === 'postgres' ? 'bigint' : 'integer';
  return async (db: Kysely<unknown>): Promise<void> => {
    await db.schema
      .createTable('group_points')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('group_name', 'text', (c) => c.notNull())
      .addColumn('seq', ms, (c) => c.notNull())
      .addColumn('taken_at', ms, (c) => c.notNull())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('pause_ms', 'integer')
      .addColumn('created_at', ms, (c) => c.notNull())
      .execute();
    await db.schema.createIndex('group_points_group').on('group_points').columns(['group_name', 'taken_at']).execute();

    await db.schema
      .createTable('group_point_members')
      .addColumn('point_id', 'text', (c) => c.primaryKey())
      .addColumn('group_point_id', 'text', (c) => c.notNull().references('group_points.id').onDelete('cascade'))
      .addColumn('item_id', 'text', (c) => c.notNull().references('protected_items.id').onDelete('cascade'))
      .execute();
    await db.schema.createIndex('group_point_members_gp').on('group_point_members').columns(['group_point_id']).execute();
    await db.schema.createIndex('points_group_point').on('recovery_points').columns(['group_point_id']).execute();
    await db.schema.createIndex('items_group').on('protected_items').columns(['group_name']).execute();
  };
}
