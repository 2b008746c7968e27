// One machine: its protection state, health and RPO, which way it replicates and where it runs,
// the machines a test or a failover made (and the disks they run on), where it is defined per
// site, its recovery points, its current job, and (operator) the lifecycle actions its state
// allows now. Each action queues a job; the page then goes to the job to show its progress.
import { useState } from 'react';
import { ApiError, all, describeError, get, post, seg } from '../api/client.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import { FINISHED_JOB_STATES } from '../api/types.ts';
import type { Host, Item, Job, Machine, Page, Pairing, PlacedDisk, RecoveryPoint, Site } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { Dialog } from '../components/dialog.tsx';
import { TextField } from '../components/field.tsx';
import { Loading, Notice } from '../components/notice.tsx';
import { PointSelect } from '../components/point-select.tsx';
import { bytes, duration, when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { allowedVerbs, canStop, isFailbackWait, VERB_LABELS, wayOf } from '../lifecycle.ts';
import type { ItemVerb } from '../lifecycle.ts';
import { Link, navigate } from '../router.tsx';
import { FailoverDialog } from './failover-dialog.tsx';
import type { FailoverBody } from './failover-dialog.tsx';

interface Loaded {
  /** null: the vault knows no such machine yet (a qemu VM is discovered when its replication is enabled). */
  machine: Machine | null;
  item: Item | null;
  pairing: Pairing | null;
  /** Site id → name (the item's details name sites by id). */
  siteNames: Map<string, string>;
  /** null: this server has no points route yet. */
  points: RecoveryPoint[] | null;
  hostsAtTarget: Host[];
  /** The item's unfinished job (queued, running or waiting), newest first. */
  current: Job | null;
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
  const [pairings, sites] = await Promise.all([all<Pairing>('/pairings'), all<Site>('/sites')]);
  const siteNames = new Map(sites.map((s) => [s.id, s.name]));
  let pairing: Pairing | null;
  let points: RecoveryPoint[] | null = [];
  let hostsAtTarget: Host[] = [];
  let current: Job | null = null;
  if (item !== null) {
    const it = item;
    pairing = pairings.find((p) => p.id === it.pairing) ?? null;
    points = await all<RecoveryPoint>(`/items/${seg(name)}/points`).catch((err: unknown) => {
      if (err instanceof ApiError && err.notAvailable) return null;
      throw err;
    });
    if (pairing !== null) hostsAtTarget = await all<Host>(`/sites/${seg(wayOf(it, pairing).to)}/hosts`).catch(() => []);
    const jobs = await get<Page<Job>>(`/jobs?target=${seg(name)}&limit=20`).catch(() => ({ items: [] as Job[], next: null }));
    current = jobs.items.find((j) => !FINISHED_JOB_STATES.includes(j.state)) ?? null;
  } else {
    pairing = machine === null ? null : (pairings.find((p) => p.primary === machine.site) ?? null);
  }
  return { machine, item, pairing, siteNames, points, hostsAtTarget, current };
}

type DialogKind = Exclude<ItemVerb, 'complete-failover'> | 'complete';

export function ItemDetail({ machine, session }: { machine: string; session: Session }) {
  const r = useResource(() => load(machine), [machine], 5000);
  const [dialog, setDialog] = useState<DialogKind | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [point, setPoint] = useState('latest');
  const [notes, setNotes] = useState('');
  const [group, setGroup] = useState('');

  const send = (path: string, body: unknown, what: string) => {
    setBusy(true);
    setError(null);
    post<{ job: Job }>(path, body).then(
      (res) => {
        setBusy(false);
        setDialog(null);
        navigate(`/jobs/${res.job.id}`);
      },
      (err: unknown) => {
        setBusy(false);
        setError(err instanceof ApiError && err.notAvailable ? `${what} is not available on this server yet.` : describeError(err));
      },
    );
  };
  const act = (verb: Exclude<ItemVerb, 'complete-failover'>, body: unknown) => send(`/items/${seg(machine)}/${verb}`, body, VERB_LABELS[verb]);
  const open = (d: DialogKind) => {
    setError(null);
    setDialog(d);
  };

  const d = r.data;
  const item = d?.item ?? null;
  const way = item ? wayOf(item, d?.pairing ?? null) : { from: d?.pairing?.primary ?? '?', to: d?.pairing?.recovery ?? '?', failback: false };
  const { from, to } = way;
  const operator = canOperate(session);
  const waitingFailback = d?.current && isFailbackWait(d.current) ? d.current : null;
  const actions = d ? allowedVerbs(item).filter((v) => v !== 'complete-failover' || waitingFailback !== null) : [];
  const siteName = (id: string) => d?.siteNames.get(id) ?? id;
  /** protect from failover-cancelled resumes replication (differences only) in the same direction. */
  const resuming = item?.state === 'failover-cancelled';

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
                <dt>Runs at</dt>
                <dd data-testid="active-site">
                  {item.activeSite}
                  {d.pairing ? (item.activeSite === d.pairing.primary ? ' (its primary site)' : ' (its recovery site)') : ''}
                </dd>
                <dt>Replicates</dt>
                <dd data-testid="item-direction">
                  from {from} to {to}
                  {way.failback ? ' (reverse: a planned failover now is a failback)' : ''}
                </dd>
                <dt>Replication group</dt>
                <dd>{item.group ?? '—'}</dd>
              </>
            )}
            {d.current && (
              <>
                <dt>Current job</dt>
                <dd data-testid="current-job">
                  <Link to={`/jobs/${d.current.id}`}>
                    {d.current.kind} ({d.current.state})
                  </Link>
                </dd>
              </>
            )}
          </dl>
          {item?.state === 'failback-ready' && (
            <p className="notice info">
              The failback&rsquo;s data sync has finished; {machine} still runs at {from}. Complete the failover to shut it down there, send the last differences and start it at {to}.
            </p>
          )}
          {operator && (
            <div className="actions" role="group" aria-label="Actions">
              {actions.map((a) =>
                a === 'complete-failover' ? (
                  <button key={a} type="button" className="danger" onClick={() => open('complete')}>
                    Complete failover
                  </button>
                ) : (
                  <button key={a} type="button" className={a === 'failover' ? 'danger' : ''} onClick={() => open(a)}>
                    {a === 'protect' && resuming ? 'Resume replication' : VERB_LABELS[a]}
                  </button>
                ),
              )}
              {actions.length === 0 && <p className="muted">No action is possible while {machine} is {item?.state ?? 'not protected'}{d.current ? ': follow its job, or cancel it there.' : ': wait for its job to finish.'}</p>}
            </div>
          )}
          {error !== null && dialog === null && (
            <p className="notice error" role="alert">
              {error}
            </p>
          )}
          <h2>Disks{d.machine ? ` at ${d.machine.site}` : ''}</h2>
          <ul>
            {(d.machine?.disks ?? []).map((x) => (
              <li key={x.id}>
                <code>{x.path}</code> · {bytes(x.sizeBytes)} · {x.format}
              </li>
            ))}
          </ul>
          {item && <Machines item={item} siteName={siteName} />}
          {item && <Points points={d.points} />}

          <Dialog title={`${resuming ? 'Resume' : 'Enable'} replication of ${machine}`} open={dialog === 'protect'} onClose={() => setDialog(null)} onSubmit={() => act('protect', group.trim() === '' || resuming ? {} : { group: group.trim() })} submitLabel={resuming ? 'Resume replication' : 'Enable replication'} busy={busy}>
            <p>
              {machine} replicates {d.pairing ? `from ${from} to ${to}` : 'to the recovery site of its pairing'}
              {item?.state === 'failover-cancelled' ? ' again: only the differences since replication stopped are sent.' : ': an initial copy of its disks, then changes at the policy\u2019s frequency.'}
            </p>
            {item === null && <TextField label="Replication group (optional)" value={group} onChange={setGroup} help="machines in one group share crash- and app-consistent points" />}
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Test failover of ${machine}`} open={dialog === 'test-failover'} onClose={() => setDialog(null)} onSubmit={() => act('test-failover', { point })} submitLabel="Start test failover" busy={busy}>
            <p className="direction">
              Test {machine} at {to}, from a recovery point.
            </p>
            <p>A copy of {machine} starts at {to} in an isolated network. Replication keeps running; {machine} at {from} is not touched.</p>
            <PointSelect value={point} onChange={setPoint} points={d.points} />
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Cleanup test failover of ${machine}`} open={dialog === 'test-cleanup'} onClose={() => setDialog(null)} onSubmit={() => act('test-cleanup', { notes })} submitLabel="Clean up" busy={busy}>
            <p>
              The test machine {item?.details.test ? `${item.details.test.name} ` : ''}at {to} and its disks are removed.
            </p>
            <TextField label="Notes" value={notes} onChange={setNotes} multiline required help="what the drill showed; kept with the cleanup job" />
            <DialogError error={error} />
          </Dialog>
          {item && (
            <FailoverDialog
              key={`${item.state}-${item.direction}`}
              open={dialog === 'failover'}
              subject={machine}
              machines={machine}
              way={way}
              drillRunning={item.state === 'test-failover'}
              plannedRefused={canStop(d.machine) ? null : `A planned failover needs a way to shut ${machine} down, and it has no stop hook: add one to the machine, or use unplanned.`}
              syncChoice={item.state === 'protected'}
              hostsAtTarget={d.hostsAtTarget}
              points={d.points}
              busy={busy}
              error={error}
              onClose={() => setDialog(null)}
              onSubmit={(body: FailoverBody) => act('failover', body)}
            />
          )}
          <Dialog title={`Complete failover of ${machine}`} open={dialog === 'complete'} onClose={() => setDialog(null)} onSubmit={() => waitingFailback && send(`/jobs/${waitingFailback.id}/complete`, {}, 'Complete failover')} submitLabel="Complete failover" busy={busy} danger>
            <p className="direction">
              Fail back {machine} <strong>from {from}</strong> <strong>to {to}</strong>.
            </p>
            <p>{machine} shuts down at {from}, the last differences are sent, and it starts at {to}. No data is lost.</p>
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Commit ${machine}`} open={dialog === 'commit'} onClose={() => setDialog(null)} onSubmit={() => act('commit', {})} submitLabel="Commit" busy={busy} danger>
            <p>
              Commit after you have checked {machine} at {to}. The recovery points are removed{way.failback ? `, and so are the machine and its disks at ${from}` : ''}; you cannot go back to another point.
            </p>
            <DialogError error={error} />
          </Dialog>
          <Dialog title={`Reverse replication of ${machine}`} open={dialog === 'reverse-replicate'} onClose={() => setDialog(null)} onSubmit={() => act('reverse-replicate', {})} submitLabel="Start reverse replication" busy={busy}>
            <p className="direction">
              Replicate {machine} <strong>from {to}</strong> <strong>to {from}</strong>.
            </p>
            <p>Only the differences are sent where the old disks at {from} still exist; a full copy where they do not.</p>
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

function DiskList({ disks }: { disks: PlacedDisk[] }) {
  return (
    <ul className="plain">
      {disks.map((x) => (
        <li key={x.id}>
          <code>{x.path}</code>
          {x.format ? ` · ${x.format}` : ''}
        </li>
      ))}
    </ul>
  );
}

/** The test machine, the failed-over machine and where the machine is defined at each site. */
function Machines({ item, siteName }: { item: Item; siteName(id: string): string }) {
  const { test, failover, placements } = item.details;
  const placed = Object.entries(placements ?? {});
  if (!test && !failover && placed.length === 0) return null;
  return (
    <>
      <h2>Machines at the sites</h2>
      <table>
        <caption className="sr-only">Machines at the sites</caption>
        <thead>
          <tr>
            <th scope="col">What</th>
            <th scope="col">Machine</th>
            <th scope="col">Site</th>
            <th scope="col">Disks</th>
          </tr>
        </thead>
        <tbody>
          {test && (
            <tr data-testid="test-machine">
              <th scope="row">Test machine (isolated network), point {test.pointId}</th>
              <td>{test.name}</td>
              <td>{siteName(test.siteId)}</td>
              <td>
                <DiskList disks={test.disks} />
              </td>
            </tr>
          )}
          {failover && (
            <tr data-testid="failover-machine">
              <th scope="row">Failed-over machine, point {failover.pointId}{item.state === 'failed-over' ? ' (until commit)' : ''}</th>
              <td>{failover.name}</td>
              <td>{siteName(failover.siteId)}</td>
              <td>
                <DiskList disks={failover.disks} />
              </td>
            </tr>
          )}
          {placed.map(([siteId, p]) => (
            <tr key={siteId}>
              <th scope="row">Defined at {siteName(siteId)}</th>
              <td>{p.name}</td>
              <td>{siteName(siteId)}</td>
              <td>
                <DiskList disks={p.disks} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <details>
        <summary>All details</summary>
        <pre>{JSON.stringify(item.details, null, 2)}</pre>
      </details>
    </>
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
