// Test helpers for the qemu provider: the guest kit plus an ACPI overlay (the kit's init does
// not yet handle the power button, so graceful shutdown needs busybox acpid with the button and
// evdev modules; the overlay is a second cpio archive appended to the kit's initramfs, which the
// kernel unpacks over the first), console helpers, and site teardown.
import { execFile } from 'node:child_process';
import { appendFile, chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import { ensureGuestKit } from '../../src/guest/kit.ts';
import type { GuestKit } from '../../src/guest/kit.ts';
import type { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';

const run = promisify(execFile);

export interface TestGuest {
  kit: GuestKit;
  kernel: string;
  /** The kit's initramfs with the ACPI overlay appended. */
  initrd: string;
  /** Kernel arguments that run the overlay's init (which then runs the kit's /init). */
  rdinit: string;
}

const OVERLAY_INIT = `#!/bin/sh
# Rebound test overlay: load the ACPI button and evdev modules and run busybox acpid, which
# powers the guest off on the ACPI power button; then hand over to the kit's /init as PID 1.
export PATH=/bin:/sbin
insmod /lib/modules/rb-overlay/button.ko 2>/dev/null
insmod /lib/modules/rb-overlay/evdev.ko 2>/dev/null
(
  mount -t devtmpfs devtmpfs /dev 2>/dev/null
  n=0; while [ ! -e /dev/input/event0 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
  busybox acpid -c /etc/acpi -l /dev/null
) &
exec /init
`;

const POWER_BUTTON = `#!/bin/sh
echo "REBOUND acpi power-button" > /dev/console
sync
poweroff -f
`;

/** Builds (once per directory) the overlay initramfs. */
export async function testGuest(dir: string): Promise<TestGuest> {
  const kit = await ensureGuestKit();
  const work = join(dir, 'overlay');
  await mkdir(join(work, 'root/lib/modules/rb-overlay'), { recursive: true });
  await mkdir(join(work, 'root/etc/acpi/PWRF'), { recursive: true });
  const cache = join(kit.kernel, '../cache');
  const deb = (await readdir(cache)).find((f) => f.startsWith(`linux-image-${kit.manifest.kernelVersion}`) && f.endsWith('.deb'));
  if (!deb) throw new Error(`no kernel package in ${cache}`);
  const mod = `./lib/modules/${kit.manifest.kernelVersion}/kernel/drivers`;
  await run('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3/acpi/button.ko" "$3/input/evdev.ko"`, 'sh', join(cache, deb), work, mod]);
  await copyFile(join(work, mod, 'acpi/button.ko'), join(work, 'root/lib/modules/rb-overlay/button.ko'));
  await copyFile(join(work, mod, 'input/evdev.ko'), join(work, 'root/lib/modules/rb-overlay/evdev.ko'));
  await writeFile(join(work, 'root/rb-overlay-init'), OVERLAY_INIT);
  await chmod(join(work, 'root/rb-overlay-init'), 0o755);
  await writeFile(join(work, 'root/etc/acpi/PWRF/00000080'), POWER_BUTTON);
  await chmod(join(work, 'root/etc/acpi/PWRF/00000080'), 0o755);
  // The kit's busybox writes the archive (there is no system cpio); extract it from the package.
  const bb = join(work, 'busybox');
  const bbDeb = (await readdir(cache)).find((f) => f.startsWith('busybox-static'));
  if (!bbDeb) throw new Error(`no busybox package in ${cache}`);
  await run('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -xO ./bin/busybox > "$2" && chmod +x "$2"`, 'sh', join(cache, bbDeb), bb]);
  const { stdout } = await run('sh', ['-c', 'cd "$1" && find . -mindepth 1 | "$2" cpio -o -H newc 2>/dev/null', 'sh', join(work, 'root'), bb], {
    encoding: 'buffer',
    maxBuffer: 64 << 20,
  });
  const initrd = join(dir, 'initrd-acpi.img');
  await copyFile(kit.initrd, initrd);
  // newc archives must start on a 4-byte boundary; the kit's image already ends on one.
  await appendFile(initrd, stdout);
  return { kit, kernel: kit.kernel, initrd, rdinit: 'rdinit=/rb-overlay-init' };
}

/** Highest `REBOUND seq=N durable` in a console log. */
export async function lastDurable(log: string): Promise<number> {
  const text = await readFile(log, 'utf8').catch(() => '');
  let max = 0;
  for (const m of text.matchAll(/REBOUND seq=(\d+) durable/g)) max = Math.max(max, Number(m[1]));
  return max;
}

/** Waits until the console log matches `re` (polling the log file). */
export async function waitConsole(log: string, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(log, 'utf8').catch(() => '');
    const m = text.match(re);
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`console ${log} did not show ${re} within ${timeoutMs} ms; tail:\n${text.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Types a command on the guest's console socket and waits for `marker` in the log. */
export async function consoleRun(socketPath: string, log: string, command: string, marker: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
  await new Promise<void>((resolve, reject) => {
    const s = connect({ path: socketPath }, () => {
      s.end(`${command}\n`, () => resolve());
    });
    s.on('error', reject);
  });
  return waitConsole(log, marker, timeoutMs);
}

/** Powers off every VM of the site (ignoring errors) and removes its networks. */
export async function teardownSite(p: QemuProvider, isolations: string[] = []): Promise<void> {
  for (const vm of await p.discover().catch(() => [])) await p.powerOff(vm.name).catch(() => undefined);
  await p.removeNetworks(isolations).catch(() => undefined);
}
