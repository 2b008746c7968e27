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
import { loadVaultKeys } from '../../vault/keys.ts';

const Id = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' });
const Progress = Type.Object({
  itemId: Id, pointId: Id, initial: Type.Boolean(), bytesDone: Type.Number({ minimum: 0 }), bytesTotal: Type.Number({ minimum: 0 }),
  bytesSkipped: Type.Number({ minimum: 0 }), sent: Type.Boolean(), takenAt: Type.Number({ minimum: 0 }),
  method: Type.Optional(Type.Union([Type.Literal('full'), Type.Literal('digests'), Type.Literal('cbt')])),
}, { additionalProperties: false });
const PointBody = Type.Object({
  itemId: Id, pointId: Id, pointSeq: Type.Integer({ minimum: 0 }), takenAt: Type.Number({ minimum: 0 }), kind: Type.Union([Type.Literal('crash'), Type.Literal('app')]),
  disks: Type.Array(Type.Object({ id: Id, sizeBytes: Type.Number({ minimum: 0 }), bytes: Type.Number({ minimum: 0 }) }), { maxItems: 64 }),
  siteId: Id,
  heldFrom: Type.Optional(Id),
}, { additionalProperties: false });
const PointVerdictView = Type.Object({ ok: Type.Boolean(), verdict: Type.Union([Type.Literal('recorded'), Type.Literal('stale'), Type.Literal('gone')]) });
const GroupPointBody = Type.Object({
  groupPointId: Id, group: Type.String({ minLength: 1, maxLength: 100 }), seq: Type.Integer({ minimum: 1 }), takenAt: Type.Number({ minimum: 0 }),
  kind: Type.Union([Type.Literal('crash'), Type.Literal('app')]), pauseMs: Type.Number({ minimum: 0 }),
  members: Type.Array(Type.Object({ itemId: Id, pointId: Id }, { additionalProperties: false }), { minItems: 1, maxItems: 1000 }),
}, { additionalProperties: false });
const PointsBody = Type.Object({ itemId: Id, pointIds: Type.Array(Id, { maxItems: 10_000 }), reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: false });
const ItemBody = Type.Object({ itemId: Id, reason: Type.Optional(Type.String({ maxLength: 1000 })) }, { additionalProperties: false });
const EventBody = Type.Object({ itemId: Id, kind: Type.String({ minLength: 1, maxLength: 100 }), message: Type.String({ maxLength: 2000 }), data: Type.Optional(OpenObject) }, { additionalProperties: false });
const SitesQuery = Type.Object({ site: Type.Optional(Type.String({ maxLength: 200 })) });
const SiteParam = Type.Object({ id: Id });
const Ok = Type.Object({ ok: Type.Boolean() });
const ScrubPoll = Type.Object({ sites: Type.Optional(Type.Union([Type.Array(Id, { maxItems: 1000 }), Type.Null()])), working: Type.Array(Id, { maxItems: 1000 }), take: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const ScrubRequestView = Type.Object({ id: Id, siteId: Id, itemId: Id });
const ScrubAnswer = Type.Union([
  Type.Object({ checkedBlocks: Type.Integer({ minimum: 0 }), badPoints: Type.Array(Id, { maxItems: 100_000 }) }, { additionalProperties: false }),
  Type.Object({ error: Type.String({ minLength: 1, maxLength: 2000 }) }, { additionalProperties: false }),
]);
const Keys = Type.Object({
  role: Type.String(),
  transport: Type.String({ description: 'base64, 32 bytes: frame session keys between the roles' }),
  atRest: Type.Optional(Type.Array(Type.Object({ id: Type.String(), secret: Type.String() }), { description: 'master target only: current at-rest key first' })),
});

function requireComponent(req: FastifyRequest): void {
  const p = principalOf(req);
  if (p.role === 'admin' || p.name.startsWith('component:')) return;
  throw new ReboundError('forbidden', 'forbidden', 'the replication control plane is for registered components (and admins): register the component with the vault first.');
}

/** The role of the calling component ('admin' for an admin token); refuses everyone else. */
async function callerRole(req: FastifyRequest, deps: ApiDeps): Promise<string> {
  requireComponent(req);
  const p = principalOf(req);
  if (!p.name.startsWith('component:')) return 'admin';
  const c = await deps.store.db.selectFrom('components').select(['role']).where('token_id', '=', p.tokenId).where('status', '=', 'active').executeTakeFirst();
  if (!c) throw new ReboundError('forbidden', 'component.unknown', 'this token belongs to no active component: register the component with the vault again.');
  return c.role;
}

export function replicationRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const cat = deps.catalogue;
  if (!cat) return;
  const tag = { tags: ['replication'] };

  // The keys a role running as its own process needs, and only those: every role the transport
  // key (frames are sealed end to end), the master target also the at-rest keys of the replicas.
  app.get('/replication/keys', { schema: { ...tag, response: { 200: Keys, ...errors(401, 403) } } }, async (req, reply) => {
    const role = await callerRole(req, deps);
    const k = await loadVaultKeys(deps.store);
    void reply.header('cache-control', 'no-store');
    return {
      role,
      transport: k.transport.toString('base64'),
      ...(role === 'master-target' || role === 'admin' ? { atRest: k.atRestKeys.map((x) => ({ id: x.id, secret: x.secret })) } : {}),
    };
  });
  // Serials the vault CA's certificates were revoked under, for the data listeners of role processes.
  app.get('/replication/revoked', { schema: { ...tag, response: { 200: Type.Object({ serials: Type.Array(Type.String()) }), ...errors(401, 403) } } }, async (req) => {
    requireComponent(req);
    const rows = await deps.store.db.selectFrom('components').select('cert_serial').where('status', '=', 'revoked').where('cert_serial', 'is not', null).execute();
    return { serials: rows.map((r) => r.cert_serial!).filter(Boolean) };
  });
  // Where a process server forwards a site's transfers now (a master target may have moved).
  app.get('/replication/sites/:id/master-target', { schema: { ...tag, params: SiteParam, response: { 200: Type.Object({ address: Type.Union([Type.String(), Type.Null()]) }), ...errors(400, 401, 403, 404) } } }, async (req) => {
    requireComponent(req);
    const { id } = req.params as Static<typeof SiteParam>;
    await cat.siteRoot(id); // 404 for an unknown site
    return { address: (await cat.masterTargetAddress(id)) || null };
  });

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
  app.post('/replication/points', { schema: { ...tag, body: PointBody, response: { 200: PointVerdictView, ...errors(400, 401, 403) } } }, async (req) => {
    requireComponent(req);
    return { ok: true, verdict: await cat.recordPoint(req.body as Static<typeof PointBody>) };
  });
  app.post('/replication/group-points', { schema: { ...tag, body: GroupPointBody, response: { 200: Ok, ...errors(400, 401, 403, 409) } } }, async (req) => {
    requireComponent(req);
    await cat.recordGroupPoint(req.body as Static<typeof GroupPointBody>);
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

  // Scrubs asked of a master target that runs as its own process (src/vault/scrub-broker.ts):
  // it polls for the requests of its sites, saying which it still works on, and posts results.
  app.post('/replication/scrubs/poll', { schema: { ...tag, body: ScrubPoll, response: { 200: Type.Array(ScrubRequestView), ...errors(400, 401, 403) } } }, async (req) => {
    const role = await callerRole(req, deps);
    if (role !== 'master-target' && role !== 'admin') throw new ReboundError('forbidden', 'not-a-master-target', `scrub requests are for master targets; this caller is a ${role}.`);
    const b = req.body as Static<typeof ScrubPoll>;
    return cat.scrubs.take(b.sites ?? null, b.working, b.take !== false);
  });
  app.post('/replication/scrubs/:id', { schema: { ...tag, params: SiteParam, body: ScrubAnswer, response: { 200: Ok, ...errors(400, 401, 403) } } }, async (req) => {
    const role = await callerRole(req, deps);
    if (role !== 'master-target' && role !== 'admin') throw new ReboundError('forbidden', 'not-a-master-target', `scrub results come from master targets; this caller is a ${role}.`);
    const b = req.body as Static<typeof ScrubAnswer>;
    const { id } = req.params as Static<typeof SiteParam>;
    return { ok: cat.scrubs.finish(id, 'error' in b ? { error: b.error } : { checkedBlocks: b.checkedBlocks, badPoints: b.badPoints }) };
  });
}
