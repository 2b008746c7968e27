// /items: protected items (a machine under replication) with their lifecycle state, RPO health
// and failover details. Listed by id with keyset pages so a walk over 10,000 items stays an
// index range scan per page; `state` and `health` filters use their (column, id) indexes.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { notFound } from '../../domain/errors.ts';
import { ITEM_STATES } from '../../domain/model.ts';
import { now } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Item, Page, PageQuery, errors } from '../schemas.ts';
import { itemView } from '../views.ts';

const ListQuery = Type.Object({
  ...PageQuery,
  state: Type.Optional(Type.Union(ITEM_STATES.map((s) => Type.Literal(s)))),
  health: Type.Optional(Type.Union([Type.Literal('normal'), Type.Literal('warning'), Type.Literal('critical')])),
});
const MachineParam = Type.Object({ machine: Type.String({ minLength: 1, maxLength: 200 }) });

export function itemRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;
  const items = () =>
    db
      .selectFrom('protected_items as i')
      .innerJoin('machines as m', 'm.id', 'i.machine_id')
      .innerJoin('sites as s', 's.id', 'i.active_site_id')
      .selectAll('i')
      .select(['m.name as machine', 's.name as active_site']);

  app.get('/items', { schema: { tags: ['items'], querystring: ListQuery, response: { 200: Page(Item), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as Static<typeof ListQuery>;
    const limit = pageLimit(q.limit);
    let sel = items();
    if (q.state !== undefined) sel = sel.where('i.state', '=', q.state);
    if (q.health !== undefined) sel = sel.where('i.health', '=', q.health);
    if (q.cursor) sel = sel.where('i.id', '>', decodeTextCursor(q.cursor));
    const rows = await sel.orderBy('i.id').limit(limit + 1).execute();
    const t = now();
    return toPage(rows, limit, (r) => r.id, (r) => itemView(r, t));
  });

  app.get('/items/:machine', { schema: { tags: ['items'], params: MachineParam, response: { 200: Item, ...errors(400, 401, 404) } } }, async (req) => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const row = (await items().where('m.name', '=', machine).executeTakeFirst()) ?? (await items().where('i.id', '=', machine).executeTakeFirst());
    if (!row) throw notFound('item.not-found', `machine '${machine}' is not protected (or does not exist): protect it with rebound protect ${machine}.`);
    return itemView(row, now());
  });
}
