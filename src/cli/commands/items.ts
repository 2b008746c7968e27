// The lifecycle verbs: protect, items, item show, points, test-failover, test-cleanup, failover,
// complete-failover, commit, reverse-replicate (alias reprotect). TARGET is a machine name or
// `plan:NAME`; a plan's verbs go to /plans/NAME/<verb>, a machine's to /items/NAME/<verb>.
// The server decides what the item's state allows (domain/lifecycle.ts); the CLI only checks
// the shape of the flags, so that a refusal carries the server's sentence.
import { Option } from 'commander';
import type { Command } from 'commander';
import { CliError } from '../cli-error.ts';
import { EXIT } from '../exit-codes.ts';
import { seg } from '../client.ts';
import { afterAction, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { ago, dash, emit, fields, table, time } from '../output.ts';
import { formatAge } from '../../domain/durations.ts';
import type { ProtectedItem, RecoveryPoint } from '../../domain/model.ts';

const NAMED_POINTS = ['latest', 'latest-processed', 'latest-app-consistent'];

/** '/items/web-01' or '/plans/app' for a TARGET. */
export function targetPath(target: string): string {
  if (target.startsWith('plan:')) {
    const name = target.slice(5);
    if (!name) throw new CliError(`target '${target}' names no plan: write plan:NAME.`, { exitCode: EXIT.usage, code: 'invalid-target' });
    return `/plans/${seg(name)}`;
  }
  return `/items/${seg(target)}`;
}

function checkPoint(point: string | undefined): string | undefined {
  if (point === undefined) return undefined;
  if (point.trim() === '') {
    throw new CliError(`--point is empty: give ${NAMED_POINTS.join(', ')} or a point id (rebound points MACHINE).`, { exitCode: EXIT.usage, code: 'invalid-point' });
  }
  return point;
}

function rpo(item: ProtectedItem): string {
  if (typeof item.rpoSeconds === 'number') return formatAge(item.rpoSeconds);
  return item.lastPointAt ? ago(item.lastPointAt).replace(/ ago$/, '') : '-';
}

function showItem(item: ProtectedItem): string {
  const pairs: [string, string][] = [
    ['machine', item.machine],
    ['state', item.state],
    ['health', item.health],
    ['rpo', rpo(item)],
    ['last point', time(item.lastPointAt)],
    ['direction', item.direction],
    ['active site', dash(item.activeSite)],
    ['group', dash(item.group)],
    ['updated', time(item.updatedAt)],
  ];
  const details = item.details ?? {};
  for (const [k, v] of Object.entries(details)) {
    pairs.push([k, typeof v === 'string' ? v : JSON.stringify(v)]);
  }
  return fields(pairs);
}

/** Reading items: routes the server has today. */
export function registerItemViews(program: Command): void {
  program
    .command('items')
    .description('list protected items with state, health and RPO')
    .option('--state <state>', 'only items in this state')
    .option('--health <health>', 'only items with this health (normal, warning, critical)')
    .action(
      verb(async (ctx: Ctx) => {
        const o = ctx.opts as { state?: string; health?: string };
        const res = await ctx.client.list<ProtectedItem>('/items', { state: o.state, health: o.health });
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no protected items.'
            : table(res.items, [
                { header: 'MACHINE', value: (i) => i.machine },
                { header: 'STATE', value: (i) => i.state },
                { header: 'HEALTH', value: (i) => i.health },
                { header: 'RPO', value: rpo },
                { header: 'DIRECTION', value: (i) => i.direction },
                { header: 'ACTIVE SITE', value: (i) => dash(i.activeSite) },
                { header: 'GROUP', value: (i) => dash(i.group) },
              ]),
        );
      }),
    );

  const item = program.command('item').description('one protected item');
  item
    .command('show <machine>')
    .description("an item's state, health, RPO and the disks a failed-over or test machine runs on")
    .action(
      verb(async (ctx: Ctx, machine: string) => {
        const it = await ctx.client.get<ProtectedItem>(`/items/${seg(machine)}`);
        emit(ctx.p, it, () => showItem(it));
      }),
    );
  item
    .command('group <machine> [group]')
    .description("join or move a protected machine to a replication group, or leave it (--leave); refused while a failover of it runs (operator)")
    .option('--leave', 'leave its replication group: its next points are its own')
    .action(
      verb(async (ctx: Ctx, machine: string, group: string | undefined) => {
        const o = ctx.opts as { leave?: boolean };
        if ((group === undefined) === (o.leave !== true)) {
          throw new CliError('give a group to join (rebound item group MACHINE GROUP) or --leave, not both.', { exitCode: EXIT.usage, code: 'group-required' });
        }
        const it = await ctx.client.post<ProtectedItem>(`/items/${seg(machine)}/group`, { group: o.leave ? null : group });
        emit(ctx.p, it, () => (it.group ? `${machine} is in replication group ${it.group}: its points are taken with the group's.` : `${machine} is in no replication group: its points are its own.`));
      }),
    );
}

