// A component's own key and its certificate signing request. The key never leaves the machine
// the component runs on: only the CSR (its public key, signed with the private key as proof of
// possession) goes to the vault, which decides the certificate's names itself.
import { EC_ALG, generateKeyPair, privateKeyPem, x509 } from './x509.ts';

export interface KeyAndCsr {
  /** PKCS#8 PEM of the private key: write it 0600 and never send it anywhere. */
  keyPem: string;
  csrPem: string;
}

export async function generateKeyAndCsr(commonName: string): Promise<KeyAndCsr> {
  const keys = await generateKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [commonName] }],
    keys,
    signingAlgorithm: EC_ALG,
  });
  return { keyPem: await privateKeyPem(keys.privateKey), csrPem: csr.toString('pem') };
}
