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

/** What src/guest/verify.ts reports (read loosely: only what the summary line needs). */
interface VerifyReport {
  ok?: boolean;
  records?: number;
  highestContiguousSeq?: number;
  corrupt?: { offset?: number; reason?: string }[];
  outOfOrder?: unknown[];
}

export function describeReport(image: string, r: VerifyReport): string {
  const counts = `${r.records ?? 0} records, contiguous to sequence ${r.highestContiguousSeq ?? '-'}`;
  if (r.ok === true) return `${image}: ok (${counts}).`;
  const corrupt = r.corrupt ?? [];
  const first = corrupt[0];
  const parts = [
    corrupt.length > 0 ? `${corrupt.length} corrupt record${corrupt.length === 1 ? '' : 's'}${first ? ` (first at offset ${first.offset ?? '?'}: ${first.reason ?? 'bad'})` : ''}` : '',
    (r.outOfOrder ?? []).length > 0 ? `${(r.outOfOrder ?? []).length} out of order` : '',
  ].filter((x) => x !== '');
  return `${image}: FAILED: ${parts.join(', ') || 'not ok'}; ${counts}.`;
}

const VERIFY_URL = new URL('../../guest/verify.ts', import.meta.url);

export function registerOptionalVerbs(program: Command): void {
  if (existsSync(fileURLToPath(VERIFY_URL))) registerVerifyDisk(program);
}

function registerVerifyDisk(program: Command): void {
  program
    .command('verify-disk <image>')
    .description("check a disk image's filesystem and the workload's own checks (exit 1 when it fails)")
    .action(
      verb(async (ctx: Ctx, image: string) => {
        const mod = (await import(VERIFY_URL.href)) as { verifyDisk: (path: string) => Promise<unknown> };
        const result = await mod.verifyDisk(resolve(image));
        const r = (result ?? {}) as VerifyReport;
        const ok = r.ok === true;
        if (ctx.p.json) ctx.p.out(JSON.stringify(result, null, 2));
        else ctx.p.out(describeReport(image, r));
        return ok ? EXIT.ok : EXIT.jobFailed;
      }),
    );
}
