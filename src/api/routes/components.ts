// /components: registration of the roles that run as their own processes (agent, process server,
// master target). A component sends a CSR; the vault's CA signs a certificate naming the
// component (its id and role in a URI SAN, its data address as DNS/IP SAN) and the vault mints
// an API token bound to it for its control-plane calls. Revoking a component revokes both: its
// token stops working at once, and its certificate serial joins the revocation list every data
// listener consults. A revoked component's row is kept (renamed NAME~ID) when the name is
// registered again, so that its serial stays revoked.
import { isIP } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { Kysely } from 'kysely';
import { conflict, invalid, notFound, ReboundError } from '../../domain/errors.ts';
import { validateName } from '../../domain/names.ts';
import { COMPONENT_ROLES, loadOrCreateCa } from '../../pki/ca.ts';
import type { Ca, ComponentRole } from '../../pki/ca.ts';
import type { RevocationList } from '../../pki/tls.ts';
import { newId, now } from '../../store/open.ts';
import type { Database, Row } from '../../store/schema.ts';
import { loadVaultKeys } from '../../vault/keys.ts';
import { createToken } from '../auth.ts';
import type { ApiDeps } from '../deps.ts';
import { principalOf } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { NameParam, NullableMillis, Millis, Page, PageQuery, errors } from '../schemas.ts';
import { siteByName } from './sites.ts';

export const Component = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: Type.String(),
  site: Type.Union([Type.String(), Type.Null()]),
  address: Type.Union([Type.String(), Type.Null()]),
  status: Type.String(),
  serial: Type.Union([Type.String(), Type.Null()]),
  certificate: Type.Union([Type.String(), Type.Null()]),
  registeredAt: Millis,
  lastSeenAt: NullableMillis,
  revokedAt: NullableMillis,
});
export type ComponentView = Static<typeof Component>;

const Registered = Type.Object({
  id: Type.String(),
  name: Type.String(),
  role: Type.String(),
  site: Type.Union([Type.String(), Type.Null()]),
  serial: Type.String(),
  cert: Type.String(),
  ca: Type.String(),
  token: Type.String(),
});

const RegisterBody = Type.Object(
  {
    name: Type.String({ maxLength: 200 }),
    role: Type.Union(COMPONENT_ROLES.map((r) => Type.Literal(r))),
    /** The site it serves; absent: every site (an agent of several sites, a shared process server). */
    site: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    address: Type.Optional(Type.String({ minLength: 1, maxLength: 300 })),
    csr: Type.String({ minLength: 1, maxLength: 16_384 }),
  },
  { additionalProperties: false },
);

const HeartbeatQuery = Type.Object({ address: Type.Optional(Type.String({ minLength: 1, maxLength: 300 })) });

export interface ComponentRouteOptions {
  /** The vault CA; loaded from the store (with the vault's wrap key) on first use when absent. */
  ca?: Ca;
  /** Told at once about a revocation on this server (other servers refresh from the table). */
  revocations?: RevocationList;
}

/** Host and port of a data address, or a 400 saying what a data address looks like. */
function addressHost(address: string): string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(address);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535) {
    throw invalid('invalid-address', `address '${address}' is not host:port: give the host name or IP and port the component's data listener is reached at, such as 10.0.0.5:7481 or [::1]:7481.`);
  }
  return (m[1] ?? m[2])!;
}

export function componentView(r: Row<'components'>, site: string | null): ComponentView {
  return {
    id: r.id,
    name: r.name,
    role: r.role,
    site,
    address: r.address,
    status: r.status,
    serial: r.cert_serial,
    certificate: r.cert_pem,
    registeredAt: r.registered_at,
    lastSeenAt: r.last_seen_at,
    revokedAt: r.revoked_at,
  };
}

async function componentByName(db: Kysely<Database>, name: string): Promise<{ row: Row<'components'>; site: string | null }> {
  const row = await db.selectFrom('components').selectAll().where('name', '=', name).executeTakeFirst();
  if (!row) throw notFound('component.not-found', `no component is named '${name}': list them with rebound component list.`);
  return { row, site: await siteNameOf(db, row.site_id) };
}

async function siteNameOf(db: Kysely<Database>, siteId: string | null): Promise<string | null> {
  if (siteId === null) return null;
  return (await db.selectFrom('sites').select('name').where('id', '=', siteId).executeTakeFirst())?.name ?? null;
}

