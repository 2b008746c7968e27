// Recovery plans over the API and CLI against a real `rebound serve`, with physical machines
// (image files) so that it runs in seconds: the plan routes' refusals (what was wrong, what to
// do), scripts checked where they will run, a test failover of a plan whose scripts see the
// plan's environment and whose overrunning script is stopped at its timeout (its whole process
// group), a plan busy with a waiting manual action refusing a second verb and deletion, cancel of
// that plan, test cleanup of the plan, a replication group without a common point refused
// before anything starts, and kill -9 of the server mid-plan (the plan goes on after a restart,
// no machine fails over twice).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { call } from '../api/helpers.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';
import { rebound } from '../cli/helpers.ts';
import { dialects, freshPostgresDatabase } from '../support/db.ts';

const run = promisify(execFile);
let dir: string;
let server: ServerProcess;
let dbUrl: string | undefined;

interface Job { id: string; kind: string; state: string; tasks: { name: string; state: string; startedAt: number | null; finishedAt: number | null }[]; log: { message: string }[]; error?: { code: string; message: string; hint?: string } }
const req = (method: string, path: string, body?: unknown) => call(server.url, method, `/api/v1${path}`, { token: server.token, ...(body === undefined ? {} : { body }) });
const code = (r: { body: unknown }): string => (r.body as { error?: { code: string } }).error?.code ?? '';
const message = (r: { body: unknown }): string => (r.body as { error?: { message: string } }).error?.message ?? '';
const cli = (args: string[]) => rebound(args, { env: { REBOUND_URL: server.url, REBOUND_TOKEN: server.token } });

