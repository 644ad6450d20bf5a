// A small history router: the app's paths live under /console (Vite's base),
// and the API serves index.html for every deep link under it.
import { useEffect, useState } from 'preact/hooks';

export const BASE = '/console';

/** The app path of the current location: '/containers/…' (never empty). */
function current() {
  const path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : '/';
  return path === '' ? '/' : path;
}

const listeners = new Set();

export function navigate(to, { replace = false } = {}) {
  const url = BASE + to;
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  listeners.forEach((listener) => listener(current()));
}

/** The current app path; re-renders on navigation and back/forward. */
export function usePath() {
  const [path, setPath] = useState(current());
  useEffect(() => {
    const onPop = () => setPath(current());
    listeners.add(setPath);
    addEventListener('popstate', onPop);
    return () => {
      listeners.delete(setPath);
      removeEventListener('popstate', onPop);
    };
  }, []);
  return path;
}

/** An in-app link: a real <a href> (new tab, copy link work) handled here. */
export function Link({ to, children, ...rest }) {
  const onClick = (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(to);
  };
  return (
    <a href={BASE + to} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}
