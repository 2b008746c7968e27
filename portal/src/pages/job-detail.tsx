// One job with live task progress (GET /jobs/:id/events, read with fetch), its log (job ids in it
// link to those jobs: a plan's log names its machines' jobs), its result, and (operator) cancel,
// resume (a manual action of a plan, or a failed step), and "Complete failover" for a failback
// waiting after its data sync.
import { useEffect, useState } from 'react';
import type { ReactNode } from 'react';
import { ApiError, describeError, get, post } from '../api/client.ts';
import { streamJob } from '../api/job-stream.ts';
import { canOperate } from '../api/session.ts';
import type { Session } from '../api/session.ts';
import { FINISHED_JOB_STATES } from '../api/types.ts';
import type { Job } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { Dialog } from '../components/dialog.tsx';
import { Notice } from '../components/notice.tsx';
import { ProgressBar } from '../components/progress-bar.tsx';
import { TargetLink } from '../components/target-link.tsx';
import { when } from '../format.ts';
import { isFailbackWait, waitingReason } from '../lifecycle.ts';
import { Link } from '../router.tsx';

const UUID = /\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b/g;

/** A log line with the job ids in it as links (the job's own id stays text). */
function linkJobs(text: string, self: string): ReactNode[] {
  const out: ReactNode[] = [];
  let last = 0;
  for (const m of text.matchAll(UUID)) {
    const id = m[1] ?? '';
    const at = m.index;
    if (id === self || !/job $/.test(text.slice(Math.max(0, at - 4), at))) continue;
    out.push(text.slice(last, at), <Link key={at} to={`/jobs/${id}`}>{id}</Link>);
    last = at + id.length;
  }
  out.push(text.slice(last));
  return out;
}

function cancelWords(job: Job): string {
  if (job.kind === 'failback-sync') return 'The failback stops. Its data sync never stopped replication and the primary keeps its last consistent state, so nothing is lost; the machine keeps running where it is.';
  if (job.kind.startsWith('plan-')) return "The plan stops, and so do its machines' jobs where their kind allows it; finished machines stay as they are.";
  if (job.kind.includes('failover')) return 'The failover stops where it is. Replication has already stopped for it; protect the machine again or fail it over again afterwards.';
  return 'The job stops at its next safe point.';
}

