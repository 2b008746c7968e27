// The failover dialog (seeds 000–002): the direction in words, planned or unplanned, the point
// choice for an unplanned failover, "shut down the machine before failover", and for a failback
// the data-sync choice and the host for an alternate location.
import { useState } from 'react';
import type { Host, Item, RecoveryPoint } from '../api/types.ts';
import { Dialog } from '../components/dialog.tsx';
import { SelectField } from '../components/field.tsx';
import { PointSelect } from '../components/point-select.tsx';

export interface FailoverBody {
  mode: 'planned' | 'unplanned';
  point?: string;
  shutdownSource?: boolean;
  sync?: 'before' | 'full';
  host?: string;
}

export interface FailoverDialogProps {
  open: boolean;
  item: Item;
  from: string;
  to: string;
  hostsAtTarget: Host[];
  points: RecoveryPoint[] | null;
  busy: boolean;
  error: string | null;
  onClose(): void;
  onSubmit(body: FailoverBody): void;
}

export function FailoverDialog({ open, item, from, to, hostsAtTarget, points, busy, error, onClose, onSubmit }: FailoverDialogProps) {
  const failback = item.direction === 'reverse';
  const drillRunning = item.state === 'test-failover';
  const [mode, setMode] = useState<'planned' | 'unplanned'>(drillRunning ? 'unplanned' : 'planned');
  const [point, setPoint] = useState('latest');
  const [shutdown, setShutdown] = useState(true);
  const [sync, setSync] = useState<'before' | 'full'>('before');
  const [host, setHost] = useState('');
  const what = failback ? 'Failback' : 'Failover';

  const submit = () => {
    if (mode === 'planned') {
      onSubmit({ mode, ...(failback ? { sync } : {}), ...(failback && host !== '' ? { host } : {}) });
    } else {
      onSubmit({ mode, point, shutdownSource: shutdown });
    }
  };

  return (
    <Dialog title={`${what} of ${item.machine}`} open={open} onClose={onClose} onSubmit={submit} submitLabel={`Start ${what.toLowerCase()}`} busy={busy} danger>
      <p className="direction" data-testid="failover-direction">
        {failback ? 'Fail back' : 'Fail over'} {item.machine} <strong>from {from}</strong> <strong>to {to}</strong>.
      </p>
      <fieldset>
        <legend>Type of {what.toLowerCase()}</legend>
        <label className="choice">
          <input type="radio" name="mode" value="planned" checked={mode === 'planned'} disabled={drillRunning} onChange={() => setMode('planned')} />
          Planned: {item.machine} shuts down at {from}, all remaining data is sent, then it starts at {to}. No data is lost.
        </label>
        <label className="choice">
          <input type="radio" name="mode" value="unplanned" checked={mode === 'unplanned'} onChange={() => setMode('unplanned')} />
          Unplanned: for an outage at {from}. {item.machine} starts at {to} from a recovery point; newer data may be lost.
        </label>
      </fieldset>
      {mode === 'unplanned' && (
        <>
          <PointSelect value={point} onChange={setPoint} points={points} />
          <label className="choice">
            <input type="checkbox" checked={shutdown} onChange={(e) => setShutdown(e.target.checked)} />
            Shut down the machine before failover
          </label>
          <p className="muted small">
            Best effort: Rebound also tries to send unsent data, and the failover goes on if {from} cannot be reached. Replication stops before the failover starts.
          </p>
        </>
      )}
      {mode === 'planned' && failback && (
        <>
          <fieldset>
            <legend>Data synchronization</legend>
            <label className="choice">
              <input type="radio" name="sync" value="before" checked={sync === 'before'} onChange={() => setSync('before')} />
              Synchronize data before failover: only the differences are sent while {item.machine} keeps running at {from}; you then choose &ldquo;Complete failover&rdquo; on the job.
            </label>
            <label className="choice">
              <input type="radio" name="sync" value="full" checked={sync === 'full'} onChange={() => setSync('full')} />
              Synchronize data during failover only: a full download, for a long stay at {from} or a primary machine that was deleted.
            </label>
          </fieldset>
          <SelectField
            label={`Host at ${to}`}
            value={host}
            onChange={setHost}
            options={[{ value: '', label: 'The original host' }, ...hostsAtTarget.map((h) => ({ value: h.name, label: `Alternate location: ${h.name}` }))]}
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
