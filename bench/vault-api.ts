// API latency with a realistically full vault: 10,000 protected items inserted directly, then
// through a real `rebound serve` (SQLite and PostgreSQL) the p50/p99 of each page of a full
// paginated walk of GET /api/v1/items?limit=100, and of starting a job (POST /api/v1/diag/jobs,
// the only job-starting route until protect/plans land, so it is not yet a job *over* the items:
// it measures enqueue cost with the full vault present). Each full walk is one run (its own p50
// and p99 over its 100 pages), and the job starts come in rounds of the same count; the figures
// are the median and spread over the runs (full mode 5 walks and 3 rounds of 100 starts, quick
// 3 walks and 3 rounds of 20). Prints one JSON line; asserts nothing.
import path from 'node:path';
import { freshPostgresDatabase } from '../test/support/db.ts';
import { startServerProcess } from '../test/support/server.ts';
import { benchMode, commit, fig, load, pct, show } from './lib/common.ts';
import type { Fig } from './lib/common.ts';
import { seedItems } from './lib/vault-seed.ts';

const quick = benchMode() !== 'full';
/** --smoke (the CI shape test): a smaller vault. */
const ITEMS = benchMode() === 'smoke' ? 1000 : 10_000;
const WALKS = quick ? 3 : 5;
const ROUNDS = 3;
const JOB_STARTS = quick ? 20 : 100;

async function measure(dialect: 'sqlite' | 'postgres'): Promise<Record<string, Fig | number>> {
  const dbUrl = dialect === 'postgres' ? await freshPostgresDatabase() : undefined;
  const s = await startServerProcess({ ...(dbUrl ? { dbUrl } : {}), env: { REBOUND_ENABLE_TEST_JOBS: '1', REBOUND_LOG_LEVEL: 'error' } });
  try {
    await seedItems(dbUrl ? { url: dbUrl } : { dataDir: s.dataDir }, ITEMS);
    const h = { authorization: `Bearer ${s.token}` };
    const walks: number[][] = [];
    let seen = 0;
    for (let w = 0; w < WALKS; w++) {
      const page: number[] = [];
      walks.push(page);
      let cursor: string | null = null;
      seen = 0;
      do {
        const t0 = performance.now();
        const res = await fetch(`${s.url}/api/v1/items?limit=100${cursor ? `&cursor=${cursor}` : ''}`, { headers: h });
        const body = (await res.json()) as { items: unknown[]; next: string | null };
        page.push(performance.now() - t0);
        seen += body.items.length;
        cursor = body.next;
      } while (cursor);
    }
    if (seen !== ITEMS) throw new Error(`walk saw ${seen} items, expected ${ITEMS}`);
    const rounds: number[][] = [];
    for (let i = 0; i < JOB_STARTS * ROUNDS; i++) {
      if (i % JOB_STARTS === 0) rounds.push([]);
      const start = rounds.at(-1)!;
      const t0 = performance.now();
      const res = await fetch(`${s.url}/api/v1/diag/jobs`, {
        method: 'POST',
        headers: { ...h, 'content-type': 'application/json' },
        body: JSON.stringify({ file: path.join(s.dataDir, 'seq'), tasks: 10, sleepMs: 0 }),
      });
      await res.text();
      if (res.status !== 202) throw new Error(`job start answered ${res.status}`);
      start.push(performance.now() - t0);
    }
    const sorted = (v: number[][]): number[][] => v.map((x) => [...x].sort((p, q) => p - q));
    const w = sorted(walks);
    const r = sorted(rounds);
    return {
      itemsPageP50Ms: fig(w.map((x) => pct(x, 50))),
      itemsPageP99Ms: fig(w.map((x) => pct(x, 99))),
      itemsPagesPerWalk: walks[0]?.length ?? 0,
      jobStartP50Ms: fig(r.map((x) => pct(x, 50))),
      jobStartP99Ms: fig(r.map((x) => pct(x, 99))),
    };
  } finally {
    await s.cleanup();
  }
}

const out: Record<string, unknown> = { items: ITEMS, walks: WALKS, jobStartRounds: ROUNDS, jobStartsPerRound: JOB_STARTS, commit: await commit(), loadAverageAtStart: load(), note: 'GET /api/v1/items?limit=100 over full walks (one walk = one run: its p50/p99 over its pages); POST /api/v1/diag/jobs (10 tasks) in rounds with the vault full; real rebound serve over loopback; figures are median (min–max, n) over the runs' };
const rows: string[] = [];
for (const dialect of ['sqlite', 'postgres'] as const) {
  const m = await measure(dialect);
  out[dialect] = m;
  const f = (k: string): string => show(m[k] as Fig, ' ms');
  rows.push(`| ${dialect === 'sqlite' ? 'SQLite' : 'PostgreSQL'} | ${f('itemsPageP50Ms')} | ${f('itemsPageP99Ms')} | ${f('jobStartP50Ms')} | ${f('jobStartP99Ms')} |`);
}
out['loadAverageAtEnd'] = load();
out['markdown'] = [
  `API latency with ${ITEMS.toLocaleString('en')} protected items in the vault, through a real \`rebound serve\` over loopback: a full paginated walk of \`GET /api/v1/items?limit=100\` is one run (${WALKS} runs), job starts (\`POST /api/v1/diag/jobs\`, 10 tasks) come in ${ROUNDS} rounds of ${JOB_STARTS}; median (min–max, n) over the runs of each run's percentile.`,
  '',
  '| store | items page p50 | items page p99 | job start p50 | job start p99 |',
  '| --- | --- | --- | --- | --- |',
  ...rows,
  '',
  `Load average ${JSON.stringify(out['loadAverageAtStart'])} at start, ${JSON.stringify(out['loadAverageAtEnd'])} at end; commit ${String(out['commit'])}. Reproduce: \`nice -n 10 npm run bench -- --only vault-api\`.`,
].join('\n');
console.log(JSON.stringify(out));
process.exit(0);
