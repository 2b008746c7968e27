// After the vault's wall clock went back (soak seeds 5008 and the `latest` finding): the protect
// job takes the first point that arrives, although it carries a time before the job's creation;
// the item's last point, its RPO and the point `latest` resolves to follow the order the points
// were taken (their ids only grow), not their times. A real `rebound serve` without data roles;
// the points are recorded through the master target's control-plane calls, as a master target
// whose clock went back would record them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VaultClient } from '../../src/replication/http-link.ts';
import { newId } from '../../src/store/ids.ts';
import { openStore } from '../../src/store/open.ts';
import { choosePoint } from '../../src/vault/jobs/recovery-context.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, waitJob } from '../replication/support.ts';

let dir: string;
let server: ServerProcess;
const HOUR = 3600_000;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-clock-order-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d));
  await writeFile(join(dir, 'a', 'd0.img'), Buffer.alloc(1 << 20));
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_ROLES: 'none' } });
  await api(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dr', provider: 'physical', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'p', frequency: '30s', retention: '24h', appConsistent: '0s' });
  await api(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
  await api(server, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [join(dir, 'a', 'd0.img')] });
});

after(async () => {
  await server?.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

test('after a backward clock jump: protect ends on the first point, and last point, RPO and latest follow the newest point', { timeout: 120_000 }, async () => {
  const job = (await api<{ job: { id: string } }>(server, 'POST', '/items/db1/protect', {})).job.id;
  const itemId = (await api<{ id: string }>(server, 'GET', '/items/db1')).id;
  const mt = new VaultClient(server.url, server.token).masterTargetLink();
  const dr = (await api<{ items: { id: string; name: string }[] }>(server, 'GET', '/sites')).items.find((x) => x.name === 'dr')!.id;
  const record = async (pointId: string, pointSeq: number, takenAt: number): Promise<void> => {
    assert.equal(await mt.recordPoint({ itemId, pointId, pointSeq, takenAt, kind: 'crash', disks: [{ id: 'disk0', sizeBytes: 1 << 20, bytes: 0 }], siteId: dr }), 'recorded');
  };

  // The clock went back 2 hours after the job was created: the first point is older than the job
  // by its time. Before the fix the job waited for a point taken after its creation (2 h here).
  const first = newId();
  await record(first, 1, Date.now() - 2 * HOUR);
  const done = await waitJob(server, job, 20_000);
  assert.equal(done.state, 'succeeded');
  assert.equal((await api<{ state: string }>(server, 'GET', '/items/db1')).state, 'protected');

  // Two points before a jump back, then one after it: the newest point has the earliest time.
  const t = Date.now();
  const before1 = newId();
  await record(before1, 2, t);
  const before2 = newId();
  await record(before2, 3, t + 30_000);
  const afterJump = newId();
  await record(afterJump, 4, t - HOUR);
  const item = await api<{ lastPointAt: number; rpoSeconds: number }>(server, 'GET', '/items/db1');
  assert.equal(item.lastPointAt, t - HOUR, 'the last point is the newest one taken, not the one with the latest time');
  assert.ok(item.rpoSeconds >= 3590, `RPO ${item.rpoSeconds} s follows the newest point`);

  const store = await openStore({ dataDir: join(dir, 'vault') });
  try {
    const latest = await choosePoint(store, itemId, 'db1', 'latest');
    assert.equal(latest.id, afterJump, '`latest` is the newest point taken, which holds the newest data');
    assert.equal(latest.takenAt, t - HOUR);
    assert.equal((await choosePoint(store, itemId, 'db1', before1)).id, before1, 'a point id still resolves to itself');
  } finally {
    await store.close();
  }
});
