// Sign-in with an API token: /whoami says who it is and which role it has.
import { useState } from 'react';
import type { FormEvent } from 'react';
import { describeError, request } from '../api/client.ts';
import type { Session } from '../api/session.ts';
import type { Role } from '../api/types.ts';

export function SignIn({ onSignedIn }: { onSignedIn(s: Session): void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const t = token.trim();
    if (t === '') {
      setError('Enter a token: rebound serve prints the first admin token, and an admin can make more (rebound token create).');
      return;
    }
    setBusy(true);
    request<{ name: string; role: Role }>('GET', '/whoami', undefined, t).then(
      (me) => onSignedIn({ token: t, name: me.name, role: me.role }),
      (err: unknown) => {
        setBusy(false);
        setError(describeError(err));
      },
    );
  };
  return (
    <section className="sign-in">
      <h1>Sign in to Rebound</h1>
      <form onSubmit={submit}>
        <label htmlFor="token">API token</label>
        <input id="token" name="token" type="password" autoComplete="off" value={token} onChange={(e) => setToken(e.target.value)} aria-describedby="token-help" />
        <p id="token-help" className="muted">
          The token stays in this browser tab only and is forgotten when the tab closes.
        </p>
        {error !== null && (
          <p className="notice error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </section>
  );
}
