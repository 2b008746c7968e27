// Verbs whose implementation lives in a module another part of Rebound provides. Each is
// registered only when its module is present in this checkout, so `rebound --help` never lists
// a verb that cannot run.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { EXIT } from '../exit-codes.ts';
import { CliError } from '../cli-error.ts';

/** What src/guest/verify.ts reports (read loosely: only what the summary line needs). */
interface VerifyReport {
  ok?: boolean;
  records?: number;
  highestContiguousSeq?: number;
  corrupt?: { offset?: number; reason?: string }[];
  outOfOrder?: unknown[];
  gaps?: unknown[];
  expectSeq?: number;
  /** Exact counts (the lists may be capped). */
  counts?: { corrupt?: number; outOfOrder?: number; gaps?: number };
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

export function describeReport(image: string, r: VerifyReport): string {
  const counts = `${r.records ?? 0} records, contiguous to sequence ${r.highestContiguousSeq ?? '-'}`;
  if (r.ok === true) return `${image}: ok (${counts}).`;
  const corrupt = r.counts?.corrupt ?? (r.corrupt ?? []).length;
  const outOfOrder = r.counts?.outOfOrder ?? (r.outOfOrder ?? []).length;
  const gaps = r.counts?.gaps ?? (r.gaps ?? []).length;
  const first = r.corrupt?.[0];
  const parts = [
    corrupt > 0 ? `${plural(corrupt, 'corrupt record')}${first ? ` (first at offset ${first.offset ?? '?'}: ${first.reason ?? 'bad'})` : ''}` : '',
    outOfOrder > 0 ? `${outOfOrder} out of order` : '',
    gaps > 0 ? plural(gaps, 'unwritten gap') : '',
  ].filter((x) => x !== '');
  return `${image}: FAILED: ${parts.join(', ') || `fewer records than expected${r.expectSeq === undefined ? '' : ` (records 1..${r.expectSeq})`}`}; ${counts}.`;
}

const VERIFY_URL = new URL('../../guest/verify.ts', import.meta.url);

export function registerOptionalVerbs(program: Command): void {
  if (existsSync(fileURLToPath(VERIFY_URL))) registerVerifyDisk(program);
}

function registerVerifyDisk(program: Command): void {
  program
    .command('verify-disk <image>')
    .description("check the guest workload's records on a disk image, raw or qcow2 (exit 1 when damaged)")
    .option('--expect-seq <n>', "the guest's last durable sequence: the disk must hold records 1..N", (v) => Number.parseInt(v, 10))
    .option('--strict', 'count a torn record at the end of the run as corruption too')
    .action(
      verb(async (ctx: Ctx, image: string) => {
        const o = ctx.opts as { expectSeq?: number; strict?: boolean };
        if (o.expectSeq !== undefined && (!Number.isInteger(o.expectSeq) || o.expectSeq < 0)) {
          throw new CliError('--expect-seq must be a whole number, 0 or more.', { exitCode: EXIT.usage, code: 'invalid-seq' });
        }
        const mod = (await import(VERIFY_URL.href)) as { verifyDisk: (path: string, opts?: { expectSeq?: number; strict?: boolean }) => Promise<unknown> };
        const result = await mod.verifyDisk(resolve(image), {
          ...(o.expectSeq === undefined ? {} : { expectSeq: o.expectSeq }),
          ...(o.strict ? { strict: true } : {}),
        });
        const r = (result ?? {}) as VerifyReport;
        if (ctx.p.json) ctx.p.out(JSON.stringify(result, null, 2));
        else ctx.p.out(describeReport(image, r));
        return r.ok === true ? EXIT.ok : EXIT.jobFailed;
      }),
    );
}
