// The app shell: sign-in gate, navigation, and which page a path shows.
import { useEffect, useState } from 'react';
import { whenSignedOut } from './api/client.ts';
import { loadSession, saveSession } from './api/session.ts';
import type { Session } from './api/session.ts';
import { Link, match, navigate, usePath } from './router.tsx';
import { SignIn } from './pages/sign-in.tsx';
import { Dashboard } from './pages/dashboard.tsx';
import { Sites } from './pages/sites.tsx';
import { Machines } from './pages/machines.tsx';
import { Items } from './pages/items.tsx';
import { ItemDetail } from './pages/item-detail.tsx';
import { Jobs } from './pages/jobs.tsx';
import { JobDetail } from './pages/job-detail.tsx';
import { Plans } from './pages/plans.tsx';
import { PlanDetail } from './pages/plan-detail.tsx';

const NAV: { to: string; label: string }[] = [
  { to: '/', label: 'Dashboard' },
  { to: '/sites', label: 'Sites' },
  { to: '/machines', label: 'Machines' },
  { to: '/items', label: 'Protected items' },
  { to: '/jobs', label: 'Jobs' },
  { to: '/plans', label: 'Recovery plans' },
];

function Page({ path, session }: { path: string; session: Session }) {
  let p: Record<string, string> | null;
  if (match('/', path)) return <Dashboard session={session} />;
  if (match('/sites', path)) return <Sites session={session} />;
  if (match('/machines', path)) return <Machines session={session} />;
  if (match('/items', path)) return <Items />;
  if ((p = match('/items/:machine', path))) return <ItemDetail key={p['machine']} machine={p['machine'] ?? ''} session={session} />;
  if (match('/jobs', path)) return <Jobs />;
  if ((p = match('/jobs/:id', path))) return <JobDetail key={p['id']} id={p['id'] ?? ''} session={session} />;
  if (match('/plans', path)) return <Plans session={session} />;
  if ((p = match('/plans/:name', path))) return <PlanDetail key={p['name']} name={p['name'] ?? ''} session={session} />;
  return (
    <section>
      <h1>Not found</h1>
      <p>
        There is no page at {path.split('?')[0]}. <Link to="/">Go to the dashboard</Link>.
      </p>
    </section>
  );
}

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const path = usePath();
  useEffect(() => whenSignedOut(() => setSession(null)), []);
  useEffect(() => {
    const h1 = document.querySelector('main h1');
    document.title = `${h1?.textContent ?? 'Rebound'} · Rebound`;
  });

  if (session === null) {
    return (
      <main id="main">
        <SignIn onSignedIn={(s) => { saveSession(s); setSession(s); }} />
      </main>
    );
  }
  const signOut = () => {
    saveSession(null);
    setSession(null);
    navigate('/', true);
  };
  const bare = path.split('?')[0] ?? '/';
  const current = (to: string) => (to === '/' ? bare === '/' : bare === to || bare.startsWith(`${to}/`));
  return (
    <>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header>
        <span className="brand">Rebound</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map((n) => (
              <li key={n.to}>
                <Link to={n.to} aria-current={current(n.to) ? 'page' : undefined}>
                  {n.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <span className="who" data-testid="who">
          {session.name} ({session.role})
        </span>
        <button type="button" className="secondary" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={path} session={session} />
      </main>
    </>
  );
}
