// Property-based fuzzing of every route in the OpenAPI document (so new routes are fuzzed without
// touching this file) against a real `rebound serve`, on SQLite and PostgreSQL: malformed bodies,
// path parameters, query strings and tokens always get a 4xx JSON error body, never a 500, and
// leave the vault's tables exactly as they were.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { dialects, freshPostgresDatabase } from '../support/db.ts';
import { startServerProcess } from '../support/server.ts';
import type { ServerProcess } from '../support/server.ts';
import type { Store } from '../../src/store/open.ts';
import { call, isErrorBody, openVault, snapshot } from './helpers.ts';

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  anyOf?: JsonSchema[];
}
interface Op {
  method: string;
  path: string;
  params: string[];
  query: Record<string, JsonSchema>;
  body: JsonSchema | undefined;
}

function operations(doc: { paths: Record<string, Record<string, { security?: unknown[]; parameters?: { in: string; name: string; schema: JsonSchema }[]; requestBody?: { content?: Record<string, { schema: JsonSchema }> } }>> }): Op[] {
  const ops: Op[] = [];
  for (const [p, methods] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(methods)) {
      if (!p.startsWith('/api/v1/') || (Array.isArray(op.security) && op.security.length === 0)) continue; // public routes
      const params = (op.parameters ?? []).filter((x) => x.in === 'path').map((x) => x.name);
      const query = Object.fromEntries((op.parameters ?? []).filter((x) => x.in === 'query').map((x) => [x.name, x.schema]));
      ops.push({ method: m.toUpperCase(), path: p, params, query, body: op.requestBody?.content?.['application/json']?.schema });
    }
  }
  return ops;
}

/** A value of a different JSON type than the schema declares. */
function wrongType(s: JsonSchema): fc.Arbitrary<unknown> {
  const types = s.anyOf ? s.anyOf.map((x) => x.type) : [s.type];
  const all: [string, fc.Arbitrary<unknown>][] = [
    ['string', fc.string()],
    ['integer', fc.integer()],
    ['number', fc.double({ noNaN: true, noDefaultInfinity: true })],
    ['boolean', fc.boolean()],
    ['object', fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 3 })],
    ['array', fc.array(fc.jsonValue(), { maxLength: 3 })],
    ['null', fc.constant(null)],
  ];
  const numeric = types.includes('number') || types.includes('integer');
  return fc.oneof(...all.filter(([t]) => !types.includes(t) && !(numeric && (t === 'integer' || t === 'number'))).map(([, a]) => a));
}

/** Bodies that break the schema: not an object, missing what is required, wrong types, unknown fields. */
function badBody(schema: JsonSchema): fc.Arbitrary<{ raw: string; contentType?: string }> {
  const props = schema.properties ?? {};
  const required = schema.required ?? [];
  const json = (a: fc.Arbitrary<unknown>) => a.map((v) => ({ raw: JSON.stringify(v) }));
  const wrongField = Object.keys(props).length
    ? fc.constantFrom(...Object.keys(props)).chain((k) =>
        wrongType(props[k] ?? {}).map((bad) => ({ raw: JSON.stringify({ ...Object.fromEntries(required.map((r) => [r, 'x'])), [k]: bad }) })),
      )
    : json(fc.constant({ unexpected: 1 }));
  return fc.oneof(
    json(fc.oneof(fc.constant(null), fc.integer(), fc.string(), fc.array(fc.jsonValue(), { maxLength: 3 }))),
    json(fc.dictionary(fc.string({ minLength: 1 }).filter((k) => !(k in props)), fc.jsonValue(), { minKeys: 1, maxKeys: 4 })),
    json(fc.constant(Object.fromEntries(required.map((r) => [r, 'a\u0000b'])))),
    json(fc.constant(Object.fromEntries(required.map((r) => [r, 'x'.repeat(5000)])))),
    required.length ? json(fc.constant(Object.fromEntries(required.slice(1).map((r) => [r, 'x'])))) : json(fc.constant({ unexpected: true })),
    wrongField,
    fc.string().filter((t) => { try { JSON.parse(t); return false; } catch { return true; } }).map((raw) => ({ raw })),
    fc.string({ maxLength: 50 }).map((raw) => ({ raw, contentType: 'text/csv' })),
    fc.constant({ raw: 'x'.repeat(1024 * 1024 + 10) }),
  );
}

const badToken = fc.oneof(
  fc.constant<string | undefined>(undefined),
  fc.string({ maxLength: 80 }).map((t) => `Bearer ${t}`),
  fc.base64String({ minLength: 8, maxLength: 60 }).map((t) => `Bearer rbd_${t}`),
  fc.string({ maxLength: 40 }).filter((t) => !/^\s*bearer\s/i.test(t)),
);

const badQueryValue = fc.oneof(
  fc.integer({ min: 501 }).map(String),
  fc.integer({ max: 0 }).map(String),
  fc.string({ maxLength: 20 }).map((t) => `${t}x`),
);

const pathParam = fc.oneof(fc.string({ minLength: 1, maxLength: 80 }), fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), fc.constantFrom('\u0000', 'a\u0000b', '%', '\uffff'))
  .map((v) => v.toWellFormed())
  // '.' and '..' are dot segments the client itself resolves before sending: not a parameter.
  .filter((v) => v !== '.' && v !== '..');
