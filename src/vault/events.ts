// Health and state events (GET /api/v1/events): one row per change worth telling an operator.
import type { Store } from '../store/open.ts';
import { now } from '../store/open.ts';

export async function recordEvent(store: Pick<Store, 'db'>, e: { kind: string; itemId: string | null; message: string; data?: Record<string, unknown> }): Promise<void> {
  await store.db
    .insertInto('events')
    .values({ at: now(), kind: e.kind, item_id: e.itemId, message: e.message, data: e.data === undefined ? null : JSON.stringify(e.data) })
    .execute();
}
