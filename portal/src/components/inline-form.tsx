// A small create form (a few fields and a button) that posts, shows the API's answer, and tells
// its page to reload.
import { useState } from 'react';
import type { FormEvent, ReactNode } from 'react';
import { describeError } from '../api/client.ts';

export function InlineForm({ title, submitLabel, onSubmit, children }: { title: string; submitLabel: string; onSubmit(): Promise<string>; children: ReactNode }) {
  const [busy, setBusy] = useState(false);
  const [msg, setMsg] = useState<{ ok: boolean; text: string } | null>(null);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    onSubmit().then(
      (text) => {
        setBusy(false);
        setMsg({ ok: true, text });
      },
      (err: unknown) => {
        setBusy(false);
        setMsg({ ok: false, text: describeError(err) });
      },
    );
  };
  return (
    <form className="inline-form" onSubmit={submit} aria-label={title}>
      <h3>{title}</h3>
      <div className="fields">{children}</div>
      <button type="submit" disabled={busy}>
        {submitLabel}
      </button>
      {msg !== null && (
        <p className={`notice ${msg.ok ? 'ok' : 'error'}`} role={msg.ok ? 'status' : 'alert'}>
          {msg.text}
        </p>
      )}
    </form>
  );
}