// Raw path segments that are not valid percent-encoding or not valid UTF-8 once decoded.
const rawSegment = fc.constantFrom('%ZZ', '%', '%C0%80', '%FF%FE', '%00', '%ED%A0%80');

function fill(p: string, values: Record<string, string>): string {
  return p.replace(/\{(\w+)\}/g, (_, k: string) => encodeURIComponent(values[k] ?? 'x'));
}

for (const dialect of dialects) {
  describe(`fuzzing the API on ${dialect}`, () => {
    let s: ServerProcess;
    let vault: Store;
    let ops: Op[];
    let before0: string;

    before(async () => {
      const dbUrl = dialect === 'postgres' ? await freshPostgresDatabase() : undefined;
      s = await startServerProcess({ ...(dbUrl ? { dbUrl } : {}), env: { REBOUND_ENABLE_TEST_JOBS: '1' } });
      vault = await openVault(dbUrl ? { url: dbUrl } : { dataDir: s.dataDir });
      // Something to leave untouched: a site with a host, a policy, a token.
      const admin = (method: string, p: string, body: unknown) => call(s.url, method, `/api/v1${p}`, { token: s.token, body });
      assert.equal((await admin('POST', '/sites', { name: 'seed', provider: 'qemu', root: `${s.dataDir}/seed` })).status, 201);
      assert.equal((await admin('POST', '/sites/seed/hosts', { name: 'h' })).status, 201);
      assert.equal((await admin('POST', '/policies', { name: 'seed' })).status, 201);
      const doc = await call(s.url, 'GET', '/api/v1/openapi.json');
      ops = operations(doc.body as Parameters<typeof operations>[0]);
      before0 = await snapshot(vault);
    });
    after(async () => {
      await vault?.close();
      await s?.cleanup();
    });

    const expect4xx = async (what: string, r: Awaited<ReturnType<typeof call>>, status?: number) => {
      assert.ok(r.status >= 400 && r.status < 500, `${what} → ${r.status} ${r.text.slice(0, 300)}`);
      if (status !== undefined) assert.equal(r.status, status, `${what} → ${r.text.slice(0, 300)}`);
      assert.match(r.type, /application\/json/, what);
      assert.ok(isErrorBody(r.body), `${what} → ${r.text.slice(0, 300)}`);
    };

    it('derives the routes from the OpenAPI document', () => {
      assert.ok(ops.length >= 25, `only ${ops.length} operations`);
      assert.ok(ops.some((o) => o.method === 'POST' && o.path === '/api/v1/sites' && o.body?.required?.includes('root')));
    });

    it('refuses malformed tokens on every route with 401', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...ops), badToken, async (op, auth) => {
          const headers: Record<string, string> = auth === undefined ? {} : { authorization: auth };
          let res: Response;
          try {
            res = await fetch(s.url + fill(op.path, {}), { method: op.method, headers });
          } catch (err) {
            // fetch refuses some header values itself (control characters): nothing reached the server.
            if (err instanceof TypeError) return;
            throw err;
          }
          const text = await res.text();
          await expect4xx(`${op.method} ${op.path} with ${JSON.stringify(auth)}`, { status: res.status, text, body: JSON.parse(text) as unknown, type: res.headers.get('content-type') ?? '' }, 401);
        }),
        { numRuns: 150 },
      );
    });

    it('refuses malformed bodies with a 4xx error body', async () => {
      const withBody = ops.filter((o) => o.body);
      assert.ok(withBody.length >= 7);
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...withBody).chain((op) => badBody(op.body ?? {}).map((b) => ({ op, b }))), async ({ op, b }) => {
          const r = await call(s.url, op.method, fill(op.path, { name: 'seed' }), { token: s.token, raw: b.raw, ...(b.contentType ? { contentType: b.contentType } : {}) });
          await expect4xx(`${op.method} ${op.path} with ${b.raw.slice(0, 100)}`, r);
        }),
        { numRuns: 250 },
      );
    });

    it('refuses malformed query strings with 400', async () => {
      const withQuery = ops.filter((o) => 'limit' in o.query);
      assert.ok(withQuery.length >= 8);
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...withQuery), fc.constantFrom('limit', 'cursor'), badQueryValue, async (op, key, value) => {
          const r = await call(s.url, op.method, `${fill(op.path, { name: 'seed' })}?${key}=${encodeURIComponent(value)}`, { token: s.token });
          await expect4xx(`${op.method} ${op.path}?${key}=${value}`, r, 400);
        }),
        { numRuns: 150 },
      );
    });

    it('answers unknown or malformed path parameters with a 4xx error body', async () => {
      const withParams = ops.filter((o) => o.params.length > 0);
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...withParams), fc.oneof(pathParam.map((v) => ({ v, raw: false })), rawSegment.map((v) => ({ v, raw: true }))), async (op, { v: value, raw }) => {
          const values = Object.fromEntries(op.params.map((p) => [p, value]));
          const target = raw ? op.path.replace(/\{(\w+)\}/g, value) : fill(op.path, values);
          const r = await call(s.url, op.method, target, { token: s.token, ...(op.method === 'POST' ? { body: {} } : {}) });
          await expect4xx(`${op.method} ${op.path} with ${JSON.stringify(value)}`, r);
        }),
        { numRuns: 150 },
      );
    });

    it('left every table as it was', async () => {
      assert.equal(await snapshot(vault), before0);
      const health = await call(s.url, 'GET', '/healthz');
      assert.equal(health.status, 200);
    });
  });
}
