// API latency with a realistically full vault: 10,000 protected items inserted directly, then
// through a real `rebound serve` (SQLite and PostgreSQL) the p50/p99 of each page of a full
// paginated walk of GET /api/v1/items?limit=100, and of starting a job (POST /api/v1/diag/jobs,
// the only job-starting route until protect/plans land, so it is not yet a job *over* the items:
// it measures enqueue cost with the full vault present). Prints one JSON line; asserts nothing.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { freshPostgresDatabase } from '../test/support/db.ts';
import { startServerProcess } from '../test/support/server.ts';
import { openStore, newId } from '../src/store/open.ts';

const quick = process.argv.includes('--quick');
const ITEMS = 10_000;
const WALKS = quick ? 2 : 5;
const JOB_STARTS = quick ? 30 : 100;

function pct(sorted: number[], p: number): number {
  return Number((sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN).toFixed(2));
}

async function seed(loc: { dataDir?: string; url?: string }): Promise<void> {
  const store = await openStore(loc);
  const t = Date.now();
  const root = path.join(loc.dataDir ?? '/tmp', 'bench-root');
  mkdirSync(root, { recursive: true });
  const a = newId();
  const b = newId();
  const pol = newId();
  const pair = newId();
  await store.db.insertInto('sites').values([
    { id: a, name: 'a', provider: 'physical', root, config: '{}', created_at: t },
    { id: b, name: 'b', provider: 'qemu', root, config: '{}', created_at: t },
  ]).execute();
  await store.db.insertInto('policies').values({ id: pol, name: 'p', frequency_s: 30, retention_s: 86400, app_consistent_s: 0, compression: 'zstd', encryption: 'none', bandwidth_bps: 0, initial_start: 'immediate', created_at: t }).execute();
  await store.db.insertInto('pairings').values({ id: pair, primary_site_id: a, recovery_site_id: b, policy_id: pol, created_at: t }).execute();
  const healths = ['normal', 'normal', 'normal', 'warning', 'critical'];
  for (let i = 0; i < ITEMS; i += 500) {
    const ms = Array.from({ length: 500 }, (_, j) => ({ id: newId(), name: `m-${String(i + j).padStart(5, '0')}`, site_id: a, host_id: null, kind: 'physical', disks: '[{"id":"d","path":"/x","sizeBytes":1,"format":"raw"}]', config: '{}', created_at: t }));
    await store.db.insertInto('machines').values(ms).execute();
    await store.db.insertInto('protected_items').values(ms.map((m, j) => ({
      id: newId(), machine_id: m.id, pairing_id: pair, state: 'protected', direction: 'forward', active_site_id: a, group_name: null,
      health: healths[(i + j) % healths.length] ?? 'normal', last_point_at: t - 10_000, details: '{}', version: 1, created_at: t, updated_at: t,
    }))).execute();
  }
  await store.close();
}

async function measure(dialect: 'sqlite' | 'postgres'): Promise<Record<string, number>> {
  const dbUrl = dialect === 'postgres' ? await freshPostgresDatabase() : undefined;
  const s = await startServerProcess({ ...(dbUrl ? { dbUrl } : {}), env: { REBOUND_ENABLE_TEST_JOBS: '1', REBOUND_LOG_LEVEL: 'error' } });
  try {
    await seed(dbUrl ? { url: dbUrl } : { dataDir: s.dataDir });
    const h = { authorization: `Bearer ${s.token}` };
    const page: number[] = [];
    let seen = 0;
    for (let w = 0; w < WALKS; w++) {
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
    const start: number[] = [];
    for (let i = 0; i < JOB_STARTS; i++) {
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
    page.sort((x, y) => x - y);
    start.sort((x, y) => x - y);
    return {
      itemsPageP50Ms: pct(page, 50),
      itemsPageP99Ms: pct(page, 99),
      itemsPages: page.length,
      jobStartP50Ms: pct(start, 50),
      jobStartP99Ms: pct(start, 99),
    };
  } finally {
    await s.cleanup();
  }
}

const out: Record<string, unknown> = { items: ITEMS, note: 'GET /api/v1/items?limit=100 over full walks; POST /api/v1/diag/jobs (10 tasks) with the vault full; real rebound serve over loopback' };
for (const dialect of ['sqlite', 'postgres'] as const) {
  for (const [k, v] of Object.entries(await measure(dialect))) out[`${dialect}.${k}`] = v;
}
console.log(JSON.stringify(out));
process.exit(0);
