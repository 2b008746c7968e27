// Changed-block tracking and points in time on real QEMU under TCG, with the guest writing:
// the dirty bitmap names exactly the 64 KiB blocks a block-by-block digest comparison finds
// changed; a point taken mid-write verifies record by record (verifyDisk) and, for ext4 under
// the fs workload, passes e2fsck after journal replay with every durable file; an unconsumed
// point's changes come back in the next one; a killed QEMU leaves an inconsistent bitmap that
// is reported as cbt-lost (digest resync), never papered over.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import { verifyDisk, verifyFs } from '../../src/guest/verify.ts';
import { parseConsole } from '../../src/guest/console.ts';
import type { ReboundError } from '../../src/domain/errors.ts';
import type { Point, PointDisk } from '../../src/providers/provider.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { processGone } from '../../src/providers/qemu/process.ts';
import { lastDurable, teardownSite, testGuest, waitConsole } from './support.ts';

const BLOCK = 65536;
let dir: string;
let p: QemuProvider;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-qcbt-'));
  const guest = await testGuest(dir);
  p = new QemuProvider({ root: join(dir, 'site') });
  await makeDataDisk(join(dir, 'rec0.qcow2'), { sizeMiB: 64 });
  await makeDataDisk(join(dir, 'rec1.qcow2'), { sizeMiB: 32 });
  await makeDataDisk(join(dir, 'rec2.qcow2'), { sizeMiB: 16 });
  await makeDataDisk(join(dir, 'fs.qcow2'), { sizeMiB: 48, fs: 'ext4' });
  const boot = (append: string) => ({ kind: 'kernel' as const, kernel: guest.kernel, initrd: guest.initrd, append });
  await p.define({
    name: 'rec', cpus: 1, memoryMiB: 192, nics: [],
    disks: ['rec0', 'rec1', 'rec2'].map((n) => ({ path: join(dir, `${n}.qcow2`), format: 'qcow2' as const })),
    // One record writer on each of the first two disks; the third stays idle.
    boot: boot(guestCmdline({ workload: 'records', rate: 100, disk: '/dev/vda,/dev/vdb' })),
  });
  await p.define({
    name: 'fs', cpus: 1, memoryMiB: 192, nics: [],
    disks: [{ path: join(dir, 'fs.qcow2'), format: 'qcow2' }],
    boot: boot(guestCmdline({ workload: 'fs', files: 16, size: 32768, rate: 20 })),
  });
  const [a, b] = await Promise.all([p.start('rec'), p.start('fs')]);
  await Promise.all([waitConsole(a.consoleLog!, /REBOUND seq=\d+ durable/, 90_000), waitConsole(b.consoleLog!, /REBOUND file=\d+ gen=\d+ durable/, 90_000)]);
});
after(async () => {
  await teardownSite(p);
  await rm(dir, { recursive: true, force: true });
});

async function readAll(d: PointDisk): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let at = 0; at < d.disk.sizeBytes; at += 8 << 20) parts.push(await d.read(at, Math.min(8 << 20, d.disk.sizeBytes - at)));
  return Buffer.concat(parts);
}

const blockDigests = (b: Buffer): string[] => {
  const out: string[] = [];
  for (let at = 0; at < b.length; at += BLOCK) out.push(createHash('sha256').update(b.subarray(at, at + BLOCK)).digest('hex'));
  return out;
};

function dirtyBlocks(d: PointDisk): number[] {
  assert.equal(d.changes.kind, 'extents');
  if (d.changes.kind !== 'extents') return [];
  assert.equal(d.changes.granularity, BLOCK);
  const out: number[] = [];
  for (const e of d.changes.extents) for (let at = e.offset; at < e.offset + e.length; at += BLOCK) out.push(at / BLOCK);
  return out;
}

