// verifyDisk beyond the guest's own disks: a qcow2 chain whose overlay holds the newer records,
// a live NBD export named by URI, misplaced records, and inputs that are not disks. Records are
// encoded by src/guest/records.ts, which the guest tests show to match the C writer.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { encodeFile, encodeRecord, RECORD_SIZE } from '../../src/guest/records.ts';
import { verifyDisk, verifyFs } from '../../src/guest/verify.ts';
import { NbdClient } from '../../src/nbd/client.ts';
import { serveImage } from '../../src/nbd/qemu-nbd.ts';
import { formatNbdUri } from '../../src/nbd/uri.ts';
import { ReboundError } from '../../src/domain/errors.ts';

const run = promisify(execFile);
let dir: string;
let base: string;
let overlay: string;

const records = (from: number, to: number, writer: bigint): Buffer =>
  Buffer.concat(Array.from({ length: to - from + 1 }, (_, i) => encodeRecord({ seq: from + i, timeNs: 1n, writer, offset: (from + i - 1) * RECORD_SIZE })));

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rebound-verify-test-'));
  const raw = join(dir, 'base.raw');
  await writeFile(raw, records(1, 300, 1n));
  await run('qemu-img', ['resize', '-q', '-f', 'raw', raw, '8M']);
  base = join(dir, 'base.qcow2');
  await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, base]);
  overlay = join(dir, 'overlay.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay]);
  // The overlay gets records 301..320 through Rebound's NBD client, as replication would.
  const served = await serveImage(overlay, { format: 'qcow2', readOnly: false });
  try {
    const c = await NbdClient.connect(served.address);
    await c.write(300 * RECORD_SIZE, records(301, 320, 2n), { fua: true });
    await c.disconnect();
  } finally {
    await served.close();
  }
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a qcow2 chain verifies through its backing file; the base is left as it was', async () => {
  const top = await verifyDisk(overlay, { expectSeq: 320 });
  assert.equal(top.ok, true, JSON.stringify(top));
  assert.equal(top.method, 'nbd');
  assert.equal(top.highestContiguousSeq, 320);
  assert.equal(top.writers, 2);
  const under = await verifyDisk(base);
  assert.equal(under.ok, true);
  assert.equal(under.highestContiguousSeq, 300);
  assert.equal((await verifyDisk(base, { expectSeq: 301 })).ok, false);
});

test('a live NBD export named by URI verifies like an image', async () => {
  const served = await serveImage(overlay, { format: 'qcow2', persistent: true });
  try {
    const uri = formatNbdUri(served.address);
    const r = await verifyDisk(uri, { expectSeq: 320 });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.format, 'nbd');
    assert.equal(r.size, 8 * 1024 * 1024);
    assert.equal(r.highestContiguousSeq, 320);
    await assert.rejects(verifyDisk(formatNbdUri(served.address, 'no-such-export')), (e) => e instanceof ReboundError && e.code === 'nbd-export-not-found');
  } finally {
    await served.close();
  }
});

test('a record written at the wrong place is reported out of order', async () => {
  const bad = join(dir, 'misplaced.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', overlay, '-F', 'qcow2', bad]);
  const served = await serveImage(bad, { format: 'qcow2', readOnly: false });
  try {
    const c = await NbdClient.connect(served.address);
    await c.write(149 * RECORD_SIZE, records(140, 140, 1n)); // record 140's bytes in slot 150
    await c.disconnect();
  } finally {
    await served.close();
  }
  const r = await verifyDisk(bad);
  assert.equal(r.ok, false);
  assert.equal(r.highestContiguousSeq, 149);
  assert.deepEqual(r.outOfOrder.map((o) => [o.offset, o.seq, o.expectedSeq]), [[149 * RECORD_SIZE, 140, 150]]);
});

