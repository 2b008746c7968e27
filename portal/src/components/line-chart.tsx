// A small multi-series line chart in plain SVG (time on x, a value on y), with a legend and a
// text summary for screen readers. Enough for RPO and traffic; no chart library to ship.
export interface Series {
  name: string;
  points: { t: number; v: number }[];
}

const PALETTE = ['#1d4ed8', '#b45309', '#047857', '#be123c', '#6d28d9', '#0e7490', '#4d7c0f', '#9d174d'];
const W = 640;
const H = 200;
const PAD = { l: 80, r: 12, t: 10, b: 24 };

export function LineChart({ title, series, unit, format, testId, empty }: { title: string; series: Series[]; unit: string; format: (v: number) => string; testId?: string; empty?: string }) {
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return <p className="muted">{empty ?? 'No samples yet.'}</p>;
  const t0 = Math.min(...all.map((p) => p.t));
  const t1 = Math.max(t0 + 1000, ...all.map((p) => p.t));
  const vMax = Math.max(1, ...all.map((p) => p.v)) * 1.1;
  const x = (t: number) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v: number) => H - PAD.b - (v / vMax) * (H - PAD.t - PAD.b);
  const ticks = [0, vMax / 2, vMax];
  const summary = series.map((s) => `${s.name}: ${s.points.length > 0 ? format(s.points[s.points.length - 1]?.v ?? 0) : 'no data'}`).join('; ');
  return (
    <figure className="chart" data-testid={testId}>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${title} (${unit}), latest: ${summary}`}>
        {ticks.map((v) => (
          <g key={v}>
            <line x1={PAD.l} x2={W - PAD.r} y1={y(v)} y2={y(v)} className="grid" />
            <text x={PAD.l - 6} y={y(v) + 4} textAnchor="end" className="axis">
              {format(v)}
            </text>
          </g>
        ))}
        <text x={PAD.l} y={H - 6} className="axis">
          {new Date(t0).toLocaleTimeString()}
        </text>
        <text x={W - PAD.r} y={H - 6} textAnchor="end" className="axis">
          {new Date(t1).toLocaleTimeString()}
        </text>
        {series.map((s, i) => (
          <polyline
            key={s.name}
            data-series={s.name}
            data-max={Math.max(0, ...s.points.map((p) => p.v))}
            data-vertices={s.points.length}
            fill="none"
            stroke={PALETTE[i % PALETTE.length]}
            strokeWidth={2}
            points={s.points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ')}
          />
        ))}
        {series.map((s, i) => {
          // The newest value of each line is marked (a line of one sample is only that mark).
          const last = s.points[s.points.length - 1];
          return last === undefined ? null : <circle key={`${s.name}-last`} cx={x(last.t)} cy={y(last.v)} r={3.5} fill={PALETTE[i % PALETTE.length]} />;
        })}
      </svg>
      <figcaption>
        <ul className="legend">
          {series.map((s, i) => (
            <li key={s.name}>
              <span className="swatch" data-color={i % PALETTE.length} aria-hidden="true" />
              {s.name}
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}
