// The vault's settings table: small JSON values by key. `getOrCreateSetting` is safe when two
// vault servers start at once on one PostgreSQL: the insert that loses the race reads the winner's.
import type { Store } from './open.ts';
import { now } from './open.ts';

export async function getSetting<T>(store: Store, key: string): Promise<T | undefined> {
  const row = await store.db.selectFrom('settings').select('value').where('key', '=', key).executeTakeFirst();
  return row ? (JSON.parse(row.value) as T) : undefined;
}

export async function putSetting(store: Store, key: string, value: unknown): Promise<void> {
  const v = JSON.stringify(value);
  const t = now();
  await store.db
    .insertInto('settings')
    .values({ key, value: v, updated_at: t })
    .onConflict((oc) => oc.column('key').doUpdateSet({ value: v, updated_at: t }))
    .execute();
}

export async function getOrCreateSetting<T>(store: Store, key: string, create: () => T | Promise<T>): Promise<T> {
  const have = await getSetting<T>(store, key);
  if (have !== undefined) return have;
  const value = await create();
  await store.db
    .insertInto('settings')
    .values({ key, value: JSON.stringify(value), updated_at: now() })
    .onConflict((oc) => oc.column('key').doNothing())
    .execute();
  return (await getSetting<T>(store, key)) as T;
}
