// The durable job engine (a worker role of the vault), modelled on graphile-worker and pg-boss.
//
// Life of a job:
//   queued ──claim (lease)──▶ running ──all tasks done──▶ succeeded
//     ▲                        │ │ │
//     │   retryable failure ◀──┘ │ └──▶ failed (non-retryable, or attempts used up) ──resume──▶ queued
//     │   lease expired (crash)  │
//     │   graceful stop          └──▶ waiting (manual action) ──resume──▶ queued
//   cancel: queued/waiting → cancelled at once; running → cancel_requested, the task's
//   AbortSignal fires (here, or in the other process at its next heartbeat) → cancelled.
//
// Claiming takes a lease: `locked_by = me`, `lease_expires_at = now + lease`. Every later write is
// fenced by `locked_by = me`, so a worker that lost its lease (it stalled, another took over)
// cannot change the job. Heartbeats extend the lease while a task runs; a job whose lease expired
// is claimable again, and the next worker continues at the first unfinished task, handing that
// task its last checkpoint. On PostgreSQL the claim uses FOR UPDATE SKIP LOCKED; on SQLite the
// single UPDATE … RETURNING statement is atomic (writers are serialised).
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import type { UpdateQueryBuilder } from 'kysely';
import type { Logger } from 'pino';
import { conflict, notFound, ReboundError, toReboundError } from '../domain/errors.ts';
import { newId, now, parseJson } from '../store/ids.ts';
import type { Store } from '../store/open.ts';
import type { Database, Row } from '../store/schema.ts';
import { backoffMs, retryPolicy, shouldRetry } from './retry.ts';
import type { EnqueueRequest, ErrorView, HookContext, JobDefinition, JobFilter, JobView, LogLine, TaskContext } from './types.ts';
import { terminalJobStates } from './types.ts';
import { decodeCursor, encodeCursor, jobProgress, jobView } from './views.ts';

export interface JobEngineOptions {
  store: Store;
  workerId?: string;
  /** Lease length; a crashed worker's job is picked up this long after its last heartbeat. */
  leaseMs?: number;
  /** How often an idle worker looks for work. */
  pollMs?: number;
  /** Jobs run at once by this worker. */
  concurrency?: number;
  logger?: Logger;
}

interface Running {
  ac: AbortController;
  /** Aborts compensation hooks (which run after `ac` fired) on shutdown or lease loss. */
  hookAc: AbortController;
  /** Until when the lease is surely ours (as of the last heartbeat that got through). */
  leaseUntil: number;
  done: Promise<void>;
}

