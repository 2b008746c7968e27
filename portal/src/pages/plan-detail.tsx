// One recovery plan: its groups in order with their actions and the state of each machine, the
// plan's jobs (a waiting one is resumed on its page), (operator) adding a script or manual action
// to a group, and the whole plan's verbs the machines' states allow: test failover and cleanup,
// planned or unplanned failover (or failback) with the direction stated, commit, reverse
// replication; editing its groups and actions (plan-editor.tsx); and deleting the plan.
import { useState } from 'react';
import { ApiError, all, describeError, get, post, request, seg } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import { FINISHED_JOB_STATES } from '../api/types.ts';
import type { Host, Item, Job, Machine, Page, Pairing, Plan, PlanAction, RecoveryPoint } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { Dialog } from '../components/dialog.tsx';
import { SelectField, TextField } from '../components/field.tsx';
import { InlineForm } from '../components/inline-form.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { PointSelect } from '../components/point-select.tsx';
import { when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { allowedVerbs, canStop, VERB_LABELS, wayOf } from '../lifecycle.ts';
import type { Way } from '../lifecycle.ts';
import { Link, navigate } from '../router.tsx';
import { FailoverDialog } from './failover-dialog.tsx';
import { describeAction as describe, PlanEditor } from './plan-editor.tsx';
import type { FailoverBody } from './failover-dialog.tsx';

type Verb = 'test-failover' | 'test-cleanup' | 'failover' | 'commit' | 'reverse-replicate';
const VERBS: Verb[] = ['test-failover', 'test-cleanup', 'failover', 'commit', 'reverse-replicate'];

interface Loaded {
  plan: Plan;
  /** Each machine's item; null when it is not protected. */
  items: Map<string, Item | null>;
  machines: Map<string, Machine>;
  pairings: Pairing[];
  jobs: Job[];
  /** The one machine's points, for a plan of one machine (a point id is allowed only then). */
  points: RecoveryPoint[] | null;
  hostsAtTarget: Host[];
}

async function load(name: string): Promise<Loaded> {
  const plan = await get<Plan>(`/plans/${seg(name)}`);
  const names = plan.groups.flatMap((g) => g.machines);
  const [pairings, machineList, jobs] = await Promise.all([
    all<Pairing>('/pairings'),
    all<Machine>('/machines'),
    get<Page<Job>>(`/jobs?target=${seg(`plan:${plan.name}`)}&limit=10`).catch(() => ({ items: [] as Job[], next: null })),
  ]);
  const items = new Map<string, Item | null>();
  await Promise.all(
    names.map(async (m) => {
      const it = await get<Item>(`/items/${seg(m)}`).catch((err: unknown) => {
        if (err instanceof ApiError && err.status === 404) return null;
        throw err;
      });
      items.set(m, it);
    }),
  );
  const only = names.length === 1 ? names[0] : undefined;
  const points = only !== undefined && items.get(only) ? await all<RecoveryPoint>(`/items/${seg(only)}/points`).catch(() => []) : [];
  const first = [...items.values()].find((i) => i !== null) ?? null;
  const pairing = first ? (pairings.find((p) => p.id === first.pairing) ?? null) : null;
  const hostsAtTarget = first && pairing ? await all<Host>(`/sites/${seg(wayOf(first, pairing).to)}/hosts`).catch(() => []) : [];
  return { plan, items, machines: new Map(machineList.map((m) => [m.name, m])), pairings, jobs: jobs.items, points, hostsAtTarget };
}

/** The plan's way when every machine is protected under pairings that agree; null otherwise. */
function planWay(d: Loaded): Way | null {
  const ways = [...d.items.values()].map((it) => (it === null ? null : wayOf(it, d.pairings.find((p) => p.id === it.pairing) ?? null)));
  if (ways.length === 0 || ways.some((w) => w === null)) return null;
  const w = ways[0]!;
  return ways.every((x) => x !== null && x.from === w.from && x.to === w.to && x.failback === w.failback) ? w : null;
}

/** The verbs every machine's state allows (the server checks again and names each refusal). */
function planVerbs(d: Loaded): Verb[] {
  const items = [...d.items.values()];
  if (items.length === 0 || items.some((i) => i === null)) return [];
  return VERBS.filter((v) => items.every((i) => allowedVerbs(i).includes(v)));
}

export function PlanDetail({ name, session }: { name: string; session: Session }) {
  const r = useResource(() => load(name), [name], 5000);
  const [dialog, setDialog] = useState<Verb | 'delete' | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [point, setPoint] = useState('latest');
  const [notes, setNotes] = useState('');
  const [editing, setEditing] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);
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
        setError(err instanceof ApiError && err.notAvailable ? `${VERB_LABELS[verb]} of a plan is not available on this server yet.` : describeError(err));
      },
    );
  };
  const remove = () => {
    setBusy(true);
    setError(null);
    request('DELETE', `/plans/${seg(name)}`).then(
      () => {
        setBusy(false);
        setDialog(null);
        navigate('/plans');
      },
      (err: unknown) => {
        setBusy(false);
        setError(describeError(err));
      },
    );
  };
  const open = (d: Verb | 'delete') => {
    setError(null);
    setDialog(d);
  };
  const errorNote = error === null ? null : (
    <p className="notice error" role="alert">
      {error}
    </p>
  );

  const d = r.data;
  const way = d ? planWay(d) : null;
  const verbs = d ? planVerbs(d) : [];
  const items = d ? [...d.items.values()] : [];
  const machineNames = d ? d.plan.groups.flatMap((g) => g.machines) : [];
  const single = machineNames.length === 1;
  const unfinished = d?.jobs.find((j) => !FINISHED_JOB_STATES.includes(j.state)) ?? null;
  const noStop = d ? machineNames.filter((m) => !canStop(d.machines.get(m) ?? null)) : [];
  const pointHelp = single ? undefined : 'For a plan of several machines: latest gives each machine its own latest point (a replication group its common one).';

  return (
    <section>
      <p>
        <Link to="/plans">Recovery plans</Link> ›
      </p>
      <h1>Plan {name}</h1>
      <Loading loading={r.loading} />
      <Notice error={r.error} what="Recovery plans" />
      {d && (
        <>
          <dl className="facts">
            <dt>Machines</dt>
            <dd>{machineNames.length} in {d.plan.groups.length} group{d.plan.groups.length === 1 ? '' : 's'}</dd>
            <dt>Direction</dt>
            <dd data-testid="plan-direction">{way ? `runs at ${way.from}; fails ${way.failback ? 'back' : 'over'} to ${way.to}` : 'not every machine is protected the same way (see below)'}</dd>
            {unfinished && (
              <>
                <dt>Current job</dt>
                <dd data-testid="plan-current-job">
                  <Link to={`/jobs/${unfinished.id}`}>
                    {unfinished.kind} ({unfinished.state})
                  </Link>
                  {unfinished.state === 'waiting' ? ' — waits for someone: resume it on its page' : ''}
                </dd>
              </>
            )}
          </dl>
          <ol className="groups">
            {d.plan.groups.map((g, i) => (
              <li key={i}>
                <h2>Group {i + 1}</h2>
                {(g.before ?? []).map((a, k) => (
                  <p key={`b${k}`} className="action-line">
                    Before: {describe(a)}
                  </p>
                ))}
                <table>
                  <caption className="sr-only">Machines of group {i + 1}</caption>
                  <thead>
                    <tr>
                      <th scope="col">Machine (fails over in parallel)</th>
                      <th scope="col">Protection</th>
                      <th scope="col">Runs at</th>
                    </tr>
                  </thead>
                  <tbody>
                    {g.machines.map((m) => {
                      const it = d.items.get(m) ?? null;
                      return (
                        <tr key={m}>
                          <th scope="row">
                            <Link to={`/items/${encodeURIComponent(m)}`}>{m}</Link>
                          </th>
                          <td>{it ? <Badge value={it.state} /> : 'not protected'}</td>
                          <td>{it?.activeSite ?? d.machines.get(m)?.site ?? '—'}</td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
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
                {verbs.map((v) => (
                  <button key={v} type="button" className={v === 'failover' ? 'danger' : ''} onClick={() => open(v)}>
                    {VERB_LABELS[v]}
                  </button>
                ))}
                {verbs.length === 0 && (
                  <p className="muted">
                    {items.some((i) => i === null)
                      ? `No plan action: ${machineNames.filter((m) => d.items.get(m) === null).join(', ')} ${machineNames.filter((m) => d.items.get(m) === null).length === 1 ? 'is' : 'are'} not protected.`
                      : unfinished
                        ? 'No plan action while its job runs.'
                        : 'No action fits every machine of the plan in its current state.'}
                  </p>
                )}
                {!unfinished && !editing && (
                  <button
                    type="button"
                    className="secondary"
                    onClick={() => {
                      setSaved(null);
                      setEditing(true);
                    }}
                  >
                    Edit groups and actions
                  </button>
                )}
                <button type="button" className="secondary" onClick={() => open('delete')}>
                  Delete plan
                </button>
              </div>
              {error !== null && dialog === null && errorNote}
              {saved !== null && (
                <p className="notice ok" role="status">
                  {saved}
                </p>
              )}
              {editing && !unfinished && (
                <PlanEditor
                  key={d.plan.updatedAt}
                  plan={d.plan}
                  machines={[...d.machines.values()]}
                  onCancel={() => setEditing(false)}
                  onSaved={(p) => {
                    setEditing(false);
                    setSaved(`Plan ${p.name} saved: ${p.groups.length} group${p.groups.length === 1 ? '' : 's'}.`);
                    r.reload();
                  }}
                />
              )}
              {!editing && <AddAction plan={d.plan} reload={r.reload} />}
            </>
          )}
          <h2>Jobs of this plan</h2>
          {d.jobs.length === 0 ? (
            <p className="muted">No job yet.</p>
          ) : (
            <table>
              <caption className="sr-only">Jobs of this plan</caption>
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  <th scope="col">State</th>
                  <th scope="col">Started by</th>
                  <th scope="col">Created</th>
                </tr>
              </thead>
              <tbody>
                {d.jobs.map((j) => (
                  <tr key={j.id}>
                    <th scope="row">
                      <Link to={`/jobs/${j.id}`}>{j.kind}</Link>
                    </th>
                    <td>
                      <Badge value={j.state} />
                    </td>
                    <td>{j.createdBy}</td>
                    <td>{when(j.createdAt)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}

          <Dialog title={`Test failover of plan ${name}`} open={dialog === 'test-failover'} onClose={() => setDialog(null)} onSubmit={() => act('test-failover', { point })} submitLabel="Start test failover" busy={busy}>
            {way && (
              <p className="direction">
                Test the plan&rsquo;s machines at {way.to}, group by group.
              </p>
            )}
            <p>Every machine of the plan starts in an isolated network from the chosen point, with the plan&rsquo;s actions between the groups. Replication keeps running.</p>
            <PointSelect value={point} onChange={setPoint} points={single ? d.points : []} help={pointHelp} />
            {errorNote}
          </Dialog>
          <Dialog title={`Cleanup test failover of plan ${name}`} open={dialog === 'test-cleanup'} onClose={() => setDialog(null)} onSubmit={() => act('test-cleanup', { notes })} submitLabel="Clean up" busy={busy}>
            <p>The test machines and their disks are removed.</p>
            <TextField label="Notes" value={notes} onChange={setNotes} multiline required help="what the drill showed" />
            {errorNote}
          </Dialog>
          {way && (
            <FailoverDialog
              key={`${items.map((i) => i?.state).join(',')}-${way.failback}`}
              open={dialog === 'failover'}
              subject={`plan ${name}`}
              machines={single ? (machineNames[0] ?? '') : 'its machines'}
              plural={!single}
              way={way}
              drillRunning={items.some((i) => i?.state === 'test-failover')}
              plannedRefused={noStop.length === 0 ? null : `A planned failover needs a way to shut every machine down; ${noStop.join(', ')} ${noStop.length === 1 ? 'has' : 'have'} no stop hook: add one, or use unplanned.`}
              syncChoice={items.every((i) => i?.state === 'protected')}
              hostsAtTarget={d.hostsAtTarget}
              points={single ? d.points : []}
              busy={busy}
              error={error}
              onClose={() => setDialog(null)}
              onSubmit={(body: FailoverBody) => act('failover', body)}
            />
          )}
          <Dialog title={`Commit plan ${name}`} open={dialog === 'commit'} onClose={() => setDialog(null)} onSubmit={() => act('commit', {})} submitLabel="Commit" busy={busy} danger>
            <p>Commit after checking the failed-over machines{way ? ` at ${way.to}` : ''}: their recovery points are removed{way?.failback ? `, and so are the machines and their disks at ${way.from}` : ''}.</p>
            {errorNote}
          </Dialog>
          <Dialog title={`Reverse replication of plan ${name}`} open={dialog === 'reverse-replicate'} onClose={() => setDialog(null)} onSubmit={() => act('reverse-replicate', {})} submitLabel="Start reverse replication" busy={busy}>
            {way && (
              <p className="direction">
                Replicate the plan&rsquo;s machines <strong>from {way.to}</strong> <strong>to {way.from}</strong>.
              </p>
            )}
            <p>Every machine of the plan replicates back from the site it now runs at: differences only where the old disks still exist.</p>
            {errorNote}
          </Dialog>
          <Dialog title={`Delete plan ${name}`} open={dialog === 'delete'} onClose={() => setDialog(null)} onSubmit={remove} submitLabel="Delete plan" busy={busy} danger>
            <p>The plan is removed; its machines, their protection and its past jobs stay.</p>
            {errorNote}
          </Dialog>
        </>
      )}
    </section>
  );
}

function AddAction({ plan, reload }: { plan: Plan; reload(): void }) {
  const [a, setA] = useState({ group: '1', when: 'before', kind: 'manual', text: '', timeout: '' });
  return (
    <InlineForm
      title="Add an action"
      submitLabel="Add action"
      onSubmit={async () => {
        const text = a.text.trim();
        if (text === '') throw new Error(a.kind === 'script' ? 'Give the script’s absolute path on the server.' : 'Say what the operator must do.');
        let action: PlanAction;
        if (a.kind === 'script') {
          const t = a.timeout.trim();
          if (t !== '' && !/^[1-9]\d*$/.test(t)) throw new Error(`The timeout must be a whole number of seconds (1 or more), not "${t}".`);
          action = { kind: 'script', path: text, ...(t === '' ? {} : { timeoutSeconds: Number(t) }) };
        } else {
          action = { kind: 'manual', text };
        }
        await post(`/plans/${seg(plan.name)}/actions`, { group: Number(a.group), when: a.when, action });
        reload();
        setA({ ...a, text: '', timeout: '' });
        return `Added ${describe(action)} ${a.when} group ${a.group}.`;
      }}
    >
      <SelectField label="Group" value={a.group} onChange={(group) => setA({ ...a, group })} options={plan.groups.map((_, i) => ({ value: String(i + 1), label: `group ${i + 1}` }))} />
      <SelectField label="When" value={a.when} onChange={(w) => setA({ ...a, when: w })} options={[{ value: 'before', label: 'before the group' }, { value: 'after', label: 'after the group' }]} />
      <SelectField label="Kind" value={a.kind} onChange={(kind) => setA({ ...a, kind })} options={[{ value: 'manual', label: 'manual (the job waits until resumed)' }, { value: 'script', label: 'script (its exit code decides)' }]} />
      <TextField label={a.kind === 'script' ? 'Script path on the server' : 'Instruction'} value={a.text} onChange={(text) => setA({ ...a, text })} required />
      {a.kind === 'script' && <TextField label="Timeout in seconds (optional)" value={a.timeout} onChange={(timeout) => setA({ ...a, timeout })} help="default 300" />}
    </InlineForm>
  );
}
