// A physical site's machine definitions: one JSON file per machine at
// ROOT/.rebound/physical/NAME/machine.json naming its disks (raw image files under ROOT, or /dev
// block devices) and optional hook commands. Validation here is what lets the provider trust a
// definition written by hand: every disk path must stay under the site root (no '..', no
// symlink leading out of it) or be a block device named under /dev, since the agent reads and
// ships whatever the file names.
import { mkdir, open, readFile, readdir, realpath, stat } from 'node:fs/promises';
import { isInside } from '../../domain/paths.ts';
import { isAbsolute, join, resolve } from 'node:path';
import { invalid, notFound, ReboundError } from '../../domain/errors.ts';
import { writeFileAtomic } from '../../replica/durable.ts';
import type { MachineDefinition } from '../provider.ts';

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/i;
const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;
const HOOK_NAMES = ['start', 'stop', 'freeze', 'thaw', 'status'] as const;

export type HookName = (typeof HOOK_NAMES)[number];

/** Shell commands (run with `sh -c`) that give a physical machine power control and
 * consistency; each is optional. */
export type PhysicalHooks = Partial<Record<HookName, string>>;

/** A machine definition as a physical site stores it: the common fields plus hooks. */
export interface PhysicalDefinition extends MachineDefinition {
  hooks?: PhysicalHooks;
}

export interface PhysicalPaths {
  dir: string;
  file: string;
}

export function definitionsDir(root: string): string {
  return join(root, '.rebound', 'physical');
}

export function machinePaths(root: string, name: string): PhysicalPaths {
  const dir = join(definitionsDir(root), name);
  return { dir, file: join(dir, 'machine.json') };
}

/** A definition for a machine known only by its disks (cpus, memory and boot are what a qemu
 * recovery site uses when it boots the machine as a VM). */
export function physicalMachine(name: string, disks: string[], hooks?: PhysicalHooks): PhysicalDefinition {
  return {
    name,
    cpus: 1,
    memoryMiB: 1024,
    disks: disks.map((path) => ({ path, format: 'raw' })),
    nics: [],
    boot: { kind: 'disk', disk: 0 },
    ...(hooks ? { hooks } : {}),
  };
}

const badDefinition = (root: string, name: unknown, what: string): ReboundError =>
  invalid('machine-definition-invalid', `The physical machine definition "${String(name ?? '?')}" is invalid: ${what}.`, {
    hint: `Fix ${machinePaths(root, String(name)).file} (see docs/providers.md, "The physical provider").`,
  });

/** Checks the shape of a definition and returns it with disk paths made absolute (relative
 * paths are relative to the site root). Paths are checked lexically here; `checkDiskPaths`
 * resolves symlinks. */
export function validateDefinition(root: string, def: PhysicalDefinition): PhysicalDefinition {
  const bad = (what: string): never => {
    throw badDefinition(root, def?.name, what);
  };
  if (typeof def !== 'object' || def === null) bad('it is not an object');
  if (typeof def.name !== 'string' || !NAME_RE.test(def.name)) bad('name must be 1-63 letters, digits, dots, dashes or underscores');
  const cpus = def.cpus ?? 1;
  const memoryMiB = def.memoryMiB ?? 1024;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) bad('cpus must be an integer 1-64');
  if (!Number.isInteger(memoryMiB) || memoryMiB < 16) bad('memoryMiB must be an integer of at least 16');
  if (!Array.isArray(def.disks) || def.disks.length === 0) bad('disks must be a non-empty list');
  const disks = def.disks.map((d, i) => {
    if (typeof d?.path !== 'string' || d.path === '' || d.path.includes('\0')) bad(`disk ${i} has no path`);
    if (d.format === 'qcow2') {
      throw invalid('physical-disk-format', `Disk ${i} of physical machine "${def.name}" (${d.path}) is a qcow2 image; the physical provider reads raw images and block devices only.`, {
        hint: `Convert it with \`qemu-img convert -O raw ${d.path} IMAGE.raw\`, or run the machine at a qemu site, whose provider tracks qcow2 disks itself.`,
      });
    }
    if (d.format !== 'raw') bad(`disk ${i} format must be raw`);
    const path = isAbsolute(d.path) ? resolve(d.path) : resolve(root, d.path);
    if (d.path.split('/').includes('..')) bad(`disk ${i} path ${d.path} contains '..'; give the path without it`);
    if (!path.startsWith('/dev/') && !isInside(resolve(root), path)) bad(`disk ${i} path ${d.path} is outside the site root ${root}; put the image under the root or name a /dev block device`);
    return { path, format: 'raw' as const };
  });
  const nics = (def.nics ?? []).map((n, i) => {
    if (!['production', 'isolated', 'none'].includes(n?.network)) bad(`nic ${i} network must be production, isolated or none`);
    if (typeof n.mac !== 'string' || !MAC_RE.test(n.mac)) bad(`nic ${i} mac must look like 52:54:00:12:34:56`);
    return { ...n, mac: n.mac.toLowerCase() };
  });
  const boot = def.boot ?? { kind: 'disk', disk: 0 };
  if (boot.kind !== 'kernel' && boot.kind !== 'disk') bad('boot must be { kind: "kernel", … } or { kind: "disk", disk }');
  if (boot.kind === 'disk' && (!Number.isInteger(boot.disk) || boot.disk < 0 || boot.disk >= disks.length)) bad('boot.disk must be the index of one of the disks');
  let hooks: PhysicalHooks | undefined;
  if (def.hooks !== undefined) {
    if (typeof def.hooks !== 'object' || def.hooks === null || Array.isArray(def.hooks)) bad('hooks must be an object of shell commands');
    hooks = {};
    for (const [k, v] of Object.entries(def.hooks)) {
      if (!(HOOK_NAMES as readonly string[]).includes(k)) bad(`hooks.${k} is not a hook (known: ${HOOK_NAMES.join(', ')})`);
      if (typeof v !== 'string' || v.trim() === '') bad(`hooks.${k} must be a non-empty shell command`);
      hooks[k as HookName] = v;
    }
  }
  return { name: def.name, cpus, memoryMiB, disks, nics, boot, ...(hooks ? { hooks } : {}) };
}


