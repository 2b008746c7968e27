// Jobs, newest first, with a filter by state.
import { get } from '../api/client.ts';
import type { Job, Page } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { SelectField } from '../components/field.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { ProgressBar } from '../components/progress-bar.tsx';
import { TargetLink } from '../components/target-link.tsx';
import { when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link, navigate } from '../router.tsx';

const STATES = ['queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'];

export function Jobs() {
  const state = new URLSearchParams(location.search).get('state') ?? '';
  const r = useResource(() => get<Page<Job>>(`/jobs?limit=100${state ? `&state=${encodeURIComponent(state)}` : ''}`), [state], 3000);
  return (
    <section>
      <h1>Jobs</h1>
      <SelectField label="State" value={state} onChange={(s) => navigate(s === '' ? '/jobs' : `/jobs?state=${s}`)} options={[{ value: '', label: 'any' }, ...STATES.map((s) => ({ value: s, label: s }))]} />
      <Loading loading={r.loading} />
      <Notice error={r.error} />
      {r.data && r.data.items.length === 0 && <p className="muted">No jobs{state ? ` in state ${state}` : ''}.</p>}
      {r.data && r.data.items.length > 0 && (
        <table>
          <caption className="sr-only">Jobs</caption>
          <thead>
            <tr>
              <th scope="col">Job</th>
              <th scope="col">Target</th>
              <th scope="col">State</th>
              <th scope="col">Progress</th>
              <th scope="col">Started by</th>
              <th scope="col">Created</th>
            </tr>
          </thead>
          <tbody>
            {r.data.items.map((j) => (
              <tr key={j.id}>
                <th scope="row">
                  <Link to={`/jobs/${j.id}`}>{j.kind}</Link>
                </th>
                <td>
                  <TargetLink target={j.target} />
                </td>
                <td>
                  <Badge value={j.state} />
                </td>
                <td>
                  <ProgressBar value={j.progress} label={`progress of job ${j.kind} ${j.target}`} />
                </td>
                <td>{j.createdBy}</td>
                <td>{when(j.createdAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