export function componentRoutes(app: FastifyInstance, deps: ApiDeps, opts: ComponentRouteOptions = {}): void {
  const db = deps.store.db;
  let ca: Promise<Ca> | undefined = opts.ca ? Promise.resolve(opts.ca) : undefined;
  const theCa = (): Promise<Ca> => {
    ca ??= loadVaultKeys(deps.store).then((k) => loadOrCreateCa(deps.store, k.wrap));
    // A failed load (database down) is not remembered: the next registration tries again.
    ca.catch(() => { ca = undefined; });
    return ca;
  };

  app.post('/components', { schema: { tags: ['components'], body: RegisterBody, response: { 201: Registered, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const body = req.body as Static<typeof RegisterBody>;
    const name = validateName(body.name, 'component');
    const role = body.role as ComponentRole;
    const site = body.site === undefined ? null : await siteByName(db, body.site);
    const host = body.address === undefined ? undefined : addressHost(body.address);
    const existing = await db.selectFrom('components').select(['id', 'status']).where('name', '=', name).executeTakeFirst();
    if (existing?.status === 'active') {
      throw conflict('component.exists', `component '${name}' is already registered and active: revoke it first (rebound component revoke ${name}) to register it again, or choose another name.`);
    }
    const id = newId();
    const issued = await (await theCa()).issue({
      csrPem: body.csr,
      commonName: name,
      role,
      componentId: id,
      ...(host === undefined ? {} : isIP(host) ? { ips: [host] } : { dnsNames: [host] }),
    });
    const token = await createToken(deps.store, `component:${name}`, 'operator');
    const t = now();
    try {
      await db.transaction().execute(async (tx) => {
        // Keep the revoked predecessor (and so its revoked serial) under another name.
        if (existing) {
          const moved = await tx.updateTable('components').set({ name: `${name}~${existing.id}` }).where('id', '=', existing.id).where('status', '=', 'revoked').executeTakeFirst();
          if (Number(moved.numUpdatedRows) !== 1) throw conflict('component.exists', `component '${name}' changed while it was being registered: try again.`);
        }
        await tx.insertInto('components').values({
          id,
          name,
          role,
          site_id: site?.id ?? null,
          address: body.address ?? null,
          token_id: token.id,
          cert_serial: issued.serial,
          cert_pem: issued.certPem,
          status: 'active',
          registered_at: t,
          last_seen_at: null,
          revoked_at: null,
        }).execute();
      });
    } catch (err) {
      // The token must not outlive a registration that did not happen.
      await db.updateTable('tokens').set({ revoked_at: now() }).where('id', '=', token.id).execute();
      if (err instanceof ReboundError) throw err;
      if (await db.selectFrom('components').select('id').where('name', '=', name).where('status', '=', 'active').executeTakeFirst()) {
        throw conflict('component.exists', `component '${name}' was registered by another request just now: revoke it first to register it again, or choose another name.`);
      }
      throw err;
    }
    req.log.info({ component: name, role, serial: issued.serial }, 'component registered');
    return reply.code(201).send({ id, name, role, site: site?.name ?? null, serial: issued.serial, cert: issued.certPem, ca: (await theCa()).certPem, token: token.token });
  });

  app.get('/components', { schema: { tags: ['components'], querystring: Type.Object(PageQuery), response: { 200: Page(Component), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as { limit?: number; cursor?: string };
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('components').leftJoin('sites', 'sites.id', 'components.site_id').selectAll('components').select('sites.name as site_name');
    if (q.cursor) sel = sel.where('components.name', '>', decodeTextCursor(q.cursor));
    const rows = await sel.orderBy('components.name').limit(limit + 1).execute();
    return toPage(rows, limit, (r) => r.name, (r) => componentView(r, r.site_name));
  });

  app.get('/components/:name', { schema: { tags: ['components'], params: NameParam, response: { 200: Component, ...errors(400, 401, 404) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    const { row, site } = await componentByName(db, name);
    return componentView(row, site);
  });

  app.delete('/components/:name', { schema: { tags: ['components'], params: NameParam, response: { 200: Component, ...errors(400, 401, 403, 404) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    const { row } = await componentByName(db, name);
    if (row.status !== 'revoked') {
      const t = now();
      await db.transaction().execute(async (tx) => {
        await tx.updateTable('components').set({ status: 'revoked', revoked_at: t }).where('id', '=', row.id).where('status', '!=', 'revoked').execute();
        if (row.token_id) await tx.updateTable('tokens').set({ revoked_at: t }).where('id', '=', row.token_id).where('revoked_at', 'is', null).execute();
      });
      if (row.cert_serial) opts.revocations?.add(row.cert_serial);
      req.log.info({ component: name, serial: row.cert_serial }, 'component revoked');
    }
    const after = await componentByName(db, name);
    return componentView(after.row, after.site);
  });

  // `?address=host:port`: where a process server's or master target's data listener is reached
  // now (it may listen elsewhere after a restart); the vault sends peers there.
  app.post('/components/:name/heartbeat', { schema: { tags: ['components'], params: NameParam, querystring: HeartbeatQuery, response: { 200: Component, ...errors(400, 401, 403, 404) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    const { address } = req.query as Static<typeof HeartbeatQuery>;
    const { row, site } = await componentByName(db, name);
    if (row.token_id === null || principalOf(req).tokenId !== row.token_id) {
      throw new ReboundError('forbidden', 'component.not-yours', `only component '${name}''s own token may send its heartbeat: use the token the vault returned when it registered.`);
    }
    if (address !== undefined) {
      addressHost(address);
      if (row.role === 'agent') throw invalid('address-not-for-agents', `component '${name}' is an agent, which has no data listener: send its heartbeat without an address.`);
    }
    const t = now();
    const next = { last_seen_at: t, ...(address === undefined ? {} : { address }) };
    await db.updateTable('components').set(next).where('id', '=', row.id).execute();
    return componentView({ ...row, ...next }, site);
  });
}
