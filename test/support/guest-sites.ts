// The common stage of the failover and replication tests: two qemu sites (dc1 primary, dc2
// recovery) under one temp dir, a TCG test guest at dc1 writing its workload to a 64 MiB data
// disk, a real `rebound serve` with the two sites paired under a policy.
import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import type { NicSpec } from '../../src/providers/provider.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { testGuest, waitConsole } from '../providers/support.ts';
import { api } from '../replication/support.ts';
import { startServerProcess } from './server.ts';
import type { ServerProcess } from './server.ts';

export interface GuestSites {
  dir: string;
  prim: QemuProvider;
  rec: QemuProvider;
  server: ServerProcess;
  /** The guest's serial log at dc1. */
  consoleLog: string;
}

export interface GuestSitesOptions {
  /** Temp dir prefix, e.g. 'rb-fo-'. */
  prefix: string;
  vm: string;
  workload: 'records' | 'fs';
  /** Kernel command line parameters of the workload (rate, files, size…). */
  params: Record<string, string | number>;
  nics?: NicSpec[];
  /** The body of POST /policies (named 'p'). */
  policy: Record<string, unknown>;
}

export async function startGuestSites(o: GuestSitesOptions): Promise<GuestSites> {
  const dir = await mkdtemp(join(tmpdir(), o.prefix));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
  const guest = await testGuest(dir);
  const prim = new QemuProvider({ root: join(dir, 'a') });
  const rec = new QemuProvider({ root: join(dir, 'b') });
  const disk = join(dir, 'a', o.workload === 'fs' ? 'fs.qcow2' : 'rec.qcow2');
  await makeDataDisk(disk, { sizeMiB: 64, ...(o.workload === 'fs' ? { fs: 'ext4' as const } : {}) });
  await prim.define({
    name: o.vm, cpus: 1, memoryMiB: 192, nics: o.nics ?? [],
    disks: [{ path: disk, format: 'qcow2' }],
    boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append: guestCmdline({ workload: o.workload, disk: '/dev/vda', ...o.params }) },
  });
  const info = await prim.start(o.vm);
  await waitConsole(info.consoleLog!, o.workload === 'fs' ? /REBOUND file=\d+ gen=\d+ durable/ : /REBOUND seq=\d+ durable/, 90_000);
  const server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  await api(server, 'POST', '/sites', { name: 'dc1', provider: 'qemu', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dc2', provider: 'qemu', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'p', ...o.policy });
  await api(server, 'POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'p' });
  return { dir, prim, rec, server, consoleLog: info.consoleLog! };
}
