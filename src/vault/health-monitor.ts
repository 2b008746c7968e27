// Keeps every item's health current: each second it judges the RPO (age of the newest point)
// of the items that replicate against their policy (src/domain/health.ts) and writes the items
// whose health changed, with an event for each change. Also exports the RPO as a gauge.
import type { Logger } from 'pino';
import { itemHealth } from '../domain/health.ts';
import type { ItemState } from '../domain/model.ts';
import type { Store } from '../store/open.ts';
import { now } from '../store/open.ts';
import { recordEvent } from './events.ts';

export interface HealthMonitorOptions {
  store: Store;
  logger: Logger;
  intervalMs?: number;
  onRpo?(machine: string, seconds: number | null): void;
}

export function startHealthMonitor(o: HealthMonitorOptions): { stop(): Promise<void>; check(): Promise<void> } {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  const check = async (): Promise<void> => {
    const rows = await o.store.db
      .selectFrom('protected_items as i')
      .innerJoin('machines as m', 'm.id', 'i.machine_id')
      .innerJoin('pairings as p', 'p.id', 'i.pairing_id')
      .innerJoin('policies as pol', 'pol.id', 'p.policy_id')
      .select(['i.id', 'i.state', 'i.health', 'i.last_point_at', 'i.created_at', 'i.updated_at', 'm.name', 'pol.frequency_s'])
      .execute();
    const t = now();
    for (const r of rows) {
      const last = r.last_point_at === null ? null : Number(r.last_point_at);
      o.onRpo?.(r.name, last === null ? null : (t - last) / 1000);
      const h = itemHealth(t, r.state as ItemState, last, { frequencySeconds: r.frequency_s }, Number(r.created_at));
      if (h === r.health) continue;
      await o.store.db.updateTable('protected_items').set({ health: h }).where('id', '=', r.id).execute();
      const rpo = last === null ? 'no recovery point yet' : `newest point ${Math.round((t - last) / 1000)} s old, policy ${r.frequency_s} s`;
      await recordEvent(o.store, { kind: 'health-changed', itemId: r.id, message: `${r.name}: health ${r.health} → ${h} (${rpo})`, data: { from: r.health, to: h, rpoSeconds: last === null ? null : (t - last) / 1000 } });
    }
  };
  const tick = (): void => {
    if (stopped) return;
    running = check()
      .catch((err: unknown) => o.logger.warn({ err }, 'health monitor: check failed'))
      .finally(() => { if (!stopped) timer = setTimeout(tick, o.intervalMs ?? 1000); });
  };
  tick();
  return {
    check,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
