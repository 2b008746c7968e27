// Sites with their hosts, and the policies and pairings that join them. An admin can add each.
import { useState } from 'react';
import { all, post, seg } from '../api/client.ts';
import { isAdmin } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import type { Host, Pairing, Policy, Site } from '../api/types.ts';
import { SelectField, TextField } from '../components/field.tsx';
import { InlineForm } from '../components/inline-form.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { bytes, duration } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';

interface SitesData {
  sites: (Site & { hosts: Host[] })[];
  policies: Policy[];
  pairings: Pairing[];
}

async function loadAll(): Promise<SitesData> {
  const [sites, policies, pairings] = await Promise.all([all<Site>('/sites'), all<Policy>('/policies'), all<Pairing>('/pairings')]);
  const withHosts = await Promise.all(sites.map(async (s) => ({ ...s, hosts: await all<Host>(`/sites/${seg(s.name)}/hosts`).catch(() => []) })));
  return { sites: withHosts, policies, pairings };
}

export function Sites({ session }: { session: Session }) {
  const r = useResource(loadAll, []);
  const admin = isAdmin(session);
  return (
    <section>
      <h1>Sites</h1>
      <Loading loading={r.loading} />
      <Notice error={r.error} />
      {r.data && (
        <>
          {r.data.sites.length === 0 && <p className="muted">No sites yet.</p>}
          <table>
            <caption className="sr-only">Sites</caption>
            <thead>
              <tr>
                <th scope="col">Site</th>
                <th scope="col">Provider</th>
                <th scope="col">Root</th>
                <th scope="col">Hosts</th>
              </tr>
            </thead>
            <tbody>
              {r.data.sites.map((s) => (
                <tr key={s.id}>
                  <th scope="row">{s.name}</th>
                  <td>{s.provider}</td>
                  <td>
                    <code>{s.root}</code>
                  </td>
                  <td>{s.hosts.length === 0 ? '—' : s.hosts.map((h) => h.name + (h.address ? ` (${h.address})` : '')).join(', ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <h2>Replication policies</h2>
          {r.data.policies.length === 0 && <p className="muted">No policies yet.</p>}
          {r.data.policies.length > 0 && (
            <table>
              <caption className="sr-only">Replication policies</caption>
              <thead>
                <tr>
                  <th scope="col">Policy</th>
                  <th scope="col">Copy frequency</th>
                  <th scope="col">Retention</th>
                  <th scope="col">App-consistent every</th>
                  <th scope="col">Compression</th>
                  <th scope="col">Encryption</th>
                  <th scope="col">Bandwidth cap</th>
                </tr>
              </thead>
              <tbody>
                {r.data.policies.map((p) => (
                  <tr key={p.id}>
                    <th scope="row">{p.name}</th>
                    <td>{duration(p.frequencySeconds)}</td>
                    <td>{duration(p.retentionSeconds)}</td>
                    <td>{p.appConsistentSeconds === 0 ? 'never' : duration(p.appConsistentSeconds)}</td>
                    <td>{p.compression}</td>
                    <td>{p.encryption}</td>
                    <td>{p.bandwidthBps === 0 ? 'none' : `${bytes(p.bandwidthBps)}/s`}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          <h2>Pairings</h2>
          {r.data.pairings.length === 0 && <p className="muted">No pairings yet.</p>}
          <ul>
            {r.data.pairings.map((p) => (
              <li key={p.id} data-testid="pairing">
                {p.primary} → {p.recovery} under policy {p.policy}
              </li>
            ))}
          </ul>
          {admin && <AdminForms data={r.data} reload={r.reload} />}
        </>
      )}
    </section>
  );
}

function AdminForms({ data, reload }: { data: SitesData; reload(): void }) {
  const [site, setSite] = useState({ name: '', provider: 'qemu', root: '' });
  const [host, setHost] = useState({ site: data.sites[0]?.name ?? '', name: '', address: '' });
  const [policy, setPolicy] = useState({ name: '', frequency: '30s', retention: '24h', appConsistent: '4h' });
  const [pairing, setPairing] = useState({ primary: data.sites[0]?.name ?? '', recovery: data.sites[1]?.name ?? '', policy: data.policies[0]?.name ?? '' });
  const siteOptions = data.sites.map((s) => ({ value: s.name, label: s.name }));
  const done = (text: string) => {
    reload();
    return text;
  };
  return (
    <div className="admin-forms">
      <h2>Add</h2>
      <InlineForm title="Add a site" submitLabel="Add site" onSubmit={async () => done(`Site ${(await post<Site>('/sites', site)).name} added.`)}>
        <TextField label="Site name" value={site.name} onChange={(name) => setSite({ ...site, name })} required />
        <SelectField label="Provider" value={site.provider} onChange={(provider) => setSite({ ...site, provider })} options={[{ value: 'qemu', label: 'qemu (KVM/QEMU VMs)' }, { value: 'physical', label: 'physical (Linux servers, disk images)' }]} />
        <TextField label="Root directory" value={site.root} onChange={(root) => setSite({ ...site, root })} required placeholder="/srv/rebound/site-a" />
      </InlineForm>
      {siteOptions.length > 0 && (
        <InlineForm title="Add a host" submitLabel="Add host" onSubmit={async () => done(`Host ${(await post<Host>(`/sites/${seg(host.site || siteOptions[0]?.value || '')}/hosts`, { name: host.name, ...(host.address ? { address: host.address } : {}) })).name} added.`)}>
          <SelectField label="Site of the host" value={host.site} onChange={(s) => setHost({ ...host, site: s })} options={siteOptions} />
          <TextField label="Host name" value={host.name} onChange={(name) => setHost({ ...host, name })} required />
          <TextField label="Address (optional)" value={host.address} onChange={(address) => setHost({ ...host, address })} />
        </InlineForm>
      )}
      <InlineForm title="Create a policy" submitLabel="Create policy" onSubmit={async () => done(`Policy ${(await post<Policy>('/policies', policy)).name} created.`)}>
        <TextField label="Policy name" value={policy.name} onChange={(name) => setPolicy({ ...policy, name })} required />
        <TextField label="Copy frequency" value={policy.frequency} onChange={(frequency) => setPolicy({ ...policy, frequency })} help="the RPO target, such as 30s or 5m" />
        <TextField label="Retention" value={policy.retention} onChange={(retention) => setPolicy({ ...policy, retention })} />
        <TextField label="App-consistent frequency" value={policy.appConsistent} onChange={(appConsistent) => setPolicy({ ...policy, appConsistent })} />
      </InlineForm>
      {siteOptions.length > 1 && data.policies.length > 0 && (
        <InlineForm title="Pair two sites" submitLabel="Pair" onSubmit={async () => done(`${(await post<Pairing>('/pairings', pairing)).primary} now replicates to ${pairing.recovery}.`)}>
          <SelectField label="Primary site" value={pairing.primary} onChange={(primary) => setPairing({ ...pairing, primary })} options={siteOptions} />
          <SelectField label="Recovery site" value={pairing.recovery} onChange={(recovery) => setPairing({ ...pairing, recovery })} options={siteOptions} />
          <SelectField label="Policy" value={pairing.policy} onChange={(p) => setPairing({ ...pairing, policy: p })} options={data.policies.map((p) => ({ value: p.name, label: p.name }))} />
        </InlineForm>
      )}
      <TokenForm />
    </div>
  );
}

function TokenForm() {
  const [t, setT] = useState({ name: '', role: 'reader' });
  return (
    <InlineForm
      title="Create an API token"
      submitLabel="Create token"
      onSubmit={async () => {
        const made = await post<{ token: string; name: string; role: string }>('/tokens', t);
        return `Token ${made.name} (${made.role}): ${made.token} — copy it now, it is not shown again.`;
      }}
    >
      <TextField label="Token name" value={t.name} onChange={(name) => setT({ ...t, name })} required />
      <SelectField label="Role" value={t.role} onChange={(role) => setT({ ...t, role })} options={['reader', 'operator', 'admin'].map((r) => ({ value: r, label: r }))} />
    </InlineForm>
  );
}

