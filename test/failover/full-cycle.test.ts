// The whole life of a protected VM, on a real TCG guest writing checksummed records, through a
// real `rebound serve`: protect → test failover (the test machine boots from a point in an
// isolated network while replication goes on; cleanup keeps the notes) → planned failover (the
// recovery VM resumes at exactly the last record the source wrote before it shut down: zero
// loss) → commit (its disks no longer depend on the replica store) → reverse replication (only
// the blocks the recovery VM's change tracking recorded since the failover are sent) → failback synced before + complete-failover (zero
// loss again) → commit (the recovery-site machine is gone) → reverse replication (protected
// primary → recovery once more, a full copy).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { verifyDisk } from '../../src/guest/verify.ts';
import type { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { teardownSite } from '../providers/support.ts';
import { startGuestSites } from '../support/guest-sites.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';
import type { JobLike } from '../replication/support.ts';

const run = promisify(execFile);
let dir: string;
let server: ServerProcess;
let prim: QemuProvider;
let rec: QemuProvider;
const FREQ = 5;

interface Item {
  id: string;
  state: string;
  direction: string;
  health: string;
  details: { replication?: { bytesTotal?: number; method?: string }; placements?: Record<string, { name: string; disks: { path: string }[] }>; test?: { name: string } | null };
}

const item = (): Promise<Item> => api<Item>(server, 'GET', '/items/app1');
const start = async (path: string, body?: unknown): Promise<string> => (await api<{ job: { id: string } }>(server, 'POST', path, body ?? {})).job.id;

/** The resume_seq of the newest `REBOUND ready` line after `skip` earlier ones. */
async function nextReady(log: string, skip: number, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(log, 'utf8').catch(() => '');
    const all = [...text.matchAll(/REBOUND ready workload=records .*resume_seq=(\d+)/g)];
    if (all.length > skip) return Number(all[skip]![1]);
    if (Date.now() > deadline) throw new Error(`no new ready line in ${log}:\n${text.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
const readies = async (log: string): Promise<number> => [...(await readFile(log, 'utf8').catch(() => '')).matchAll(/REBOUND ready workload=records/g)].length;

async function allocated(path: string): Promise<number> {
  const { stdout } = await run('qemu-img', ['map', '-U', '--output=json', path]);
  return (JSON.parse(stdout) as { data: boolean; length: number }[]).filter((e) => e.data).reduce((n, e) => n + e.length, 0);
}

async function backing(path: string): Promise<string | undefined> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', path]);
  return (JSON.parse(stdout) as { 'backing-filename'?: string })['backing-filename'];
}

before(async () => {
  ({ dir, prim, rec, server } = await startGuestSites({
    prefix: 'rb-fo-', vm: 'app1', workload: 'records', params: { rate: 50 },
    nics: [{ network: 'production', mac: '52:54:00:12:34:61' }],
    policy: { frequency: `${FREQ}s`, retention: '60s', appConsistent: '0s' },
  }));
});

after(async () => {
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-failover-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim, ['app1-test']);
  if (rec) await teardownSite(rec, ['app1-test']);
  await rm(dir, { recursive: true, force: true });
});

test('refusals: no failover without a recovery point, and options that do not apply are named', { timeout: 60_000 }, async () => {
  const r = await fetch(`${server.url}/api/v1/items/app1/failover`, { method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ mode: 'unplanned' }) });
  assert.equal(r.status, 409);
  const body = (await r.json()) as { error: { code: string; message: string } };
  assert.equal(body.error.code, 'not-protected');
  assert.match(body.error.message, /protect it first/);
});

test('the full cycle: protect, drill, planned failover, commit, reverse, failback, commit, reverse', { timeout: 900_000 }, async () => {
  // Protect.
  await waitJob(server, await start('/items/app1/protect'), 120_000);
  await waitFor('two points', async () => (await points(server, 'app1')).length >= 2, 60_000, 500);
  assert.ok(((await item()).details.replication?.bytesTotal ?? 0) > 0);

  // Test failover from the latest point: the test VM boots isolated and resumes a valid record
  // stream; replication keeps running meanwhile.
  const tfStarted = Date.now();
  const tf = await waitJob(server, await start('/items/app1/test-failover', { point: 'latest' }), 120_000);
  assert.equal((await item()).state, 'test-failover');
  const testVm = await rec.state('app1-test');
  assert.equal(testVm.state, 'running');
  assert.equal(testVm.definition.nics[0]?.network, 'isolated', 'the test machine is on an isolated network');
  const testResume = await nextReady(testVm.consoleLog!, 0);
  assert.ok(testResume > 0, `the test VM resumed after record ${testResume}`);
  await waitFor('a point taken during the drill', async () => (await points(server, 'app1')).some((p) => p.takenAt > tfStarted + 1000), 60_000, 500);
  const cleanup = await waitJob(server, await start('/items/app1/test-cleanup', { notes: 'booted, records consistent' }), 60_000);
  assert.deepEqual((cleanup as JobLike & { result?: { notes?: string } }).result?.notes, 'booted, records consistent');
  assert.equal((await item()).state, 'protected');
  await assert.rejects(stat(join(dir, 'b', 'vms', 'app1-test')), 'the test machine is gone');
  assert.ok(tf.tasks.every((t) => t.state === 'succeeded'));

  // Planned failover: zero loss. The recovery VM resumes exactly after the last record on the
  // source's disk when it shut down.
  const fo = await waitJob(server, await start('/items/app1/failover', { mode: 'planned' }), 300_000);
  assert.equal((await prim.state('app1')).state, 'stopped');
  const sourceLast = (await verifyDisk(join(dir, 'a', 'rec.qcow2'))).highestContiguousSeq;
  const recLog = join(dir, 'b', 'vms', 'app1', 'run', 'serial.log');
  const recResume = await nextReady(recLog, 0);
  assert.equal(recResume, sourceLast, `recovery VM resumed after ${recResume}; the source wrote up to ${sourceLast}`);
  let it = await item();
  assert.equal(it.state, 'failed-over');
  assert.ok(fo.tasks.every((t) => t.state === 'succeeded'), JSON.stringify(fo.tasks));

  // Commit: the recovery VM runs on images without a backing chain; the points are gone.
  await waitJob(server, await start('/items/app1/commit'), 300_000);
  const recDisks = (await rec.state('app1')).definition.disks;
  for (const d of recDisks) assert.equal(await backing(d.path), undefined, `${d.path} still has a backing file`);
  assert.equal((await rec.state('app1')).definition.secrets, undefined);
  assert.equal((await points(server, 'app1')).length, 0);
  it = await item();
  assert.equal(it.state, 'committed');
  await assert.rejects(stat(join(dir, 'b', 'replicas', it.id)), 'the replica at the recovery site is gone');

  // Reverse replication: the old disk at dc1 still exists, so only differences are sent.
  await new Promise((r) => setTimeout(r, 3000)); // the recovery VM writes some records meanwhile
  const rv = await waitJob(server, await start('/items/app1/reverse-replicate'), 300_000);
  it = await item();
  assert.equal(it.state, 'protected');
  assert.equal(it.direction, 'reverse');
  const diffBytes = it.details.replication?.bytesTotal ?? Infinity;
  const full = await allocated(recDisks[0]!.path);
  assert.ok(diffBytes < full / 2, `reverse replication sent ${diffBytes} bytes of differences; a full copy would send ${full}`);
  process.stdout.write(`# reverse replication: ${diffBytes} bytes of differences instead of ${full} allocated\n`);
  // The planned failover lost nothing and started the recovery VM with change tracking, so the
  // differences come from that tracking (no digest pass over the disks); the failback below
  // proves they were complete (the primary resumes at exactly the recovery VM's last record).
  const foLog = (await api<{ log: { message: string }[] }>(server, 'GET', `/jobs/${fo.id}`)).log.map((l) => l.message);
  assert.ok(foLog.some((m) => /change tracking on app1 started before its first instruction/.test(m)), JSON.stringify(foLog));
  const rvLog = (await api<{ log: { message: string }[] }>(server, 'GET', `/jobs/${rv.id}`)).log.map((l) => l.message);
  assert.ok(rvLog.some((m) => /change tracking recorded since the failover are sent \(no digest pass\)/.test(m)), JSON.stringify(rvLog));
  assert.equal(it.details.replication?.method, 'cbt', 'the agent sent the tracked blocks, not digest differences');
  assert.ok(rv.tasks.length === 3);

  // A failback cancelled during its sync changes nothing: the item is protected in reverse
  // again, and the primary's replica still boots at its last consistent point (a drill at dc1).
  const cancelled = await start('/items/app1/failover', { mode: 'planned' });
  await api(server, 'POST', `/jobs/${cancelled}/cancel`);
  await waitJob(server, cancelled, 60_000, 'cancelled');
  it = await item();
  assert.equal(it.state, 'protected');
  assert.equal(it.direction, 'reverse');
  await waitJob(server, await start('/items/app1/test-failover', { point: 'latest' }), 120_000);
  const drill = await prim.state('app1-test');
  assert.ok((await nextReady(drill.consoleLog!, 0)) > 0, 'the primary replica boots with its records');
  await waitJob(server, await start('/items/app1/test-cleanup', { notes: 'the primary replica boots after a cancelled failback' }), 60_000);

  // Failback, sync before: phase 1 leaves the machine running at dc2; complete-failover
  // shuts it down, sends the last differences and starts it at dc1 with nothing lost.
  const fbId = await start('/items/app1/failover', { mode: 'planned' });
  await waitJob(server, fbId, 300_000, 'waiting');
  assert.equal((await item()).state, 'failback-ready');
  assert.equal((await rec.state('app1')).state, 'running');
  const primLog = join(dir, 'a', 'vms', 'app1', 'run', 'serial.log');
  const primBoots = await readies(primLog);
  await api(server, 'POST', `/jobs/${fbId}/complete`);
  await waitJob(server, fbId, 300_000);
  assert.equal((await rec.state('app1')).state, 'stopped');
  const recLast = (await verifyDisk(recDisks[0]!.path)).highestContiguousSeq;
  const back = await nextReady(primLog, primBoots);
  assert.equal(back, recLast, `the primary VM resumed after ${back}; the recovery VM wrote up to ${recLast}`);
  assert.equal((await item()).state, 'failed-over');

  // Commit of the failback: the recovery-site machine and its disks are removed.
  await waitJob(server, await start('/items/app1/commit'), 300_000);
  await assert.rejects(stat(join(dir, 'b', 'vms', 'app1')), 'the recovery-site machine is gone');
  for (const d of (await prim.state('app1')).definition.disks) assert.equal(await backing(d.path), undefined);

  // Reverse replication once more: primary → recovery, a full copy (the old disks are gone).
  await waitJob(server, await start('/items/app1/reverse-replicate'), 300_000);
  it = await item();
  assert.equal(it.state, 'protected');
  assert.equal(it.direction, 'forward');
  await waitFor('a new point at dc2', async () => (await points(server, 'app1')).length >= 2, 60_000, 500);
});
