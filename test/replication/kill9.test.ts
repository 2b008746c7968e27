// `kill -9` of `rebound serve` (vault, agent, process server and master target in one process)
// in the middle of an initial replication that is paced by the policy's bandwidth cap: after a
// restart on the same data directory the job finishes, the process server forwards only what the
// master target had not acknowledged, nothing acknowledged is lost, and the replica verifies.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { guestCmdline, makeDataDisk } from '../../src/guest/kit.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import { parseNbdUri } from '../../src/nbd/uri.ts';
import { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { serveReplicaImage } from '../../src/replica/serve-view.ts';
import { teardownSite, testGuest, waitConsole } from '../providers/support.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, openReplicas, points, verifyPoint, waitFor, waitJob } from './support.ts';

const run = promisify(execFile);
const BULK_MIB = 160;
let dir: string;
let server: ServerProcess;
let prim: QemuProvider;

async function stat(s: ServerProcess, counter: string): Promise<number> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const m = new RegExp(`rebound_replication_bytes\\{counter="${counter}"\\} (\\d+)`).exec(text);
  return m ? Number(m[1]) : 0;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-k9-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
  const guest = await testGuest(dir);
  prim = new QemuProvider({ root: join(dir, 'a') });
  await makeDataDisk(join(dir, 'a', 'rec.qcow2'), { sizeMiB: 32 });
  // A second disk full of data (a repeating pattern per MiB), so the first copy has real work.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'a', 'bulk.qcow2'), `${BULK_MIB}M`]);
  const cmds: string[] = [];
  for (let i = 0; i < BULK_MIB; i++) cmds.push('-c', `write -P ${(i * 7 + 1) % 256} ${i}M 1M`);
  await run('qemu-io', ['-f', 'qcow2', ...cmds, join(dir, 'a', 'bulk.qcow2')]);
  await prim.define({
    name: 'big1', cpus: 1, memoryMiB: 192, nics: [],
    disks: [{ path: join(dir, 'a', 'rec.qcow2'), format: 'qcow2' }, { path: join(dir, 'a', 'bulk.qcow2'), format: 'qcow2' }],
    boot: { kind: 'kernel', kernel: guest.kernel, initrd: guest.initrd, append: guestCmdline({ workload: 'records', rate: 20, disk: '/dev/vda' }) },
  });
  const info = await prim.start('big1');
  await waitConsole(info.consoleLog!, /REBOUND seq=\d+ durable/, 90_000);
  server = await startServerProcess({ dataDir: join(dir, 'vault') });
  await api(server, 'POST', '/sites', { name: 'dc1', provider: 'qemu', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dc2', provider: 'qemu', root: join(dir, 'b') });
  // 20 MiB/s on the link to the recovery site: the first copy takes about 8 s there.
  await api(server, 'POST', '/policies', { name: 'capped', frequency: '10s', retention: '1h', appConsistent: '0s', bandwidth: '20M' });
  await api(server, 'POST', '/pairings', { primary: 'dc1', recovery: 'dc2', policy: 'capped' });
});

after(async () => {
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim);
  await rm(dir, { recursive: true, force: true });
});

test('kill -9 of the server mid initial replication: it resumes where the master target stopped acknowledging, and the replica is whole', { timeout: 300_000 }, async () => {
  const { job } = await api<{ job: { id: string } }>(server, 'POST', '/items/big1/protect', {});
  const total = BULK_MIB * 2 ** 20;
  const before = await waitFor('a third of the first copy written at the recovery site', async () => {
    const n = await stat(server, 'master_target_written');
    return n > total / 3 ? n : false;
  }, 120_000, 200);
  await server.kill9();
  server = await startServerProcess({ dataDir: join(dir, 'vault'), token: server.token });
  await waitJob(server, job.id, 180_000);
  const resent = await stat(server, 'process_server_out');
  const agentSent = await stat(server, 'agent_sent');
  // The process server forwards what the master target had not acknowledged (at most its
  // checkpoint window behind), not the whole copy again; the agent's transfer had been
  // acknowledged by the process server's cache, so it sends nothing of it again.
  assert.ok(resent <= total - before + 64 * 2 ** 20, `after the restart the process server sent ${resent} bytes; ${before} of ${total} were written before the kill`);
  assert.ok(agentSent < total / 2, `after the restart the agent sent ${agentSent} bytes again`);

  const ps = await points(server, 'big1');
  assert.ok(ps.length >= 1);
  const item = await api<{ id: string }>(server, 'GET', '/items/big1');
  await server.stop();
  const reps = await openReplicas(join(dir, 'vault'), join(dir, 'b'), item.id);
  const rec = reps.get('disk0')!;
  const bulk = reps.get('disk1')!;
  // The newest point both disks hold: a stop can land while the next point's layers are written
  // disk by disk (the vault records a point only once every disk has it).
  const inBulk = new Set(bulk.points().map((p) => p.id));
  const newest = rec.points().filter((p) => inBulk.has(p.id)).at(-1)!;
  assert.ok(newest, 'a point held by both disks');
  const r = await verifyPoint(rec, newest.id);
  assert.equal(r.counts.corrupt, 0, JSON.stringify(r.corrupt.slice(0, 3)));
  // Every MiB of the bulk disk holds its pattern at the newest point.
  const view = await bulk.openView(newest.id);
  const served = await serveReplicaImage(view.drive, bulk.secrets());
  try {
    const c = await NbdClient.connect(parseNbdUri(served.uri).address, { exportName: '' });
    try {
      for (let i = 0; i < BULK_MIB; i++) {
        const b = await c.read(i * 2 ** 20, 2 ** 20);
        const want = (i * 7 + 1) % 256;
        assert.ok(b.every((x) => x === want), `MiB ${i} of the bulk disk does not hold pattern ${want}`);
      }
    } finally {
      await c.disconnect();
    }
  } finally {
    await served.close();
    await bulk.closeView(view.id);
  }
});
