// A realistically full vault for the vault benches: two sites, a policy, a pairing and `items`
// physical machines with their protected items (healths mixed), inserted directly in batches.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { newId, openStore } from '../../src/store/open.ts';

export async function seedItems(loc: { dataDir?: string; url?: string }, items: number): Promise<void> {
  const store = await openStore(loc);
  try {
    const t = Date.now();
    const root = path.join(loc.dataDir ?? '/tmp', 'bench-root');
    mkdirSync(root, { recursive: true });
    const a = newId();
    const b = newId();
    const pol = newId();
    const pair = newId();
    await store.db.insertInto('sites').values([
      { id: a, name: 'a', provider: 'physical', root, config: '{}', created_at: t },
      { id: b, name: 'b', provider: 'qemu', root, config: '{}', created_at: t },
    ]).execute();
    await store.db.insertInto('policies').values({ id: pol, name: 'p', frequency_s: 30, retention_s: 86400, app_consistent_s: 0, compression: 'zstd', encryption: 'none', bandwidth_bps: 0, initial_start: 'immediate', created_at: t }).execute();
    await store.db.insertInto('pairings').values({ id: pair, primary_site_id: a, recovery_site_id: b, policy_id: pol, created_at: t }).execute();
    const healths = ['normal', 'normal', 'normal', 'warning', 'critical'];
    for (let i = 0; i < items; i += 500) {
      const ms = Array.from({ length: Math.min(500, items - i) }, (_, j) => ({ id: newId(), name: `m-${String(i + j).padStart(5, '0')}`, site_id: a, host_id: null, kind: 'physical', disks: '[{"id":"d","path":"/x","sizeBytes":1,"format":"raw"}]', config: '{}', created_at: t }));
      await store.db.insertInto('machines').values(ms).execute();
      await store.db.insertInto('protected_items').values(ms.map((m, j) => ({
        id: newId(), machine_id: m.id, pairing_id: pair, state: 'protected', direction: 'forward', active_site_id: a, group_name: null,
        health: healths[(i + j) % healths.length] ?? 'normal', last_point_at: t - 10_000, details: '{}', version: 1, created_at: t, updated_at: t,
      }))).execute();
    }
  } finally {
    await store.close();
  }
}
