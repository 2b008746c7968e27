// One recovery plan: its groups in order with their actions, (operator) adding a script or
// manual action, and failing the whole plan over: test failover and cleanup, planned or
// unplanned failover, commit, reverse replication.
import { useState } from 'react';
import { ApiError, describeError, get, post, seg } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import type { Job, Plan, PlanAction } from '../api/types.ts';
import { Dialog } from '../components/dialog.tsx';
import { SelectField, TextField } from '../components/field.tsx';
import { InlineForm } from '../components/inline-form.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { PointSelect } from '../components/point-select.tsx';
import { useResource } from '../hooks/use-resource.ts';
import { Link, navigate } from '../router.tsx';

type Verb = 'test-failover' | 'test-cleanup' | 'failover' | 'commit' | 'reverse-replicate';
const LABELS: Record<Verb, string> = {
  'test-failover': 'Test failover',
  'test-cleanup': 'Cleanup test failover',
  failover: 'Failover',
  commit: 'Commit',
  'reverse-replicate': 'Reverse replicate',
};

const describe = (a: PlanAction) => (a.kind === 'script' ? `script ${a.path}` : `manual: ${a.text}`);

export function PlanDetail({ name, session }: { name: string; session: Session }) {
  const r = useResource(() => get<Plan>(`/plans/${seg(name)}`), [name]);
  const [dialog, setDialog] = useState<Verb | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [point, setPoint] = useState('latest');
  const [notes, setNotes] = useState('');
  const [mode, setMode] = useState<'planned' | 'unplanned'>('planned');
  const [shutdown, setShutdown] = useState(true);
  const operator = canOperate(session);

  const act = (verb: Verb, body: unknown) => {
    setBusy(true);
    setError(null);
    post<{ job: Job }>(`/plans/${seg(name)}/${verb}`, body).then(
      (res) => {
        setBusy(false);
        setDialog(null);
        navigate(`/jobs/${res.job.id}`);
      },
      (err: unknown) => {
        setBusy(false);
        setError(err instanceof ApiError && err.notAvailable ? `${LABELS[verb]} of a plan is not available on this server yet.` : describeError(err));
      },
    );
  };
  const errorNote = error === null ? null : (
    <p className="notice error" role="alert">
      {error}
    </p>
  );

  return (
    <section>
      <p>
        <Link to="/plans">Recovery plans</Link> ›
      </p>
      <h1>Plan {name}</h1>
      <Loading loading={r.loading} />
      <Notice error={r.error} what="Recovery plans" />
      {r.data && (
        <>
          <ol className="groups">
            {r.data.groups.map((g, i) => (
              <li key={i}>
                <h2>Group {i + 1}</h2>
                {(g.before ?? []).map((a, k) => (
                  <p key={`b${k}`} className="action-line">
                    Before: {describe(a)}
                  </p>
                ))}
                <p>Machines (in parallel): {g.machines.map((m, k) => <span key={m}>{k > 0 ? ', ' : ''}<Link to={`/items/${encodeURIComponent(m)}`}>{m}</Link></span>)}</p>
                {(g.after ?? []).map((a, k) => (
                  <p key={`a${k}`} className="action-line">
                    After: {describe(a)}
                  </p>
                ))}
              </li>
            ))}
          </ol>
          {operator && (
            <>
              <div className="actions" role="group" aria-label="Plan actions">
                {(Object.keys(LABELS) as Verb[]).map((v) => (
                  <button key={v} type="button" className={v === 'failover' ? 'danger' : ''} onClick={() => { setError(null); setDialog(v); }}>
                    {LABELS[v]}
                  </button>
                ))}
              </div>
              <AddAction plan={r.data} reload={r.reload} />
            </>
          )}
          <Dialog title={`Test failover of plan ${name}`} open={dialog === 'test-failover'} onClose={() => setDialog(null)} onSubmit={() => act('test-failover', { point })} submitLabel="Start test failover" busy={busy}>
            <p>Every machine of the plan starts at the recovery site in an isolated network, group by group. Replication keeps running.</p>
            <PointSelect value={point} onChange={setPoint} points={null} />
            {errorNote}
          </Dialog>
          <Dialog title={`Cleanup test failover of plan ${name}`} open={dialog === 'test-cleanup'} onClose={() => setDialog(null)} onSubmit={() => act('test-cleanup', { notes })} submitLabel="Clean up" busy={busy}>
            <TextField label="Notes" value={notes} onChange={setNotes} multiline required help="what the drill showed" />
            {errorNote}
          </Dialog>
          <Dialog title={`Failover of plan ${name}`} open={dialog === 'failover'} onClose={() => setDialog(null)} onSubmit={() => act('failover', mode === 'planned' ? { mode } : { mode, point, shutdownSource: shutdown })} submitLabel="Start failover" busy={busy} danger>
            <p>Every machine of the plan fails over from the site it runs at to its partner site, group by group, with the plan&rsquo;s actions between them.</p>
            <fieldset>
              <legend>Type of failover</legend>
              <label className="choice">
                <input type="radio" name="plan-mode" checked={mode === 'planned'} onChange={() => setMode('planned')} /> Planned: machines shut down, all data is sent, no data loss.
              </label>
              <label className="choice">
                <input type="radio" name="plan-mode" checked={mode === 'unplanned'} onChange={() => setMode('unplanned')} /> Unplanned: from a recovery point; newer data may be lost.
              </label>
            </fieldset>
            {mode === 'unplanned' && (
              <>
                <PointSelect value={point} onChange={setPoint} points={null} />
                <label className="choice">
                  <input type="checkbox" checked={shutdown} onChange={(e) => setShutdown(e.target.checked)} /> Shut down the machines before failover
                </label>
              </>
            )}
            {errorNote}
          </Dialog>
          <Dialog title={`Commit plan ${name}`} open={dialog === 'commit'} onClose={() => setDialog(null)} onSubmit={() => act('commit', {})} submitLabel="Commit" busy={busy} danger>
            <p>Commit after checking the failed-over machines: their recovery points are removed.</p>
            {errorNote}
          </Dialog>
          <Dialog title={`Reverse replication of plan ${name}`} open={dialog === 'reverse-replicate'} onClose={() => setDialog(null)} onSubmit={() => act('reverse-replicate', {})} submitLabel="Start reverse replication" busy={busy}>
            <p>Every machine of the plan replicates back from the site it now runs at.</p>
            {errorNote}
          </Dialog>
        </>
      )}
    </section>
  );
}

