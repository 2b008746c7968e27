// The one place @peculiar/x509 is loaded: it needs the reflect-metadata polyfill before it is
// evaluated (its dependency injection asks for it at load time), and Node's WebCrypto as its
// provider. Everything in src/pki imports x509 from here, never from the package directly.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';

export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };

/** ECDSA P-256 with SHA-256: the only key and signature algorithm the vault's PKI issues. */
export const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export const subtle = webcrypto.subtle;

/** A key pair for a component or the CA (extractable, so that it can be written to a file). */
export function generateKeyPair(): Promise<CryptoKeyPair> {
  return subtle.generateKey(EC_ALG, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** Serials are compared as lower-case hex without leading zeros (Node reports upper case). */
export function normalizeSerial(serial: string): string {
  return serial.toLowerCase().replace(/^0+(?=.)/, '');
}