const ZEROS = Buffer.alloc(1 << 20);
const isZero = (b: Buffer): boolean => {
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const part = b.subarray(at, at + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('the dirty bitmap names exactly the blocks a digest comparison finds changed, and a mid-write point of all disks verifies', { timeout: 180_000 }, async () => {
  assert.deepEqual(await p.trackingStatus('rec'), { state: 'off', problems: [] });
  assert.equal((await p.startTracking('rec')).state, 'active');
  const p0 = await p.takePoint('rec');
  assert.deepEqual(p0.disks.map((d) => d.changes.kind), ['all', 'all', 'all'], 'the first point has nothing to compare with');
  const before: Buffer[] = [];
  for (const d of p0.disks) before.push(await readAll(d));
  // A full copy may skip what the point reports unallocated: it all reads as zeros.
  const alloc = await p0.disks[0]!.allocated!();
  const allocBytes = alloc.reduce((s, e) => s + e.length, 0);
  assert.ok(allocBytes > 0 && allocBytes < before[0]!.length / 2, `allocated ${allocBytes} of ${before[0]!.length}`);
  let at = 0;
  for (const e of [...alloc, { offset: before[0]!.length, length: 0 }]) {
    assert.ok(isZero(before[0]!.subarray(at, e.offset)), `data outside the allocated extents at ${at}`);
    at = e.offset + e.length;
  }
  assert.deepEqual(await p0.disks[2]!.allocated!(), [], 'the idle disk has nothing allocated');
  await p.releasePoint(p0, { consumed: true });

  await sleep(1500); // the guest keeps writing records on two disks
  const durable = parseConsole(await readFile(p.paths('rec').serialLog, 'utf8')).disks;
  const p1 = await p.takePoint('rec');
  try {
    for (const [i, d] of p1.disks.entries()) {
      const after = await readAll(d);
      const a = blockDigests(before[i]!);
      const changed = blockDigests(after).flatMap((h, k) => (h !== a[k] ? [k] : []));
      assert.deepEqual(dirtyBlocks(d), changed, `disk ${i}: bitmap vs digest comparison`);
      if (i === 2) {
        assert.deepEqual(changed, [], 'the idle disk did not change');
        continue;
      }
      assert.ok(changed.length > 0, `disk ${i}: the workload wrote between the points`);
      // The point is one instant for every disk: each holds every record its writer had
      // reported durable before the point was taken.
      const expectSeq = durable.get(`/dev/vd${'ab'[i]}`)?.durableSeq ?? 0;
      assert.ok(expectSeq > 0);
      const image = join(dir, `p1-rec${i}.raw`);
      await writeFile(image, after);
      const report = await verifyDisk(image, { expectSeq });
      assert.equal(report.ok, true, JSON.stringify(report));
    }
    // …and the disks have moved on since: the point is not the live disk.
    const seqInPoint = (await verifyDisk(join(dir, 'p1-rec0.raw'))).highestContiguousSeq;
    await waitConsole(p.paths('rec').serialLog, new RegExp(`REBOUND seq=${seqInPoint + 5} durable disk=/dev/vda`), 30_000);
  } finally {
    await p.releasePoint(p1, { consumed: false });
  }
});

test('an unconsumed point hands its changes on to the next point', { timeout: 120_000 }, async () => {
  const [a, refused] = await Promise.allSettled([p.takePoint('rec'), p.takePoint('rec')]).then((r) => {
    const ok = r.find((x) => x.status === 'fulfilled');
    const no = r.find((x) => x.status === 'rejected');
    assert.ok(ok && no, 'exactly one of two concurrent takePoint calls opens a point');
    return [ok.value, no.reason as ReboundError] as const;
  });
  assert.equal(refused.code, 'point-open');
  const dirtyA = dirtyBlocks(a.disks[0]!);
  assert.ok(dirtyA.length > 0);
  await p.releasePoint(a, { consumed: false });
  await sleep(500);
  const b = await p.takePoint('rec');
  const dirtyB = new Set(dirtyBlocks(b.disks[0]!));
  await p.releasePoint(b, { consumed: true });
  for (const blk of dirtyA) assert.ok(dirtyB.has(blk), `block ${blk} dirty in the unconsumed point is missing from the next`);
  await assert.rejects(p.releasePoint(b, { consumed: true }), (e: ReboundError) => e.code === 'point-not-open');
});

test('a point left open by a Rebound process that went away is folded back, not lost, by the next point', { timeout: 120_000 }, async () => {
  const other = new QemuProvider({ root: p.root }); // stands for a process that took a point and died
  const stale = await other.takePoint('rec');
  const staleDirty = dirtyBlocks(stale.disks[0]!);
  assert.ok(staleDirty.length > 0);
  await sleep(300);
  const next = await p.takePoint('rec');
  const dirty = new Set(dirtyBlocks(next.disks[0]!));
  assert.equal(next.id, stale.id, 'the stale point\'s generation is reused after folding back');
  await p.releasePoint(next, { consumed: true });
  for (const blk of staleDirty) assert.ok(dirty.has(blk), `block ${blk} of the abandoned point is missing`);
  assert.deepEqual(await p.trackingStatus('rec'), { state: 'active', problems: [] });
});

test('a point of the fs workload\'s ext4 disk passes e2fsck after journal replay with every durable file', { timeout: 180_000 }, async () => {
  await p.startTracking('fs');
  await sleep(1000);
  const log = await readFile(p.paths('fs').serialLog, 'utf8');
  const durable = new Map<number, number>();
  for (const m of log.matchAll(/REBOUND file=(\d+) gen=(\d+) durable/g)) durable.set(Number(m[1]), Math.max(Number(m[2]), durable.get(Number(m[1])) ?? 0));
  let point: Point | undefined = await p.takePoint('fs');
  try {
    const report = await verifyFs(point.disks[0]!.uri!);
    assert.equal(report.ok, true, JSON.stringify(report));
    assert.equal(report.fsck.exitCode, 0, report.fsck.output);
    const onDisk = new Map(report.goodFiles.map((f) => [f.index, f.generation]));
    assert.ok(durable.size > 0);
    for (const [index, gen] of durable) assert.ok((onDisk.get(index) ?? -1) >= gen, `file ${index} gen ${gen} was durable before the point`);
    await p.releasePoint(point, { consumed: true });
    point = undefined;
  } finally {
    if (point) await p.releasePoint(point, { consumed: false });
  }
});

async function killAndRestart(name: string): Promise<void> {
  const { pid, consoleLog } = await p.state(name);
  process.kill(pid!, 'SIGKILL');
  for (let i = 0; i < 100 && !(await processGone(pid!)); i++) await sleep(50);
  assert.equal((await p.state(name)).state, 'stopped');
  const seq = await lastDurable(consoleLog!);
  await p.start(name);
  await waitConsole(consoleLog!, new RegExp(`REBOUND seq=${seq + 3} durable`), 90_000);
}

async function assertLost(name: string, reason: RegExp): Promise<void> {
  const status = await p.trackingStatus(name);
  assert.equal(status.state, 'lost');
  assert.ok(status.problems.some((x) => x.disk === 'disk0' && reason.test(x.reason)), JSON.stringify(status));
  await assert.rejects(p.takePoint(name), (e: ReboundError) =>
    e.code === 'cbt-lost' && e.details?.['fallback'] === 'digest-resync' && /digest/.test(e.hint ?? '') && reason.test(e.message));
  await assert.rejects(p.startTracking(name), (e: ReboundError) => e.code === 'cbt-lost');
}

test('a killed QEMU loses its bitmaps (missing, or inconsistent once saved): reported as cbt-lost with a digest resync, then reset', { timeout: 240_000 }, async () => {
  assert.equal((await p.trackingStatus('rec')).state, 'active');
  // Killed before QEMU ever closed the image with the bitmap in it (each point starts a new
  // bitmap, so this is the usual case): the bitmap is simply gone.
  await killAndRestart('rec');
  await assertLost('rec', /missing/);

  // After the caller's digest resync, reset starts tracking afresh; the next point is a new base.
  assert.equal((await p.resetTracking('rec')).state, 'active');
  const fresh = await p.takePoint('rec');
  assert.deepEqual(fresh.disks.map((d) => d.changes.kind), ['all', 'all', 'all']);
  await p.releasePoint(fresh, { consumed: true });

  // A clean exit saves the bitmaps in the qcow2 images; tracking survives a restart…
  await p.powerOff('rec');
  await p.start('rec');
  assert.deepEqual(await p.trackingStatus('rec'), { state: 'active', problems: [] });
  const kept = await p.takePoint('rec');
  assert.equal(kept.disks[0]!.changes.kind, 'extents');
  await p.releasePoint(kept, { consumed: true });

  // …and a kill while QEMU holds a saved bitmap (no point since it started, so the recording
  // bitmap is the saved one) leaves it marked in use: inconsistent.
  await p.powerOff('rec');
  await p.start('rec');
  await killAndRestart('rec');
  await assertLost('rec', /inconsistent/);
  assert.equal((await p.resetTracking('rec')).state, 'active');
  const again = await p.takePoint('rec');
  assert.deepEqual(again.disks.map((d) => d.changes.kind), ['all', 'all', 'all']);
  await p.releasePoint(again, { consumed: true });
  await sleep(300);
  const next = await p.takePoint('rec');
  assert.ok(dirtyBlocks(next.disks[0]!).length > 0);
  await p.releasePoint(next, { consumed: true });
});
