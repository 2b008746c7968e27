// /tokens (admin): create (the secret is in this one answer only), list, revoke.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { notFound, invalid } from '../../domain/errors.ts';
import { parseDuration } from '../../domain/durations.ts';
import { validateName } from '../../domain/names.ts';
import { ROLES } from '../../domain/model.ts';
import type { Role } from '../../domain/model.ts';
import { now } from '../../store/open.ts';
import { createToken } from '../auth.ts';
import type { ApiDeps } from '../deps.ts';
import { decodeTextCursor, pageLimit, toPage } from '../pagination.ts';
import { NewToken, Page, PageQuery, Token, errors } from '../schemas.ts';
import { tokenView } from '../views.ts';

const CreateBody = Type.Object(
  {
    name: Type.String({ maxLength: 200 }),
    role: Type.Union(ROLES.map((r) => Type.Literal(r))),
    expiresIn: Type.Optional(Type.String({ maxLength: 20 })),
  },
  { additionalProperties: false },
);
const IdParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 100 }) });

export function tokenRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const db = deps.store.db;

  app.post('/tokens', { schema: { tags: ['tokens'], body: CreateBody, response: { 201: NewToken, ...errors(400, 401, 403) } } }, async (req, reply) => {
    const body = req.body as Static<typeof CreateBody>;
    const name = validateName(body.name, 'token');
    let expiresAt: number | null = null;
    if (body.expiresIn !== undefined) {
      const s = parseDuration(body.expiresIn, 'expiresIn');
      if (s <= 0) throw invalid('invalid-expiry', `expiresIn '${body.expiresIn}' is not a lifetime: give a positive duration such as '30d'.`);
      expiresAt = now() + s * 1000;
    }
    const created = await createToken(deps.store, name, body.role as Role, expiresAt);
    return reply.code(201).send(created);
  });

  app.get('/tokens', { schema: { tags: ['tokens'], querystring: Type.Object(PageQuery), response: { 200: Page(Token), ...errors(400, 401, 403) } } }, async (req) => {
    const q = req.query as { limit?: number; cursor?: string };
    const limit = pageLimit(q.limit);
    let sel = db.selectFrom('tokens').selectAll();
    if (q.cursor) sel = sel.where('id', '>', decodeTextCursor(q.cursor));
    const rows = await sel.orderBy('id').limit(limit + 1).execute();
    return toPage(rows, limit, (r) => r.id, tokenView);
  });

  app.delete('/tokens/:id', { schema: { tags: ['tokens'], params: IdParam, response: { 200: Token, ...errors(400, 401, 403, 404) } } }, async (req) => {
    const { id } = req.params as Static<typeof IdParam>;
    await db.updateTable('tokens').set({ revoked_at: now() }).where('id', '=', id).where('revoked_at', 'is', null).execute();
    const row = await db.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw notFound('token.not-found', `no token has id '${id}': list them with rebound token list.`);
    return tokenView(row);
  });
}
