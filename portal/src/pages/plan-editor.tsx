// Editing a recovery plan's groups and actions (operator): which machines are in each group (a
// machine in one group at most), the groups' order, adding and removing groups, and each group's
// before/after actions (reordered or removed; new ones come from the "Add an action" form). Saved
// in one PUT /plans/:name carrying the updatedAt it was read at, so an edit made from a stale
// page is refused (409 plan-changed) instead of overwriting someone else's change.
import { useState } from 'react';
import type { FormEvent } from 'react';
import { describeError, request, seg } from '../api/client.ts';
import type { Machine, Plan, PlanAction } from '../api/types.ts';

interface Group {
  machines: string[];
  before: PlanAction[];
  after: PlanAction[];
}

export const describeAction = (a: PlanAction): string => (a.kind === 'script' ? `script ${a.path}${a.timeoutSeconds === undefined ? '' : ` (timeout ${a.timeoutSeconds} s)`}` : `manual: ${a.text}`);

const copy = (p: Plan): Group[] => p.groups.map((g) => ({ machines: [...g.machines], before: [...(g.before ?? [])], after: [...(g.after ?? [])] }));

function move<T>(a: T[], i: number, by: number): T[] {
  const j = i + by;
  if (j < 0 || j >= a.length) return a;
  const out = [...a];
  [out[i], out[j]] = [out[j] as T, out[i] as T];
  return out;
}

export function PlanEditor({ plan, machines, onSaved, onCancel }: { plan: Plan; machines: Machine[]; onSaved(p: Plan): void; onCancel(): void }) {
  const [groups, setGroups] = useState<Group[]>(() => copy(plan));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);

  const groupOf = (m: string): number => groups.findIndex((g) => g.machines.includes(m));
  const change = (gi: number, fn: (g: Group) => Group) => setGroups(groups.map((g, i) => (i === gi ? fn(g) : g)));
  const toggle = (gi: number, m: string, on: boolean) => change(gi, (g) => ({ ...g, machines: on ? [...g.machines, m] : g.machines.filter((x) => x !== m) }));
  // Machines of the vault first, then any the plan names that the vault no longer has (kept, so
  // the server's refusal says which one).
  const names = [...new Set([...machines.map((m) => m.name), ...groups.flatMap((g) => g.machines)])];
  const siteOf = new Map(machines.map((m) => [m.name, m.site]));

  const save = (e: FormEvent) => {
    e.preventDefault();
    const empty = groups.findIndex((g) => g.machines.length === 0);
    if (groups.length === 0) return setError('A plan needs at least one group: add a group and choose its machines.');
    if (empty !== -1) return setError(`Group ${empty + 1} has no machine: choose some or remove the group.`);
    setBusy(true);
    setError(null);
    request<Plan>('PUT', `/plans/${seg(plan.name)}`, { groups, updatedAt: plan.updatedAt }).then(
      (saved) => {
        setBusy(false);
        onSaved(saved);
      },
      (err: unknown) => {
        setBusy(false);
        setError(describeError(err));
      },
    );
  };

  const actionList = (gi: number, when: 'before' | 'after') => {
    const list = groups[gi]?.[when] ?? [];
    if (list.length === 0) return null;
    const where = `${when} group ${gi + 1}`;
    return (
      <ul className="plain action-edit" aria-label={`Actions ${where}`}>
        {list.map((a, k) => {
          const what = `${where}, ${k + 1}: ${describeAction(a)}`;
          return (
            <li key={k}>
              <span className="action-line">
                {when === 'before' ? 'Before' : 'After'}: {describeAction(a)}
              </span>{' '}
              {list.length > 1 && (
                <>
                  <button type="button" className="secondary small-button" aria-label={`Move up: action ${what}`} disabled={k === 0} onClick={() => change(gi, (g) => ({ ...g, [when]: move(g[when], k, -1) }))}>
                    Up
                  </button>{' '}
                  <button type="button" className="secondary small-button" aria-label={`Move down: action ${what}`} disabled={k === list.length - 1} onClick={() => change(gi, (g) => ({ ...g, [when]: move(g[when], k, 1) }))}>
                    Down
                  </button>{' '}
                </>
              )}
              <button type="button" className="secondary small-button" aria-label={`Remove action ${what}`} onClick={() => change(gi, (g) => ({ ...g, [when]: g[when].filter((_, x) => x !== k) }))}>
                Remove
              </button>
            </li>
          );
        })}
      </ul>
    );
  };

  return (
    <form className="inline-form" onSubmit={save} aria-label="Edit groups and actions">
      <h3>Edit groups and actions</h3>
      <p className="muted small">Groups fail over in order, the machines of a group in parallel. Nothing changes until you save.</p>
      {groups.map((g, gi) => (
        <fieldset key={gi} className="group-editor">
          <legend>Group {gi + 1}</legend>
          {actionList(gi, 'before')}
          <div className="machine-choices">
            {names.map((m) => {
              const other = groupOf(m);
              return (
                <label key={m} className="choice">
                  <input type="checkbox" checked={g.machines.includes(m)} disabled={other !== -1 && other !== gi} onChange={(e) => toggle(gi, m, e.target.checked)} />
                  <span>
                    {m}{' '}
                    <span className="muted small">
                      ({siteOf.get(m) ?? 'not in the vault'}
                      {other !== -1 && other !== gi ? `, in group ${other + 1}` : ''})
                    </span>
                  </span>
                </label>
              );
            })}
          </div>
          {actionList(gi, 'after')}
          <div className="actions">
            <button type="button" className="secondary" disabled={gi === 0} onClick={() => setGroups(move(groups, gi, -1))}>
              Move group {gi + 1} up
            </button>
            <button type="button" className="secondary" disabled={gi === groups.length - 1} onClick={() => setGroups(move(groups, gi, 1))}>
              Move group {gi + 1} down
            </button>
            <button type="button" className="secondary" disabled={groups.length === 1} onClick={() => setGroups(groups.filter((_, i) => i !== gi))}>
              Remove group {gi + 1}
            </button>
          </div>
        </fieldset>
      ))}
      <div className="actions">
        <button type="button" className="secondary" onClick={() => setGroups([...groups, { machines: [], before: [], after: [] }])}>
          Add a group
        </button>
        <button type="submit" disabled={busy}>
          {busy ? 'Working…' : 'Save plan'}
        </button>
        <button type="button" className="secondary" onClick={onCancel}>
          Cancel editing
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
