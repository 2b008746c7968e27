// Client-side history for the dashboard's charts: GET /items every few seconds gives each item's
// RPO; /metrics, when it carries a replication byte counter, gives traffic as a rate between two
// samples. Kept in memory across page changes (not across reloads) for the last ten minutes.
import { all } from './api/client.ts';
import type { Item } from './api/types.ts';
import type { Series } from './components/line-chart.tsx';

export const SAMPLE_MS = 5000;
const KEEP_MS = 10 * 60_000;
const MAX_SERIES = 8;

interface State {
  items: Item[];
  rpo: Map<string, { t: number; v: number }[]>;
  traffic: { t: number; v: number }[];
  lastBytes: { t: number; total: number } | null;
  /** null: /metrics has no replication byte counter (the server does not expose traffic). */
  trafficMetric: string | null;
  error: unknown;
}

const state: State = { items: [], rpo: new Map(), traffic: [], lastBytes: null, trafficMetric: null, error: undefined };
const listeners = new Set<() => void>();
let timer: number | undefined;

const trim = <T extends { t: number }>(a: T[], now: number): T[] => a.filter((p) => now - p.t <= KEEP_MS);

/** Sum of the first counter in Prometheus text that counts replicated bytes. */
export function replicationBytes(text: string): { metric: string; total: number } | null {
  let metric: string | null = null;
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^(rebound_[a-z_]*(?:replicat|transfer|sent)[a-z_]*bytes[a-z_]*_total)(\{[^}]*\})?\s+([0-9.eE+-]+)/.exec(line);
    if (!m || m[1] === undefined || m[3] === undefined) continue;
    if (metric !== null && m[1] !== metric) continue;
    metric = m[1];
    total += Number(m[3]);
  }
  return metric === null ? null : { metric, total };
}

async function sample(): Promise<void> {
  const now = Date.now();
  try {
    const items = await all<Item>('/items');
    state.items = items;
    for (const it of items) {
      const s = state.rpo.get(it.machine) ?? [];
      if (it.rpoSeconds !== null) s.push({ t: now, v: it.rpoSeconds });
      state.rpo.set(it.machine, trim(s, now));
    }
    state.error = undefined;
  } catch (err) {
    state.error = err;
  }
  try {
    const res = await fetch('/metrics');
    const found = res.ok ? replicationBytes(await res.text()) : null;
    state.trafficMetric = found?.metric ?? null;
    if (found) {
      if (state.lastBytes !== null && now > state.lastBytes.t) {
        state.traffic.push({ t: now, v: Math.max(0, (found.total - state.lastBytes.total) / ((now - state.lastBytes.t) / 1000)) });
        state.traffic = trim(state.traffic, now);
      }
      state.lastBytes = { t: now, total: found.total };
    }
  } catch {
    state.trafficMetric = null;
  }
  for (const l of listeners) l();
}

export function subscribe(fn: () => void): () => void {
  listeners.add(fn);
  if (timer === undefined) {
    void sample();
    timer = window.setInterval(() => void sample(), SAMPLE_MS);
  }
  return () => {
    listeners.delete(fn);
    if (listeners.size === 0 && timer !== undefined) {
      window.clearInterval(timer);
      timer = undefined;
    }
  };
}

export function snapshot(): { items: Item[]; rpoSeries: Series[]; traffic: Series[] | null; error: unknown } {
  // The items furthest behind are the ones worth a line each.
  const worst = [...state.items].sort((a, b) => (b.rpoSeconds ?? -1) - (a.rpoSeconds ?? -1)).slice(0, MAX_SERIES);
  return {
    items: state.items,
    rpoSeries: worst.map((it) => ({ name: it.machine, points: state.rpo.get(it.machine) ?? [] })),
    traffic: state.trafficMetric === null ? null : [{ name: 'replication traffic', points: state.traffic }],
    error: state.error,
  };
}
