// Chooses KVM or TCG. /dev/kvm existing proves little (on these machines it is a nested "PVM"
// hypervisor that cannot run stock kernels), so the probe boots the VM's own kernel under KVM
// with no root filesystem: a working KVM reaches the kernel's "VFS: Unable to mount root" panic
// within seconds; a broken one reports an internal error or hangs. The answer is cached per
// QEMU binary and kernel, in memory and in a small file, so the probe runs once.
// REBOUND_ACCEL=kvm|tcg overrides it.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, constants, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

export type Accel = 'kvm' | 'tcg';

export interface AccelProbe {
  accel: Accel;
  reason: string;
  probedMs: number;
}

const memo = new Map<string, Promise<AccelProbe>>();
const cacheFile = join(tmpdir(), `rebound-accel-${process.getuid?.() ?? 0}.json`);

export async function chooseAccel(kernel: string | undefined, opts: { timeoutMs?: number } = {}): Promise<AccelProbe> {
  const forced = process.env['REBOUND_ACCEL'];
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, reason: 'REBOUND_ACCEL', probedMs: 0 };
  try {
    await access('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { accel: 'tcg', reason: '/dev/kvm is not usable', probedMs: 0 };
  }
  if (!kernel) return { accel: 'tcg', reason: 'no kernel to probe KVM with (disk boot)', probedMs: 0 };
  const key = await kernelKey(kernel);
  let p = memo.get(key);
  if (!p) {
    p = (async () => {
      const cached = await readCache();
      const hit = cached[key];
      if (hit) return hit;
      const result = await probeKvm(kernel, opts.timeoutMs ?? 10_000);
      await writeCache({ ...(await readCache()), [key]: result });
      return result;
    })();
    memo.set(key, p);
  }
  return p;
}

/** Identifies a kernel by content (size + digest of its head and tail), not by mtime: build
 * scripts rewrite identical kernels, and the answer only depends on the kernel and this host. */
async function kernelKey(kernel: string): Promise<string> {
  const fh = await open(kernel, 'r');
  try {
    const { size } = await fh.stat();
    const n = Math.min(size, 65536);
    const head = Buffer.alloc(n);
    const tail = Buffer.alloc(n);
    await fh.read(head, 0, n, 0);
    await fh.read(tail, 0, n, size - n);
    const h = createHash('sha256').update(head).update(tail).digest('hex').slice(0, 16);
    return `${size}:${h}:${(await execQemuVersion()).trim()}`;
  } finally {
    await fh.close();
  }
}

let qemuVersion: Promise<string> | undefined;
function execQemuVersion(): Promise<string> {
  qemuVersion ??= promisify(execFile)('qemu-system-x86_64', ['--version']).then((r) => r.stdout.split('\n')[0] ?? '', () => 'unknown');
  return qemuVersion;
}

async function probeKvm(kernel: string, timeoutMs: number): Promise<AccelProbe> {
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', [
    '-accel', 'kvm', '-m', '128', '-display', 'none', '-nodefaults', '-no-user-config', '-no-reboot',
    '-serial', 'stdio', '-kernel', kernel, '-append', 'console=ttyS0 panic=-1 root=/dev/nonexistent',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const reached = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    const check = (): void => {
      if (/Kernel panic|Unable to mount root/.test(out)) {
        clearTimeout(timer);
        resolve(true);
      }
    };
    child.stdout.on('data', check);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(/Kernel panic|Unable to mount root/.test(out));
    });
  });
  child.kill('SIGKILL');
  const probedMs = Math.round(performance.now() - t0);
  if (reached) return { accel: 'kvm', reason: 'a kernel booted to its root-mount panic under KVM', probedMs };
  const why = /KVM internal error|emulation failure|Assertion.*failed/.exec(out)?.[0] ??
    (child.exitCode === null ? `the kernel printed nothing within ${timeoutMs} ms` : (out.trim().split('\n').pop() ?? 'no output'));
  return { accel: 'tcg', reason: `KVM probe failed (${why.slice(0, 120)})`, probedMs };
}

async function readCache(): Promise<Record<string, AccelProbe>> {
  try {
    return JSON.parse(await readFile(cacheFile, 'utf8')) as Record<string, AccelProbe>;
  } catch {
    return {};
  }
}

async function writeCache(data: Record<string, AccelProbe>): Promise<void> {
  await mkdir(tmpdir(), { recursive: true });
  await writeFile(cacheFile, JSON.stringify(data));
}