class Interrupt extends Error {
  readonly why: 'cancel' | 'shutdown' | 'lease-lost' | 'wait';
  constructor(why: Interrupt['why'], message: string) {
    super(message);
    this.why = why;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDefinition = JobDefinition<any>;

/**
 * Claims beyond the retry budget that a job may take before it is failed: each claim after a
 * crash or a lost lease counts one, so a job that kills its worker every time ends instead of
 * killing workers forever.
 */
const crashAllowance = 3;

/**
 * What this worker holds of a job: the claim's attempt number is the fencing token. A claim always
 * bumps `attempts`, so `locked_by = me AND attempts = token` stays true only for this claim: not
 * after another worker took over, nor after this same worker re-claimed the job whose lease it let
 * expire (an event loop stalled longer than the lease) while the first run is still going.
 */
interface Lease {
  id: string;
  token: number;
}

export class JobEngine {
  readonly workerId: string;
  readonly #store: Store;
  readonly #leaseMs: number;
  readonly #pollMs: number;
  readonly #concurrency: number;
  readonly #log: Logger | undefined;
  readonly #defs = new Map<string, AnyDefinition>();
  readonly #events = new EventEmitter();
  readonly #running = new Map<string, Running>();
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  #stopping = false;
  #polling = false;
  #inFlight: Promise<void> = Promise.resolve();

  constructor(opts: JobEngineOptions) {
    this.#store = opts.store;
    this.workerId = opts.workerId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.#leaseMs = opts.leaseMs ?? 30_000;
    this.#pollMs = opts.pollMs ?? 250;
    this.#concurrency = opts.concurrency ?? 4;
    this.#log = opts.logger;
    this.#events.setMaxListeners(0);
  }

  register(def: AnyDefinition): void {
    if (this.#defs.has(def.kind)) throw new Error(`job kind ${def.kind} registered twice`);
    this.#defs.set(def.kind, def);
  }

  kinds(): string[] {
    return [...this.#defs.keys()];
  }

  on(event: 'job', fn: (job: JobView) => void): void {
    this.#events.on(event, fn);
  }

  off(event: 'job', fn: (job: JobView) => void): void {
    this.#events.off(event, fn);
  }

  // ---- operations ------------------------------------------------------------------------------

  async enqueue(req: EnqueueRequest): Promise<JobView> {
    const def = this.#defs.get(req.kind);
    if (!def) throw new ReboundError('invalid', 'job.unknown-kind', `no job kind '${req.kind}' is known to this server`);
    const params = def.validate ? def.validate(req.params) : req.params;
    const db = this.#store.db;
    if (req.idempotencyKey !== undefined) {
      const existing = await db.selectFrom('jobs').select('id').where('idempotency_key', '=', req.idempotencyKey).executeTakeFirst();
      if (existing) return (await this.get(existing.id)) as JobView;
    }
    const plan = def.describe(params);
    if (plan.length === 0) throw new Error(`job kind ${req.kind} described no tasks`);
    const policy = retryPolicy(def.retry);
    const id = newId();
    const t = now();
    const jobRow: Row<'jobs'> = {
      id,
      kind: req.kind,
      target: req.target ?? '',
      state: 'queued',
      params: JSON.stringify(params ?? {}),
      result: null,
      error: null,
      progress: 0,
      attempts: 0,
      max_attempts: policy.maxAttempts,
      run_after: t,
      locked_by: null,
      locked_at: null,
      lease_expires_at: null,
      cancel_requested: 0,
      idempotency_key: req.idempotencyKey ?? null,
      created_by: req.createdBy,
      created_at: t,
      started_at: null,
      finished_at: null,
      updated_at: t,
    };
    const taskRows: Row<'tasks'>[] = plan.map((p, seq) => ({
      id: newId(),
      job_id: id,
      seq,
      name: p.name,
      state: 'pending',
      progress: 0,
      checkpoint: null,
      result: null,
      error: null,
      started_at: null,
      finished_at: null,
      resumed_at: null,
    }));
    try {
      await db.transaction().execute(async (tx) => {
        await tx.insertInto('jobs').values(jobRow).execute();
        await tx.insertInto('tasks').values(taskRows).execute();
      });
    } catch (err) {
      // Two enqueues raced on one idempotency key: the other won; return its job.
      if (req.idempotencyKey !== undefined) {
        const existing = await db.selectFrom('jobs').select('id').where('idempotency_key', '=', req.idempotencyKey).executeTakeFirst();
        if (existing) return (await this.get(existing.id)) as JobView;
      }
      throw err;
    }
    // Built from what was just written: no read back.
    const view = jobView(jobRow, taskRows, []);
    this.#emit(view);
    this.#kick();
    return view;
  }

  async get(id: string, logLines = 100): Promise<JobView | undefined> {
    const db = this.#store.db;
    const job = await db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    if (!job) return undefined;
    const tasks = await db.selectFrom('tasks').selectAll().where('job_id', '=', id).orderBy('seq').execute();
    const log = await db.selectFrom('job_log').selectAll().where('job_id', '=', id).orderBy('id', 'desc').limit(logLines).execute();
    return jobView(job, tasks, log.reverse());
  }

  async list(filter: JobFilter): Promise<{ items: JobView[]; next: string | null }> {
    const limit = Math.min(Math.max(filter.limit ?? 50, 1), 500);
    let q = this.#store.db.selectFrom('jobs').selectAll();
    if (filter.state) q = q.where('state', '=', filter.state);
    if (filter.kind) q = q.where('kind', '=', filter.kind);
    if (filter.target) q = q.where('target', '=', filter.target);
    if (filter.cursor) {
      const c = decodeCursor(filter.cursor);
      if (!c) throw new ReboundError('invalid', 'bad-cursor', 'the cursor is not one this server gave out', { hint: 'start again without a cursor' });
      q = q.where((eb) => eb.or([eb('created_at', '<', c.createdAt), eb.and([eb('created_at', '=', c.createdAt), eb('id', '<', c.id)])]));
    }
    const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit + 1).execute();
    const page = rows.slice(0, limit);
    const ids = page.map((r) => r.id);
    const tasks = ids.length ? await this.#store.db.selectFrom('tasks').selectAll().where('job_id', 'in', ids).execute() : [];
    const items = page.map((j) => jobView(j, tasks.filter((t) => t.job_id === j.id), []));
    const last = page[page.length - 1];
    return { items, next: rows.length > limit && last ? encodeCursor(last.created_at, last.id) : null };
  }

  async cancel(id: string, by: string): Promise<JobView> {
    const job = await this.get(id, 0);
    if (!job) throw notFound('job.not-found', `no job ${id}`);
    if (terminalJobStates.includes(job.state)) {
      throw conflict('job.ended', `job ${id} has already ${job.state === 'succeeded' ? 'succeeded' : job.state === 'failed' ? 'failed' : 'been cancelled'}; there is nothing to cancel`);
    }
    const def = this.#defs.get(job.kind);
    const allowed = def?.cancellable === undefined ? true : typeof def.cancellable === 'function' ? def.cancellable(job) : def.cancellable;
    if (!allowed) {
      throw conflict('job.not-cancellable', def?.notCancellableReason ?? `a ${job.kind} job cannot be cancelled at this point; wait for it to finish`);
    }
    const db = this.#store.db;
    const t = now();
    // A job that has done some work and whose kind compensates goes through a worker, which runs
    // onCancel under a lease (so does one that never started when its kind asks for it: its
    // enqueue set state the hook restores); any other queued or waiting job ends here and now.
    const viaWorker = def?.onCancel !== undefined && (job.startedAt !== null || def.compensateUnstarted === true);
    const direct = viaWorker
      ? await db
          .updateTable('jobs')
          .set((eb) => ({ state: 'queued', run_after: t, updated_at: t, cancel_requested: 1, max_attempts: eb('max_attempts', '+', 1) }))
          .where('id', '=', id)
          .where('state', 'in', ['queued', 'waiting'])
          .executeTakeFirst()
      : await db
          .updateTable('jobs')
          .set({ state: 'cancelled', finished_at: t, updated_at: t, locked_by: null, lease_expires_at: null, cancel_requested: 1 })
          .where('id', '=', id)
          .where('state', 'in', ['queued', 'waiting'])
          .executeTakeFirst();
    if (Number(direct.numUpdatedRows) > 0 && viaWorker) {
      await this.#appendLog(id, null, `cancel requested by ${by}`, 'warn');
      this.#kick();
    } else if (Number(direct.numUpdatedRows) > 0) {
      await db.updateTable('tasks').set({ state: 'cancelled', finished_at: t }).where('job_id', '=', id).where('state', 'in', ['pending', 'waiting', 'running']).execute();
      await this.#appendLog(id, null, `cancelled by ${by}`, 'warn');
    } else {
      await db.updateTable('jobs').set({ cancel_requested: 1, updated_at: t }).where('id', '=', id).where('state', '=', 'running').execute();
      await this.#appendLog(id, null, `cancel requested by ${by}`, 'warn');
      this.#running.get(id)?.ac.abort(new Interrupt('cancel', `cancelled by ${by}`));
    }
    const view = (await this.get(id)) as JobView;
    this.#emit(view);
    return view;
  }

  async resume(id: string, by: string): Promise<JobView> {
    const job = await this.get(id, 0);
    if (!job) throw notFound('job.not-found', `no job ${id}`);
    const db = this.#store.db;
    const t = now();
    if (job.state === 'waiting') {
      const updated = await db.transaction().execute(async (tx) => {
        const r = await tx
          .updateTable('jobs')
          .set((eb) => ({ state: 'queued', run_after: t, updated_at: t, max_attempts: eb('max_attempts', '+', 1) }))
          .where('id', '=', id)
          .where('state', '=', 'waiting')
          .executeTakeFirst();
        if (Number(r.numUpdatedRows) === 0) return false;
        await tx.updateTable('tasks').set({ state: 'pending', resumed_at: t }).where('job_id', '=', id).where('state', '=', 'waiting').execute();
        return true;
      });
      if (!updated) throw conflict('job.not-waiting', `job ${id} is no longer waiting`);
      await this.#appendLog(id, null, `resumed by ${by}`);
    } else if (job.state === 'failed') {
      if (this.#defs.get(job.kind)?.resumable === false) {
        throw conflict('job.not-resumable', `a failed ${job.kind} job cannot be retried; start a new one`);
      }
      await db.transaction().execute(async (tx) => {
        await tx
          .updateTable('jobs')
          // attempts only ever grows (it is the claims' fencing token): a retry gets a fresh budget.
          .set((eb) => ({
            state: 'queued',
            run_after: t,
            updated_at: t,
            error: null,
            finished_at: null,
            cancel_requested: 0,
            max_attempts: eb('attempts', '+', retryPolicy(this.#defs.get(job.kind)?.retry).maxAttempts),
          }))
          .where('id', '=', id)
          .where('state', '=', 'failed')
          .execute();
        await tx.updateTable('tasks').set({ state: 'pending', error: null, finished_at: null }).where('job_id', '=', id).where('state', '=', 'failed').execute();
      });
      await this.#appendLog(id, null, `retried by ${by}`);
    } else {
      throw conflict('job.not-resumable', `job ${id} is ${job.state}; only a job that waits for an operator or has failed can be resumed`);
    }
    const view = (await this.get(id)) as JobView;
    this.#emit(view);
    this.#kick();
    return view;
  }

  // ---- the worker -----------------------------------------------------------------------------

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#stopping = false;
    this.#schedule(0);
  }

  /** Stops claiming, interrupts running tasks and hands their jobs back (no lease left behind). */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#started = false;
    if (this.#timer) clearTimeout(this.#timer);
    // A claim in flight must land in #running first, or its jobs would start after we returned.
    await this.#inFlight;
    for (const r of this.#running.values()) {
      const why = new Interrupt('shutdown', 'worker stopping');
      r.ac.abort(why);
      r.hookAc.abort(why);
    }
    await Promise.allSettled([...this.#running.values()].map((r) => r.done));
  }

  /** Claims and runs what it can now; returns the number of jobs claimed (tests use it). */
  async poll(): Promise<number> {
    if (this.#polling || this.#stopping) return 0;
    this.#polling = true;
    const p = this.#pollOnce();
    this.#inFlight = p.then(() => undefined);
    return await p;
  }

  async #pollOnce(): Promise<number> {
    let claimed = 0;
    try {
      while (!this.#stopping && this.#running.size < this.#concurrency) {
        const jobs = await this.#claim(this.#concurrency - this.#running.size);
        if (jobs.length === 0) break;
        claimed += jobs.length;
        const preloaded = await this.#loadTasks(jobs.map((j) => j.id));
        for (const job of jobs) {
          // Our own earlier run of this job let its lease expire (it stalled) and we re-claimed
          // it: the old run is fenced off already; stop it too.
          const stale = this.#running.get(job.id);
          if (stale) {
            const why = new Interrupt('lease-lost', 'lease lost');
            stale.ac.abort(why);
            stale.hookAc.abort(why);
          }
          const entry = { ac: new AbortController(), hookAc: new AbortController(), leaseUntil: Number(job.lease_expires_at) } as Running;
          entry.done = this.#run(job, entry, preloaded?.get(job.id)).finally(() => {
            if (this.#running.get(job.id) === entry) this.#running.delete(job.id);
            this.#kick();
          });
          this.#running.set(job.id, entry);
        }
      }
    } catch (err) {
      // SQLite may answer "database is locked" when another process writes: try again soon.
      this.#log?.debug({ err }, 'claim failed; will retry');
    } finally {
      this.#polling = false;
    }
    return claimed;
  }

  #schedule(ms: number): void {
    if (!this.#started || this.#stopping) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      void this.poll().finally(() => this.#schedule(this.#pollMs));
    }, ms);
  }

  #kick(): void {
    if (this.#started && !this.#stopping) this.#schedule(0);
  }

  /** Claims up to `max` claimable jobs in one statement. */
  async #claim(max: number): Promise<Row<'jobs'>[]> {
    const kinds = this.kinds();
    if (kinds.length === 0) return [];
    const db = this.#store.db;
    const t = now();
    let sub = db
      .selectFrom('jobs')
      .select('id')
      .where('kind', 'in', kinds)
      .where((eb) =>
        eb.or([
          eb.and([eb('state', '=', 'queued'), eb('run_after', '<=', t)]),
          eb.and([eb('state', '=', 'running'), eb('lease_expires_at', '<', t)]),
          // A lease can end at most one lease length after its holder's clock; one that ends
          // further ahead than that (plus one more lease length for clock differences between
          // servers) was taken before this clock went back, and its holder is dead or has lost
          // it: it counts as expired. Our own running jobs are left to their heartbeat, which
          // moves the lease to the new clock. The `locked_by` fencing keeps a stale holder from
          // writing.
          eb.and([eb('state', '=', 'running'), eb('lease_expires_at', '>', t + 2 * this.#leaseMs), eb('locked_by', '!=', this.workerId)]),
        ]),
      )
      .orderBy('run_after')
      .orderBy('created_at')
      .limit(max);
    if (this.#store.dialect === 'postgres') sub = sub.forUpdate().skipLocked();
    const rows = await db
      .updateTable('jobs')
      .set((eb) => ({
        state: 'running',
        locked_by: this.workerId,
        locked_at: t,
        lease_expires_at: t + this.#leaseMs,
        attempts: eb('attempts', '+', 1),
        started_at: eb.fn.coalesce('started_at', eb.val(t)),
        updated_at: t,
      }))
      .where('id', 'in', sub)
      .returningAll()
      .execute();
    return rows;
  }

  /** The tasks of just-claimed jobs in one query (one round trip instead of one per job). */
  async #loadTasks(ids: string[]): Promise<Map<string, Row<'tasks'>[]> | undefined> {
    try {
      const rows = await this.#store.db.selectFrom('tasks').selectAll().where('job_id', 'in', ids).orderBy('job_id').orderBy('seq').execute();
      const byJob = new Map<string, Row<'tasks'>[]>();
      for (const r of rows) {
        const list = byJob.get(r.job_id);
        if (list) list.push(r);
        else byJob.set(r.job_id, [r]);
      }
      return byJob;
    } catch (err) {
      this.#log?.debug({ err }, 'loading tasks failed; each job loads its own');
      return undefined;
    }
  }

  async #run(row: Row<'jobs'>, running: Running, preloaded?: Row<'tasks'>[]): Promise<void> {
    const lease: Lease = { id: row.id, token: row.attempts };
    const def = this.#defs.get(row.kind);
    if (!def) return;
    const { ac } = running;
    const heartbeat = setInterval(() => {
      void this.#heartbeat(lease, running);
    }, Math.max(50, Math.floor(this.#leaseMs / 3)));
    const tasks: Row<'tasks'>[] = [];
    try {
      if (row.attempts > 1) await this.#leaseLog(lease, null, `picked up by ${this.workerId} (attempt ${row.attempts})`);
      tasks.push(...(preloaded ?? (await this.#store.db.selectFrom('tasks').selectAll().where('job_id', '=', row.id).orderBy('seq').execute())));
      if (Number(row.cancel_requested) === 1) throw new Interrupt('cancel', 'cancel requested');
      if (row.attempts > row.max_attempts + crashAllowance) {
        throw new ReboundError('internal', 'job.worker-lost', `job ${row.id} was started ${row.attempts - 1} times and its worker stopped without a word each time (killed, out of memory, or the host went down)`, {
          hint: 'look at the worker logs and the host (dmesg for the OOM killer); rebound job resume retries it',
          retryable: false,
        });
      }
      const result = await this.#runTasks(row, lease, def, ac.signal, tasks);
      await this.#finish(lease, 'succeeded', result);
    } catch (err) {
      await this.#handleFailure(row, lease, def, err, running, tasks);
    } finally {
      clearInterval(heartbeat);
      this.#emitById(row.id);
    }
  }

  async #runTasks(row: Row<'jobs'>, lease: Lease, def: AnyDefinition, signal: AbortSignal, tasks: Row<'tasks'>[]): Promise<unknown> {
    const id = row.id;
    const results = new Map<number, unknown>();
    const params = parseJson<unknown>(row.params, {});
    let lastResult: unknown = null;
    for (const task of tasks) {
      if (task.state === 'succeeded' || task.state === 'skipped') {
        lastResult = parseJson<unknown>(task.result, null);
        results.set(task.seq, lastResult);
        continue;
      }
      if (signal.aborted) throw signal.reason;
      const startedAt = task.started_at ?? now();
      await this.#fencedTask(lease, task.seq, { state: 'running', started_at: startedAt, error: null });
      Object.assign(task, { state: 'running', started_at: startedAt, error: null });
      // The view handed to the task is built from what this worker already holds: no extra reads.
      const view = jobView({ ...row, state: 'running', progress: jobProgress(tasks) }, tasks, []);
      this.#emitById(id);
      let checkpoint = parseJson<unknown>(task.checkpoint, undefined);
      let lastProgressWrite = 0;
      const ctx: TaskContext = {
        job: view,
        params,
        task: view.tasks[task.seq] ?? { seq: task.seq, name: task.name, state: 'running', progress: 0, startedAt: null, finishedAt: null },
        signal,
        get checkpoint() {
          return checkpoint;
        },
        saveCheckpoint: async (data) => {
          const text = JSON.stringify(data ?? null);
          await this.#fencedTask(lease, task.seq, { checkpoint: text });
          task.checkpoint = text;
          checkpoint = data;
        },
        progress: async (pct) => {
          const t = Date.now();
          // Progress is advisory: at most five writes a second per task, but 100 % always lands.
          if (pct < 100 && t - lastProgressWrite < 200) return;
          lastProgressWrite = t;
          const p = Math.max(0, Math.min(100, pct));
          await this.#fencedTask(lease, task.seq, { progress: p });
          task.progress = p;
          await this.#fencedJob(lease, { progress: jobProgress(tasks) });
          this.#emitById(id);
        },
        log: (message, level = 'info') => this.#leaseLog(lease, task.seq, message, level),
        waitForResume: async (reason) => {
          if (task.resumed_at !== null) return;
          throw new Interrupt('wait', reason);
        },
        results,
      };
      const result = await def.runTask(ctx);
      if (signal.aborted) throw signal.reason;
      lastResult = result ?? null;
      results.set(task.seq, lastResult);
      const finishedAt = now();
      await this.#fencedTask(lease, task.seq, { state: 'succeeded', progress: 100, result: JSON.stringify(lastResult), finished_at: finishedAt });
      Object.assign(task, { state: 'succeeded', progress: 100, finished_at: finishedAt });
      if (task !== tasks[tasks.length - 1]) await this.#fencedJob(lease, { progress: jobProgress(tasks) });
      this.#emitById(id);
    }
    return lastResult;
  }

  /** Runs a compensation hook; its failure is logged, never changes the outcome. */
  async #hook(
    which: 'onCancel' | 'onFail',
    row: Row<'jobs'>,
    lease: Lease,
    def: AnyDefinition,
    running: Running,
    tasks: Row<'tasks'>[],
    error?: ErrorView,
  ): Promise<void> {
    const hook = def[which];
    if (!hook) return;
    const current = tasks.find((t) => t.state === 'running' || t.state === 'waiting') ?? tasks.find((t) => t.state === 'pending');
    const view = jobView({ ...row, state: 'running', progress: jobProgress(tasks) }, tasks, []);
    const ctx: HookContext = {
      job: view,
      params: parseJson<unknown>(row.params, {}),
      task: current ? view.tasks[current.seq] : undefined,
      signal: running.hookAc.signal,
      log: (message, level = 'info') => this.#leaseLog(lease, null, message, level),
      ...(error ? { error } : {}),
    };
    try {
      await hook.call(def, ctx);
    } catch (err) {
      if (running.hookAc.signal.aborted) throw running.hookAc.signal.reason;
      const e = toReboundError(err);
      await this.#leaseLog(lease, null, `${which === 'onCancel' ? 'clean-up after cancel' : 'clean-up after failure'} failed: ${e.message}${e.hint ? ` (${e.hint})` : ''}`, 'error');
    }
    if (running.hookAc.signal.aborted) throw running.hookAc.signal.reason;
  }

  async #handleFailure(row: Row<'jobs'>, lease: Lease, def: AnyDefinition, err: unknown, running: Running, tasks: Row<'tasks'>[]): Promise<void> {
    const id = row.id;
    const signal = running.ac.signal;
    const reason = err instanceof Interrupt ? err : signal.aborted && signal.reason instanceof Interrupt ? signal.reason : undefined;
    try {
      if (reason?.why === 'lease-lost') {
        this.#log?.warn({ job: id }, 'lease lost; another worker owns the job now');
        return;
      }
      if (reason?.why === 'shutdown') {
        // Hand the job back: the next worker (or this one restarted) continues it at once. The
        // attempt is given back too: stopping is not the job's fault.
        await this.#fencedTasksWhere(lease, ['running'], { state: 'pending' });
        await this.#fencedJob(lease, { state: 'queued', locked_by: null, lease_expires_at: null, run_after: now(), attempts: Math.max(0, lease.token - 1) });
        await this.#appendLog(id, null, `handed back by ${this.workerId}, which is stopping`);
        return;
      }
      if (reason?.why === 'wait') {
        await this.#fencedTasksWhere(lease, ['running'], { state: 'waiting' });
        await this.#leaseLog(lease, null, `waiting for an operator: ${reason.message} (resume with: rebound job resume ${id})`, 'warn');
        await this.#fencedJob(lease, { state: 'waiting', locked_by: null, lease_expires_at: null });
        return;
      }
      if (reason?.why === 'cancel') {
        await this.#hook('onCancel', row, lease, def, running, tasks);
        const t = now();
        await this.#fencedTasksWhere(lease, ['running', 'pending', 'waiting'], { state: 'cancelled', finished_at: t });
        await this.#leaseLog(lease, null, 'cancelled', 'warn');
        await this.#finish(lease, 'cancelled');
        return;
      }
      const e = toReboundError(err);
      const errorView: ErrorView = { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) };
      const policy = { ...retryPolicy(def.retry), maxAttempts: row.max_attempts };
      const attempts = lease.token;
      if (shouldRetry(policy, attempts, e.code, e.retryable)) {
        const delay = backoffMs(policy, attempts);
        await this.#fencedTasksWhere(lease, ['running'], { state: 'pending', error: JSON.stringify(errorView) });
        await this.#leaseLog(lease, null, `attempt ${attempts} failed: ${e.message}; retrying in ${Math.round(delay / 100) / 10} s`, 'warn');
        await this.#fencedJob(lease, { state: 'queued', run_after: now() + delay, locked_by: null, lease_expires_at: null });
        return;
      }
      if (e.kind === 'internal') this.#log?.error({ err, job: id }, 'job failed');
      await this.#hook('onFail', row, lease, def, running, tasks, errorView);
      await this.#fencedTasksWhere(lease, ['running'], { state: 'failed', error: JSON.stringify(errorView), finished_at: now() });
      await this.#leaseLog(lease, null, `failed: ${e.message}${e.hint ? ` (${e.hint})` : ''}`, 'error');
      await this.#fencedJob(lease, { error: JSON.stringify(errorView) });
      await this.#finish(lease, 'failed');
    } catch (inner) {
      if (inner instanceof Interrupt && (inner.why === 'lease-lost' || inner.why === 'shutdown')) return;
      this.#log?.error({ err: inner, job: id }, 'could not record the job outcome; the lease will expire and the job will be retried');
    }
  }

  async #heartbeat(lease: Lease, running: Running): Promise<void> {
    if (running.hookAc.signal.aborted) return;
    const sentAt = now();
    try {
      const r = await this.#fence(
        this.#store.db.updateTable('jobs').set({ lease_expires_at: sentAt + this.#leaseMs }).where('id', '=', lease.id),
        lease,
      )
        .returning(['cancel_requested'])
        .executeTakeFirst();
      if (!r) {
        const why = new Interrupt('lease-lost', 'lease lost');
        running.ac.abort(why);
        running.hookAc.abort(why);
      } else {
        running.leaseUntil = sentAt + this.#leaseMs;
        if (Number(r.cancel_requested) === 1) running.ac.abort(new Interrupt('cancel', 'cancel requested'));
      }
    } catch (err) {
      this.#log?.warn({ err, job: lease.id }, 'heartbeat failed');
      // The store is unreachable: once the lease may have run out, another worker may be running
      // this task; stop ours rather than run it twice.
      if (now() >= running.leaseUntil - this.#leaseMs / 6) {
        const why = new Interrupt('lease-lost', 'lease lost: the store was unreachable for the whole lease');
        running.ac.abort(why);
        running.hookAc.abort(why);
      }
    }
  }

  async #finish(lease: Lease, state: 'succeeded' | 'failed' | 'cancelled', result?: unknown): Promise<void> {
    await this.#fencedJob(lease, {
      state,
      ...(result !== undefined ? { result: JSON.stringify(result) } : {}),
      finished_at: now(),
      locked_by: null,
      lease_expires_at: null,
      ...(state === 'succeeded' ? { progress: 100 } : {}),
    });
  }

  /** Restricts a jobs update to the row this claim still holds. */
  #fence<O>(q: UpdateQueryBuilder<Database, 'jobs', 'jobs', O>, lease: Lease): UpdateQueryBuilder<Database, 'jobs', 'jobs', O> {
    return q.where('locked_by', '=', this.workerId).where('attempts', '=', lease.token);
  }

