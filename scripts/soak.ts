// `npm run soak -- --runs N --seed S [--scenario NAME[,NAME…]] [--parallel P] [--out FILE] [--keep-failed]`:
// N randomized fault-injection runs of real replication (src/faults/soak.ts), one line per run
// as it finishes, then a summary table (scenario, runs, failures, data lost), also written as
// JSON with every run's details to FILE (default soak-results.json). Run k of seed S is
// reproduced alone by `--runs 1 --seed S+k` (its line prints that seed). Exit status 1 when any
// run failed. Heavy: run it with `nice -n 10`. `--list` prints the scenarios. `--parallel P` runs P
// at once (each its own server and directories; the same runs, the timing aside).
import { writeFileSync } from 'node:fs';
import { formatRunLine, formatSummary, runSoak, summarize } from '../src/faults/soak.ts';
import type { RunResult } from '../src/faults/soak.ts';
import { SCENARIOS, scenarioByName } from '../src/faults/soak-scenarios.ts';

function usage(message?: string): never {
  if (message) process.stderr.write(`soak: ${message}\n`);
  process.stderr.write('usage: npm run soak -- --runs N --seed S [--scenario NAME[,NAME...]] [--parallel P] [--out FILE] [--keep-failed] [--list]\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const opts: { runs?: number; seed?: number; scenarios?: string[]; out: string; keepFailed: boolean; parallel: number } = { out: 'soak-results.json', keepFailed: false, parallel: 1 };
for (let i = 0; i < args.length; i++) {
  const a = args[i]!;
  const value = (): string => {
    const v = args[++i];
    if (v === undefined) usage(`${a} needs a value`);
    return v;
  };
  const int = (v: string, what: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`${what} '${v}' is not a whole number of at least ${min}`);
    return n;
  };
  if (a === '--runs') opts.runs = int(value(), '--runs', 1);
  else if (a === '--seed') opts.seed = int(value(), '--seed', 0);
  else if (a === '--scenario') opts.scenarios = value().split(',').filter(Boolean);
  else if (a === '--out') opts.out = value();
  else if (a === '--parallel') opts.parallel = int(value(), '--parallel', 1);
  else if (a === '--keep-failed') opts.keepFailed = true;
  else if (a === '--list') {
    for (const s of SCENARIOS) process.stdout.write(`${s.name.padEnd(22)} [${s.phases.join('|')}] ${s.description}\n`);
    process.exit(0);
  } else usage(`unknown argument '${a}'`);
}
if (opts.runs === undefined) usage('--runs is required');
if (opts.seed === undefined) usage('--seed is required (any whole number; the same seed replays the same runs)');
try {
  for (const s of opts.scenarios ?? []) scenarioByName(s);
} catch (err) {
  usage((err as Error).message);
}

const results: RunResult[] = [];
const save = (seconds: number, startedAt: string): void => {
  writeFileSync(opts.out, `${JSON.stringify({ seed: opts.seed, runs: results.length, requestedRuns: opts.runs, scenarios: opts.scenarios ?? 'all', startedAt, seconds, parallel: opts.parallel, command: `npm run soak -- --runs ${opts.runs} --seed ${opts.seed}${opts.scenarios ? ` --scenario ${opts.scenarios.join(',')}` : ''}${opts.parallel > 1 ? ` --parallel ${opts.parallel}` : ''}`, summary: summarize(results), results }, null, 2)}\n`);
};
// SIGINT/SIGTERM: finish the run under way (its server, writer and mounts cleaned up), write
// the table, exit; a second signal exits at once.
const stop = new AbortController();
const onSignal = (): void => {
  if (stop.signal.aborted) process.exit(130);
  process.stderr.write('soak: stopping after the run under way (signal again to exit now)\n');
  stop.abort();
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
const startedAt = new Date().toISOString();
const t0 = Date.now();
const report = await runSoak({
  runs: opts.runs,
  seed: opts.seed,
  ...(opts.scenarios ? { scenarios: opts.scenarios } : {}),
  keepFailed: opts.keepFailed,
  parallel: opts.parallel,
  signal: stop.signal,
  onRun: (r) => {
    results.push(r);
    process.stdout.write(`${formatRunLine(r)}\n`);
    // Written after every run, so a long soak that is stopped still leaves its table.
    save(Math.round((Date.now() - t0) / 1000), startedAt);
  },
});
process.stdout.write(`\n${formatSummary(report.summary)}\n\n${report.runs} runs in ${report.seconds} s; details in ${opts.out}\n`);
save(report.seconds, startedAt);
process.exit(report.summary.at(-1)!.failures > 0 ? 1 : 0);
