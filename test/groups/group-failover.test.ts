// Two real TCG guests in one replication group write *linked* records: a coordinator in this test
// appends record n to B's data disk (the guest kit's record writer, run on B's console, which
// prints `REBOUND seq=n durable` after fdatasync), and only then record n to A's. So at any
// instant A ≤ B ≤ A + 1. The agent takes the group's points at one barrier (QMP `stop` on both
// VMs, each VM's point transaction, `cont` on both); an unplanned failover of a plan holding both
// to their common point must find, on the replicas, A ≤ B ≤ A + 1 and no corrupt record.
// Negative control (logged, not asserted): each machine's own newest point at the moment of the
// failover, read from the replica store, may belong to different barriers and break the link.
// Also: `rebound items` shows the group, app-consistent group points (every member froze), every
// retained common point holds the link, the barrier's pause as the vault recorded it, and a
// server killed with `kill -9` while a barrier held a VM stopped: after the restart that VM runs
// again and the group's points go on.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import { verifyDisk } from '../../src/guest/verify.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { QmpClient } from '../../src/qmp/client.ts';
import { openStore } from '../../src/store/open.ts';
import { consoleRun, teardownSite, testGuest, waitConsole } from '../providers/support.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, openReplicas, verifyPoint, waitFor, waitJob } from '../replication/support.ts';
import { BIN } from '../cli/helpers.ts';

const A = 'ga';
const B = 'gb';
let dir: string;
let server: ServerProcess;
let prim: QemuProvider;
let rec: QemuProvider;
const t0 = Date.now();

interface Point { id: string; takenAt: number; kind: string; status: string; groupPointId: string | null }
interface Job { id: string; state: string; log: { message: string }[]; tasks: { name: string; state: string }[] }

