// /policies (validated by the domain's policy rules) and /pairings (a primary site replicates to
// a recovery site under a policy; the providers must be able to carry the machines across).
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { conflict, invalid, notFound } from '../../domain/errors.ts';
import { validatePolicy } from '../../domain/policy.ts';
import type { PolicyInput } from '../../domain/policy.ts';
import type { Row } from '../../store/schema.ts';
import { newId, now } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Page, PageQuery, Pairing, Policy, errors } from '../schemas.ts';
import { pairingView, policyView } from '../views.ts';
import { siteByName } from './sites.ts';

const Dur = Type.String({ minLength: 1, maxLength: 20 });
const CreatePolicy = Type.Object(
  {
    name: Type.String({ maxLength: 200 }),
    frequency: Type.Optional(Dur),
    retention: Type.Optional(Dur),
    appConsistent: Type.Optional(Dur),
    compression: Type.Optional(Type.String({ maxLength: 40 })),
    encryption: Type.Optional(Type.String({ maxLength: 40 })),
    bandwidth: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ maxLength: 20 })])),
    initialStart: Type.Optional(Type.String({ maxLength: 20 })),
  },
  { additionalProperties: false },
);
const CreatePairing = Type.Object(
  { primary: Type.String({ maxLength: 200 }), recovery: Type.String({ maxLength: 200 }), policy: Type.String({ maxLength: 200 }) },
  { additionalProperties: false },
);

/** primary provider → recovery providers it can fail over to. */
const COMPATIBLE: Record<string, readonly string[]> = { physical: ['physical', 'qemu'], qemu: ['qemu'] };

export function policyRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;

  app.post('/policies', { schema: { tags: ['policies'], body: CreatePolicy, response: { 201: Policy, ...errors(400, 401, 403, 409) } } }, async (req, reply) => {
    const spec = validatePolicy(req.body as Static<typeof CreatePolicy> as PolicyInput);
    if (await db.selectFrom('policies').select('id').where('name', '=', spec.name).executeTakeFirst()) {
      throw conflict('policy.exists', `a policy named '${spec.name}' already exists: choose another name.`);
    }
    const row: Row<'policies'> = {
      id: newId(),
      name: spec.name,
      frequency_s: spec.frequencySeconds,
      retention_s: spec.retentionSeconds,
      app_consistent_s: spec.appConsistentSeconds,
      compression: spec.compression,
      encryption: spec.encryption,
      bandwidth_bps: spec.bandwidthBps,
      initial_start: spec.initialStart,
      created_at: now(),
    };
    await db.insertInto('policies').values(row).execute();
    return reply.code(201).send(policyView(row));
  });

  app.get('/policies', { schema: { tags: ['policies'], querystring: Type.Object(PageQuery), response: { 200: Page(Policy), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as { limit?: number; cursor?: string };
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('policies').selectAll();
    if (q.cursor) sel = sel.where('name', '>', decodeTextCursor(q.cursor));
    return toPage(await sel.orderBy('name').limit(limit + 1).execute(), limit, (r) => r.name, policyView);
  });

  const pairings = () =>
    db
      .selectFrom('pairings as p')
      .innerJoin('sites as a', 'a.id', 'p.primary_site_id')
      .innerJoin('sites as b', 'b.id', 'p.recovery_site_id')
      .innerJoin('policies as pol', 'pol.id', 'p.policy_id')
      .select(['p.id', 'p.created_at', 'a.name as primary', 'b.name as recovery', 'pol.name as policy']);

  app.post('/pairings', { schema: { tags: ['pairings'], body: CreatePairing, response: { 201: Pairing, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const body = req.body as Static<typeof CreatePairing>;
    if (body.primary === body.recovery) {
      throw invalid('pairing.same-site', `a site cannot pair with itself ('${body.primary}'): name a different recovery site.`);
    }
    const primary = await siteByName(db, body.primary);
    const recovery = await siteByName(db, body.recovery);
    const policy = await db.selectFrom('policies').selectAll().where('name', '=', body.policy).executeTakeFirst();
    if (!policy) throw notFound('policy.not-found', `no policy is named '${body.policy}': create it with rebound policy create.`);
    if (!(COMPATIBLE[primary.provider] ?? []).includes(recovery.provider)) {
      throw invalid(
        'pairing.incompatible',
        `a ${primary.provider} site cannot fail over to a ${recovery.provider} site (${primary.name} → ${recovery.name}): pair physical with physical or qemu, and qemu with qemu.`,
      );
    }
    const existing = await db.selectFrom('pairings').select('id').where('primary_site_id', '=', primary.id).where('recovery_site_id', '=', recovery.id).executeTakeFirst();
    if (existing) throw conflict('pairing.exists', `${primary.name} already pairs with ${recovery.name}: one pairing per direction.`);
    const row: Row<'pairings'> = { id: newId(), primary_site_id: primary.id, recovery_site_id: recovery.id, policy_id: policy.id, created_at: now() };
    await db.insertInto('pairings').values(row).execute();
    return reply.code(201).send(pairingView({ id: row.id, created_at: row.created_at, primary: primary.name, recovery: recovery.name, policy: policy.name }));
  });

  app.get('/pairings', { schema: { tags: ['pairings'], querystring: Type.Object(PageQuery), response: { 200: Page(Pairing), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as { limit?: number; cursor?: string };
    const limit = pageLimit(q.limit);
    let sel = pairings();
    if (q.cursor) sel = sel.where('p.id', '>', decodeTextCursor(q.cursor));
    return toPage(await sel.orderBy('p.id').limit(limit + 1).execute(), limit, (r) => r.id, pairingView);
  });
}
