// The NBD client against qemu-nbd: reads equal the image, block status equals `qemu-img map`
// and `nbdinfo --map`, the dirty-bitmap meta context shows what was written, writes land, and
// failures (unknown export, missing context, refused connection, silent server) are clear.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NbdClient } from '../../src/nbd/client.ts';
import type { Extent } from '../../src/nbd/client.ts';
import { STATE } from '../../src/nbd/protocol.ts';
import { serveImage } from '../../src/nbd/qemu-nbd.ts';
import { ReboundError } from '../../src/domain/errors.ts';

const run = promisify(execFile);
let dir: string;
let image: string;
const MiB = 1024 * 1024;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rebound-nbd-test-'));
  image = join(dir, 'disk.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  // Data, zeros and holes in a known pattern; then a bitmap that records only the later writes.
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 3M', '-c', 'write -P 0x11 10M 512k', '-c', 'write -z 20M 1M', '-c', 'write -P 0x5c 63M 1M', image]);
  await run('qemu-img', ['bitmap', '--add', '-g', '65536', image, 'b0']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 1M 64k', '-c', 'write -P 0x78 40M 200k', image]);
  await run('qemu-img', ['bitmap', '--disable', image, 'b0']); // an enabled bitmap cannot be exported read-only
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function withClient<T>(opts: Parameters<typeof serveImage>[1], meta: string[], fn: (c: NbdClient) => Promise<T>): Promise<T> {
  const served = await serveImage(image, { format: 'qcow2', ...opts });
  try {
    const c = await NbdClient.connect(served.address, { metaContexts: meta });
    try {
      return await fn(c);
    } finally {
      await c.disconnect();
    }
  } finally {
    await served.close();
  }
}

test('reads equal the image, whole and in many pipelined pieces', async () => {
  const raw = join(dir, 'ref.raw');
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
  const ref = await readFile(raw);
  await withClient({}, [], async (c) => {
    assert.equal(c.size, 64 * MiB);
    assert.equal(c.info.readOnly, true);
    assert.ok(Buffer.from(await c.read(0, c.size)).equals(ref));
    const pieces = Array.from({ length: 200 }, (_, i) => ({ off: (i * 7919 * 4096 + i * 13) % (c.size - 70_000), len: 1 + ((i * 104_729) % 70_000) }));
    const got = await Promise.all(pieces.map((p) => c.read(p.off, p.len)));
    pieces.forEach((p, i) => assert.ok(got[i]!.equals(ref.subarray(p.off, p.off + p.len)), `piece ${i}`));
  });
});

test('base:allocation block status equals qemu-img map', async () => {
  const { stdout } = await run('qemu-img', ['map', '--output=json', '-f', 'qcow2', image]);
  const map = JSON.parse(stdout) as { start: number; length: number; zero: boolean; data: boolean }[];
  // qemu-img map: data=false → hole; zero=true → reads as zero. Merge equal neighbours.
  const want: Extent[] = [];
  for (const m of map) {
    const flags = (m.data ? 0 : STATE.HOLE) | (m.zero ? STATE.ZERO : 0);
    const last = want[want.length - 1];
    if (last && last.flags === flags) last.length += m.length;
    else want.push({ offset: m.start, length: m.length, flags });
  }
  await withClient({}, ['base:allocation'], async (c) => {
    assert.deepEqual(await c.blockStatusAll('base:allocation'), want);
  });
});

test('the qemu:dirty-bitmap context shows exactly the clusters written after the bitmap was added', async () => {
  await withClient({ bitmap: 'b0' }, ['base:allocation', 'qemu:dirty-bitmap:b0'], async (c) => {
    const dirty = (await c.blockStatusAll('qemu:dirty-bitmap:b0')).filter((e) => e.flags & 1);
    assert.deepEqual(dirty, [
      { offset: 1 * MiB, length: 64 * 1024, flags: 1 },
      { offset: 40 * MiB, length: 256 * 1024, flags: 1 }, // 200k rounded to 64k clusters
    ]);
    // One request answers for both contexts.
    const both = await c.blockStatus(0, MiB * 2);
    assert.deepEqual([...both.keys()].sort(), ['base:allocation', 'qemu:dirty-bitmap:b0']);
  });
  // Cross-check with libnbd's nbdinfo against a persistent server.
  const served = await serveImage(image, { format: 'qcow2', bitmap: 'b0', persistent: true });
  try {
    const ref = await run('nbdinfo', ['--map=qemu:dirty-bitmap:b0', '--json', `nbd+unix:///?socket=${served.address.path}`]);
    const refDirty = (JSON.parse(ref.stdout) as { offset: number; length: number; type: number }[]).filter((e) => e.type & 1);
    const c = await NbdClient.connect(served.address, { metaContexts: ['qemu:dirty-bitmap:b0'] });
    const ours = (await c.blockStatusAll('qemu:dirty-bitmap:b0')).filter((e) => e.flags & 1);
    await c.disconnect();
    assert.deepEqual(ours.map((e) => [e.offset, e.length]), refDirty.map((e) => [e.offset, e.length]));
  } finally {
    await served.close();
  }
});

test('writes with FUA and flush land in the image (checked with nbdcopy)', async () => {
  const copy = join(dir, 'rw.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', copy, '8M']);
  const data = Buffer.alloc(3 * MiB + 123);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
  const served = await serveImage(copy, { format: 'qcow2', readOnly: false, persistent: true });
  try {
    const c = await NbdClient.connect(served.address);
    assert.equal(c.info.readOnly, false);
    await Promise.all([c.write(4096, data.subarray(0, MiB)), c.write(4096 + MiB, data.subarray(MiB), { fua: true })]);
    await c.flush();
    assert.ok((await c.read(4096, data.length)).equals(data));
    await c.disconnect();
    const out = join(dir, 'rw.raw');
    await run('nbdcopy', [`nbd+unix:///?socket=${served.address.path}`, out]);
    const back = await readFile(out);
    assert.ok(back.subarray(4096, 4096 + data.length).equals(data));
    assert.ok(back.subarray(0, 4096).equals(Buffer.alloc(4096)));
  } finally {
    await served.close();
  }
});

test('works over TCP as over a unix socket', async () => {
  const port = await new Promise<number>((res) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => res(p));
    });
  });
  const qemu = spawn('qemu-nbd', ['-f', 'qcow2', '--read-only', '--persistent', '-b', '127.0.0.1', '-p', String(port), image], { stdio: 'ignore' });
  try {
    let c: NbdClient | undefined;
    for (let i = 0; i < 100 && !c; i++) {
      c = await NbdClient.connect({ host: '127.0.0.1', port }).catch(async () => {
        await new Promise((r) => setTimeout(r, 50));
        return undefined;
      });
    }
    assert.ok(c, 'qemu-nbd did not start listening on TCP');
    const got = await c.read(10 * MiB, 512 * 1024);
    assert.ok(got.equals(Buffer.alloc(512 * 1024, 0x11)));
    await c.disconnect();
  } finally {
    qemu.kill('SIGKILL');
  }
});

