// /events (health and state changes, newest first, `?item=` to narrow) and /audit (admin: every
// state-changing call). Both page by their integer id, newest first.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { parseJson } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { decodeNumberCursor, pageLimit, toPage } from '../pagination.ts';
import { AuditEntry, Event, Page, PageQuery, errors } from '../schemas.ts';

const EventQuery = Type.Object({ ...PageQuery, item: Type.Optional(Type.String({ maxLength: 100 })), kind: Type.Optional(Type.String({ maxLength: 100 })) });
const AuditQuery = Type.Object({ ...PageQuery, actor: Type.Optional(Type.String({ maxLength: 200 })) });

export function logRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;

  app.get('/events', { schema: { tags: ['events'], querystring: EventQuery, response: { 200: Page(Event), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as Static<typeof EventQuery>;
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('events').selectAll();
    if (q.item !== undefined) sel = sel.where('item_id', '=', q.item);
    if (q.kind !== undefined) sel = sel.where('kind', '=', q.kind);
    if (q.cursor) sel = sel.where('id', '<', decodeNumberCursor(q.cursor));
    const rows = await sel.orderBy('id', 'desc').limit(limit + 1).execute();
    return toPage(rows, limit, (r) => Number(r.id), (r) => ({ id: Number(r.id), at: r.at, kind: r.kind, item: r.item_id, message: r.message, data: parseJson<unknown>(r.data, null) }));
  });

  app.get('/audit', { schema: { tags: ['audit'], querystring: AuditQuery, response: { 200: Page(AuditEntry), ...errors(400, 401, 403) } } }, async (req) => {
    const q = req.query as Static<typeof AuditQuery>;
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('audit').selectAll();
    if (q.actor !== undefined) sel = sel.where('actor', '=', q.actor);
    if (q.cursor) sel = sel.where('id', '<', decodeNumberCursor(q.cursor));
    const rows = await sel.orderBy('id', 'desc').limit(limit + 1).execute();
    return toPage(rows, limit, (r) => Number(r.id), (r) => ({
      id: Number(r.id),
      at: r.at,
      actor: r.actor,
      action: r.action,
      target: r.target,
      status: r.status,
      detail: parseJson<Record<string, unknown> | null>(r.detail, null),
    }));
  });
}
