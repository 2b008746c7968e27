// Jobs completed per second by the durable job engine: trivial one-task jobs, with one and with
// two worker processes, on SQLite (one file) and on a throwaway PostgreSQL. Prints JSON.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { JobEngine } from '../src/jobs/engine.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/open.ts';
import { freshPostgresDatabase } from '../test/support/db.ts';

const quick = process.argv.includes('--quick');
const JOBS = quick ? 300 : 3000;
const root = path.resolve(import.meta.dirname, '..');

const workerSource = `
import { JobEngine } from '${root}/src/jobs/engine.ts';
import { openStore } from '${root}/src/store/open.ts';
const cfg = JSON.parse(process.argv[1]);
const store = await openStore(cfg.location);
const engine = new JobEngine({ store, workerId: cfg.id, pollMs: 5, concurrency: 16 });
engine.register({ kind: 'bench.noop', describe: () => [{ name: 'noop' }], runTask: async () => null });
engine.start();
process.stdout.write('ready\\n');
process.on('SIGTERM', () => { void engine.stop().then(() => store.close()).then(() => process.exit(0)); });
`;

async function measure(location: { dataDir?: string; url?: string }, workers: number): Promise<{ perSecond: number; enqueuePerSecond: number }> {
  const store: Store = await openStore(location);
  const enq = new JobEngine({ store });
  enq.register({ kind: 'bench.noop', describe: () => [{ name: 'noop' }], runTask: async () => null });
  const e0 = performance.now();
  for (let i = 0; i < JOBS; i++) await enq.enqueue({ kind: 'bench.noop', params: {}, createdBy: 'bench' });
  const enqueuePerSecond = Math.round(JOBS / ((performance.now() - e0) / 1000));
  const procs = [];
  const ready: Promise<void>[] = [];
  for (let w = 0; w < workers; w++) {
    const p = spawn(process.execPath, ['--input-type=module', '-e', workerSource, JSON.stringify({ location, id: `w${w}` })], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(p);
    ready.push(new Promise((resolve) => p.stdout.once('data', () => resolve())));
  }
  // The clock starts when the first worker is ready (process start-up is not job throughput).
  await Promise.race(ready);
  const t0 = performance.now();
  for (;;) {
    const left = await store.db.selectFrom('jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('state', '!=', 'succeeded').executeTakeFirstOrThrow();
    if (Number(left.n) === 0) break;
    await sleep(20);
  }
  const seconds = (performance.now() - t0) / 1000;
  for (const p of procs) p.kill('SIGTERM');
  await store.close();
  return { perSecond: Math.round(JOBS / seconds), enqueuePerSecond };
}

const out: Record<string, unknown> = { jobs: JOBS, note: 'one-task no-op jobs, all queued before the workers start; clock from the first worker ready' };
for (const dialect of ['sqlite', 'postgres'] as const) {
  for (const workers of [1, 2]) {
    let location: { dataDir?: string; url?: string };
    let dir: string | undefined;
    if (dialect === 'sqlite') {
      dir = mkdtempSync(path.join(tmpdir(), 'rebound-bench-'));
      location = { dataDir: dir };
    } else {
      location = { url: await freshPostgresDatabase() };
    }
    const m = await measure(location, workers);
    out[`${dialect}.jobsPerSecond.${workers}worker${workers > 1 ? 's' : ''}`] = m.perSecond;
    // Enqueue (one at a time, each a transaction with its task rows, then read back) is measured
    // on the first round only; the second round repeats it on another database.
    if (workers === 1) out[`${dialect}.enqueuesPerSecond`] = m.enqueuePerSecond;
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}
console.log(JSON.stringify(out));
process.exit(0);
