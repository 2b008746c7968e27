// The qemu provider's power lifecycle against a real guest under TCG: define, start (the
// records workload writes), discover, graceful ACPI shutdown, start again, re-attach from a
// separate Rebound process without disturbing the VM, power off; plus the QMP client's errors
// and events on the same VM. One guest boot is reused across the steps.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import { QmpClient, QmpError } from '../../src/qmp/client.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { processGone } from '../../src/providers/qemu/process.ts';
import type { ReboundError } from '../../src/domain/errors.ts';
import { lastDurable, teardownSite, testGuest, waitConsole } from './support.ts';
import type { TestGuest } from './support.ts';

const run = promisify(execFile);
let dir: string;
let guest: TestGuest;
let p: QemuProvider;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-qlife-'));
  guest = await testGuest(dir);
  p = new QemuProvider({ root: join(dir, 'site') });
  await makeDataDisk(join(dir, 'd0.qcow2'), { sizeMiB: 64 });
});
after(async () => {
  await teardownSite(p);
  await rm(dir, { recursive: true, force: true });
});

const define = (name: string, append: string): ReturnType<QemuProvider['define']> =>
  p.define({
    name,
    cpus: 1,
    memoryMiB: 192,
    disks: [{ path: join(dir, 'd0.qcow2'), format: 'qcow2' }],
    nics: [],
    boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append },
  });

test('a VM boots, writes, is discovered, shuts down gracefully, starts again, and powers off', { timeout: 120_000 }, async () => {
  await define('vm1', guestCmdline({ workload: 'records', rate: 50 }, guest.rdinit));
  assert.deepEqual((await p.discover()).map((m) => [m.name, m.state]), [['vm1', 'stopped']]);
  await assert.rejects(define('vm1', ''), (e: ReboundError) => e.code === 'machine-exists');

  const started = await p.start('vm1');
  assert.equal(started.state, 'running');
  await waitConsole(started.consoleLog!, /REBOUND seq=\d+ durable/, 60_000);
  const found = await p.discover();
  assert.equal(found.length, 1);
  assert.equal(found[0]!.state, 'running');
  assert.equal(found[0]!.pid, started.pid);
  await assert.rejects(p.start('vm1'), (e: ReboundError) => e.code === 'machine-running');

  // Graceful: the guest sees the ACPI power button, syncs, and powers off; QEMU exits.
  await p.shutdown('vm1', { timeoutMs: 30_000 });
  await waitConsole(started.consoleLog!, /REBOUND acpi power-button/, 1000);
  assert.equal((await p.state('vm1')).state, 'stopped');
  const seqAtShutdown = await lastDurable(started.consoleLog!);
  assert.ok(seqAtShutdown > 0);

  // Started again, the workload resumes after the records already on disk.
  const again = await p.start('vm1');
  assert.notEqual(again.pid, started.pid);
  await waitConsole(again.consoleLog!, new RegExp(`REBOUND seq=${seqAtShutdown + 5} durable`), 60_000);
});

test('a new Rebound process re-attaches to the running VM without disturbing it', { timeout: 120_000 }, async () => {
  const before = await p.state('vm1');
  assert.equal(before.state, 'running');
  const seq0 = await lastDurable(before.consoleLog!);
  // A separate Node process with a fresh provider: discover + state + tracking through QMP.
  const script = `
    import { QemuProvider } from ${JSON.stringify(join(import.meta.dirname, '../../src/providers/qemu/qemu-provider.ts'))};
    const p = new QemuProvider({ root: ${JSON.stringify(p.root)} });
    const vms = await p.discover();
    console.log(JSON.stringify({ vms: vms.map((v) => ({ name: v.name, state: v.state, pid: v.pid })), tracking: await p.trackingStatus('vm1') }));`;
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script]);
  const seen = JSON.parse(stdout) as { vms: { name: string; state: string; pid: number }[]; tracking: { state: string } };
  assert.deepEqual(seen.vms, [{ name: 'vm1', state: 'running', pid: before.pid }]);
  assert.equal(seen.tracking.state, 'off');
  // The guest never noticed: same QEMU, and its sequence keeps increasing.
  await waitConsole(before.consoleLog!, new RegExp(`REBOUND seq=${seq0 + 10} durable`), 30_000);
  assert.equal((await p.state('vm1')).pid, before.pid);
});

test('the QMP client reports QEMU errors with their class and delivers events', { timeout: 120_000 }, async () => {
  const q = await QmpClient.connect(p.paths('vm1').qmp);
  try {
    assert.equal(q.greeting.version.qemu.major >= 7, true);
    assert.equal((await q.execute('query-status')).status, 'running');
    await assert.rejects(q.execute('no-such-command'), (e: QmpError) => e instanceof QmpError && e.qmpClass === 'CommandNotFound' && e.code === 'qmp-command-failed');
    await assert.rejects(q.execute('block-dirty-bitmap-add', { node: 'nope', name: 'x' }), (e: QmpError) => /nope/.test(e.message));
    await assert.rejects(q.waitEvent('NEVER_SENT', () => true, 200), (e: ReboundError) => e.code === 'qmp-event-timeout');
    const stopped = q.waitEvent('STOP');
    await q.execute('stop');
    await stopped;
  } finally {
    await q.close();
  }
  assert.equal((await p.state('vm1')).state, 'paused');
  const q2 = await QmpClient.connect(p.paths('vm1').qmp);
  try {
    const events = q2.events();
    await q2.execute('cont');
    const first = await events.next();
    assert.equal(first.value?.event, 'RESUME');
    await events.return?.(undefined);
  } finally {
    await q2.close();
  }
  assert.equal((await p.state('vm1')).state, 'running');
});

test('power off stops the VM at once; the provider refuses tracking on a stopped VM', { timeout: 120_000 }, async () => {
  const pid = (await p.state('vm1')).pid!;
  const t0 = performance.now();
  await p.powerOff('vm1');
  assert.ok(performance.now() - t0 < 10_000);
  assert.equal(await processGone(pid), true);
  assert.equal((await p.state('vm1')).state, 'stopped');
  await assert.rejects(p.startTracking('vm1'), (e: ReboundError) => e.code === 'machine-not-running');
  await p.powerOff('vm1'); // idempotent
});

test('a guest that ignores the ACPI button makes shutdown fail with a clear timeout', { timeout: 120_000 }, async () => {
  // rebound.acpi=off: the kit's init leaves nobody listening to the power button.
  await define('deaf', guestCmdline({ workload: 'none', acpi: 'off' }));
  const info = await p.start('deaf');
  await waitConsole(info.consoleLog!, /REBOUND ready/, 60_000);
  await assert.rejects(p.shutdown('deaf', { timeoutMs: 1500 }), (e: ReboundError) => e.code === 'machine-shutdown-timeout' && /ACPI/.test(e.message));
  assert.equal((await p.state('deaf')).state, 'running');
  await p.powerOff('deaf');
});
