// A full recovery site (soak: disk-full-recovery): once a transfer failed for lack of space, the
// master target refuses the item's next transfers at their hello while the site is still full,
// so the process server's retries send no frames across the WAN (before, each retry sent up to
// a window, 32 MiB, before failing on a write). Once space is freed, transfers go through again
// and the operator is told. A real master target, real replica store on a real 24 MiB tmpfs
// (root), real data connections and frame streams.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sendTransfer } from '../../src/datapath/frame-stream.ts';
import type { ReboundError } from '../../src/domain/errors.ts';
import { startRecordingMasterTarget } from '../support/master-target.ts';
import { openTransfer } from '../../src/replication/wire.ts';
import type { TransferHeader } from '../../src/replication/wire.ts';
import { newId } from '../../src/store/ids.ts';

const run = promisify(execFile);
const MIB = 2 ** 20;
let dir: string;
let site: string;
let mounted = false;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-disk-full-'));
  site = join(dir, 'site');
  await mkdir(site);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=24m,mode=0755', 'rebound-disk-full-test', site]);
  mounted = true;
});

after(async () => {
  if (mounted) await run('umount', ['-l', site]).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function fill(path: string): Promise<void> {
  const st = await statfs(site);
  await run('fallocate', ['-l', String(Number(st.bavail) * Number(st.bsize)), path]).catch(() => undefined);
  const fh = await open(path, 'a');
  try {
    const chunk = Buffer.alloc(64 * 1024, 0x5a);
    for (;;) await fh.write(chunk);
  } catch {
    // ENOSPC: full.
  } finally {
    await fh.close();
  }
}

test('while the recovery site is still full, the master target refuses transfers at their hello; once space is back they go through', { timeout: 120_000 }, async () => {
  const key = randomBytes(32);
  const { mt, recorded, events } = await startRecordingMasterTarget(site, key);
  let seq = 0;
  const header = (bytes: number): TransferHeader => {
    const pointId = newId();
    seq++;
    return {
      transferId: `${pointId}.0`, itemId: 'item1', machine: 'db1', diskId: 'disk0', diskIndex: 0, diskCount: 1, diskSize: 8 * MIB, pointId, pointSeq: seq,
      takenAt: Date.now(), pointKind: 'crash', frames: bytes / MIB, bytes, targetSiteId: 'dr', masterTarget: mt.address, retentionSeconds: 3600, compression: 'none', encryption: 'none', bandwidthBps: 0, initial: seq === 1,
    };
  };
  // Sends `bytes` (whole MiB) of random data at offset 0; counts what the sender read to send.
  const send = async (h: TransferHeader): Promise<{ sent: number }> => {
    const out = { sent: 0 };
    const socket = await openTransfer(mt.address, h, null);
    await sendTransfer(socket, {
      vaultKey: key,
      transferId: h.transferId,
      plan: Array.from({ length: h.bytes / MIB }, (_v, i) => ({ itemId: h.itemId, diskId: h.diskId, pointId: h.pointId, offset: i * MIB, length: MIB })),
      read: async (e) => { out.sent += e.length; return randomBytes(e.length); },
    });
    return out;
  };
  const until = async (what: string, fn: () => boolean): Promise<void> => {
    const deadline = Date.now() + 30_000;
    while (!fn()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (points ${recorded.length}, events ${JSON.stringify(events)})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const ballast = join(site, 'ballast');
  try {
    await send(header(MIB));
    await until('the first point', () => recorded.length === 1);

    // The site fills up; the next transfer fails on writing and the operator is told.
    await fill(ballast);
    await send(header(4 * MIB)).catch(() => undefined);
    await until('the recovery-site-full event', () => events.some((e) => e.kind === 'recovery-site-full'));
    assert.equal(recorded.length, 1, 'no point was recorded into a full site');

    // Still full: the next transfers are refused at their hello, before any frame is sent.
    for (let i = 0; i < 3; i++) {
      const h = header(4 * MIB);
      await assert.rejects(openTransfer(mt.address, h, null), (e: ReboundError) => {
        assert.equal(e.code, 'recovery-site-full');
        assert.match(e.message, /still full .* free space there/);
        assert.equal(e.retryable, true);
        return true;
      });
    }

    // Space is back: a transfer goes through, the point is recorded, and the operator is told.
    await rm(ballast, { force: true });
    const h = header(2 * MIB);
    const r = await send(h);
    assert.equal(r.sent, 2 * MIB);
    await until('the point after space came back', () => recorded.at(-1)?.p.pointId === h.pointId);
    await until('the recovery-site-space-ok event', () => events.some((e) => e.kind === 'recovery-site-space-ok'));
  } finally {
    await mt.close();
    await rm(ballast, { force: true });
  }
});
