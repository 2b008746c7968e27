// The CLI's pure parts: table layout, exit codes per HTTP status, where the URL and token come
// from, how a job id is found in an action's answer; and usage errors of the real binary,
// which need no server (run as a subprocess).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { fields, table, time } from '../../src/cli/output.ts';
import { EXIT, exitCodeForStatus } from '../../src/cli/exit-codes.ts';
import { DEFAULT_URL, resolveConnection } from '../../src/cli/client.ts';
import { PlainProgress, jobIdOf, waitingNote } from '../../src/cli/job-follow.ts';
import type { Job } from '../../src/domain/model.ts';
import { targetPath } from '../../src/cli/commands/items.ts';
import { describeReport } from '../../src/cli/commands/optional.ts';
import { CliError } from '../../src/cli/cli-error.ts';

const BIN = new URL('../../bin/rebound', import.meta.url).pathname;

void test('tables align columns to the widest cell and do not pad the last one', () => {
  const out = table(
    [
      { name: 'site-a', provider: 'qemu', root: '/srv/a' },
      { name: 'b', provider: 'physical', root: '/srv/longer/b' },
    ],
    [
      { header: 'NAME', value: (r) => r.name },
      { header: 'PROVIDER', value: (r) => r.provider },
      { header: 'ROOT', value: (r) => r.root },
    ],
  );
  assert.equal(out, ['NAME    PROVIDER  ROOT', 'site-a  qemu      /srv/a', 'b       physical  /srv/longer/b'].join('\n'));
  assert.equal(table([{ a: 'x\ny' }], [{ header: 'A', value: (r) => r.a }]), 'A\nx y');
  assert.equal(fields([['id', '1'], ['state', 'running']]), 'id:    1\nstate: running');
  assert.equal(time(Date.UTC(2026, 0, 2, 3, 4, 5, 678)), '2026-01-02T03:04:05Z');
  assert.equal(time(null), '-');
});

void test('exit codes follow the documented mapping of HTTP statuses', () => {
  assert.deepEqual([400, 401, 403, 404, 409, 500, 503].map(exitCodeForStatus), [2, 3, 3, 4, 5, 6, 6]);
  assert.deepEqual(EXIT, { ok: 0, jobFailed: 1, usage: 2, auth: 3, notFound: 4, conflict: 5, other: 6 });
});

