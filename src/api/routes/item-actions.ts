// Lifecycle actions on protected items and their recovery points: POST /items/:machine/protect
// (and the failover verbs as they arrive) decide through the lifecycle state machine and answer
// 202 with the queued job; GET /items/:machine/points lists the item's usable and bad points,
// newest first.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { conflict, notFound } from '../../domain/errors.ts';
import type { OperatorAction } from '../../domain/lifecycle.ts';
import { parsePointChoice } from '../../domain/points.ts';
import type { ItemActions, JobParams } from '../../vault/item-actions.ts';
import { resolveHost } from '../../vault/jobs/recovery-context.ts';
import type { Store } from '../../store/open.ts';
import { validateName } from '../../domain/names.ts';
import { validateGroupName } from '../../domain/groups.ts';
import { checkJoin, setGroup } from '../../vault/groups.ts';
import { parseJson } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Accepted, Item, Page, PageQuery, RecoveryPoint, errors } from '../schemas.ts';
import { itemView } from '../views.ts';
import { now } from '../../store/open.ts';

const MachineParam = Type.Object({ machine: Type.String({ minLength: 1, maxLength: 200 }) });
const ProtectBody = Type.Object({ group: Type.Optional(Type.String({ maxLength: 100 })) }, { additionalProperties: false });
const GroupBody = Type.Object({ group: Type.Union([Type.String({ maxLength: 100 }), Type.Null()], { description: 'the replication group to join or move to; null leaves the group' }) }, { additionalProperties: false });
const PointText = Type.String({ minLength: 1, maxLength: 128, description: 'latest, latest-processed, latest-app-consistent or a point id' });
const TestFailoverBody = Type.Object({ point: Type.Optional(PointText) }, { additionalProperties: false });
const TestCleanupBody = Type.Object({ notes: Type.String({ maxLength: 10_000, description: 'what the drill showed' }) }, { additionalProperties: false });
const FailoverBody = Type.Object({
  mode: Type.Union([Type.Literal('planned'), Type.Literal('unplanned')]),
  point: Type.Optional(PointText),
  shutdownSource: Type.Optional(Type.Boolean()),
  sync: Type.Optional(Type.Union([Type.Literal('before'), Type.Literal('full')])),
  host: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
}, { additionalProperties: false });
const JobParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

/** A failback's --host must name a local host of the site the machine fails back to (checked
 * before the job is queued, so a typo fails at once). Machines that are not failing back are left
 * to the lifecycle, which refuses --host for them with its own reason. */
export async function checkFailbackHost(store: Store, actions: ItemActions, machine: string, host: string): Promise<void> {
  const l = await actions.load(machine);
  if (!l.item || l.item.direction !== 'reverse') return;
  await resolveHost(store, l.pairing.primary_site_id, host);
}

