// Chooses KVM or TCG. /dev/kvm existing proves little (on these machines it is a nested "PVM"
// hypervisor that cannot run stock kernels), so the probe boots the VM's own kernel under KVM
// with no root filesystem: a working KVM reaches the kernel's "VFS: Unable to mount root" panic
// within seconds; a broken one reports an internal error or hangs. The answer is cached per
// QEMU binary and kernel, in memory and in a small file, so the probe runs once.
// REBOUND_ACCEL=kvm|tcg overrides it.
import { spawn } from 'node:child_process';
import { access, constants, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
  const st = await stat(kernel);
  const key = `${kernel}|${st.size}|${st.mtimeMs}`;
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
