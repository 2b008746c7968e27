// `npm run bench [-- --quick] [--only NAME[,NAME…] | --render]`: runs every benchmark script in bench/ as
// its own process (each prints one JSON document on its last stdout line), then writes the figures
// to bench/out/results.json and a readable BENCHMARKS.md (quick mode: bench/out/results.quick.json
// and bench/out/BENCHMARKS.quick.md, so a full run's files stay). With --only, the named sections
// are measured and merged into the existing page and JSON: other sections keep their last results
// (from the JSON, or verbatim from the page when the JSON does not have them). Every section says
// when, at which commit and at what load average it ran. A benchmark whose JSON has a `markdown`
// string gets it as its section, its other figures in a folded table. Benchmarks measure; they
// assert nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyIdx = args.indexOf('--only');
/** --render: measure nothing, write the page again from the JSON (and the page's kept sections). */
const renderOnly = args.includes('--render');
const only = renderOnly ? [] : onlyIdx >= 0 ? (args[onlyIdx + 1] ?? '').split(',').filter(Boolean) : undefined;
const available = readdirSync(path.join(root, 'bench')).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, '')).sort();
if (only !== undefined) {
  const unknown = only.filter((n) => !available.includes(n));
  if ((only.length === 0 && !renderOnly) || unknown.length > 0) {
    process.stderr.write(`--only: ${only.length === 0 ? 'no benchmark named' : `no benchmark named ${unknown.join(', ')}`}; choose from ${available.join(', ')} (comma-separated).\n`);
    process.exit(2);
  }
}

interface BenchResult {
  name: string;
  ok: boolean;
  seconds: number;
  data?: unknown;
  error?: string;
  /** When this result was measured (kept results of other benchmarks keep theirs). */
  date?: string;
  /** The commit it was measured at (the benchmark's own `commit` figure when it reports one). */
  commit?: string;
  /** Load average (1, 5, 15 min) when it started. */
  loadAverageAtStart?: number[];
}

const head = ((): string => {
  try {
    const short = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    // bench/out is what the runs write (results.json is tracked): a section run after another
    // is not "+changes" for that.
    const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no', '--', 'src', 'bench', 'scripts', ':!bench/out'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${short}+changes` : short;
  } catch {
    return 'unknown';
  }
})();

const scripts = available.filter((n) => only === undefined || only.includes(n));
const results: BenchResult[] = [];
for (const name of scripts) {
  process.stderr.write(`[bench] ${name}${quick ? ' (quick)' : ''} …\n`);
  const loadAverageAtStart = loadavg().map((x) => Math.round(x * 100) / 100);
  const date = new Date().toISOString();
  const t0 = performance.now();
  const run = spawnSync(process.execPath, [path.join(root, 'bench', `${name}.ts`), ...(quick ? ['--quick'] : [])], {
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
    const own = (data as { commit?: unknown } | null)?.commit;
    results.push({ name, ok: true, seconds, data, date, commit: typeof own === 'string' ? own : head, loadAverageAtStart });
  } catch (err) {
    results.push({ name, ok: false, seconds, error: err instanceof Error ? err.message : String(err), date, commit: head, loadAverageAtStart });
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
// With --only, the other benchmarks' last results (same mode) are kept, so the page stays whole.
const resultsFile = path.join(root, 'bench', 'out', quick ? 'results.quick.json' : 'results.json');
const pageFile = path.join(root, quick ? 'bench/out/BENCHMARKS.quick.md' : 'BENCHMARKS.md');
if (only !== undefined && existsSync(resultsFile)) {
  const previous = (JSON.parse(readFileSync(resultsFile, 'utf8')) as { results?: BenchResult[] }).results ?? [];
  for (const p of previous) if (!results.some((r) => r.name === p.name)) results.push(p);
}
results.sort((a, b) => a.name.localeCompare(b.name));
// Sections on the page that neither this run nor the JSON has (measured before the JSON kept
// them) are carried over verbatim, each from its `## name` heading (with the comment line
// before it) to the next.
const verbatim = new Map<string, string[]>();
if (only !== undefined && existsSync(pageFile)) {
  const old = readFileSync(pageFile, 'utf8').split('\n');
  let name: string | undefined;
  let body: string[] = [];
  const flush = (): void => {
    if (name !== undefined && !results.some((r) => r.name === name)) verbatim.set(name, body);
  };
  for (let i = 0; i < old.length; i++) {
    const l = old[i]!;
    const m = /^## (\S+)\s*$/.exec(l);
    if (m) {
      flush();
      name = m[1];
      const prev = body.at(-1);
      body = [];
      if (prev?.startsWith('<!--')) body.push(prev);
      body.push(l);
      continue;
    }
    body.push(l);
  }
  flush();
  // A comment line that belongs to the next section is not part of this one.
  for (const b of verbatim.values()) {
    while (b.length > 0 && (b.at(-1) === '' || b.at(-1)!.startsWith('<!--'))) b.pop();
    b.push('');
  }
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

const reproduce = (name: string): string => `\`nice -n 10 npm run bench -- --only ${name}${quick ? ' --quick' : ''}\``;
const names = [...new Set([...results.map((r) => r.name), ...verbatim.keys()])].sort();
const lines: string[] = [
  '# Benchmarks',
  '',
  `Machine: ${machine.cpus} × ${machine.cpuModel}, ${machine.memoryGiB} GiB, Node ${machine.node}; page written ${machine.date}; ${machine.mode} mode. The machine is shared with other engineers' tests and QEMU guests (TCG), so each section gives the load average at its start.`,
  'Reproduce: `nice -n 10 npm run bench` (every section), `nice -n 10 npm run bench -- --only NAME[,NAME…]` (those sections, merged into this page and the JSON), `--quick` (smaller sizes, written to bench/out/ instead). Raw figures: `bench/out/results.json`.',
  '',
  '| section | measured | commit | load average at start (1, 5, 15 min) | run time |',
  '| --- | --- | --- | --- | --- |',
  ...names.map((n) => {
    const r = results.find((x) => x.name === n);
    if (!r) return `| [${n}](#${n}) | see section (kept from an earlier page) | | | |`;
    return `| [${n}](#${n}) | ${r.date ?? '?'} | ${r.commit ?? '?'} | ${r.loadAverageAtStart ? r.loadAverageAtStart.join(', ') : '?'} | ${r.seconds.toFixed(0)} s${r.ok ? '' : ' (failed)'} |`;
  }),
  '',
];
for (const n of names) {
  const r = results.find((x) => x.name === n);
  if (!r) {
    lines.push(...verbatim.get(n)!);
    continue;
  }
  lines.push(`## ${r.name}`, '', `Measured ${r.date ?? '?'} at commit ${r.commit ?? '?'}, load average ${r.loadAverageAtStart ? r.loadAverageAtStart.join(' / ') : '?'} at the start; run time ${r.seconds.toFixed(1)} s. Reproduce: ${reproduce(r.name)}.`, '');
  // The reading of a run (aims missed and their causes, what did not fit): bench/notes/NAME.md,
  // written by whoever ran it, kept apart from the measured figures.
  const notes = path.join(root, 'bench', 'notes', `${r.name}.md`);
  if (!quick && existsSync(notes)) lines.push(readFileSync(notes, 'utf8').trim(), '');
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
writeFileSync(pageFile, lines.join('\n'));
process.stderr.write(`[bench] wrote ${path.relative(root, pageFile)} and ${path.relative(root, resultsFile)}\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
