// Following a job until it ends (--wait, `rebound job wait`): polls GET /jobs/:id and shows
// progress on stderr — a progress bar when stderr is a terminal, plain lines (one per change,
// plus new log lines) when it is not, so logs of scripted runs stay readable.
// The follow stops when the job finishes, or when it waits for an operator (a manual plan
// action, a failback ready to complete): then it says what to do and returns the waiting job.
import cliProgress from 'cli-progress';
import type { ApiClient } from './client.ts';
import { seg } from './client.ts';
import type { Job } from '../domain/model.ts';
import { isFinished } from '../domain/model.ts';

export interface FollowOptions {
  pollMs?: number;
  /** Override for tests; defaults to process.stderr.isTTY. */
  tty?: boolean;
  /** Where progress goes; defaults to stderr. */
  write?: (line: string) => void;
  /** Show nothing (--quiet). */
  quiet?: boolean;
}

/** The job id in an action's response: `{ job: { id } }`, `{ job: 'id' }` or a job itself. */
export function jobIdOf(response: unknown): string | undefined {
  if (typeof response !== 'object' || response === null) return undefined;
  const r = response as { job?: unknown; id?: unknown; kind?: unknown; state?: unknown };
  if (typeof r.job === 'string') return r.job;
  if (typeof r.job === 'object' && r.job !== null && typeof (r.job as { id?: unknown }).id === 'string') {
    return (r.job as { id: string }).id;
  }
  if (typeof r.id === 'string' && typeof r.kind === 'string' && typeof r.state === 'string') return r.id;
  return undefined;
}

function currentTask(job: Job): string {
  const t = (job.tasks ?? []).find((x) => x.state === 'running' || x.state === 'waiting');
  return t ? t.name : '';
}

/**
 * Progress as plain lines for logs: each new job log line once (the API returns the last few,
 * so they overlap between polls), then a status line whenever state, progress or task change.
 */
export class PlainProgress {
  private lastLine = '';
  private readonly seenLog = new Set<string>();

  lines(job: Job): string[] {
    const out: string[] = [];
    for (const entry of job.log ?? []) {
      const key = `${entry.at}|${entry.level}|${entry.message}`;
      if (this.seenLog.has(key)) continue;
      this.seenLog.add(key);
      out.push(`  ${entry.level === 'info' ? '' : `${entry.level}: `}${entry.message}`);
    }
    const task = currentTask(job);
    const line = `job ${job.id} ${job.state} ${Math.round(job.progress ?? 0)}%${task ? ` ${task}` : ''}`;
    if (line !== this.lastLine) out.push(line);
    this.lastLine = line;
    return out;
  }
}

export function waitingNote(job: Job): string {
  const task = currentTask(job);
  return `job ${job.id} is waiting for an operator${task ? ` at "${task}"` : ''}: resume it with rebound job resume ${job.id}.`;
}

export async function followJob(client: ApiClient, id: string, opts: FollowOptions = {}): Promise<Job> {
  const pollMs = opts.pollMs ?? 250;
  const tty = opts.tty ?? process.stderr.isTTY === true;
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  let bar: cliProgress.SingleBar | null = null;
  const plain = new PlainProgress();

  try {
    for (;;) {
      const job = await client.get<Job>(`/jobs/${seg(id)}`);
      const task = currentTask(job);
      const progress = Math.round(job.progress ?? 0);
      if (!opts.quiet) {
        if (tty) {
          if (!bar) {
            bar = new cliProgress.SingleBar(
              { format: `${job.kind} ${job.target} [{bar}] {percentage}% {state} {task}`, stream: process.stderr, hideCursor: true, clearOnComplete: false },
              cliProgress.Presets.shades_classic,
            );
            bar.start(100, progress, { state: job.state, task });
          } else {
            bar.update(progress, { state: job.state, task });
          }
        } else {
          for (const line of plain.lines(job)) write(line);
        }
      }
      if (isFinished(job.state)) return job;
      if (job.state === 'waiting') {
        if (!opts.quiet) {
          bar?.stop();
          bar = null;
          write(waitingNote(job));
        }
        return job;
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  } finally {
    bar?.stop();
  }
}
