// Keys for replication frames. Each session of a transfer (one connection, or one resumption of
// it) gets its own AES-256-GCM key, derived with HKDF-SHA256 from the vault key, the transfer id
// and a random per-session salt. Nonces come from frame sequence numbers, so a fresh key per
// session is what keeps a nonce from ever being reused with different data when a resumed
// transfer re-reads a disk that changed meanwhile.
import { hkdfSync, randomBytes } from 'node:crypto';
import { invalid } from '../domain/errors.ts';

export const SESSION_SALT_BYTES = 16;

export interface SessionKey {
  readonly transferId: string;
  readonly salt: Buffer;
  readonly key: Buffer;
}

/** A fresh random salt for a new session (the sender picks it and sends it in its hello). */
export const newSessionSalt = (): Buffer => randomBytes(SESSION_SALT_BYTES);

export function deriveSessionKey(vaultKey: Uint8Array, transferId: string, salt: Uint8Array): SessionKey {
  if (vaultKey.length < 32) {
    throw invalid('frame-key-too-short', `The vault key has ${vaultKey.length} bytes; replication needs at least 32.`, {
      hint: 'Use the vault key as stored by the vault (32 random bytes), not a password.',
    });
  }
  if (salt.length !== SESSION_SALT_BYTES) {
    throw invalid('frame-malformed', `A session salt has ${salt.length} bytes instead of ${SESSION_SALT_BYTES}.`);
  }
  const info = Buffer.from(`rebound/frame/v1\0${transferId}`, 'utf8');
  const key = Buffer.from(hkdfSync('sha256', vaultKey, salt, info, 32));
  return { transferId, salt: Buffer.from(salt), key };
}