test('a raw image is read around its holes, and a hole punched under records is a gap', async () => {
  const raw = join(dir, 'holed.raw');
  await writeFile(raw, records(1, 300, 1n));
  await run('truncate', ['-s', '1G', raw]); // mostly hole: must not be read byte by byte
  const whole = await verifyDisk(raw);
  assert.equal(whole.ok, true, JSON.stringify(whole));
  assert.equal(whole.method, 'file');
  assert.equal(whole.highestContiguousSeq, 300);
  assert.ok(whole.elapsedMs < 5000, `${whole.elapsedMs} ms for a 1 GiB sparse image`);
  await run('fallocate', ['--punch-hole', '--offset', String(128 * RECORD_SIZE), '--length', String(16 * RECORD_SIZE), raw]);
  const holed = await verifyDisk(raw);
  assert.equal(holed.ok, false);
  assert.equal(holed.highestContiguousSeq, 128);
  assert.deepEqual(holed.gaps, [{ offset: 128 * RECORD_SIZE, expectedSeq: 129 }]);
});

test('an aborted verification stops with the abort, for raw and qcow2', async () => {
  for (const img of [join(dir, 'base.raw'), overlay]) {
    await assert.rejects(verifyDisk(img, { signal: AbortSignal.abort() }), (e) => (e instanceof ReboundError && e.code === 'nbd-aborted') || (e as Error).name === 'AbortError', img);
  }
});

test('something that is not a disk image is refused with a clear error', async () => {
  await assert.rejects(verifyDisk(join(dir, 'missing.qcow2')), (e) => e instanceof ReboundError && e.code === 'image-unreadable');
});

/** An ext4 image holding fs-writer files made host-side (mkfs.ext4 -d), file 2 damaged if asked. */
async function fsImage(name: string, damage: boolean): Promise<string> {
  const tree = join(dir, `${name}-tree`);
  await mkdir(join(tree, 'rebound'), { recursive: true });
  for (let i = 0; i < 4; i++) {
    const f = encodeFile({ seed: 99n, index: i, generation: BigInt(10 + i), size: 8192 });
    if (damage && i === 2) f[5000]! ^= 0x01;
    await writeFile(join(tree, 'rebound', `f${String(i).padStart(6, '0')}`), f);
  }
  const img = join(dir, `${name}.raw`);
  await run('mkfs.ext4', ['-q', '-F', '-d', tree, img, '16M']);
  return img;
}

test('verifyFs reads an export by URI and lists each good file with its generation', async () => {
  const img = await fsImage('fs-good', false);
  const served = await serveImage(img, { format: 'raw', persistent: true });
  try {
    const r = await verifyFs(formatNbdUri(served.address));
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual(r.goodFiles, [0, 1, 2, 3].map((i) => ({ index: i, generation: 10 + i })));
  } finally {
    await served.close();
  }
});

test('verifyFs reports a damaged file, and an e2fsck error, without touching the image', async () => {
  const img = await fsImage('fs-bad', true);
  const r = await verifyFs(img);
  assert.equal(r.ok, false);
  assert.equal(r.fsck.exitCode, 0);
  assert.deepEqual(r.badFiles.map((b) => b.name), ['f000002']);
  assert.match(r.badFiles[0]!.reason, /checksum/);

  const broken = await fsImage('fs-broken', false);
  await run('debugfs', ['-w', '-R', 'clri rebound/f000001', broken]); // inode wiped, directory still names it
  const before = (await run('sha256sum', [broken])).stdout.split(' ')[0];
  const b = await verifyFs(broken);
  assert.equal(b.ok, false);
  assert.notEqual(b.fsck.exitCode, 0, b.fsck.output);
  assert.equal((await run('sha256sum', [broken])).stdout.split(' ')[0], before, 'verifyFs must not modify its input');
});

test('an image another process holds for writing is refused, unless forceShare', async () => {
  const holder = await serveImage(overlay, { format: 'qcow2', readOnly: false, persistent: true });
  try {
    await assert.rejects(verifyDisk(overlay), (e) => e instanceof ReboundError && e.code === 'nbd-server-failed' && /lock/.test(e.message));
    const r = await verifyDisk(overlay, { forceShare: true, expectSeq: 320 });
    assert.equal(r.ok, true, JSON.stringify(r));
  } finally {
    await holder.close();
  }
});
