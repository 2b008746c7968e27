// Turns job/task/log rows into the JobView the API, CLI and portal show.
import type { Row } from '../store/schema.ts';
import { parseJson } from '../store/ids.ts';
import type { ErrorView, JobState, JobView, LogLine, TaskState, TaskView } from './types.ts';

export function taskView(t: Row<'tasks'>): TaskView {
  const v: TaskView = {
    seq: t.seq,
    name: t.name,
    state: t.state as TaskState,
    // PostgreSQL keeps progress as float4: 33.3 comes back as 33.29999923706055.
    progress: Math.round(Number(t.progress) * 10) / 10,
    startedAt: t.started_at,
    finishedAt: t.finished_at,
  };
  if (t.result !== null) v.result = parseJson<unknown>(t.result, null);
  if (t.error !== null) v.error = parseJson<ErrorView>(t.error, { code: 'unknown', message: 'unknown error' });
  return v;
}

export function jobView(j: Row<'jobs'>, tasks: Row<'tasks'>[], log: Row<'job_log'>[]): JobView {
  const v: JobView = {
    id: j.id,
    kind: j.kind,
    target: j.target,
    state: j.state as JobState,
    progress: Math.round(Number(j.progress) * 10) / 10,
    params: parseJson<unknown>(j.params, {}),
    attempts: j.attempts,
    cancelRequested: Number(j.cancel_requested) === 1,
    createdBy: j.created_by,
    createdAt: j.created_at,
    startedAt: j.started_at,
    finishedAt: j.finished_at,
    updatedAt: j.updated_at,
    tasks: [...tasks].sort((a, b) => a.seq - b.seq).map(taskView),
    log: log.map(
      (l): LogLine => ({ at: l.at, level: l.level as LogLine['level'], task: l.task_seq, message: l.message }),
    ),
  };
  if (j.result !== null) v.result = parseJson<unknown>(j.result, null);
  if (j.error !== null) v.error = parseJson<ErrorView>(j.error, { code: 'unknown', message: 'unknown error' });
  return v;
}

/** Job progress from its tasks: finished tasks count 100 %. */
export function jobProgress(tasks: { state: string; progress: number }[]): number {
  if (tasks.length === 0) return 0;
  const sum = tasks.reduce((acc, t) => acc + (t.state === 'succeeded' || t.state === 'skipped' ? 100 : Number(t.progress)), 0);
  return sum / tasks.length;
}

export function encodeCursor(createdAt: number, id: string): string {
  return Buffer.from(`${createdAt}:${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): { createdAt: number; id: string } | undefined {
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const m = /^(\d+):([0-9a-f-]{36})$/.exec(text);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  return { createdAt: Number(m[1]), id: m[2] };
}
