// Choice of recovery point: the three named choices, then every usable point newest first.
import type { RecoveryPoint } from '../api/types.ts';
import { when } from '../format.ts';
import { SelectField } from './field.tsx';

export function PointSelect({ value, onChange, points, help }: { value: string; onChange(v: string): void; points: RecoveryPoint[] | null; help?: string }) {
  const options = [
    { value: 'latest', label: 'Latest (lowest RPO)' },
    { value: 'latest-processed', label: 'Latest processed (fastest to start)' },
    { value: 'latest-app-consistent', label: 'Latest app-consistent' },
    ...(points ?? []).filter((p) => p.status === 'ok').map((p) => ({ value: p.id, label: `${when(p.takenAt)} · ${p.kind === 'app' ? 'app-consistent' : 'crash-consistent'} · ${p.id.slice(-8)}` })),
  ];
  return <SelectField label="Recovery point" value={value} onChange={onChange} options={options} help={help ?? (points === null ? 'This server does not list points yet; the named choices still work.' : undefined)} />;
}
