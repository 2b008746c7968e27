// The dashboard's charts, fed by the server.
//
// RPO over time comes from the vault's recovery-point catalogue: the RPO of an item at time t is
// t minus the time of its newest point taken by t (the server's own definition, rpoSeconds =
// now - lastPointAt), so the catalogue's points give the whole sawtooth back to the oldest point
// the item keeps (retention keeps every point after its oldest one), not only what this page saw.
// GET /items every few seconds gives each item's current RPO and newest point; an item's points
// are read again (newest first, only as far back as needed) when its newest point changed.
// Points seen are kept here for the chart's window even after retention merges them away.
//
// Replication traffic comes from the server's /metrics: the rebound_replication_bytes counters of
// the data-path roles running in the server's process (bytes the agents sent, bytes the master
// targets wrote at the recovery site), as a rate between two samples. A server whose roles run
// as separate processes has no such counters (each role reports on its own --metrics listener),
// and the dashboard says so instead of drawing an empty chart.
import { get } from './api/client.ts';
import { all } from './api/client.ts';
import type { Item, Page, RecoveryPoint } from './api/types.ts';
import type { Series } from './components/line-chart.tsx';

export const SAMPLE_MS = 5000;
/** How far back the charts go. */
export const WINDOW_MS = 30 * 60_000;
export const MAX_SERIES = 8;

/** The counters of rebound_replication_bytes drawn as traffic, with their legend. */
export const TRAFFIC_COUNTERS: { counter: string; name: string }[] = [
  { counter: 'agent_sent', name: 'sent by agents' },
  { counter: 'master_target_written', name: 'written at the recovery site' },
];

interface ItemHistory {
  /** takenAt of every point seen, ascending, without duplicates. */
  taken: number[];
  /** The lastPointAt the points were last read for. */
  readFor: number | null;
}

interface State {
  items: Item[];
  history: Map<string, ItemHistory>;
  /** Per counter, the rate series. */
  traffic: Map<string, { t: number; v: number }[]>;
  lastCounters: { t: number; values: Map<string, number> } | null;
  /** false: the server's /metrics has no replication counters (no data-path role in its process). */
  trafficReported: boolean;
  sampledAt: number;
  /** The server's clock at the last /items sample, from its items' lastPointAt + rpoSeconds
   * (the points' times are the server's: a browser clock that is off does not bend the chart). */
  serverNow: number;
  error: unknown;
}

const state: State = { items: [], history: new Map(), traffic: new Map(), lastCounters: null, trafficReported: false, sampledAt: 0, serverNow: 0, error: undefined };
const listeners = new Set<() => void>();
let timer: number | undefined;

/** The rebound_replication_bytes counters in Prometheus text (the sum over any other labels). */
export function replicationCounters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^rebound_replication_bytes\{([^}]*)\}\s+([0-9.eE+-]+)/.exec(line);
    if (!m || m[1] === undefined || m[2] === undefined) continue;
    const counter = /(?:^|,)counter="([^"]*)"/.exec(m[1])?.[1];
    if (counter === undefined) continue;
    out.set(counter, (out.get(counter) ?? 0) + Number(m[2]));
  }
  return out;
}

/** The RPO sawtooth of one item from its points' times, from `from` to `now` (seconds). */
export function rpoSeries(taken: readonly number[], from: number, now: number): { t: number; v: number }[] {
  const out: { t: number; v: number }[] = [];
  // The newest point taken by `from` starts the line; without one the line starts at the first point.
  let last: number | null = null;
  let i = 0;
  while (i < taken.length && (taken[i] ?? Infinity) <= from) last = taken[i++] ?? null;
  if (last !== null) out.push({ t: from, v: (from - last) / 1000 });
  for (; i < taken.length; i++) {
    const t = taken[i] ?? 0;
    if (t > now) break;
    if (last !== null) out.push({ t, v: (t - last) / 1000 });
    out.push({ t, v: 0 });
    last = t;
  }
  if (last !== null) out.push({ t: now, v: Math.max(0, (now - last) / 1000) });
  return out;
}

