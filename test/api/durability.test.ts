// A job survives `kill -9` of `rebound serve`: a diag.sequence job whose tasks each append one
// line to a file is interrupted mid-task by SIGKILL; after a restart (SQLite) or by the other
// server sharing the PostgreSQL vault, it completes and every line is in the file exactly once.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freshPostgresDatabase } from '../support/db.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { call, openVault } from './helpers.ts';

const ENV = { REBOUND_ENABLE_TEST_JOBS: '1', REBOUND_JOB_LEASE_MS: '1000' };
const TASKS = 5;
const EXPECTED = Array.from({ length: TASKS }, (_, i) => `${i}\n`).join('');

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean).length : 0);

async function startJob(s: ServerProcess, file: string): Promise<string> {
  const r = await call(s.url, 'POST', '/api/v1/diag/jobs', { token: s.token, body: { file, tasks: TASKS, sleepMs: 400 } });
  assert.equal(r.status, 202, r.text);
  return (r.body as { job: { id: string } }).job.id;
}

async function finished(s: ServerProcess, id: string): Promise<{ state: string; tasks: { state: string }[] }> {
  return until('the job to finish', async () => {
    const r = await call(s.url, 'GET', `/api/v1/jobs/${id}`, { token: s.token });
    const j = r.body as { state: string; tasks: { state: string }[] };
    return ['succeeded', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
  });
}

describe('job durability across kill -9', () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it('SQLite: the restarted server finishes the job, each task side effect exactly once', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'rebound-dur-'));
    cleanups.push(async () => rmSync(dataDir, { recursive: true, force: true }));
    const file = path.join(dataDir, 'seq');
    const first = await startServerProcess({ dataDir, env: ENV });
    cleanups.push(first.stop);
    const id = await startJob(first, file);
    await until('two tasks done', async () => (lines(file) >= 2 ? true : undefined));
    await first.kill9();
    const written = lines(file);
    assert.ok(written < TASKS, 'killed before the job ended');
    const second = await startServerProcess({ dataDir, env: ENV });
    cleanups.push(second.stop);
    const job = await finished(second, id);
    assert.equal(job.state, 'succeeded');
    assert.deepEqual(job.tasks.map((t) => t.state), Array(TASKS).fill('succeeded'));
    assert.equal(readFileSync(file, 'utf8'), EXPECTED);
    await second.stop();
  });

  it('PostgreSQL: of two servers on one vault, the survivor takes over the killed one\'s job', async () => {
    const dbUrl = await freshPostgresDatabase();
    const a = await startServerProcess({ dbUrl, env: ENV });
    cleanups.push(a.cleanup);
    const b = await startServerProcess({ dbUrl, env: ENV, token: a.token });
    cleanups.push(b.cleanup);
    const file = path.join(a.dataDir, 'seq');
    const vault = await openVault({ url: dbUrl });
    cleanups.push(() => vault.close());
    const id = await startJob(a, file);
    const holder = await until('a task to be running', async () => {
      const row = await vault.db.selectFrom('jobs').select(['locked_by']).where('id', '=', id).executeTakeFirst();
      return lines(file) >= 1 && row?.locked_by ? row.locked_by : undefined;
    });
    const [victim, survivor] = holder.includes(`:${a.proc.pid}:`) ? [a, b] : [b, a];
    assert.ok(holder.includes(`:${victim.proc.pid}:`), `lease holder ${holder} is one of the two servers`);
    await victim.kill9();
    assert.ok(lines(file) < TASKS, 'killed before the job ended');
    const job = await finished(survivor, id);
    assert.equal(job.state, 'succeeded');
    assert.equal(readFileSync(file, 'utf8'), EXPECTED);
    const row = await vault.db.selectFrom('jobs').select(['attempts']).where('id', '=', id).executeTakeFirstOrThrow();
    assert.ok(row.attempts >= 2, `the job was claimed again (attempts ${row.attempts})`);
  });
});
