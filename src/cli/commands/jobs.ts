// `rebound jobs` and `rebound job show|wait|resume|cancel`: every long operation is a job with
// tasks, progress and a log; these verbs list, follow and steer them.
import type { Command } from 'commander';
import { seg } from '../client.ts';
import { afterAction, exitForJob, reportJob, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { followJob } from '../job-follow.ts';
import { emit, fields, table, time, dash } from '../output.ts';
import type { Job } from '../../domain/model.ts';

function showJob(job: Job): string {
  const lines = [
    fields([
      ['id', job.id],
      ['kind', job.kind],
      ['target', dash(job.target)],
      ['state', `${job.state} (${Math.round(job.progress ?? 0)}%)`],
      ['created', `${time(job.createdAt)} by ${dash(job.createdBy)}`],
      ['started', time(job.startedAt)],
      ['finished', time(job.finishedAt)],
      ...(job.error ? ([['error', `${job.error.message}${job.error.hint ? ` (${job.error.hint})` : ''}`]] as [string, string][]) : []),
    ]),
  ];
  if ((job.tasks ?? []).length > 0) {
    lines.push('', 'tasks:', indent(table(job.tasks, [
      { header: 'SEQ', value: (t) => String(t.seq) },
      { header: 'NAME', value: (t) => t.name },
      { header: 'STATE', value: (t) => t.state },
      { header: 'PROGRESS', value: (t) => `${Math.round(t.progress ?? 0)}%` },
      { header: 'STARTED', value: (t) => time(t.startedAt) },
      { header: 'FINISHED', value: (t) => time(t.finishedAt) },
      { header: 'ERROR', value: (t) => dash(t.error?.message) },
    ])));
  }
  if ((job.log ?? []).length > 0) {
    lines.push('', 'log:', ...job.log.map((l) => `  ${time(l.at)} ${l.level.padEnd(5)} ${l.message}`));
  }
  return lines.join('\n');
}

const indent = (s: string): string => s.split('\n').map((l) => `  ${l}`).join('\n');

export function registerJobs(program: Command): void {
  program
    .command('jobs')
    .description('list jobs, newest first')
    .option('--state <state>', 'only jobs in this state (queued, running, waiting, succeeded, failed, cancelled)')
    .option('--kind <kind>', 'only jobs of this kind')
    .option('--limit <n>', 'at most this many', (v) => Number.parseInt(v, 10))
    .action(
      verb(async (ctx: Ctx) => {
        const o = ctx.opts as { state?: string; kind?: string; limit?: number };
        let res: { items: Job[]; next: string | null };
        if (o.limit !== undefined && Number.isFinite(o.limit)) {
          const page = await ctx.client.get<{ items: Job[]; next: string | null }>('/jobs', { state: o.state, kind: o.kind, limit: o.limit });
          res = page;
        } else {
          res = await ctx.client.list<Job>('/jobs', { state: o.state, kind: o.kind });
        }
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no jobs.'
            : table(res.items, [
                { header: 'ID', value: (j) => j.id },
                { header: 'KIND', value: (j) => j.kind },
                { header: 'TARGET', value: (j) => dash(j.target) },
                { header: 'STATE', value: (j) => j.state },
                { header: 'PROGRESS', value: (j) => `${Math.round(j.progress ?? 0)}%` },
                { header: 'CREATED', value: (j) => time(j.createdAt) },
                { header: 'BY', value: (j) => dash(j.createdBy) },
              ]),
        );
      }),
    );

  const job = program.command('job').description('one job: show, wait, resume, cancel');

  job
    .command('show <id>')
    .description('show a job with its tasks and last log lines')
    .action(
      verb(async (ctx: Ctx, id: string) => {
        const j = await ctx.client.get<Job>(`/jobs/${seg(id)}`);
        emit(ctx.p, j, () => showJob(j));
      }),
    );

  job
    .command('wait <id>')
    .description('follow a job until it ends (exit 1 if it fails or is cancelled)')
    .action(
      verb(async (ctx: Ctx, id: string) => {
        const j = await followJob(ctx.client, id, { quiet: ctx.opts.quiet === true });
        reportJob(ctx, j);
        return exitForJob(j);
      }),
    );

  job
    .command('resume <id>')
    .description('resume a job waiting on a manual action, or retry a failed resumable one (operator)')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, id: string) => {
        const res = await ctx.client.post(`/jobs/${seg(id)}/resume`);
        return afterAction(ctx, withJobId(res, id), ctx.opts.wait === true, () => `job ${id} resumed.`);
      }),
    );

  job
    .command('cancel <id>')
    .description('cancel a job (operator); refused when its kind cannot be cancelled now')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, id: string) => {
        const res = await ctx.client.post(`/jobs/${seg(id)}/cancel`);
        return afterAction(ctx, withJobId(res, id), ctx.opts.wait === true, () => `cancel of job ${id} requested.`);
      }),
    );
}

/** The resume/cancel answer may be the job or a bare acknowledgement; either way, follow `id`. */
function withJobId(res: unknown, id: string): unknown {
  if (typeof res === 'object' && res !== null && ('job' in res || 'id' in res)) return res;
  return { ...(typeof res === 'object' && res !== null ? res : {}), job: { id } };
}
