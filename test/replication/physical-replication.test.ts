// A physical machine (plain image files written by a workload) replicates through a real
// `rebound serve`: digest tracking finds the changed blocks, and the replica at the latest point
// after the writer stops is byte-identical to the source.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, mkdir, open } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NbdClient } from '../../src/nbd/client.ts';
import { parseNbdUri } from '../../src/nbd/uri.ts';
import { serveReplicaImage } from '../../src/replica/serve-view.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, openReplicas, points, waitFor, waitJob } from './support.ts';

const run = promisify(execFile);
const MIB = 2 ** 20;
let dir: string;
let server: ServerProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-phys-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
  // Two disks: one half written, one sparse with a little data.
  await run('truncate', ['-s', '32M', join(dir, 'a', 'd0.img')]);
  await run('dd', ['if=/dev/urandom', `of=${join(dir, 'a', 'd0.img')}`, 'bs=1M', 'count=16', 'conv=notrunc', 'status=none']);
  await run('truncate', ['-s', '16M', join(dir, 'a', 'd1.img')]);
  await run('dd', ['if=/dev/urandom', `of=${join(dir, 'a', 'd1.img')}`, 'bs=64K', 'count=3', 'seek=40', 'conv=notrunc', 'status=none']);
  server = await startServerProcess({ dataDir: join(dir, 'vault') });
  await api(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dr', provider: 'qemu', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'p', frequency: '3s', retention: '1h', appConsistent: '0s' });
  await api(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
  await api(server, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [join(dir, 'a', 'd0.img'), join(dir, 'a', 'd1.img')] });
});

after(async () => {
  await server?.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function writeRandomBlocks(file: string, size: number, n: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    for (let i = 0; i < n; i++) {
      const at = Math.floor(Math.random() * (size / 4096)) * 4096;
      await fh.write(randomBytes(4096), 0, 4096, at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
}

test('image files written by a workload replicate; the latest point after the writer stops is byte-identical', { timeout: 180_000 }, async () => {
  const { job } = await api<{ job: { id: string } }>(server, 'POST', '/items/db1/protect', {});
  await waitJob(server, job.id, 90_000);
  // The workload: random 4 KiB writes on both disks for a few seconds, across several cycles.
  const until = Date.now() + 7000;
  while (Date.now() < until) {
    await writeRandomBlocks(join(dir, 'a', 'd0.img'), 32 * MIB, 50);
    await writeRandomBlocks(join(dir, 'a', 'd1.img'), 16 * MIB, 20);
    await new Promise((r) => setTimeout(r, 300));
  }
  const stoppedAt = Date.now();
  const last = await waitFor('a point taken after the writer stopped', async () => (await points(server, 'db1')).find((p) => p.takenAt > stoppedAt + 100), 60_000, 500);
  const all = await points(server, 'db1');
  assert.ok(all.length >= 3, `${all.length} points`);
  const item = await api<{ id: string }>(server, 'GET', '/items/db1');
  await server.stop();
  const reps = await openReplicas(join(dir, 'vault'), join(dir, 'b'), item.id);
  assert.equal(reps.size, 2);
  for (const [i, disk] of [...reps.values()].entries()) {
    const src = join(dir, 'a', `d${i}.img`);
    const view = await disk.openView(last.id);
    const served = await serveReplicaImage(view.drive, disk.secrets());
    try {
      const c = await NbdClient.connect(parseNbdUri(served.uri).address, { exportName: '' });
      const fh = await open(src, 'r');
      try {
        for (let at = 0; at < disk.size; at += MIB) {
          const want = Buffer.alloc(MIB);
          await fh.read(want, 0, MIB, at);
          const got = await c.read(at, MIB);
          assert.ok(got.equals(want), `disk ${i} differs from the source in the MiB at ${at}`);
        }
      } finally {
        await fh.close();
        await c.disconnect();
      }
    } finally {
      await served.close();
      await disk.closeView(view.id);
    }
  }
});
