// Every error the API answers with has one shape, `{ error: { code, message, hint? } }`: our own
// ReboundErrors map through httpStatusOf; Fastify's own refusals (validation, bad JSON, wrong
// content type, body too large, unknown route) are translated here so that a client never sees
// Fastify's default body, and bad input never becomes a 500.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ReboundError, httpStatusOf, toReboundError } from '../domain/errors.ts';

export interface ErrorBody {
  error: { code: string; message: string; hint?: string };
}

function body(code: string, message: string, hint?: string): ErrorBody {
  return { error: hint === undefined ? { code, message } : { code, message, hint } };
}

/** Fastify's own error codes → our codes, statuses and sentences. */
function fromFastify(err: FastifyError): { status: number; body: ErrorBody } | undefined {
  if (err.validation) {
    const first = err.validation[0];
    const where = err.validationContext ?? 'request';
    const field = first?.instancePath ? `${where}${first.instancePath.replaceAll('/', '.')}` : where;
    const params = first?.params as { missingProperty?: string; additionalProperty?: string } | undefined;
    let what = first?.message ?? 'is not valid';
    if (params?.missingProperty) what = `is missing '${params.missingProperty}'`;
    if (params?.additionalProperty) what = `has an unknown field '${params.additionalProperty}'`;
    return {
      status: 400,
      body: body('invalid-request', `the ${field} ${what}.`, 'see /api/v1/openapi.json for the accepted fields and their types.'),
    };
  }
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, body: body('unsupported-media-type', `content type '${String(err.message.split(': ').pop())}' is not accepted: send JSON with 'content-type: application/json'.`) };
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, body: body('body-too-large', 'the request body is larger than this server accepts (1 MiB): send less.') };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return { status: 400, body: body('invalid-json', "the body is empty but its content type says JSON: send a JSON object, or '{}'.") };
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 400, body: body('invalid-json', `the body is not valid JSON (${err.message}): send a JSON object.`) };
    default:
      break;
  }
  if (err instanceof SyntaxError) return { status: 400, body: body('invalid-json', `the body is not valid JSON (${err.message}): send a JSON object.`) };
  const status = err.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    return { status, body: body(err.code ? err.code.toLowerCase().replaceAll('_', '-') : `http-${status}`, `${err.message}.`) };
  }
  return undefined;
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    if (!(err instanceof ReboundError)) {
      const mapped = fromFastify(err);
      if (mapped) return reply.code(mapped.status).type('application/json').send(mapped.body);
    }
    const e = toReboundError(err);
    const status = httpStatusOf[e.kind];
    if (status >= 500) req.log.error({ err }, 'request failed');
    // Internal messages may carry implementation details; say what to do instead.
    const message = e.kind === 'internal' ? 'the server failed to handle this request; it has been logged. Try again, and report it if it persists.' : e.message;
    return reply.code(status).type('application/json').send(body(e.code, message, e.hint));
  });
  app.setNotFoundHandler((req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0] ?? req.url;
    return reply
      .code(404)
      .type('application/json')
      .send(body('route-not-found', `there is no ${req.method} ${path} in this API.`, 'see /api/v1/openapi.json for the routes.'));
  });
}
