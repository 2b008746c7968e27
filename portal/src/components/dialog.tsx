// A modal dialog on the native <dialog> element: showModal() makes the page behind it inert,
// closes on Escape and gives the focus back to what opened it. Tab and Shift+Tab go round inside
// the dialog (the native one lets the focus leave it for the browser's own controls after its
// last control). The form inside submits with Enter like any form.
import { useEffect, useRef } from 'react';
import type { FormEvent, KeyboardEvent, ReactNode } from 'react';

const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

/** Keeps Tab and Shift+Tab inside `box`: from its last control to its first and back. */
export function trapTab(e: KeyboardEvent<HTMLElement>, box: HTMLElement): void {
  if (e.key !== 'Tab' || e.altKey || e.ctrlKey || e.metaKey) return;
  // Radio buttons of one group are one stop: only the checked one (or the first) takes Tab.
  const all = [...box.querySelectorAll<HTMLElement>(FOCUSABLE)].filter((el) => el.getClientRects().length > 0);
  const stops = all.filter((el) => !(el instanceof HTMLInputElement && el.type === 'radio' && !el.checked && all.some((o) => o !== el && o instanceof HTMLInputElement && o.type === 'radio' && o.name === el.name && o.checked)));
  const first = stops[0];
  const last = stops[stops.length - 1];
  if (!first || !last) return;
  const at = document.activeElement;
  const onRadio = (edge: HTMLElement) => at instanceof HTMLInputElement && at.type === 'radio' && edge instanceof HTMLInputElement && edge.type === 'radio' && at.name === edge.name;
  if (e.shiftKey && (at === first || onRadio(first) || !box.contains(at))) {
    e.preventDefault();
    last.focus();
  } else if (!e.shiftKey && (at === last || onRadio(last) || !box.contains(at))) {
    e.preventDefault();
    first.focus();
  }
}

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
    <dialog ref={ref} aria-labelledby={id} onClose={onClose} onCancel={onClose} onKeyDown={(e) => ref.current && trapTab(e, ref.current)}>
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
