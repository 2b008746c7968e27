// The job engine's public types. A job is a durable, ordered list of tasks fixed when the job is
// created; a task is idempotent and may checkpoint its progress so that a resumed task (after a
// crash, a lost lease, a retry) continues instead of starting over.

export type JobState = 'queued' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'cancelled';
export type TaskState = 'pending' | 'running' | 'waiting' | 'succeeded' | 'failed' | 'skipped' | 'cancelled';
export const terminalJobStates: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

export interface ErrorView {
  code: string;
  message: string;
  hint?: string;
}

export interface TaskView {
  seq: number;
  name: string;
  state: TaskState;
  progress: number;
  startedAt: number | null;
  finishedAt: number | null;
  result?: unknown;
  error?: ErrorView;
}

export interface LogLine {
  at: number;
  level: 'info' | 'warn' | 'error';
  task: number | null;
  message: string;
}

export interface JobView {
  id: string;
  kind: string;
  target: string;
  state: JobState;
  progress: number;
  params: unknown;
  result?: unknown;
  error?: ErrorView;
  attempts: number;
  cancelRequested: boolean;
  createdBy: string;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
  tasks: TaskView[];
  log: LogLine[];
}

export interface TaskPlan {
  name: string;
}

/** Retry policy as data: exponential backoff with jitter; some error codes never retry. */
export interface RetryPolicy {
  maxAttempts: number;
  initialMs: number;
  coefficient: number;
  maxMs: number;
  nonRetryableCodes?: readonly string[];
}

export interface TaskContext<P = unknown> {
  job: JobView;
  params: P;
  task: TaskView;
  /** Fires on cancel, on shutdown of this worker and when the lease is lost. */
  signal: AbortSignal;
  /** The task's last saved checkpoint, or undefined on its first run. */
  checkpoint: unknown;
  saveCheckpoint(data: unknown): Promise<void>;
  progress(pct: number): Promise<void>;
  log(message: string, level?: LogLine['level']): Promise<void>;
  /**
   * A manual action: the job waits (state `waiting`, no lease held) until someone resumes it.
   * On the resumed run the same call returns at once.
   */
  waitForResume(reason: string): Promise<void>;
  /** Results of the job's earlier tasks, by seq. */
  results: ReadonlyMap<number, unknown>;
}

/** What a compensation hook (onCancel, onFail) gets: the job as it stands, under its lease. */
export interface HookContext<P = unknown> {
  job: JobView;
  params: P;
  /** The task that was running (or next to run) when the job was cancelled or failed. */
  task: TaskView | undefined;
  /** Fires on shutdown of this worker or loss of the lease (the hook runs again elsewhere). */
  signal: AbortSignal;
  log(message: string, level?: LogLine['level']): Promise<void>;
  /** onFail: the error the job fails with. */
  error?: ErrorView;
}

export interface JobDefinition<P = unknown> {
  kind: string;
  /** The job's tasks, in order; fixed at enqueue. */
  describe(params: P): TaskPlan[];
  /** Runs one task; must be idempotent (it may run again after a crash). */
  runTask(ctx: TaskContext<P>): Promise<unknown>;
  /** Whether a cancel is allowed now (default: yes while not finished). */
  cancellable?: boolean | ((job: JobView) => boolean);
  /** Sentence used when a cancel is refused. */
  notCancellableReason?: string;
  retry?: Partial<RetryPolicy>;
  /** Whether `resume` may retry a failed job of this kind (default: yes). */
  resumable?: boolean;
  /**
   * Compensation, run under the lease before the job ends cancelled / failed. Must be idempotent:
   * after a crash it runs again on the worker that takes over. A throw is logged, not fatal.
   */
  onCancel?(ctx: HookContext<P>): Promise<void>;
  /** Run onCancel also for a job cancelled before its first task ran (its enqueue changed state
   * that the hook must put back, e.g. a protected item's lifecycle state). Default: no. */
  compensateUnstarted?: boolean;
  onFail?(ctx: HookContext<P>): Promise<void>;
  /** Validates params at enqueue (throw a ReboundError 'invalid'). */
  validate?(params: unknown): P;
}

export interface EnqueueRequest {
  kind: string;
  target?: string;
  params: unknown;
  createdBy: string;
  idempotencyKey?: string;
}

export interface JobFilter {
  state?: string;
  kind?: string;
  target?: string;
  limit?: number;
  cursor?: string;
}
