// Protected items with state, health and RPO; filter by health (the dashboard's cards link here).
import { all } from '../api/client.ts';
import type { Item } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { duration, when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link, navigate } from '../router.tsx';
import { SelectField } from '../components/field.tsx';

export function Items() {
  const health = new URLSearchParams(location.search).get('health') ?? '';
  const r = useResource(() => all<Item>(`/items${health ? `?health=${encodeURIComponent(health)}` : ''}`), [health], 5000);
  return (
    <section>
      <h1>Protected items</h1>
      <SelectField
        label="Health"
        value={health}
        onChange={(h) => navigate(h === '' ? '/items' : `/items?health=${h}`)}
        options={[{ value: '', label: 'any' }, { value: 'normal', label: 'healthy' }, { value: 'warning', label: 'warning' }, { value: 'critical', label: 'critical' }]}
      />
      <Loading loading={r.loading} />
      <Notice error={r.error} />
      {r.data && r.data.length === 0 && <p className="muted">No protected items{health ? ` with health ${health}` : ''}.</p>}
      {r.data && r.data.length > 0 && (
        <table>
          <caption className="sr-only">Protected items</caption>
          <thead>
            <tr>
              <th scope="col">Machine</th>
              <th scope="col">State</th>
              <th scope="col">Health</th>
              <th scope="col">RPO</th>
              <th scope="col">Runs at</th>
              <th scope="col">Direction</th>
              <th scope="col">Group</th>
              <th scope="col">Newest point</th>
            </tr>
          </thead>
          <tbody>
            {r.data.map((it) => (
              <tr key={it.id}>
                <th scope="row">
                  <Link to={`/items/${encodeURIComponent(it.machine)}`}>{it.machine}</Link>
                </th>
                <td>
                  <Badge value={it.state} />
                </td>
                <td>
                  <Badge value={it.health} />
                </td>
                <td>{duration(it.rpoSeconds)}</td>
                <td>{it.activeSite}</td>
                <td>{it.direction}</td>
                <td>{it.group ?? '—'}</td>
                <td>{when(it.lastPointAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
