// Recovery plans: the list, and (operator) a new plan from ordered groups of machines.
import { useState } from 'react';
import { all, post } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import type { Plan } from '../api/types.ts';
import { TextField } from '../components/field.tsx';
import { InlineForm } from '../components/inline-form.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link } from '../router.tsx';
import { ApiError } from '../api/client.ts';

/** "web-01, web-02\ndb-01" → groups in order; blank lines and empty names are dropped. */
export function parseGroups(text: string): { machines: string[] }[] {
  return text
    .split('\n')
    .map((line) => line.split(',').map((m) => m.trim()).filter((m) => m !== ''))
    .filter((g) => g.length > 0)
    .map((machines) => ({ machines }));
}

export function Plans({ session }: { session: Session }) {
  const r = useResource(() => all<Plan>('/plans'), []);
  const missing = r.error instanceof ApiError && r.error.notAvailable;
  return (
    <section>
      <h1>Recovery plans</h1>
      <Loading loading={r.loading} />
      <Notice error={r.error} what="Recovery plans" />
      {r.data && r.data.length === 0 && <p className="muted">No recovery plans yet.</p>}
      {r.data && r.data.length > 0 && (
        <table>
          <caption className="sr-only">Recovery plans</caption>
          <thead>
            <tr>
              <th scope="col">Plan</th>
              <th scope="col">Groups, in order</th>
              <th scope="col">Updated</th>
            </tr>
          </thead>
          <tbody>
            {r.data.map((p) => (
              <tr key={p.id}>
                <th scope="row">
                  <Link to={`/plans/${encodeURIComponent(p.name)}`}>{p.name}</Link>
                </th>
                <td>{p.groups.map((g, i) => `${i + 1}: ${g.machines.join(', ')}`).join(' · ')}</td>
                <td>{when(p.updatedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canOperate(session) && !missing && <CreatePlan reload={r.reload} />}
    </section>
  );
}

function CreatePlan({ reload }: { reload(): void }) {
  const [name, setName] = useState('');
  const [groups, setGroups] = useState('');
  return (
    <InlineForm
      title="Create a recovery plan"
      submitLabel="Create plan"
      onSubmit={async () => {
        const g = parseGroups(groups);
        if (g.length === 0) throw new Error('Give at least one group: machine names separated by commas, one group a line.');
        const made = await post<Plan>('/plans', { name, groups: g });
        reload();
        return `Plan ${made.name} created with ${g.length} group${g.length === 1 ? '' : 's'}.`;
      }}
    >
      <TextField label="Plan name" value={name} onChange={setName} required />
      <TextField label="Groups (one a line, machines separated by commas)" value={groups} onChange={setGroups} multiline required help="groups fail over in this order; the machines of a group in parallel" />
    </InlineForm>
  );
}
