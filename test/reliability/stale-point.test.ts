// A replication cycle still in flight when a failover to the recovery site finished (soak seed
// 7543, kill9-reverse): its point reached the master target after the failover, and after the
// commit had removed the item's points and replica. The vault refuses such a point (the machine
// now runs at the replica's site: `stale`), and the master target discards it: the point is
// removed from the replica, older points are untouched, and a replica that this point alone made
// is removed. A real master target, real replica store and real data connections.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendTransfer } from '../../src/datapath/frame-stream.ts';
import { startRecordingMasterTarget } from '../support/master-target.ts';
import { openTransfer } from '../../src/replication/wire.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';
import { newId } from '../../src/store/ids.ts';

const MIB = 2 ** 20;
let dir: string;
let site: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-stale-point-'));
  site = join(dir, 'dr');
  await mkdir(site);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a point the vault refuses as stale is discarded from the replica; a replica it alone made is removed', { timeout: 120_000 }, async () => {
  const key = randomBytes(32);
  const target = await startRecordingMasterTarget(site, key);
  const { mt, recorded: asked, events } = target;
  let seq = 0;
  const send = async (): Promise<string> => {
    const pointId = newId();
    seq++;
    const h: TransferHeader = {
      transferId: `${pointId}.0`, itemId: 'item1', machine: 'db1', diskId: 'disk0', diskIndex: 0, diskCount: 1, diskSize: 8 * MIB, pointId, pointSeq: seq,
      takenAt: Date.now(), pointKind: 'crash', frames: 1, bytes: MIB, targetSiteId: 'dr', masterTarget: mt.address, retentionSeconds: 3600, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: seq === 1,
    };
    const socket = await openTransfer(mt.address, h, null);
    await sendTransfer(socket, { vaultKey: key, transferId: h.transferId, plan: [{ itemId: h.itemId, diskId: h.diskId, pointId, offset: 0, length: MIB }], read: async (e) => randomBytes(e.length) });
    return pointId;
  };
  const until = async (what: string, fn: () => boolean): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (!fn()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (asked ${asked.length}, events ${JSON.stringify(events)})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    const first = await send();
    await until('the first point', () => asked.some((a) => a.p.pointId === first));
    assert.equal(asked[0]!.p.siteId, 'dr', 'the master target names the replica\'s site');
    assert.deepEqual((await mt.commonPoints('dr', 'item1')).map((p) => p.id), [first]);

    // The machine failed over to dr: a late forward point is refused and discarded; the points
    // before it stay.
    target.verdict = 'stale';
    const late = await send();
    await until('the late point discarded', () => events.some((e) => e.kind === 'point-discarded' && e.message.includes(late)));
    assert.deepEqual((await mt.commonPoints('dr', 'item1')).map((p) => p.id), [first], 'the stale point is gone, the older one kept');
    const files = await readdir(join(await mt.itemDir('dr', 'item1'), 'disk0'));
    assert.ok(!files.some((f) => f.includes(late)), `no file of the stale point is left: ${files.join(', ')}`);

    // The commit removed the item's replica; a point still in flight then makes no replica.
    await mt.dropReplicas('dr', 'item1');
    const later = await send();
    await until('the point after the commit discarded', () => events.some((e) => e.kind === 'point-discarded' && e.message.includes(later)));
    assert.deepEqual(await mt.commonPoints('dr', 'item1'), []);
    assert.match(events.at(-1)!.message, /with the replica it alone made/);
    const itemDir = await mt.itemDir('dr', 'item1');
    await assert.rejects(readdir(itemDir), { code: 'ENOENT' }, 'no replica directory is left at dr');
  } finally {
    await mt.close();
  }
});
