// A recovery plan of three tiny TCG guests in two groups (db, then web1 + web2), driven through
// the CLI against a real `rebound serve`: a planned failover of plan:app shuts the sources down
// last group first, fails db over, runs a script after group 1 that fails (the plan stops there,
// db stays failed over, the web tier untouched), `rebound job resume` retries the fixed script,
// a manual action before group 2 waits until `rebound job resume`, then web1 and web2 fail over
// together. The task and child-job times prove the order; db is failed over once; every
// recovered VM resumes exactly after the last record its source wrote (zero loss). Then commit
// and reverse replication of the whole plan, and its failback synced before (the plan completes
// each machine's failback itself) with zero loss again, and its commit.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import { verifyDisk } from '../../src/guest/verify.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { teardownSite, testGuest, waitConsole } from '../providers/support.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';
import { BIN } from '../cli/helpers.ts';

const VMS = ['db', 'web1', 'web2'];
let dir: string;
let server: ServerProcess;
let prim: QemuProvider;
let rec: QemuProvider;

interface Task { seq: number; name: string; state: string; startedAt: number | null; finishedAt: number | null; error?: { code: string; message: string } }
interface Job { id: string; kind: string; target: string; state: string; createdAt: number; startedAt: number | null; finishedAt: number | null; createdBy: string; tasks: Task[]; log: { message: string }[]; error?: { code: string; message: string } }
interface Item { state: string; direction: string; activeSite: string }

/** bin/rebound against the test's server; long timeout, as --wait follows whole plans. */
function cli(args: string[], timeoutMs = 600_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(BIN, args, { env: { ...process.env, REBOUND_URL: server.url, REBOUND_TOKEN: server.token }, timeout: timeoutMs }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}
const job = (id: string): Promise<Job> => api<Job>(server, 'GET', `/jobs/${id}`);
const item = (m: string): Promise<Item> => api<Item>(server, 'GET', `/items/${m}`);
const jobsOf = async (machine: string, kind: string): Promise<Job[]> => (await api<{ items: Job[] }>(server, 'GET', `/jobs?target=${machine}&kind=${kind}`)).items;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-plan-'));
  for (const d of ['a', 'b', 'vault', 'scripts']) await mkdir(join(dir, d), { recursive: true });
  const guest = await testGuest(dir);
  prim = new QemuProvider({ root: join(dir, 'a') });
  rec = new QemuProvider({ root: join(dir, 'b') });
  for (const [i, name] of VMS.entries()) {
    await makeDataDisk(join(dir, 'a', `${name}.qcow2`), { sizeMiB: 32 });
    await prim.define({
      name, cpus: 1, memoryMiB: 128, nics: [],
      disks: [{ path: join(dir, 'a', `${name}.qcow2`), format: 'qcow2' }],
      boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append: guestCmdline({ workload: 'records', rate: 10, disk: '/dev/vda', writer: 100 + i }) },
    });
  }
  await Promise.all(VMS.map(async (name) => waitConsole((await prim.start(name)).consoleLog!, /REBOUND seq=\d+ durable/, 180_000)));
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  await api(server, 'POST', '/sites', { name: 'dc1', provider: 'qemu', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dc2', provider: 'qemu', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'fast', frequency: '5s', retention: '60s', appConsistent: '0s', encryption: 'none' });
  await api(server, 'POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'fast' });
});

after(async () => {
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-plan-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim);
  if (rec) await teardownSite(rec);
  await rm(dir, { recursive: true, force: true });
});

/** The resume_seq of the first `REBOUND ready` line of a console log. */
async function resumedAfter(log: string): Promise<number> {
  const m = await waitConsole(log, /REBOUND ready workload=records .*resume_seq=(\d+)/, 120_000);
  return Number(m[1]);
}