function AddAction({ plan, reload }: { plan: Plan; reload(): void }) {
  const [a, setA] = useState({ group: '1', when: 'before', kind: 'manual', text: '' });
  return (
    <InlineForm
      title="Add an action"
      submitLabel="Add action"
      onSubmit={async () => {
        const action: PlanAction = a.kind === 'script' ? { kind: 'script', path: a.text.trim() } : { kind: 'manual', text: a.text.trim() };
        await post(`/plans/${seg(plan.name)}/actions`, { group: Number(a.group), when: a.when, action });
        reload();
        return `Added ${describe(action)} ${a.when} group ${a.group}.`;
      }}
    >
      <SelectField label="Group" value={a.group} onChange={(group) => setA({ ...a, group })} options={plan.groups.map((_, i) => ({ value: String(i + 1), label: `group ${i + 1}` }))} />
      <SelectField label="When" value={a.when} onChange={(w) => setA({ ...a, when: w })} options={[{ value: 'before', label: 'before the group' }, { value: 'after', label: 'after the group' }]} />
      <SelectField label="Kind" value={a.kind} onChange={(kind) => setA({ ...a, kind })} options={[{ value: 'manual', label: 'manual (the job waits until resumed)' }, { value: 'script', label: 'script (its exit code decides)' }]} />
      <TextField label={a.kind === 'script' ? 'Script path on the server' : 'Instruction'} value={a.text} onChange={(text) => setA({ ...a, text })} required />
    </InlineForm>
  );
}
