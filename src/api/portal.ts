// Serves the web portal (portal/dist, a single-page app) at `/`: its hashed assets with a year of
// caching, index.html (never cached) for every client route, and, when the portal has not been
// built, a short page saying how to build it. The API, /metrics, /healthz and the API docs are
// never shadowed; a non-browser request for an unknown path still gets the API's JSON 404.
//
// The portal is answered from an onRequest hook registered before the API's auth hook, because
// the pages themselves are public (they hold no data: every data call carries the user's token)
// while the auth hook refuses any routed request without a token. Call registerPortal(app)
// before that hook is added.
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';

export const PORTAL_DIST = path.resolve(import.meta.dirname, '../../portal/dist');

const RESERVED = [/^\/api(\/|$)/, /^\/metrics$/, /^\/healthz$/];
const YEAR_SECONDS = 365 * 24 * 3600;
// The build puts no inline script or style in its pages; anything injected is refused.
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

const NOT_BUILT = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rebound portal not built</title></head>
<body><main><h1>Rebound</h1><p>The portal is not built: run <code>scripts/portal-build</code> in the
checkout, then reload this page. The REST API is at <a href="/api/v1/docs">/api/v1/docs</a>.</p></main></body></html>
`;

export interface PortalOptions {
  /** The built portal (default portal/dist of this checkout). */
  dist?: string;
}

/** A file of the build for a URL path, or undefined when the path names none (or escapes it). */
function assetFor(dist: string, urlPath: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  if (decoded.includes('\0')) return undefined;
  const rel = path.posix.normalize(decoded).replace(/^\/+/, '');
  if (rel === '' || rel.startsWith('..')) return undefined;
  const file = path.join(dist, rel);
  if (!file.startsWith(dist + path.sep)) return undefined;
  try {
    return statSync(file).isFile() ? rel : undefined;
  } catch {
    return undefined;
  }
}

function securityHeaders(reply: FastifyReply): FastifyReply {
  return reply.header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
}

export async function registerPortal(app: FastifyInstance, opts: PortalOptions = {}): Promise<void> {
  const dist = path.resolve(opts.dist ?? PORTAL_DIST);
  // serve:false — no routes: the hook below decides what the portal answers.
  await app.register(fastifyStatic, { root: dist, serve: false, cacheControl: false, etag: true, lastModified: true });

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return;
    const urlPath = req.url.split('?')[0] ?? req.url;
    if (RESERVED.some((r) => r.test(urlPath))) return;
    const built = existsSync(path.join(dist, 'index.html'));
    const asset = built ? assetFor(dist, urlPath) : undefined;
    if (asset !== undefined && asset !== 'index.html') {
      // Vite names everything under assets/ by content hash, so it never changes under a name.
      const cache = asset.startsWith('assets/') ? `public, max-age=${YEAR_SECONDS}, immutable` : 'no-cache';
      return securityHeaders(reply).header('cache-control', cache).sendFile(asset);
    }
    // Client routes are pages: answer those a browser asks for; leave other unknown paths to the
    // API's 404 (a script that mistyped a path wants JSON, not a page).
    if (path.posix.extname(urlPath) !== '' || !(req.headers.accept ?? '').includes('text/html')) return;
    if (!built) return securityHeaders(reply).code(200).header('cache-control', 'no-cache').type('text/html; charset=utf-8').send(NOT_BUILT);
    return securityHeaders(reply).header('cache-control', 'no-cache').sendFile('index.html');
  });
}
