// Token secrets against a real `rebound serve` logging at trace level: tokens of every role are
// created and used (allowed, refused, revoked, expired, forged); afterwards no token secret is
// in the server's log, in the audit rows, in any answer but the one that created it, or in any
// byte of the vault's files (the SQLite database and its journal); the tokens table holds only
// sha256 hashes; expired and revoked tokens are refused with 401.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import { call, openVault } from '../api/helpers.ts';
import type { Store } from '../../src/store/open.ts';

let s: ServerProcess;
const secrets: { name: string; token: string; id: string }[] = [];
const answers: string[] = []; // every response body except the creating ones

const api = (method: string, p: string, token: string | undefined, body?: unknown) => call(s.url, method, `/api/v1${p}`, { token, body });

before(async () => {
  s = await startServerProcess({ env: { REBOUND_LOG_LEVEL: 'trace' } });
  for (const [name, role, expiresIn] of [['t-reader', 'reader'], ['t-operator', 'operator'], ['t-admin2', 'admin'], ['t-short', 'reader', '1s'], ['t-revoked', 'operator']] as const) {
    const r = await api('POST', '/tokens', s.token, { name, role, ...(expiresIn ? { expiresIn } : {}) });
    assert.equal(r.status, 201, r.text);
    const b = r.body as { token: string; id: string };
    assert.match(b.token, /^rbd_[A-Za-z0-9_-]{40,}$/);
    secrets.push({ name, token: b.token, id: b.id });
  }
});
after(async () => { await s?.cleanup(); });

const tok = (name: string): string => secrets.find((x) => x.name === name)!.token;

test('tokens work for what their role allows, and are refused when revoked, expired or forged', async () => {
  const keep = <T extends { text: string }>(r: T): T => { answers.push(r.text); return r; };
  assert.equal(keep(await api('GET', '/whoami', tok('t-reader'))).status, 200);
  assert.equal(keep(await api('POST', '/sites', tok('t-reader'), { name: 'x', provider: 'qemu', root: '/tmp/x-never' })).status, 403);
  assert.equal(keep(await api('POST', '/tokens', tok('t-operator'), { name: 'nope', role: 'admin' })).status, 403);
  assert.equal(keep(await api('GET', '/tokens', tok('t-admin2'))).status, 200);
  assert.equal(keep(await api('GET', '/whoami', tok('t-short'))).status, 200, 'a token before its expiry works');
  const revoked = secrets.find((x) => x.name === 't-revoked')!;
  assert.equal(keep(await api('GET', '/whoami', revoked.token)).status, 200);
  assert.equal(keep(await api('DELETE', `/tokens/${revoked.id}`, s.token)).status, 200);
  const r1 = keep(await api('GET', '/whoami', revoked.token));
  assert.equal(r1.status, 401);
  assert.match(r1.text, /revoked/);
  // A forged token with the right shape, and a real one with one character changed.
  const forged = `rbd_${'A'.repeat(43)}`;
  const tweaked = tok('t-admin2').slice(0, -1) + (tok('t-admin2').endsWith('A') ? 'B' : 'A');
  assert.equal(keep(await api('GET', '/whoami', forged)).status, 401);
  assert.equal(keep(await api('POST', '/tokens', tweaked, { name: 'nope', role: 'admin' })).status, 401);
  // The token in the wrong header shape: still a 401, and still not echoed.
  const odd = await call(s.url, 'GET', '/api/v1/whoami', {});
  assert.equal(odd.status, 401);
  const res = await fetch(`${s.url}/api/v1/whoami`, { headers: { authorization: `Token ${tok('t-reader')}` } });
  assert.equal(res.status, 401);
  answers.push(await res.text());
  await new Promise((r) => setTimeout(r, 1100));
  const r2 = keep(await api('GET', '/whoami', tok('t-short')));
  assert.equal(r2.status, 401, 'an expired token is refused');
  assert.match(r2.text, /expired/);
  keep(await api('GET', '/audit', s.token));
});

test('no answer but the creating one carries a secret', () => {
  for (const a of answers) for (const x of [...secrets, { name: 'admin', token: s.token }]) assert.ok(!a.includes(x.token), `an answer carries ${x.name}'s secret`);
  for (const a of answers) assert.ok(!/rbd_[A-Za-z0-9_-]{20,}/.test(a), `an answer carries something like a secret: ${a.slice(0, 200)}`);
});

test('the server log holds no token secret (the first admin token is printed once, by design)', async () => {
  const log = s.logs();
  assert.ok(log.length > 1000, 'trace logging produced a log to search');
  for (const x of secrets) assert.ok(!log.includes(x.token), `the log holds ${x.name}'s secret`);
  assert.equal(log.split(s.token).length - 1, 1, 'the first admin token appears exactly once');
  const printed = log.split('\n').filter((l) => l.includes(s.token));
  assert.match(printed[0] ?? '', /^first admin token: /);
  assert.ok(!/Bearer\s+rbd_/i.test(log), 'an Authorization header was logged');
});

test('the vault stores only sha256 hashes; no file in the data dir holds a secret', async () => {
  let vault: Store | undefined;
  try {
    vault = await openVault({ dataDir: s.dataDir });
    const rows = await vault.db.selectFrom('tokens').selectAll().execute();
    for (const x of [...secrets, { name: 'admin', token: s.token, id: '' }]) {
      const row = rows.find((r) => r.name === x.name);
      assert.ok(row, x.name);
      assert.equal(row.hash, createHash('sha256').update(x.token).digest('hex'));
    }
    assert.ok(!JSON.stringify(rows).includes('rbd_'), 'a secret in the tokens table');
    const audit = await vault.db.selectFrom('audit').selectAll().execute();
    assert.ok(audit.length >= 6, `${audit.length} audit rows`);
    assert.ok(audit.some((a) => a.status === 401) && audit.some((a) => a.status === 403), 'refusals are audited');
    assert.ok(!JSON.stringify(audit).includes('rbd_'), 'a secret in the audit rows');
  } finally {
    await vault?.close();
  }
  // Every byte of every file but admin.token (which is the first admin token, on purpose, 0600).
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d)) {
      const f = path.join(d, e);
      if (statSync(f).isDirectory()) walk(f);
      else files.push(f);
    }
  };
  walk(s.dataDir);
  assert.ok(files.some((f) => /\.(db|sqlite)/.test(f)), `the vault database is among ${files.join(', ')}`);
  for (const f of files) {
    const bytes = readFileSync(f);
    if (path.basename(f) === 'admin.token') {
      assert.equal(statSync(f).mode & 0o077, 0, 'admin.token is readable by its owner only');
      continue;
    }
    for (const x of [...secrets, { name: 'admin', token: s.token }]) assert.ok(!bytes.includes(x.token), `${f} holds ${x.name}'s secret`);
  }
});
