// /jobs: list, one job with its tasks and log, cancel, resume, and /jobs/:id/events, a stream of
// server-sent events carrying the job each time it changes until it ends. The stream listens to
// this server's engine and also reads the vault every half second, because in a scale-out vault
// the worker running the job may be another server.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { notFound } from '../../domain/errors.ts';
import { JOB_STATES } from '../../domain/model.ts';
import { terminalJobStates } from '../../jobs/types.ts';
import type { JobView } from '../../jobs/types.ts';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { Job, Page, PageQuery, errors } from '../schemas.ts';

const ListQuery = Type.Object({
  ...PageQuery,
  state: Type.Optional(Type.Union(JOB_STATES.map((s) => Type.Literal(s)))),
  kind: Type.Optional(Type.String({ maxLength: 100 })),
  target: Type.Optional(Type.String({ maxLength: 300 })),
});
const IdParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });
const POLL_MS = 500;
const KEEPALIVE_MS = 15_000;

export function jobRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const jobs = deps.jobs;
  const mustGet = async (id: string): Promise<JobView> => {
    const job = await jobs.get(id);
    if (!job) throw notFound('job.not-found', `no job has id '${id}': list them with rebound job list.`);
    return job;
  };

  app.get('/jobs', { schema: { tags: ['jobs'], querystring: ListQuery, response: { 200: Page(Job), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as Static<typeof ListQuery>;
    return jobs.list(q);
  });

  app.get('/jobs/:id', { schema: { tags: ['jobs'], params: IdParam, response: { 200: Job, ...errors(400, 401, 404) } } }, async (req) => {
    return mustGet((req.params as Static<typeof IdParam>).id);
  });

  app.post('/jobs/:id/cancel', { schema: { tags: ['jobs'], params: IdParam, response: { 200: Job, ...errors(400, 401, 403, 404, 409) } } }, async (req) => {
    return jobs.cancel((req.params as Static<typeof IdParam>).id, principalOf(req).name);
  });

  app.post('/jobs/:id/resume', { schema: { tags: ['jobs'], params: IdParam, response: { 200: Job, ...errors(400, 401, 403, 404, 409) } } }, async (req) => {
    return jobs.resume((req.params as Static<typeof IdParam>).id, principalOf(req).name);
  });

  app.get(
    '/jobs/:id/events',
    { schema: { tags: ['jobs'], params: IdParam, produces: ['text/event-stream'], response: { 200: Type.String({ description: "server-sent events: 'job' events carrying the job, then 'end'" }), ...errors(400, 401, 404) } } },
    async (req, reply) => {
      const id = (req.params as Static<typeof IdParam>).id;
      let last = await mustGet(id);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      let closed = false;
      let seq = 0;
      const send = (event: string, data: unknown) => {
        if (!closed) res.write(`id: ${seq++}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      };
      const stamp = (j: JobView) => `${j.state}|${j.progress}|${j.updatedAt}|${j.tasks.map((t) => `${t.state}${t.progress}`).join(',')}|${j.log.length}`;
      let lastStamp = stamp(last);
      const finish = () => {
        if (closed) return;
        send('end', { id, state: last.state });
        cleanup();
        res.end();
      };
      const offer = (j: JobView) => {
        if (closed || j.id !== id) return;
        const s = stamp(j);
        if (s === lastStamp) return;
        last = j;
        lastStamp = s;
        send('job', j);
        if (terminalJobStates.includes(j.state)) finish();
      };
      const onJob = (j: JobView) => {
        if (j.id === id) void mustGet(id).then(offer, () => undefined);
      };
      const poll = setInterval(() => void mustGet(id).then(offer, () => undefined), POLL_MS);
      const keepalive = setInterval(() => !closed && res.write(': keepalive\n\n'), KEEPALIVE_MS);
      function cleanup() {
        closed = true;
        clearInterval(poll);
        clearInterval(keepalive);
        jobs.off('job', onJob);
      }
      res.on('close', cleanup);
      jobs.on('job', onJob);
      send('job', last);
      if (terminalJobStates.includes(last.state)) finish();
    },
  );
}
