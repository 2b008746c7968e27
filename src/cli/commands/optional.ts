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
        const ok = typeof result === 'object' && result !== null && (result as { ok?: unknown }).ok === true;
        if (ctx.p.json) ctx.p.out(JSON.stringify(result, null, 2));
        else {
          const r = (result ?? {}) as { message?: unknown; problems?: unknown };
          const detail = typeof r.message === 'string' ? r.message : Array.isArray(r.problems) ? r.problems.join('; ') : '';
          ctx.p.out(`${image}: ${ok ? 'ok' : 'FAILED'}${detail ? ` (${detail})` : ''}`);
        }
        return ok ? EXIT.ok : EXIT.jobFailed;
      }),
    );
}