/** Resolves symlinks: each disk must exist and be a regular file under the root's real path, or
 * a block device named under /dev. A symlink under the root that leads elsewhere is refused. */
export async function checkDiskPaths(root: string, def: PhysicalDefinition): Promise<void> {
  let rootReal: string;
  try {
    rootReal = await realpath(root);
  } catch {
    throw new ReboundError('unavailable', 'site-root-missing', `The physical site's root ${root} does not exist.`, { hint: 'Create the directory or fix the site\'s --root.' });
  }
  for (const [i, d] of def.disks.entries()) {
    let real: string;
    try {
      real = await realpath(d.path);
    } catch {
      throw notFound('physical-disk-missing', `Disk ${i} of physical machine "${def.name}" (${d.path}) does not exist.`, { hint: 'Create the image or attach the device, or fix the machine definition.' });
    }
    const st = await stat(real);
    if (st.isBlockDevice()) {
      if (!d.path.startsWith('/dev/')) throw badDefinition(root, def.name, `disk ${i} (${d.path}) is a block device not named under /dev; name it by its /dev path`);
      continue;
    }
    if (!isInside(rootReal, real)) throw badDefinition(root, def.name, `disk ${i} (${d.path}) resolves to ${real}, outside the site root ${root}; put the image under the root`);
    if (!st.isFile()) throw badDefinition(root, def.name, `disk ${i} (${d.path}) is neither a regular file nor a block device`);
  }
}

/** Refuses a file declared raw that is a qcow2 image: shipping its container bytes would give
 * a replica no machine can boot from. */
export async function checkNotQcow2(def: PhysicalDefinition): Promise<void> {
  for (const [i, d] of def.disks.entries()) {
    const fh = await open(d.path, 'r');
    try {
      const head = Buffer.alloc(4);
      await fh.read(head, 0, 4, 0);
      if (head.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]))) {
        throw invalid('physical-disk-format', `Disk ${i} of physical machine "${def.name}" (${d.path}) is a qcow2 image, not raw; the physical provider reads raw images and block devices only.`, {
          hint: `Convert it with \`qemu-img convert -O raw ${d.path} IMAGE.raw\` and name the raw image.`,
        });
      }
    } finally {
      await fh.close();
    }
  }
}

export async function readDefinition(root: string, name: string): Promise<PhysicalDefinition> {
  if (!NAME_RE.test(name)) throw notFound('machine-not-found', `There is no physical machine "${name}" at this site.`, { hint: 'List the site\'s machines with `rebound machine list`.' });
  const file = machinePaths(root, name).file;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw notFound('machine-not-found', `There is no physical machine "${name}" at this site (no ${file}).`, { hint: 'List the site\'s machines with `rebound machine list`.' });
    }
    throw err;
  }
  let parsed: PhysicalDefinition;
  try {
    parsed = JSON.parse(text) as PhysicalDefinition;
  } catch (err) {
    throw invalid('machine-definition-invalid', `${file} is not valid JSON: ${(err as Error).message}.`, { hint: 'Fix or remove the file.' });
  }
  if (parsed?.name !== name) throw invalid('machine-definition-invalid', `${file} names the machine "${String(parsed?.name)}", but its directory is "${name}".`, { hint: 'Make the name match the directory.' });
  return validateDefinition(root, parsed);
}

export async function writeDefinition(root: string, def: PhysicalDefinition): Promise<void> {
  const p = machinePaths(root, def.name);
  await mkdir(p.dir, { recursive: true });
  await writeFileAtomic(p.file, JSON.stringify(def, null, 2) + '\n');
}

export async function listDefinitionNames(root: string): Promise<string[]> {
  try {
    const entries = await readdir(definitionsDir(root), { withFileTypes: true });
    return entries.filter((e) => e.isDirectory() && NAME_RE.test(e.name)).map((e) => e.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}