const codeOf = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ReboundError, String(err));
    return err.code;
  }
  return 'no error';
};

test('failures carry clear codes: unknown export, missing context, refused, silent server, range', async () => {
  const served = await serveImage(image, { format: 'qcow2', persistent: true });
  try {
    assert.equal(await codeOf(NbdClient.connect(served.address, { exportName: 'nope' })), 'nbd-export-not-found');
    assert.equal(await codeOf(NbdClient.connect(served.address, { metaContexts: ['qemu:dirty-bitmap:missing'] })), 'nbd-meta-context-unsupported');
    const c = await NbdClient.connect(served.address);
    assert.equal(await codeOf(c.read(c.size - 10, 11)), 'nbd-out-of-range');
    assert.equal(await codeOf(c.blockStatus(0, 4096)), 'nbd-no-meta-context');
    await c.disconnect();
  } finally {
    await served.close();
  }
  assert.equal(await codeOf(NbdClient.connect({ path: join(dir, 'no-such.sock') })), 'nbd-connect-failed');
  const silent = createServer(() => {}); // accepts and never speaks
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  try {
    const port = (silent.address() as { port: number }).port;
    assert.equal(await codeOf(NbdClient.connect({ host: '127.0.0.1', port }, { connectTimeoutMs: 300 })), 'nbd-timeout');
  } finally {
    silent.close();
    await new Promise((r) => setTimeout(r, 10));
  }
});

/** Starts qemu-storage-daemon exporting `file` (qcow2) as a named, writable NBD export. */
async function storageDaemon(file: string, name: string, bitmaps: string[]): Promise<{ socket: string; stop(): Promise<void> }> {
  const socket = join(dir, `${name}.sock`);
  const qsd = spawn('qemu-storage-daemon', [
    '--blockdev', `driver=file,node-name=f0,filename=${file}`,
    '--blockdev', 'driver=qcow2,node-name=disk0,file=f0',
    '--nbd-server', `addr.type=unix,addr.path=${socket}`,
    '--export', ['type=nbd,id=e0,node-name=disk0', `name=${name}`, 'writable=on', ...bitmaps.map((b, i) => `bitmaps.${i}=${b}`)].join(','),
  ], { stdio: 'ignore' });
  const exited = new Promise<void>((res) => qsd.once('exit', () => res()));
  const stop = async (): Promise<void> => {
    qsd.kill('SIGKILL');
    await exited;
  };
  for (let i = 0; i < 200; i++) {
    const up = await NbdClient.connect({ path: socket }, { exportName: name }).then(async (c) => { await c.disconnect(); return true; }, () => false);
    if (up) return { socket, stop };
    await new Promise((r) => setTimeout(r, 25));
  }
  await stop();
  throw new Error('qemu-storage-daemon did not start');
}

