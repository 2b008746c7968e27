// The guest kit end to end under TCG: the guest boots, the record writer's durable records
// verify as one contiguous run, damage is reported (and makes `rebound verify-disk` exit
// non-zero), and the fs writer's disk passes e2fsck with every file intact.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ensureGuestKit, guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import type { GuestKit } from '../../src/guest/kit.ts';
import { verifyDisk, verifyFs } from '../../src/guest/verify.ts';
import { parseConsole, waitForConsole } from '../../src/guest/console.ts';
import type { GuestConsoleState } from '../../src/guest/console.ts';
import { RECORD_SIZE } from '../../src/guest/records.ts';

const run = promisify(execFile);
let kit: GuestKit;
let dir: string;

before(async () => {
  kit = await ensureGuestKit();
  dir = await mkdtemp(join(tmpdir(), 'rebound-guest-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Boots the guest until it powers off; returns its console output. Killed on timeout. */
async function boot(disk: string | string[], format: string, params: Record<string, string | number>, timeoutMs = 60_000, nic = 'none'): Promise<string> {
  const qemu = spawn('qemu-system-x86_64', [
    '-accel', 'tcg', '-m', '256', '-display', 'none', '-serial', 'stdio', '-monitor', 'none', '-no-reboot', '-nic', nic,
    '-kernel', kit.kernel, '-initrd', kit.initrd, '-append', guestCmdline({ ...params, after: 'poweroff' }),
    ...[disk].flat().flatMap((d) => ['-drive', `file=${d},format=${format},if=virtio,cache=none`]),
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  qemu.stdout.on('data', (c: Buffer) => (out += c.toString()));
  qemu.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), timeoutMs);
  try {
    const code = await new Promise<number | null>((res) => qemu.once('exit', (c) => res(c)));
    assert.equal(code, 0, `qemu exited with ${code}; console:\n${out}`);
    return out;
  } finally {
    clearTimeout(timer);
    qemu.kill('SIGKILL');
  }
}

/**
 * Boots the guest with its console in a log file, follows the log with waitForConsole until
 * `until` holds, then pulls the plug (SIGKILL of QEMU, no flush). Returns the state the console
 * had shown by then: what the workload had reported durable before the kill.
 */
async function bootAndKill(disk: string, format: string, params: Record<string, string | number>, until: (s: GuestConsoleState) => boolean): Promise<GuestConsoleState> {
  const log = join(dir, `console-${Date.now()}.log`);
  const qemu = spawn('qemu-system-x86_64', [
    '-accel', 'tcg', '-m', '256', '-display', 'none', '-serial', `file:${log}`, '-monitor', 'none', '-no-reboot', '-nic', 'none',
    '-kernel', kit.kernel, '-initrd', kit.initrd, '-append', guestCmdline(params),
    '-drive', `file=${disk},format=${format},if=virtio,cache=none`,
  ], { stdio: 'ignore' });
  const exited = new Promise<void>((res) => qemu.once('exit', () => res()));
  try {
    return await waitForConsole(log, until, { timeoutMs: 60_000, pollMs: 20 });
  } finally {
    qemu.kill('SIGKILL');
    await exited;
  }
}

const lastDurable = (out: string): number => Math.max(0, ...[...out.matchAll(/REBOUND seq=(\d+) durable/g)].map((m) => Number(m[1])));

test('the guest boots under TCG, writes records, and they verify as one contiguous run', async () => {
  const disk = join(dir, 'records.qcow2');
  await makeDataDisk(disk, { sizeMiB: 16, format: 'qcow2' });
  const t0 = performance.now();
  const out = await boot(disk, 'qcow2', { workload: 'records', rate: 0, count: 400, every: 100 });
  assert.match(out, /REBOUND ready workload=records/);
  assert.match(out, /REBOUND done workload=records seq=400/);
  const durable = lastDurable(out);
  assert.equal(durable, 400);
  const report = await verifyDisk(disk, { expectSeq: durable });
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.equal(report.method, 'nbd');
  assert.equal(report.highestContiguousSeq, 400);
  assert.equal(report.records, 400);
  assert.equal(report.writers, 1);
  console.log(`boot + 400 records: ${Math.round(performance.now() - t0)} ms; verify ${report.elapsedMs} ms`);

  // A second boot of the same disk continues the sequence instead of starting over.
  const out2 = await boot(disk, 'qcow2', { workload: 'records', rate: 0, count: 50, every: 50 });
  assert.match(out2, /resume_seq=400/);
  const again = await verifyDisk(disk, { expectSeq: 450 });
  assert.equal(again.ok, true, JSON.stringify(again));
  assert.equal(again.highestContiguousSeq, 450);
  assert.equal(again.writers, 2);

  // Damage on a raw copy: one flipped byte in record 100, then record 200 zeroed (a lost write).
  const raw = join(dir, 'records.raw');
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', disk, raw]);
  const fh = await open(raw, 'r+');
  try {
    const at = 99 * RECORD_SIZE + 1000;
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0]! ^= 0x10;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
  const bad = await verifyDisk(raw);
  assert.equal(bad.ok, false);
  assert.equal(bad.method, 'file');
  assert.equal(bad.highestContiguousSeq, 99);
  assert.deepEqual(bad.corrupt.map((c) => c.offset), [99 * RECORD_SIZE]);
  assert.match(bad.corrupt[0]!.reason, /checksum/);

  const cli = (image: string): Promise<{ code: number; out: string }> =>
    run(resolve('bin/rebound'), ['verify-disk', image]).then(
      (r) => ({ code: 0, out: r.stdout }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
    );
  const good = await cli(disk);
  assert.equal(good.code, 0, good.out);
  const failed = await cli(raw);
  assert.equal(failed.code, 1, failed.out);
  assert.match(failed.out, /FAILED: 1 corrupt record/);
});

test('with a virtio NIC the guest takes its address by DHCP or from rebound.ip', async () => {
  const disk = join(dir, 'net.qcow2');
  await makeDataDisk(disk, { sizeMiB: 4, format: 'qcow2' });
  // restrict=on: QEMU's user network without a path out, as an isolated test network would be.
  const dhcp = await boot(disk, 'qcow2', { workload: 'records', rate: 0, count: 5 }, 60_000, 'user,model=virtio-net-pci,restrict=on');
  assert.match(dhcp, /REBOUND net eth0 10\.0\.2\.15\/24/);
  assert.match(dhcp, /REBOUND done workload=records seq=5/);
  const fixed = await boot(disk, 'qcow2', { workload: 'none', ip: '10.0.2.77/24', gw: '10.0.2.2' }, 60_000, 'user,model=virtio-net-pci,restrict=on');
  assert.match(fixed, /REBOUND net eth0 10\.0\.2\.77\/24/);
  assert.doesNotMatch(dhcp + fixed, /REBOUND error/);
});

test('with two data disks, one writer runs on each and both verify', async () => {
  const disks = [join(dir, 'multi-a.qcow2'), join(dir, 'multi-b.qcow2')];
  for (const d of disks) await makeDataDisk(d, { sizeMiB: 8, format: 'qcow2' });
  const out = await boot(disks, 'qcow2', { workload: 'records', disk: '/dev/vda,/dev/vdb', rate: 0, count: 150, every: 50 });
  const seen = parseConsole(out);
  assert.deepEqual([...seen.disks.keys()].sort(), ['/dev/vda', '/dev/vdb']);
  assert.equal(seen.done, true);
  assert.equal(seen.lastDurableSeq, 150);
  const reports = await Promise.all(disks.map((d) => verifyDisk(d, { expectSeq: 150 })));
  for (const r of reports) assert.equal(r.ok, true, JSON.stringify(r));
  assert.notEqual(seen.disks.get('/dev/vda')?.writer, seen.disks.get('/dev/vdb')?.writer);
});

test('a torn last record is tolerated, a hole before later records is not', async () => {
  const disk = join(dir, 'tail.raw');
  await makeDataDisk(disk, { sizeMiB: 8, format: 'raw' });
  const out = await boot(disk, 'raw', { workload: 'records', rate: 0, count: 100, every: 100 });
  assert.equal(lastDurable(out), 100);
  const fh = await open(disk, 'r+');
  try {
    await fh.write(Buffer.from('torn'), 0, 4, 99 * RECORD_SIZE + 2000); // record 100 half-written
    const torn = await verifyDisk(disk);
    assert.equal(torn.ok, true, JSON.stringify(torn));
    assert.equal(torn.highestContiguousSeq, 99);
    assert.equal(torn.tornTail?.offset, 99 * RECORD_SIZE);
    assert.equal((await verifyDisk(disk, { strict: true })).ok, false);
    assert.equal((await verifyDisk(disk, { expectSeq: 100 })).ok, false, 'a record reported durable is missing');

    await fh.write(Buffer.alloc(RECORD_SIZE), 0, RECORD_SIZE, 49 * RECORD_SIZE); // record 50 lost
    const holed = await verifyDisk(disk);
    assert.equal(holed.ok, false);
    assert.equal(holed.highestContiguousSeq, 49);
    assert.deepEqual(holed.gaps, [{ offset: 49 * RECORD_SIZE, expectedSeq: 50 }]);
  } finally {
    await fh.close();
  }
});

test('the fs workload writes files that pass e2fsck and verify', async () => {
  const disk = join(dir, 'fs.qcow2');
  await makeDataDisk(disk, { sizeMiB: 32, format: 'qcow2', fs: 'ext4' });
  const out = await boot(disk, 'qcow2', { workload: 'fs', files: 8, size: 16384, rate: 0, count: 24 });
  assert.match(out, /REBOUND ready workload=fs/);
  assert.match(out, /REBOUND done workload=fs files_written=24/);
  const report = await verifyFs(disk);
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.equal(report.fsck.exitCode, 0);
  assert.equal(report.files, 8);
});

test('pulling the plug mid-run loses no record the guest called durable', async () => {
  const disk = join(dir, 'crash.qcow2');
  await makeDataDisk(disk, { sizeMiB: 16, format: 'qcow2' });
  const seen = await bootAndKill(disk, 'qcow2', { workload: 'records', rate: 100, every: 1 }, (c) => c.lastDurableSeq >= 80);
  const durable = seen.lastDurableSeq;
  const report = await verifyDisk(disk, { expectSeq: durable });
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.ok(report.highestContiguousSeq >= durable);
  // The guest's clock comes from QEMU's RTC (host time): the newest record is from just now.
  const age = Date.now() - Date.parse(report.lastRecordTime ?? '');
  assert.ok(age >= -2000 && age < 60_000, `last record written ${age} ms ago`);
  // The writer kept going between the last line read and the kill; a little, not a lot.
  assert.ok(report.highestContiguousSeq < durable + 100, `${report.highestContiguousSeq} vs ${durable}`);
});

test('pulling the plug on the fs workload leaves a clean ext4 holding every durable file', async () => {
  const disk = join(dir, 'fs-crash.qcow2');
  await makeDataDisk(disk, { sizeMiB: 32, format: 'qcow2', fs: 'ext4' });
  const seen = await bootAndKill(disk, 'qcow2', { workload: 'fs', files: 8, size: 16384, rate: 0 }, (c) => c.durableFiles.size === 8 && Math.max(...c.durableFiles.values()) >= 30);
  const report = await verifyFs(disk);
  assert.equal(report.ok, true, JSON.stringify(report));
  assert.equal(report.fsck.exitCode, 0, report.fsck.output);
  assert.equal(report.journalReplayed, true, 'a mounted ext4 killed mid-write needs its journal replayed');
  const onDisk = new Map(report.goodFiles.map((f) => [f.index, f.generation]));
  for (const [index, gen] of seen.durableFiles) {
    assert.ok((onDisk.get(index) ?? -1) >= gen, `file ${index} gen ${gen} was durable; disk has ${onDisk.get(index)}`);
  }
});
