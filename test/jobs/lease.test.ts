// Leases, heartbeats and fencing on real SQLite and PostgreSQL: a task that outlives its lease
// keeps it by heartbeat; a claim superseded even by the same worker id (its token changed) can
// write nothing more; a worker process frozen with SIGSTOP is taken over by another and, thawed,
// changes nothing; a cancel made by another engine reaches the running task at its heartbeat.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { JobEngine } from '../../src/jobs/engine.ts';
import type { JobView } from '../../src/jobs/types.ts';
import { openStore } from '../../src/store/open.ts';
import { dialects, freshPostgresDatabase, freshStore } from '../support/db.ts';

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

const waitState = (engine: JobEngine, id: string, states: string[]): Promise<JobView> =>
  until(`job ${id} in ${states.join('/')}`, async () => {
    const j = await engine.get(id);
    return j && states.includes(j.state) ? j : undefined;
  });

for (const dialect of dialects) {
  describe(`job leases on ${dialect}`, () => {
    it('heartbeats keep a task that runs longer than its lease; the other engine never takes it', async () => {
      const ts = await freshStore(dialect);
      const second = await ts.reopen();
      const runs: string[] = [];
      const engines = [
        new JobEngine({ store: ts.store, workerId: 'a', leaseMs: 300, pollMs: 20 }),
        new JobEngine({ store: second, workerId: 'b', leaseMs: 300, pollMs: 20 }),
      ];
      for (const e of engines) {
        e.register({
          kind: 'slow',
          describe: () => [{ name: 'slow' }],
          runTask: async (ctx) => {
            runs.push(e.workerId);
            await sleep(1200, undefined, { signal: ctx.signal }); // four leases long
            return e.workerId;
          },
        });
      }
      try {
        const [a, b] = engines as [JobEngine, JobEngine];
        const job = await a.enqueue({ kind: 'slow', params: {}, createdBy: 'test' });
        a.start();
        await until('a runs it', async () => runs.length > 0);
        b.start();
        const done = await waitState(a, job.id, ['succeeded', 'failed']);
        assert.equal(done.state, 'succeeded');
        assert.deepEqual(runs, ['a']);
        assert.equal(done.result, 'a');
        assert.equal(done.attempts, 1);
      } finally {
        for (const e of engines) await e.stop();
        await second.close();
        await ts.cleanup();
      }
    });

    it('a superseded claim is fenced off even under the same worker id', async () => {
      const ts = await freshStore(dialect);
      const engine = new JobEngine({ store: ts.store, workerId: 'same', leaseMs: 60_000, pollMs: 20 });
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const outcomes: string[] = [];
      engine.register({
        kind: 'gated',
        describe: () => [{ name: 'one' }, { name: 'two' }],
        runTask: async (ctx) => {
          if (ctx.task.seq === 1) return 'second task';
          await ctx.saveCheckpoint({ step: 1 });
          await gate;
          for (const [what, write] of [
            ['checkpoint', () => ctx.saveCheckpoint({ step: 2 })],
            ['progress', () => ctx.progress(100)],
            ['log', () => ctx.log('stale line')],
          ] as const) {
            outcomes.push(await write().then(() => `${what} written`, (e: Error) => `${what} refused: ${e.message}`));
          }
          return 'stale result';
        },
      });
      try {
        engine.start();
        const job = await engine.enqueue({ kind: 'gated', params: {}, createdBy: 'test' });
        await until('checkpoint 1', async () => (await ts.store.db.selectFrom('tasks').select('checkpoint').where('job_id', '=', job.id).where('seq', '=', 0).executeTakeFirst())?.checkpoint === '{"step":1}');
        // What a re-claim by this same worker id looks like to the database: the token moved on.
        await ts.store.db.updateTable('jobs').set((eb) => ({ attempts: eb('attempts', '+', 1) })).where('id', '=', job.id).execute();
        const before = await engine.get(job.id);
        release();
        await until('the stale run gave up', async () => outcomes.length === 3);
        await sleep(100);
        assert.deepEqual(outcomes, ['checkpoint refused: lease lost', 'progress refused: lease lost', 'log refused: lease lost']);
        const after = await engine.get(job.id);
        assert.deepEqual(after, before, 'nothing of the stale run reached the job');
        assert.equal(after?.state, 'running');
        assert.deepEqual(after?.tasks.map((t) => t.state), ['running', 'pending']);
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('a lease left by a killed worker before the clock went back counts as expired (soak seed 5008)', async () => {
      const ts = await freshStore(dialect);
      const leaseMs = 5000;
      const engine = new JobEngine({ store: ts.store, workerId: 'restarted', leaseMs, pollMs: 20 });
      const runs: string[] = [];
      engine.register({ kind: 'resumable', describe: () => [{ name: 'one' }], runTask: (ctx) => { runs.push(ctx.job.id); return Promise.resolve('done'); } });
      try {
        const stuck = await engine.enqueue({ kind: 'resumable', params: {}, createdBy: 'test' });
        const live = await engine.enqueue({ kind: 'resumable', params: {}, createdBy: 'test' });
        const t = Date.now();
        // A worker killed while its clock was 2 hours ahead (its lease ends 2 h from now), and a
        // live worker on another server whose lease ends within one lease length.
        await ts.store.db.updateTable('jobs').set({ state: 'running', locked_by: 'killed', locked_at: t, lease_expires_at: t + 2 * 3600_000, attempts: 1 }).where('id', '=', stuck.id).execute();
        await ts.store.db.updateTable('jobs').set({ state: 'running', locked_by: 'other-server', locked_at: t, lease_expires_at: t + leaseMs + 500, attempts: 1 }).where('id', '=', live.id).execute();
        engine.start();
        const done = await waitState(engine, stuck.id, ['succeeded', 'failed']);
        assert.ok(Date.now() - t < 5000, 'taken over at once, not 2 hours later');
        assert.equal(done.state, 'succeeded');
        assert.equal(done.attempts, 2);
        const other = await engine.get(live.id);
        assert.equal(other?.state, 'running', 'a lease within one lease length (plus clock differences) is left to its holder');
        assert.deepEqual(runs, [stuck.id]);
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('a frozen worker (SIGSTOP) is taken over by another process and, thawed, writes nothing', async () => {
      const ts = await freshStore(dialect);
      const dir = mkdtempSync(path.join(tmpdir(), 'rebound-stop-'));
      const file = path.join(dir, 'effects');
      const children: ChildProcess[] = [];
      const startWorker = async (workerId: string): Promise<ChildProcess> => {
        const child = spawn(process.execPath, [workerScript, JSON.stringify({ ...ts.location, workerId, leaseMs: 600 })], { stdio: ['ignore', 'pipe', 'inherit'] });
        children.push(child);
        await new Promise<void>((resolve, reject) => {
          child.stdout?.once('data', () => resolve());
          child.once('exit', (code) => reject(new Error(`worker ${workerId} exited ${code}`)));
        });
        return child;
      };
      const reader = new JobEngine({ store: ts.store });
      reader.register({ kind: 'test.append', describe: (p: { tasks: number }) => Array.from({ length: p.tasks }, (_, i) => ({ name: `append ${i}` })), runTask: () => Promise.resolve() });
      try {
        const job = await reader.enqueue({ kind: 'test.append', params: { file, tasks: 3, sleepMs: 800 }, createdBy: 'test' });
        const frozen = await startWorker('w1');
        // Frozen inside task 1: task 0 is recorded done and task 1 has not written its line yet.
        await until('task 0 done', async () => (await reader.get(job.id))?.tasks[0]?.state === 'succeeded');
        assert.equal(readFileSync(file, 'utf8'), '0\n');
        frozen.kill('SIGSTOP');
        await startWorker('w2');
        const done = await waitState(reader, job.id, ['succeeded', 'failed']);
        assert.equal(done.state, 'succeeded');
        assert.deepEqual(done.tasks.map((t) => (t.result as { by?: string }).by), ['w1', 'w2', 'w2']);
        frozen.kill('SIGCONT');
        await sleep(1500); // its sleep ends, its heartbeat fires: every write it tries is fenced
        const later = await reader.get(job.id);
        assert.deepEqual(later, done, 'the thawed worker changed nothing in the vault');
      } finally {
        for (const c of children) {
          c.kill('SIGCONT');
          c.kill('SIGKILL');
        }
        rmSync(dir, { recursive: true, force: true });
        await ts.cleanup();
      }
    });

    it('stop() hands a running job back with its checkpoint; the next engine continues it', async () => {
      const ts = await freshStore(dialect);
      const seen: string[] = [];
      const def = (name: string) => ({
        kind: 'resumable-copy',
        describe: () => [{ name: 'copy' }],
        runTask: async (ctx: { checkpoint: unknown; saveCheckpoint(d: unknown): Promise<void>; signal: AbortSignal }) => {
          seen.push(`${name}:${JSON.stringify(ctx.checkpoint ?? null)}`);
          if (name === 'first') {
            await ctx.saveCheckpoint({ copied: 40 });
            await sleep(30_000, undefined, { signal: ctx.signal });
          }
          return { copied: 100, from: (ctx.checkpoint as { copied?: number } | undefined)?.copied ?? 0 };
        },
      });
      const first = new JobEngine({ store: ts.store, workerId: 'first', leaseMs: 60_000, pollMs: 20 });
      first.register(def('first'));
      const next = new JobEngine({ store: ts.store, workerId: 'next', leaseMs: 60_000, pollMs: 20 });
      next.register(def('next'));
      try {
        first.start();
        const job = await first.enqueue({ kind: 'resumable-copy', params: {}, createdBy: 'test' });
        await until('checkpoint', async () => seen.length === 1 && (await first.get(job.id))?.tasks[0]?.state === 'running');
        await sleep(50);
        await first.stop();
        const handed = await first.get(job.id);
        assert.equal(handed?.state, 'queued');
        assert.equal(handed?.attempts, 0, 'a handed-back job has not used an attempt');
        assert.equal(handed?.tasks[0]?.state, 'pending');
        const lease = await ts.store.db.selectFrom('jobs').select(['locked_by', 'lease_expires_at']).where('id', '=', job.id).executeTakeFirstOrThrow();
        assert.deepEqual({ ...lease }, { locked_by: null, lease_expires_at: null });
        next.start();
        const done = await waitState(next, job.id, ['succeeded', 'failed']);
        assert.deepEqual(done.result, { copied: 100, from: 40 });
        assert.deepEqual(seen, ['first:null', 'next:{"copied":40}']);
      } finally {
        await first.stop();
        await next.stop();
        await ts.cleanup();
      }
    });

    it('stop() during a claim leaves no job running and starts nothing afterwards', async () => {
      const ts = await freshStore(dialect);
      let stopped = false;
      let startedAfterStop = 0;
      const engine = new JobEngine({ store: ts.store, workerId: 'quitter', leaseMs: 60_000, pollMs: 5, concurrency: 4 });
      engine.register({
        kind: 'short',
        describe: () => [{ name: 'short' }],
        runTask: async (ctx) => {
          if (stopped) startedAfterStop++;
          await sleep(30, undefined, { signal: ctx.signal });
        },
      });
      try {
        for (let i = 0; i < 12; i++) await engine.enqueue({ kind: 'short', params: {}, createdBy: 'test' });
        for (let round = 0; round < 6; round++) {
          stopped = false;
          engine.start();
          // Stop at different moments of the first claim's trip to the database.
          if (round === 0) await new Promise((r) => setImmediate(r));
          else await sleep(round);
          await engine.stop();
          stopped = true;
          const held = await ts.store.db.selectFrom('jobs').select(['id', 'state']).where((eb) => eb.or([eb('locked_by', 'is not', null), eb('state', '=', 'running')])).execute();
          assert.deepEqual(held.map((r) => ({ ...r })), [], `round ${round}: no job left claimed`);
          await sleep(100);
          assert.equal(startedAfterStop, 0, `round ${round}: nothing started after stop() returned`);
        }
      } finally {
        await engine.stop();
        await ts.cleanup();
      }
    });

    it('a cancel made through another engine reaches the running task at its next heartbeat', async () => {
      const ts = await freshStore(dialect);
      const second = await ts.reopen();
      const runner = new JobEngine({ store: ts.store, workerId: 'runner', leaseMs: 300, pollMs: 20 });
      const api = new JobEngine({ store: second, workerId: 'api' });
      let aborted = false;
      const def = {
        kind: 'long',
        describe: () => [{ name: 'wait' }],
        runTask: async (ctx: { signal: AbortSignal }) => {
          try {
            await sleep(30_000, undefined, { signal: ctx.signal });
          } finally {
            aborted = ctx.signal.aborted;
          }
        },
      };
      runner.register(def);
      api.register(def);
      try {
        runner.start();
        const job = await api.enqueue({ kind: 'long', params: {}, createdBy: 'test' });
        await waitState(api, job.id, ['running']);
        const t0 = Date.now();
        const requested = await api.cancel(job.id, 'ops');
        assert.equal(requested.state, 'running');
        assert.equal(requested.cancelRequested, true);
        const done = await waitState(api, job.id, ['cancelled', 'failed', 'succeeded']);
        assert.equal(done.state, 'cancelled');
        assert.ok(aborted, 'the task saw its signal fire');
        assert.ok(Date.now() - t0 < 2000, 'within a few heartbeats');
      } finally {
        await runner.stop();
        await second.close();
        await ts.cleanup();
      }
    });
  });
}

describe('job leases when PostgreSQL becomes unreachable', () => {
  it('a worker cut off from the store stops its task once its lease may have run out; another takes over', async () => {
    const url = new URL(await freshPostgresDatabase());
    // A TCP relay between the worker and PostgreSQL that the test can cut.
    const sockets = new Set<Socket>();
    let cut = false;
    const relay = createServer((client) => {
      if (cut) return client.destroy();
      const upstream = createConnection({ host: url.hostname, port: Number(url.port) });
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    const relayed = new URL(url);
    relayed.host = `127.0.0.1:${(relay.address() as { port: number }).port}`;
    const cutOff = await openStore({ url: relayed.toString() });
    const direct = await openStore({ url: url.toString() });
    const reasons: string[] = [];
    const runs: string[] = [];
    const mk = (name: string) => ({
      kind: 'long',
      describe: () => [{ name: 'long' }],
      runTask: async (ctx: { signal: AbortSignal }) => {
        runs.push(name);
        if (name === 'cut') {
          await sleep(30_000, undefined, { signal: ctx.signal }).catch(() => undefined);
          reasons.push((ctx.signal.reason as Error).message);
          return null;
        }
        return 'done by the other';
      },
    });
    const a = new JobEngine({ store: cutOff, workerId: 'cut', leaseMs: 900, pollMs: 20 });
    a.register(mk('cut'));
    const b = new JobEngine({ store: direct, workerId: 'other', leaseMs: 900, pollMs: 20 });
    b.register(mk('other'));
    try {
      const job = await b.enqueue({ kind: 'long', params: {}, createdBy: 'test' });
      a.start();
      await until('a runs it', async () => runs.length === 1);
      cut = true;
      for (const s of sockets) s.destroy();
      const t0 = Date.now();
      await until('a stops its task', async () => reasons.length === 1, 10_000);
      assert.match(reasons[0] ?? '', /store was unreachable/);
      assert.ok(Date.now() - t0 < 1500, 'within about one lease');
      b.start();
      const done = await waitState(b, job.id, ['succeeded', 'failed']);
      assert.equal(done.result, 'done by the other');
      assert.deepEqual(runs, ['cut', 'other']);
    } finally {
      await a.stop();
      await b.stop();
      await cutOff.close().catch(() => undefined);
      await direct.close();
      relay.close();
      for (const s of sockets) s.destroy();
    }
  });
});
