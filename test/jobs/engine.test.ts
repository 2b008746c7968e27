// The job engine against real SQLite and PostgreSQL: ordering, checkpoints, retries, manual
// waits, cancel, leases shared by two engines, and survival of kill -9.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { ReboundError } from '../../src/domain/errors.ts';
import { JobEngine } from '../../src/jobs/engine.ts';
import type { JobView } from '../../src/jobs/types.ts';
import type { Store } from '../../src/store/open.ts';
import { dialects, freshStore } from '../support/db.ts';

const workerScript = path.join(import.meta.dirname, '..', 'support', 'job-worker.ts');

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

async function waitState(engine: JobEngine, id: string, states: string[]): Promise<JobView> {
  return await until(`job ${id} in ${states.join('/')}`, async () => {
    const j = await engine.get(id);
    return j && states.includes(j.state) ? j : undefined;
  });
}

function engineOn(store: Store, extra: Partial<ConstructorParameters<typeof JobEngine>[0]> = {}): JobEngine {
  return new JobEngine({ store, pollMs: 20, leaseMs: 2000, ...extra });
}

for (const dialect of dialects) {
  describe(`job engine on ${dialect}`, () => {
    it('runs tasks in order, records progress, results and log, and ends succeeded', async () => {
      const ts = await freshStore(dialect);
      const engine = engineOn(ts.store);
      const order: number[] = [];
      let mid: JobView | undefined;
      engine.register({
        kind: 'order',
        describe: () => [{ name: 'a' }, { name: 'b' }, { name: 'c' }],
        runTask: async (ctx) => {
          order.push(ctx.task.seq);
          await ctx.progress(100 / 3);
          if (ctx.task.seq === 0) mid = await engine.get(ctx.job.id);
          await ctx.log(`task ${ctx.task.seq}`);
          return { seq: ctx.task.seq, prev: ctx.results.get(ctx.task.seq - 1) ?? null };
        },
      });
      try {
        engine.start();
        const job = await engine.enqueue({ kind: 'order', params: {}, createdBy: 'test', target: 'web-01' });
        assert.equal(job.state, 'queued');
        assert.deepEqual(job.tasks.map((t) => t.name), ['a', 'b', 'c']);
        const done = await waitState(engine, job.id, ['succeeded', 'failed']);
        assert.equal(done.state, 'succeeded');
        assert.deepEqual(order, [0, 1, 2]);
        assert.equal(done.progress, 100);
        assert.ok(mid, 'the job was read part-way through its first task');
        assert.equal(mid.tasks[0]?.progress, 33.3);
        assert.equal(mid.progress, 11.1, 'job progress is the mean of its tasks');
        assert.deepEqual(done.result, { seq: 2, prev: { seq: 1, prev: { seq: 0, prev: null } } });
        assert.ok(done.tasks.every((t) => t.state === 'succeeded' && t.progress === 100));
        assert.deepEqual(done.log.map((l) => l.message), ['task 0', 'task 1', 'task 2']);
        const listed = await engine.list({ target: 'web-01' });
        assert.deepEqual(listed.items.map((j) => j.id), [job.id]);
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('retries a retryable failure with backoff, continuing from the task checkpoint', async () => {
      const ts = await freshStore(dialect);
      const engine = engineOn(ts.store);
      const seen: unknown[] = [];
      engine.register({
        kind: 'flaky',
        retry: { maxAttempts: 3, initialMs: 50, maxMs: 100 },
        describe: () => [{ name: 'copy' }],
        runTask: async (ctx) => {
          seen.push(ctx.checkpoint);
          const done = (ctx.checkpoint as { blocks?: number } | undefined)?.blocks ?? 0;
          await ctx.saveCheckpoint({ blocks: done + 10 });
          if (done < 20) throw new ReboundError('unavailable', 'link.down', 'link down');
          return { blocks: done + 10 };
        },
      });
      try {
        engine.start();
        const job = await engine.enqueue({ kind: 'flaky', params: {}, createdBy: 'test' });
        const done = await waitState(engine, job.id, ['succeeded', 'failed']);
        assert.equal(done.state, 'succeeded');
        assert.deepEqual(seen, [undefined, { blocks: 10 }, { blocks: 20 }]);
        assert.equal(done.attempts, 3);
        assert.equal(done.log.filter((l) => l.message.includes('retrying')).length, 2);
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('fails at once on a non-retryable error, keeps the error, and resume retries the failed task', async () => {
      const ts = await freshStore(dialect);
      const engine = engineOn(ts.store);
      let runs = 0;
      engine.register({
        kind: 'fragile',
        retry: { maxAttempts: 5, initialMs: 10 },
        describe: () => [{ name: 'one' }, { name: 'two' }],
        runTask: async (ctx) => {
          if (ctx.task.seq === 1 && runs++ === 0) throw new ReboundError('invalid', 'disk.missing', 'disk /x is missing', { hint: 'add it back' });
          return ctx.task.seq;
        },
      });
      try {
        engine.start();
        const job = await engine.enqueue({ kind: 'fragile', params: {}, createdBy: 'test' });
        const failed = await waitState(engine, job.id, ['succeeded', 'failed']);
        assert.equal(failed.state, 'failed');
        assert.deepEqual(failed.error, { code: 'disk.missing', message: 'disk /x is missing', hint: 'add it back' });
        assert.deepEqual(failed.tasks.map((t) => t.state), ['succeeded', 'failed']);
        await engine.resume(job.id, 'ops');
        const done = await waitState(engine, job.id, ['succeeded']);
        assert.deepEqual(done.tasks.map((t) => t.state), ['succeeded', 'succeeded']);
        assert.equal(done.error, undefined);
        await assert.rejects(engine.resume(job.id, 'ops'), (e: ReboundError) => e.kind === 'conflict');
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('waits for an operator on a manual action and continues after resume', async () => {
      const ts = await freshStore(dialect);
      const engine = engineOn(ts.store);
      const calls: number[] = [];
      engine.register({
        kind: 'manual',
        describe: () => [{ name: 'before' }, { name: 'check the database' }, { name: 'after' }],
        runTask: async (ctx) => {
          calls.push(ctx.task.seq);
          if (ctx.task.seq === 1) await ctx.waitForResume('check the database is up');
          return null;
        },
      });
      try {
        engine.start();
        const job = await engine.enqueue({ kind: 'manual', params: {}, createdBy: 'test' });
        const waiting = await waitState(engine, job.id, ['waiting']);
        assert.deepEqual(waiting.tasks.map((t) => t.state), ['succeeded', 'waiting', 'pending']);
        assert.ok(waiting.log.some((l) => l.message.includes('check the database is up')));
        await engine.resume(job.id, 'ops');
        const done = await waitState(engine, job.id, ['succeeded']);
        assert.equal(done.state, 'succeeded');
        assert.deepEqual(calls, [0, 1, 1, 2]);
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('cancels a running task through its signal, refuses what cannot be cancelled', async () => {
      const ts = await freshStore(dialect);
      const engine = engineOn(ts.store);
      let started = false;
      engine.register({
        kind: 'long',
        describe: () => [{ name: 'wait' }, { name: 'never' }],
        runTask: async (ctx) => {
          started = true;
          await sleep(60_000, undefined, { signal: ctx.signal });
        },
      });
      engine.register({
        kind: 'commit-like',
        cancellable: false,
        notCancellableReason: 'a commit cannot be cancelled; it finishes in seconds',
        describe: () => [{ name: 'x' }],
        runTask: async (ctx) => {
          await sleep(300, undefined, { signal: ctx.signal });
        },
      });
      try {
        engine.start();
        const job = await engine.enqueue({ kind: 'long', params: {}, createdBy: 'test' });
        await until('task start', async () => started);
        await engine.cancel(job.id, 'ops');
        const done = await waitState(engine, job.id, ['cancelled', 'failed', 'succeeded']);
        assert.equal(done.state, 'cancelled');
        assert.deepEqual(done.tasks.map((t) => t.state), ['cancelled', 'cancelled']);
        await assert.rejects(engine.cancel(job.id, 'ops'), (e: ReboundError) => e.code === 'job.ended');
        const c = await engine.enqueue({ kind: 'commit-like', params: {}, createdBy: 'test' });
        await assert.rejects(engine.cancel(c.id, 'ops'), (e: ReboundError) => e.kind === 'conflict' && /cannot be cancelled/.test(e.message));
        assert.equal((await waitState(engine, c.id, ['succeeded'])).state, 'succeeded');
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('two engines share the work and never run one job at the same time', async () => {
      const ts = await freshStore(dialect);
      const second = await ts.reopen();
      const a = engineOn(ts.store, { workerId: 'a', concurrency: 3 });
      const b = engineOn(second, { workerId: 'b', concurrency: 3 });
      const active = new Map<string, number>();
      let overlaps = 0;
      const runs: string[] = [];
      const by = new Set<string>();
      for (const [engine, name] of [[a, 'a'], [b, 'b']] as const) {
        engine.register({
          kind: 'shared',
          describe: () => [{ name: 't0' }, { name: 't1' }],
          runTask: async (ctx) => {
            const k = ctx.job.id;
            active.set(k, (active.get(k) ?? 0) + 1);
            if ((active.get(k) ?? 0) > 1) overlaps++;
            await sleep(15);
            runs.push(`${k}:${ctx.task.seq}`);
            by.add(name);
            active.set(k, (active.get(k) ?? 1) - 1);
          },
        });
      }
      try {
        const jobs = [];
        for (let i = 0; i < 24; i++) jobs.push(await a.enqueue({ kind: 'shared', params: { i }, createdBy: 'test' }));
        a.start();
        b.start();
        for (const j of jobs) assert.equal((await waitState(a, j.id, ['succeeded', 'failed'])).state, 'succeeded');
        assert.equal(overlaps, 0);
        assert.equal(runs.length, 48, 'every task ran exactly once');
        assert.equal(new Set(runs).size, 48);
        assert.deepEqual([...by].sort(), ['a', 'b'], 'both engines did work');
      } finally {
        await a.stop();
        await b.stop();
        await second.close();
        await ts.cleanup();
      }
    });

    it('two worker processes share the work and never run one job at the same time', async () => {
      const ts = await freshStore(dialect);
      const dir = mkdtempSync(path.join(tmpdir(), 'rebound-span-'));
      const file = path.join(dir, 'spans');
      const children: ChildProcess[] = [];
      const reader = new JobEngine({ store: ts.store });
      reader.register({ kind: 'test.span', describe: (p: { tasks: number }) => Array.from({ length: p.tasks }, (_, i) => ({ name: `span ${i}` })), runTask: () => Promise.resolve() });
      try {
        const jobs: JobView[] = [];
        for (let i = 0; i < 30; i++) jobs.push(await reader.enqueue({ kind: 'test.span', params: { file, tasks: 3, sleepMs: 10 }, createdBy: 'test' }));
        for (const w of ['p1', 'p2']) {
          const child = spawn(process.execPath, [workerScript, JSON.stringify({ ...ts.location, workerId: w, leaseMs: 1500, concurrency: 4 })], { stdio: ['ignore', 'pipe', 'inherit'] });
          children.push(child);
        }
        for (const j of jobs) assert.equal((await waitState(reader, j.id, ['succeeded', 'failed'])).state, 'succeeded');
        const spans = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { job: string; seq: number; start: number; end: number; worker: string });
        assert.equal(spans.length, 90, 'every task ran exactly once');
        assert.equal(new Set(spans.map((s) => `${s.job}:${s.seq}`)).size, 90);
        let overlaps = 0;
        for (const a of spans) for (const b of spans) if (a !== b && a.job === b.job && a.start < b.end && b.start < a.end) overlaps++;
        assert.equal(overlaps, 0, 'no two tasks of one job ran at once');
        for (const j of jobs) {
          const mine = spans.filter((s) => s.job === j.id).sort((x, y) => x.start - y.start);
          assert.deepEqual(mine.map((s) => s.seq), [0, 1, 2], 'tasks ran in order');
        }
        assert.deepEqual([...new Set(spans.map((s) => s.worker))].sort(), ['p1', 'p2'], 'both processes did work');
        const parallel = spans.some((a) => spans.some((b) => a.worker !== b.worker && a.start < b.end && b.start < a.end));
        assert.ok(parallel, 'the two processes really ran at the same time');
      } finally {
        for (const c of children) c.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
        await ts.cleanup();
      }
    });

    it('a job survives kill -9 of its worker: another process finishes it, each side effect once', async () => {
      const ts = await freshStore(dialect);
      const dir = mkdtempSync(path.join(tmpdir(), 'rebound-kill-'));
      const file = path.join(dir, 'effects');
      const children: ChildProcess[] = [];
      const startWorker = async (workerId: string): Promise<ChildProcess> => {
        const child = spawn(process.execPath, [workerScript, JSON.stringify({ ...ts.location, workerId, leaseMs: 1000 })], { stdio: ['ignore', 'pipe', 'inherit'] });
        children.push(child);
        await new Promise<void>((resolve, reject) => {
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`worker ${workerId} exited ${code}`)));
        });
        return child;
      };
      // The engine here only enqueues and reads; it runs nothing (no kinds registered to claim).
      const reader = new JobEngine({ store: ts.store });
      reader.register({ kind: 'test.append', describe: (p: { tasks: number }) => Array.from({ length: p.tasks }, (_, i) => ({ name: `append ${i}` })), runTask: () => Promise.resolve() });
      try {
        const job = await reader.enqueue({ kind: 'test.append', params: { file, tasks: 5, sleepMs: 300 }, createdBy: 'test' });
        // On PostgreSQL a second worker process runs alongside from the start and must take over;
        // on SQLite the same data directory is opened by a restarted process.
        const workers = new Map<string, ChildProcess>();
        const names = dialect === 'postgres' ? ['w1', 'w2'] : ['w1'];
        await Promise.all(names.map(async (n) => workers.set(n, await startWorker(n))));
        const lines = () => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean) : []);
        await until('two effects', async () => lines().length >= 2);
        const holder = (await ts.store.db.selectFrom('jobs').select('locked_by').where('id', '=', job.id).executeTakeFirstOrThrow()).locked_by;
        const victim = holder === null ? undefined : workers.get(holder);
        assert.ok(victim, `a worker holds the job (locked_by ${holder})`);
        victim.kill('SIGKILL');
        const killedAt = lines().length;
        assert.ok(killedAt < 5, 'killed mid-job');
        if (dialect === 'sqlite') await startWorker('w3');
        const done = await waitState(reader, job.id, ['succeeded', 'failed']);
        assert.equal(done.state, 'succeeded');
        assert.deepEqual(lines(), ['0', '1', '2', '3', '4'], 'each task’s side effect happened exactly once, in order');
        const survivor = dialect === 'sqlite' ? 'w3' : holder === 'w1' ? 'w2' : 'w1';
        assert.ok(done.log.some((l) => l.message.includes(`picked up by ${survivor}`)), 'the survivor took over');
        assert.ok(done.attempts >= 2, 'the job was picked up again');
      } finally {
        for (const c of children) c.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
        await ts.cleanup();
      }
    });
  });
}
