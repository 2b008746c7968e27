// Network namespace helpers (src/faults/netns.ts), for real: two namespaces joined by a veth
// pair carry TCP between Node children; a tbf cap slows a transfer by its rate; a cut makes the
// other side unreachable for its duration and the link works again after; netem works where the kernel has it and otherwise fails
// with 'netem-unavailable' (this machine: no sch_netem); destroy() kills the children and
// removes both namespaces.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createNetnsLink, netemAvailable } from '../../src/faults/netns.ts';
import type { NetnsLink } from '../../src/faults/netns.ts';
import { ReboundError } from '../../src/domain/errors.ts';

const PORT = 7070;
let link: NetnsLink;
let server: ChildProcess;

const ECHO = `require('node:net').createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(${PORT}, process.argv[1], () => console.log('ready'));`;

// Connects to the echo server, sends argv[2] bytes, waits for them back: prints {ok, ms} or {ok:false, code}.
const CLIENT = `
const [host, n, timeout] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const t0 = performance.now();
const s = require('node:net').connect({ host, port: ${PORT} });
const timer = setTimeout(() => { console.log(JSON.stringify({ ok: false, code: 'timeout' })); process.exit(0); }, timeout);
s.on('error', (e) => { console.log(JSON.stringify({ ok: false, code: e.code })); process.exit(0); });
let got = 0;
s.on('connect', () => s.write(Buffer.alloc(n, 7)));
s.on('data', (d) => { got += d.length; if (got >= n) { clearTimeout(timer); console.log(JSON.stringify({ ok: true, ms: performance.now() - t0 })); process.exit(0); } });
`;

function output(c: ChildProcess): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    c.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    c.once('exit', () => resolve(out));
  });
}

async function probe(bytes: number, timeoutMs: number): Promise<{ ok: boolean; ms?: number; code?: string }> {
  const c = link.spawnNode('a', ['-e', CLIENT, link.b.addr, String(bytes), String(timeoutMs)]);
  return JSON.parse((await output(c)).trim()) as { ok: boolean; ms?: number; code?: string };
}

before(async () => {
  link = await createNetnsLink();
  server = link.spawnNode('b', ['-e', ECHO, link.b.addr]);
  await new Promise<void>((resolve, reject) => {
    server.stdout?.once('data', () => resolve());
    server.once('exit', (code) => reject(new Error(`echo server exited ${code}`)));
  });
});
after(async () => { await link?.destroy(); });

test('two namespaces joined by a veth pair carry TCP between children', async () => {
  const names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(names.includes(link.a.ns) && names.includes(link.b.ns));
  const r = await probe(64 * 1024, 5000);
  assert.equal(r.ok, true, JSON.stringify(r));
  // The root namespace has no route to the pair's addresses: the sites are isolated.
  assert.ok(!execFileSync('ip', ['-o', 'addr'], { encoding: 'utf8' }).includes(link.a.addr));
});

test('a tbf rate cap slows a transfer to its rate, and clear() lifts it', async () => {
  await link.rate('a', 8_000_000); // 1 MB/s from a to b
  const capped = await probe(512 * 1024, 10_000);
  await link.clear('a');
  const free = await probe(512 * 1024, 10_000);
  assert.ok(capped.ok && free.ok);
  assert.ok(capped.ms! >= 400, `512 KiB at 1 MB/s took ${capped.ms!.toFixed(0)} ms`);
  assert.ok(free.ms! < capped.ms! / 2, `uncapped ${free.ms!.toFixed(0)} ms vs capped ${capped.ms!.toFixed(0)} ms`);
});

test('a cut makes the other site unreachable for its duration; after it the link works again', async () => {
  const cutting = link.cut(1.2);
  await new Promise((r) => setTimeout(r, 100));
  const during = await probe(1024, 600);
  assert.equal(during.ok, false, 'reachable during the cut');
  await cutting;
  const afterCut = await probe(1024, 5000);
  assert.equal(afterCut.ok, true, JSON.stringify(afterCut));
});

test('netem delay where the kernel has sch_netem, else a clear netem-unavailable error', async () => {
  if (await netemAvailable()) {
    await link.netem('a', { delayMs: 100 });
    const r = await probe(1024, 5000);
    await link.clear('a');
    assert.ok(r.ok && r.ms! >= 100, JSON.stringify(r));
  } else {
    await assert.rejects(link.netem('a', { delayMs: 100, lossPercent: 1 }), (err: unknown) => {
      assert.ok(err instanceof ReboundError);
      assert.equal(err.code, 'netem-unavailable');
      assert.match(err.hint ?? '', /tcp-proxy/);
      return true;
    });
    assert.equal((await probe(1024, 5000)).ok, true, 'the failed netem left the link working');
  }
});

test('destroy kills the children and removes both namespaces', async () => {
  const extra = await createNetnsLink({ prefix: 'rbd' });
  const sleeper = extra.spawn('b', 'sleep', ['60']);
  const exited = new Promise((r) => sleeper.once('exit', r));
  await extra.destroy();
  await exited;
  assert.notEqual(sleeper.signalCode ?? sleeper.exitCode, null);
  const names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  assert.ok(!names.includes(extra.a.ns) && !names.includes(extra.b.ns), names);
});