/** Replication: protect, points, scrub. */
export function registerReplicationVerbs(program: Command): void {
  program
    .command('protect <machine>')
    .description('enable replication of a machine to its pairing\'s recovery site (operator)')
    .option('--group <name>', 'replication group: machines that share consistent points')
    .option('--wait', 'follow initial replication until it ends')
    .action(
      verb(async (ctx: Ctx, machine: string) => {
        const o = ctx.opts as { group?: string; wait?: boolean };
        const res = await ctx.client.post(`/items/${seg(machine)}/protect`, o.group === undefined ? {} : { group: o.group });
        return afterAction(ctx, res, o.wait === true, () => `protecting ${machine}: initial replication started.`);
      }),
    );

  program
    .command('points <machine>')
    .description("a machine's recovery points, newest first")
    .action(
      verb(async (ctx: Ctx, machine: string) => {
        const res = await ctx.client.list<RecoveryPoint>(`/items/${seg(machine)}/points`);
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? `${machine} has no recovery points yet.`
            : table(res.items, [
                { header: 'ID', value: (p) => p.id },
                { header: 'TAKEN', value: (p) => time(p.takenAt) },
                { header: 'KIND', value: (p) => p.kind },
                { header: 'STATUS', value: (p) => p.status },
                { header: 'GROUP POINT', value: (p) => dash(p.groupPointId) },
              ]),
        );
      }),
    );

  program
    .command('scrub <machine>')
    .description("re-verify every stored block of a machine's replica; damaged points are marked bad (operator)")
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, machine: string) => {
        const o = ctx.opts as { wait?: boolean };
        const res = await ctx.client.post(`/items/${seg(machine)}/scrub`);
        return afterAction(ctx, res, o.wait === true, () => `scrubbing ${machine}'s replica.`);
      }),
    );
}

/** Failover verbs: wired in main.ts once the server has these routes. */
export function registerItemActions(program: Command): void {
  program
    .command('test-failover <target>')
    .description('start a drill: a replica machine from a point, isolated; replication continues (operator)')
    .option('--point <p>', 'latest, latest-processed, latest-app-consistent or a point id (default latest)')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, target: string) => {
        const o = ctx.opts as { point?: string; wait?: boolean };
        const point = checkPoint(o.point);
        const res = await ctx.client.post(`${targetPath(target)}/test-failover`, point === undefined ? {} : { point });
        return afterAction(ctx, res, o.wait === true, () => `test failover of ${target} started.`);
      }),
    );

  program
    .command('test-cleanup <target>')
    .description('remove a drill\'s test machine, recording what it showed (operator)')
    .requiredOption('--notes <text>', 'what the drill showed')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, target: string) => {
        const o = ctx.opts as { notes: string; wait?: boolean };
        if (o.notes.trim() === '') {
          throw new CliError('--notes is empty: say what the drill showed.', { exitCode: EXIT.usage, code: 'notes-required' });
        }
        const res = await ctx.client.post(`${targetPath(target)}/test-cleanup`, { notes: o.notes });
        return afterAction(ctx, res, o.wait === true, () => `test cleanup of ${target} started.`);
      }),
    );

  program
    .command('failover <target>')
    .description('fail over (or, running at the recovery site, fail back) a machine or plan (operator)')
    .option('--planned', 'maintenance: shut the source down, send everything, no data loss')
    .option('--unplanned', 'outage: fail over from a recovery point; newer data may be lost')
    .option('--shutdown-source', 'unplanned: try to shut the source down first (best effort)')
    .option('--point <p>', 'unplanned: latest, latest-processed, latest-app-consistent or a point id')
    .addOption(new Option('--sync <mode>', 'failback: before (differences, then complete-failover) or full').choices(['before', 'full']))
    .option('--host <host>', 'failback: an alternate host at the primary site')
    .option('--wait', 'follow the job until it ends (or waits for complete-failover)')
    .action(
      verb(async (ctx: Ctx, target: string) => {
        const o = ctx.opts as { planned?: boolean; unplanned?: boolean; shutdownSource?: boolean; point?: string; sync?: string; host?: string; wait?: boolean };
        if (o.planned === o.unplanned) {
          throw new CliError('say which failover: --planned (source shut down, no data loss) or --unplanned (from a recovery point).', { exitCode: EXIT.usage, code: 'mode-required' });
        }
        const point = checkPoint(o.point);
        const body = {
          mode: o.planned ? 'planned' : 'unplanned',
          ...(o.shutdownSource ? { shutdownSource: true } : {}),
          ...(point === undefined ? {} : { point }),
          ...(o.sync === undefined ? {} : { sync: o.sync }),
          ...(o.host === undefined ? {} : { host: o.host }),
        };
        const res = await ctx.client.post(`${targetPath(target)}/failover`, body);
        return afterAction(ctx, res, o.wait === true, () => `${body.mode} failover of ${target} started.`);
      }),
    );

  program
    .command('complete-failover <job>')
    .description('phase 2 of a failback synced before: shut down, send the last differences, start at the primary (operator)')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, job: string) => {
        const res = await ctx.client.post(`/jobs/${seg(job)}/complete`);
        const answer = typeof res === 'object' && res !== null && ('job' in res || 'id' in res) ? res : { job: { id: job } };
        return afterAction(ctx, answer, ctx.opts.wait === true, () => `completing failover of job ${job}.`);
      }),
    );

  program
    .command('commit <target>')
    .description('make a failover final: removes its recovery points (operator)')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, target: string) => {
        const res = await ctx.client.post(`${targetPath(target)}/commit`);
        return afterAction(ctx, res, ctx.opts.wait === true, () => `commit of ${target} started.`);
      }),
    );

  program
    .command('reverse-replicate <target>')
    .alias('reprotect')
    .description('replicate back from where the machine now runs (differences only where the old disks exist) (operator)')
    .option('--wait', 'follow the job until it ends')
    .action(
      verb(async (ctx: Ctx, target: string) => {
        const res = await ctx.client.post(`${targetPath(target)}/reverse-replicate`);
        return afterAction(ctx, res, ctx.opts.wait === true, () => `reverse replication of ${target} started.`);
      }),
    );
}
