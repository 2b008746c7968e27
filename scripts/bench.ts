// `npm run bench [-- --quick] [--only NAME]`: runs every benchmark script in bench/ as its own
// process (each prints one JSON document on its last stdout line), then writes the figures to
// bench/out/results.json and a readable BENCHMARKS.md. Benchmarks measure; they assert nothing.
import { spawnSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyIdx = args.indexOf('--only');
const only = onlyIdx >= 0 ? args[onlyIdx + 1] : undefined;

interface BenchResult {
  name: string;
  ok: boolean;
  seconds: number;
  data?: unknown;
  error?: string;
}

const scripts = readdirSync(path.join(root, 'bench'))
  .filter((f) => f.endsWith('.ts'))
  .filter((f) => only === undefined || f.replace(/\.ts$/, '') === only)
  .sort();

const results: BenchResult[] = [];
for (const file of scripts) {
  const name = file.replace(/\.ts$/, '');
  process.stderr.write(`[bench] ${name}${quick ? ' (quick)' : ''} …\n`);
  const t0 = performance.now();
  const run = spawnSync(process.execPath, [path.join(root, 'bench', file), ...(quick ? ['--quick'] : [])], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  const seconds = (performance.now() - t0) / 1000;
  const last = run.stdout.trim().split('\n').pop() ?? '';
  try {
    if (run.status !== 0) throw new Error(`exited with ${run.status ?? run.signal}`);
    let data: unknown;
    try {
      data = JSON.parse(last) as unknown; // one JSON line last …
    } catch {
      data = JSON.parse(run.stdout.trim()) as unknown; // … or the whole output as one document
    }
    results.push({ name, ok: true, seconds, data });
  } catch (err) {
    results.push({ name, ok: false, seconds, error: err instanceof Error ? err.message : String(err) });
  }
}

const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  date: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
};
mkdirSync(path.join(root, 'bench', 'out'), { recursive: true });
writeFileSync(path.join(root, 'bench', 'out', 'results.json'), JSON.stringify({ machine, results }, null, 2));

function flatten(prefix: string, v: unknown, out: [string, string][]): void {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(prefix ? `${prefix}.${k}` : k, x, out);
  } else {
    out.push([prefix, Array.isArray(v) ? JSON.stringify(v) : String(v)]);
  }
}

const lines: string[] = [
  '# Benchmarks',
  '',
  `Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}; ${machine.date}; ${machine.mode} mode.`,
  'Reproduce: `npm run bench` (or `npm run bench -- --only NAME`, `--quick`). Raw figures: `bench/out/results.json`.',
  '',
];
for (const r of results) {
  lines.push(`## ${r.name}`, '', `Run time ${r.seconds.toFixed(1)} s.`, '');
  if (!r.ok) {
    lines.push(`Failed: ${r.error ?? 'unknown error'}`, '');
    continue;
  }
  const rows: [string, string][] = [];
  flatten('', r.data, rows);
  lines.push('| figure | value |', '| --- | --- |', ...rows.map(([k, v]) => `| ${k} | ${v} |`), '');
}
writeFileSync(path.join(root, quick ? 'bench/out/BENCHMARKS.quick.md' : 'BENCHMARKS.md'), lines.join('\n'));
process.stderr.write(`[bench] wrote ${quick ? 'bench/out/BENCHMARKS.quick.md' : 'BENCHMARKS.md'} and bench/out/results.json\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
