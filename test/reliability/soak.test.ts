// The soak harness (src/faults/soak*.ts, scripts/soak.ts). First its parts: the seeded PRNG
// replays, the stamp format catches damage, the clock knob moves a real process's clock, and
// the replica checker fails a replica that lost an acknowledged write or holds a damaged block
// (so a passing soak means something). Then a handful of fixed seeds, each a whole run against a
// real `rebound serve` with a real fault: kill -9 in delta cycles, a half-open link between
// process server and master target, a full recovery site, a clock jumped back with a restart.
// Each must lose no acknowledged byte, verify every retained point, end every job, and catch up
// by differences. About 3-4 minutes on two busy cores.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { encodeRecord, RECORD_SIZE } from '../../src/guest/records.ts';
import { Prng, runSeed } from '../../src/faults/prng.ts';
import { decodeStamp, encodeStamp, genRegressions, prefill, scanStamps, STAMP_SIZE } from '../../src/faults/soak-content.ts';
import type { ContentSpec } from '../../src/faults/soak-content.ts';
import { checkReplica, checkSource } from '../../src/faults/soak-verify.ts';
import { formatSummary, runSoak } from '../../src/faults/soak.ts';
import { checkImage } from '../../src/faults/soak-failover.ts';
import type { RunResult } from '../../src/faults/soak.ts';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { receiveTransfer, sendTransfer } from '../../src/datapath/frame-stream.ts';
import { ProcessServer } from '../../src/replication/process-server.ts';
import { listenTransfers, openTransfer } from '../../src/replication/wire.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';
import { ReplicaDisk } from '../../src/replica/replica-disk.ts';
import { pointIdAfter } from '../../src/replication/agent.ts';
import { newId } from '../../src/store/ids.ts';
import { openStore } from '../../src/store/open.ts';
import { loadVaultKeys } from '../../src/vault/keys.ts';
import { qcow2HostOffset } from '../replication/support.ts';

const run = promisify(execFile);
const MIB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-soak-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('the PRNG replays a seed exactly and spreads over its range', () => {
  const a = new Prng(42);
  const b = new Prng(42);
  const xs = Array.from({ length: 1000 }, () => a.int(0, 9));
  assert.deepEqual(Array.from({ length: 1000 }, () => b.int(0, 9)), xs);
  for (let v = 0; v <= 9; v++) assert.ok(xs.filter((x) => x === v).length > 50, `value ${v} is rare`);
  assert.notDeepEqual(Array.from({ length: 20 }, () => new Prng(43).u32()), Array.from({ length: 20 }, () => new Prng(42).u32()).slice(0, 20));
  assert.equal(runSeed(100, 7), 107);
  assert.throws(() => a.int(5, 4), /lo <= hi/);
});

test('stamps: a good block decodes, a flipped byte, a misplaced block and zeros are told apart', () => {
  const s = encodeStamp(8192, 17, 5n);
  assert.deepEqual(decodeStamp(s, 8192), { kind: 'stamp', gen: 17 });
  const flipped = Uint8Array.from(s);
  flipped[1000]! ^= 1;
  assert.match((decodeStamp(flipped, 8192) as { reason: string }).reason, /checksum/);
  assert.match((decodeStamp(s, 4096) as { reason: string }).reason, /offset 8192 found at 4096/);
  assert.equal(decodeStamp(new Uint8Array(STAMP_SIZE), 0).kind, 'zero');
  assert.deepEqual(genRegressions(Float64Array.from([1, 5, 3]), Float64Array.from([1, 4, 3])), [{ offset: 4096, earlier: 5, later: 4 }]);
});

