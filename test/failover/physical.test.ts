// A physical machine (two raw image files) between two physical sites, through a real
// `rebound serve`: unplanned failover produces images at the recovery site that, once committed,
// are byte-identical to the source; the machine then changes there; reverse replication sends
// only the differing blocks (digests against the old images); a failback with --sync full to an
// alternate host of the primary site (the stop hook stops it at the recovery site, then a full
// download) brings every change home, byte for byte, under that host's root while the original
// images stay untouched; its commit removes the recovery-site images.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { api, points, waitFor, waitJob } from '../replication/support.ts';

const run = promisify(execFile);
const MIB = 2 ** 20;
let dir: string;
let server: ServerProcess;

interface Item { id: string; state: string; direction: string; details: { replication?: { bytesTotal?: number; method?: string }; placements?: Record<string, { disks: { path: string; format: string }[] }> } }
const item = (): Promise<Item> => api<Item>(server, 'GET', '/items/db1');
const start = async (path: string, body?: unknown): Promise<string> => (await api<{ job: { id: string } }>(server, 'POST', path, body ?? {})).job.id;

async function scribble(file: string, size: number, n: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    for (let i = 0; i < n; i++) await fh.write(randomBytes(4096), 0, 4096, Math.floor(Math.random() * (size / 4096)) * 4096);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function sha(path: string): Promise<string> {
  return (await run('sha256sum', [path])).stdout.split(' ')[0]!;
}

async function same(a: string, b: string): Promise<boolean> {
  return run('cmp', ['-s', a, b]).then(() => true, () => false);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rb-physfo-'));
  for (const d of ['a', 'b', 'vault']) await mkdir(join(dir, d), { recursive: true });
  await run('truncate', ['-s', '32M', join(dir, 'a', 'd0.img')]);
  await run('dd', ['if=/dev/urandom', `of=${join(dir, 'a', 'd0.img')}`, 'bs=1M', 'count=12', 'conv=notrunc', 'status=none']);
  await run('truncate', ['-s', '16M', join(dir, 'a', 'd1.img')]);
  await run('dd', ['if=/dev/urandom', `of=${join(dir, 'a', 'd1.img')}`, 'bs=64K', 'count=5', 'seek=40', 'conv=notrunc', 'status=none']);
  server = await startServerProcess({ dataDir: join(dir, 'vault'), env: { REBOUND_LOG_LEVEL: process.env['REBOUND_TEST_LOG'] ?? 'warn' } });
  await api(server, 'POST', '/sites', { name: 'srv', provider: 'physical', root: join(dir, 'a') });
  await api(server, 'POST', '/sites', { name: 'dr', provider: 'physical', root: join(dir, 'b') });
  await api(server, 'POST', '/policies', { name: 'p', frequency: '3s', retention: '1h', appConsistent: '0s', bandwidth: '4M' });
  await api(server, 'POST', '/pairings', { primary: 'srv', recovery: 'dr', policy: 'p' });
  // The stop hook runs in the site's root: it leaves a marker the "machine" (this test) obeys.
  await api(server, 'POST', '/machines', { name: 'db1', site: 'srv', disks: [join(dir, 'a', 'd0.img'), join(dir, 'a', 'd1.img')], config: { hooks: { stop: 'touch stopped' } } });
});

