// The pure parts of the qemu provider: definition validation (what start() may trust), the
// QEMU command line (node names, sockets, NICs), and network naming (production and each
// isolated network apart; stable for a site).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ReboundError } from '../../src/domain/errors.ts';
import type { MachineDefinition } from '../../src/providers/provider.ts';
import { qemuArgs } from '../../src/providers/qemu/command-line.ts';
import { validateDefinition, vmPaths } from '../../src/providers/qemu/definition.ts';
import { networkOf } from '../../src/providers/qemu/network.ts';

const root = '/srv/site';
const good: MachineDefinition = {
  name: 'db', cpus: 2, memoryMiB: 512,
  disks: [{ path: 'db.qcow2', format: 'qcow2' }, { path: '/img/logs.raw', format: 'raw' }],
  nics: [{ network: 'production', mac: '52:54:00:AB:00:01' }],
  boot: { kind: 'kernel', kernel: 'vmlinux', append: 'console=ttyS0' },
};

test('a valid definition comes back with absolute paths and lower-case MACs', () => {
  const v = validateDefinition(root, good);
  assert.deepEqual(v.disks.map((d) => d.path), ['/srv/site/vms/db/db.qcow2', '/img/logs.raw']);
  assert.equal(v.nics[0]!.mac, '52:54:00:ab:00:01');
  assert.deepEqual(v.boot, { kind: 'kernel', kernel: '/srv/site/vms/db/vmlinux', append: 'console=ttyS0' });
});

test('invalid definitions are refused with a sentence naming the field', () => {
  const cases: [Partial<MachineDefinition> & Record<string, unknown>, RegExp][] = [
    [{ name: '../x' }, /name/],
    [{ cpus: 0 }, /cpus/],
    [{ memoryMiB: 1.5 }, /memoryMiB/],
    [{ disks: [{ path: 'a', format: 'vmdk' as 'raw' }] }, /format/],
    [{ nics: [{ network: 'lan' as 'production', mac: '52:54:00:00:00:01' }] }, /network/],
    [{ nics: [{ network: 'production', mac: 'nope' }] }, /mac/],
    [{ nics: [{ network: 'production', mac: '52:54:00:00:00:01' }, { network: 'isolated', mac: '52:54:00:00:00:02' }] }, /same network/],
    [{ boot: { kind: 'disk', disk: 5 } }, /boot.disk/],
  ];
  for (const [patch, re] of cases) {
    assert.throws(() => validateDefinition(root, { ...good, ...patch } as MachineDefinition), (e: ReboundError) => e.code === 'vm-definition-invalid' && re.test(e.message), JSON.stringify(patch));
  }
  assert.throws(() => validateDefinition(`/${'r'.repeat(100)}`, good), (e: ReboundError) => e.code === 'vm-root-too-long');
});

test('the command line uses named -blockdev nodes, run-directory sockets and the network\'s group', () => {
  const def = validateDefinition(root, { ...good, boot: { kind: 'disk', disk: 0 } });
  const net = networkOf(root, 'production');
  const args = qemuArgs(def, vmPaths(root, 'db'), 'tcg', net);
  const blockdevs = args.flatMap((a, i) => (args[i - 1] === '-blockdev' ? [JSON.parse(a) as { driver: string; 'node-name': string; file: { filename: string } }] : []));
  assert.deepEqual(blockdevs.map((b) => [b.driver, b['node-name'], b.file.filename]), [['qcow2', 'disk0', '/srv/site/vms/db/db.qcow2'], ['raw', 'disk1', '/img/logs.raw']]);
  assert.ok(args.includes('virtio-blk-pci,drive=disk0,id=vd0,serial=rebound-0,bootindex=0'));
  assert.ok(args.includes(`socket,id=qmp,path=${root}/vms/db/run/qmp.sock,server=on,wait=off`));
  assert.ok(args.includes(`socket,id=net0,mcast=${net.group}:${net.port},localaddr=127.0.0.1`));
  assert.ok(args.includes('virtio-net-pci,netdev=net0,mac=52:54:00:ab:00:01'));
  assert.ok(args.includes('-daemonize') && !args.includes('-drive'));
});

test('each isolated network gets its own namespace and group, apart from production and stable per site', () => {
  const prod = networkOf(root, 'production');
  const a = networkOf(root, 'isolated', 'drill-1');
  const b = networkOf(root, 'isolated', 'drill-2');
  assert.deepEqual(networkOf(root, 'isolated', 'drill-1'), a);
  const all = [prod, a, b];
  assert.equal(new Set(all.map((n) => n.namespace)).size, 3);
  assert.equal(new Set(all.map((n) => `${n.group}:${n.port}`)).size, 3);
  for (const n of all) assert.match(n.group, /^239\.\d+\.\d+\.\d+$/);
  assert.notEqual(networkOf('/other/site', 'production').namespace, prod.namespace);
});