test('the clock knob moves a real process\'s Date by the file\'s offset, again on SIGUSR2', async () => {
  const file = join(dir, 'clock');
  await writeFile(file, String(3 * 3600_000));
  const script = [
    "const off = () => Math.round((Date.now() - (performance.timeOrigin + performance.now())) / 1000);",
    "console.log(off(), Math.round((new Date().getTime() - (performance.timeOrigin + performance.now())) / 1000));",
    "process.on('SIGUSR2', () => setTimeout(() => { console.log(off()); process.exit(0); }, 50));",
    "require('node:fs').writeFileSync(process.argv[1], '-7200000'); process.kill(process.pid, 'SIGUSR2');",
    "setTimeout(() => process.exit(3), 5000);",
  ].join('\n');
  const { stdout } = await run(process.execPath, [`--import=${join(import.meta.dirname, '../../src/faults/clock-skew.ts')}`, '-e', script, file], { env: { ...process.env, REBOUND_TEST_CLOCK_FILE: file } });
  assert.deepEqual(stdout.trim().split(/\s+/).map(Number), [10800, 10800, -7200]);
});

test('the replica checker passes a faithful replica and fails one that lost an acknowledged write or a block', async () => {
  const root = join(dir, 'checker');
  const src = join(root, 'a');
  const dataDir = join(root, 'vault');
  const recoveryRoot = join(root, 'b');
  for (const d of [src, dataDir, recoveryRoot]) await mkdir(d, { recursive: true });
  const spec: ContentSpec = { recordsPath: join(src, 'd0.img'), stampsPath: join(src, 'd1.img'), recordsBytes: MIB, stampsBytes: 2 * MIB, writer: 9n };
  const pre = await prefill(spec, { records: 64, stampEvery: 4 });
  const prefillGens = new Float64Array(spec.stampsBytes / STAMP_SIZE);
  for (let i = 0, g = 0; i < prefillGens.length; i++) if (i % 4 === 0) prefillGens[i] = ++g;
  assert.equal(pre.gen, prefillGens.length / 4);
  // The vault the checker reads keys and catalogue from (plain replicas need no key).
  const store = await openStore({ dataDir });
  await loadVaultKeys(store);
  await store.close();
  const itemId = 'item1';
  const pointId = newId();
  const disks: ReplicaDisk[] = [];
  for (const [i, path] of [spec.recordsPath, spec.stampsPath].entries()) {
    const data = await readFile(path);
    const disk = await ReplicaDisk.create(join(recoveryRoot, 'replicas', itemId, `disk${i}`), { size: data.length });
    await disk.applyPoint(pointId, [{ offset: 0, data }], { createdAt: new Date().toISOString() });
    disks.push(disk);
  }
  const input = { dataDir, recoveryRoot, itemId, sources: [spec.recordsPath, spec.stampsPath] as [string, string], ackedSeq: 64, expectedGens: prefillGens, prefillGens, caughtUp: { id: pointId, takenAt: 0 } };
  assert.deepEqual(await checkSource(input), []);
  const good = await checkReplica(input);
  assert.deepEqual(good.failures, []);
  assert.equal(good.dataLost, false);
  assert.equal(good.points.length, 1);

  // The writer acknowledges one more record and stamp that never reached the replica.
  const fh = await open(spec.recordsPath, 'r+');
  await fh.write(encodeRecord({ seq: 65, timeNs: 1n, writer: 9n, offset: 64 * RECORD_SIZE }), 0, RECORD_SIZE, 64 * RECORD_SIZE);
  await fh.close();
  const sh = await open(spec.stampsPath, 'r+');
  await sh.write(encodeStamp(3 * STAMP_SIZE, pre.gen + 1, 9n), 0, STAMP_SIZE, 3 * STAMP_SIZE);
  await sh.close();
  const expected = Float64Array.from(prefillGens);
  expected[3] = pre.gen + 1;
  assert.deepEqual(await checkSource({ ...input, ackedSeq: 65, expectedGens: expected }), []);
  const lost = await checkReplica({ ...input, ackedSeq: 65, expectedGens: expected });
  assert.equal(lost.dataLost, true);
  assert.ok(lost.failures.some((f) => /records 1\.\.64 .* acknowledged 65/.test(f)), lost.failures.join('\n'));
  assert.ok(lost.failures.some((f) => /block at 12288 holds generation 0, the writer acknowledged/.test(f)), lost.failures.join('\n'));
  assert.ok(lost.failures.some((f) => /disk1 at the latest point differs from the source/.test(f)), lost.failures.join('\n'));

  // A flipped byte inside the stamps replica's point layer: the stamp check and scrub both see it.
  const layer = join(recoveryRoot, 'replicas', itemId, 'disk1', `p-${pointId}.qcow2`);
  const host = await qcow2HostOffset(layer, 8 * STAMP_SIZE + 100);
  assert.ok(host !== null, 'the point layer holds the block');
  const lh = await open(layer, 'r+');
  const b = Buffer.alloc(1);
  await lh.read(b, 0, 1, host);
  b[0]! ^= 0xff;
  await lh.write(b, 0, 1, host);
  await lh.close();
  const damaged = await checkReplica(input);
  assert.ok(damaged.failures.some((f) => /stamps disk: 1 bad block\(s\), first at 32768: checksum mismatch/.test(f)), damaged.failures.join('\n'));
  assert.ok(damaged.failures.some((f) => /scrub of disk1: 1 damaged block/.test(f)), damaged.failures.join('\n'));
});

