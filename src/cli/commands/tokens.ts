// `rebound token create|list|revoke` and `rebound whoami`: API tokens and their roles
// (reader < operator < admin). A token's secret is shown once, when it is created.
import { Option } from 'commander';
import type { Command } from 'commander';
import { seg } from '../client.ts';
import { verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { emit, table, time, dash } from '../output.ts';
import { validName } from './args.ts';
import { ROLES } from '../../domain/model.ts';
import type { TokenView } from '../../domain/model.ts';

export function registerTokens(program: Command): void {
  const token = program.command('token').description('API tokens (admin)');

  token
    .command('create <name>')
    .description('create a token; its secret is printed once')
    .addOption(new Option('--role <role>', 'what it may do').choices([...ROLES]).makeOptionMandatory())
    .option('--expires-in <duration>', "lifetime such as '30d' (default: no expiry)")
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const o = ctx.opts as { role: string; expiresIn?: string };
        const res = await ctx.client.post<{ token: string; id: string; name: string; role: string }>('/tokens', {
          name: validName(name, 'token'),
          role: o.role,
          ...(o.expiresIn === undefined ? {} : { expiresIn: o.expiresIn }),
        });
        if (ctx.p.json) {
          ctx.p.out(JSON.stringify(res, null, 2));
        } else {
          // The secret alone on stdout, so `TOKEN=$(rebound token create …)` works; the note on stderr.
          ctx.p.out(res.token);
          ctx.p.err(`token ${res.name} (${res.role}, id ${res.id}) created; the secret above is shown only once.`);
        }
      }),
    );

  token
    .command('list')
    .description('list tokens (never their secrets)')
    .action(
      verb(async (ctx: Ctx) => {
        const res = await ctx.client.list<TokenView>('/tokens');
        emit(ctx.p, res, () =>
          table(res.items, [
            { header: 'ID', value: (t) => t.id },
            { header: 'NAME', value: (t) => t.name },
            { header: 'ROLE', value: (t) => t.role },
            { header: 'CREATED', value: (t) => time(t.createdAt) },
            { header: 'EXPIRES', value: (t) => time(t.expiresAt) },
            { header: 'REVOKED', value: (t) => time(t.revokedAt) },
            { header: 'LAST USED', value: (t) => time(t.lastUsedAt) },
          ]),
        );
      }),
    );

  token
    .command('revoke <id>')
    .description('revoke a token by its id')
    .action(
      verb(async (ctx: Ctx, id: string) => {
        const res = await ctx.client.delete(`/tokens/${seg(id)}`);
        emit(ctx.p, res ?? { id, revoked: true }, () => `token ${id} revoked.`);
      }),
    );

  program
    .command('whoami')
    .description('the name and role of the token in use')
    .action(
      verb(async (ctx: Ctx) => {
        const me = await ctx.client.get<{ name: string; role: string }>('/whoami');
        emit(ctx.p, me, () => `${dash(me.name)} (${dash(me.role)}) at ${ctx.client.conn.url}`);
      }),
    );
}
