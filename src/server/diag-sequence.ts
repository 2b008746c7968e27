// `diag.sequence`: a dev/test-only job kind that proves jobs are durable. Task N sleeps, then
// appends the line "N" to params.file. It is idempotent across crashes: a checkpoint records the
// write, and a rerun after a crash between the append and the checkpoint finds its line in the
// file and does not write it again. Registered only when REBOUND_ENABLE_TEST_JOBS=1.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { invalid } from '../domain/errors.ts';
import type { JobDefinition } from '../jobs/types.ts';

export interface DiagSequenceParams {
  file: string;
  tasks: number;
  sleepMs: number;
}

export const DIAG_SEQUENCE = 'diag.sequence';

export function validateDiagSequence(p: unknown): DiagSequenceParams {
  const v = p as Partial<DiagSequenceParams> | null;
  if (typeof v !== 'object' || v === null) throw invalid('invalid-params', 'diag.sequence needs { file, tasks, sleepMs }.');
  if (typeof v.file !== 'string' || !path.isAbsolute(v.file)) throw invalid('invalid-params', 'file must be an absolute path.');
  if (!Number.isInteger(v.tasks) || (v.tasks as number) < 1 || (v.tasks as number) > 100) throw invalid('invalid-params', 'tasks must be a whole number from 1 to 100.');
  if (!Number.isInteger(v.sleepMs) || (v.sleepMs as number) < 0 || (v.sleepMs as number) > 60_000) throw invalid('invalid-params', 'sleepMs must be a whole number from 0 to 60000.');
  return { file: v.file, tasks: v.tasks as number, sleepMs: v.sleepMs as number };
}

export const diagSequence: JobDefinition<DiagSequenceParams> = {
  kind: DIAG_SEQUENCE,
  validate: validateDiagSequence,
  describe: (p) => Array.from({ length: p.tasks }, (_, i) => ({ name: `append ${i}` })),
  async runTask(ctx) {
    const line = String(ctx.task.seq);
    if ((ctx.checkpoint as { written?: boolean } | undefined)?.written) return { line, already: true };
    const has = () => existsSync(ctx.params.file) && readFileSync(ctx.params.file, 'utf8').split('\n').includes(line);
    if (!has()) {
      await sleep(ctx.params.sleepMs, undefined, { signal: ctx.signal });
      appendFileSync(ctx.params.file, `${line}\n`);
    }
    await ctx.saveCheckpoint({ written: true });
    return { line };
  },
};