export function JobDetail({ id, session }: { id: string; session: Session }) {
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  const [live, setLive] = useState<'connecting' | 'live' | 'ended' | 'broken'>('connecting');
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | null>(null);
  const [confirm, setConfirm] = useState<'cancel' | 'complete' | null>(null);
  // Bumped after an action so that the progress stream starts again (a resumed job that had
  // ended runs anew; the old stream had closed at its end).
  const [streamGen, setStreamGen] = useState(0);

  useEffect(() => {
    let stop: (() => void) | undefined;
    let gone = false;
    get<Job>(`/jobs/${encodeURIComponent(id)}`).then(
      (j) => {
        if (gone) return;
        setJob(j);
        stop = streamJob(id, {
          onJob: (x) => {
            setJob(x);
            setLive('live');
          },
          onEnd: () => setLive('ended'),
          onError: () => setLive('broken'),
        });
      },
      (err: unknown) => setError(err),
    );
    return () => {
      gone = true;
      stop?.();
    };
  }, [id, streamGen]);

  const act = (verb: 'cancel' | 'resume' | 'complete') => {
    setBusy(true);
    setActionError(null);
    post<Job | { job: Job }>(`/jobs/${encodeURIComponent(id)}/${verb}`).then(
      (res) => {
        setBusy(false);
        setConfirm(null);
        setJob('job' in res ? res.job : res);
        setLive('connecting');
        setStreamGen((g) => g + 1);
      },
      (err: unknown) => {
        setBusy(false);
        const what = verb === 'complete' ? 'Complete failover' : verb === 'resume' ? 'Resume' : 'Cancel';
        setActionError(err instanceof ApiError && err.notAvailable ? `${what} is not available on this server yet.` : describeError(err));
      },
    );
  };

  if (job === null) {
    return (
      <section>
        <h1>Job</h1>
        <Notice error={error} />
        {error === undefined && <p aria-live="polite">Loading…</p>}
      </section>
    );
  }
  const finished = FINISHED_JOB_STATES.includes(job.state);
  const operator = canOperate(session);
  const reason = waitingReason(job);
  const notes = (job.result as { notes?: unknown } | undefined)?.notes;
  return (
    <section>
      <p>
        <Link to="/jobs">Jobs</Link> ›
      </p>
      <h1>
        {job.kind} {job.target}
      </h1>
      <dl className="facts">
        <dt>State</dt>
        <dd data-testid="job-state">
          <Badge value={job.state} />
          {job.cancelRequested && !finished ? ' (cancel requested)' : ''}
        </dd>
        <dt>Progress</dt>
        <dd>
          <ProgressBar value={job.progress} label="job progress" />
        </dd>
        <dt>Target</dt>
        <dd>
          <TargetLink target={job.target} />
        </dd>
        <dt>Started by</dt>
        <dd>{job.createdBy}</dd>
        <dt>Created</dt>
        <dd>{when(job.createdAt)}</dd>
        <dt>Finished</dt>
        <dd>{when(job.finishedAt)}</dd>
        <dt>Updates</dt>
        <dd aria-live="polite" data-testid="live">
          {finished ? 'finished' : live === 'live' ? 'live' : live === 'broken' ? 'reconnecting…' : 'connecting…'}
        </dd>
      </dl>
      {job.error && (
        <p className="notice error" role="alert">
          {job.error.message} {job.error.hint ?? ''}
        </p>
      )}
      {isFailbackWait(job) && (
        <p className="notice info" data-testid="waiting">
          The data sync has finished and {job.target} still runs at the recovery site. Choose &ldquo;Complete failover&rdquo; to shut it down there, send the last differences and start it at the primary site.
        </p>
      )}
      {job.state === 'waiting' && !isFailbackWait(job) && (
        <div className="notice info" data-testid="waiting">
          <p>This job waits for someone.{reason === null ? ' Do the step its log names, then resume it.' : ' Do this, then resume it:'}</p>
          {reason !== null && <p className="waiting-reason">{reason}</p>}
        </div>
      )}
      {typeof notes === 'string' && (
        <p data-testid="job-notes">
          <strong>Notes:</strong> {notes}
        </p>
      )}
      {operator && !finished && (
        <div className="actions" role="group" aria-label="Job actions">
          {isFailbackWait(job) && (
            <button type="button" onClick={() => setConfirm('complete')}>
              Complete failover
            </button>
          )}
          {job.state === 'waiting' && !isFailbackWait(job) && (
            <button type="button" onClick={() => act('resume')} disabled={busy}>
              Resume
            </button>
          )}
          <button type="button" className="danger" onClick={() => setConfirm('cancel')} disabled={job.cancelRequested}>
            Cancel job
          </button>
        </div>
      )}
      {operator && job.state === 'failed' && (
        <div className="actions" role="group" aria-label="Job actions">
          <button type="button" onClick={() => act('resume')} disabled={busy}>
            Resume
          </button>
        </div>
      )}
      {actionError !== null && confirm === null && (
        <p className="notice error" role="alert">
          {actionError}
        </p>
      )}
      <h2>Tasks</h2>
      <table>
        <caption className="sr-only">Tasks</caption>
        <thead>
          <tr>
            <th scope="col">#</th>
            <th scope="col">Task</th>
            <th scope="col">State</th>
            <th scope="col">Progress</th>
            <th scope="col">Started</th>
            <th scope="col">Finished</th>
          </tr>
        </thead>
        <tbody>
          {job.tasks.map((t) => (
            <tr key={t.seq} data-testid="task">
              <td>{t.seq + 1}</td>
              <td>
                {t.name}
                {t.error ? <span className="error-text"> — {t.error.message}</span> : null}
              </td>
              <td>
                <Badge value={t.state} />
              </td>
              <td>
                <ProgressBar value={t.progress} label={`progress of task ${t.name}`} />
              </td>
              <td>{when(t.startedAt)}</td>
              <td>{when(t.finishedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Log</h2>
      {job.log.length === 0 ? (
        <p className="muted">Nothing logged yet.</p>
      ) : (
        <ol className="log">
          {job.log.map((l, i) => (
            <li key={i} className={`log-${l.level}`}>
              <time dateTime={new Date(l.at).toISOString()}>{when(l.at)}</time> {l.level} {linkJobs(l.message, job.id)}
            </li>
          ))}
        </ol>
      )}
      <Dialog title="Cancel this job" open={confirm === 'cancel'} onClose={() => setConfirm(null)} onSubmit={() => act('cancel')} submitLabel="Cancel job" busy={busy} danger>
        <p>{cancelWords(job)}</p>
        {actionError !== null && (
          <p className="notice error" role="alert">
            {actionError}
          </p>
        )}
      </Dialog>
      <Dialog title="Complete failover" open={confirm === 'complete'} onClose={() => setConfirm(null)} onSubmit={() => act('complete')} submitLabel="Complete failover" busy={busy} danger>
        <p>{job.target} shuts down at the recovery site, the last differences are sent, and it starts at the primary site. No data is lost.</p>
        {actionError !== null && (
          <p className="notice error" role="alert">
            {actionError}
          </p>
        )}
      </Dialog>
    </section>
  );
}
