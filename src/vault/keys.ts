// The vault's keys. One random 256-bit master key per vault, kept in the settings table (so every
// vault server of a PostgreSQL scale-out shares it); everything else is derived from it with HKDF
// under a purpose label, so a component is given only the key its role needs:
//   transport  frame session keys between agent, process server and master target
//   at-rest    the LUKS secret of replica images (per key id, so it can be rotated)
//   ca         encrypts the CA's private key in the settings table
import { hkdfSync, randomBytes } from 'node:crypto';
import { deriveAtRestKey } from '../replica/replica-disk.ts';
import type { AtRestKey } from '../replica/replica-disk.ts';
import type { Store } from '../store/open.ts';
import { getOrCreateSetting, getSetting, putSetting } from '../store/settings.ts';

export interface VaultKeys {
  /** Frame session keys are derived from this (frame-key.ts). */
  transport: Buffer;
  /** The at-rest key replicas are written with now. */
  atRest: AtRestKey;
  /** Every at-rest key a replica may still be encrypted with (during a rotation, two). */
  atRestKeys: AtRestKey[];
  /** For wrapping the CA key and other secrets kept in the vault database. */
  wrap: Buffer;
}

interface KeyState { master: string; atRestKeyId: string; previousAtRestKeyIds: string[] }

export function derive(master: Buffer, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.from('rebound/vault/v1'), Buffer.from(purpose), 32));
}

export async function loadVaultKeys(store: Store): Promise<VaultKeys> {
  const st = await getOrCreateSetting<KeyState>(store, 'vault.keys', () => ({ master: randomBytes(32).toString('base64'), atRestKeyId: 'k1', previousAtRestKeyIds: [] }));
  return keysFrom(st);
}

function keysFrom(st: KeyState): VaultKeys {
  const master = Buffer.from(st.master, 'base64');
  const atRestRoot = derive(master, 'at-rest');
  const atRest = deriveAtRestKey(atRestRoot, st.atRestKeyId);
  return {
    transport: derive(master, 'transport'),
    atRest,
    atRestKeys: [atRest, ...st.previousAtRestKeyIds.map((id) => deriveAtRestKey(atRestRoot, id))],
    wrap: derive(master, 'wrap'),
  };
}

/** Starts an at-rest key rotation: new replicas and rekeyed ones use the next key id. */
export async function rotateAtRestKey(store: Store): Promise<VaultKeys> {
  const st = await getSetting<KeyState>(store, 'vault.keys');
  if (!st) return loadVaultKeys(store);
  const n = Number(/^k(\d+)$/.exec(st.atRestKeyId)?.[1] ?? '1') + 1;
  const next: KeyState = { ...st, atRestKeyId: `k${n}`, previousAtRestKeyIds: [st.atRestKeyId, ...st.previousAtRestKeyIds] };
  await putSetting(store, 'vault.keys', next);
  return keysFrom(next);
}
