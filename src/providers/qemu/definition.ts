// A qemu site's VM definitions: one small JSON file per VM at ROOT/vms/NAME/vm.json, and the
// run directory beside it (QMP socket, console socket and log, pidfile, NBD socket, fleecing
// overlays). Validation here is what lets start() trust a definition written by hand.
import { mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { invalid, notFound, ReboundError } from '../../domain/errors.ts';
import type { MachineDefinition } from '../provider.ts';

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/i;
const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;
// sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH = 107;

export interface VmPaths {
  dir: string;
  file: string;
  run: string;
  qmp: string;
  console: string;
  serialLog: string;
  pidfile: string;
  nbd: string;
  /** The guest freeze agent's virtio-serial port (app-consistent points). */
  agent: string;
  tracking: string;
}

export function vmPaths(root: string, name: string): VmPaths {
  const dir = join(root, 'vms', name);
  const run = join(dir, 'run');
  return {
    dir,
    file: join(dir, 'vm.json'),
    run,
    qmp: join(run, 'qmp.sock'),
    console: join(run, 'console.sock'),
    serialLog: join(run, 'serial.log'),
    pidfile: join(run, 'qemu.pid'),
    nbd: join(run, 'nbd.sock'),
    agent: join(run, 'agent.sock'),
    tracking: join(dir, 'tracking.json'),
  };
}

/** Checks a definition and returns it with disk and kernel paths made absolute. */
export function validateDefinition(root: string, def: MachineDefinition): MachineDefinition {
  const bad = (what: string): never => {
    throw invalid('vm-definition-invalid', `The VM definition "${def.name ?? '?'}" is invalid: ${what}.`, {
      hint: `Fix ${vmPaths(root, String(def.name)).file} (see docs/providers.md for its fields).`,
    });
  };
  if (typeof def.name !== 'string' || !NAME_RE.test(def.name)) bad('name must be 1-63 letters, digits, dots, dashes or underscores');
  if (!Number.isInteger(def.cpus) || def.cpus < 1 || def.cpus > 64) bad('cpus must be an integer 1-64');
  if (!Number.isInteger(def.memoryMiB) || def.memoryMiB < 16) bad('memoryMiB must be an integer of at least 16');
  if (!Array.isArray(def.disks)) bad('disks must be a list');
  if (!Array.isArray(def.nics)) bad('nics must be a list');
  const dir = vmPaths(root, def.name).dir;
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(dir, p));
  const disks = def.disks.map((d, i) => {
    if (typeof d.path !== 'string' || d.path === '') bad(`disk ${i} has no path`);
    if (d.format !== 'qcow2' && d.format !== 'raw') bad(`disk ${i} format must be qcow2 or raw`);
    return { path: abs(d.path), format: d.format };
  });
  const nics = def.nics.map((n, i) => {
    if (!['production', 'isolated', 'none'].includes(n.network)) bad(`nic ${i} network must be production, isolated or none`);
    if (typeof n.mac !== 'string' || !MAC_RE.test(n.mac)) bad(`nic ${i} mac must look like 52:54:00:12:34:56`);
    return n.isolation === undefined ? { network: n.network, mac: n.mac.toLowerCase() } : { network: n.network, mac: n.mac.toLowerCase(), isolation: n.isolation };
  });
  const kinds = new Set(nics.filter((n) => n.network !== 'none').map((n) => `${n.network}/${n.isolation ?? ''}`));
  // A VM lives in one network namespace, so all its NICs join the same network.
  if (kinds.size > 1) bad('all NICs must join the same network (production, or one isolated network)');
  let boot = def.boot;
  if (!boot || (boot.kind !== 'kernel' && boot.kind !== 'disk')) bad('boot must be { kind: "kernel", kernel, initrd?, append? } or { kind: "disk", disk }');
  if (boot.kind === 'kernel') {
    if (typeof boot.kernel !== 'string') bad('boot.kernel must be a path');
    boot = { kind: 'kernel', kernel: abs(boot.kernel), ...(boot.initrd ? { initrd: abs(boot.initrd) } : {}), ...(boot.append ? { append: boot.append } : {}) };
  } else if (!Number.isInteger(boot.disk) || boot.disk < 0 || boot.disk >= disks.length) {
    bad('boot.disk must be the index of one of the disks');
  }
  const secrets = def.secrets === undefined ? undefined : def.secrets.map((x, i) => {
    if (typeof x?.id !== 'string' || !/^[a-z][a-z0-9-]{0,62}$/i.test(x.id)) bad(`secret ${i} id must be letters, digits and dashes`);
    if (typeof x.file !== 'string' || x.file === '') bad(`secret ${i} has no file`);
    return { id: x.id, file: abs(x.file) };
  });
  const paths = vmPaths(root, def.name);
  for (const p of [paths.qmp, paths.console, paths.nbd, paths.agent]) {
    if (Buffer.byteLength(p) > MAX_SOCKET_PATH) {
      throw invalid('vm-root-too-long', `The socket path ${p} is longer than the ${MAX_SOCKET_PATH} bytes a unix socket allows.`, {
        hint: 'Use a shorter site root directory or VM name.',
      });
    }
  }
  return { name: def.name, cpus: def.cpus, memoryMiB: def.memoryMiB, disks, nics, boot, ...(secrets && secrets.length > 0 ? { secrets } : {}) };
}

export async function readDefinition(root: string, name: string): Promise<MachineDefinition> {
  const file = vmPaths(root, name).file;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw notFound('machine-not-found', `There is no VM "${name}" at this site (no ${file}).`, { hint: 'List the site\'s machines with `rebound machine list`.' });
    }
    throw err;
  }
  let parsed: MachineDefinition;
  try {
    parsed = JSON.parse(text) as MachineDefinition;
  } catch (err) {
    throw new ReboundError('invalid', 'vm-definition-invalid', `${file} is not valid JSON: ${(err as Error).message}.`, { hint: 'Fix or remove the file.' });
  }
  if (parsed.name !== name) throw invalid('vm-definition-invalid', `${file} names the VM "${String(parsed.name)}", but its directory is "${name}".`, { hint: 'Make the name match the directory.' });
  return validateDefinition(root, parsed);
}

/** Writes the definition atomically (temp file + rename). */
export async function writeDefinition(root: string, def: MachineDefinition): Promise<void> {
  const p = vmPaths(root, def.name);
  await mkdir(p.run, { recursive: true });
  const tmp = `${p.file}.tmp-${process.pid}`;
  await writeFile(tmp, JSON.stringify(def, null, 2) + '\n');
  await rename(tmp, p.file);
}

export async function listDefinitionNames(root: string): Promise<string[]> {
  try {
    const entries = await readdir(join(root, 'vms'), { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
