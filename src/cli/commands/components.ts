// `rebound component list|show|revoke`: the agents, process servers and master targets that
// registered with the vault as their own processes, the certificate each was issued, and
// revocation (admin), which stops the component's token and its data connections.
import type { Command } from 'commander';
import { seg } from '../client.ts';
import { verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { ago, dash, emit, fields, table, time } from '../output.ts';
import type { ComponentView } from '../../api/routes/components.ts';

export function registerComponents(program: Command): void {
  const component = program.command('component').description('registered components: agents, process servers, master targets');

  component
    .command('list')
    .description('list registered components')
    .action(
      verb(async (ctx: Ctx) => {
        const res = await ctx.client.list<ComponentView>('/components');
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no components registered: roles run inside rebound serve until one registers as its own process.'
            : table(res.items, [
                { header: 'NAME', value: (c) => c.name },
                { header: 'ROLE', value: (c) => c.role },
                { header: 'SITE', value: (c) => dash(c.site) },
                { header: 'ADDRESS', value: (c) => dash(c.address) },
                { header: 'STATUS', value: (c) => c.status },
                { header: 'SERIAL', value: (c) => dash(c.serial) },
                { header: 'LAST SEEN', value: (c) => ago(c.lastSeenAt) },
              ]),
        );
      }),
    );

  component
    .command('show <name>')
    .description('show one component and its certificate')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const c = await ctx.client.get<ComponentView>(`/components/${seg(name)}`);
        emit(ctx.p, c, () =>
          fields([
            ['name', c.name],
            ['id', c.id],
            ['role', c.role],
            ['site', dash(c.site)],
            ['address', dash(c.address)],
            ['status', c.status],
            ['serial', dash(c.serial)],
            ['registered', time(c.registeredAt)],
            ['last seen', c.lastSeenAt === null ? '-' : `${time(c.lastSeenAt)} (${ago(c.lastSeenAt)})`],
            ['revoked', time(c.revokedAt)],
          ]) + (c.certificate ? `\n${c.certificate.trimEnd()}` : ''),
        );
      }),
    );

  component
    .command('revoke <name>')
    .description('revoke a component (admin): its token and certificate stop working')
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const c = await ctx.client.delete<ComponentView>(`/components/${seg(name)}`);
        emit(ctx.p, c, () => `component ${c.name} revoked: its token no longer works and certificate ${dash(c.serial)} is refused on data connections. To bring it back, register it again.`);
      }),
    );
}
