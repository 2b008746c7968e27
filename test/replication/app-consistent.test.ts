// App-consistent points: a TCG guest rewrites files on an ext4 data disk; at the policy's
// app-consistent frequency the agent asks the guest's freeze agent (virtio-serial, fsfreeze) to
// freeze the filesystem around the point's instant. Such a point is recorded as `app`, and its
// filesystem is clean as stored: `e2fsck -fn` passes without any journal replay (no
// needs_recovery flag). Crash-consistent points are taken in between.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { serveReplicaImage } from '../../src/replica/serve-view.ts';
import { teardownSite } from '../providers/support.ts';
import { startGuestSites } from '../support/guest-sites.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, openReplicas, points, waitFor, waitJob } from './support.ts';

const run = promisify(execFile);
let dir: string;
let server: ServerProcess;
let prim: QemuProvider;

before(async () => {
  ({ dir, prim, server } = await startGuestSites({
    prefix: 'rb-app-', vm: 'files1', workload: 'fs', params: { rate: 20, files: 32, size: 16384 },
    policy: { frequency: '3s', retention: '2m', appConsistent: '9s', encryption: 'none' },
  }));
});

after(async () => {
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim);
  await rm(dir, { recursive: true, force: true });
});

async function fsck(image: string): Promise<{ code: number; out: string; needsRecovery: boolean }> {
  const r = await run('e2fsck', ['-fn', image]).then((x) => ({ code: 0, out: x.stdout + x.stderr }), (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
  const features = (await run('dumpe2fs', ['-h', image])).stdout.split('\n').find((l) => l.startsWith('Filesystem features')) ?? '';
  return { ...r, needsRecovery: features.includes('needs_recovery') };
}

test('an app-consistent point of the ext4 workload passes e2fsck -fn without journal replay', { timeout: 300_000 }, async () => {
  const { job } = await api<{ job: { id: string } }>(server, 'POST', '/items/files1/protect', {});
  await waitJob(server, job.id, 120_000);
  const app = await waitFor('two app-consistent points', async () => {
    const ps = (await points(server, 'files1')).filter((p) => p.kind === 'app');
    return ps.length >= 2 ? ps : undefined;
  }, 120_000, 1000);
  const all = await points(server, 'files1');
  assert.ok(all.some((p) => p.kind === 'crash'), 'crash-consistent points are taken between the app-consistent ones');
  const item = await api<{ id: string }>(server, 'GET', '/items/files1');
  await server.stop();
  const disk = [...(await openReplicas(join(dir, 'vault'), join(dir, 'b'), item.id)).values()][0]!;
  const exported = async (id: string): Promise<string> => {
    const view = await disk.openView(id);
    const served = await serveReplicaImage(view.drive, disk.secrets());
    const scratch = join(dir, `point-${id}.raw`);
    try {
      await run('qemu-img', ['convert', '-O', 'raw', served.uri, scratch]);
    } finally {
      await served.close();
      await disk.closeView(view.id);
    }
    return scratch;
  };
  // A crash-consistent point of the mounted filesystem still needs its journal replayed: the
  // check below can tell the two apart.
  const crash = all.find((p) => p.kind === 'crash' && disk.points().some((q) => q.id === p.id));
  if (crash) assert.equal((await fsck(await exported(crash.id))).needsRecovery, true, 'a crash point of a mounted ext4 needs recovery');
  for (const p of app.slice(0, 2)) {
    const view = await disk.openView(p.id);
    const served = await serveReplicaImage(view.drive, disk.secrets());
    const scratch = join(dir, `app-${p.id}.raw`);
    try {
      await run('qemu-img', ['convert', '-O', 'raw', served.uri, scratch]);
    } finally {
      await served.close();
      await disk.closeView(view.id);
    }
    const r = await fsck(scratch);
    assert.equal(r.needsRecovery, false, `app point ${p.id} still needs journal recovery`);
    assert.equal(r.code, 0, `e2fsck -fn of app point ${p.id} exited ${r.code}:\n${r.out}`);
    await rm(scratch, { force: true });
  }
});
