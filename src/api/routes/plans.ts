// /plans: recovery plans (ordered groups of machines with script and manual actions before and
// after each group) and their verbs. Create, list, show, edit (PUT: groups and actions), add an
// action, delete; and POST /plans/:name/{test-failover,test-cleanup,failover,commit,
// reverse-replicate}, which check the whole plan first (every machine protected, at one site, the
// lifecycle allows the verb on each; src/vault/jobs/plan.ts) and answer 202 with the plan's job.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { conflict, invalid } from '../../domain/errors.ts';
import type { OperatorAction } from '../../domain/lifecycle.ts';
import type { PlanAction, PlanGroup } from '../../domain/model.ts';
import { validateAction, validatePlan } from '../../domain/plan.ts';
import { parsePointChoice } from '../../domain/points.ts';
import { nameProblem, validateName } from '../../domain/names.ts';
import { newId, now, parseJson } from '../../store/open.ts';
import type { Row } from '../../store/schema.ts';
import { activePlanJob, checkScript, loadPlan, machineAction, PLAN_VERBS, planRow, preparePlanRun } from '../../vault/jobs/plan.ts';
import { checkFailbackHost } from './item-actions.ts';
import type { PlanVerb } from '../../vault/jobs/plan.ts';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Accepted, Page, PageQuery, errors } from '../schemas.ts';

const PlanName = Type.String({ minLength: 1, maxLength: 200 });
const NameParam = Type.Object({ name: PlanName });
const ScriptAction = Type.Object(
  {
    kind: Type.Literal('script'),
    path: Type.String({ minLength: 1, maxLength: 4096, description: 'absolute path of an executable on the server' }),
    timeoutSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400, description: 'default 300' })),
  },
  { additionalProperties: false },
);
const ManualAction = Type.Object({ kind: Type.Literal('manual'), text: Type.String({ minLength: 1, maxLength: 4000 }) }, { additionalProperties: false });
const Action = Type.Union([ScriptAction, ManualAction]);
const GroupIn = Type.Object(
  {
    machines: Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { maxItems: 1000 }),
    before: Type.Optional(Type.Array(Action, { maxItems: 50 })),
    after: Type.Optional(Type.Array(Action, { maxItems: 50 })),
  },
  { additionalProperties: false },
);
const CreatePlan = Type.Object({ name: PlanName, groups: Type.Array(GroupIn, { maxItems: 100 }) }, { additionalProperties: false });
const EditPlan = Type.Object(
  {
    groups: Type.Array(GroupIn, { maxItems: 100 }),
    updatedAt: Type.Optional(Type.Integer({ description: 'the updatedAt the edit was made from: 409 plan-changed when the plan changed since' })),
  },
  { additionalProperties: false },
);
const AddAction = Type.Object(
  { group: Type.Integer({ minimum: 1, description: 'the group, counted from 1' }), when: Type.Union([Type.Literal('before'), Type.Literal('after')]), action: Action },
  { additionalProperties: false },
);
const Plan = Type.Object({
  id: Type.String(),
  name: Type.String(),
  groups: Type.Array(Type.Object({ machines: Type.Array(Type.String()), before: Type.Array(Action), after: Type.Array(Action) })),
  createdAt: Type.Integer(),
  updatedAt: Type.Integer(),
});

const PointText = Type.String({ minLength: 1, maxLength: 128, description: 'latest, latest-processed or latest-app-consistent (a point id only for a plan of one machine)' });
const TestFailoverBody = Type.Object({ point: Type.Optional(PointText) }, { additionalProperties: false });
const TestCleanupBody = Type.Object({ notes: Type.String({ maxLength: 10_000, description: 'what the drill showed' }) }, { additionalProperties: false });
const FailoverBody = Type.Object(
  {
    mode: Type.Union([Type.Literal('planned'), Type.Literal('unplanned')]),
    point: Type.Optional(PointText),
    shutdownSource: Type.Optional(Type.Boolean()),
    sync: Type.Optional(Type.Union([Type.Literal('before'), Type.Literal('full')])),
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  },
  { additionalProperties: false },
);
// commit and reverse-replicate take no options (any body is ignored, as for one machine).
const bodies: Record<PlanVerb, typeof TestFailoverBody | typeof TestCleanupBody | typeof FailoverBody | undefined> = {
  'test-failover': TestFailoverBody,
  'test-cleanup': TestCleanupBody,
  failover: FailoverBody,
  commit: undefined,
  'reverse-replicate': undefined,
};

