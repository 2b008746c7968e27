// A labelled text input; every control in the portal has a visible label.
import { useId } from 'react';

export function TextField(props: { label: string; value: string; onChange(v: string): void; required?: boolean; placeholder?: string; help?: string; multiline?: boolean }) {
  const id = useId();
  const helpId = `${id}-help`;
  const common = {
    id,
    value: props.value,
    required: props.required,
    placeholder: props.placeholder,
    'aria-describedby': props.help === undefined ? undefined : helpId,
  };
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      {props.multiline === true ? (
        <textarea {...common} rows={3} onChange={(e) => props.onChange(e.target.value)} />
      ) : (
        <input {...common} type="text" onChange={(e) => props.onChange(e.target.value)} />
      )}
      {props.help !== undefined && (
        <span id={helpId} className="muted small">
          {props.help}
        </span>
      )}
    </div>
  );
}

export function SelectField(props: { label: string; value: string; onChange(v: string): void; options: { value: string; label: string }[]; help?: string }) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <select id={id} value={props.value} onChange={(e) => props.onChange(e.target.value)} aria-describedby={props.help === undefined ? undefined : `${id}-help`}>
        {props.options.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
      {props.help !== undefined && (
        <span id={`${id}-help`} className="muted small">
          {props.help}
        </span>
      )}
    </div>
  );
}
