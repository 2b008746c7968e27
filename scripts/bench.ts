// `npm run bench [-- --quick] [--only NAME]`: runs every benchmark script in bench/ as its own
// process (each prints one JSON document on its last stdout line), then writes the figures to
// bench/out/results.json and a readable BENCHMARKS.md (quick mode: bench/out/results.quick.json
// and bench/out/BENCHMARKS.quick.md, so a full run's files stay). With --only, the other
// benchmarks' last results are kept on the page. A benchmark whose JSON has a `markdown` string
// gets it as its section, its other figures in a folded table. Benchmarks measure; they assert nothing.
import { spawnSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
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
  /** When this result was measured (kept results of other benchmarks keep theirs). */
  date?: string;
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
for (const r of results) r.date = machine.date;
// With --only, the other benchmarks' last results (same mode) are kept, so the page stays whole.
const resultsFile = path.join(root, 'bench', 'out', quick ? 'results.quick.json' : 'results.json');
if (only !== undefined && existsSync(resultsFile)) {
  const previous = (JSON.parse(readFileSync(resultsFile, 'utf8')) as { results?: BenchResult[] }).results ?? [];
  for (const p of previous) if (!results.some((r) => r.name === p.name)) results.push(p);
  results.sort((a, b) => a.name.localeCompare(b.name));
}
mkdirSync(path.join(root, 'bench', 'out'), { recursive: true });
writeFileSync(resultsFile, JSON.stringify({ machine, results }, null, 2));

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
  'Reproduce: `npm run bench` (or `npm run bench -- --only NAME`, `--quick`). Raw figures: `bench/out/results.json`. Run it niced (`nice -n 10 npm run bench`) on a shared machine.',
  '',
];
for (const r of results) {
  lines.push(`## ${r.name}`, '', `Run time ${r.seconds.toFixed(1)} s${r.date && r.date !== machine.date ? ` (measured ${r.date})` : ''}.`, '');
  if (!r.ok) {
    lines.push(`Failed: ${r.error ?? 'unknown error'}`, '');
    continue;
  }
  // A benchmark may bring its own summary (`markdown`); its other figures follow as a table.
  let data = r.data;
  let table = false;
  if (data !== null && typeof data === 'object' && typeof (data as { markdown?: unknown }).markdown === 'string') {
    const { markdown, ...rest } = data as { markdown: string };
    lines.push(markdown, '');
    data = rest;
    table = true;
  }
  const rows: [string, string][] = [];
  flatten('', data, rows);
  const tableLines = ['| figure | value |', '| --- | --- |', ...rows.map(([k, v]) => `| ${k} | ${v} |`)];
  if (table) lines.push('<details><summary>All figures</summary>', '', ...tableLines, '', '</details>', '');
  else lines.push(...tableLines, '');
}
writeFileSync(path.join(root, quick ? 'bench/out/BENCHMARKS.quick.md' : 'BENCHMARKS.md'), lines.join('\n'));
process.stderr.write(`[bench] wrote ${quick ? 'bench/out/BENCHMARKS.quick.md' : 'BENCHMARKS.md'} and ${path.relative(root, resultsFile)}\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
