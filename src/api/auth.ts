// Bearer tokens: a random 32-byte secret is shown once; the vault keeps only its sha256. A
// request's token is found by looking up the hash of what it presents, so no secret is ever
// compared byte by byte (nothing to time) and a stolen database holds no usable token.
// Expired and revoked tokens are refused like unknown ones; last_used_at is written at most once
// a minute per token so that reads do not turn into a write each.
import { createHash, randomBytes } from 'node:crypto';
import { ReboundError } from '../domain/errors.ts';
import { isRole } from '../domain/rbac.ts';
import type { Role } from '../domain/model.ts';
import type { Store } from '../store/open.ts';
import { newId, now } from '../store/open.ts';

export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
}

const PREFIX = 'rbd_';
const LAST_USED_RESOLUTION_MS = 60_000;

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export interface CreatedToken {
  token: string;
  id: string;
  name: string;
  role: Role;
  expiresAt: number | null;
}

export async function createToken(store: Store, name: string, role: Role, expiresAt: number | null = null): Promise<CreatedToken> {
  const token = PREFIX + randomBytes(32).toString('base64url');
  const id = newId();
  await store.db
    .insertInto('tokens')
    .values({ id, name, role, hash: hashSecret(token), created_at: now(), expires_at: expiresAt, revoked_at: null, last_used_at: null })
    .execute();
  return { token, id, name, role, expiresAt };
}

// No hint: the client knows where its token came from and says what to do (the CLI does).
const unauthenticated = (message: string) =>
  new ReboundError('unauthenticated', 'unauthenticated', `${message} Send 'Authorization: Bearer TOKEN' with a valid token.`);

/** The principal behind an Authorization header, or a 401 saying what was wrong. */
export async function authenticate(store: Store, header: string | undefined): Promise<Principal> {
  if (header === undefined || header === '') throw unauthenticated('this call needs a token and none was given.');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m || m[1] === undefined) throw unauthenticated("the Authorization header is not 'Bearer TOKEN'.");
  const row = await store.db.selectFrom('tokens').selectAll().where('hash', '=', hashSecret(m[1])).executeTakeFirst();
  const t = now();
  if (!row) throw unauthenticated('the token is not known to this vault.');
  if (row.revoked_at !== null) throw unauthenticated(`token '${row.name}' has been revoked.`);
  if (row.expires_at !== null && row.expires_at <= t) throw unauthenticated(`token '${row.name}' has expired.`);
  if (!isRole(row.role)) throw unauthenticated(`token '${row.name}' has an unknown role '${row.role}'.`);
  if (row.last_used_at === null || t - row.last_used_at >= LAST_USED_RESOLUTION_MS) {
    await store.db.updateTable('tokens').set({ last_used_at: t }).where('id', '=', row.id).execute();
  }
  return { tokenId: row.id, name: row.name, role: row.role };
}
