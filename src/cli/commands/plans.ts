// `rebound plan create|list|show|delete` and `rebound plan action add`: recovery plans, ordered groups
// of machines with script and manual actions before and after each group. A plan is checked
// locally (every machine once, at least one group) with the same rules as the server.
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { EXIT } from '../exit-codes.ts';
import { seg } from '../client.ts';
import { afterAction, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { emit, table, time } from '../output.ts';
import { checked, collect } from './args.ts';
import { resolve } from 'node:path';
import { validatePlan } from '../../domain/plan.ts';
import type { PlanAction, RecoveryPlan } from '../../domain/model.ts';

function describeAction(a: PlanAction): string {
  return a.kind === 'script' ? `script ${a.path}${a.timeoutSeconds === undefined ? '' : ` (timeout ${a.timeoutSeconds} s)`}` : `manual: ${a.text}`;
}

function showPlan(plan: RecoveryPlan): string {
  const lines = [`plan ${plan.name} (updated ${time(plan.updatedAt)})`];
  plan.groups.forEach((g, i) => {
    lines.push(`group ${i + 1}: ${g.machines.join(', ')}`);
    for (const a of g.before ?? []) lines.push(`  before: ${describeAction(a)}`);
    for (const a of g.after ?? []) lines.push(`  after:  ${describeAction(a)}`);
  });
  return lines.join('\n');
}

export function registerPlans(program: Command): void {
  const plan = program.command('plan').description('recovery plans: ordered groups of machines with actions');

  plan
    .command('create <name>')
    .description('create a plan; groups fail over in the order given (operator)')
    .requiredOption('--group <m1,m2>', 'machines failing over together (repeat for each group, in order)', collect)
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const groups = (ctx.opts.group as string[]).map((g) => ({ machines: g.split(',').map((m) => m.trim()).filter((m) => m !== '') }));
        const spec = checked(() => validatePlan({ name, groups }));
        const res = await ctx.client.post<RecoveryPlan>('/plans', { name: spec.name, groups: spec.groups });
        return afterAction(ctx, res, false, () => `plan ${name} created with ${spec.groups.length} group${spec.groups.length === 1 ? '' : 's'}.`);
      }),
    );

  plan
    .command('list')
    .description('list plans')
    .action(
      verb(async (ctx: Ctx) => {
        const res = await ctx.client.list<RecoveryPlan>('/plans');
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no plans yet: create one with rebound plan create NAME --group M1,M2.'
            : table(res.items, [
                { header: 'NAME', value: (p) => p.name },
                { header: 'GROUPS', value: (p) => String(p.groups.length) },
                { header: 'MACHINES', value: (p) => p.groups.map((g) => g.machines.join(',')).join(' | ') },
                { header: 'UPDATED', value: (p) => time(p.updatedAt) },
              ]),
        );
      }),
    );

  plan
    .command('show <name>')
    .description('show a plan: its groups in order and their actions')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const p = await ctx.client.get<RecoveryPlan>(`/plans/${seg(name)}`);
        emit(ctx.p, p, () => showPlan(p));
      }),
    );

  plan
    .command('delete <name>')
    .description('delete a plan (its machines stay as they are); refused while a job of the plan runs (operator)')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const res = await ctx.client.delete(`/plans/${seg(name)}`);
        return afterAction(ctx, res, false, () => `plan ${name} deleted.`);
      }),
    );

  plan
    .command('action')
    .description('actions of a plan')
    .command('add <name>')
    .description('add a script or manual action before or after a group (operator)')
    .requiredOption('--group <n>', 'the group, counted from 1', (v) => Number.parseInt(v, 10))
    .option('--before', 'run before the group fails over')
    .option('--after', 'run after the group fails over')
    .option('--script <file>', 'a script to run (its exit code decides)')
    .option('--manual <text>', 'an instruction; the job waits until someone resumes it')
    .option('--timeout <seconds>', 'script: stop it and fail the plan after this many seconds (default 300)', (v) => Number(v))
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const o = ctx.opts as { group: number; before?: boolean; after?: boolean; script?: string; manual?: string; timeout?: number };
        if (!Number.isInteger(o.group) || o.group < 1) {
          throw new CliError('--group must be a group number, counted from 1.', { exitCode: EXIT.usage, code: 'invalid-group' });
        }
        if (o.before === o.after) throw new CliError('say when: --before or --after the group.', { exitCode: EXIT.usage, code: 'when-required' });
        if ((o.script === undefined) === (o.manual === undefined)) {
          throw new CliError('give one action: --script FILE or --manual TEXT.', { exitCode: EXIT.usage, code: 'action-required' });
        }
        if (o.timeout !== undefined && (o.script === undefined || !Number.isInteger(o.timeout) || o.timeout < 1)) {
          throw new CliError('--timeout is a whole number of seconds (1 or more), for a --script action.', { exitCode: EXIT.usage, code: 'invalid-timeout' });
        }
        const action: PlanAction = o.script !== undefined
          ? { kind: 'script', path: resolve(o.script), ...(o.timeout === undefined ? {} : { timeoutSeconds: o.timeout }) }
          : { kind: 'manual', text: o.manual ?? '' };
        const body = { group: o.group, when: o.before ? 'before' : 'after', action };
        const res = await ctx.client.post(`/plans/${seg(name)}/actions`, body);
        return afterAction(ctx, res, false, () => `added ${describeAction(action)} ${body.when} group ${o.group} of plan ${name}.`);
      }),
    );
}
