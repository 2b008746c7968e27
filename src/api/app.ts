// The REST API as a Fastify instance (docs/api.md): error shape, token auth and roles, audit of
// every state-changing call, request metrics, OpenAPI generated from the route schemas, and the
// routes. Nothing here listens or opens anything: the composition root (src/server/serve.ts)
// hands in the store and the job engine.
import Fastify from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { Type } from '@sinclair/typebox';
import { Ajv } from 'ajv';
import { ReboundError } from '../domain/errors.ts';
import { assertRole, requiredRole } from '../domain/rbac.ts';
import { authenticate } from './auth.ts';
import type { ApiDeps } from './deps.ts';
import { installErrorHandlers } from './http-errors.ts';
import { createMetrics } from './metrics.ts';
import { recordAudit } from './audit.ts';
import { tokenRoutes } from './routes/tokens.ts';
import { siteRoutes } from './routes/sites.ts';
import { policyRoutes } from './routes/policies.ts';
import { machineRoutes } from './routes/machines.ts';
import { itemRoutes } from './routes/items.ts';
import { itemActionRoutes } from './routes/item-actions.ts';
import { replicationRoutes } from './routes/replication.ts';
import { jobRoutes } from './routes/jobs.ts';
import { logRoutes } from './routes/logs.ts';
import { diagRoutes } from './routes/diag.ts';
import { componentRoutes } from './routes/components.ts';
import { planRoutes } from './routes/plans.ts';

export const API_PREFIX = '/api/v1';
const PUBLIC = new Set(['/healthz', '/metrics', `${API_PREFIX}/openapi.json`]);
const BODY_LIMIT = 1024 * 1024;

function isPublic(url: string): boolean {
  const path = url.split('?')[0] ?? url;
  return PUBLIC.has(path) || path === `${API_PREFIX}/docs` || path.startsWith(`${API_PREFIX}/docs/`);
}

function hasNul(v: unknown, depth = 0): boolean {
  if (typeof v === 'string') return v.includes('\0');
  if (depth > 64 || typeof v !== 'object' || v === null) return false;
  for (const [k, x] of Object.entries(v)) if (k.includes('\0') || hasNul(x, depth + 1)) return true;
  return false;
}

export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT,
    // Errors Fastify raises before routing (a path that is not valid percent-encoding) bypass the
    // error handler; answer them in the API's shape too.
    frameworkErrors: (err, _req, res) => {
      void (res as unknown as FastifyReply)
        .code(400)
        .type('application/json')
        .send({ error: { code: 'invalid-url', message: `the URL is not valid (${err.message}): percent-encode path segments as UTF-8.` } });
    },
  });
  // Bodies are validated strictly: unknown fields are refused rather than dropped (a typo should
  // not pass) and nothing is coerced ({"name": 12} is wrong, not "12"). Query strings and path
  // parameters arrive as text, so they are coerced to the declared types.
  const strict = new Ajv({ strict: false, removeAdditional: false, coerceTypes: false, useDefaults: true });
  const lax = new Ajv({ strict: false, removeAdditional: false, coerceTypes: 'array', useDefaults: true });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : lax).compile(schema));
  app.decorateRequest('principal', undefined);
  installErrorHandlers(app);
  await (await import('./portal.ts')).registerPortal(app); // the web portal at /; before the auth hook, as its pages are public
  const metrics = createMetrics(deps.store, deps.dataStats);

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Rebound API', version: deps.version, description: 'Disaster-recovery orchestration for KVM/QEMU VMs and Linux servers (docs/api.md).' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: `${API_PREFIX}/docs` });

  app.addHook('onRequest', async (req: FastifyRequest) => {
    (req as { startedAt?: bigint }).startedAt = process.hrtime.bigint();
    if (isPublic(req.url)) return;
    const route = req.routeOptions.url;
    if (route === undefined) return; // unknown route: the 404 handler answers
    req.principal = await authenticate(deps.store, req.headers.authorization);
    const need = requiredRole(req.method, route);
    assertRole(req.principal.role, need, `${req.method} ${route}`);
  });

  // PostgreSQL text cannot hold NUL; refuse it everywhere rather than fail in the store.
  app.addHook('preValidation', async (req: FastifyRequest) => {
    if (hasNul(req.params) || hasNul(req.query) || hasNul(req.body)) {
      throw new ReboundError('invalid', 'invalid-text', 'a text value in the request contains a NUL character: remove it.');
    }
  });

  // Audit in onSend, before the answer leaves, so that an answered call is always on record.
  app.addHook('onSend', async (req: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.routeOptions.url?.startsWith(API_PREFIX)) {
      await recordAudit(deps.store, req, reply.statusCode, payload).catch((err: unknown) => req.log.error({ err }, 'audit write failed'));
    }
    return payload;
  });

  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
    metrics.httpDuration.observe(
      { method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  app.get(
    '/healthz',
    {
      schema: {
        hide: false,
        security: [],
        response: { 200: Type.Object({ ok: Type.Boolean(), version: Type.String(), store: Type.String() }), 503: Type.Object({ ok: Type.Boolean(), version: Type.String(), store: Type.String(), error: Type.String() }) },
      },
    },
    async (_req, reply) => {
      try {
        await deps.store.db.selectFrom('rebound_migration' as 'sites').select((eb) => eb.lit(1).as('one')).limit(1).execute();
        return { ok: true, version: deps.version, store: deps.store.dialect };
      } catch (err) {
        return reply.code(503).send({ ok: false, version: deps.version, store: deps.store.dialect, error: (err as Error).message });
      }
    },
  );

  app.get('/metrics', { schema: { security: [], produces: ['text/plain'] } }, async (_req, reply) => {
    const text = await metrics.registry.metrics();
    return reply.type(metrics.registry.contentType).send(text);
  });

  app.get(`${API_PREFIX}/openapi.json`, { schema: { hide: true } }, async () => app.swagger());

  await app.register(
    async (api) => {
      api.get('/whoami', { schema: { response: { 200: Type.Object({ name: Type.String(), role: Type.String() }) } } }, async (req) => {
        const p = req.principal;
        if (!p) throw new ReboundError('unauthenticated', 'unauthenticated', 'this call needs a token.');
        return { name: p.name, role: p.role };
      });
      tokenRoutes(api, deps);
      siteRoutes(api, deps);
      policyRoutes(api, deps);
      machineRoutes(api, deps);
      itemRoutes(api, deps);
      itemActionRoutes(api, deps);
      planRoutes(api, deps);
      replicationRoutes(api, deps);
      jobRoutes(api, deps);
      logRoutes(api, deps);
      componentRoutes(api, deps);
      if (deps.diagRoutes) diagRoutes(api, deps);
    },
    { prefix: API_PREFIX },
  );

  return app;
}
