// Component registration through a real `rebound serve`: register with a CSR, list, heartbeat,
// mTLS between two registered components, revoke (token 401, serial revoked, TLS refused), the
// client's saved-state reuse and re-registration, role checks, and no secret in the server log.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { openStore } from '../../src/store/open.ts';
import type { Store } from '../../src/store/open.ts';
import { generateKeyAndCsr } from '../../src/pki/keys.ts';
import { registerComponent } from '../../src/pki/register.ts';
import { clientOptions, createMtlsServer, peerChecker, RevocationList } from '../../src/pki/tls.ts';
import type { TlsMaterial } from '../../src/pki/tls.ts';
import type { ReboundError } from '../../src/domain/errors.ts';
import { dialects, freshPostgresDatabase } from '../support/db.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';

interface Answer { status: number; body: Record<string, unknown> }

const REPO = path.resolve(import.meta.dirname, '../..');
// The component verbs as bin/rebound's program has them (main.ts registers them).
const CLI = `
import { buildProgram } from './src/cli/main.ts';
const program = buildProgram();
try { await program.parseAsync(process.argv.slice(1), { from: 'user' }); }
catch (err) { process.stderr.write('rebound: ' + err.message + '\\n'); process.exitCode = 3; }
`;

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', CLI, '--', ...args], { cwd: REPO, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

