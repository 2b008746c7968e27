// Where the guest kit lives and how to get it: builds it with scripts/guest/build (cached, so
// cheap when up to date) and makes the data disks the workloads expect (raw or qcow2, optionally
// ext4-formatted host-side for the fs workload).
import { execFile } from 'node:child_process';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ReboundError } from '../domain/errors.ts';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface GuestKit {
  kernel: string;
  initrd: string;
  manifest: { kernelVersion: string; kernelPackage: string; builtAt: string; modules: string[] };
}

/** Builds the kit if needed and returns its paths. */
export async function ensureGuestKit(): Promise<GuestKit> {
  try {
    await run(join(ROOT, 'scripts/guest/build'), [], { maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new ReboundError('unavailable', 'guest-kit-build-failed', `Building the guest kit failed: ${e.stderr?.trim() ?? String(err)}`, {
      hint: 'Run scripts/guest/build by hand; it needs apt-get (after apt-get update), gcc and libc6-dev.',
      cause: err,
    });
  }
  const dir = join(ROOT, 'var/guest');
  const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as GuestKit['manifest'];
  return { kernel: join(dir, 'vmlinux'), initrd: join(dir, 'initrd.img'), manifest };
}

/** The kernel command line for a workload, e.g. { workload: 'records', rate: 200 }. */
export function guestCmdline(params: Record<string, string | number>, extra = ''): string {
  const p = Object.entries(params).map(([k, v]) => `rebound.${k}=${v}`);
  return ['console=ttyS0', 'quiet', 'panic=-1', ...p, extra].filter((x) => x !== '').join(' ');
}

export interface DataDiskOptions {
  sizeMiB: number;
  format?: 'raw' | 'qcow2';
  /** Format ext4 host-side (for the fs workload). */
  fs?: 'ext4';
}

/** Creates a data disk image at path (replacing any file there). */
export async function makeDataDisk(path: string, opts: DataDiskOptions): Promise<void> {
  const format = opts.format ?? 'qcow2';
  await rm(path, { force: true });
  if (!opts.fs) {
    await run('qemu-img', ['create', '-q', '-f', format, path, `${opts.sizeMiB}M`]);
    return;
  }
  const raw = format === 'raw' ? path : `${path}.raw-tmp`;
  try {
    await writeFile(raw, '');
    await truncate(raw, opts.sizeMiB * 1024 * 1024);
    // Small journal and no lazy init: the guest's first writes stay the workload's own.
    await run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-J', 'size=4', raw]);
    if (format === 'qcow2') await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, path]);
  } finally {
    if (raw !== path) await rm(raw, { force: true });
  }
}