test('qemu-storage-daemon: a named export with a live bitmap sees our writes; write-zeroes and trim', async () => {
  const file = join(dir, 'qsd.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '8M']);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xaa 0 4M', file]);
  await run('qemu-img', ['bitmap', '--add', '-g', '65536', file, 'b1']);
  const qsd = await storageDaemon(file, 'disk0', ['b1']);
  try {
    await assert.rejects(NbdClient.connect({ path: qsd.socket }, { exportName: 'disk9', metaContexts: ['base:allocation'] }),
      (e) => e instanceof ReboundError && e.code === 'nbd-export-not-found' && /It offers: "disk0"/.test(e.message));
    await assert.rejects(NbdClient.connect({ path: qsd.socket }, { exportName: 'disk9' }),
      (e) => e instanceof ReboundError && e.code === 'nbd-export-not-found' && /It offers: "disk0"/.test(e.message));
    const c = await NbdClient.connect({ path: qsd.socket }, { exportName: 'disk0', metaContexts: ['base:allocation', 'qemu:dirty-bitmap:b1'] });
    assert.equal(c.info.canWriteZeroes, true);
    assert.equal(c.info.canTrim, true);
    assert.deepEqual((await c.blockStatusAll('qemu:dirty-bitmap:b1')).filter((e) => e.flags & 1), []);
    await c.write(2 * MiB + 4096, Buffer.alloc(8192, 0x42));
    await c.writeZeroes(0, MiB);
    await c.trim(6 * MiB, MiB);
    await c.flush();
    assert.deepEqual((await c.blockStatusAll('qemu:dirty-bitmap:b1')).filter((e) => e.flags & 1), [
      { offset: 0, length: MiB, flags: 1 },
      { offset: 2 * MiB, length: 64 * 1024, flags: 1 },
    ]);
    assert.ok((await c.read(0, MiB)).equals(Buffer.alloc(MiB)));
    assert.ok((await c.read(2 * MiB + 4096, 8192)).equals(Buffer.alloc(8192, 0x42)));
    const alloc = await c.blockStatusAll('base:allocation', 0, MiB);
    assert.ok(alloc.every((e) => e.flags & STATE.ZERO), JSON.stringify(alloc));
    // libnbd reads the same export the same way.
    const ref = await run('nbdinfo', ['--map=qemu:dirty-bitmap:b1', '--json', `nbd+unix:///disk0?socket=${qsd.socket}`]);
    const refDirty = (JSON.parse(ref.stdout) as { offset: number; length: number; type: number }[]).filter((e) => e.type & 1);
    assert.deepEqual(refDirty.map((e) => [e.offset, e.length]), [[0, MiB], [2 * MiB, 64 * 1024]]);
    await c.disconnect();
  } finally {
    await qsd.stop();
  }
});

test('a server that stops answering times the request out; one that dies fails what is in flight', async () => {
  const served = await serveImage(image, { format: 'qcow2', persistent: true });
  try {
    const c = await NbdClient.connect(served.address, { requestTimeoutMs: 400 });
    assert.ok((await c.read(0, 4096)).equals(Buffer.alloc(4096, 0xab)));
    served.process.kill('SIGSTOP');
    try {
      const t0 = performance.now();
      assert.equal(await codeOf(c.read(0, MiB)), 'nbd-timeout');
      assert.ok(performance.now() - t0 < 3000);
      assert.equal(await codeOf(c.read(0, 4096)), 'nbd-timeout', 'the connection stays closed after a timeout');
    } finally {
      served.process.kill('SIGCONT');
    }
  } finally {
    await served.close();
  }
  const again = await serveImage(image, { format: 'qcow2', persistent: true });
  try {
    const c = await NbdClient.connect(again.address);
    const inFlight = Array.from({ length: 8 }, (_, i) => codeOf(c.read(i * 4 * MiB, 4 * MiB)));
    again.process.kill('SIGKILL');
    const codes = await Promise.all(inFlight);
    // Some reads may have completed before the kill; none may hang or fail otherwise.
    assert.ok(codes.every((x) => x === 'no error' || x === 'nbd-closed'), codes.join(','));
    assert.equal(await codeOf(c.read(0, 4096)), 'nbd-closed');
  } finally {
    await again.close();
  }
});

test('aborting the signal closes the connection: requests in flight and later fail as nbd-aborted', async () => {
  const served = await serveImage(image, { format: 'qcow2', persistent: true });
  try {
    const ac = new AbortController();
    const c = await NbdClient.connect(served.address, { signal: ac.signal });
    const inFlight = Array.from({ length: 8 }, (_, i) => codeOf(c.read(i * 4 * MiB, 4 * MiB)));
    ac.abort();
    const codes = await Promise.all(inFlight);
    assert.ok(codes.every((x) => x === 'no error' || x === 'nbd-aborted'), codes.join(','));
    assert.equal(await codeOf(c.read(0, 4096)), 'nbd-aborted');
    assert.equal(await codeOf(NbdClient.connect(served.address, { signal: AbortSignal.abort() })), 'nbd-aborted');
    // The server is still fine for the next client.
    const d = await NbdClient.connect(served.address);
    assert.ok((await d.read(10 * MiB, 4096)).equals(Buffer.alloc(4096, 0x11)));
    await d.disconnect();
  } finally {
    await served.close();
  }
});
