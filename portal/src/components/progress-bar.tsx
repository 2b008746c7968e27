// A labelled progress bar (the native element carries the value for assistive technology).
import { percent } from '../format.ts';

export function ProgressBar({ value, label }: { value: number; label: string }) {
  const v = Math.max(0, Math.min(100, value));
  return (
    <span className="progress">
      <progress max={100} value={v} aria-label={label} />
      <span className="progress-text">{percent(v)}</span>
    </span>
  );
}