/** The item's points back to `since` (and the first one before it), newest first, in pages. */
async function pointsSince(machine: string, since: number, known: ReadonlySet<number>): Promise<number[]> {
  const out: number[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 20; pages++) {
    const page: Page<RecoveryPoint> = await get<Page<RecoveryPoint>>(`/items/${encodeURIComponent(machine)}/points?limit=200${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
    let done = false;
    for (const p of page.items) {
      out.push(p.takenAt);
      // Older than the window, or already known (everything older is known too): enough.
      if (p.takenAt <= since || known.has(p.takenAt)) done = true;
    }
    cursor = page.next;
    if (done || cursor === null) break;
  }
  return out;
}

async function sampleItems(sampledAt: number): Promise<void> {
  let now = sampledAt;
  const items = await all<Item>('/items');
  state.items = items;
  let serverNow = 0;
  for (const it of items) if (it.lastPointAt !== null && it.rpoSeconds !== null) serverNow = Math.max(serverNow, it.lastPointAt + it.rpoSeconds * 1000);
  // rpoSeconds is whole seconds (floored): the browser's clock when it agrees within that.
  state.serverNow = serverNow === 0 || Math.abs(now - serverNow) < 2000 ? now : serverNow;
  now = state.serverNow;
  const worst = [...items].sort((a, b) => (b.rpoSeconds ?? -1) - (a.rpoSeconds ?? -1)).slice(0, MAX_SERIES);
  const since = now - WINDOW_MS;
  await Promise.all(
    worst.map(async (it) => {
      const h = state.history.get(it.machine) ?? { taken: [], readFor: null };
      if (it.lastPointAt === null) {
        // Not replicating (yet, or any more: committed, disabled): nothing to draw.
        state.history.set(it.machine, { taken: [], readFor: null });
        return;
      }
      if (h.readFor !== it.lastPointAt) {
        const known = new Set(h.taken);
        const got = await pointsSince(it.machine, since, known);
        const merged = [...new Set([...h.taken, ...got])].filter((t) => t >= since - 24 * 3600_000).sort((a, b) => a - b);
        // Keep one point before the window (it gives the RPO at the window's start).
        const firstIn = merged.findIndex((t) => t > since);
        h.taken = firstIn > 0 ? merged.slice(firstIn - 1) : merged;
        h.readFor = it.lastPointAt;
      }
      state.history.set(it.machine, h);
    }),
  );
  for (const m of [...state.history.keys()]) if (!items.some((it) => it.machine === m)) state.history.delete(m);
}

async function sampleTraffic(now: number): Promise<void> {
  const res = await fetch('/metrics');
  const counters = res.ok ? replicationCounters(await res.text()) : new Map<string, number>();
  state.trafficReported = TRAFFIC_COUNTERS.some((c) => counters.has(c.counter));
  if (!state.trafficReported) return;
  const prev = state.lastCounters;
  if (prev !== null && now > prev.t) {
    for (const { counter } of TRAFFIC_COUNTERS) {
      const v = counters.get(counter);
      const before = prev.values.get(counter);
      if (v === undefined || before === undefined) continue;
      // A counter that went down belongs to a restarted server: no rate for that interval.
      if (v < before) continue;
      const s = (state.traffic.get(counter) ?? []).filter((p) => now - p.t <= WINDOW_MS);
      s.push({ t: now, v: (v - before) / ((now - prev.t) / 1000) });
      state.traffic.set(counter, s);
    }
  }
  state.lastCounters = { t: now, values: counters };
}

async function sample(): Promise<void> {
  const now = Date.now();
  const [items, traffic] = await Promise.allSettled([sampleItems(now), sampleTraffic(now)]);
  state.error = items.status === 'rejected' ? (items.reason as unknown) : undefined;
  if (traffic.status === 'rejected') state.trafficReported = false;
  state.sampledAt = now;
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

export interface Snapshot {
  items: Item[];
  rpoSeries: Series[];
  /** null: the server reports no replication traffic (its roles run elsewhere). */
  traffic: Series[] | null;
  sampled: boolean;
  error: unknown;
}

export function snapshot(): Snapshot {
  const now = state.serverNow;
  // The items furthest behind are the ones worth a line each.
  const worst = [...state.items].filter((it) => it.lastPointAt !== null).sort((a, b) => (b.rpoSeconds ?? -1) - (a.rpoSeconds ?? -1)).slice(0, MAX_SERIES);
  return {
    items: state.items,
    rpoSeries: worst.map((it) => ({ name: it.machine, points: rpoSeries(state.history.get(it.machine)?.taken ?? [], now - WINDOW_MS, now) })),
    traffic: state.trafficReported ? TRAFFIC_COUNTERS.map((c) => ({ name: c.name, points: state.traffic.get(c.counter) ?? [] })) : null,
    sampled: state.sampledAt > 0,
    error: state.error,
  };
}