test('the failover runs\' image check passes faithful images (raw and qcow2) and fails a missing write, an old stamp or a damaged block', async () => {
  const root = join(dir, 'images');
  await mkdir(root, { recursive: true });
  const spec: ContentSpec = { recordsPath: join(root, 'd0.img'), stampsPath: join(root, 'd1.img'), recordsBytes: MIB, stampsBytes: 2 * MIB, writer: 7n };
  const pre = await prefill(spec, { records: 40, stampEvery: 1 });
  const gens = Float64Array.from({ length: spec.stampsBytes / STAMP_SIZE }, (_v, i) => i + 1);
  assert.equal(pre.gen, gens.length);
  const acked = { seq: 40, gens };
  assert.deepEqual(await checkImage(spec.recordsPath, 'records', acked, root, spec.stampsBytes), { problems: [], lost: false });
  assert.deepEqual(await checkImage(spec.stampsPath, 'stamps', acked, root, spec.stampsBytes), { problems: [], lost: false });
  // Through qcow2, as a failed-over overlay is read.
  for (const [i, p] of [spec.recordsPath, spec.stampsPath].entries()) await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', p, join(root, `disk${i}.qcow2`)]);
  assert.deepEqual(await checkImage(join(root, 'disk0.qcow2'), 'records', acked, root, spec.stampsBytes), { problems: [], lost: false });
  assert.deepEqual(await checkImage(join(root, 'disk1.qcow2'), 'stamps', acked, root, spec.stampsBytes), { problems: [], lost: false });
  // A record acknowledged but missing; a stamp generation acknowledged but older on the image.
  const missing = await checkImage(spec.recordsPath, 'records', { seq: 41, gens }, root, spec.stampsBytes);
  assert.equal(missing.lost, true);
  assert.match(missing.problems.join(), /records 1\.\.40 .* acknowledged 41/);
  const newer = Float64Array.from(gens);
  newer[9] = 9999;
  const old = await checkImage(join(root, 'disk1.qcow2'), 'stamps', { seq: 40, gens: newer }, root, spec.stampsBytes);
  assert.equal(old.lost, true);
  assert.match(old.problems.join(), /block at 36864 holds generation 10; the writer acknowledged 9999/);
  // A flipped byte in a stamp block: damaged, even where nothing acknowledged is expected.
  const fh = await open(spec.stampsPath, 'r+');
  await fh.write(Buffer.from([0xff]), 0, 1, 3 * STAMP_SIZE + 100);
  await fh.close();
  const bad = await checkImage(spec.stampsPath, 'stamps', null, root, spec.stampsBytes);
  assert.equal(bad.lost, false);
  assert.match(bad.problems.join(), /1 bad stamp block\(s\), first at 12288/);
});

