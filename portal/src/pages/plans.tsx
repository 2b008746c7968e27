// Recovery plans: the list, and (operator) a new plan made of ordered groups of machines, each
// group chosen from the vault's machines (a machine is in one group at most).
import { useState } from 'react';
import type { FormEvent } from 'react';
import { all, ApiError, describeError, post } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import type { Machine, Plan, PlanAction } from '../api/types.ts';
import { TextField } from '../components/field.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link, navigate } from '../router.tsx';

const count = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
const actionsOf = (p: Plan): PlanAction[] => p.groups.flatMap((g) => [...(g.before ?? []), ...(g.after ?? [])]);

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
              <th scope="col">Actions</th>
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
                <td>{actionsOf(p).length === 0 ? '—' : `${count(actionsOf(p).filter((a) => a.kind === 'script').length, 'script')}, ${count(actionsOf(p).filter((a) => a.kind === 'manual').length, 'manual action')}`}</td>
                <td>{when(p.updatedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {canOperate(session) && !missing && <CreatePlan />}
    </section>
  );
}

function CreatePlan() {
  const machines = useResource(() => all<Machine>('/machines'), []);
  const [name, setName] = useState('');
  const [groups, setGroups] = useState<string[][]>([[]]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const groupOf = (m: string): number => groups.findIndex((g) => g.includes(m));
  const toggle = (gi: number, m: string, on: boolean) =>
    setGroups(groups.map((g, i) => (i !== gi ? g : on ? [...g, m] : g.filter((x) => x !== m))));
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const chosen = groups.filter((g) => g.length > 0);
    if (name.trim() === '') return setError('Give the plan a name.');
    if (chosen.length === 0) return setError('Choose at least one machine for group 1: a plan fails over its groups in order.');
    if (chosen.length < groups.length) return setError(`Group ${groups.findIndex((g) => g.length === 0) + 1} has no machine: choose some or remove the group.`);
    setBusy(true);
    setError(null);
    post<Plan>('/plans', { name: name.trim(), groups: chosen.map((machines) => ({ machines })) }).then(
      (made) => {
        setBusy(false);
        navigate(`/plans/${encodeURIComponent(made.name)}`);
      },
      (err: unknown) => {
        setBusy(false);
        setError(describeError(err));
      },
    );
  };

  return (
    <form className="inline-form" onSubmit={submit} aria-label="Create a recovery plan">
      <h2>Create a recovery plan</h2>
      <p className="muted small">Groups fail over in order; the machines of a group in parallel. Add script and manual actions on the plan&rsquo;s page.</p>
      <TextField label="Plan name" value={name} onChange={setName} required />
      <Notice error={machines.error} />
      {machines.data && machines.data.length === 0 && <p className="muted">No machines yet: add them on the Machines page first.</p>}
      {machines.data &&
        groups.map((g, gi) => (
          <fieldset key={gi} className="group-editor">
            <legend>Group {gi + 1}</legend>
            <div className="machine-choices">
              {machines.data?.map((m) => {
                const other = groupOf(m.name);
                return (
                  <label key={m.id} className="choice">
                    <input type="checkbox" checked={g.includes(m.name)} disabled={other !== -1 && other !== gi} onChange={(e) => toggle(gi, m.name, e.target.checked)} />
                    <span>
                      {m.name} <span className="muted small">({m.site}{other !== -1 && other !== gi ? `, in group ${other + 1}` : ''})</span>
                    </span>
                  </label>
                );
              })}
            </div>
            {groups.length > 1 && (
              <button type="button" className="secondary" onClick={() => setGroups(groups.filter((_, i) => i !== gi))}>
                Remove group {gi + 1}
              </button>
            )}
          </fieldset>
        ))}
      <div className="actions">
        <button type="button" className="secondary" onClick={() => setGroups([...groups, []])}>
          Add a group
        </button>
        <button type="submit" disabled={busy}>
          {busy ? 'Working…' : 'Create plan'}
        </button>
      </div>
      {error !== null && (
        <p className="notice error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}
