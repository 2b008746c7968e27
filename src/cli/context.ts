// What every verb's action gets: the API client (connection from --url/--token, environment or
// the default token file), a printer honouring --json, and the merged options. `verb()` wraps an
// action so that it receives this context and so that a returned number becomes the exit code.
import type { Command } from 'commander';
import { ApiClient, resolveConnection } from './client.ts';
import { makePrinter } from './output.ts';
import type { Printer } from './output.ts';
import { followJob, jobIdOf } from './job-follow.ts';
import { EXIT } from './exit-codes.ts';
import type { Job } from '../domain/model.ts';

export interface GlobalOptions {
  url?: string;
  token?: string;
  json?: boolean;
  quiet?: boolean;
}

export interface Ctx {
  /** Created on first use, so verbs that need no server (serve, verify-disk) never resolve one. */
  readonly client: ApiClient;
  p: Printer;
  opts: GlobalOptions & Record<string, unknown>;
}

export function makeCtx(opts: GlobalOptions & Record<string, unknown>): Ctx {
  let client: ApiClient | undefined;
  return {
    get client() {
      client ??= new ApiClient(resolveConnection({ url: opts.url, token: opts.token }));
      return client;
    },
    p: makePrinter(opts.json === true),
    opts,
  };
}

// Commander passes (...positionals, options, command); the verb gets (ctx, ...positionals).
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function verb(fn: (ctx: Ctx, ...args: any[]) => Promise<number | void>): (...args: unknown[]) => Promise<void> {
  return async (...all: unknown[]) => {
    const cmd = all[all.length - 1] as Command;
    const ctx = makeCtx(cmd.optsWithGlobals());
    const code = await fn(ctx, ...all.slice(0, -2));
    if (typeof code === 'number') process.exitCode = code;
  };
}

/** Exit code for a followed job: 0 when it succeeded or waits for an operator, 1 otherwise. */
export function exitForJob(job: Job): number {
  return job.state === 'failed' || job.state === 'cancelled' ? EXIT.jobFailed : EXIT.ok;
}

/** One line about a finished (or waiting) job, with its error on stderr when it failed. */
export function reportJob(ctx: Ctx, job: Job): void {
  if (ctx.p.json) {
    ctx.p.out(JSON.stringify(job, null, 2));
  } else {
    ctx.p.out(`job ${job.id} (${job.kind}${job.target ? ` ${job.target}` : ''}) ${job.state}.`);
  }
  if (job.state === 'failed' || job.state === 'cancelled') {
    const e = job.error;
    ctx.p.err(`rebound: job ${job.id} ${job.state}${e ? `: ${e.message}` : '.'}`);
    if (e?.hint) ctx.p.err(`hint: ${e.hint}`);
  }
}

/**
 * For verbs that may start a job: with --wait, follows the job and returns its exit code;
 * without, prints the response (JSON, or the human line) and returns 0.
 */
export async function afterAction(ctx: Ctx, response: unknown, wait: boolean, human: () => string): Promise<number> {
  const id = jobIdOf(response);
  if (!wait || id === undefined) {
    if (ctx.p.json) ctx.p.out(JSON.stringify(response, null, 2));
    else ctx.p.out(human() + (id !== undefined ? ` Job ${id}: follow it with rebound job wait ${id}.` : ''));
    return EXIT.ok;
  }
  if (!ctx.p.json && !ctx.opts.quiet) ctx.p.err(human());
  const job = await followJob(ctx.client, id, { quiet: ctx.opts.quiet === true });
  reportJob(ctx, job);
  return exitForJob(job);
}