function planView(r: Row<'recovery_plans'>): Static<typeof Plan> {
  const spec = parseJson<{ groups?: PlanGroup[] }>(r.spec, {});
  return { id: r.id, name: r.name, groups: (spec.groups ?? []).map((g) => ({ machines: g.machines, before: g.before ?? [], after: g.after ?? [] })), createdAt: Number(r.created_at), updatedAt: Number(r.updated_at) };
}

/** A script action is checked where it will run: on this server, an executable file. */
async function checkAction(a: PlanAction): Promise<void> {
  if (a.kind === 'script') await checkScript(a.path);
}

export function planRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;

  app.post('/plans', { schema: { tags: ['plans'], body: CreatePlan, response: { 201: Plan, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const body = req.body as Static<typeof CreatePlan>;
    const named = [...new Set(body.groups.flatMap((g) => g.machines))];
    // Only valid names reach the query (validatePlan refuses the others with the reason).
    const valid = named.filter((m) => nameProblem(m) === null);
    const known = new Set(valid.length === 0 ? [] : (await db.selectFrom('machines').select('name').where('name', 'in', valid).execute()).map((r) => r.name));
    const spec = validatePlan(body, known);
    for (const g of spec.groups) for (const a of [...g.before, ...g.after]) await checkAction(a);
    if (await db.selectFrom('recovery_plans').select('id').where('name', '=', spec.name).executeTakeFirst()) {
      throw conflict('plan.exists', `a plan named '${spec.name}' already exists: choose another name, or look at it with rebound plan show ${spec.name}.`);
    }
    const t = now();
    const row: Row<'recovery_plans'> = { id: newId(), name: spec.name, spec: JSON.stringify({ groups: spec.groups }), created_at: t, updated_at: t };
    await db.insertInto('recovery_plans').values(row).execute();
    return reply.code(201).send(planView(row));
  });

  app.get('/plans', { schema: { tags: ['plans'], querystring: Type.Object(PageQuery), response: { 200: Page(Plan), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as { limit?: number; cursor?: string };
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('recovery_plans').selectAll();
    if (q.cursor) sel = sel.where('name', '>', decodeTextCursor(q.cursor));
    return toPage(await sel.orderBy('name').limit(limit + 1).execute(), limit, (r) => r.name, planView);
  });

  const row = (name: string): Promise<Row<'recovery_plans'>> => planRow(deps.store, name);

  app.get('/plans/:name', { schema: { tags: ['plans'], params: NameParam, response: { 200: Plan, ...errors(400, 401, 404) } } }, async (req) => {
    return planView(await row((req.params as Static<typeof NameParam>).name));
  });

  app.post('/plans/:name/actions', { schema: { tags: ['plans'], params: NameParam, body: AddAction, response: { 201: Plan, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const { name } = req.params as Static<typeof NameParam>;
    const body = req.body as Static<typeof AddAction>;
    const r = await row(name);
    const view = planView(r);
    const group = view.groups[body.group - 1];
    if (!group) throw invalid('invalid-group', `plan ${name} has ${view.groups.length} group${view.groups.length === 1 ? '' : 's'}; group ${body.group} is not one of them: count groups from 1 (rebound plan show ${name}).`);
    const action = validateAction(body.action as PlanAction, name, body.group - 1);
    await checkAction(action);
    group[body.when].push(action);
    const t = now();
    const res = await db.updateTable('recovery_plans').set({ spec: JSON.stringify({ groups: view.groups }), updated_at: t }).where('id', '=', r.id).where('updated_at', '=', r.updated_at).executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) throw conflict('plan-changed', `plan ${name} changed while the action was added: look at it again (rebound plan show ${name}) and retry.`);
    return reply.code(201).send({ ...view, updatedAt: t });
  });

  // Replaces the plan's groups and their actions (the portal's group editor): the same checks as
  // a new plan, refused while a job of the plan is unfinished (it runs from the plan's groups).
  app.put('/plans/:name', { schema: { tags: ['plans'], params: NameParam, body: EditPlan, response: { 200: Plan, ...errors(400, 401, 403, 404, 409) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    const body = req.body as Static<typeof EditPlan>;
    const r = await row(name);
    if (body.updatedAt !== undefined && body.updatedAt !== Number(r.updated_at)) {
      throw conflict('plan-changed', `plan ${name} changed since it was read (updated ${new Date(Number(r.updated_at)).toISOString()}): look at it again (rebound plan show ${name}) and redo the edit.`);
    }
    const busy = await activePlanJob(deps.store, r.name);
    if (busy) throw conflict('plan-busy', `plan ${name} has job ${busy.id} (${busy.kind}, ${busy.state}): let it finish or cancel it (rebound job cancel ${busy.id}) before changing the plan.`);
    const named = [...new Set(body.groups.flatMap((g) => g.machines))];
    const valid = named.filter((m) => nameProblem(m) === null);
    const known = new Set(valid.length === 0 ? [] : (await db.selectFrom('machines').select('name').where('name', 'in', valid).execute()).map((m) => m.name));
    const spec = validatePlan({ name: r.name, groups: body.groups }, known);
    for (const g of spec.groups) for (const a of [...g.before, ...g.after]) await checkAction(a);
    const t = Math.max(now(), Number(r.updated_at) + 1);
    const res = await db.updateTable('recovery_plans').set({ spec: JSON.stringify({ groups: spec.groups }), updated_at: t }).where('id', '=', r.id).where('updated_at', '=', r.updated_at).executeTakeFirst();
    if (Number(res.numUpdatedRows) !== 1) throw conflict('plan-changed', `plan ${name} changed while it was edited: look at it again (rebound plan show ${name}) and redo the edit.`);
    return planView({ ...r, spec: JSON.stringify({ groups: spec.groups }), updated_at: t });
  });

  app.delete('/plans/:name', { schema: { tags: ['plans'], params: NameParam, response: { 200: Plan, ...errors(400, 401, 403, 404, 409) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    const r = await row(name);
    const busy = await activePlanJob(deps.store, r.name);
    if (busy) throw conflict('plan-busy', `plan ${name} has job ${busy.id} (${busy.kind}, ${busy.state}): let it finish or cancel it (rebound job cancel ${busy.id}) before deleting the plan.`);
    await db.deleteFrom('recovery_plans').where('id', '=', r.id).execute();
    return planView(r);
  });

  const actions = deps.actions;
  if (!actions) return;
  for (const verb of PLAN_VERBS) {
    const Body = bodies[verb];
    app.post(`/plans/:name/${verb}`, { schema: { tags: ['plans'], params: NameParam, ...(Body ? { body: Body } : {}), response: { 202: Accepted, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
      const { name } = req.params as Static<typeof NameParam>;
      const b = (Body ? req.body ?? {} : {}) as { point?: string; notes?: string; mode?: 'planned' | 'unplanned'; shutdownSource?: boolean; sync?: 'before' | 'full'; host?: string };
      let failover: Extract<OperatorAction, { kind: 'failover' }> | undefined;
      if (verb === 'failover') {
        failover = {
          kind: 'failover',
          mode: b.mode ?? 'unplanned',
          ...(b.point === undefined ? {} : { point: parsePointChoice(b.point) }),
          ...(b.shutdownSource === undefined ? {} : { shutdownSource: b.shutdownSource }),
          ...(b.sync === undefined ? {} : { sync: b.sync }),
          ...(b.host === undefined ? {} : { host: validateName(b.host, 'host') }),
        };
        if (failover.host !== undefined) {
          const plan = await loadPlan(deps.store, name);
          for (const m of new Set(plan.groups.flatMap((g) => g.machines))) await checkFailbackHost(deps.store, actions, m, failover.host);
        }
      }
      if (verb === 'test-cleanup' && (b.notes ?? '').trim() === '') throw invalid('notes-required', `test-cleanup of plan ${name} needs notes: say what the drill showed (--notes TEXT).`);
      const action = machineAction(verb, { ...(b.point !== undefined && verb === 'test-failover' ? { point: parsePointChoice(b.point) } : {}), ...(b.notes === undefined ? {} : { notes: b.notes }), ...(failover ? { failover } : {}) });
      const by = principalOf(req).name;
      const run = await preparePlanRun(deps.store, actions, name, verb, action, by);
      const job = await deps.jobs.enqueue({ kind: run.kind, target: run.target, params: run.params, createdBy: by });
      return reply.code(202).send({ job });
    });
  }
}
