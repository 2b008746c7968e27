// One machine: its protection state, health and RPO, the disks a failed-over or test machine runs
// on, its recovery points, and (operator) the lifecycle actions its state allows now. Each action
// queues a job; the page then goes to the job to show its progress.
import { useState } from 'react';
import { ApiError, all, describeError, get, post, seg } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import type { Host, Item, Job, Machine, Pairing, RecoveryPoint } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { Dialog } from '../components/dialog.tsx';
import { TextField } from '../components/field.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { PointSelect } from '../components/point-select.tsx';
import { bytes, duration, when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link, navigate } from '../router.tsx';
import { FailoverDialog } from './failover-dialog.tsx';
import type { FailoverBody } from './failover-dialog.tsx';

type DialogKind = 'protect' | 'test-failover' | 'test-cleanup' | 'failover' | 'commit' | 'reverse-replicate';

interface Loaded {
  /** null: the vault knows no such machine yet (a qemu VM is discovered when its replication is enabled). */
  machine: Machine | null;
  item: Item | null;
  pairing: Pairing | null;
  /** null: this server has no points route yet. */
  points: RecoveryPoint[] | null;
  hostsAtTarget: Host[];
  waitingJob: Job | null;
}

async function load(name: string): Promise<Loaded> {
  const machine = await get<Machine>(`/machines/${seg(name)}`).catch((err: unknown) => {
    if (err instanceof ApiError && err.status === 404 && err.code !== 'route-not-found') return null;
    throw err;
  });
  let item: Item | null = null;
  try {
    item = await get<Item>(`/items/${seg(name)}`);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  }
  let pairing: Pairing | null;
  let points: RecoveryPoint[] | null = [];
  let hostsAtTarget: Host[] = [];
  let waitingJob: Job | null = null;
  if (item !== null) {
    const it = item;
    const pairings = await all<Pairing>('/pairings');
    pairing = pairings.find((p) => p.id === it.pairing) ?? null;
    points = await all<RecoveryPoint>(`/items/${seg(name)}/points`).catch((err: unknown) => {
      if (err instanceof ApiError && err.notAvailable) return null;
      throw err;
    });
    if (pairing !== null) {
      const target = it.direction === 'forward' ? pairing.recovery : pairing.primary;
      hostsAtTarget = await all<Host>(`/sites/${seg(target)}/hosts`).catch(() => []);
    }
    const waiting = await get<{ items: Job[] }>(`/jobs?state=waiting&target=${seg(name)}&limit=5`).catch(() => ({ items: [] }));
    waitingJob = waiting.items[0] ?? null;
  } else {
    const pairings = await all<Pairing>('/pairings');
    pairing = machine === null ? null : (pairings.find((p) => p.primary === machine.site) ?? null);
  }
  return { machine, item, pairing, points, hostsAtTarget, waitingJob };
}

/** The actions an item's state allows (src/domain/lifecycle.ts decides; the server has the last word). */
function allowed(item: Item | null): DialogKind[] {
  if (item === null) return ['protect'];
  switch (item.state) {
    case 'protected':
      return ['test-failover', 'failover'];
    case 'test-failover':
      return ['test-cleanup', 'failover'];
    case 'failover-cancelled':
      return ['failover', 'protect'];
    case 'failed-over':
      return ['commit'];
    case 'committed':
      return ['reverse-replicate'];
    default:
      return [];
  }
}

const LABELS: Record<DialogKind, string> = {
  protect: 'Enable replication',
  'test-failover': 'Test failover',
  'test-cleanup': 'Cleanup test failover',
  failover: 'Failover',
  commit: 'Commit',
  'reverse-replicate': 'Reverse replicate',
};

