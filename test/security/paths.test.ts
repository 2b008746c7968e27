// Every API input that names a path, against a real `rebound serve`: a site's root and a
// machine's disks refuse relative paths, '..', NUL and symlink escapes out of the site root
// (file links, directory links, links to block devices); nothing is stored for a refused call;
// and the static docs route serves no file from outside its own folder, however encoded.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { call, isErrorBody } from '../api/helpers.ts';

let s: ServerProcess;
let work: string;
let root: string;
let outside: string;

const api = (method: string, p: string, body?: unknown) => call(s.url, method, `/api/v1${p}`, { token: s.token, body });

before(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'rebound-sec-paths-'));
  root = path.join(work, 'site-root');
  outside = path.join(work, 'outside');
  mkdirSync(path.join(root, 'vms'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(path.join(root, 'vms', 'ok.img'), Buffer.alloc(1024 * 1024));
  writeFileSync(path.join(outside, 'secret.img'), Buffer.alloc(1024 * 1024));
  symlinkSync(path.join(outside, 'secret.img'), path.join(root, 'vms', 'link-out.img'));
  symlinkSync(outside, path.join(root, 'dir-out'));
  symlinkSync('../../outside/secret.img', path.join(root, 'vms', 'rel-link-out.img'));
  symlinkSync('/dev/loop0', path.join(root, 'vms', 'dev-link.img'));
  s = await startServerProcess();
  const r = await api('POST', '/sites', { name: 'site-a', provider: 'qemu', root });
  assert.equal(r.status, 201, r.text);
});
after(async () => {
  await s?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function refused(method: string, p: string, body: unknown, what: string): Promise<void> {
  const r = await api(method, p, body);
  assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
  assert.ok(isErrorBody(r.body), `${what}: error body`);
}

test('a site root must be an absolute path without NUL', async () => {
  const bad: [string, string][] = [
    ['relative', 'site-root-2'],
    ['dot-relative', './x'],
    ['parent-relative', '../x'],
    ['NUL', `${root}\0/x`],
    ['empty', ''],
    ['a file, not a directory', path.join(root, 'vms', 'ok.img')],
  ];
  for (const [what, r] of bad) await refused('POST', '/sites', { name: `s-${what.replace(/[^a-z]/g, '')}`, provider: 'qemu', root: r }, `root ${what}`);
  const sites = await api('GET', '/sites');
  assert.deepEqual((sites.body as { items: { name: string }[] }).items.map((x) => x.name), ['site-a']);
});

// docs/api.md and issue #9: "every path an input names is confined … (no traversal)". The sites
// route normalises '/a/../b' to '/b' instead of refusing it (docs/security-tests.md).
test("a site root containing '..' is refused", async () => {
  await refused('POST', '/sites', { name: 's-dotdot', provider: 'qemu', root: `${root}/../outside` }, "root with '..'");
});

test('machine disks: relative, NUL, .. and every symlink escape out of the site root are refused', async () => {
  const bad: [string, string][] = [
    ['relative', 'vms/ok.img'],
    ['dot-relative', './vms/ok.img'],
    ['NUL', `${root}/vms/ok.img\0`],
    ['dot-dot out', `${root}/../outside/secret.img`],
    ['dot-dot back in', `${root}/vms/../vms/ok.img`],
    ['absolute outside', path.join(outside, 'secret.img')],
    ['file link out', path.join(root, 'vms', 'link-out.img')],
    ['relative file link out', path.join(root, 'vms', 'rel-link-out.img')],
    ['directory link out', path.join(root, 'dir-out', 'secret.img')],
    ['link to a device, not named under /dev', path.join(root, 'vms', 'dev-link.img')],
    ['missing', path.join(root, 'vms', 'nope.img')],
    ['the root itself (a directory)', root],
    ['/etc/shadow', '/etc/shadow'],
    ['/proc/self/environ', '/proc/self/environ'],
  ];
  for (const [what, disk] of bad) {
    await refused('POST', '/machines', { name: 'm-bad', site: 'site-a', disks: [disk] }, `disk ${what}`);
    // One bad disk among good ones spoils the call too.
    await refused('POST', '/machines', { name: 'm-bad', site: 'site-a', disks: [path.join(root, 'vms', 'ok.img'), disk] }, `disk ${what} with a good one`);
  }
  const list = await api('GET', '/machines');
  assert.deepEqual((list.body as { items: unknown[] }).items, [], 'no machine was stored');
  // The control: a disk inside the root is accepted.
  const ok = await api('POST', '/machines', { name: 'm-ok', site: 'site-a', disks: [path.join(root, 'vms', 'ok.img')] });
  assert.equal(ok.status, 201, ok.text);
});

// A disk given as a link inside the root is checked through the link but stored as the link's
// path, so retargeting the link afterwards points replication at any file (docs/security-tests.md).
test('a disk named through a symlink is stored by its real path, so retargeting the link later smuggles nothing', async () => {
  const link = path.join(root, 'vms', 'in-link.img');
  symlinkSync(path.join(root, 'vms', 'ok.img'), link);
  const r = await api('POST', '/machines', { name: 'm-link', site: 'site-a', disks: [link] });
  assert.equal(r.status, 201, r.text);
  unlinkSync(link);
  symlinkSync(path.join(outside, 'secret.img'), link);
  const m = await api('GET', '/machines/m-link');
  const disks = (m.body as { disks: { path: string }[] }).disks;
  assert.deepEqual(disks.map((d) => d.path), [path.join(root, 'vms', 'ok.img')]);
});

test('the docs route serves nothing outside its folder, however the traversal is encoded', async () => {
  const control = await fetch(`${s.url}/api/v1/docs/static/swagger-ui.css`);
  assert.equal(control.status, 200, 'the docs route does serve its own files');
  await control.text();
  for (const p of ['/api/v1/docs/../../../package.json', '/api/v1/docs/..%2f..%2f..%2fpackage.json', '/api/v1/docs/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/api/v1/docs/static/..%252f..%252fpackage.json', '/api/v1/docs/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd']) {
    const res = await fetch(s.url + p);
    const text = await res.text();
    assert.ok(!/"devDependencies"|root:x:0:0/.test(text), `${p} served a file from outside (${res.status})`);
  }
});
