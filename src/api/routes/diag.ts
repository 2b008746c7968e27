// POST /diag/jobs (admin, dev/test only): starts a diag.sequence job. Present only when the
// server runs with REBOUND_ENABLE_TEST_JOBS=1; it exists to prove job durability in tests.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { JobAccepted, errors } from '../schemas.ts';

const Body = Type.Object(
  {
    file: Type.String({ minLength: 1, maxLength: 4096 }),
    tasks: Type.Integer({ minimum: 1, maximum: 100 }),
    sleepMs: Type.Integer({ minimum: 0, maximum: 60_000 }),
  },
  { additionalProperties: false },
);

export function diagRoutes(app: FastifyInstance, deps: ApiDeps): void {
  app.post('/diag/jobs', { schema: { tags: ['diag'], body: Body, response: { 202: JobAccepted, ...errors(400, 401, 403) } } }, async (req, reply) => {
    const body = req.body as Static<typeof Body>;
    const job = await deps.jobs.enqueue({ kind: 'diag.sequence', target: '', params: body, createdBy: principalOf(req).name });
    return reply.code(202).send({ job });
  });
}
