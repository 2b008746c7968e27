// The dashboard: items by health, RPO per item over time, replication traffic, recent jobs and
// alerts — the one screen an operator looks at first in an outage.
import { useEffect, useState } from 'react';
import { get } from '../api/client.ts';
import type { Session } from '../api/session.ts';
import type { Job, Page, VaultEvent } from '../api/types.ts';
import { Badge } from '../components/badge.tsx';
import { LineChart } from '../components/line-chart.tsx';
import { Notice } from '../components/notice.tsx';
import { ProgressBar } from '../components/progress-bar.tsx';
import { bytes, duration, when } from '../format.ts';
import { useResource } from '../hooks/use-resource.ts';
import { Link } from '../router.tsx';
import { MAX_SERIES, SAMPLE_MS, snapshot, subscribe, WINDOW_MS } from '../samples.ts';

function useSamples() {
  const [snap, setSnap] = useState(snapshot);
  useEffect(() => subscribe(() => setSnap(snapshot())), []);
  return snap;
}

export function Dashboard(_props: { session: Session }) {
  const snap = useSamples();
  const jobs = useResource(() => get<Page<Job>>('/jobs?limit=8'), [], 5000);
  const events = useResource(() => get<Page<VaultEvent>>('/events?limit=10'), [], 5000);
  const counts = { normal: 0, warning: 0, critical: 0 };
  for (const it of snap.items) counts[it.health] = (counts[it.health] ?? 0) + 1;

  return (
    <section>
      <h1>Dashboard</h1>
      <Notice error={snap.error} what="The list of protected items" />
      <div className="cards" aria-label="Protected items by health">
        {(['normal', 'warning', 'critical'] as const).map((h) => (
          <Link key={h} to={`/items?health=${h}`} className={`card ${h}`}>
            <span className="count" data-testid={`health-${h}`}>
              {counts[h]}
            </span>
            <span>{h === 'normal' ? 'healthy' : h}</span>
          </Link>
        ))}
      </div>

      <h2>Recovery point objective (RPO) per item</h2>
      <p className="muted small">Age of each item&rsquo;s newest recovery point over the last {WINDOW_MS / 60_000} minutes, from the vault&rsquo;s recovery points (the {MAX_SERIES} items furthest behind).</p>
      {!snap.sampled ? (
        <p className="muted">Loading…</p>
      ) : snap.rpoSeries.length === 0 ? (
        <p className="muted">No item has a recovery point yet.</p>
      ) : (
        <LineChart title="Age of the newest recovery point per item" unit="seconds" series={snap.rpoSeries} format={(v) => duration(v)} testId="rpo-chart" />
      )}

      <h2>Replication traffic</h2>
      {!snap.sampled ? (
        <p className="muted">Loading…</p>
      ) : snap.traffic === null ? (
        <p className="muted" data-testid="traffic-none">
          This server runs no replication role in its own process (agents, process servers and master targets run separately): each reports its traffic on its own /metrics listener.
        </p>
      ) : (
        <>
          <p className="muted small">Bytes per second from this server&rsquo;s /metrics, sampled every {SAMPLE_MS / 1000} s since this page opened.</p>
          <LineChart title="Replication traffic" unit="bytes per second" series={snap.traffic} format={(v) => `${bytes(v)}/s`} testId="traffic-chart" empty="Measuring: a rate needs two samples." />
        </>
      )}

      <div className="columns">
        <div>
          <h2>Recent jobs</h2>
          <Notice error={jobs.error} what="The job list" />
          {jobs.data && jobs.data.items.length === 0 && <p className="muted">No jobs yet.</p>}
          {jobs.data && jobs.data.items.length > 0 && (
            <table>
              <thead>
                <tr>
                  <th scope="col">Job</th>
                  <th scope="col">State</th>
                  <th scope="col">Progress</th>
                </tr>
              </thead>
              <tbody>
                {jobs.data.items.map((j) => (
                  <tr key={j.id}>
                    <td>
                      <Link to={`/jobs/${j.id}`}>
                        {j.kind} {j.target}
                      </Link>
                    </td>
                    <td>
                      <Badge value={j.state} />
                    </td>
                    <td>
                      <ProgressBar value={j.progress} label={`progress of ${j.kind} ${j.target}`} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
        <div>
          <h2>Alerts and events</h2>
          <Notice error={events.error} what="The event list" />
          {events.data && events.data.items.length === 0 && <p className="muted">No events.</p>}
          <ul className="events">
            {events.data?.items.map((e) => (
              <li key={e.id}>
                <time dateTime={new Date(e.at).toISOString()}>{when(e.at)}</time> <strong>{e.kind}</strong> {e.message}
              </li>
            ))}
          </ul>
        </div>
      </div>
    </section>
  );
}