test('point ids only grow, even after the clock went back (found by the soak: clock-backward, seed 12)', () => {
  const future = 'ffffffff-0000-7abc-8000-000000000000';
  const next = pointIdAfter(future);
  assert.ok(next > future, next);
  assert.match(next, /^ffffffff-0001-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const now = pointIdAfter(undefined);
  assert.ok(pointIdAfter(now) > now);
});

/** A stand-in for the master target's side of forwarding: takes every transfer and records,
 * in order, the ids of those that arrived whole. */
const recordingReceiver = (key: Buffer, got: string[]): ReturnType<typeof listenTransfers> => listenTransfers({
  material: null,
  accept: () => undefined,
  handle: async (h, socket) => {
    await receiveTransfer(socket, { vaultKey: key, ackedThrough: async () => -1, apply: async () => undefined, checkpoint: async () => undefined, complete: async () => { got.push(h.transferId); } });
  },
});

test('the process server keeps forwarding after an agent resends a transfer it already forwarded (found by the soak: net-drop-agent-ps, seed 3021)', async () => {
  // Real process server, real sockets and frame streams; the master target's side is a receiver
  // that records what arrives. Resending a forwarded transfer (its acknowledgement was lost)
  // kicks the item's forwarder with an empty cache; the next transfer must still be forwarded.
  const key = randomBytes(32);
  const got: string[] = [];
  const mt = await recordingReceiver(key, got);
  const ps = new ProcessServer({ dir: join(dir, 'ps'), transportKey: key, material: null, logger: pino({ level: 'silent' }), masterTargetFor: () => mt.address });
  await ps.start();
  const header = (seq: number): TransferHeader => ({
    transferId: `p${seq}.0`, itemId: 'item1', machine: 'm', diskId: 'disk0', diskIndex: 0, diskCount: 1, diskSize: 65536, pointId: `p${seq}`, pointSeq: seq,
    takenAt: Date.now(), pointKind: 'crash', frames: 1, bytes: 4096, targetSiteId: 'site', masterTarget: mt.address, retentionSeconds: 60, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: false,
  });
  const send = async (seq: number): Promise<void> => {
    const h = header(seq);
    const socket = await openTransfer(ps.address, h, null);
    await sendTransfer(socket, { vaultKey: key, transferId: h.transferId, plan: [{ itemId: 'item1', diskId: 'disk0', pointId: h.pointId, offset: 0, length: 4096 }], read: async () => randomBytes(4096) });
  };
  const arrived = async (id: string): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (!got.includes(id)) {
      if (Date.now() > deadline) throw new Error(`transfer ${id} was never forwarded (forwarded: ${got.join(', ')})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await send(1);
    await arrived('p1.0');
    await new Promise((r) => setTimeout(r, 200)); // the forwarder finds the cache empty and ends
    await send(1); // resent: the process server answers from its tombstone
    await send(2);
    await arrived('p2.0');
    assert.deepEqual(got, ['p1.0', 'p2.0']);
  } finally {
    await ps.close();
    await mt.close();
  }
});

test('process-server tombstones go once a later point of their item and direction has one, not by the wall clock (soak: clock-forward, seed 7577)', async () => {
  // Before, tombstones older than an hour by the process's wall clock were removed at start, so a
  // forward clock step of 85 minutes removed every one, and an agent resuming its open point
  // resent transfers that were already forwarded. Real process server, sockets and streams.
  const key = randomBytes(32);
  const got: string[] = [];
  const mt = await recordingReceiver(key, got);
  const psDir = join(dir, 'ps-stones');
  const done = join(psDir, 'done');
  await mkdir(done, { recursive: true });
  const stone = async (name: string, body: unknown): Promise<void> => {
    await writeFile(join(done, name), typeof body === 'string' ? body : JSON.stringify(body));
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(done, name), twoHoursAgo, twoHoursAgo);
  };
  const t = Date.now() - 2 * 3600_000;
  await stone('p3.0', { frames: 1, at: t, itemId: 'item1', targetSiteId: 'site', pointSeq: 3 });
  await stone('p4.0', { frames: 1, at: t, itemId: 'item1', targetSiteId: 'site', pointSeq: 4 });
  await stone('p4.1', { frames: 1, at: t, itemId: 'item1', targetSiteId: 'site', pointSeq: 4 });
  await stone('q1.0', { frames: 1, at: t, itemId: 'item1', targetSiteId: 'other', pointSeq: 1 });
  await stone('junk', 'not json');
  const ps = new ProcessServer({ dir: psDir, transportKey: key, material: null, logger: pino({ level: 'silent' }), masterTargetFor: () => mt.address });
  const realNow = Date.now;
  Date.now = () => realNow() + 85 * 60_000; // the host's clock stepped forward 85 minutes
  try {
    await ps.start();
  } finally {
    Date.now = realNow;
  }
  const header = (seq: number, disk = 0): TransferHeader => ({
    transferId: `p${seq}.${disk}`, itemId: 'item1', machine: 'm', diskId: `disk${disk}`, diskIndex: disk, diskCount: 2, diskSize: 65536, pointId: `p${seq}`, pointSeq: seq,
    takenAt: Date.now(), pointKind: 'crash', frames: 1, bytes: 4096, targetSiteId: 'site', masterTarget: mt.address, retentionSeconds: 60, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: false,
  });
  const send = async (seq: number, disk = 0): Promise<{ sent: number }> => {
    const h = header(seq, disk);
    const socket = await openTransfer(ps.address, h, null);
    return sendTransfer(socket, { vaultKey: key, transferId: h.transferId, plan: [{ itemId: 'item1', diskId: h.diskId, pointId: h.pointId, offset: 0, length: 4096 }], read: async () => randomBytes(4096) });
  };
  try {
    assert.deepEqual((await readdir(done)).sort(), ['p4.0', 'p4.1', 'q1.0'], 'an earlier point\'s tombstone and an unreadable one went; the newest point\'s stayed, whatever the clock');
    // The agent resumes its open point 4: both transfers are answered from their tombstones.
    assert.deepEqual(await send(4, 0), { sent: 0, skipped: 1 });
    assert.deepEqual(await send(4, 1), { sent: 0, skipped: 1 });
    // Point 5 is forwarded; point 4's tombstones go with it, the other direction's stays.
    await send(5, 0);
    const deadline = Date.now() + 10_000;
    while (!got.includes('p5.0')) {
      if (Date.now() > deadline) throw new Error(`p5.0 was never forwarded (forwarded: ${got.join(', ')})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(got, ['p5.0'], 'nothing already forwarded was forwarded again');
    let left: string[] = [];
    for (let i = 0; i < 100; i++) {
      left = (await readdir(done)).sort();
      if (left.join() === 'p5.0,q1.0') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(left, ['p5.0', 'q1.0']);
  } finally {
    await ps.close();
    await mt.close();
  }
});

test('a qemu-nbd the replica store started dies with the process that started it (found by the soak: clock-backward, seed 5001)', async () => {
  // A server killed after starting qemu-nbd but before connecting to it left qemu-nbd waiting for
  // a first client forever, holding the image's write lock.
  const img = join(dir, 'orphan.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']);
  const pidFile = join(dir, 'orphan.pid');
  const script = `import { spawnWithSecrets } from ${JSON.stringify(join(import.meta.dirname, '../../src/replica/qemu.ts'))};
const s = await spawnWithSecrets('qemu-nbd', ['--socket=${join(dir, 'orphan.sock')}', '--pid-file=${pidFile}', '${img}'], []);
console.log(s.child.pid); setInterval(() => undefined, 1000);`;
  const { spawn } = await import('node:child_process');
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const nbdPid = await new Promise<number>((resolve, reject) => {
    parent.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
    parent.once('exit', (code) => reject(new Error(`the parent exited (${code}) before starting qemu-nbd`)));
  });
  const alive = async (pid: number): Promise<boolean> => {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null);
    return stat !== null && !/^\d+ \(.*\) [ZX]/.test(stat);
  };
  for (let i = 0; i < 200 && !(await readFile(pidFile, 'utf8').catch(() => null)); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(await alive(nbdPid), true, 'qemu-nbd runs, waiting for a client');
  parent.kill('SIGKILL');
  let gone = false;
  for (let i = 0; i < 100 && !gone; i++) {
    gone = !(await alive(nbdPid));
    if (!gone) await new Promise((r) => setTimeout(r, 50));
  }
  if (!gone) process.kill(nbdPid, 'SIGKILL');
  assert.equal(gone, true, `qemu-nbd ${nbdPid} outlived the process that started it`);
});

test('stamp scans read any source through a callback', async () => {
  const buf = Buffer.alloc(4 * STAMP_SIZE);
  Buffer.from(encodeStamp(STAMP_SIZE, 3, 1n)).copy(buf, STAMP_SIZE);
  buf[3 * STAMP_SIZE] = 1; // garbage in block 3
  const s = await scanStamps(async (at, n) => buf.subarray(at, at + n), buf.length, 2 * STAMP_SIZE);
  assert.deepEqual([...s.gens], [0, 3, 0, 0]);
  assert.deepEqual(s.bad, [{ offset: 3 * STAMP_SIZE, reason: 'not a stamp (bad magic)' }]);
});

// Fixed seeds: each is one whole soak run (its own server, writer, fault and checks).
const FAILOVER_SEED = 1; // the kill lands while the failover creates the machine at the target (task 3)
const FIXED: { scenario: string; seed: number }[] = [
  { scenario: 'kill9-delta', seed: 3 },
  { scenario: 'net-half-open-ps-mt', seed: 10 },
  { scenario: 'disk-full-recovery', seed: 10 },
  { scenario: 'clock-backward', seed: 12 }, // jump back, then a restart
  { scenario: 'kill9-failover', seed: FAILOVER_SEED }, // kill -9 while the failover job runs
];

for (const f of FIXED) {
  test(`soak seed ${f.seed}: ${f.scenario} loses nothing acknowledged, every point verifies, every job ends, catch-up by differences`, { timeout: 300_000 }, async () => {
    const lines: RunResult[] = [];
    const report = await runSoak({ runs: 1, seed: f.seed, scenarios: [f.scenario], onRun: (r) => lines.push(r) });
    const r = report.results[0]!;
    assert.equal(r.scenario, f.scenario);
    assert.equal(lines.length, 1);
    assert.deepEqual(r.failures, [], `${r.failures.join('\n')}\n${formatSummary(report.summary)}\nstages ${JSON.stringify(r.stages)}\nnotes ${r.notes.join(' | ')}\n${(r.logTail ?? '').slice(-6000)}`);
    assert.equal(r.ok, true);
    assert.equal(r.dataLost, false);
    if (r.phase === 'failover') {
      // The failover run: the server was killed at a moment of the job and restarted; the
      // failed-over images were checked against what the writer acknowledged.
      assert.equal(r.bytes.restarted, true);
      assert.ok(r.writer.ticks >= 5, `the writer wrote ${r.writer.ticks} times`);
      assert.ok(typeof r.stages['failover'] === 'number', JSON.stringify(r.stages));
      return;
    }
    // The checks had something to check: several points, writes during the run, bytes after the fault.
    assert.ok(r.points >= 2, `${r.points} retained points`);
    assert.ok(r.writer.ticks >= 5, `the writer wrote ${r.writer.ticks} times`);
    assert.ok(r.bytes.agentCatchUp > 0 && r.bytes.masterTargetCatchUp > 0, JSON.stringify(r.bytes));
    if (r.phase === 'delta') assert.ok(r.bytes.masterTargetCatchUp < r.bytes.fullCopy, `the master target wrote ${r.bytes.masterTargetCatchUp} bytes after the fault; a full copy is ${r.bytes.fullCopy}`);
  });
}
