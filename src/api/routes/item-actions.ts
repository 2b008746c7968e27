// Lifecycle actions on protected items and their recovery points: POST /items/:machine/protect
// (and the failover verbs as they arrive) decide through the lifecycle state machine and answer
// 202 with the queued job; GET /items/:machine/points lists the item's usable and bad points,
// newest first.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { notFound } from '../../domain/errors.ts';
import { validateName } from '../../domain/names.ts';
import { parseJson } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Accepted, Page, PageQuery, RecoveryPoint, errors } from '../schemas.ts';

const MachineParam = Type.Object({ machine: Type.String({ minLength: 1, maxLength: 200 }) });
const ProtectBody = Type.Object({ group: Type.Optional(Type.String({ maxLength: 100 })) }, { additionalProperties: false });

export function itemActionRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const actions = deps.actions;
  if (!actions) return;
  const db = deps.store.db;

  app.post('/items/:machine/protect', { schema: { tags: ['items'], params: MachineParam, body: Type.Optional(ProtectBody), response: { 202: Accepted, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const body = (req.body ?? {}) as Static<typeof ProtectBody>;
    const group = body.group === undefined ? undefined : validateName(body.group, 'replication group');
    const job = await actions.act(machine, { kind: 'protect', ...(group === undefined ? {} : { group }) }, principalOf(req).name);
    return reply.code(202).send({ job });
  });

  app.post('/items/:machine/scrub', { schema: { tags: ['items'], params: MachineParam, response: { 202: Accepted, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const l = await actions.load(machine);
    if (!l.item) throw notFound('item.not-found', `machine '${machine}' is not protected: there is no replica to scrub.`);
    const job = await deps.jobs.enqueue({ kind: 'scrub', target: machine, params: { itemId: l.item.id, machine }, createdBy: principalOf(req).name });
    return reply.code(202).send({ job });
  });

  app.get('/items/:machine/points', { schema: { tags: ['items'], params: MachineParam, querystring: Type.Object(PageQuery), response: { 200: Page(RecoveryPoint), ...errors(400, 401, 404) } } }, async (req) => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const q = req.query as { limit?: number; cursor?: string };
    const cursor = q.cursor ? decodeTextCursor(q.cursor) : undefined;
    const item = await db
      .selectFrom('protected_items as i')
      .innerJoin('machines as m', 'm.id', 'i.machine_id')
      .select('i.id')
      .where('m.name', '=', machine)
      .executeTakeFirst();
    if (!item) throw notFound('item.not-found', `machine '${machine}' is not protected (or does not exist): protect it with rebound protect ${machine}.`);
    const limit = pageLimit(q.limit);
    // Ids are UUIDv7 made when the point was taken, so id order is time order.
    let sel = db.selectFrom('recovery_points').selectAll().where('item_id', '=', item.id).where('status', '!=', 'pruned');
    if (cursor !== undefined) sel = sel.where('id', '<', cursor);
    const rows = await sel.orderBy('id', 'desc').limit(limit + 1).execute();
    return toPage(rows, limit, (r) => r.id, (r) => {
      const d = parseJson<{ seq?: number; disks?: { id: string; sizeBytes: number }[] }>(r.disks, {});
      return {
        id: r.id,
        item: r.item_id,
        takenAt: Number(r.taken_at),
        kind: r.kind,
        status: r.status,
        groupPointId: r.group_point_id,
        seq: d.seq ?? null,
        disks: (d.disks ?? []).map((x) => ({ id: x.id, sizeBytes: x.sizeBytes })),
      };
    });
  });
}
