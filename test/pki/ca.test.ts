// The vault CA: certificates it issues verify against it and carry the names the vault chose;
// its private key is stored only encrypted; two vault servers starting at once on one
// PostgreSQL end with one CA.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, X509Certificate, createPrivateKey } from 'node:crypto';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { openStore } from '../../src/store/open.ts';
import { getSetting } from '../../src/store/settings.ts';
import { CA_SETTING, loadOrCreateCa, unwrapCaKey } from '../../src/pki/ca.ts';
import type { StoredCa } from '../../src/pki/ca.ts';
import { generateKeyAndCsr } from '../../src/pki/keys.ts';
import { issueEmbeddedMaterial } from '../../src/pki/embedded.ts';
import { clientOptions, createMtlsServer, identityFromCertificate, peerChecker } from '../../src/pki/tls.ts';
import type { TlsMaterial } from '../../src/pki/tls.ts';
import { freshPostgresDatabase, withStore, withStores } from '../support/db.ts';

describe('vault CA', () => {
  it('issues certificates that verify against the CA, with the vault-chosen names and both EKUs', async () => {
    await withStore('sqlite', async ({ store }) => {
      const wrap = randomBytes(32);
      const ca = await loadOrCreateCa(store, wrap);
      const caCert = new X509Certificate(ca.certPem);
      assert.equal(caCert.ca, true);
      assert.ok(caCert.verify(caCert.publicKey), 'the CA is self-signed');
      const years = (Date.parse(caCert.validTo) - Date.now()) / (365.25 * 86_400_000);
      assert.ok(years > 9.9 && years < 10.1, `CA lifetime ${years} years`);
      assert.ok(Date.parse(caCert.validFrom) <= Date.now() - 23 * 3600_000, `the CA is valid from a day back (${caCert.validFrom})`);

      // The CSR asks for another name; the certificate carries the vault's.
      const { csrPem, keyPem } = await generateKeyAndCsr('evil.example');
      const issued = await ca.issue({ csrPem, commonName: 'ps-1', role: 'process-server', componentId: 'c-123', dnsNames: ['ps1.example.net'], ips: ['127.0.0.1'], days: 30 });
      const cert = new X509Certificate(issued.certPem);
      assert.ok(cert.verify(caCert.publicKey), 'signed by the CA');
      assert.ok(cert.checkIssued(caCert));
      assert.ok(cert.checkPrivateKey(createPrivateKey(keyPem)), 'certifies the CSR key');
      assert.equal(cert.ca, false);
      assert.match(cert.subject, /CN=ps-1/);
      assert.doesNotMatch(cert.subject + (cert.subjectAltName ?? ''), /evil/);
      assert.equal(cert.subjectAltName, 'DNS:ps1.example.net, IP Address:127.0.0.1, URI:urn:rebound:component:c-123:process-server');
      assert.deepEqual(cert.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']);
      // Lifetimes count from the issuing clock; validity starts a day before it (BACKDATE_MS).
      const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
      assert.ok(days > 29.9 && days < 30.1, `lifetime ${days} days`);
      assert.ok(Date.parse(cert.validFrom) <= Date.now() - 23 * 3600_000, `valid from a day back (${cert.validFrom})`);
      assert.deepEqual(identityFromCertificate(cert), { componentId: 'c-123', role: 'process-server', serial: issued.serial });
      assert.equal(issued.serial, cert.serialNumber.toLowerCase());

      const local = await ca.issueLocal({ commonName: 'embedded-agent', role: 'agent', componentId: 'embedded' });
      const lc = new X509Certificate(local.certPem);
      assert.ok(lc.verify(caCert.publicKey));
      assert.ok(lc.checkPrivateKey(createPrivateKey(local.keyPem)));
      assert.notEqual(local.serial, issued.serial);
    });
  });

  it('refuses a CSR whose signature does not verify, a malformed one, and names that are not names', async () => {
    await withStore('sqlite', async ({ store }) => {
      const ca = await loadOrCreateCa(store, randomBytes(32));
      const { csrPem } = await generateKeyAndCsr('x');
      // Flip one byte of the signature (the DER's last bytes) and re-encode.
      const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
      der[der.length - 3] = der[der.length - 3]! ^ 0x01;
      const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
      const base = { commonName: 'a', role: 'agent' as const, componentId: 'c1' };
      await assert.rejects(ca.issue({ ...base, csrPem: tampered }), { code: 'csr-signature-invalid' });
      await assert.rejects(ca.issue({ ...base, csrPem: 'hello' }), { code: 'csr-malformed' });
      await assert.rejects(ca.issue({ ...base, csrPem, ips: ['not-an-ip'] }), { code: 'san-ip-invalid' });
      await assert.rejects(ca.issue({ ...base, csrPem, dnsNames: ['a b'] }), { code: 'san-dns-invalid' });
      await assert.rejects(ca.issue({ ...base, csrPem, componentId: 'a:b' }), { code: 'component-id-invalid' });
    });
  });

  it('keeps the private key only encrypted in the settings row, bound to the wrap key', async () => {
    await withStores(async ({ store, reopen }) => {
      const wrap = randomBytes(32);
      const ca = await loadOrCreateCa(store, wrap);
      const row = await store.db.selectFrom('settings').select('value').where('key', '=', CA_SETTING).executeTakeFirstOrThrow();
      const stored = JSON.parse(row.value) as StoredCa;
      assert.equal(stored.certPem, ca.certPem);
      assert.equal(stored.key.alg, 'aes-256-gcm');
      // The ciphertext is the CA key: decrypting gives a key matching the CA certificate...
      const pkcs8 = unwrapCaKey(stored, wrap);
      const key = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
      assert.ok(new X509Certificate(ca.certPem).checkPrivateKey(key));
      // ...and no form of that key is anywhere in the row.
      const pem = key.export({ format: 'pem', type: 'pkcs8' }).toString();
      assert.doesNotMatch(row.value, /PRIVATE KEY/);
      for (const needle of [pkcs8.toString('base64'), pkcs8.toString('hex'), pem.split('\n')[1]!]) assert.ok(!row.value.includes(needle));
      const jwk = key.export({ format: 'jwk' });
      assert.ok(!row.value.includes(jwk.d!), 'the private scalar is not in the row');

      // Another wrap key cannot open it; the same one, from a reopened store, loads the same CA.
      await assert.rejects(loadOrCreateCa(store, randomBytes(32)), { code: 'ca-key-unreadable' });
      const again = await reopen();
      try {
        const ca2 = await loadOrCreateCa(again, wrap);
        assert.equal(ca2.fingerprint, ca.fingerprint);
        const issued = await ca2.issueLocal({ commonName: 'x', role: 'agent', componentId: 'x' });
        assert.ok(new X509Certificate(issued.certPem).verify(new X509Certificate(ca.certPem).publicKey));
      } finally {
        await again.close();
      }
      const got = await getSetting<StoredCa>(store, CA_SETTING);
      assert.equal(got?.key.data, stored.key.data, 'loading did not rewrite the row');
    });
  });

  it('two vault servers starting at once on one PostgreSQL end with one CA', async () => {
    const url = await freshPostgresDatabase();
    const stores = await Promise.all([openStore({ url }), openStore({ url })]);
    try {
      const wrap = randomBytes(32);
      for (let round = 0; round < 3; round++) {
        if (round > 0) await stores[0]!.db.deleteFrom('settings').where('key', '=', CA_SETTING).execute();
        const [a, b] = await Promise.all(stores.map((s) => loadOrCreateCa(s, wrap)));
        assert.equal(a!.fingerprint, b!.fingerprint, `round ${round}`);
        // A certificate one server issues verifies against the CA the other loaded.
        const issued = await a!.issueLocal({ commonName: 'mt', role: 'master-target', componentId: 'm1' });
        assert.ok(new X509Certificate(issued.certPem).verify(new X509Certificate(b!.certPem).publicKey));
      }
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('certificates issued under a clock that ran hours ahead still work once the clock is set back (soak seed 3018)', async () => {
    // A server whose clock ran ahead issues its certificates at start; the clock is then
    // corrected. OpenSSL checks validity on the real clock: a certificate that starts only a few
    // minutes before the issuing clock is "not yet valid" then, and every data connection fails.
    await withStore('sqlite', async ({ store }) => {
      const realNow = Date.now;
      Date.now = () => realNow() + 3 * 3600_000;
      let ca;
      const issue = async (role: 'agent' | 'process-server', id: string): Promise<TlsMaterial> => {
        const l = await ca!.issueLocal({ commonName: id, role, componentId: id, ips: ['127.0.0.1'], days: 7 });
        return { ca: ca!.certPem, cert: l.certPem, key: l.keyPem };
      };
      let server: TlsMaterial;
      let client: TlsMaterial;
      try {
        ca = await loadOrCreateCa(store, randomBytes(32));
        server = await issue('process-server', 'ps-ahead');
        client = await issue('agent', 'agent-ahead');
      } finally {
        Date.now = realNow;
      }
      const srv = createMtlsServer({ material: server, check: peerChecker({ roles: ['agent'] }) }, (socket) => socket.end('ok\n'));
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
      try {
        const port = (srv.address() as AddressInfo).port;
        const outcome = await new Promise<string>((resolve) => {
          const s = tls.connect({ host: '127.0.0.1', port, ...clientOptions(client) });
          let got = '';
          s.on('data', (d: Buffer) => { got += d.toString(); });
          s.on('end', () => resolve(got.trim()));
          s.on('error', (err) => resolve(`error: ${err.message}`));
        });
        assert.equal(outcome, 'ok', 'the handshake succeeds at the real time, 3 hours before the issuing clock');
      } finally {
        await new Promise<void>((r) => srv.close(() => r()));
      }
    });
  });

  it("the embedded roles' certificates, issued once per start and never renewed, live a year", async () => {
    await withStore('sqlite', async ({ store }) => {
      const ca = await loadOrCreateCa(store, randomBytes(32));
      const m = await issueEmbeddedMaterial(ca);
      for (const role of ['agent', 'process-server', 'master-target'] as const) {
        const c = new X509Certificate(m[role].cert);
        const days = (Date.parse(c.validTo) - Date.now()) / 86_400_000;
        assert.ok(days > 364.9, `${role}: ${days} days`);
        assert.ok(Date.parse(c.validFrom) <= Date.now() - 23 * 3600_000, `${role}: valid from a day back`);
      }
    });
  });
});
