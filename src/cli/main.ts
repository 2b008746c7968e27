// The `rebound` command line: bin/rebound runs this file. It builds the verbs (one module per
// group under ./commands), parses, and turns every failure into "rebound: <message>" on stderr
// with the documented exit code (exit-codes.ts, docs/cli.md).
import { Command, CommanderError } from 'commander';
import { CliError } from './cli-error.ts';
import { EXIT, EXIT_CODES_HELP, exitCodeForStatus } from './exit-codes.ts';
import { registerSites } from './commands/sites.ts';
import { registerMachines } from './commands/machines.ts';
import { registerPolicies } from './commands/policies.ts';
import { registerJobs } from './commands/jobs.ts';
import { registerTokens } from './commands/tokens.ts';
import { registerServe } from './commands/serve.ts';
import { registerComponents } from './commands/components.ts';
import { registerRoles } from './commands/roles.ts';
import { registerOptionalVerbs } from './commands/optional.ts';
import { registerDemo } from './commands/demo.ts';
import { registerPlans } from './commands/plans.ts';
import { registerItemActions, registerItemViews, registerReplicationVerbs } from './commands/items.ts';
import { ReboundError, httpStatusOf } from '../domain/errors.ts';

const VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command('rebound')
    .description('Rebound: disaster recovery for KVM/QEMU VMs and Linux servers')
    .version(VERSION)
    .option('--url <url>', 'server URL (env REBOUND_URL; default http://127.0.0.1:7480)')
    .option('--token <token>', 'API token (env REBOUND_TOKEN; default ./.rebound/admin.token)')
    .option('--json', 'machine-readable output: the API JSON as received')
    .option('-q, --quiet', 'no progress output')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `\nEnvironment:\n  REBOUND_URL    server URL\n  REBOUND_TOKEN  API token\n\n${EXIT_CODES_HELP}\n\nDocs: docs/cli.md`,
    );
  program.configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error: ') ? `rebound: ${s.slice(7)}` : s) });
  program.exitOverride();

  registerServe(program);
  registerSites(program);
  registerMachines(program);
  registerPolicies(program);
  registerJobs(program);
  registerItemViews(program);
  registerReplicationVerbs(program);
  registerItemActions(program);
  registerPlans(program);
  registerTokens(program);
  registerComponents(program);
  registerRoles(program);
  registerOptionalVerbs(program);
  registerDemo(program);

  // Subcommands inherit exit override and output so usage errors get exit code 2 everywhere.
  const inherit = (cmd: Command) => {
    for (const sub of cmd.commands) {
      sub.exitOverride();
      sub.configureOutput(program.configureOutput());
      sub.showHelpAfterError('(run with --help for usage)');
      inherit(sub);
    }
  };
  inherit(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    return report(err, program.opts().json === true || argv.includes('--json'));
  }
}

function report(err: unknown, json: boolean): number {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; everything else commander refuses (unknown verb or option,
    // missing argument, a group without its verb) is a usage error.
    return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  const e =
    err instanceof CliError
      ? err
      : err instanceof ReboundError
        ? new CliError(err.message, { exitCode: exitCodeForStatus(httpStatusOf[err.kind]), hint: err.hint, code: err.code })
        : new CliError(err instanceof Error ? err.message : String(err), { exitCode: EXIT.other, code: 'internal' });
  if (json && e.body !== undefined) process.stdout.write(`${JSON.stringify(e.body, null, 2)}\n`);
  process.stderr.write(`rebound: ${e.message}\n`);
  if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
  return e.exitCode;
}

if (import.meta.main) {
  // `rebound … | head`: the reader went away; stop quietly instead of throwing EPIPE.
  for (const s of [process.stdout, process.stderr]) s.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0); else throw err; });
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
