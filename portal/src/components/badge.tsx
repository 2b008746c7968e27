// A state or health word with a colour; the word is always written, colour only repeats it.
const TONES: Record<string, string> = {
  normal: 'good',
  succeeded: 'good',
  protected: 'good',
  ok: 'good',
  warning: 'warn',
  waiting: 'warn',
  'test-failover': 'warn',
  'failback-ready': 'warn',
  'failed-over': 'warn',
  critical: 'bad',
  failed: 'bad',
  bad: 'bad',
  'failover-cancelled': 'bad',
  cancelled: 'muted',
  running: 'busy',
  queued: 'muted',
};

export function Badge({ value }: { value: string }) {
  return <span className={`badge ${TONES[value] ?? 'busy'}`}>{value}</span>;
}
