// The vault's certificate authority. It signs the certificates the roles (agent, process server,
// master target) present to each other on data connections, so that both ends of every
// connection are authenticated by the vault. One self-signed ECDSA P-256 CA per vault, valid ten
// years, kept in the settings table: its certificate in clear, its private key encrypted with
// AES-256-GCM under the vault's wrap key (the ciphertext is bound to the certificate as
// associated data). Every vault server of a PostgreSQL scale-out loads the same CA: when two
// start at once each makes a candidate and the settings insert keeps exactly one.
//
// A certificate's names are the vault's decision, never the requester's: the CSR contributes
// only its public key (after its signature proves the requester holds the private key).
import { createCipheriv, createDecipheriv, createHash, randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { invalid, ReboundError } from '../domain/errors.ts';
import type { Store } from '../store/open.ts';
import { getOrCreateSetting } from '../store/settings.ts';
import { EC_ALG, generateKeyPair, normalizeSerial, privateKeyPem, subtle, x509 } from './x509.ts';
import type { CryptoKey } from './x509.ts';

export const CA_SETTING = 'pki.ca';
export const COMPONENT_ROLES = ['agent', 'process-server', 'master-target'] as const;
export type ComponentRole = (typeof COMPONENT_ROLES)[number];

const CA_YEARS = 10;
const DEFAULT_DAYS = 365;
const MAX_DAYS = 5 * 366;
// Certificates start a day before the issuing clock: clocks differ between hosts, and a clock that
// is stepped back after issuing (NTP correcting a clock that ran ahead) must not make every
// certificate "not yet valid" to OpenSSL. Lifetimes count from the issuing clock, not from here.
export const BACKDATE_MS = 86_400_000;
const WRAP_AAD_PREFIX = 'rebound/pki/ca-key/v1:';

export interface IssueRequest {
  csrPem: string;
  commonName: string;
  role: ComponentRole;
  componentId: string;
  dnsNames?: readonly string[];
  ips?: readonly string[];
  /** Validity in days (default 365); never beyond the CA's own expiry. */
  days?: number;
}

export interface IssuedCert {
  certPem: string;
  /** Lower-case hex, no leading zeros (normalizeSerial). */
  serial: string;
}

export interface LocalIdentity extends IssuedCert {
  /** PKCS#8 PEM; stays in memory or in a 0600 file of the process that uses it. */
  keyPem: string;
}

export interface Ca {
  readonly certPem: string;
  /** SHA-256 of the CA certificate (hex), to compare CAs without comparing PEM text. */
  readonly fingerprint: string;
  issue(req: IssueRequest): Promise<IssuedCert>;
  /** Key and certificate in one go, for roles running inside the vault process (no CSR trip). */
  issueLocal(req: Omit<IssueRequest, 'csrPem'>): Promise<LocalIdentity>;
}

/** What the settings row holds. Never the private key in clear. */
export interface StoredCa {
  v: 1;
  certPem: string;
  key: { alg: 'aes-256-gcm'; iv: string; tag: string; data: string };
  createdAt: number;
}

/** The URI SAN that names a component in its certificate. */
export function componentUri(componentId: string, role: string): string {
  return `urn:rebound:component:${componentId}:${role}`;
}

function randomSerial(): string {
  const b = randomBytes(16);
  // Positive and without a leading zero byte, so every tool prints the same hex.
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b.toString('hex');
}

function certDer(pem: string): Buffer {
  return Buffer.from(new X509Certificate(pem).raw);
}

function aadFor(certPem: string): Buffer {
  return Buffer.from(WRAP_AAD_PREFIX + createHash('sha256').update(certDer(certPem)).digest('hex'));
}

function wrapKey(wrap: Buffer, pkcs8: Buffer, certPem: string): StoredCa['key'] {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', wrap, iv);
  c.setAAD(aadFor(certPem));
  const data = Buffer.concat([c.update(pkcs8), c.final()]);
  return { alg: 'aes-256-gcm', iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/** Decrypts the CA key of a stored CA; exported for the test that checks the row is encrypted. */
export function unwrapCaKey(stored: StoredCa, wrap: Buffer): Buffer {
  try {
    const d = createDecipheriv('aes-256-gcm', wrap, Buffer.from(stored.key.iv, 'base64'));
    d.setAAD(aadFor(stored.certPem));
    d.setAuthTag(Buffer.from(stored.key.tag, 'base64'));
    return Buffer.concat([d.update(Buffer.from(stored.key.data, 'base64')), d.final()]);
  } catch (err) {
    throw new ReboundError('internal', 'ca-key-unreadable', `the vault CA's private key (settings '${CA_SETTING}') cannot be decrypted with this vault's wrap key: the settings row was changed or belongs to another vault's keys. Restore the vault database from the backup that holds both.`, { cause: err });
  }
}

async function createCa(wrap: Buffer): Promise<StoredCa> {
  const keys = await generateKeyPair();
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const notAfter = new Date(Date.now());
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_YEARS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [`Rebound vault CA ${randomBytes(4).toString('hex')}`] }, { O: ['Rebound'] }],
    keys,
    signingAlgorithm: EC_ALG,
    notBefore,
    notAfter,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = cert.toString('pem');
  const pkcs8 = Buffer.from(await subtle.exportKey('pkcs8', keys.privateKey));
  return { v: 1, certPem, key: wrapKey(wrap, pkcs8, certPem), createdAt: Date.now() };
}

const DNS_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

class VaultCa implements Ca {
  readonly certPem: string;
  readonly fingerprint: string;
  readonly #cert: x509.X509Certificate;
  readonly #key: CryptoKey;

  constructor(certPem: string, key: CryptoKey) {
    this.certPem = certPem;
    this.#cert = new x509.X509Certificate(certPem);
    this.fingerprint = createHash('sha256').update(certDer(certPem)).digest('hex');
    this.#key = key;
  }

  async issue(req: IssueRequest): Promise<IssuedCert> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(req.csrPem);
    } catch (err) {
      throw invalid('csr-malformed', `the certificate signing request is not a PEM PKCS#10 request (${(err as Error).message}): send the CSR that generateKeyAndCsr made, as PEM text.`);
    }
    const alg = csr.publicKey.algorithm as { name: string; namedCurve?: string };
    if (alg.name !== 'ECDSA' || (alg.namedCurve !== 'P-256' && alg.namedCurve !== 'P-384')) {
      throw invalid('csr-key-unsupported', `the CSR's key is ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ''}: the vault CA signs ECDSA P-256 or P-384 keys only; make the key with generateKeyAndCsr.`);
    }
    const ok = await csr.verify().catch(() => false);
    if (!ok) throw invalid('csr-signature-invalid', "the CSR's signature does not verify with its own public key: the request was altered or made wrongly; make a new one with generateKeyAndCsr.");
    return this.#sign(csr.publicKey, req);
  }

  async issueLocal(req: Omit<IssueRequest, 'csrPem'>): Promise<LocalIdentity> {
    const keys = await generateKeyPair();
    const issued = await this.#sign(keys.publicKey, req);
    return { ...issued, keyPem: await privateKeyPem(keys.privateKey) };
  }

  async #sign(publicKey: x509.PublicKeyType, req: Omit<IssueRequest, 'csrPem'>): Promise<IssuedCert> {
    if (!(COMPONENT_ROLES as readonly string[]).includes(req.role)) {
      throw invalid('component-role-invalid', `role '${req.role}' is not a component role: use one of ${COMPONENT_ROLES.join(', ')}.`);
    }
    if (!/^[A-Za-z0-9._-]{1,100}$/.test(req.componentId)) {
      throw invalid('component-id-invalid', `component id '${req.componentId}' cannot go into a certificate URI: use letters, digits, '.', '_' and '-'.`);
    }
    const names: x509.JsonGeneralName[] = [];
    for (const d of req.dnsNames ?? []) {
      if (!DNS_NAME.test(d)) throw invalid('san-dns-invalid', `'${d}' is not a DNS name: give host names such as ps1.example.net.`);
      names.push({ type: 'dns', value: d.toLowerCase() });
    }
    for (const ip of req.ips ?? []) {
      if (isIP(ip) === 0) throw invalid('san-ip-invalid', `'${ip}' is not an IP address: give addresses such as 10.0.0.5 or ::1.`);
      names.push({ type: 'ip', value: ip });
    }
    names.push({ type: 'url', value: componentUri(req.componentId, req.role) });
    const days = req.days ?? DEFAULT_DAYS;
    if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
      throw invalid('cert-days-invalid', `a certificate lifetime of ${days} days is not allowed: give a whole number of days from 1 to ${MAX_DAYS}.`);
    }
    const issuedAt = Date.now();
    const notBefore = new Date(issuedAt - BACKDATE_MS);
    const wanted = new Date(issuedAt + days * 86_400_000);
    const notAfter = wanted > this.#cert.notAfter ? this.#cert.notAfter : wanted;
    const serial = randomSerial();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial,
      subject: [{ CN: [req.commonName] }, { O: ['Rebound'] }, { OU: [req.role] }],
      issuer: this.#cert.subjectName,
      publicKey,
      signingKey: this.#key,
      signingAlgorithm: EC_ALG,
      notBefore,
      notAfter,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension(names),
        await x509.AuthorityKeyIdentifierExtension.create(this.#cert.publicKey),
        await x509.SubjectKeyIdentifierExtension.create(publicKey),
      ],
    });
    return { certPem: cert.toString('pem'), serial: normalizeSerial(serial) };
  }
}

/**
 * The vault's CA, created on first use. `wrapKey` is the vault's wrap key (loadVaultKeys().wrap);
 * the CA's private key exists in clear only in this process's memory.
 */
export async function loadOrCreateCa(store: Store, wrapKey: Buffer): Promise<Ca> {
  if (wrapKey.length !== 32) throw new ReboundError('internal', 'ca-wrap-key-invalid', `the CA wrap key is ${wrapKey.length} bytes, not 32: pass loadVaultKeys(store).wrap.`);
  const stored = await getOrCreateSetting<StoredCa>(store, CA_SETTING, () => createCa(wrapKey));
  const pkcs8 = unwrapCaKey(stored, wrapKey);
  const key = await subtle.importKey('pkcs8', pkcs8, EC_ALG, false, ['sign']);
  pkcs8.fill(0);
  return new VaultCa(stored.certPem, key);
}