function cli(args: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(BIN, args, { env: { ...process.env, REBOUND_URL: server.url, REBOUND_TOKEN: server.token }, timeout: timeoutMs }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const pointsOf = async (m: string): Promise<Point[]> => (await api<{ items: Point[] }>(server, 'GET', `/items/${m}/points?limit=500`)).items;

/** Group point ids that both machines hold, newest first. */
async function common(): Promise<{ id: string; a: Point; b: Point }[]> {
  const [pa, pb] = [await pointsOf(A), await pointsOf(B)];
  const out: { id: string; a: Point; b: Point }[] = [];
  for (const a of pa) {
    const b = pb.find((x) => a.groupPointId !== null && x.groupPointId === a.groupPointId);
    if (b) out.push({ id: a.groupPointId!, a, b });
  }
  return out;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-groups-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
  const guest = await testGuest(dir);
  prim = new QemuProvider({ root: join(dir, 'a') });
  rec = new QemuProvider({ root: join(dir, 'b') });
  for (const name of [A, B]) {
    await makeDataDisk(join(dir, 'a', `${name}.qcow2`), { sizeMiB: 16 });
    // No workload of its own: the coordinator runs the record writer on its console.
    await prim.define({
      name, cpus: 1, memoryMiB: 128, nics: [],
      disks: [{ path: join(dir, 'a', `${name}.qcow2`), format: 'qcow2' }],
      boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append: guestCmdline({ workload: 'none', modules: 'all' }) },
    });
  }
  await Promise.all([A, B].map(async (name) => waitConsole((await prim.start(name)).consoleLog!, /REBOUND ready workload=none/, 180_000)));
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  await api(server, 'POST', '/sites', { name: 'dc1', provider: 'qemu', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dc2', provider: 'qemu', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'grp', frequency: '2s', retention: '10m', appConsistent: '8s', encryption: 'none' });
  await api(server, 'POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'grp' });
});

after(async () => {
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-groups-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim);
  if (rec) await teardownSite(rec);
  await rm(dir, { recursive: true, force: true });
});

test('two guests in one replication group: their linked records hold on the replicas after an unplanned failover of their plan to the common point', { timeout: 900_000 }, async () => {
  // Protect both in group g (CLI), each waited to the end of its first copy.
  for (const m of [A, B]) {
    const c = await cli(['protect', m, '--group', 'g', '--wait', '--json'], 300_000);
    assert.equal(c.code, 0, `${c.stderr}\n${server.logs().slice(-3000)}`);
  }
  const items = JSON.parse((await cli(['items', '--json'])).stdout) as { items: { machine: string; group: string | null }[] };
  assert.deepEqual(items.items.map((i) => [i.machine, i.group]).sort(), [[A, 'g'], [B, 'g']]);
  // Moving and leaving a group (CLI); the item shows it; then back into g.
  let g = await cli(['item', 'group', A, 'other', '--json']);
  assert.equal(g.code, 0, g.stderr);
  assert.equal((JSON.parse(g.stdout) as { group: string }).group, 'other');
  g = await cli(['item', 'group', A, '--leave']);
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.stdout, /ga is in no replication group/);
  g = await cli(['item', 'group', A]);
  assert.equal(g.code, 2, 'a group or --leave is needed');
  g = await cli(['item', 'group', A, 'Bad Name']);
  assert.equal(g.code, 2, g.stderr);
  assert.match(g.stderr, /replication group name 'Bad Name' is not valid/);
  g = await cli(['item', 'group', A, 'g']);
  assert.equal(g.code, 0, g.stderr);
  assert.equal((await api<{ group: string | null }>(server, 'GET', `/items/${A}`)).group, 'g');

  // The coordinator: B writes n (durable), then A writes n; so A ≤ B ≤ A + 1 at every instant.
  const vm = async (name: string) => ({ sock: prim.paths(name).console, log: (await prim.state(name)).consoleLog! });
  const [va, vb] = [await vm(A), await vm(B)];
  let n = 0;
  let stop = false;
  const append = async (v: { sock: string; log: string }, seq: number, writer: number): Promise<void> => {
    await consoleRun(v.sock, v.log, `/bin/rebound-records disk=/dev/vda rate=0 count=1 writer=${writer}`, new RegExp(`REBOUND seq=${seq} durable`), 60_000);
  };
  const coordinator = (async () => {
    while (!stop) {
      await append(vb, n + 1, 2);
      await append(va, n + 1, 1);
      n++;
    }
  })();
  try {
    // Enough linked records and common group points, crash- and app-consistent.
    await waitFor('40 linked records and 4 common group points, one of them app-consistent', async () => {
      if (n < 40) return false;
      const c = await common();
      return c.length >= 4 && c.some((x) => x.a.kind === 'app' && x.b.kind === 'app');
    }, 400_000, 1000);
    for (const x of await common()) assert.equal(x.a.kind, x.b.kind, 'a group point has one kind on every member');

    // kill -9 of the server (the agent inside it) at the worst moment, inside a barrier: A is left
    // stopped with the barrier's marker (made here by hand while the server is down, as the
    // killed agent would have left it). The restarted agent lets A run again and goes on.
    const seqBefore = (await common()).length;
    await server.kill9();
    const q = await QmpClient.connect(prim.paths(A).qmp, { timeoutMs: 10_000 });
    await q.execute('stop');
    await q.close();
    await writeFile(join(prim.paths(A).run, 'barrier.json'), JSON.stringify({ at: Date.now(), frozen: false }) + '\n');
    assert.equal((await prim.state(A)).state, 'paused');
    server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
    await waitFor('A running again after the restart', async () => (await prim.state(A)).state === 'running', 60_000, 500);
    const nAtRestart = n;
    await waitFor('2 more common group points after the restart, and more linked records', async () => (await common()).length >= seqBefore + 2 && n >= nAtRestart + 5, 240_000, 1000);

    // The negative control's points: each machine's own newest point right now.
    const [ownA, ownB] = [(await pointsOf(A))[0]!, (await pointsOf(B))[0]!];
    const retained = await common();

    // Unplanned failover of a plan holding both, to their common latest.
    await api(server, 'POST', '/plans', { name: 'app', groups: [{ machines: [A, B] }] });
    const started = Date.now();
    const { job } = await api<{ job: { id: string } }>(server, 'POST', '/plans/app/failover', { mode: 'unplanned', point: 'latest' });
    await waitJob(server, job.id, 300_000);
    process.stdout.write(`# plan failover took ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    const log = (await api<Job>(server, 'GET', `/jobs/${job.id}`)).log.map((l) => l.message);
    const chosen = new Map<string, string>();
    for (const m of [A, B]) {
      const line = log.find((l) => l.startsWith(`${m} uses point `) && /common to its replication group g/.test(l));
      assert.ok(line, `the plan says which common point ${m} takes: ${JSON.stringify(log)}`);
      chosen.set(m, /uses point (\S+)/.exec(line)![1]!);
    }
    const pa = (await pointsOf(A)).find((p) => p.id === chosen.get(A))!;
    const pb = (await pointsOf(B)).find((p) => p.id === chosen.get(B))!;
    assert.ok(pa.groupPointId !== null && pa.groupPointId === pb.groupPointId, 'both points belong to one group point');
    stop = true;
    await coordinator;

    // On the replicas: the recovered VMs run at dc2 (no workload of their own); stopped and read
    // whole, their disks hold the linked records of one instant.
    const seen = new Map<string, number>();
    for (const m of [A, B]) {
      const info = await rec.state(m);
      assert.equal(info.state, 'running');
      await rec.powerOff(m);
      const report = await verifyDisk(info.definition.disks[0]!.path);
      assert.equal(report.counts.corrupt, 0, `${m}: ${JSON.stringify(report.corrupt.slice(0, 3))}`);
      assert.equal(report.counts.gaps, 0, `${m}: ${JSON.stringify(report.gaps.slice(0, 3))}`);
      seen.set(m, report.highestContiguousSeq);
    }
    const [ra, rb] = [seen.get(A)!, seen.get(B)!];
    process.stdout.write(`# common point: A holds 1..${ra}, B holds 1..${rb} (coordinator reached ${n})\n`);
    assert.ok(ra > 0, 'the common point holds linked records');
    assert.ok(ra <= rb && rb <= ra + 1, `the link holds at the common point: A ${ra}, B ${rb} (want A ≤ B ≤ A + 1)`);

    // Every retained common point, read from the replica store of the stopped vault, holds the
    // link; the negative control reads points of different barriers.
    await server.stop();
    const replica = async (m: string) => {
      const store = await openStore({ dataDir: join(dir, 'vault') });
      const row = await store.db.selectFrom('protected_items as i').innerJoin('machines as mm', 'mm.id', 'i.machine_id').select('i.id').where('mm.name', '=', m).executeTakeFirstOrThrow();
      await store.close();
      return [...(await openReplicas(join(dir, 'vault'), join(dir, 'b'), row.id)).values()][0]!;
    };
    const [da, dbk] = [await replica(A), await replica(B)];
    const seqOf = new Map<string, number>();
    const read = async (disk: typeof da, id: string, what: string): Promise<number> => {
      if (!seqOf.has(id)) {
        const r = await verifyPoint(disk, id);
        assert.equal(r.counts.corrupt, 0, `${what}: no corrupt record`);
        seqOf.set(id, r.highestContiguousSeq);
      }
      return seqOf.get(id)!;
    };
    for (const x of retained) {
      const [sa, sb] = [await read(da, x.a.id, `${A} at ${x.id}`), await read(dbk, x.b.id, `${B} at ${x.id}`)];
      assert.ok(sa <= sb && sb <= sa + 1, `the link holds at group point ${x.id}: A ${sa}, B ${sb}`);
    }
    process.stdout.write(`# the link holds at all ${retained.length} retained common points (A..B: ${retained.map((x) => `${seqOf.get(x.a.id)}..${seqOf.get(x.b.id)}`).join(', ')})\n`);
    const [oa, ob] = [await read(da, ownA.id, `${A}'s own newest`), await read(dbk, ownB.id, `${B}'s own newest`)];
    const sameBarrier = ownA.groupPointId !== null && ownA.groupPointId === ownB.groupPointId;
    const control = [`own newest points (${sameBarrier ? 'one barrier' : 'different barriers'}): A ${oa}, B ${ob}: the link ${oa <= ob && ob <= oa + 1 ? 'holds' : 'is BROKEN'}`];
    // A's point of one barrier with B's of the barrier before: what points of two machines taken
    // apart can look like.
    for (let i = 0; i + 1 < retained.length && i < 3; i++) {
      const [sa, sb] = [seqOf.get(retained[i]!.a.id)!, seqOf.get(retained[i + 1]!.b.id)!];
      control.push(`A's newer point with B's older: A ${sa}, B ${sb}: the link ${sa <= sb && sb <= sa + 1 ? 'holds' : 'is BROKEN'}`);
    }
    process.stdout.write(`# negative control (not asserted): ${control.join('; ')}\n`);

    const store = await openStore({ dataDir: join(dir, 'vault') });
    try {
      const gps = await store.db.selectFrom('group_points').select(['seq', 'kind', 'pause_ms']).orderBy('seq').execute();
      const pauses = gps.map((g) => Number(g.pause_ms)).sort((x, y) => x - y);
      assert.ok(pauses.length >= 6);
      assert.ok(pauses.every((ms) => ms > 0), 'every group point held its VMs at a barrier');
      const q = (f: number): number => pauses[Math.min(pauses.length - 1, Math.floor(f * pauses.length))]!;
      process.stdout.write(`# barrier pause of 2 VMs over ${pauses.length} group points (${gps.filter((g) => g.kind === 'app').length} app-consistent): min ${q(0)} ms, median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${pauses.at(-1)} ms\n`);
    } finally {
      await store.close();
    }
    process.stdout.write(`# test time ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    assert.ok((await readFile(va.log, 'utf8')).includes(`REBOUND seq=${n} durable`));
  } finally {
    stop = true;
    await coordinator.catch(() => undefined);
  }
});

test('after commit and reverse replication of the plan, the group takes its common points at the recovery site; a member that is down holds no one back', { timeout: 600_000 }, async () => {
  // The first test stopped the vault to read its replica store; the recovered VMs were stopped
  // to read their disks. Both come back.
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  for (const m of [A, B]) await rec.start(m);
  // The old copies at dc1 kept running (an unplanned failover without shutdown): stopped before
  // their disks are overwritten by reverse replication.
  for (const m of [A, B]) await prim.powerOff(m);
  for (const verb of ['commit', 'reverse-replicate']) {
    const { job } = await api<{ job: { id: string } }>(server, 'POST', `/plans/app/${verb}`, {});
    await waitJob(server, job.id, 300_000);
  }
  for (const m of [A, B]) {
    const it = await api<{ state: string; direction: string; group: string | null }>(server, 'GET', `/items/${m}`);
    assert.deepEqual([it.direction, it.group], ['reverse', 'g'], `${m} replicates back and stays in its group`);
  }
  const since = Date.now();
  const back = await waitFor('2 common group points replicating back from dc2', async () => {
    const c = (await common()).filter((x) => x.a.takenAt >= since - 60_000);
    return c.length >= 2 ? c : false;
  }, 240_000, 1000);
  for (const x of back) assert.equal(x.a.kind, x.b.kind);

  // A member that cannot take part (B's VM stopped) holds no one back: A replicates on its own
  // meanwhile (points of no group point), an event says why; once B runs again, group points
  // resume.
  await rec.powerOff(B);
  const down = Date.now();
  await waitFor('a point of A of its own while B is down', async () => (await pointsOf(A)).some((p) => p.takenAt >= down && p.groupPointId === null), 120_000, 1000);
  const ev = await api<{ items: { kind: string; message: string }[] }>(server, 'GET', '/events?kind=group-point-failed&limit=10');
  assert.ok(ev.items.some((e) => /replication group g: no point of the whole group can be taken .*ga replicates on its own/.test(e.message)), JSON.stringify(ev.items));
  await rec.start(B);
  const up = Date.now();
  await waitFor('a common group point again once B runs', async () => (await common()).some((x) => x.a.takenAt >= up), 180_000, 1000);
  process.stdout.write(`# replicating back from dc2: ${back.length} common group points; A alone while B was down, then together again; test time ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
});
