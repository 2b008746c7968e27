// The control plane a role run as its own process uses (src/replication/http-link.ts against a
// real `rebound serve` with no embedded roles): assignments for a site, idempotent point records,
// bad and pruned points as the catalogue shows them, a resync request, and who may call at all.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReboundError } from '../../src/domain/errors.ts';
import { VaultClient } from '../../src/replication/http-link.ts';
import { newId } from '../../src/store/ids.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points } from './support.ts';

let dir: string;
let server: ServerProcess;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-cp-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d));
  await writeFile(join(dir, 'a', 'd0.img'), Buffer.alloc(1 << 20));
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_ROLES: 'none' } });
  await api(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dr', provider: 'qemu', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'p', frequency: '30s', retention: '1h', appConsistent: '0s', bandwidth: '8M' });
  await api(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
  await api(server, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [join(dir, 'a', 'd0.img')] });
  await api(server, 'POST', '/items/db1/protect', {});
});

after(async () => {
  await server?.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

test('an agent reads its site\'s assignments; the master target records, condemns and prunes points', async () => {
  const vault = new VaultClient(server.url, server.token);
  const mine = await vault.agentLink('srv').assignments();
  assert.equal(mine.length, 1);
  const a = mine[0]!;
  assert.equal(a.machine, 'db1');
  assert.equal(a.provider, 'physical');
  assert.equal(a.sourceRoot, join(dir, 'a'));
  assert.equal(a.policy.bandwidthBps, 8 * 2 ** 20);
  assert.deepEqual(a.disks.map((d) => d.path), [join(dir, 'a', 'd0.img')]);
  assert.deepEqual(await vault.agentLink('dr').assignments(), []);
  await assert.rejects(vault.agentLink('nowhere').assignments(), (e: ReboundError) => e.kind === 'not-found');

  const mt = vault.masterTargetLink();
  assert.equal(await mt.siteRoot(a.targetSiteId), join(dir, 'b'));
  const ids = [newId(), newId(), newId()];
  for (const [i, id] of ids.entries()) {
    const p = { itemId: a.itemId, pointId: id, pointSeq: i + 1, takenAt: Date.now() + i, kind: 'crash' as const, disks: [{ id: 'disk0', sizeBytes: 1 << 20, bytes: 0 }], siteId: a.targetSiteId };
    assert.equal(await mt.recordPoint(p), 'recorded');
    assert.equal(await mt.recordPoint(p), 'recorded'); // a retry after a crash records once
  }
  assert.deepEqual((await points(server, 'db1')).map((p) => p.id), [...ids].reverse());
  // A point whose replica is at the site where the machine runs (a cycle in flight at a failover
  // that finished) is refused as stale and not listed; an unknown item's point is gone.
  assert.equal(await mt.recordPoint({ itemId: a.itemId, pointId: newId(), pointSeq: 9, takenAt: Date.now(), kind: 'crash', disks: [{ id: 'disk0', sizeBytes: 1 << 20, bytes: 0 }], siteId: a.sourceSiteId }), 'stale');
  assert.equal(await mt.recordPoint({ itemId: newId(), pointId: newId(), pointSeq: 1, takenAt: Date.now(), kind: 'crash', disks: [], siteId: a.targetSiteId }), 'gone');
  assert.deepEqual((await points(server, 'db1')).map((p) => p.id), [...ids].reverse());
  await mt.markBad(a.itemId, [ids[2]!], 'test');
  await mt.prunePoints(a.itemId, [ids[0]!]);
  const now = await points(server, 'db1');
  assert.deepEqual(now.map((p) => [p.id, p.status]), [[ids[2], 'bad'], [ids[1], 'ok']]);
  const item = await api<{ lastPointAt: number }>(server, 'GET', '/items/db1');
  assert.ok(item.lastPointAt >= Date.now() - 60_000);
  // A point recorded with the oldest point the replica still holds: the vault drops what is
  // older (merged away by retention, whose prune a kill had cut off), bad ones included.
  const fourth = newId();
  assert.equal(await mt.recordPoint({ itemId: a.itemId, pointId: fourth, pointSeq: 4, takenAt: Date.now() + 10, kind: 'crash', disks: [{ id: 'disk0', sizeBytes: 1 << 20, bytes: 0 }], siteId: a.targetSiteId, heldFrom: ids[2]! }), 'recorded');
  assert.deepEqual((await points(server, 'db1')).map((p) => [p.id, p.status]), [[fourth, 'ok'], [ids[2], 'bad']]);

  await vault.processServerLink().requestResync(a.itemId, 'cache damaged');
  assert.match((await vault.agentLink('srv').assignments())[0]!.resync ?? '', /cache damaged/);
  await vault.agentLink().resynced(a.itemId);
  assert.equal((await vault.agentLink('srv').assignments())[0]!.resync, null);
});

test('operators and readers may not call the control plane; only components and admins', async () => {
  for (const role of ['operator', 'reader']) {
    const t = await api<{ token: string }>(server, 'POST', '/tokens', { name: `t-${role}`, role });
    const c = new VaultClient(server.url, t.token);
    await assert.rejects(c.agentLink().assignments(), (e: ReboundError) => e.kind === 'forbidden', role);
    await assert.rejects(c.masterTargetLink().prunePoints(newId(), []), (e: ReboundError) => e.kind === 'forbidden', role);
  }
  await assert.rejects(new VaultClient(server.url, 'rbd_nothing').agentLink().assignments(), (e: ReboundError) => e.kind === 'unauthenticated');
});
