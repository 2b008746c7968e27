// Prometheus metrics: request latency by route and status (observed on every response), and
// gauges of jobs by state and protected items by health read from the vault at scrape time, so
// that every server of a scale-out vault reports the same numbers.
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Store } from '../store/open.ts';

export interface ApiMetrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status'>;
}

/** Counters of the data-path roles in this process (bytes and points since it started). */
export type DataStats = () => Record<string, number>;

export function createMetrics(store: Store, dataStats?: DataStats): ApiMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rebound_' });
  const httpDuration = new Histogram({
    name: 'rebound_http_request_duration_seconds',
    help: 'API request duration by route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  new Gauge({
    name: 'rebound_jobs',
    help: 'Jobs in the vault by state',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await store.db.selectFrom('jobs').select(['state', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('state').execute();
      for (const state of ['queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled']) this.set({ state }, 0);
      for (const r of rows) this.set({ state: r.state }, Number(r.n));
    },
  });
  new Gauge({
    name: 'rebound_protected_items',
    help: 'Protected items by RPO health',
    labelNames: ['health'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      const rows = await store.db.selectFrom('protected_items').select(['health', (eb) => eb.fn.countAll<number>().as('n')]).groupBy('health').execute();
      for (const health of ['normal', 'warning', 'critical']) this.set({ health }, 0);
      for (const r of rows) this.set({ health: r.health }, Number(r.n));
    },
  });
  if (dataStats) {
    new Gauge({
      name: 'rebound_replication_bytes',
      help: 'Bytes moved by the data-path roles of this process since it started (agent sent, agent skipped as already acknowledged, process server in/out, master target written)',
      labelNames: ['counter'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [k, v] of Object.entries(dataStats())) this.set({ counter: k }, v);
      },
    });
  }
  return { registry, httpDuration };
}
