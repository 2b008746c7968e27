// The three pieces composed: changed blocks found by the digest tracker are sent as encrypted,
// compressed frames over a unix socket into a replica's point; a connection cut mid-transfer and
// a receiver restart resume after the last acknowledged (durable) frame without resending it,
// and every point's view equals the source as it was.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, open, rm, truncate } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diffDigests, digestFile } from '../../src/datapath/digest.ts';
import type { DigestMap } from '../../src/datapath/digest.ts';
import { split } from '../../src/datapath/extents.ts';
import { sendTransfer } from '../../src/datapath/frame-stream.ts';
import type { PlannedExtent } from '../../src/datapath/frame-stream.ts';
import { ReplicaDisk } from '../../src/replica/replica-disk.ts';
import { receivePoint } from '../../src/replica/receive.ts';
import type { ReceivePointResult } from '../../src/replica/receive.ts';
import { runQemu } from '../../src/replica/qemu.ts';

const MiB = 1024 * 1024;
const BS = 64 * 1024;
const vaultKey = randomBytes(32);
let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'rebound-transfer-test-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

const listen = (server: Server, path: string): Promise<void> => new Promise((resolve) => server.listen(path, resolve));
const dial = (path: string): Promise<Socket> => new Promise((resolve, reject) => { const s = connect(path, () => resolve(s)); s.once('error', reject); });
const raw = (p: string): string => `json:${JSON.stringify({ driver: 'raw', file: { driver: 'file', filename: p } })}`;

test('a cycle cut off mid-transfer resumes after a receiver restart, resending nothing acknowledged', async () => {
  const size = 32 * MiB;
  const source = join(dir, 'src.raw');
  await (await open(source, 'w')).close();
  await truncate(source, size);
  {
    const fh = await open(source, 'r+');
    for (let mb = 0; mb < 24; mb++) await fh.write(mb % 3 === 0 ? Buffer.alloc(MiB, `text ${mb} `) : randomBytes(MiB), 0, MiB, mb * MiB);
    await fh.close();
  }
  const rdir = join(dir, 'replica');
  let disk = await ReplicaDisk.create(rdir, { size, blockSize: BS });
  const results: (ReceivePointResult | Error)[] = [];
  const server = createServer((socket) => {
    receivePoint(socket, disk, { vaultKey, itemId: 'vm1', diskId: 'vda' }).then((r) => results.push(r), (e: Error) => results.push(e));
  });
  const sock = join(dir, 'recv.sock');
  await listen(server, sock);
  // A link that dies after 9 MiB from the sender.
  let carried = 0;
  const proxy = createServer((client) => {
    const up = connect(sock);
    up.pipe(client);
    client.on('data', (c: Buffer) => {
      carried += c.length;
      if (carried > 9 * MiB) { client.destroy(); up.destroy(); return; }
      up.write(c);
    });
    for (const s of [client, up]) s.on('error', () => {});
    client.on('close', () => up.destroy());
  });
  const proxySock = join(dir, 'proxy.sock');
  await listen(proxy, proxySock);
  try {
    const zero: DigestMap = { blockSize: BS, size, digests: Buffer.alloc((size / BS) * 16) };
    const planFor = async (prev: DigestMap, pointId: string): Promise<{ plan: PlannedExtent[]; now: DigestMap }> => {
      const now = await digestFile(source, { blockSize: BS });
      const plan = [...split(diffDigests(prev, now), MiB)].map((e) => ({ itemId: 'vm1', diskId: 'vda', pointId, ...e }));
      return { plan, now };
    };
    const fh = await open(source, 'r');
    const reads: number[] = [];
    const read = async (e: PlannedExtent) => { reads.push(e.offset); const b = Buffer.alloc(e.length); await fh.read(b, 0, e.length, e.offset); return b; };

    // Cycle 1: the initial copy; the link dies part-way.
    const { plan: plan1, now: d1 } = await planFor(zero, 'c1');
    assert.equal(plan1.length, 24, 'only the 24 MiB with data is planned; the zero tail is skipped');
    const snap1 = join(dir, 'snap1.raw');
    await copyFile(source, snap1);
    await assert.rejects(sendTransfer(await dial(proxySock), { vaultKey, transferId: 't1', plan: plan1, window: 4, read }));
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(results[0] instanceof Error, 'the receiver saw the stream break');
    const staged = disk.staged();
    assert.ok(staged && staged.pointId === 'c1');
    const acked = (staged.progress as { ackedThrough: number }).ackedThrough;
    assert.ok(acked >= 1 && acked < 23, `some frames were acknowledged (${acked})`);
    assert.deepEqual(disk.points(), []);

    // The receiver restarts; the sender reconnects directly and resumes.
    disk = await ReplicaDisk.open(rdir);
    reads.length = 0;
    const res = await sendTransfer(await dial(sock), { vaultKey, transferId: 't1', plan: plan1, window: 4, read });
    assert.deepEqual(res, { sent: 24 - (acked + 1), skipped: acked + 1 });
    assert.equal(reads[0], plan1[acked + 1]!.offset, 'nothing acknowledged is read or sent again');
    await new Promise((r) => setTimeout(r, 50));
    const r1 = results[1] as ReceivePointResult;
    assert.equal(r1.point?.id, 'c1');
    assert.deepEqual(disk.points().map((p) => p.id), ['c1']);

    // Cycle 2: a few changed blocks only.
    const w = await open(source, 'r+');
    for (const off of [3 * BS, 100 * BS, 101 * BS, 450 * BS]) await w.write(randomBytes(BS), 0, BS, off);
    await w.close();
    const { plan: plan2 } = await planFor(d1, 'c2');
    assert.deepEqual(plan2.map((e) => [e.offset, e.length]), [[3 * BS, BS], [100 * BS, 2 * BS], [450 * BS, BS]]);
    const snap2 = join(dir, 'snap2.raw');
    await copyFile(source, snap2);
    await sendTransfer(await dial(sock), { vaultKey, transferId: 't2', plan: plan2, read });
    await fh.close();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(disk.points().map((p) => p.id), ['c1', 'c2']);

    for (const [id, snap] of [['c1', snap1], ['c2', snap2]] as const) {
      const v = await disk.openView(id);
      await runQemu('qemu-img', ['compare', '-q', v.drive, raw(snap)]);
      await disk.closeView(v.id);
    }
    assert.deepEqual((await disk.scrub()).badPoints, []);
  } finally {
    proxy.close();
    server.close();
  }
});
