// Finding a VM's QEMU process again: the pidfile QEMU writes, checked against /proc so a reused
// pid (or another VM's QEMU) is never mistaken for this VM — the process must be a
// qemu-system-* whose command line names this VM's QMP socket. This is what lets a restarted
// Rebound re-attach to running VMs without disturbing them.
import { readFile, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import type { VmPaths } from './definition.ts';

/** The live QEMU pid of this VM, or undefined (a stale pidfile is removed). */
export async function findQemu(paths: VmPaths): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(paths.pidfile, 'utf8')).trim(), 10);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  if (await isQemuFor(pid, paths)) return pid;
  await rm(paths.pidfile, { force: true });
  return undefined;
}

export async function isQemuFor(pid: number, paths: VmPaths): Promise<boolean> {
  let argv: string[];
  try {
    argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  } catch {
    return false;
  }
  if (!basename(argv[0] ?? '').startsWith('qemu-system-')) return false;
  return argv.some((a) => a.includes(`path=${paths.qmp.replaceAll(",", ",,")},`));
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until the process is gone (it is not our child, so poll). With `paths`, a pid that no
 * longer is this VM's QEMU counts as gone: on a busy host an exited QEMU's pid can be reused at
 * once by an unrelated process, which must never be taken for it (and killed). */
export async function waitGone(pid: number, timeoutMs: number, signal?: AbortSignal, paths?: VmPaths): Promise<boolean> {
  const gone = async (): Promise<boolean> => !alive(pid) || (await isZombie(pid)) || (paths !== undefined && !(await isQemuFor(pid, paths)));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await gone()) return true;
    if (signal?.aborted) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return gone();
}

/** True when the process has exited (a zombie waiting for a reaper counts as exited). */
export async function processGone(pid: number): Promise<boolean> {
  return !alive(pid) || (await isZombie(pid));
}

async function isZombie(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}
