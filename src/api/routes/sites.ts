// /sites and /sites/:name/hosts: a site is a place machines run at, reached through a provider,
// with a root directory its replicas and failed-over disks live under. A new site gets its
// 'default' container in the same transaction.
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { conflict, invalid, notFound } from '../../domain/errors.ts';
import { validateName } from '../../domain/names.ts';
import { isInside } from '../../domain/paths.ts';
import { PROVIDERS } from '../../domain/model.ts';
import type { Kysely } from 'kysely';
import type { Database, Row } from '../../store/schema.ts';
import { newId, now } from '../../store/open.ts';
import type { ApiDeps } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { Host, NameParam, OpenObject, Page, PageQuery, Site, errors } from '../schemas.ts';
import { hostView, siteView } from '../views.ts';

const CreateSite = Type.Object(
  {
    name: Type.String({ maxLength: 200 }),
    provider: Type.Union(PROVIDERS.map((p) => Type.Literal(p))),
    root: Type.String({ minLength: 1, maxLength: 4096 }),
    config: Type.Optional(OpenObject),
  },
  { additionalProperties: false },
);
const CreateHost = Type.Object(
  { name: Type.String({ maxLength: 200 }), address: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })), config: Type.Optional(OpenObject) },
  { additionalProperties: false },
);

export async function siteByName(db: Kysely<Database>, name: string): Promise<Row<'sites'>> {
  const row = await db.selectFrom('sites').selectAll().where('name', '=', name).executeTakeFirst();
  if (!row) throw notFound('site.not-found', `no site is named '${name}': list them with rebound site list.`);
  return row;
}

/** Makes sure `root` is an absolute directory, creating it when missing; refuses anything else. */
function prepareRoot(root: string): string {
  if (!path.isAbsolute(root) || root.includes('\0')) {
    throw invalid('invalid-root', `site root '${root}' is not an absolute path: give the full path of a directory, such as /srv/rebound/site-a.`);
  }
  if (root.split('/').includes('..')) throw invalid('invalid-root', `site root '${root}' contains '..': give the path without it.`);
  const normal = path.resolve(root);
  let st;
  try {
    st = statSync(normal);
  } catch {
    try {
      mkdirSync(normal, { recursive: true, mode: 0o750 });
    } catch (err) {
      throw invalid('invalid-root', `site root ${normal} does not exist and cannot be created (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): create it, or choose a writable place.`);
    }
    return normal;
  }
  if (!st.isDirectory()) throw invalid('invalid-root', `site root ${normal} exists and is not a directory: choose a directory.`);
  return normal;
}

export function siteRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;

  app.post('/sites', { schema: { tags: ['sites'], body: CreateSite, response: { 201: Site, ...errors(400, 401, 403, 409) } } }, async (req, reply) => {
    const body = req.body as Static<typeof CreateSite>;
    const name = validateName(body.name, 'site');
    if (await db.selectFrom('sites').select('id').where('name', '=', name).executeTakeFirst()) {
      throw conflict('site.exists', `a site named '${name}' already exists: choose another name.`);
    }
    const root = prepareRoot(body.root);
    const t = now();
    const row: Row<'sites'> = { id: newId(), name, provider: body.provider, root, config: JSON.stringify(body.config ?? {}), created_at: t };
    try {
      await db.transaction().execute(async (tx) => {
        await tx.insertInto('sites').values(row).execute();
        await tx.insertInto('containers').values({ id: newId(), site_id: row.id, name: 'default', created_at: t }).execute();
      });
    } catch (err) {
      if (await db.selectFrom('sites').select('id').where('name', '=', name).executeTakeFirst()) {
        throw conflict('site.exists', `a site named '${name}' already exists: choose another name.`);
      }
      throw err;
    }
    return reply.code(201).send(siteView(row));
  });

  app.get('/sites', { schema: { tags: ['sites'], querystring: Type.Object(PageQuery), response: { 200: Page(Site), ...errors(400, 401) } } }, async (req) => {
    const q = req.query as { limit?: number; cursor?: string };
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('sites').selectAll();
    if (q.cursor) sel = sel.where('name', '>', decodeTextCursor(q.cursor));
    return toPage(await sel.orderBy('name').limit(limit + 1).execute(), limit, (r) => r.name, siteView);
  });

  app.get('/sites/:name', { schema: { tags: ['sites'], params: NameParam, response: { 200: Site, ...errors(400, 401, 404) } } }, async (req) => {
    const { name } = req.params as Static<typeof NameParam>;
    return siteView(await siteByName(db, name));
  });

  app.post('/sites/:name/hosts', { schema: { tags: ['sites'], params: NameParam, body: CreateHost, response: { 201: Host, ...errors(400, 401, 403, 404, 409) } } }, async (req, reply) => {
    const { name: siteName } = req.params as Static<typeof NameParam>;
    const body = req.body as Static<typeof CreateHost>;
    const site = await siteByName(db, siteName);
    const name = validateName(body.name, 'host');
    if (await db.selectFrom('hosts').select('id').where('site_id', '=', site.id).where('name', '=', name).executeTakeFirst()) {
      throw conflict('host.exists', `site ${site.name} already has a host named '${name}': choose another name.`);
    }
    const root = (body.config as Record<string, unknown> | undefined)?.['root'];
    if (root !== undefined) {
      if (typeof root !== 'string' || !path.isAbsolute(root) || !isInside(site.root, root)) {
        throw invalid('host-root-outside-site', `config.root of host ${name} must be an absolute directory inside site ${site.name}'s root ${site.root} (got ${JSON.stringify(root)}): every path Rebound writes stays under its site's root.`);
      }
    }
    const row: Row<'hosts'> = { id: newId(), site_id: site.id, name, address: body.address ?? null, config: JSON.stringify(body.config ?? {}), created_at: now() };
    await db.insertInto('hosts').values(row).execute();
    return reply.code(201).send(hostView(row, site.name));
  });

  app.get('/sites/:name/hosts', { schema: { tags: ['sites'], params: NameParam, querystring: Type.Object(PageQuery), response: { 200: Page(Host), ...errors(400, 401, 404) } } }, async (req) => {
    const { name: siteName } = req.params as Static<typeof NameParam>;
    const q = req.query as { limit?: number; cursor?: string };
    const site = await siteByName(db, siteName);
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('hosts').selectAll().where('site_id', '=', site.id);
    if (q.cursor) sel = sel.where('name', '>', decodeTextCursor(q.cursor));
    return toPage(await sel.orderBy('name').limit(limit + 1).execute(), limit, (r) => r.name, (r) => hostView(r, site.name));
  });
}
