// A job worker in its own process, for crash tests: `node job-worker.ts JSON` where JSON is
// { dataDir? , url?, workerId, leaseMs }. Registers `test.append`, whose task N appends the line
// "N" to params.file exactly once (idempotent: it checks the file), after params.sleepMs; and
// `test.span`, whose tasks append {job, seq, start, end, worker} lines to params.file (to find
// overlapping runs across processes). `concurrency` in the JSON sets the engine's.
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { JobEngine } from '../../src/jobs/engine.ts';
import { openStore } from '../../src/store/open.ts';

interface Params {
  file: string;
  tasks: number;
  sleepMs: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as { dataDir?: string; url?: string; workerId: string; leaseMs: number; concurrency?: number };
const store = await openStore({ dataDir: cfg.dataDir, url: cfg.url });
const engine = new JobEngine({ store, workerId: cfg.workerId, leaseMs: cfg.leaseMs, pollMs: 20, ...(cfg.concurrency ? { concurrency: cfg.concurrency } : {}) });
engine.register({
  kind: 'test.span',
  describe: (p: { tasks: number }) => Array.from({ length: p.tasks }, (_, i) => ({ name: `span ${i}` })),
  runTask: async (ctx) => {
    const p = ctx.params as { file: string; sleepMs: number };
    const start = performance.timeOrigin + performance.now();
    await sleep(p.sleepMs, undefined, { signal: ctx.signal });
    const end = performance.timeOrigin + performance.now();
    appendFileSync(p.file, `${JSON.stringify({ job: ctx.job.id, seq: ctx.task.seq, start, end, worker: cfg.workerId })}\n`);
    return null;
  },
});
engine.register({
  kind: 'test.append',
  describe: (p: Params) => Array.from({ length: p.tasks }, (_, i) => ({ name: `append ${i}` })),
  runTask: async (ctx) => {
    const p = ctx.params as Params;
    const line = `${ctx.task.seq}`;
    const lines = existsSync(p.file) ? readFileSync(p.file, 'utf8').split('\n') : [];
    if (lines.includes(line)) return { skipped: true };
    await sleep(p.sleepMs, undefined, { signal: ctx.signal });
    appendFileSync(p.file, `${line}\n`);
    await ctx.saveCheckpoint({ written: true });
    return { wrote: line, by: cfg.workerId };
  },
});
engine.start();
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void engine.stop().then(() => store.close()).then(() => process.exit(0));
});
