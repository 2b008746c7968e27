// A qemu site's machines are its VM definitions (ROOT/vms/NAME/vm.json): discovery adds the ones
// the vault does not know yet as machines of kind 'vm', with their disks. Existing rows are
// left as they are (a machine under protection keeps its identity).
import { QemuProvider } from '../providers/qemu/qemu-provider.ts';
import type { Store } from '../store/open.ts';
import { newId, now } from '../store/open.ts';

export async function discoverQemuSite(store: Store, site: { id: string; root: string; provider: string }): Promise<string[]> {
  if (site.provider !== 'qemu') return [];
  const p = new QemuProvider({ root: site.root });
  const found = await p.discover();
  const added: string[] = [];
  for (const m of found) {
    const have = await store.db.selectFrom('machines').select(['id', 'site_id']).where('name', '=', m.name).executeTakeFirst();
    if (have) continue;
    const disks = await p.disks(m.name);
    await store.db
      .insertInto('machines')
      .values({
        id: newId(),
        name: m.name,
        site_id: site.id,
        host_id: null,
        kind: 'vm',
        disks: JSON.stringify(disks.map((d) => ({ id: d.id, path: d.path, sizeBytes: d.sizeBytes, format: d.format }))),
        config: '{}',
        created_at: now(),
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    added.push(m.name);
  }
  return added;
}