export function itemActionRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const actions = deps.actions;
  if (!actions) return;
  const db = deps.store.db;

  app.post('/items/:machine/protect', { schema: { tags: ['items'], params: MachineParam, body: Type.Optional(ProtectBody), response: { 202: Accepted, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const body = (req.body ?? {}) as Static<typeof ProtectBody>;
    const group = body.group === undefined ? undefined : validateGroupName(body.group);
    if (group !== undefined) {
      // A group's machines share a pairing (and so a policy): refused before anything changes.
      const l = await actions.load(machine);
      if (!l.item) await checkJoin(deps.store, l.machine.name, l.pairing, 'forward', group);
    }
    const job = await actions.act(machine, { kind: 'protect', ...(group === undefined ? {} : { group }) }, principalOf(req).name);
    return reply.code(202).send({ job });
  });

  // Join, move to or leave (null) a replication group; refused while a failover of it runs.
  app.post('/items/:machine/group', { schema: { tags: ['items'], params: MachineParam, body: GroupBody, response: { 200: Item, ...errors(400, 401, 403, 404, 409) } } }, async (req) => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const b = req.body as Static<typeof GroupBody>;
    await setGroup(deps.store, machine, b.group === null ? null : validateGroupName(b.group));
    const row = await db
      .selectFrom('protected_items as i')
      .innerJoin('machines as m', 'm.id', 'i.machine_id')
      .innerJoin('sites as s', 's.id', 'i.active_site_id')
      .selectAll('i')
      .select(['m.name as machine', 's.name as active_site'])
      .where('m.name', '=', machine)
      .executeTakeFirstOrThrow();
    return itemView(row, now());
  });

  const act = async (req: { params: unknown; body?: unknown }, reply: { code(n: number): { send(b: unknown): unknown } }, action: OperatorAction, by: string): Promise<unknown> => {
    const { machine } = req.params as Static<typeof MachineParam>;
    const job = await actions.act(machine, action, by);
    return reply.code(202).send({ job });
  };
  const accepted = { params: MachineParam, response: { 202: Accepted, ...errors(400, 401, 403, 404, 409) } };

  app.post('/items/:machine/test-failover', { schema: { tags: ['items'], ...accepted, body: Type.Optional(TestFailoverBody) } }, async (req, reply) => {
    const b = (req.body ?? {}) as Static<typeof TestFailoverBody>;
    return act(req, reply, { kind: 'test-failover', point: parsePointChoice(b.point) }, principalOf(req).name);
  });

  app.post('/items/:machine/test-cleanup', { schema: { tags: ['items'], ...accepted, body: TestCleanupBody } }, async (req, reply) => {
    const b = req.body as Static<typeof TestCleanupBody>;
    return act(req, reply, { kind: 'test-cleanup', notes: b.notes }, principalOf(req).name);
  });

  app.post('/items/:machine/failover', { schema: { tags: ['items'], ...accepted, body: FailoverBody } }, async (req, reply) => {
    const b = req.body as Static<typeof FailoverBody>;
    const action: OperatorAction = {
      kind: 'failover',
      mode: b.mode,
      ...(b.point === undefined ? {} : { point: parsePointChoice(b.point) }),
      ...(b.shutdownSource === undefined ? {} : { shutdownSource: b.shutdownSource }),
      ...(b.sync === undefined ? {} : { sync: b.sync }),
      ...(b.host === undefined ? {} : { host: validateName(b.host, 'host') }),
    };
    if (action.host !== undefined) await checkFailbackHost(deps.store, actions, (req.params as { machine: string }).machine, action.host);
    return act(req, reply, action, principalOf(req).name);
  });

  app.post('/items/:machine/commit', { schema: { tags: ['items'], ...accepted } }, async (req, reply) => act(req, reply, { kind: 'commit' }, principalOf(req).name));
  app.post('/items/:machine/reverse-replicate', { schema: { tags: ['items'], ...accepted } }, async (req, reply) => act(req, reply, { kind: 'reverse-replicate' }, principalOf(req).name));

  // Phase 2 of a failback synced before: the waiting failback-sync job goes on.
  app.post('/jobs/:id/complete', { schema: { tags: ['jobs'], params: JobParam, response: { 202: Accepted, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const { id } = req.params as Static<typeof JobParam>;
    const job = await deps.jobs.get(id);
    if (!job) throw notFound('job.not-found', `no job ${id}.`);
    if (job.kind !== 'failback-sync') throw conflict('not-a-failback', `job ${id} is a ${job.kind} job; complete-failover continues a failback synced before (rebound failover MACHINE --planned while it runs at the recovery site).`);
    if (job.state !== 'waiting') throw conflict('failback-not-ready', `job ${id} is ${job.state}: complete-failover needs its phase 1 (the sync) to have finished and the job to be waiting.`);
    const p = job.params as JobParams;
    await actions.internal(p.itemId, { kind: 'complete-failover' });
    const resumed = await deps.jobs.resume(id, principalOf(req).name);
    return reply.code(202).send({ job: resumed });
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
