// Two data connections for one replica disk at once (a process server's retry while its earlier
// connection is still open at the master target; soak seed 9025, kill9-delta, where the newest
// point then lacked a block the writer had acknowledged): exactly one is accepted, the other is
// refused with `transfer-busy` until the first ends. Before, the disk was reserved only once the
// transfer started, after the acceptance's awaits, so both could be accepted and the second
// resumed or discarded the point the first was writing. Real master target and connections.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sendTransfer } from '../../src/datapath/frame-stream.ts';
import type { ReboundError } from '../../src/domain/errors.ts';
import { startRecordingMasterTarget } from '../support/master-target.ts';
import { openTransfer } from '../../src/replication/wire.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';
import { newId } from '../../src/store/ids.ts';

const MIB = 2 ** 20;
let dir: string;

before(async () => { dir = await mkdtemp(join(tmpdir(), 'rb-mt-busy-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

test('two connections for one replica disk at once: one is accepted, the other refused as busy until the first ends', { timeout: 60_000 }, async () => {
  const site = join(dir, 'dr');
  await mkdir(site);
  const key = randomBytes(32);
  const { mt, recorded } = await startRecordingMasterTarget(site, key);
  try {
    const pointId = newId();
    const h: TransferHeader = {
      transferId: `${pointId}.0`, itemId: 'item1', machine: 'db1', diskId: 'disk0', diskIndex: 0, diskCount: 1, diskSize: 8 * MIB, pointId, pointSeq: 1,
      takenAt: Date.now(), pointKind: 'crash', frames: 2, bytes: 2 * MIB, targetSiteId: 'dr', masterTarget: mt.address, retentionSeconds: 3600, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: true,
    };
    // Several at once, as fast as they can be opened: the first replica open makes acceptance slow.
    const tries = await Promise.allSettled(Array.from({ length: 4 }, () => openTransfer(mt.address, h, null)));
    const accepted = tries.filter((t) => t.status === 'fulfilled');
    const refused = tries.filter((t): t is PromiseRejectedResult => t.status === 'rejected');
    assert.equal(accepted.length, 1, `exactly one connection is accepted (${accepted.length} were)`);
    for (const r of refused) assert.equal((r.reason as ReboundError).code, 'transfer-busy');
    const socket = accepted[0]!.value;
    await sendTransfer(socket, { vaultKey: key, transferId: h.transferId, plan: [0, 1].map((i) => ({ itemId: 'item1', diskId: 'disk0', pointId, offset: i * MIB, length: MIB })), read: async (e) => randomBytes(e.length) });
    // Once it ended, the disk takes a connection again (the same transfer: already held).
    for (let i = 0; i < 50 && recorded.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(recorded.length, 1);
    const again = await openTransfer(mt.address, h, null);
    assert.deepEqual(await sendTransfer(again, { vaultKey: key, transferId: h.transferId, plan: [0, 1].map((i) => ({ itemId: 'item1', diskId: 'disk0', pointId, offset: i * MIB, length: MIB })), read: async (e) => randomBytes(e.length) }), { sent: 0, skipped: 2 });
  } finally {
    await mt.close();
  }
});
