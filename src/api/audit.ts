// The audit log: one row per state-changing call, answered or refused — who (token name), what
// (method and route pattern), on what (the name or id in the path, else the body's name) and
// the HTTP status. The body is never stored (it may hold secrets); for a refusal the error code is.
import type { FastifyRequest } from 'fastify';
import type { Store } from '../store/open.ts';
import { now } from '../store/open.ts';

function targetOf(req: FastifyRequest): string {
  const params = (req.params ?? {}) as Record<string, unknown>;
  for (const k of ['machine', 'name', 'id']) {
    const v = params[k];
    if (typeof v === 'string') return v.slice(0, 200);
  }
  const body = req.body as { name?: unknown } | undefined;
  if (body && typeof body === 'object' && typeof body.name === 'string') return body.name.slice(0, 200);
  return '';
}

function errorCodeOf(payload: unknown): string | undefined {
  if (typeof payload !== 'string' || payload.length > 10_000) return undefined;
  try {
    const code = (JSON.parse(payload) as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' ? code : undefined;
  } catch {
    return undefined;
  }
}

export async function recordAudit(store: Store, req: FastifyRequest, status: number, payload: unknown): Promise<void> {
  const code = status >= 400 ? errorCodeOf(payload) : undefined;
  await store.db
    .insertInto('audit')
    .values({
      at: now(),
      actor: req.principal?.name ?? 'anonymous',
      action: `${req.method} ${req.routeOptions.url ?? (req.url.split('?')[0] ?? '').slice(0, 200)}`,
      target: targetOf(req),
      status,
      detail: code === undefined ? null : JSON.stringify({ error: code }),
    })
    .execute();
}
