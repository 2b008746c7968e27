// Serves a replica view (or any replica image by its json: name) read-only over a private
// qemu-nbd socket, with the at-rest secret given to QEMU through a short-lived tmpfs file, so
// tools that read NBD (verify-disk, nbdcopy) can read a recovery point without a VM.
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ReboundError } from '../domain/errors.ts';
import { spawnWithSecrets } from './qemu.ts';
import type { Secret } from './qemu.ts';

export interface ServedView {
  uri: string;
  close(): Promise<void>;
}

export async function serveReplicaImage(drive: string, secrets: readonly Secret[]): Promise<ServedView> {
  const dir = await mkdtemp(join(tmpdir(), 'rebound-view-'));
  const sock = join(dir, 'nbd.sock');
  const pid = join(dir, 'pid');
  const s = await spawnWithSecrets('qemu-nbd', [`--socket=${sock}`, `--pid-file=${pid}`, '--read-only', '--persistent', '--shared=4', '--cache=writeback', drive], secrets);
  let exited = false;
  void s.exited.then(() => (exited = true));
  const deadline = Date.now() + 15_000;
  while (!existsSync(pid)) {
    if (exited || Date.now() > deadline) {
      s.child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new ReboundError('unavailable', 'replica-nbd-failed', `qemu-nbd could not serve the replica view: ${s.stderr().trim() || 'not ready in time'}.`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  await s.forgetSecrets();
  return {
    uri: `nbd+unix:///?socket=${sock}`,
    async close() {
      if (!exited) {
        s.child.kill('SIGTERM');
        const t = setTimeout(() => s.child.kill('SIGKILL'), 5000);
        await s.exited;
        clearTimeout(t);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