for (const dialect of dialects) {
  describe(`plans on ${dialect}`, () => {
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'rb-planapi-'));
      for (const d of ['a', 'b', 'vault', 'scripts']) await mkdir(join(dir, d), { recursive: true });
      dbUrl = dialect === 'postgres' ? await freshPostgresDatabase() : undefined;
      server = await startServerProcess({ dataDir: join(dir, 'vault'), ...(dbUrl ? { dbUrl } : {}), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
      await api(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: join(dir, 'a') });
      await api(server, 'POST', '/sites', { name: 'dr', provider: 'physical', root: join(dir, 'b') });
      await api(server, 'POST', '/policies', { name: 'p', frequency: '3s', retention: '1h', appConsistent: '0s', encryption: 'none' });
      await api(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
      for (const m of ['p1', 'p2', 'p3', 'p4']) {
        const img = join(dir, 'a', `${m}.img`);
        await run('truncate', ['-s', '4M', img]);
        await run('dd', ['if=/dev/urandom', `of=${img}`, 'bs=64K', 'count=8', 'conv=notrunc', 'status=none']);
        await api(server, 'POST', '/machines', { name: m, site: 'srv', disks: [img] });
      }
    });

    after(async () => {
      if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync(`/tmp/rb-planapi-${dialect}-server.log`, server.logs());
      await server?.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    });

    test('plan routes: create, show, list, actions and delete, and what each refusal says', { timeout: 60_000 }, async () => {
      let r = await req('POST', '/plans', { name: 'web', groups: [{ machines: ['p1', 'ghost'] }] });
      assert.equal(r.status, 404);
      assert.equal(code(r), 'machine-not-found');
      assert.match(message(r), /ghost.*rebound machine add/);
      r = await req('POST', '/plans', { name: 'web', groups: [{ machines: ['p1'] }, { machines: ['p1'] }] });
      assert.equal(r.status, 400);
      assert.match(message(r), /p1 is in groups 1 and 2/);
      assert.equal((await req('POST', '/plans', { name: 'web', groups: [] })).status, 400);
      assert.equal((await req('POST', '/plans', { name: 'Web', groups: [{ machines: ['p1'] }] })).status, 400);
      assert.equal((await req('POST', '/plans', { name: 'web', groups: [{ machines: ['p1'], before: [{ kind: 'script', path: join(dir, 'nope.sh') }] }] })).status, 400);

      r = await req('POST', '/plans', { name: 'web', groups: [{ machines: ['p1'] }, { machines: ['p2', 'p3'], before: [{ kind: 'manual', text: 'switch DNS' }] }] });
      assert.equal(r.status, 201, r.text);
      const plan = r.body as { name: string; groups: { machines: string[]; before: unknown[]; after: unknown[] }[] };
      assert.deepEqual(plan.groups, [{ machines: ['p1'], before: [], after: [] }, { machines: ['p2', 'p3'], before: [{ kind: 'manual', text: 'switch DNS' }], after: [] }]);
      r = await req('POST', '/plans', { name: 'web', groups: [{ machines: ['p1'] }] });
      assert.equal(r.status, 409);
      assert.equal(code(r), 'plan.exists');

      // Script actions are checked on the server, where they will run.
      const plain = join(dir, 'scripts', 'plain.txt');
      await writeFile(plain, 'not a script\n');
      for (const [action, status, want] of [
        [{ kind: 'script', path: 'relative.sh' }, 400, 'invalid-plan'],
        [{ kind: 'script', path: join(dir, 'scripts', 'missing.sh') }, 400, 'script-not-found'],
        [{ kind: 'script', path: join(dir, 'scripts') }, 400, 'script-not-a-file'],
        [{ kind: 'script', path: plain }, 400, 'script-not-executable'],
        [{ kind: 'manual', text: '   ' }, 400, 'invalid-plan'],
      ] as const) {
        r = await req('POST', '/plans/web/actions', { group: 1, when: 'before', action });
        assert.equal(r.status, status, r.text);
        assert.equal(code(r), want, r.text);
      }
      r = await req('POST', '/plans/web/actions', { group: 3, when: 'after', action: { kind: 'manual', text: 'x' } });
      assert.equal(r.status, 400);
      assert.match(message(r), /plan web has 2 groups; group 3 is not one of them/);
      r = await req('POST', '/plans/nope/actions', { group: 1, when: 'after', action: { kind: 'manual', text: 'x' } });
      assert.equal(r.status, 404, r.text);

      // Verbs check the whole plan first: nothing is protected yet.
      r = await req('POST', '/plans/web/failover', { mode: 'unplanned' });
      assert.equal(r.status, 409);
      assert.equal(code(r), 'not-protected');
      assert.match(message(r), /p1, p2, p3: protect them first/);
      r = await req('POST', '/plans/web/test-cleanup', { notes: ' ' });
      assert.equal(r.status, 400);
      assert.equal(code(r), 'notes-required');
      r = await req('POST', '/plans/nope/commit');
      assert.equal(r.status, 404, r.text);

      // The CLI: list, show, delete; usage errors before the server is asked.
      let c = await cli(['plan', 'list']);
      assert.equal(c.code, 0, c.stderr);
      assert.match(c.stdout, /^web +2 +p1 \| p2,p3 /m);
      c = await cli(['plan', 'action', 'add', 'web', '--group', '1', '--manual', 'x']);
      assert.equal(c.code, 2);
      assert.match(c.stderr, /--before or --after/);
      c = await cli(['plan', 'action', 'add', 'web', '--group', '1', '--after', '--manual', 'x', '--timeout', '5']);
      assert.equal(c.code, 2);
      c = await cli(['plan', 'create', 'solo', '--group', 'p4']);
      assert.equal(c.code, 0, c.stderr);
      c = await cli(['plan', 'delete', 'solo', '--json']);
      assert.equal(c.code, 0, c.stderr);
      assert.equal((JSON.parse(c.stdout) as { name: string }).name, 'solo');
      c = await cli(['plan', 'show', 'solo']);
      assert.equal(c.code, 4);
      assert.match(c.stderr, /no plan is named 'solo'/);
    });

    test('a plan of physical machines: test failover with scripts in the plan\'s environment, a script stopped at its timeout, cleanup; a waiting plan is busy and cancels', { timeout: 300_000 }, async () => {
      for (const m of ['p1', 'p2', 'p3']) await waitJob(server, (await api<{ job: { id: string } }>(server, 'POST', `/items/${m}/protect`, {})).job.id, 120_000);
      await waitJob(server, (await api<{ job: { id: string } }>(server, 'POST', '/items/p4/protect', { group: 'g' })).job.id, 120_000);
      for (const m of ['p1', 'p2', 'p3']) await waitFor(`a point of ${m}`, async () => (await points(server, m)).length >= 1, 60_000, 300);

      const record = join(dir, 'scripts', 'record.sh');
      await writeFile(record, `#!/bin/sh\nenv | grep '^REBOUND_' | sort > ${join(dir, 'scripts')}/env-$REBOUND_GROUP-$REBOUND_WHEN.txt\n`);
      const slow = join(dir, 'scripts', 'slow.sh');
      const pidFile = join(dir, 'scripts', 'slow.pid');
      // The script leaves a child behind: the timeout must stop the whole process group.
      await writeFile(slow, `#!/bin/sh\nsleep 60 &\necho $! > ${pidFile}\nwait\n`);
      await chmod(record, 0o755);
      await chmod(slow, 0o755);
      await api(server, 'POST', '/plans', {
        name: 'drill',
        groups: [
          { machines: ['p1'], before: [{ kind: 'script', path: record }] },
          { machines: ['p2', 'p3'], before: [{ kind: 'script', path: record }], after: [{ kind: 'script', path: slow, timeoutSeconds: 1 }] },
        ],
      });

      // The script overruns its 1 s: the plan fails at that step, with both groups' drills done.
      let c = await cli(['test-failover', 'plan:drill', '--wait']);
      assert.equal(c.code, 1, `a failed plan exits 1 with --wait: ${c.stderr}`);
      assert.match(c.stderr, /did not finish within 1 s and was stopped/);
      const jobs = await api<{ items: Job[] }>(server, 'GET', '/jobs?kind=plan-test-failover');
      const tf = await api<Job>(server, 'GET', `/jobs/${jobs.items[0]!.id}`);
      assert.equal(tf.error?.code, 'plan-script-timeout');
      assert.deepEqual(tf.tasks.map((t) => t.state), ['succeeded', 'succeeded', 'succeeded', 'succeeded', 'failed']);
      const leftover = Number((await readFile(pidFile, 'utf8')).trim());
      await waitFor('the script\'s child to be gone', async () => { try { process.kill(leftover, 0); return false; } catch { return true; } }, 10_000, 100);
      for (const m of ['p1', 'p2', 'p3']) assert.equal((await api<{ state: string }>(server, 'GET', `/items/${m}`)).state, 'test-failover');
      const env1 = await readFile(join(dir, 'scripts', 'env-1-before.txt'), 'utf8');
      const env2 = await readFile(join(dir, 'scripts', 'env-2-before.txt'), 'utf8');
      assert.match(env1, /^REBOUND_MACHINES=p1$/m);
      assert.match(env1, /^REBOUND_OPERATION=test-failover$/m);
      assert.match(env1, /^REBOUND_FAILOVER_TYPE=test$/m);
      assert.match(env2, /^REBOUND_MACHINES=p2,p3$/m);
      assert.match(env2, /^REBOUND_GROUP=2$/m);
      assert.doesNotMatch(env1, /REBOUND_TOKEN/, 'the server\'s own environment is not handed to scripts');

      // Clean up the whole plan's drill; no actions run for cleanup.
      c = await cli(['test-cleanup', 'plan:drill', '--notes', 'all three booted', '--wait', '--json']);
      assert.equal(c.code, 0, c.stderr);
      const cleanup = JSON.parse(c.stdout) as Job;
      assert.deepEqual(cleanup.tasks.map((t) => t.name), ['group 1: clean up the test of p1', 'group 2: clean up the test of p2, p3']);
      for (const m of ['p1', 'p2', 'p3']) assert.equal((await api<{ state: string }>(server, 'GET', `/items/${m}`)).state, 'protected');

      // A plan waiting at a manual action is busy: no second verb, no deletion; cancel ends it
      // before any machine was touched.
      await api(server, 'POST', '/plans', { name: 'held', groups: [{ machines: ['p1', 'p2'], before: [{ kind: 'manual', text: 'call the DBA' }] }] });
      const held = (await api<{ job: Job }>(server, 'POST', '/plans/held/failover', { mode: 'unplanned' })).job.id;
      await waitJob(server, held, 60_000, 'waiting');
      let r = await req('POST', '/plans/held/test-failover', {});
      assert.equal(r.status, 409);
      assert.equal(code(r), 'plan-busy');
      assert.match(message(r), new RegExp(`job ${held} \\(plan-failover, waiting\\)`));
      r = await req('DELETE', '/plans/held');
      assert.equal(r.status, 409);
      c = await cli(['job', 'cancel', held, '--wait']);
      assert.equal(c.code, 1, c.stderr);
      assert.equal((await api<Job>(server, 'GET', `/jobs/${held}`)).state, 'cancelled');
      for (const m of ['p1', 'p2']) assert.equal((await api<{ state: string }>(server, 'GET', `/items/${m}`)).state, 'protected');
      assert.equal((await req('DELETE', '/plans/held')).status, 200);

      // A replication group with no common point yet: refused before anything starts.
      await api(server, 'POST', '/plans', { name: 'grouped', groups: [{ machines: ['p3', 'p4'] }] });
      r = await req('POST', '/plans/grouped/test-failover', { point: 'latest' });
      assert.equal(r.status, 409, r.text);
      assert.equal(code(r), 'no-common-point');
      r = await req('POST', '/plans/grouped/failover', { mode: 'unplanned', point: 'latest-app-consistent' });
      assert.equal(r.status, 409, r.text);
      r = await req('POST', '/plans/grouped/test-failover', { point: (await points(server, 'p3'))[0]!.id });
      assert.equal(r.status, 400, 'a point id names one machine\'s point');
      for (const m of ['p3', 'p4']) assert.equal((await api<{ state: string }>(server, 'GET', `/items/${m}`)).state, 'protected');
    });

    test('kill -9 of the server in the middle of a plan: after a restart the plan goes on, following the child jobs it started, and no machine fails over twice', { timeout: 300_000 }, async () => {
      // The first server was started without a short lease; restart it with one so that the killed
      // process's jobs are taken over within seconds.
      await server.stop();
      const env = { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn', REBOUND_JOB_LEASE_MS: '3000' };
      server = await startServerProcess({ dataDir: join(dir, 'vault'), ...(dbUrl ? { dbUrl } : {}), env });
      await api(server, 'POST', '/plans', { name: 'crash', groups: [{ machines: ['p1'] }, { machines: ['p2', 'p3'] }] });
      const id = (await api<{ job: Job }>(server, 'POST', '/plans/crash/failover', { mode: 'unplanned', point: 'latest' })).job.id;
      const child = await waitFor('p1\'s failover job', async () => (await api<{ items: Job[] }>(server, 'GET', '/jobs?target=p1&kind=failover')).items[0], 60_000, 20);
      const killedAt = await api<Job>(server, 'GET', `/jobs/${id}`);
      await server.kill9();
      process.stdout.write(`# killed with the plan at ${JSON.stringify(killedAt.tasks.map((t) => t.state))}, p1's child ${child.state}\n`);
      server = await startServerProcess({ dataDir: join(dir, 'vault'), ...(dbUrl ? { dbUrl } : {}), env });
      const done = (await waitJob(server, id, 180_000)) as unknown as Job;
      assert.ok(done.tasks.every((t) => t.state === 'succeeded'));
      for (const m of ['p1', 'p2', 'p3']) {
        assert.equal((await api<{ state: string }>(server, 'GET', `/items/${m}`)).state, 'failed-over');
        const fo = (await api<{ items: Job[] }>(server, 'GET', `/jobs?target=${m}&kind=failover`)).items;
        assert.equal(fo.length, 1, `${m} failed over once: ${fo.map((j) => `${j.id} ${j.state}`).join(', ')}`);
      }
      const log = (await api<Job>(server, 'GET', `/jobs/${id}`)).log.map((l) => l.message).join('\n');
      assert.match(log, /picked up by/, 'another run of the worker took the plan over');
      assert.equal((await api<{ items: Job[] }>(server, 'GET', '/jobs?target=p1&kind=failover')).items[0]!.id, child.id);
    });
  });
}