void test('connection: flags beat the environment, which beats ./.rebound/admin.token', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rebound-cli-conn-'));
  try {
    assert.deepEqual(resolveConnection({}, {}, dir), { url: DEFAULT_URL, token: undefined, tokenSource: 'none' });
    mkdirSync(join(dir, '.rebound'));
    writeFileSync(join(dir, '.rebound', 'admin.token'), 'from-file\n');
    assert.deepEqual(resolveConnection({}, {}, dir), { url: DEFAULT_URL, token: 'from-file', tokenSource: 'file' });
    const env = { REBOUND_URL: 'http://h:1/', REBOUND_TOKEN: 'from-env' };
    assert.deepEqual(resolveConnection({}, env, dir), { url: 'http://h:1', token: 'from-env', tokenSource: 'env' });
    assert.deepEqual(resolveConnection({ url: 'http://x:2', token: 'from-flag' }, env, dir), { url: 'http://x:2', token: 'from-flag', tokenSource: 'flag' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

void test('the job id of an action answer: { job: {id} }, { job: id } or a job itself', () => {
  assert.equal(jobIdOf({ job: { id: 'j1', state: 'queued' } }), 'j1');
  assert.equal(jobIdOf({ job: 'j2' }), 'j2');
  assert.equal(jobIdOf({ id: 'j3', kind: 'protect', state: 'queued' }), 'j3');
  assert.equal(jobIdOf({ id: 's1', name: 'site-a' }), undefined);
  assert.equal(jobIdOf(null), undefined);
});

void test('plain progress: each log line once, a status line only when something changed', () => {
  const base: Job = { id: 'j1', kind: 'protect', target: 'web-01', state: 'running', progress: 10, tasks: [], log: [], createdAt: 0, createdBy: 'admin' };
  const p = new PlainProgress();
  const task = (state: 'running' | 'waiting' | 'succeeded') => ({ seq: 0, name: 'copy disk vda', state, progress: 10, startedAt: 1, finishedAt: null });
  assert.deepEqual(p.lines({ ...base, tasks: [task('running')], log: [{ at: 1, level: 'info', message: 'snapshot taken' }] }), ['  snapshot taken', 'job j1 running 10% copy disk vda']);
  assert.deepEqual(p.lines({ ...base, tasks: [task('running')], log: [{ at: 1, level: 'info', message: 'snapshot taken' }] }), []);
  assert.deepEqual(
    p.lines({ ...base, progress: 55.4, tasks: [task('running')], log: [{ at: 1, level: 'info', message: 'snapshot taken' }, { at: 2, level: 'warn', message: 'slow disk' }] }),
    ['  warn: slow disk', 'job j1 running 55% copy disk vda'],
  );
  assert.deepEqual(p.lines({ ...base, state: 'succeeded', progress: 100, tasks: [task('succeeded')] }), ['job j1 succeeded 100%']);
  assert.equal(waitingNote({ ...base, state: 'waiting', tasks: [{ ...task('waiting'), name: 'manual: switch DNS' }] }), 'job j1 is waiting for an operator at "manual: switch DNS": resume it with rebound job resume j1.');
});

void test('targets: a machine name goes to /items, plan:NAME to /plans', () => {
  assert.equal(targetPath('web-01'), '/items/web-01');
  assert.equal(targetPath('plan:app'), '/plans/app');
  assert.throws(() => targetPath('plan:'), (e: unknown) => e instanceof CliError && e.exitCode === EXIT.usage);
});

void test('verify-disk summary: ok with counts, or what is wrong first', () => {
  assert.equal(describeReport('d.img', { ok: true, records: 120, highestContiguousSeq: 119, corrupt: [], outOfOrder: [] }), 'd.img: ok (120 records, contiguous to sequence 119).');
  assert.equal(
    describeReport('d.img', { ok: false, records: 120, highestContiguousSeq: 40, corrupt: [{ offset: 4096, reason: 'checksum mismatch' }, { offset: 8192 }], outOfOrder: [1] }),
    'd.img: FAILED: 2 corrupt records (first at offset 4096: checksum mismatch), 1 out of order; 120 records, contiguous to sequence 40.',
  );
  assert.equal(
    describeReport('d.img', { ok: false, records: 3, highestContiguousSeq: 3, corrupt: [], gaps: [{}], counts: { corrupt: 0, outOfOrder: 0, gaps: 1 } }),
    'd.img: FAILED: 1 unwritten gap; 3 records, contiguous to sequence 3.',
  );
  assert.equal(describeReport('d.img', { ok: false, records: 0, highestContiguousSeq: 0, expectSeq: 5 }), 'd.img: FAILED: fewer records than expected (records 1..5); 0 records, contiguous to sequence 0.');
});

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(BIN, args, { env: { ...process.env, REBOUND_TOKEN: '', ...env }, cwd: tmpdir(), timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

void test('the binary: help lists exit codes; usage errors exit 2; an unreachable server exits 6', async () => {
  const help = await run(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Exit codes:\n {2}0 {2}ok\n {2}1 {2}the job failed/);

  const badName = await run(['site', 'add', 'Bad', '--provider', 'qemu', '--root', '/tmp']);
  assert.equal(badName.code, 2);
  assert.equal(badName.stderr.split('\n')[0], "rebound: site name 'Bad' is not valid: it has upper-case letters (use 'bad').");

  const badPolicy = await run(['policy', 'create', 'p', '--retention', '1w']);
  assert.equal(badPolicy.code, 2);
  assert.match(badPolicy.stderr, /^rebound: retention '1w' is not a duration/);

  assert.equal((await run(['frobnicate'])).code, 2);
  assert.equal((await run(['site', 'add', 'a', '--root', '/tmp'])).code, 2); // --provider missing
  assert.equal((await run(['token', 'create', 'x', '--role', 'god'])).code, 2);

  // A port that was free a moment ago: nothing listens there.
  const port = await freePort();
  const down = await run(['site', 'list', '--url', `http://127.0.0.1:${port}`]);
  assert.equal(down.code, 6);
  assert.equal(down.stderr, `rebound: cannot reach the Rebound server at http://127.0.0.1:${port} (ECONNREFUSED).\nhint: start it with \`rebound serve\`, or point --url / REBOUND_URL at a running server.\n`);
});

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => done(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}
