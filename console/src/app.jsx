// The console's shell: sign-in, the navigation, and the pages by path.
import { useEffect, useState } from 'preact/hooks';
import { ApiProblem, clearSession, loadSession, roleOf, saveSession, setUnauthorizedHandler } from './api.js';
import { Link, navigate, usePath } from './router.jsx';
import { Page } from './ui.jsx';
import { Containers } from './pages/containers.jsx';
import { ContainerDetail } from './pages/container.jsx';
import { Jobs } from './pages/jobs.jsx';
import { Groups } from './pages/groups.jsx';
import { Usage } from './pages/usage.jsx';
import { Hosts } from './pages/hosts.jsx';

const TENANT_NAV = [
  ['/containers', 'Containers'],
  ['/jobs', 'Jobs'],
  ['/groups', 'Groups'],
  ['/usage', 'Usage'],
];
const ADMIN_NAV = [['/hosts', 'Hosts']];

export function App() {
  const [session, setSession] = useState(loadSession());
  const path = usePath();
  const signOut = (why) => {
    clearSession();
    setSession(null);
    if (why) sessionStorage.setItem('skiff.console.notice', why);
    navigate('/', { replace: true });
  };
  useEffect(() => {
    setUnauthorizedHandler(() => signOut('The API no longer accepts this token: sign in again.'));
  }, []);

  if (!session) {
    return (
      <Shell>
        <SignIn
          onSignedIn={(next) => {
            saveSession(next);
            setSession(next);
            navigate(next.role === 'admin' ? '/hosts' : '/containers', { replace: true });
          }}
        />
      </Shell>
    );
  }
  const nav = session.role === 'admin' ? ADMIN_NAV : TENANT_NAV;
  return (
    <Shell nav={nav} path={path} role={session.role} onSignOut={() => signOut()}>
      {route(path, session.role)}
    </Shell>
  );
}

function route(path, role) {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const home = role === 'admin' ? 'hosts' : 'containers';
  const [first = home, second] = parts;
  if (role === 'admin') {
    if (first === 'hosts' && !second) return <Hosts />;
  } else {
    if (first === 'containers' && !second) return <Containers />;
    if (first === 'containers' && second && parts.length === 2) return <ContainerDetail id={second} />;
    if (first === 'jobs' && !second) return <Jobs />;
    if (first === 'groups' && !second) return <Groups />;
    if (first === 'usage' && !second) return <Usage />;
  }
  return (
    <Page title="Not found">
      <p>
        Nothing here. <Link to={`/${home}`}>Go to {home}</Link>.
      </p>
    </Page>
  );
}

function Shell({ nav = [], path = '/', role, onSignOut, children }) {
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">skiff console</span>
        {nav.length > 0 && (
          <nav aria-label="Main">
            <ul>
              {nav.map(([to, label]) => (
                <li key={to}>
                  <Link to={to} aria-current={path === to || path.startsWith(`${to}/`) ? 'page' : undefined}>
                    {label}
                  </Link>
                </li>
              ))}
            </ul>
          </nav>
        )}
        {onSignOut && (
          <div class="who">
            <span class="role">{role === 'admin' ? 'admin' : 'tenant'}</span>
            <button type="button" class="secondary" onClick={onSignOut}>
              Sign out
            </button>
          </div>
        )}
      </header>
      <main id="main">{children}</main>
    </>
  );
}

function SignIn({ onSignedIn }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [notice] = useState(() => {
    const text = sessionStorage.getItem('skiff.console.notice');
    sessionStorage.removeItem('skiff.console.notice');
    return text;
  });
  const submit = async (event) => {
    event.preventDefault();
    const value = token.trim();
    if (!value) {
      setError('Enter a token.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const role = await roleOf(value);
      onSignedIn({ token: value, role });
    } catch (problem) {
      setError(
        problem instanceof ApiProblem && (problem.status === 401 || problem.status === 403)
          ? 'This token is not accepted by the API.'
          : `Could not reach the API: ${problem.message}`,
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <Page title="Sign in">
      {notice && <p class="notice">{notice}</p>}
      <form class="card narrow" onSubmit={submit} noValidate>
        <div class="field">
          <label for="token">API token</label>
          <input
            id="token"
            name="token"
            type="password"
            autocomplete="off"
            spellcheck={false}
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
            aria-invalid={error ? 'true' : undefined}
            aria-describedby="token-help token-error"
            required
          />
          <p id="token-help" class="help">
            A tenant token (containers, jobs, usage) or the admin token (hosts). It is kept in this tab's
            session storage only.
          </p>
          {error && (
            <p id="token-error" class="error" role="alert">
              {error}
            </p>
          )}
        </div>
        <button type="submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </Page>
  );
}