export function ItemDetail({ machine, session }: { machine: string; session: Session }) {
  const r = useResource(() => load(machine), [machine], 5000);
  const [dialog, setDialog] = useState<DialogKind | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [point, setPoint] = useState('latest');
  const [notes, setNotes] = useState('');
  const [group, setGroup] = useState('');

  const act = (verb: DialogKind, body: unknown) => {
    setBusy(true);
    setError(null);
    post<{ job: Job }>(`/items/${seg(machine)}/${verb}`, body).then(
      (res) => {
        setBusy(false);
        setDialog(null);
        navigate(`/jobs/${res.job.id}`);
      },
      (err: unknown) => {
        setBusy(false);
        setError(err instanceof ApiError && err.notAvailable ? `${LABELS[verb]} is not available on this server yet.` : describeError(err));
      },
    );
  };
  const open = (d: DialogKind) => {
    setError(null);
    setDialog(d);
  };

  const d = r.data;
  const item = d?.item ?? null;
  const from = d?.pairing ? (item?.direction === 'reverse' ? d.pairing.recovery : d.pairing.primary) : '?';
  const to = d?.pairing ? (item?.direction === 'reverse' ? d.pairing.primary : d.pairing.recovery) : '?';
  const operator = canOperate(session);
  const actions = d ? allowed(item) : [];

  return (
    <section>
      <p>
        <Link to="/items">Protected items</Link> ›
      </p>
      <h1>{machine}</h1>
      <Loading loading={r.loading} />
      <Notice error={r.error} />
      {d && (
        <>
          {d.machine === null && (
            <p className="notice info">
              The vault knows no machine named {machine} yet. A VM defined at a qemu site is found when its replication is enabled; a physical machine is added on the Machines page.
            </p>
          )}
          <dl className="facts">
            <dt>Site</dt>
            <dd>{d.machine?.site ?? '—'}</dd>
            <dt>Kind</dt>
            <dd>{d.machine?.kind ?? '—'}</dd>
            <dt>Protection</dt>
            <dd data-testid="item-state">{item ? <Badge value={item.state} /> : 'not protected'}</dd>
            {item && (
              <>
                <dt>Health</dt>
                <dd>
                  <Badge value={item.health} />
                </dd>
                <dt>RPO</dt>
                <dd>{duration(item.rpoSeconds)}</dd>
                <dt>Replicates</dt>
                <dd>
                  from {from} to {to}
                </dd>
                <dt>Runs at</dt>
                <dd>{item.activeSite}</dd>
                <dt>Replication group</dt>
                <dd>{item.group ?? '—'}</dd>
              </>
            )}
          </dl>
          {item && Object.keys(item.details).length > 0 && (
            <details>
              <summary>Details (failed-over and test machines, notes)</summary>
              <pre>{JSON.stringify(item.details, null, 2)}</pre>
            </details>
          )}
          {operator && (
            <div className="actions" role="group" aria-label="Actions">
              {actions.map((a) => (
                <button key={a} type="button" className={a === 'failover' ? 'danger' : ''} onClick={() => open(a)}>
                  {LABELS[a]}
                </button>
              ))}
              {d.waitingJob && (
                <Link className="button" to={`/jobs/${d.waitingJob.id}`}>
                  Go to the waiting job ({d.waitingJob.kind})
                </Link>
              )}
              {actions.length === 0 && !d.waitingJob && <p className="muted">No action is possible while the item {item?.state ?? ''}: wait for its job to finish.</p>}
            </div>
          )}
          {error !== null && dialog === null && (
            <p className="notice error" role="alert">
              {error}
            </p>
          )}
          <h2>Disks</h2>
          <ul>
            {(d.machine?.disks ?? []).map((x) => (
              <li key={x.id}>
                <code>{x.path}</code> · {bytes(x.sizeBytes)} · {x.format}
              </li>
            ))}
          </ul>
          {item && <Points points={d.points} />}

          <Dialog title={`Enable replication of ${machine}`} open={dialog === 'protect'} onClose={() => setDialog(null)} onSubmit={() => act('protect', group.trim() === '' ? {} : { group: group.trim() })} submitLabel="Enable replication" busy={busy}>
            <p>
              {machine} replicates {d.pairing ? `from ${from} to ${to}` : 'to the recovery site of its pairing'}: an initial copy of its disks, then changes at the policy&rsquo;s frequency.
            </p>
            <TextField label="Replication group (optional)" value={group} onChange={setGroup} help="machines in one group share crash- and app-consistent points" />
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Test failover of ${machine}`} open={dialog === 'test-failover'} onClose={() => setDialog(null)} onSubmit={() => act('test-failover', { point })} submitLabel="Start test failover" busy={busy}>
            <p>
              A copy of {machine} starts at {to} in an isolated network from the chosen point. Replication keeps running; {machine} is not touched.
            </p>
            <PointSelect value={point} onChange={setPoint} points={d.points} />
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Cleanup test failover of ${machine}`} open={dialog === 'test-cleanup'} onClose={() => setDialog(null)} onSubmit={() => act('test-cleanup', { notes })} submitLabel="Clean up" busy={busy}>
            <p>The test machine at {to} and its disks are removed.</p>
            <TextField label="Notes" value={notes} onChange={setNotes} multiline required help="what the drill showed; kept with the item" />
            <DialogError error={error} />
          </Dialog>
          {item && (
            <FailoverDialog
              key={`${item.state}-${item.direction}`}
              open={dialog === 'failover'}
              item={item}
              from={from}
              to={to}
              hostsAtTarget={d.hostsAtTarget}
              points={d.points}
              busy={busy}
              error={error}
              onClose={() => setDialog(null)}
              onSubmit={(body: FailoverBody) => act('failover', body)}
            />
          )}
          <Dialog title={`Commit ${machine}`} open={dialog === 'commit'} onClose={() => setDialog(null)} onSubmit={() => act('commit', {})} submitLabel="Commit" busy={busy} danger>
            <p>
              Commit after you have checked {machine} at {to}. The recovery points are removed{item?.direction === 'reverse' ? `, and so are the machine and its disks at ${from}` : ''}; you cannot go back to another point.
            </p>
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Reverse replication of ${machine}`} open={dialog === 'reverse-replicate'} onClose={() => setDialog(null)} onSubmit={() => act('reverse-replicate', {})} submitLabel="Start reverse replication" busy={busy}>
            <p>
              {machine} replicates from {to} back to {from}: only the differences where the old disks still exist, a full copy where they do not.
            </p>
            <DialogError error={error} />
          </Dialog>
        </>
      )}
    </section>
  );
}

function DialogError({ error }: { error: string | null }) {
  return error === null ? null : (
    <p className="notice error" role="alert">
      {error}
    </p>
  );
}

function Points({ points }: { points: RecoveryPoint[] | null }) {
  return (
    <>
      <h2>Recovery points</h2>
      {points === null && <p className="notice info">Recovery points are not available on this server yet.</p>}
      {points !== null && points.length === 0 && <p className="muted">No recovery points yet.</p>}
      {points !== null && points.length > 0 && (
        <table>
          <caption className="sr-only">Recovery points</caption>
          <thead>
            <tr>
              <th scope="col">Taken</th>
              <th scope="col">Consistency</th>
              <th scope="col">Status</th>
              <th scope="col">Group point</th>
              <th scope="col">Point id</th>
            </tr>
          </thead>
          <tbody>
            {points.map((p) => (
              <tr key={p.id}>
                <td>{when(p.takenAt)}</td>
                <td>{p.kind === 'app' ? 'app-consistent' : 'crash-consistent'}</td>
                <td>
                  <Badge value={p.status} />
                </td>
                <td>{p.groupPointId === null ? '—' : 'yes'}</td>
                <td>
                  <code>{p.id}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
