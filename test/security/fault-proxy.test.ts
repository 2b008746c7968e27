// The TCP fault proxy (src/faults/tcp-proxy.ts) against real sockets on 127.0.0.1: bytes pass
// intact and in order; cut resets live connections and refuses new ones for its duration; drop
// and half-open lose bytes without closing anything; latency and the bandwidth cap slow a
// transfer by what they say; and a real replication transfer through it breaks on a cut and
// resumes after, resending nothing acknowledged.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { receiveTransfer, sendTransfer } from '../../src/datapath/frame-stream.ts';
import type { PlannedExtent } from '../../src/datapath/frame-stream.ts';
import { startFaultProxy } from '../../src/faults/tcp-proxy.ts';
import type { FaultProxy } from '../../src/faults/tcp-proxy.ts';

let echo: Server;
let echoPort: number;
let received = 0; // bytes the echo server got, whether or not it could answer
let proxy: FaultProxy;

before(async () => {
  echo = createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.on('data', (d: Buffer) => { received += d.length; s.write(d); });
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as AddressInfo).port;
  proxy = await startFaultProxy({ target: { port: echoPort } });
});
after(async () => {
  await proxy.close();
  await new Promise<void>((r) => echo.close(() => r()));
});

function dial(port = proxy.port): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads until `n` bytes arrived or `ms` passed. */
function readBytes(s: Socket, n: number, ms: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    let len = 0;
    const done = (): void => { clearTimeout(t); s.off('data', on); resolve(Buffer.concat(got)); };
    const on = (d: Buffer): void => { got.push(d); len += d.length; if (len >= n) done(); };
    const t = setTimeout(done, ms);
    s.on('data', on);
  });
}

const closed = (s: Socket): Promise<{ error: string | null }> =>
  new Promise((resolve) => {
    let error: string | null = null;
    s.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message; });
    if (s.destroyed) resolve({ error });
    else s.once('close', () => resolve({ error }));
  });

test('bytes pass intact and in order, both ways', async () => {
  proxy.heal();
  const s = await dial();
  const data = randomBytes(3 * 1024 * 1024);
  const reading = readBytes(s, data.length, 10_000);
  for (let i = 0; i < data.length; i += 100_000) s.write(data.subarray(i, i + 100_000));
  const back = await reading;
  assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
  s.end();
  await closed(s);
});

test('cut resets open connections and refuses new ones for its duration, then lets them in', async () => {
  proxy.heal();
  const s = await dial();
  s.write('hello');
  assert.equal((await readBytes(s, 5, 2000)).toString(), 'hello');
  const gone = closed(s);
  const refusedBefore = proxy.stats().refused;
  proxy.cut(400);
  assert.equal((await gone).error, 'ECONNRESET', 'the open connection was reset');
  // Reset at once: the connect itself may already fail, or the socket dies right after.
  const r = await dial().then((d) => closed(d), (e: NodeJS.ErrnoException) => ({ error: e.code ?? null }));
  assert.equal(r.error, 'ECONNRESET', 'a connection during the cut is reset at once');
  assert.equal(proxy.stats().refused, refusedBefore + 1);
  await new Promise((res) => setTimeout(res, 450));
  const later = await dial();
  later.write('again');
  assert.equal((await readBytes(later, 5, 2000)).toString(), 'again');
  later.end();
  await closed(later);
});

test('drop loses bytes silently and keeps the connection; turning it off restores the flow', async () => {
  proxy.heal();
  const s = await dial();
  const before = received;
  proxy.drop(true);
  s.write('lost bytes');
  assert.equal((await readBytes(s, 1, 300)).length, 0);
  assert.equal(received, before, 'nothing reached the target');
  assert.equal(s.destroyed, false);
  proxy.drop(false);
  s.write('kept');
  assert.equal((await readBytes(s, 4, 2000)).toString(), 'kept');
  s.end();
  await closed(s);
});

