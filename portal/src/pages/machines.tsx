// Machines by site, whether each is protected, and (operator) adding a machine by its disks.
import { useState } from 'react';
import { all, post } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import type { Item, Machine, Site } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { SelectField, TextField } from '../components/field.tsx';
import { InlineForm } from '../components/inline-form.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { bytes } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link } from '../router.tsx';

async function load() {
  const [machines, items, sites] = await Promise.all([all<Machine>('/machines'), all<Item>('/items'), all<Site>('/sites')]);
  return { machines, items: new Map(items.map((i) => [i.machine, i])), sites };
}

export function Machines({ session }: { session: Session }) {
  const r = useResource(load, [], 10_000);
  return (
    <section>
      <h1>Machines</h1>
      <Loading loading={r.loading} />
      <Notice error={r.error} />
      {r.data && r.data.machines.length === 0 && <p className="muted">No machines yet.</p>}
      {r.data && r.data.machines.length > 0 && (
        <table>
          <caption className="sr-only">Machines</caption>
          <thead>
            <tr>
              <th scope="col">Machine</th>
              <th scope="col">Site</th>
              <th scope="col">Host</th>
              <th scope="col">Kind</th>
              <th scope="col">Disks</th>
              <th scope="col">Protection</th>
            </tr>
          </thead>
          <tbody>
            {r.data.machines.map((m) => {
              const item = r.data?.items.get(m.name);
              return (
                <tr key={m.id}>
                  <th scope="row">
                    <Link to={`/items/${encodeURIComponent(m.name)}`}>{m.name}</Link>
                  </th>
                  <td>{m.site}</td>
                  <td>{m.host ?? '—'}</td>
                  <td>{m.kind}</td>
                  <td>{m.disks.map((d) => `${d.path} (${bytes(d.sizeBytes)})`).join(', ')}</td>
                  <td>{item ? <Badge value={item.state} /> : <span className="muted">not protected</span>}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {canOperate(session) && r.data && r.data.sites.length > 0 && <AddMachine sites={r.data.sites} reload={r.reload} />}
    </section>
  );
}

function AddMachine({ sites, reload }: { sites: Site[]; reload(): void }) {
  const [m, setM] = useState({ name: '', site: sites[0]?.name ?? '', disks: '' });
  return (
    <InlineForm
      title="Add a machine"
      submitLabel="Add machine"
      onSubmit={async () => {
        const disks = m.disks.split('\n').map((d) => d.trim()).filter((d) => d !== '');
        const made = await post<Machine>('/machines', { name: m.name, site: m.site, disks });
        reload();
        return `Machine ${made.name} added.`;
      }}
    >
      <TextField label="Machine name" value={m.name} onChange={(name) => setM({ ...m, name })} required />
      <SelectField label="Site" value={m.site} onChange={(site) => setM({ ...m, site })} options={sites.map((s) => ({ value: s.name, label: s.name }))} />
      <TextField label="Disks (one path a line)" value={m.disks} onChange={(disks) => setM({ ...m, disks })} multiline required />
    </InlineForm>
  );
}
