// A modal dialog on the native <dialog> element: showModal() gives focus trapping, Escape to
// close and an inert page behind it. The form inside submits with Enter like any form.
import { useEffect, useRef } from 'react';
import type { FormEvent, ReactNode } from 'react';

export interface DialogProps {
  title: string;
  open: boolean;
  onClose(): void;
  onSubmit(): void;
  submitLabel: string;
  busy?: boolean;
  danger?: boolean;
  children: ReactNode;
}

export function Dialog({ title, open, onClose, onSubmit, submitLabel, busy, danger, children }: DialogProps) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onSubmit();
  };
  const id = `dlg-${title.replace(/\W+/g, '-').toLowerCase()}`;
  return (
    <dialog ref={ref} aria-labelledby={id} onClose={onClose} onCancel={onClose}>
      {open && (
        <form onSubmit={submit}>
          <h2 id={id}>{title}</h2>
          {children}
          <div className="buttons">
            <button type="button" className="secondary" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" className={danger ? 'danger' : ''} disabled={busy === true}>
              {busy === true ? 'Working…' : submitLabel}
            </button>
          </div>
        </form>
      )}
    </dialog>
  );
}