test('plan:app fails over in group order with a failing script retried and a manual action resumed by the CLI; then commit, reverse replication and a failback synced before of the plan', { timeout: 1_500_000 }, async () => {
  const t0 = Date.now();
  await Promise.all(VMS.map(async (m) => waitJob(server, (await api<{ job: { id: string } }>(server, 'POST', `/items/${m}/protect`, {})).job.id, 300_000)));
  for (const m of VMS) await waitFor(`a point of ${m}`, async () => (await points(server, m)).length >= 1, 60_000, 500);
  process.stdout.write(`# protected 3 guests in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);

  // The plan, through the CLI: db first, then the web tier; a script after the database (it
  // records its environment, and fails at first) and a manual check before the web tier.
  const script = join(dir, 'scripts', 'check-db.sh');
  const envFile = join(dir, 'scripts', 'env.txt');
  await writeFile(script, `#!/bin/sh\nenv | grep '^REBOUND_' | sort > ${envFile}\necho "database not answering yet"\nexit 3\n`);
  await chmod(script, 0o755);
  let r = await cli(['plan', 'create', 'app', '--group', 'db', '--group', 'web1,web2']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['plan', 'action', 'add', 'app', '--group', '1', '--after', '--script', script, '--timeout', '60']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['plan', 'action', 'add', 'app', '--group', '2', '--before', '--manual', 'check that the database answers']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['plan', 'show', 'app']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /group 1: db\n {2}after: {2}script .*check-db\.sh \(timeout 60 s\)\ngroup 2: web1, web2\n {2}before: manual: check that the database answers/);

  // Planned failover of the plan: it stops at the failing script.
  const started = Date.now();
  r = await cli(['failover', 'plan:app', '--planned', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const id = (JSON.parse(r.stdout) as { job: Job }).job.id;
  let j = await waitJob(server, id, 900_000, 'failed') as unknown as Job;
  j = await job(id);
  assert.equal(j.kind, 'plan-failover');
  assert.equal(j.target, 'plan:app');
  assert.equal(j.error?.code, 'plan-script-failed', JSON.stringify(j.error));
  assert.match(j.error?.message ?? '', /exited with status 3.*database not answering yet.*rebound job resume/);
  assert.deepEqual(j.tasks.map((t) => [t.name, t.state]), [
    ['group 2: shut down web1, web2 at dc1', 'succeeded'],
    ['group 1: shut down db at dc1', 'succeeded'],
    ['group 1: fail over db', 'succeeded'],
    [`group 1, after: script ${script}`, 'failed'],
    ['group 2, before: manual: check that the database answers', 'pending'],
    ['group 2: fail over web1, web2', 'pending'],
  ]);
  assert.equal((await item('db')).state, 'failed-over');
  for (const m of ['web1', 'web2']) {
    assert.equal((await item(m)).state, 'protected', `${m} is untouched while the plan stopped`);
    assert.equal((await prim.state(m)).state, 'stopped', `${m}'s source was shut down first (planned)`);
  }
  const env = await readFile(envFile, 'utf8');
  for (const line of ['REBOUND_PLAN=app', 'REBOUND_GROUP=1', 'REBOUND_WHEN=after', 'REBOUND_DIRECTION=forward', 'REBOUND_MACHINES=db', 'REBOUND_OPERATION=failover', 'REBOUND_FAILOVER_TYPE=planned', 'REBOUND_FROM_SITE=dc1', 'REBOUND_TO_SITE=dc2', `REBOUND_JOB=${id}`]) {
    assert.ok(env.split('\n').includes(line), `the script's environment has ${line}:\n${env}`);
  }

  // Fix the script; `rebound job resume` retries from the failed step, then the plan waits at
  // the manual action.
  await writeFile(script, `#!/bin/sh\necho "database answers for $REBOUND_MACHINES"\n`);
  r = await cli(['job', 'resume', id, '--wait']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /waiting for an operator at "group 2, before: manual: check that the database answers"/);
  j = await job(id);
  assert.equal(j.state, 'waiting');
  assert.equal(j.tasks[3]?.state, 'succeeded');
  assert.equal(j.tasks[4]?.state, 'waiting');
  for (const m of ['web1', 'web2']) assert.equal((await item(m)).state, 'protected');

  // The operator checked; resume again and the web tier fails over.
  r = await cli(['job', 'resume', id, '--wait']);
  assert.equal(r.code, 0, r.stderr);
  j = await job(id);
  assert.equal(j.state, 'succeeded', JSON.stringify(j.error));
  process.stdout.write(`# plan failover (3 guests, with the resumes) took ${((Date.now() - started) / 1000).toFixed(0)} s\n`);

  // Order, from the plan's task times: sources shut down web tier first, then groups in order.
  const at = (seq: number): Task => j.tasks[seq]!;
  assert.ok(at(0).finishedAt! <= at(1).startedAt!, 'group 2 shut down before group 1');
  assert.ok(at(1).finishedAt! <= at(2).startedAt!);
  assert.ok(at(2).finishedAt! <= at(3).startedAt!, 'the script ran after db failed over');
  assert.ok(at(4).finishedAt! <= at(5).startedAt!, 'the web tier after the manual action');
  // …and from the child jobs: db failed over once, and before web1 and web2 began.
  const dbJobs = await jobsOf('db', 'failover');
  assert.equal(dbJobs.length, 1, 'db was failed over once, not again on resume');
  const dbJob = dbJobs[0]!;
  assert.match(dbJob.createdBy, new RegExp(`via plan:app \\(job ${id}\\)`));
  for (const m of ['web1', 'web2']) {
    const w = await jobsOf(m, 'failover');
    assert.equal(w.length, 1);
    assert.ok(dbJob.finishedAt! < w[0]!.createdAt, `db's failover ended (${dbJob.finishedAt}) before ${m}'s began (${w[0]!.createdAt})`);
    assert.ok(w[0]!.createdAt >= at(5).startedAt!);
  }
  const webJobs = await Promise.all(['web1', 'web2'].map(async (m) => (await jobsOf(m, 'failover'))[0]!));
  assert.ok(webJobs[0]!.startedAt! < webJobs[1]!.finishedAt! && webJobs[1]!.startedAt! < webJobs[0]!.finishedAt!, 'web1 and web2 failed over in parallel');

  // Zero loss: each recovery VM resumed right after the last record its source wrote.
  for (const m of VMS) {
    assert.equal((await item(m)).state, 'failed-over');
    const sourceLast = (await verifyDisk(join(dir, 'a', `${m}.qcow2`))).highestContiguousSeq;
    const resumed = await resumedAfter(join(dir, 'b', 'vms', m, 'run', 'serial.log'));
    assert.equal(resumed, sourceLast, `${m}: the recovery VM resumed after ${resumed}; the source wrote up to ${sourceLast}`);
  }

  // Commit and reverse replication of the whole plan, with --wait.
  r = await cli(['commit', 'plan:app', '--wait', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const commit = JSON.parse(r.stdout) as Job;
  assert.equal(commit.kind, 'plan-commit');
  assert.deepEqual(commit.tasks.map((t) => t.name), ['group 1: commit db', 'group 2: commit web1, web2']);
  for (const m of VMS) assert.equal((await item(m)).state, 'committed');
  r = await cli(['reverse-replicate', 'plan:app', '--wait', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const reverse = JSON.parse(r.stdout) as Job;
  assert.equal(reverse.state, 'succeeded');
  for (const m of VMS) {
    const it = await item(m);
    assert.equal(it.state, 'protected');
    assert.equal(it.direction, 'reverse');
  }
  assert.ok(reverse.tasks[0]!.finishedAt! <= reverse.tasks[1]!.startedAt!);

  // Failback of the whole plan, synced before: phase 1 of every machine while they run at dc2,
  // then the sources at dc2 shut down last group first, then each group's children are completed
  // by the plan itself; the manual action waits between the groups again.
  const recDisk = async (m: string): Promise<string> => (await rec.state(m)).definition.disks[0]!.path;
  const readies = async (m: string): Promise<number> => [...(await readFile(join(dir, 'a', 'vms', m, 'run', 'serial.log'), 'utf8').catch(() => '')).matchAll(/REBOUND ready workload=records/g)].length;
  const bootsBefore = new Map(await Promise.all(VMS.map(async (m) => [m, await readies(m)] as const)));
  r = await cli(['failover', 'plan:app', '--planned', '--wait', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const fb = JSON.parse(r.stdout) as Job;
  assert.equal(fb.state, 'waiting', JSON.stringify(fb.error));
  assert.deepEqual(fb.tasks.map((t) => t.name.replace(/ \(failback phase 1\).*/, ' (failback phase 1)')), [
    'sync every machine to dc1 while it runs (failback phase 1)',
    'group 2: shut down web1, web2 at dc2',
    'group 1: shut down db at dc2',
    'group 1: fail back db',
    `group 1, after: script ${script}`,
    'group 2, before: manual: check that the database answers',
    'group 2: fail back web1, web2',
  ]);
  assert.equal((await item('db')).state, 'failed-over');
  for (const m of ['web1', 'web2']) assert.equal((await item(m)).state, 'failback-ready');
  assert.ok((await job(fb.id)).log.some((l) => /the plan completes failback job \S+ itself/.test(l.message)), 'the plan says it completes the failback itself');
  r = await cli(['job', 'resume', fb.id, '--wait']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await job(fb.id)).state, 'succeeded');
  for (const m of VMS) {
    const it = await item(m);
    assert.equal(it.state, 'failed-over');
    assert.equal((await prim.state(m)).state, 'running');
    const last = (await verifyDisk(await recDisk(m))).highestContiguousSeq;
    const log = join(dir, 'a', 'vms', m, 'run', 'serial.log');
    const m2 = await waitFor(`${m}'s new boot at dc1`, async () => [...(await readFile(log, 'utf8')).matchAll(/REBOUND ready workload=records .*resume_seq=(\d+)/g)][bootsBefore.get(m)!], 120_000, 200);
    assert.equal(Number(m2[1]), last, `${m} resumed at dc1 after ${m2[1]}; it wrote up to ${last} at dc2`);
  }
  r = await cli(['commit', 'plan:app', '--wait']);
  assert.equal(r.code, 0, r.stderr);
  for (const m of VMS) assert.equal((await item(m)).state, 'committed');

  // The plan goes; its machines stay as they are.
  r = await cli(['plan', 'delete', 'app']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['plan', 'show', 'app']);
  assert.equal(r.code, 4, r.stdout);
});