after(async () => {
  if (process.env['REBOUND_TEST_LOG'] && server) (await import('node:fs')).writeFileSync('/tmp/rb-physfo-server.log', server.logs());
  await server?.stop().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

test('a physical machine: unplanned failover to images, commit, reverse by differences, failback --sync full, commit', { timeout: 600_000 }, async () => {
  const src = [join(dir, 'a', 'd0.img'), join(dir, 'a', 'd1.img')];
  await waitJob(server, await start('/items/db1/protect'), 120_000);
  const until = Date.now() + 4000;
  while (Date.now() < until) {
    await scribble(src[0]!, 32 * MIB, 40);
    await scribble(src[1]!, 16 * MIB, 10);
    await new Promise((r) => setTimeout(r, 300));
  }
  const stoppedAt = Date.now();
  await waitFor('a point after the writes stopped', async () => (await points(server, 'db1')).find((p) => p.takenAt > stoppedAt + 100), 60_000, 500);

  // Unplanned failover: images at the physical recovery site.
  const fo = await waitJob(server, await start('/items/db1/failover', { mode: 'unplanned', point: 'latest' }), 180_000);
  assert.ok(fo.tasks.every((t) => t.state === 'succeeded'));
  let it = await item();
  assert.equal(it.state, 'failed-over');
  await waitJob(server, await start('/items/db1/commit'), 180_000);
  it = await item();
  const atB = it.details.placements?.[Object.keys(it.details.placements ?? {}).find((k) => it.details.placements![k]!.disks[0]!.path.startsWith(join(dir, 'b')))!]?.disks ?? [];
  assert.equal(atB.length, 2, JSON.stringify(it.details.placements));
  for (const [i, d] of atB.entries()) {
    assert.equal(d.format, 'raw');
    assert.ok(await same(d.path, src[i]!), `${d.path} is byte-identical to ${src[i]}`);
  }

  // The machine now runs at dr and changes there; reverse replication sends the differences.
  await scribble(atB[0]!.path, 32 * MIB, 30);
  await scribble(atB[1]!.path, 16 * MIB, 10);
  await waitJob(server, await start('/items/db1/reverse-replicate'), 180_000);
  it = await item();
  assert.equal(it.state, 'protected');
  assert.equal(it.direction, 'reverse');
  const sent = it.details.replication?.bytesTotal ?? Infinity;
  assert.ok(sent <= 40 * 64 * 1024, `reverse replication sent ${sent} bytes for 40 changed 4 KiB blocks (64 KiB replica blocks)`);
  assert.equal(it.details.replication?.method, 'digests');

  // A failback --sync full cancelled while its data is on the way: the replica at srv stays at
  // a consistent point (scrub finds every retained point intact), replication resumes by
  // differences, and a drill at srv boots images identical to what dr holds. (The 4 MB/s cap
  // of the policy keeps the full download on the wire for a few seconds.)
  const settled = Date.now();
  await waitFor('a point of dr after the last change', async () => (await points(server, 'db1')).find((p) => p.takenAt > settled + 100), 60_000, 500);
  const cancelled = await start('/items/db1/failover', { mode: 'planned', sync: 'full' });
  await waitFor('the full download on its way', async () => (await api<{ tasks: { state: string }[] }>(server, 'GET', `/jobs/${cancelled}`)).tasks[1]?.state === 'running', 60_000, 50);
  await api(server, 'POST', `/jobs/${cancelled}/cancel`);
  await waitJob(server, cancelled, 120_000, 'cancelled');
  assert.equal((await item()).state, 'failover-cancelled');
  await rm(join(dir, 'b', 'stopped'), { force: true });
  const scrub = await waitJob(server, await start('/items/db1/scrub'), 120_000);
  assert.equal(scrub.state, 'succeeded');
  const afterCancel = await points(server, 'db1');
  assert.ok(afterCancel.length > 0 && afterCancel.every((p) => p.status === 'ok'), `every point at srv intact after the cancel: ${JSON.stringify(afterCancel.map((p) => p.status))}`);
  await waitJob(server, await start('/items/db1/protect'), 180_000);
  assert.equal((await item()).state, 'protected');
  await waitJob(server, await start('/items/db1/test-failover', { point: 'latest' }), 120_000);
  const drill = (await api<{ details: { test?: { disks: { path: string }[] } } }>(server, 'GET', '/items/db1')).details.test?.disks ?? [];
  assert.equal(drill.length, 2);
  for (const [i, d] of drill.entries()) {
    // The drill's overlays read the replica store, encrypted at rest: the key file lies beside them.
    const keys = (await readdir(dirname(d.path))).filter((f) => f.endsWith('.key'));
    const objs = keys.flatMap((f) => ['--object', `secret,id=${f.slice(0, -4)},file=${join(dirname(d.path), f)},format=raw`]);
    const r = await run('qemu-img', ['compare', ...objs, '--image-opts', `driver=qcow2,file.filename=${d.path}`, `driver=raw,file.filename=${atB[i]!.path}`]).then(() => null, (e: { stdout?: string; stderr?: string }) => `${e.stdout ?? ''}${e.stderr ?? ''}`);
    assert.equal(r, null, `${d.path} (drill at srv) differs from ${atB[i]!.path} at dr: ${r}`);
  }
  await waitJob(server, await start('/items/db1/test-cleanup', { notes: 'srv boots what dr had after a cancelled failback' }), 60_000);

  // Hosts of srv: a local alternate host, a remote one, and roots that would leave the site.
  await api(server, 'POST', '/sites/srv/hosts', { name: 'alt' });
  await api(server, 'POST', '/sites/srv/hosts', { name: 'far', address: '192.0.2.7' });
  for (const root of [join(dir, 'b', 'x'), '../escape', join(dir, 'a')]) {
    const r = await fetch(`${server.url}/api/v1/sites/srv/hosts`, { method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'bad', config: { root } }) });
    assert.equal(r.status, 400, `host root ${root}`);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'host-root-outside-site');
  }
  const refuse = async (host: string, status: number, code: string, words: RegExp): Promise<void> => {
    const r = await fetch(`${server.url}/api/v1/items/db1/failover`, { method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ mode: 'planned', sync: 'full', host }) });
    const e = ((await r.json()) as { error: { code: string; message: string } }).error;
    assert.equal(r.status, status, JSON.stringify(e));
    assert.equal(e.code, code);
    assert.match(e.message, words);
  };
  await refuse('nosuch', 404, 'host.not-found', /site srv has no host named 'nosuch' \(its hosts: alt, far\)/);
  await refuse('far', 409, 'host-remote', /host agent/);
  assert.equal((await item()).state, 'protected', 'a refused failback changes nothing');

  // Failback with a full download (--sync full: no digests, no phase 1) to the alternate host:
  // the stop hook stops it at dr, then every allocated block is sent and the machine's images
  // are made under srv's host alt; the original images at srv are left as they were.
  const original = await Promise.all(src.map(sha));
  await scribble(atB[0]!.path, 32 * MIB, 20);
  const fb = await start('/items/db1/failover', { mode: 'planned', sync: 'full', host: 'alt' });
  const fbDone = await waitJob(server, fb, 240_000);
  const fbLog = (await api<{ log: { message: string }[] }>(server, 'GET', `/jobs/${fb}`)).log.map((l) => l.message).join('\n');
  assert.match(fbLog, /--sync full: every allocated block/);
  assert.equal(fbDone.tasks.length, 5);
  assert.ok((await stat(join(dir, 'b', 'stopped'))).isFile(), 'the stop hook ran at dr');
  const want = await Promise.all(atB.map((d) => sha(d.path)));
  await waitJob(server, await start('/items/db1/commit'), 180_000);
  it = await item();
  const home = Object.entries(it.details.placements ?? {}).find(([, p]) => p.disks[0]!.path.startsWith(join(dir, 'a')))?.[1]?.disks ?? [];
  assert.equal(home.length, 2, JSON.stringify(it.details.placements));
  for (const [i, d] of home.entries()) {
    assert.ok(d.path.startsWith(join(dir, 'a', 'hosts', 'alt') + '/'), `${d.path} is under host alt's root`);
    assert.equal(await sha(d.path), want[i], `${d.path} holds exactly what dr had`);
  }
  assert.deepEqual(await Promise.all(src.map(sha)), original, 'the original images at srv are untouched by a failback to another host');
  assert.match(fbLog, /on host alt/);

  // Protected again from the alternate host: replication reads its images there.
  await waitJob(server, await start('/items/db1/reverse-replicate'), 180_000);
  it = await item();
  assert.equal(it.state, 'protected');
  assert.equal(it.direction, 'forward');
  await scribble(home[0]!.path, 32 * MIB, 5);
  const changedAt = Date.now();
  await waitFor('a point of the images on host alt', async () => (await points(server, 'db1')).find((p) => p.takenAt > changedAt + 100), 60_000, 500);
  for (const d of atB) await assert.rejects(stat(d.path), `${d.path} was removed by the failback's commit`);
});
