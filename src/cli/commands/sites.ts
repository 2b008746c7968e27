// `rebound site add|list|show`: the places machines run at (admin adds, anyone reads).
import { resolve } from 'node:path';
import { Option } from 'commander';
import type { Command } from 'commander';
import { seg } from '../client.ts';
import { afterAction, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { emit, fields, table, time } from '../output.ts';
import { parseJsonOption, validName } from './args.ts';
import type { Site } from '../../domain/model.ts';

export function registerSites(program: Command): void {
  const site = program.command('site').description('sites: places with hosts, reached through a provider');

  site
    .command('add <name>')
    .description('add a site (admin)')
    .addOption(new Option('--provider <provider>', 'how its machines are driven').choices(['qemu', 'physical']).makeOptionMandatory())
    .requiredOption('--root <dir>', "directory the site's replicas and failed-over disks live under")
    .option('--config <json>', 'provider settings as a JSON object')
    .option('--wait', 'follow the job, if the server starts one (discovery)')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const o = ctx.opts as { provider: string; root: string; config?: string; wait?: boolean };
        const body = {
          name: validName(name, 'site'),
          provider: o.provider,
          root: resolve(o.root),
          ...(o.config === undefined ? {} : { config: parseJsonOption(o.config, '--config') }),
        };
        const res = await ctx.client.post<Site>('/sites', body);
        return afterAction(ctx, res, o.wait === true, () => `site ${name} added (${o.provider}, root ${body.root}).`);
      }),
    );

  site
    .command('list')
    .description('list sites')
    .action(
      verb(async (ctx: Ctx) => {
        const res = await ctx.client.list<Site>('/sites');
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no sites yet: add one with rebound site add NAME --provider qemu|physical --root DIR.'
            : table(res.items, [
                { header: 'NAME', value: (s) => s.name },
                { header: 'PROVIDER', value: (s) => s.provider },
                { header: 'ROOT', value: (s) => s.root },
                { header: 'CREATED', value: (s) => time(s.createdAt) },
              ]),
        );
      }),
    );

  site
    .command('show <name>')
    .description('show one site')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const s = await ctx.client.get<Site>(`/sites/${seg(name)}`);
        emit(ctx.p, s, () =>
          fields([
            ['name', s.name],
            ['provider', s.provider],
            ['root', s.root],
            ['config', JSON.stringify(s.config ?? {})],
            ['created', time(s.createdAt)],
          ]),
        );
      }),
    );
}