for (const dialect of dialects) describe(`component registration API on ${dialect}`, () => {
  let srv: ServerProcess;
  let store: Store;
  let scratch: string;
  let readerToken: string;
  const secrets: string[] = [];

  const api = async (method: string, route: string, token: string, body?: unknown): Promise<Answer> => {
    const res = await fetch(`${srv.url}/api/v1${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };
  const errCode = (a: Answer): unknown => (a.body['error'] as { code?: string } | undefined)?.code;

  before(async () => {
    scratch = mkdtempSync(path.join(tmpdir(), 'rebound-pki-'));
    const dbUrl = dialect === 'postgres' ? await freshPostgresDatabase() : undefined;
    srv = await startServerProcess({ env: { REBOUND_LOG_LEVEL: 'debug' }, ...(dbUrl ? { dbUrl } : {}) });
    store = await openStore(dbUrl ? { url: dbUrl } : { dataDir: srv.dataDir });
    const site = await api('POST', '/sites', srv.token, { name: 'site-a', provider: 'qemu', root: path.join(scratch, 'site-a') });
    assert.equal(site.status, 201, JSON.stringify(site.body));
    const reader = await api('POST', '/tokens', srv.token, { name: 'viewer', role: 'reader' });
    readerToken = reader.body['token'] as string;
    secrets.push(readerToken);
  });
  after(async () => {
    await store?.close();
    await srv?.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  let ps: { id: string; serial: string; token: string; material: TlsMaterial };
  let agent: { id: string; serial: string; token: string; material: TlsMaterial };

  const register = async (name: string, role: string, address?: string) => {
    const { keyPem, csrPem } = await generateKeyAndCsr(name);
    secrets.push(keyPem, csrPem);
    const a = await api('POST', '/components', srv.token, { name, role, site: 'site-a', csr: csrPem, ...(address ? { address } : {}) });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    const b = a.body as { id: string; serial: string; token: string; cert: string; ca: string };
    secrets.push(b.token);
    return { id: b.id, serial: b.serial, token: b.token, material: { ca: b.ca, cert: b.cert, key: keyPem } };
  };

  it('registers a component from its CSR: a certificate of the vault CA naming it, and a token of its own', async () => {
    ps = await register('ps-1', 'process-server', '127.0.0.1:7481');
    agent = await register('agent-1', 'agent');
    const cert = new X509Certificate(ps.material.cert);
    assert.ok(cert.verify(new X509Certificate(ps.material.ca).publicKey));
    assert.equal(cert.subjectAltName, `IP Address:127.0.0.1, URI:urn:rebound:component:${ps.id}:process-server`);
    assert.equal(cert.serialNumber.toLowerCase(), ps.serial);
    assert.equal(agent.material.ca, ps.material.ca, 'one CA');
    const me = await api('GET', '/whoami', ps.token);
    assert.deepEqual(me.body, { name: 'component:ps-1', role: 'operator' });
  });

  it('refuses a second registration of an active name, a bad CSR, an unknown site, and a reader', async () => {
    const { csrPem } = await generateKeyAndCsr('x');
    const dup = await api('POST', '/components', srv.token, { name: 'ps-1', role: 'process-server', site: 'site-a', csr: csrPem });
    assert.equal(dup.status, 409);
    assert.equal(errCode(dup), 'component.exists');
    const bad = await api('POST', '/components', srv.token, { name: 'x1', role: 'agent', site: 'site-a', csr: 'not a csr' });
    assert.equal(bad.status, 400);
    assert.equal(errCode(bad), 'csr-malformed');
    const site = await api('POST', '/components', srv.token, { name: 'x2', role: 'agent', site: 'nowhere', csr: csrPem });
    assert.equal(site.status, 404);
    const addr = await api('POST', '/components', srv.token, { name: 'x3', role: 'agent', site: 'site-a', csr: csrPem, address: 'no-port' });
    assert.equal(errCode(addr), 'invalid-address');
    const asReader = await api('POST', '/components', readerToken, { name: 'x4', role: 'agent', site: 'site-a', csr: csrPem });
    assert.equal(asReader.status, 403);
    const asComponent = await api('POST', '/components', agent.token, { name: 'x5', role: 'agent', site: 'site-a', csr: csrPem });
    assert.equal(asComponent.status, 403, 'a component token cannot register others');
    const list = await api('GET', '/components', readerToken);
    assert.deepEqual((list.body['items'] as { name: string }[]).map((c) => c.name), ['agent-1', 'ps-1']);
  });

  it('lists and shows components to a reader; a heartbeat needs the component’s own token', async () => {
    const shown = await api('GET', '/components/ps-1', readerToken);
    assert.equal(shown.status, 200);
    assert.equal(shown.body['status'], 'active');
    assert.equal(shown.body['site'], 'site-a');
    assert.equal(shown.body['address'], '127.0.0.1:7481');
    assert.equal(shown.body['lastSeenAt'], null);
    const hb = await api('POST', '/components/ps-1/heartbeat', ps.token);
    assert.equal(hb.status, 200);
    assert.equal(typeof hb.body['lastSeenAt'], 'number');
    const other = await api('POST', '/components/ps-1/heartbeat', agent.token);
    assert.equal(other.status, 403);
    assert.equal(errCode(other), 'component.not-yours');
    assert.equal((await api('GET', '/components/nope', readerToken)).status, 404);
  });

  it('revoking a component stops its token, revokes its serial, and its TLS connections are refused', async () => {
    const revocations = new RevocationList(store);
    const refused: ReboundError[] = [];
    const server = createMtlsServer({ material: ps.material, check: peerChecker({ revocations, roles: ['agent'] }), onRefused: (e) => refused.push(e) }, (s) => {
      s.on('error', () => undefined);
      s.resume();
      s.end('hello\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const connect = () => new Promise<string>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ...clientOptions(agent.material, '127.0.0.1', { role: 'process-server', revocations }) });
      let got = '';
      s.on('data', (d: Buffer) => { got += d.toString(); });
      s.on('error', () => undefined);
      s.on('close', () => resolve(got));
    });
    try {
      assert.equal(await connect(), 'hello\n', 'a registered agent reaches a registered process server');

      assert.equal((await api('DELETE', '/components/agent-1', readerToken)).status, 403, 'a reader cannot revoke');
      const del = await api('DELETE', '/components/agent-1', srv.token);
      assert.equal(del.status, 200);
      assert.equal(del.body['status'], 'revoked');
      assert.equal(typeof del.body['revokedAt'], 'number');
      const me = await api('GET', '/whoami', agent.token);
      assert.equal(me.status, 401);
      assert.match(String((me.body['error'] as { message: string }).message), /component:agent-1.*revoked/);
      assert.equal((await api('DELETE', '/components/agent-1', srv.token)).status, 200, 'revoking twice is harmless');

      await revocations.refresh();
      assert.equal(revocations.isRevoked(agent.serial), true);
      assert.equal(revocations.isRevoked(ps.serial), false);
      assert.equal(await connect(), '', 'the revoked agent is cut off');
      assert.equal(refused[0]?.code, 'peer-revoked');
      const audit = await api('GET', '/audit', srv.token);
      assert.ok(JSON.stringify(audit.body).includes('DELETE /api/v1/components/:name'));
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('the client saves its registration, reuses it, and registers again after a revocation', async () => {
    const stateDir = path.join(scratch, 'mt-state');
    const opts = { vaultUrl: srv.url, token: srv.token, name: 'mt-1', role: 'master-target' as const, site: 'site-a', address: '127.0.0.1:7482', stateDir };
    const first = await registerComponent(opts);
    secrets.push(first.token, first.material.key);
    assert.equal(first.source, 'registered');
    assert.equal(statSync(path.join(stateDir, 'key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(path.join(stateDir, 'token')).mode & 0o777, 0o600);
    assert.equal(readFileSync(path.join(stateDir, 'key.pem'), 'utf8'), first.material.key);

    const second = await registerComponent({ ...opts, token: 'rbd_not-needed-when-reusing' });
    assert.equal(second.source, 'saved');
    assert.equal(second.verified, true);
    assert.equal(second.serial, first.serial);
    // The vault down (nothing listens on port 1): saved state is used, marked unverified.
    const offline = await registerComponent({ ...opts, vaultUrl: 'http://127.0.0.1:1' });
    assert.deepEqual([offline.source, offline.verified, offline.serial], ['saved', false, first.serial]);
    await assert.rejects(registerComponent({ ...opts, vaultUrl: 'http://127.0.0.1:1', stateDir: path.join(scratch, 'never') }), { code: 'vault-unreachable' });
    assert.equal(second.material.key, first.material.key);

    assert.equal((await api('DELETE', '/components/mt-1', srv.token)).status, 200);
    const third = await registerComponent(opts);
    secrets.push(third.token, third.material.key);
    assert.equal(third.source, 'registered');
    assert.match(third.reason ?? '', /no longer accepts its token/);
    assert.notEqual(third.serial, first.serial);
    assert.notEqual(third.material.key, first.material.key);

    // The revoked registration is kept under another name, so its serial stays revoked.
    const rows = await store.db.selectFrom('components').select(['name', 'status', 'cert_serial']).where('name', 'like', 'mt-1%').orderBy('registered_at').execute();
    assert.deepEqual(rows.map((r) => [r.name, r.status, r.cert_serial]), [[`mt-1~${first.id}`, 'revoked', first.serial], ['mt-1', 'active', third.serial]]);
    const list = new RevocationList(store);
    await list.refresh();
    assert.equal(list.isRevoked(first.serial), true);
    assert.equal(list.isRevoked(third.serial), false);

    await assert.rejects(registerComponent({ ...opts, stateDir: path.join(scratch, 'other'), token: readerToken }), { kind: 'forbidden' });
  });

  // The CLI speaks HTTP only; once is enough.
  if (dialect === 'sqlite') it('rebound component list | show | revoke', async () => {
    const list = await cli(['--url', srv.url, '--token', readerToken, '--json', 'component', 'list']);
    assert.equal(list.code, 0, list.stderr);
    const names = (JSON.parse(list.stdout) as { items: { name: string; status: string }[] }).items.map((c) => `${c.name}:${c.status}`);
    assert.ok(names.includes('ps-1:active') && names.includes('agent-1:revoked'), names.join(' '));
    const table = await cli(['--url', srv.url, '--token', readerToken, 'component', 'list']);
    assert.match(table.stdout, /^NAME\s+ROLE\s+SITE/);
    assert.match(table.stdout, /ps-1\s+process-server\s+site-a\s+127\.0\.0\.1:7481\s+active/);
    const show = await cli(['--url', srv.url, '--token', readerToken, 'component', 'show', 'ps-1']);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, new RegExp(`serial:\\s+${ps.serial}`));
    assert.match(show.stdout, /BEGIN CERTIFICATE/);
    const denied = await cli(['--url', srv.url, '--token', readerToken, 'component', 'revoke', 'ps-1']);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /needs the admin role/);
    const revoked = await cli(['--url', srv.url, '--token', srv.token, 'component', 'revoke', 'ps-1']);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`component ps-1 revoked: .*${ps.serial}`));
    assert.equal((await api('GET', '/whoami', ps.token)).status, 401);
  });

  it('never writes a key, CSR or token to the server log', async () => {
    const log = srv.logs();
    assert.ok(log.length > 0, 'the server logged something at debug level');
    assert.match(log, /component registered/);
    for (const s of secrets) {
      const probe = s.includes('-----') ? (s.split('\n')[1] ?? s) : s;
      assert.ok(!log.includes(probe), `a secret (${probe.slice(0, 12)}…) is in the log`);
    }
  });
});
