// Changed-block tracking lost: the protected VM's QEMU is killed (SIGKILL: its dirty bitmaps are
// not saved) and started again. The agent cannot know what changed, so it compares block digests
// with the replica and sends only the blocks that differ — not a full copy — and the point after
// the restart holds every record the guest found on its disk when it came back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { QemuProvider } from '../../src/providers/qemu/qemu-provider.ts';
import { teardownSite, waitConsole } from '../providers/support.ts';
import { startGuestSites } from '../support/guest-sites.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, openReplicas, points, verifyPoint, waitFor, waitJob } from './support.ts';

let dir: string;
let server: ServerProcess;
let prim: QemuProvider;

before(async () => {
  ({ dir, prim, server } = await startGuestSites({
    prefix: 'rb-cbtlost-', vm: 'vm1', workload: 'records', params: { rate: 100 },
    policy: { frequency: '3s', retention: '10m', appConsistent: '0s', encryption: 'none' },
  }));
});

after(async () => {
  await server?.stop().catch(() => undefined);
  if (prim) await teardownSite(prim);
  await rm(dir, { recursive: true, force: true });
});

async function sent(): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.token}` } })).text();
  return Number(/rebound_replication_bytes\{counter="agent_sent"\} (\d+)/.exec(text)?.[1] ?? NaN);
}

test('after QEMU is killed, tracking is lost and the agent resyncs by digests, sending only what differs', { timeout: 300_000 }, async () => {
  const { job } = await api<{ job: { id: string } }>(server, 'POST', '/items/vm1/protect', {});
  await waitJob(server, job.id, 120_000);
  const firstCopy = (await api<{ details: { replication?: { pointId?: string } } }>(server, 'GET', '/items/vm1')).details.replication?.pointId;
  // Let the disk fill with records for a while, so that a full copy would be large.
  await waitFor('points over 20 s of writes', async () => (await points(server, 'vm1')).length >= 6, 120_000, 1000);
  const before = (await points(server, 'vm1')).length;
  const info = await prim.state('vm1');
  process.kill(info.pid!, 'SIGKILL');
  await new Promise((r) => setTimeout(r, 1000));
  const sentBefore = await sent();
  const restarted = await prim.start('vm1');
  const m = await waitConsole(restarted.consoleLog!, new RegExp(`(?:[\\s\\S]*REBOUND ready workload=records){2}.*resume_seq=(\\d+)`), 120_000);
  const resumed = Number(m[1]);
  const restartAt = Date.now();
  const after = await waitFor('a point after the restart', async () => (await points(server, 'vm1')).find((p) => p.takenAt > restartAt + 500), 120_000, 500);
  const sentSince = (await sent()) - sentBefore;
  const allocated = resumed * 4096;
  // The resync point is reported like a first copy (details.replication): its planned bytes.
  const resync = await waitFor('the resync point', async () => {
    const d = (await api<{ details: { replication?: { pointId?: string; bytesTotal?: number; phase?: string } } }>(server, 'GET', '/items/vm1')).details.replication;
    return d && d.pointId !== firstCopy && d.phase === 'initial-sent' ? d : undefined;
  }, 60_000, 500);
  const resyncBytes = resync.bytesTotal ?? Infinity;
  assert.ok(resyncBytes < allocated / 4, `after the lost tracking the resync point carried ${resyncBytes} bytes; a full copy of the ${resumed} records is ${allocated}`);
  assert.ok((await points(server, 'vm1')).length > before);
  const item = await api<{ id: string }>(server, 'GET', '/items/vm1');
  await server.stop();
  const disk = [...(await openReplicas(join(dir, 'vault'), join(dir, 'b'), item.id)).values()][0]!;
  const r = await verifyPoint(disk, after.id);
  assert.equal(r.counts.corrupt, 0);
  assert.ok(r.highestContiguousSeq >= resumed, `the point after the restart holds records to ${r.highestContiguousSeq}; the guest came back with ${resumed}`);
  process.stdout.write(`# cbt lost: the resync point carried ${resyncBytes} bytes for ${allocated} bytes of records (${sentSince} bytes sent in all since the kill, writes after the restart included)\n`);
});
