// `rebound machine add|list|show`: the machines Rebound can protect. A physical machine is
// added with its disks (block devices or image files); a qemu site also discovers its VMs.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { seg } from '../client.ts';
import { afterAction, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { emit, fields, table, time, dash } from '../output.ts';
import { collect, parseJsonOption, validName } from './args.ts';
import type { Machine } from '../../domain/model.ts';

function diskPaths(m: Machine): string {
  return (m.disks ?? []).map((d) => (typeof d === 'string' ? d : d.path)).join(', ');
}

export function registerMachines(program: Command): void {
  const machine = program.command('machine').description('machines: VMs and servers that can be protected');

  machine
    .command('add <name>')
    .description('add a machine by its disks (operator)')
    .requiredOption('--site <site>', 'its home site')
    .requiredOption('--disk <file>', 'a disk image or block device (repeat for more)', collect)
    .option('--host <host>', 'the host it runs on')
    .option('--config <json>', 'provider settings as a JSON object (hooks, definition file)')
    .option('--wait', 'follow the job, if the server starts one')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const o = ctx.opts as { site: string; disk: string[]; host?: string; config?: string; wait?: boolean };
        const body = {
          name: validName(name, 'machine'),
          site: o.site,
          disks: o.disk.map((d) => resolve(d)),
          ...(o.host === undefined ? {} : { host: o.host }),
          ...(o.config === undefined ? {} : { config: parseJsonOption(o.config, '--config') }),
        };
        const res = await ctx.client.post<Machine>('/machines', body);
        return afterAction(ctx, res, o.wait === true, () => `machine ${name} added at ${o.site} with ${body.disks.length} disk${body.disks.length === 1 ? '' : 's'}.`);
      }),
    );

  machine
    .command('list')
    .description('list machines')
    .option('--site <site>', 'only those of this site')
    .action(
      verb(async (ctx: Ctx) => {
        const site = ctx.opts.site as string | undefined;
        const res = await ctx.client.list<Machine>('/machines', { site });
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? `no machines${site ? ` at ${site}` : ''} yet: add one with rebound machine add NAME --site SITE --disk FILE.`
            : table(res.items, [
                { header: 'NAME', value: (m) => m.name },
                { header: 'SITE', value: (m) => m.site },
                { header: 'KIND', value: (m) => dash(m.kind) },
                { header: 'DISKS', value: diskPaths },
              ]),
        );
      }),
    );

  machine
    .command('show <name>')
    .description('show one machine')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const m = await ctx.client.get<Machine>(`/machines/${seg(name)}`);
        emit(ctx.p, m, () =>
          fields([
            ['name', m.name],
            ['site', m.site],
            ['host', dash(m.host)],
            ['kind', dash(m.kind)],
            ['disks', diskPaths(m)],
            ['created', time(m.createdAt)],
          ]),
        );
      }),
    );
}