  async #fencedJob(lease: Lease, set: Partial<Row<'jobs'>>): Promise<void> {
    const r = await this.#fence(this.#store.db.updateTable('jobs').set({ ...set, updated_at: now() }).where('id', '=', lease.id), lease).executeTakeFirst();
    if (Number(r.numUpdatedRows) === 0) throw new Interrupt('lease-lost', 'lease lost');
  }

  async #fencedTask(lease: Lease, seq: number, set: Partial<Row<'tasks'>>): Promise<void> {
    await this.#fencedTasksWhere(lease, undefined, set, seq);
  }

  async #fencedTasksWhere(lease: Lease, states: string[] | undefined, set: Partial<Row<'tasks'>>, seq?: number): Promise<void> {
    let q = this.#store.db
      .updateTable('tasks')
      .set(set)
      .where('job_id', '=', lease.id)
      .where((eb) =>
        eb.exists(
          eb
            .selectFrom('jobs')
            .select('jobs.id')
            .where('jobs.id', '=', lease.id)
            .where('jobs.locked_by', '=', this.workerId)
            .where('jobs.attempts', '=', lease.token),
        ),
      );
    if (states) q = q.where('state', 'in', states);
    if (seq !== undefined) q = q.where('seq', '=', seq);
    const r = await q.executeTakeFirst();
    if (seq !== undefined && Number(r.numUpdatedRows) === 0) throw new Interrupt('lease-lost', 'lease lost');
  }

  /** A log line written under the lease: a worker that lost it cannot add to the job's log. */
  async #leaseLog(lease: Lease, task: number | null, message: string, level: LogLine['level'] = 'info'): Promise<void> {
    const db = this.#store.db;
    const ms = this.#store.dialect === 'postgres' ? 'bigint' : 'integer';
    const r = await db
      .insertInto('job_log')
      .columns(['job_id', 'task_seq', 'at', 'level', 'message'])
      .expression(
        db
          .selectFrom('jobs')
          .select((eb) => [
            'jobs.id as job_id',
            eb.cast<number | null>(eb.val(task), 'integer').as('task_seq'),
            eb.cast<number>(eb.val(now()), ms).as('at'),
            eb.cast<string>(eb.val(level), 'text').as('level'),
            eb.cast<string>(eb.val(message), 'text').as('message'),
          ])
          .where('jobs.id', '=', lease.id)
          .where('jobs.locked_by', '=', this.workerId)
          .where('jobs.attempts', '=', lease.token),
      )
      .executeTakeFirst();
    if (Number(r.numInsertedOrUpdatedRows ?? 0) === 0) throw new Interrupt('lease-lost', 'lease lost');
    this.#log?.[level === 'error' ? 'error' : level === 'warn' ? 'warn' : 'info']({ job: lease.id, task }, message);
  }

  async #appendLog(id: string, task: number | null, message: string, level: LogLine['level'] = 'info'): Promise<void> {
    await this.#store.db.insertInto('job_log').values({ job_id: id, task_seq: task, at: now(), level, message }).execute();
    this.#log?.[level === 'error' ? 'error' : level === 'warn' ? 'warn' : 'info']({ job: id, task }, message);
  }

  #emit(view: JobView): void {
    this.#events.emit('job', view);
  }

  /** Reads and emits the job's view, only when someone listens (the API's event streams). */
  #emitById(id: string): void {
    if (this.#events.listenerCount('job') === 0) return;
    void this.get(id, 20)
      .then((v) => {
        if (v) this.#emit(v);
      })
      .catch(() => undefined);
  }
}