test('half-open: the target gets the bytes, no answer comes back, and nothing closes', async () => {
  proxy.heal();
  const s = await dial();
  const before = received;
  proxy.halfOpen('to-client');
  s.write('are you there?');
  assert.equal((await readBytes(s, 1, 400)).length, 0, 'no reply reached the client');
  assert.equal(received - before, 14, 'the request reached the target');
  assert.equal(s.destroyed, false);
  assert.ok(proxy.stats().dropped['to-client'] >= 14);
  proxy.heal();
  s.end();
  await closed(s);
});

test('latency delays each direction by what it says', async () => {
  proxy.heal();
  const s = await dial();
  proxy.latency(150);
  const t0 = performance.now();
  s.write('ping');
  assert.equal((await readBytes(s, 4, 3000)).toString(), 'ping');
  const rtt = performance.now() - t0;
  assert.ok(rtt >= 290 && rtt < 1500, `round trip ${rtt.toFixed(0)} ms with 150 ms each way`);
  proxy.heal();
  s.end();
  await closed(s);
});

test('the bandwidth cap holds a transfer to its rate', async () => {
  proxy.heal();
  const s = await dial();
  proxy.bandwidth(512 * 1024);
  const data = randomBytes(256 * 1024);
  const t0 = performance.now();
  const reading = readBytes(s, data.length, 10_000);
  s.write(data);
  const back = await reading;
  const ms = performance.now() - t0;
  assert.ok(back.equals(data));
  // 256 KiB at 512 KiB/s each way is ≥ 0.5 s one way (both ways overlap).
  assert.ok(ms >= 450 && ms < 4000, `${ms.toFixed(0)} ms for 256 KiB at 512 KiB/s`);
  proxy.heal();
  s.end();
  await closed(s);
});

test('a replication transfer through the proxy breaks on a cut and resumes without resending what was acknowledged', async () => {
  const vaultKey = randomBytes(32);
  let acked = -1;
  const got = new Map<number, Buffer>();
  const outcomes: unknown[] = [];
  const recv = createServer((sock) => {
    sock.on('error', () => {});
    receiveTransfer(sock, {
      vaultKey,
      ackedThrough: async () => acked,
      apply: async (f) => { got.set(f.header.offset, f.data); },
      checkpoint: async (_t, seq) => { acked = seq; },
    }).then((r) => outcomes.push(r), (e: unknown) => outcomes.push(e));
  });
  await new Promise<void>((r) => recv.listen(0, '127.0.0.1', r));
  const p = await startFaultProxy({ target: { port: (recv.address() as AddressInfo).port } });
  try {
    const blocks = Array.from({ length: 40 }, () => randomBytes(64 * 1024));
    const plan: PlannedExtent[] = blocks.map((_, i) => ({ itemId: 'vm', diskId: 'vda', pointId: 'p', offset: i * 65536, length: 65536 }));
    const reads: number[] = [];
    const opts = { vaultKey, transferId: 't', plan, window: 4, read: async (e: PlannedExtent) => { reads.push(e.offset); return blocks[e.offset / 65536]!; } };
    p.bandwidth(1024 * 1024); // ~2.5 s for the whole plan: time to cut it part-way
    const first = sendTransfer(await dial(p.port), opts);
    const failed = assert.rejects(first);
    await new Promise((r) => setTimeout(r, 700));
    p.cut(200);
    await failed;
    const ackedAtCut = acked;
    assert.ok(ackedAtCut >= 1 && ackedAtCut < 39, `part of the plan was acknowledged (${ackedAtCut})`);
    await new Promise((r) => setTimeout(r, 250));
    p.heal();
    reads.length = 0;
    const res = await sendTransfer(await dial(p.port), opts);
    assert.equal(res.skipped, ackedAtCut + 1);
    assert.equal(reads[0], (ackedAtCut + 1) * 65536, 'the resumed session starts after the last acknowledged frame');
    for (let i = 0; i < 40; i++) assert.ok(got.get(i * 65536)?.equals(blocks[i]!), `block ${i}`);
  } finally {
    await p.close();
    await new Promise<void>((r) => recv.close(() => r()));
  }
});
