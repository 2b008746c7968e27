// The job engine's operations on real SQLite and PostgreSQL: idempotency keys (also when two
// enqueues race), paging through the job list, compensation hooks on cancel and failure,
// terminal states that no operation changes, and a job whose worker keeps dying.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { ReboundError } from '../../src/domain/errors.ts';
import { JobEngine } from '../../src/jobs/engine.ts';
import type { HookContext, JobView } from '../../src/jobs/types.ts';
import { dialects, withStore } from '../support/db.ts';

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const waitState = (engine: JobEngine, id: string, states: string[]): Promise<JobView> =>
  until(`job ${id} in ${states.join('/')}`, async () => {
    const j = await engine.get(id);
    return j && states.includes(j.state) ? j : undefined;
  });

const noop = { kind: 'noop', describe: () => [{ name: 'only' }], runTask: async () => null };

for (const dialect of dialects) {
  describe(`job operations on ${dialect}`, () => {
    it('an idempotency key gives back the same job, also when enqueues race', async () => {
      await withStore(dialect, async ({ store }) => {
        const engine = new JobEngine({ store });
        engine.register(noop);
        const first = await engine.enqueue({ kind: 'noop', params: { n: 1 }, createdBy: 'a', idempotencyKey: 'k1' });
        assert.deepEqual(await engine.get(first.id), first, 'the view enqueue returns is what the vault holds');
        const again = await engine.enqueue({ kind: 'noop', params: { n: 2 }, createdBy: 'b', idempotencyKey: 'k1' });
        assert.equal(again.id, first.id);
        assert.deepEqual(again.params, { n: 1 });
        const raced = await Promise.all(Array.from({ length: 8 }, (_, i) => engine.enqueue({ kind: 'noop', params: { i }, createdBy: 'x', idempotencyKey: 'k2' })));
        assert.equal(new Set(raced.map((j) => j.id)).size, 1);
        const n = await store.db.selectFrom('jobs').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
        assert.equal(Number(n.n), 2);
        await assert.rejects(engine.enqueue({ kind: 'nope', params: {}, createdBy: 'x' }), (e: ReboundError) => e.code === 'job.unknown-kind');
      });
    });

    it('pages through jobs newest first with filters and a cursor', async () => {
      await withStore(dialect, async ({ store }) => {
        const engine = new JobEngine({ store });
        engine.register(noop);
        engine.register({ ...noop, kind: 'other' });
        const ids: string[] = [];
        for (let i = 0; i < 7; i++) ids.push((await engine.enqueue({ kind: i % 2 ? 'other' : 'noop', target: `m${i % 3}`, params: { i }, createdBy: 't' })).id);
        const seen: string[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < 10; page++) {
          const r = await engine.list({ limit: 3, ...(cursor ? { cursor } : {}) });
          seen.push(...r.items.map((j) => j.id));
          if (!r.next) break;
          cursor = r.next;
        }
        assert.deepEqual(seen, [...ids].reverse());
        assert.deepEqual((await engine.list({ kind: 'other' })).items.map((j) => j.id), [ids[5], ids[3], ids[1]]);
        assert.deepEqual((await engine.list({ target: 'm0', kind: 'noop' })).items.map((j) => j.id), [ids[6], ids[0]]);
        assert.equal((await engine.list({ state: 'succeeded' })).items.length, 0);
        await assert.rejects(engine.list({ cursor: 'garbage' }), (e: ReboundError) => e.code === 'bad-cursor');
      });
    });

    it('runs onCancel for a running job and for a started job waiting on an operator', async () => {
      await withStore(dialect, async ({ store }) => {
        const engine = new JobEngine({ store, pollMs: 20, leaseMs: 2000 });
        const hooks: string[] = [];
        engine.register({
          kind: 'undoable',
          describe: () => [{ name: 'create' }, { name: 'approve' }, { name: 'finish' }],
          runTask: async (ctx) => {
            if (ctx.task.seq === 1) {
              const p = ctx.params as { wait: boolean };
              if (p.wait) await ctx.waitForResume('approve the change');
              else await sleep(30_000, undefined, { signal: ctx.signal });
            }
            return ctx.task.seq;
          },
          onCancel: async (ctx: HookContext) => {
            hooks.push(`cancel:${(ctx.params as { wait: boolean }).wait}:${ctx.task?.name}:${ctx.job.tasks[0]?.state}`);
            await ctx.log('removed what task 0 created');
          },
        });
        engine.start();
        try {
          const running = await engine.enqueue({ kind: 'undoable', params: { wait: false }, createdBy: 't' });
          await until('task 1 runs', async () => (await engine.get(running.id))?.tasks[1]?.state === 'running');
          await engine.cancel(running.id, 'ops');
          const c1 = await waitState(engine, running.id, ['cancelled', 'failed', 'succeeded']);
          assert.equal(c1.state, 'cancelled');
          assert.deepEqual(c1.tasks.map((t) => t.state), ['succeeded', 'cancelled', 'cancelled']);

          const waiting = await engine.enqueue({ kind: 'undoable', params: { wait: true }, createdBy: 't' });
          await waitState(engine, waiting.id, ['waiting']);
          await engine.cancel(waiting.id, 'ops');
          const c2 = await waitState(engine, waiting.id, ['cancelled', 'failed', 'succeeded']);
          assert.equal(c2.state, 'cancelled');
          assert.deepEqual(c2.tasks.map((t) => t.state), ['succeeded', 'cancelled', 'cancelled']);
          assert.ok(c2.log.some((l) => l.message === 'removed what task 0 created'));
          assert.deepEqual(hooks, ['cancel:false:approve:succeeded', 'cancel:true:approve:succeeded']);

          // Never started: cancelled on the spot, no compensation.
          await engine.stop();
          const queued = await engine.enqueue({ kind: 'undoable', params: { wait: false }, createdBy: 't' });
          assert.equal((await engine.cancel(queued.id, 'ops')).state, 'cancelled');
          assert.equal(hooks.length, 2);
        } finally {
          await engine.stop();
        }
      });
    });

    it('runs onFail with the error; a failing hook is logged and the job still fails; terminal states stay', async () => {
      await withStore(dialect, async ({ store }) => {
        const engine = new JobEngine({ store, pollMs: 20, leaseMs: 2000 });
        const seen: unknown[] = [];
        engine.register({
          kind: 'doomed',
          resumable: false,
          describe: () => [{ name: 'only' }],
          runTask: async () => {
            throw new ReboundError('invalid', 'disk.too-small', 'the recovery disk is too small', { hint: 'grow it' });
          },
          onFail: async (ctx: HookContext) => {
            seen.push(ctx.error);
            throw new Error('clean-up could not reach the host');
          },
        });
        engine.register(noop);
        engine.start();
        try {
          const job = await engine.enqueue({ kind: 'doomed', params: {}, createdBy: 't' });
          const failed = await waitState(engine, job.id, ['failed', 'succeeded']);
          assert.equal(failed.state, 'failed');
          assert.deepEqual(failed.error, { code: 'disk.too-small', message: 'the recovery disk is too small', hint: 'grow it' });
          assert.deepEqual(seen, [failed.error]);
          assert.ok(failed.log.some((l) => l.level === 'error' && l.message.includes('clean-up after failure failed: clean-up could not reach the host')));
          await assert.rejects(engine.resume(job.id, 'ops'), (e: ReboundError) => e.code === 'job.not-resumable' && e.kind === 'conflict');
          await assert.rejects(engine.cancel(job.id, 'ops'), (e: ReboundError) => e.code === 'job.ended');
          const ok = await engine.enqueue({ kind: 'noop', params: {}, createdBy: 't' });
          await waitState(engine, ok.id, ['succeeded']);
          await assert.rejects(engine.cancel(ok.id, 'ops'), (e: ReboundError) => e.code === 'job.ended');
          await assert.rejects(engine.resume(ok.id, 'ops'), (e: ReboundError) => e.code === 'job.not-resumable');
          assert.deepEqual(await engine.get(job.id), failed, 'a failed job is unchanged by refused operations');
        } finally {
          await engine.stop();
        }
      });
    });

    it('fails a job whose worker keeps dying instead of running it forever', async () => {
      await withStore(dialect, async ({ store }) => {
        const engine = new JobEngine({ store, pollMs: 20, leaseMs: 2000 });
        let ran = false;
        engine.register({ ...noop, runTask: async () => ((ran = true), null) });
        const job = await engine.enqueue({ kind: 'noop', params: {}, createdBy: 't' });
        // What four crashed claims leave behind: running, an expired lease, attempts used up.
        const t = Date.now();
        await store.db.updateTable('jobs').set({ state: 'running', locked_by: 'dead', locked_at: t - 5000, lease_expires_at: t - 1, attempts: 4, started_at: t - 60_000 }).where('id', '=', job.id).execute();
        engine.start();
        try {
          const failed = await waitState(engine, job.id, ['failed', 'succeeded']);
          assert.equal(failed.state, 'failed');
          assert.equal(failed.error?.code, 'job.worker-lost');
          assert.match(failed.error?.message ?? '', /started 4 times/);
          assert.equal(ran, false);
        } finally {
          await engine.stop();
        }
      });
    });
  });
}
