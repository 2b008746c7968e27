// The failover dialog (seeds 000–002): the direction in words ("Fail back" when the machine runs
// at its recovery site), planned or unplanned, the point choice and "shut down the machine before
// failover" for an unplanned failover, and for a planned failback the data-sync choice and the
// host (the original, or an alternate location). Used for one machine and for a whole plan.
import { useState } from 'react';
import type { Host, RecoveryPoint } from '../api/types.ts';
import { Dialog } from '../components/dialog.tsx';
import { SelectField } from '../components/field.tsx';
import { PointSelect } from '../components/point-select.tsx';
import type { Way } from '../lifecycle.ts';
import { failWord } from '../lifecycle.ts';

export interface FailoverBody {
  mode: 'planned' | 'unplanned';
  point?: string;
  shutdownSource?: boolean;
  sync?: 'before' | 'full';
  host?: string;
}

export interface FailoverDialogProps {
  open: boolean;
  /** What fails over: a machine's name, or "plan NAME". */
  subject: string;
  /** The machine or machines, for the sentences ("app1", "its machines"). */
  machines: string;
  /** machines names more than one (the verbs agree). */
  plural?: boolean;
  way: Way;
  /** A test failover runs: planned is refused until it is cleaned up. */
  drillRunning: boolean;
  /** Why a planned failover is impossible (no stop hook), or null. */
  plannedRefused: string | null;
  /** The item can sync before failback (it is protected in reverse, not retrying a cancelled one). */
  syncChoice: boolean;
  hostsAtTarget: Host[];
  points: RecoveryPoint[] | null;
  busy: boolean;
  error: string | null;
  onClose(): void;
  onSubmit(body: FailoverBody): void;
}

export function FailoverDialog(props: FailoverDialogProps) {
  const { open, subject, machines, plural, way, drillRunning, plannedRefused, syncChoice, hostsAtTarget, points, busy, error, onClose, onSubmit } = props;
  const noPlanned = drillRunning || plannedRefused !== null;
  const [mode, setMode] = useState<'planned' | 'unplanned'>(noPlanned ? 'unplanned' : 'planned');
  const [point, setPoint] = useState('latest');
  const [shutdown, setShutdown] = useState(true);
  const [sync, setSync] = useState<'before' | 'full'>('before');
  const [host, setHost] = useState('');
  const what = way.failback ? 'Failback' : 'Failover';
  const { from, to } = way;
  const s = plural === true ? '' : 's';

  const submit = () => {
    if (mode === 'planned') {
      onSubmit({ mode, ...(way.failback && syncChoice ? { sync } : {}), ...(way.failback && host !== '' ? { host } : {}) });
    } else {
      onSubmit({ mode, point, shutdownSource: shutdown });
    }
  };

  return (
    <Dialog title={`${what} of ${subject}`} open={open} onClose={onClose} onSubmit={submit} submitLabel={`Start ${what.toLowerCase()}`} busy={busy} danger>
      <p className="direction" data-testid="failover-direction">
        {failWord(way)} {subject} <strong>from {from}</strong> <strong>to {to}</strong>.
      </p>
      {way.failback && (
        <p className="small">
          This is a failback: {machines} run{s} at the recovery site {from} and return{s} to the primary site {to}.
        </p>
      )}
      <fieldset>
        <legend>Type of {what.toLowerCase()}</legend>
        <label className="choice">
          <input type="radio" name="mode" value="planned" checked={mode === 'planned'} disabled={noPlanned} onChange={() => setMode('planned')} />
          <span>
            Planned: {machines} shut{s} down at {from}, all remaining data is sent, then {plural === true ? 'they start' : 'it starts'} at {to}. No data is lost.
          </span>
        </label>
        {drillRunning && <p className="muted small">A test failover is running: clean it up before a planned failover (an unplanned one removes the test machine first).</p>}
        {plannedRefused !== null && <p className="muted small">{plannedRefused}</p>}
        <label className="choice">
          <input type="radio" name="mode" value="unplanned" checked={mode === 'unplanned'} onChange={() => setMode('unplanned')} />
          <span>
            Unplanned: for an outage at {from}. {plural === true ? 'They start' : `${machines} starts`} at {to} from a recovery point; newer data may be lost.
          </span>
        </label>
      </fieldset>
      {mode === 'unplanned' && (
        <>
          <PointSelect value={point} onChange={setPoint} points={points} />
          <label className="choice">
            <input type="checkbox" checked={shutdown} onChange={(e) => setShutdown(e.target.checked)} />
            <span>{plural === true ? 'Shut down the machines before failover' : 'Shut down the machine before failover'}</span>
          </label>
          <p className="muted small">
            Best effort: Rebound also tries to send unsent data, and the failover goes on if {from} cannot be reached. Replication stops before the failover starts.
          </p>
        </>
      )}
      {mode === 'planned' && !way.failback && <p className="muted small">A planned failover always uses the data sent after the shutdown: there is no point to choose.</p>}
      {mode === 'planned' && way.failback && (
        <>
          {syncChoice && (
            <fieldset>
              <legend>Data synchronization</legend>
              <label className="choice">
                <input type="radio" name="sync" value="before" checked={sync === 'before'} onChange={() => setSync('before')} />
                <span>
                  Synchronize data before failover: only the differences are sent while {machines} keep{s} running at {from}; then choose &ldquo;Complete failover&rdquo; on the job.
                </span>
              </label>
              <label className="choice">
                <input type="radio" name="sync" value="full" checked={sync === 'full'} onChange={() => setSync('full')} />
                <span>Synchronize data during failover only: a full download, for a long stay at {from} or a primary machine that was deleted.</span>
              </label>
            </fieldset>
          )}
          <SelectField
            label={`Host at ${to}`}
            value={host}
            onChange={setHost}
            options={[{ value: '', label: 'The original host' }, ...hostsAtTarget.map((h) => ({ value: h.name, label: `Alternate location: ${h.name}` }))]}
            help={hostsAtTarget.length === 0 ? `No other host is registered at ${to}.` : undefined}
          />
        </>
      )}
      {error !== null && (
        <p className="notice error" role="alert">
          {error}
        </p>
      )}
    </Dialog>
  );
}
