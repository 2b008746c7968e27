// What the API's routes are built from, and what a request carries once authenticated.
import type { Logger } from 'pino';
import type { JobEngine } from '../jobs/engine.ts';
import type { Store } from '../store/open.ts';
import type { Principal } from './auth.ts';
import type { ItemActions } from '../vault/item-actions.ts';
import type { ReplicationCatalogue } from '../vault/replication-catalogue.ts';

export interface ApiDeps {
  store: Store;
  jobs: JobEngine;
  logger: Logger;
  version: string;
  /** Adds the dev/test-only routes (POST /api/v1/diag/jobs). */
  diagRoutes?: boolean;
  /** Lifecycle actions on items (protect, failovers…). */
  actions?: ItemActions;
  /** The replication catalogue (assignments, points) for role processes' calls. */
  catalogue?: ReplicationCatalogue;
  /** Byte counters of the data-path roles running in this process (for /metrics). */
  dataStats?: () => Record<string, number>;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | undefined;
  }
}

/** The authenticated principal; the auth hook has run for every /api/v1 route that uses this. */
export function principalOf(req: { principal: Principal | undefined }): Principal {
  if (!req.principal) throw new Error('route reached without authentication');
  return req.principal;
}
