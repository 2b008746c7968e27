// An open point that does not survive a restart (soak seed 7577: clock-forward, then a restart).
// Some of its transfers may already be at the replica, laid as the blocks were when read; the
// agent's next point sends the abandoned point's ranges again, and takes an id after the
// abandoned point's (which may come from a clock that was ahead), so the master target never
// orders the two the wrong way. Real physical provider, process server, master target, sockets.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { physicalMachine } from '../../src/providers/physical/definition.ts';
import { PhysicalProvider } from '../../src/providers/physical/physical-provider.ts';
import { Agent } from '../../src/replication/agent.ts';
import type { AgentLink, Assignment } from '../../src/replication/link.ts';
import { startRecordingMasterTarget } from '../support/master-target.ts';
import { ProcessServer } from '../../src/replication/process-server.ts';

const MIB = 2 ** 20;
let dir: string;

before(async () => { dir = await mkdtemp(join(tmpdir(), 'rb-abandoned-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

test('after an open point is lost, the next point follows its id and sends its ranges again', { timeout: 120_000 }, async () => {
  const src = join(dir, 'a');
  const dst = join(dir, 'b');
  await mkdir(src, { recursive: true });
  await mkdir(dst, { recursive: true });
  const image = join(src, 'd0.img');
  await writeFile(image, randomBytes(4 * MIB));
  const provider = new PhysicalProvider({ root: src });
  await provider.define(physicalMachine('db1', [image]));
  const key = randomBytes(32);
  const { mt, recorded } = await startRecordingMasterTarget(dst, key);
  const ps = new ProcessServer({ dir: join(dir, 'ps'), transportKey: key, material: null, logger: pino({ level: 'silent' }), masterTargetFor: () => mt.address });
  await ps.start();
  const a: Assignment = {
    itemId: 'item1', machine: 'db1', state: 'protected', direction: 'forward', sourceSiteId: 'srv', targetSiteId: 'dr', provider: 'physical', sourceRoot: src,
    disks: [{ id: 'disk0', path: image, sizeBytes: 4 * MIB, format: 'raw' }],
    policy: { frequencySeconds: 1, retentionSeconds: 3600, appConsistentSeconds: 0, compression: 'none', encryption: 'none', bandwidthBps: 0 },
    processServer: ps.address, masterTarget: mt.address, resync: null, resyncMode: null, config: {}, group: null,
  };
  const link: AgentLink = { assignments: async () => [], progress: async () => undefined, resynced: async () => undefined, event: async () => undefined, groupPoint: async () => undefined };
  const stateDir = join(dir, 'agent');
  const agent = new Agent({ stateDir, link, providerFor: () => provider, transportKey: key, material: null, logger: pino({ level: 'silent' }), pollMs: 60_000 });
  const waitRecorded = async (id: string): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (!recorded.some((r) => r.p.pointId === id)) {
      if (Date.now() > deadline) throw new Error(`point ${id} was never recorded (${recorded.map((r) => r.p.pointId).join(', ')})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    const first = await agent.syncNow(a, new AbortController().signal);
    await waitRecorded(first.pointId);
    const bytesAfterFirst = agent.stats.bytesSent;
    assert.equal(bytesAfterFirst, 4 * MIB, 'the first point copies the whole (random) disk');

    // A point left open by a process whose clock was ahead, whose provider point is gone (the
    // provider no longer has it open): 1 MiB at 2 MiB was in its plan.
    const abandonedId = 'ffffffff-0000-7abc-8000-000000000000';
    await writeFile(join(stateDir, 'items', 'item1', 'open.json'), JSON.stringify({
      pointId: abandonedId, kind: 'crash', pointSeq: first.pointSeq + 1, providerPointId: 'gone', takenAt: Date.now(), initial: false,
      plans: [{ diskId: 'disk0', sizeBytes: 4 * MIB, extents: [{ offset: 2 * MIB, length: MIB }], bytes: MIB }], disks: [{ id: 'disk0', sizeBytes: 4 * MIB }],
    }));
    // And one block changed since the first point.
    const fh = await open(image, 'r+');
    await fh.write(randomBytes(4096), 0, 4096, 0);
    await fh.close();

    const next = await agent.syncNow(a, new AbortController().signal);
    assert.ok(next.pointId > abandonedId, `the next point's id ${next.pointId} follows the abandoned ${abandonedId}`);
    assert.equal(next.pointSeq, first.pointSeq + 2, 'and its sequence number');
    await waitRecorded(next.pointId);
    const sent = agent.stats.bytesSent - bytesAfterFirst;
    assert.ok(sent >= MIB + 4096 && sent <= MIB + 2 * 256 * 1024, `the changed block and the abandoned point's MiB were sent again (${sent} bytes)`);
  } finally {
    await agent.stop();
    await ps.close();
    await mt.close();
  }
});
