// The control plane of the data-path roles when they run as their own processes: the agent reads
// its assignments and reports progress, the master target records, prunes and condemns points,
// the process server asks for a resync. Callers are components (tokens named `component:NAME`,
// issued at registration) or an admin; an operator's or reader's token is refused.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { ReboundError } from '../../domain/errors.ts';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { OpenObject, errors } from '../schemas.ts';

const Id = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' });
const Progress = Type.Object({
  itemId: Id, pointId: Id, initial: Type.Boolean(), bytesDone: Type.Number({ minimum: 0 }), bytesTotal: Type.Number({ minimum: 0 }),
  bytesSkipped: Type.Number({ minimum: 0 }), sent: Type.Boolean(), takenAt: Type.Number({ minimum: 0 }),
}, { additionalProperties: false });
const PointBody = Type.Object({
  itemId: Id, pointId: Id, pointSeq: Type.Integer({ minimum: 0 }), takenAt: Type.Number({ minimum: 0 }), kind: Type.Union([Type.Literal('crash'), Type.Literal('app')]),
  disks: Type.Array(Type.Object({ id: Id, sizeBytes: Type.Number({ minimum: 0 }), bytes: Type.Number({ minimum: 0 }) }), { maxItems: 64 }),
}, { additionalProperties: false });
const PointsBody = Type.Object({ itemId: Id, pointIds: Type.Array(Id, { maxItems: 10_000 }), reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: false });
const ItemBody = Type.Object({ itemId: Id, reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: false });
const EventBody = Type.Object({ itemId: Id, kind: Type.String({ minLength: 1, maxLength: 100 }), message: Type.String({ maxLength: 2000 }), data: Type.Optional(OpenObject) }, { additionalProperties: false });
const SitesQuery = Type.Object({ site: Type.Optional(Type.String({ maxLength: 200 })) });
const SiteParam = Type.Object({ id: Id });
const Ok = Type.Object({ ok: Type.Boolean() });

function requireComponent(req: FastifyRequest): void {
  const p = principalOf(req);
  if (p.role === 'admin' || p.name.startsWith('component:')) return;
  throw new ReboundError('forbidden', 'forbidden', 'the replication control plane is for registered components (and admins): register the component with the vault first.');
}

export function replicationRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const cat = deps.catalogue;
  if (!cat) return;
  const tag = { tags: ['replication'] };

  app.get('/replication/assignments', { schema: { ...tag, querystring: SitesQuery, response: { 200: Type.Array(OpenObject), ...errors(400, 401, 403, 404) } } }, async (req) => {
    requireComponent(req);
    const { site } = req.query as Static<typeof SitesQuery>;
    let ids: string[] | undefined;
    if (site !== undefined) {
      const s = await deps.store.db.selectFrom('sites').select('id').where('name', '=', site).executeTakeFirst();
      if (!s) throw new ReboundError('not-found', 'site.not-found', `no site is named '${site}'.`);
      ids = [s.id];
    }
    return cat.assignments(ids);
  });
  app.post('/replication/progress', { schema: { ...tag, body: Progress, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    await cat.progress(req.body as Static<typeof Progress>);
    return { ok: true };
  });
  app.post('/replication/resynced', { schema: { ...tag, body: ItemBody, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    await cat.resynced((req.body as Static<typeof ItemBody>).itemId);
    return { ok: true };
  });
  app.post('/replication/resync', { schema: { ...tag, body: ItemBody, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    const b = req.body as Static<typeof ItemBody>;
    await cat.requestResync(b.itemId, b.reason ?? 'requested by a component');
    return { ok: true };
  });
  app.post('/replication/events', { schema: { ...tag, body: EventBody, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    const b = req.body as Static<typeof EventBody>;
    await cat.event(b.itemId, b.kind, b.message, b.data);
    return { ok: true };
  });
  app.get('/replication/sites/:id/root', { schema: { ...tag, params: SiteParam, response: { 200: Type.Object({ root: Type.String() }), ...errors(400, 401, 403, 404) } } }, async (req) => {
    requireComponent(req);
    return { root: await cat.siteRoot((req.params as Static<typeof SiteParam>).id) };
  });
  app.post('/replication/points', { schema: { ...tag, body: PointBody, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    await cat.recordPoint(req.body as Static<typeof PointBody>);
    return { ok: true };
  });
  app.post('/replication/points/prune', { schema: { ...tag, body: PointsBody, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    const b = req.body as Static<typeof PointsBody>;
    await cat.prunePoints(b.itemId, b.pointIds);
    return { ok: true };
  });
  app.post('/replication/points/bad', { schema: { ...tag, body: PointsBody, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    const b = req.body as Static<typeof PointsBody>;
    await cat.markBad(b.itemId, b.pointIds, b.reason ?? 'reported by the master target');
    return { ok: true };
  });
}
