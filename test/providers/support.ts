// Test helpers for the qemu provider: the guest kit, console helpers, and site teardown.
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { ensureGuestKit } from '../../src/guest/kit.ts';
import type { GuestKit } from '../../src/guest/kit.ts';
import type { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';

export interface TestGuest {
  kit: GuestKit;
  kernel: string;
  initrd: string;
  /** Extra kernel arguments (none: the kit's /init handles the ACPI power button itself). */
  rdinit: string;
}

/** The guest kit as the provider tests boot it. */
export async function testGuest(_dir: string): Promise<TestGuest> {
  const kit = await ensureGuestKit();
  return { kit, kernel: kit.kernel, initrd: kit.initrd, rdinit: '' };
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
