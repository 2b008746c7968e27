// Network isolation of a test failover, shown from inside real guests under TCG. Production VMs
// share the site's production network; a test-failover replica (same MAC, same IP as its source,
// as after a real failover) joins an isolated network and cannot reach production, while a
// second machine on the same isolated network (a recovery plan's drill) can reach it.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestCmdline } from '../../src/guest/kit.ts';
import type { MachineDefinition } from '../../src/providers/provider.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { consoleRun, teardownSite, testGuest, waitConsole } from './support.ts';
import type { TestGuest } from './support.ts';

let dir: string;
let guest: TestGuest;
let p: QemuProvider;
let n = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-qnet-'));
  guest = await testGuest(dir);
  p = new QemuProvider({ root: join(dir, 'site') });
});
after(async () => {
  await teardownSite(p, ['drill-1']);
  await rm(dir, { recursive: true, force: true });
});

const vm = (name: string, ip: string, mac: string): MachineDefinition => ({
  name, cpus: 1, memoryMiB: 128, disks: [],
  nics: [{ network: 'production', mac }],
  boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append: guestCmdline({ workload: 'none', ip }) },
});

async function boot(name: string): Promise<void> {
  const info = await p.start(name);
  await waitConsole(info.consoleLog!, /REBOUND ready workload=none/, 60_000);
  await waitConsole(info.consoleLog!, /\/ # /, 10_000); // the console shell
}

/** Pings from inside the guest; returns ping's exit code (0 = got replies). */
async function ping(from: string, ip: string): Promise<number> {
  const tag = `RB-PING-${++n}`;
  const paths = p.paths(from);
  const m = await consoleRun(paths.console, paths.serialLog, `ping -c 2 -W 2 ${ip} >/dev/null 2>&1; echo ${tag} rc=$?`, new RegExp(`${tag} rc=(\\d+)`), 30_000);
  return Number(m[1]);
}

const netns = async (name: string): Promise<string> => readlink(`/proc/${(await p.state(name)).pid}/ns/net`);

test('production VMs reach each other; a test-failover replica on an isolated network reaches only its own network', { timeout: 240_000 }, async () => {
  const a = vm('app', '10.9.0.1/24', '52:54:00:00:09:01');
  const b = vm('db', '10.9.0.2/24', '52:54:00:00:09:02');
  await p.define(a);
  await p.define(b);
  await Promise.all([boot('app'), boot('db')]);
  assert.equal(await ping('app', '10.9.0.2'), 0, 'production VMs share the production network');
  assert.equal(await netns('app'), await netns('db'));

  // The drill: db's replica comes up isolated with db's own MAC and IP; db itself goes away
  // so that an answer from 10.9.0.2 on production could only come from the replica.
  await p.powerOff('db');
  await p.createReplica({ name: 'db-test', disks: [], template: b, network: 'isolated', isolation: 'drill-1' });
  await boot('db-test');
  assert.notEqual(await netns('db-test'), await netns('app'), 'the replica runs in another network namespace');
  assert.notEqual(await ping('app', '10.9.0.2'), 0, 'production cannot reach the isolated replica');
  assert.notEqual(await ping('db-test', '10.9.0.1'), 0, 'the isolated replica cannot reach production');

  // A second machine of the same drill (app's replica, app's IP) shares the isolated network.
  await p.createReplica({ name: 'app-test', disks: [], template: a, network: 'isolated', isolation: 'drill-1' });
  await boot('app-test');
  assert.equal(await ping('db-test', '10.9.0.1'), 0, 'machines of one drill reach each other');
  assert.equal(await netns('db-test'), await netns('app-test'));
  assert.deepEqual((await p.state('app-test')).definition.nics, [{ network: 'isolated', mac: '52:54:00:00:09:01', isolation: 'drill-1' }]);
});
