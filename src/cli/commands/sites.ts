// `rebound site add|list|show|host-add|hosts`: the places machines run at (admin adds, anyone reads).
import { resolve } from 'node:path';
import { Option } from 'commander';
import type { Command } from 'commander';
import { seg } from '../client.ts';
import { afterAction, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { emit, fields, table, time } from '../output.ts';
import { parseJsonOption, validName } from './args.ts';
import type { Host, Site } from '../../domain/model.ts';

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
    .command('host-add <site> <name>')
    .description('add a host to a site (admin): a place its machines can run, e.g. for a failback with --host')
    .option('--address <address>', 'where a remote host is reached (this build runs machines on local hosts only)')
    .option('--root <dir>', "directory the host's machines live under, inside the site's root (default SITE_ROOT/hosts/NAME)")
    .action(
      verb(async (ctx: Ctx, siteName: string, name: string) => {
        const o = ctx.opts as { address?: string; root?: string };
        const body = {
          name: validName(name, 'host'),
          ...(o.address === undefined ? {} : { address: o.address }),
          ...(o.root === undefined ? {} : { config: { root: resolve(o.root) } }),
        };
        const res = await ctx.client.post<Host>(`/sites/${seg(siteName)}/hosts`, body);
        emit(ctx.p, res, () => `host ${res.name} added to site ${siteName}${res.address ? ` (address ${res.address})` : ''}.`);
      }),
    );

  site
    .command('hosts <site>')
    .description("list a site's hosts")
    .action(
      verb(async (ctx: Ctx, siteName: string) => {
        const res = await ctx.client.list<Host>(`/sites/${seg(siteName)}/hosts`);
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? `site ${siteName} has no hosts yet: add one with rebound site host-add ${siteName} NAME.`
            : table(res.items, [
                { header: 'NAME', value: (h) => h.name },
                { header: 'ADDRESS', value: (h) => h.address ?? 'local' },
                { header: 'ROOT', value: (h) => (typeof h.config['root'] === 'string' ? h.config['root'] : '-') },
                { header: 'CREATED', value: (h) => time(h.createdAt) },
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
