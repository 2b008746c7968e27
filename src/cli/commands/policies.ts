// `rebound policy create|list` and `rebound pair` / `rebound pairings`: how replication runs
// (frequency, retention, app-consistent points…) and which site replicates to which.
import type { Command } from 'commander';
import { afterAction, verb } from '../context.ts';
import type { Ctx } from '../context.ts';
import { emit, table, time, dash } from '../output.ts';
import { checked, validName } from './args.ts';
import { formatDuration } from '../../domain/durations.ts';
import { validatePolicy } from '../../domain/policy.ts';
import type { PolicyInput } from '../../domain/policy.ts';

/** Policies as the API returns them; durations either as text or as seconds. */
type PolicyView = Record<string, unknown> & { name: string; createdAt?: number };

function duration(p: PolicyView, key: 'frequency' | 'retention' | 'appConsistent'): string {
  const text = p[key];
  if (typeof text === 'string') return text;
  const seconds = p[`${key}Seconds`];
  if (typeof seconds === 'number') return key === 'appConsistent' && seconds === 0 ? 'off' : formatDuration(seconds);
  return '-';
}

interface PairingView {
  id: string;
  primary: string;
  recovery: string;
  policy: string;
  createdAt?: number;
}

export function registerPolicies(program: Command): void {
  const policy = program.command('policy').description('replication policies');

  policy
    .command('create <name>')
    .description('create a policy (admin); unset values take the defaults shown')
    .option('--frequency <duration>', 'copy frequency, the RPO target: 1s to 1h (default 30s)')
    .option('--retention <duration>', 'how long recovery points are kept (default 24h)')
    .option('--app-consistent <duration>', "app-consistent point frequency, or 'off' (default 4h)")
    .option('--compression <c>', 'zstd or none (default zstd)')
    .option('--encryption <e>', 'aes-256-gcm or none (default aes-256-gcm)')
    .option('--bandwidth <rate>', "bytes/s cap such as '10M'; 0 = none (default 0)")
    .option('--initial-start <when>', "'immediate' or HH:MM UTC (default immediate)")
    .action(
      verb(async (ctx: Ctx, name: string) => {
        const o = ctx.opts as { frequency?: string; retention?: string; appConsistent?: string; compression?: string; encryption?: string; bandwidth?: string; initialStart?: string };
        const input: PolicyInput = { name };
        if (o.frequency !== undefined) input.frequency = o.frequency;
        if (o.retention !== undefined) input.retention = o.retention;
        if (o.appConsistent !== undefined) input.appConsistent = o.appConsistent;
        if (o.compression !== undefined) input.compression = o.compression;
        if (o.encryption !== undefined) input.encryption = o.encryption;
        if (o.bandwidth !== undefined) input.bandwidth = o.bandwidth;
        if (o.initialStart !== undefined) input.initialStart = o.initialStart;
        const spec = checked(() => validatePolicy(input));
        const res = await ctx.client.post<PolicyView>('/policies', input);
        return afterAction(ctx, res, false, () =>
          `policy ${name} created: every ${formatDuration(spec.frequencySeconds)}, keeping ${formatDuration(spec.retentionSeconds)}, app-consistent ${spec.appConsistentSeconds === 0 ? 'off' : `every ${formatDuration(spec.appConsistentSeconds)}`}.`,
        );
      }),
    );

  policy
    .command('list')
    .description('list policies')
    .action(
      verb(async (ctx: Ctx) => {
        const res = await ctx.client.list<PolicyView>('/policies');
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no policies yet: create one with rebound policy create NAME.'
            : table(res.items, [
                { header: 'NAME', value: (p) => p.name },
                { header: 'FREQUENCY', value: (p) => duration(p, 'frequency') },
                { header: 'RETENTION', value: (p) => duration(p, 'retention') },
                { header: 'APP-CONSISTENT', value: (p) => duration(p, 'appConsistent') },
                { header: 'COMPRESSION', value: (p) => dash(p.compression) },
                { header: 'ENCRYPTION', value: (p) => dash(p.encryption) },
                { header: 'CREATED', value: (p) => time(p.createdAt) },
              ]),
        );
      }),
    );

  program
    .command('pair <primary> <recovery>')
    .description('pair a primary site with a recovery site under a policy (admin)')
    .requiredOption('--policy <name>', 'the replication policy')
    .option('--wait', 'follow the job, if the server starts one')
    .action(
      verb(async (ctx: Ctx, primary: string, recovery: string) => {
        const o = ctx.opts as { policy: string; wait?: boolean };
        validName(primary, 'site');
        validName(recovery, 'site');
        const res = await ctx.client.post<PairingView>('/pairings', { primary, recovery, policy: o.policy });
        return afterAction(ctx, res, o.wait === true, () => `${primary} now pairs with ${recovery} under policy ${o.policy}.`);
      }),
    );

  program
    .command('pairings')
    .description('list pairings')
    .action(
      verb(async (ctx: Ctx) => {
        const res = await ctx.client.list<PairingView>('/pairings');
        emit(ctx.p, res, () =>
          res.items.length === 0
            ? 'no pairings yet: pair two sites with rebound pair PRIMARY RECOVERY --policy NAME.'
            : table(res.items, [
                { header: 'PRIMARY', value: (x) => x.primary },
                { header: 'RECOVERY', value: (x) => x.recovery },
                { header: 'POLICY', value: (x) => x.policy },
                { header: 'CREATED', value: (x) => time(x.createdAt) },
              ]),
        );
      }),
    );
}
