// The CLI end to end: bin/rebound as a subprocess against a real `rebound serve` (SQLite in a temp
// dir). Pins what scripts rely on: --json is the API's JSON, exit codes for bad input, bad token,
// forbidden role, not found and conflict, and the default token file.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rebound, serve } from './helpers.ts';
import type { Served } from './helpers.ts';

let srv: Served;
before(async () => {
  // REBOUND_ENABLE_TEST_JOBS gives the server its diag.sequence job kind: real jobs to follow.
  srv = await serve({ REBOUND_ENABLE_TEST_JOBS: '1' });
});
after(async () => {
  await srv?.stop();
});

const json = <T>(stdout: string): T => JSON.parse(stdout) as T;

void test('sites: add and list, as JSON and as a table', async () => {
  const root = join(srv.dir, 'site-a');
  mkdirSync(root);
  const add = await rebound(['site', 'add', 'site-a', '--provider', 'physical', '--root', root, '--json'], { env: srv.env });
  assert.equal(add.code, 0, add.stderr);
  const site = json<{ name: string; provider: string; root: string }>(add.stdout);
  assert.equal(site.name, 'site-a');
  assert.equal(site.provider, 'physical');
  assert.equal(site.root, root);

  const list = await rebound(['site', 'list', '--json'], { env: srv.env });
  assert.equal(list.code, 0, list.stderr);
  const names = json<{ items: { name: string }[] }>(list.stdout).items.map((s) => s.name);
  assert.ok(names.includes('site-a'), names.join(','));

  const human = await rebound(['site', 'list'], { env: srv.env });
  assert.equal(human.code, 0);
  const lines = human.stdout.trimEnd().split('\n');
  assert.match(lines[0] ?? '', /^NAME +PROVIDER +ROOT +CREATED$/);
  assert.ok(lines.some((l) => l.startsWith('site-a ') && l.includes(' physical ') && l.includes(root)), human.stdout);

  const again = await rebound(['site', 'add', 'site-a', '--provider', 'physical', '--root', root], { env: srv.env });
  assert.equal(again.code, 5, `a duplicate site is a conflict: ${again.stderr}`);
  assert.match(again.stderr, /^rebound: .*site-a/);
});

void test('not found exits 4 with the server sentence', async () => {
  const r = await rebound(['site', 'show', 'no-such-site'], { env: srv.env });
  assert.equal(r.code, 4, r.stderr);
  assert.match(r.stderr, /^rebound: .*no-such-site/);
  const job = await rebound(['job', 'show', '00000000-0000-0000-0000-000000000000', '--json'], { env: srv.env });
  assert.equal(job.code, 4, job.stderr);
  assert.ok(json<{ error: { code: string } }>(job.stdout).error.code, 'with --json the API error body is on stdout');
});

void test('a bad token exits 3; no token at all exits 3 with a hint', async () => {
  const bad = await rebound(['site', 'list'], { env: { REBOUND_URL: srv.url, REBOUND_TOKEN: 'not-a-token' } });
  assert.equal(bad.code, 3, bad.stderr);
  assert.match(bad.stderr, /^rebound: /);
  const none = await rebound(['site', 'list'], { env: { REBOUND_URL: srv.url } });
  assert.equal(none.code, 3, none.stderr);
  assert.match(none.stderr, /hint: give a token with --token or REBOUND_TOKEN/);
});

