// The qemu-system-x86_64 command line for a VM definition. Disks are `-blockdev` nodes with
// names Rebound controls (`diskN` for the format node, `diskN-file` below it) because dirty
// bitmaps, fleecing and NBD exports address nodes by name; `-drive` shortcuts would not do.
// QEMU daemonizes (the VM does not depend on a Rebound process staying up) and keeps QMP, the
// console (a socket, mirrored to serial.log) and its pidfile in the VM's run directory.
import type { MachineDefinition } from '../provider.ts';
import type { Accel } from './accel.ts';
import type { VmPaths } from './definition.ts';
import { nicArgs } from './network.ts';
import type { SiteNetwork } from './network.ts';

// QEMU's option syntax doubles a comma inside a value.
const esc = (p: string): string => p.replaceAll(',', ',,');

export const diskNode = (i: number): string => `disk${i}`;

export function qemuArgs(def: MachineDefinition, paths: VmPaths, accel: Accel, net: SiteNetwork | undefined, opts: { paused?: boolean } = {}): string[] {
  const args = [
    '-name', `${def.name},process=rb-${def.name.slice(0, 12)}`,
    '-accel', accel,
    '-machine', 'q35',
    '-m', String(def.memoryMiB),
    '-smp', String(def.cpus),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-daemonize', '-pidfile', paths.pidfile,
    '-chardev', `socket,id=qmp,path=${esc(paths.qmp)},server=on,wait=off`,
    '-mon', 'chardev=qmp,mode=control',
    '-chardev', `socket,id=console,path=${esc(paths.console)},server=on,wait=off,logfile=${esc(paths.serialLog)},logappend=on`,
    '-serial', 'chardev:console',
  ];
  // The guest freeze agent's port (app-consistent points): a virtio-serial port named
  // org.rebound.agent on a socket in the run directory. A guest without the agent ignores it.
  args.push(
    '-device', 'virtio-serial-pci,id=vser0',
    '-chardev', `socket,id=agent,path=${esc(paths.agent)},server=on,wait=off`,
    '-device', 'virtserialport,bus=vser0.0,chardev=agent,name=org.rebound.agent',
  );
  // CPUs stopped: the disks are open (points can be taken) but the guest does not run.
  if (opts.paused) args.push('-S');
  // Secrets before the disks: an encrypted backing chain names them by id.
  for (const s of def.secrets ?? []) args.push('-object', `secret,id=${s.id},file=${esc(s.file)},format=raw`);
  def.disks.forEach((d, i) => {
    const file = { driver: 'file', 'node-name': `${diskNode(i)}-file`, filename: d.path, aio: 'threads', cache: { direct: true, 'no-flush': false } };
    args.push('-blockdev', JSON.stringify({ driver: d.format, 'node-name': diskNode(i), file, cache: { direct: true, 'no-flush': false } }));
    const boot = def.boot.kind === 'disk' && def.boot.disk === i ? ',bootindex=0' : '';
    args.push('-device', `virtio-blk-pci,drive=${diskNode(i)},id=vd${i},serial=rebound-${i}${boot}`);
  });
  def.nics.forEach((n, i) => {
    if (n.network !== 'none' && net) args.push(...nicArgs(net, i, n.mac));
  });
  if (def.boot.kind === 'kernel') {
    args.push('-kernel', def.boot.kernel);
    if (def.boot.initrd) args.push('-initrd', def.boot.initrd);
    if (def.boot.append) args.push('-append', def.boot.append);
  }
  return args;
}