void test('without --token or REBOUND_TOKEN the CLI uses ./.rebound/admin.token', async () => {
  const r = await rebound(['whoami', '--json'], { env: { REBOUND_URL: srv.url }, cwd: srv.dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(json<{ role: string }>(r.stdout).role, 'admin');
});

void test('tokens: a reader may read but not add a site (exit 3); revoked tokens stop working', async () => {
  const created = await rebound(['token', 'create', 'ro', '--role', 'reader', '--json'], { env: srv.env });
  assert.equal(created.code, 0, created.stderr);
  const t = json<{ token: string; id: string; role: string }>(created.stdout);
  assert.equal(t.role, 'reader');
  const readerEnv = { REBOUND_URL: srv.url, REBOUND_TOKEN: t.token };
  assert.equal((await rebound(['site', 'list'], { env: readerEnv })).code, 0);
  const denied = await rebound(['site', 'add', 'site-z', '--provider', 'qemu', '--root', srv.dir], { env: readerEnv });
  assert.equal(denied.code, 3, denied.stderr);

  const list = await rebound(['token', 'list', '--json'], { env: srv.env });
  assert.ok(json<{ items: { id: string }[] }>(list.stdout).items.some((x) => x.id === t.id));
  assert.doesNotMatch(list.stdout, new RegExp(t.token), 'token list never shows secrets');

  assert.equal((await rebound(['token', 'revoke', t.id], { env: srv.env })).code, 0);
  assert.equal((await rebound(['site', 'list'], { env: readerEnv })).code, 3);
});

void test('policies and pairings: create, list; invalid input exits 2 before or at the server', async () => {
  const p = await rebound(['policy', 'create', 'gold', '--frequency', '15s', '--retention', '2h', '--json'], { env: srv.env });
  assert.equal(p.code, 0, p.stderr);
  const list = await rebound(['policy', 'list', '--json'], { env: srv.env });
  assert.ok(json<{ items: { name: string }[] }>(list.stdout).items.some((x) => x.name === 'gold'));
  const human = await rebound(['policy', 'list'], { env: srv.env });
  assert.match(human.stdout, /^gold +15s +2h /m);

  const bad = await rebound(['policy', 'create', 'fast', '--frequency', '500ms'], { env: srv.env });
  assert.equal(bad.code, 2);

  for (const name of ['pa', 'pb']) {
    const dir = join(srv.dir, name);
    mkdirSync(dir);
    assert.equal((await rebound(['site', 'add', name, '--provider', 'physical', '--root', dir], { env: srv.env })).code, 0);
  }
  const pair = await rebound(['pair', 'pa', 'pb', '--policy', 'gold', '--json'], { env: srv.env });
  assert.equal(pair.code, 0, pair.stderr);
  const pairings = await rebound(['pairings', '--json'], { env: srv.env });
  assert.ok(json<{ items: { primary: string; recovery: string }[] }>(pairings.stdout).items.some((x) => x.primary === 'pa' && x.recovery === 'pb'), pairings.stdout);
  const missing = await rebound(['pair', 'pa', 'pb', '--policy', 'no-such-policy'], { env: srv.env });
  assert.equal(missing.code, 4, `unknown policy: ${missing.stderr}`);
  assert.match(missing.stderr, /^rebound: .*no-such-policy/);
});

void test('jobs: list as JSON', async () => {
  const r = await rebound(['jobs', '--json'], { env: srv.env });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(Array.isArray(json<{ items: unknown[] }>(r.stdout).items));
});

/** Starts a diag.sequence job (tasks × sleepMs) through the API and returns its id. */
async function startDiagJob(tasks: number, sleepMs: number): Promise<string> {
  const res = await fetch(`${srv.url}/api/v1/diag/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${srv.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ file: join(srv.dir, `diag-${Date.now()}-${Math.random()}.txt`), tasks, sleepMs }),
  });
  assert.equal(res.status, 202, await res.clone().text());
  return ((await res.json()) as { job: { id: string } }).job.id;
}

void test('job wait follows a running job to success with plain progress lines; on a finished job it returns at once', async () => {
  const id = await startDiagJob(3, 300);
  const waited = await rebound(['job', 'wait', id], { env: srv.env });
  assert.equal(waited.code, 0, waited.stderr);
  assert.equal(waited.stdout, `job ${id} (diag.sequence) succeeded.\n`);
  assert.match(waited.stderr, new RegExp(`job ${id} (queued|running) \\d+%`), 'progress lines on a non-TTY stderr');
  assert.match(waited.stderr, new RegExp(`job ${id} succeeded 100%`));

  const t0 = Date.now();
  const again = await rebound(['job', 'wait', id, '--json'], { env: srv.env });
  assert.equal(again.code, 0, again.stderr);
  assert.ok(Date.now() - t0 < 10_000);
  const job = json<{ id: string; state: string; tasks: { state: string }[] }>(again.stdout);
  assert.equal(job.id, id);
  assert.equal(job.state, 'succeeded');
  assert.deepEqual(job.tasks.map((t) => t.state), ['succeeded', 'succeeded', 'succeeded']);

  const show = await rebound(['job', 'show', id], { env: srv.env });
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /^state: +succeeded \(100%\)$/m);
  assert.match(show.stdout, /^tasks:\n {2}SEQ +NAME +STATE/m);

  const list = await rebound(['jobs', '--json', '--kind', 'diag.sequence'], { env: srv.env });
  assert.ok(json<{ items: { id: string }[] }>(list.stdout).items.some((j) => j.id === id));
});

void test('a cancelled job makes job wait exit 1 with the reason on stderr', async () => {
  const id = await startDiagJob(20, 1000);
  const cancel = await rebound(['job', 'cancel', id, '--json'], { env: srv.env });
  assert.equal(cancel.code, 0, cancel.stderr);
  const waited = await rebound(['job', 'wait', id, '--quiet'], { env: srv.env });
  assert.equal(waited.code, 1, `${waited.stdout} ${waited.stderr}`);
  assert.equal(waited.stdout, `job ${id} (diag.sequence) cancelled.\n`);
  assert.match(waited.stderr, new RegExp(`^rebound: job ${id} cancelled`));

  const again = await rebound(['job', 'cancel', id], { env: srv.env });
  assert.equal(again.code, 5, `cancelling a finished job is a conflict: ${again.stderr}`);
});

void test('items: an empty vault lists none; item show of an unprotected machine exits 4', async () => {
  const list = await rebound(['items', '--json'], { env: srv.env });
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(json<{ items: unknown[] }>(list.stdout).items, []);
  const show = await rebound(['item', 'show', 'web-01'], { env: srv.env });
  assert.equal(show.code, 4, show.stderr);
});

void test('machines: add a physical machine by its disk; a disk outside the site root is bad input (exit 2)', async () => {
  const root = join(srv.dir, 'phys');
  mkdirSync(root);
  assert.equal((await rebound(['site', 'add', 'phys', '--provider', 'physical', '--root', root], { env: srv.env })).code, 0);
  const disk = join(root, 'db-01.img');
  writeFileSync(disk, Buffer.alloc(1 << 20));
  // A relative --disk is resolved against the CLI's cwd before it is sent.
  const add = await rebound(['machine', 'add', 'db-01', '--site', 'phys', '--disk', 'db-01.img', '--json'], { env: srv.env, cwd: root });
  assert.equal(add.code, 0, add.stderr);
  const m = json<{ name: string; site: string; disks: { path: string }[] }>(add.stdout);
  assert.equal(m.name, 'db-01');
  assert.deepEqual(m.disks.map((d) => d.path), [disk]);

  const list = await rebound(['machine', 'list', '--site', 'phys'], { env: srv.env });
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^NAME +SITE +KIND +DISKS\ndb-01 +phys +\S+ +.*db-01\.img$/m);

  const outside = join(srv.dir, 'outside.img');
  writeFileSync(outside, Buffer.alloc(4096));
  const bad = await rebound(['machine', 'add', 'db-02', '--site', 'phys', '--disk', outside], { env: srv.env });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /^rebound: /);
});
