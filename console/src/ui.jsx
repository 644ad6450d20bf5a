// Shared pieces of the pages: the page frame (title and focus on
// navigation), polling, state badges, messages and formatting.
import { useEffect, useRef, useState } from 'preact/hooks';

/** Whether a page has been shown yet (the first one keeps the browser's focus). */
let shownAPage = false;

/**
 * A page: its <h1> takes focus when the page changes (not on the first
 * load, where the browser starts at the top), for screen readers and
 * keyboards.
 */
export function Page({ title, children, actions }) {
  const heading = useRef(null);
  useEffect(() => {
    document.title = `${title} · skiff console`;
    if (shownAPage) heading.current?.focus({ preventScroll: true });
    shownAPage = true;
  }, [title]);
  return (
    <section class="page" aria-labelledby="page-title">
      <div class="page-head">
        <h1 id="page-title" tabIndex={-1} ref={heading}>
          {title}
        </h1>
        {actions}
      </div>
      {children}
    </section>
  );
}

/**
 * Calls `load` now and every `ms` while the tab is visible (and `deps`
 * unchanged); returns {data, error, reload}. A failed load keeps the last
 * data and reports the error.
 */
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    let timer = null;
    const controller = new AbortController();
    const run = async () => {
      if (!document.hidden) {
        try {
          const data = await load(controller.signal);
          if (live) setState({ data, error: null });
        } catch (error) {
          if (live && error.name !== 'AbortError') setState((s) => ({ data: s.data, error }));
        }
      }
      if (live && ms) timer = setTimeout(run, ms);
    };
    run();
    return () => {
      live = false;
      clearTimeout(timer);
      controller.abort();
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export const TERMINAL_STATES = ['succeeded', 'failed', 'stopped'];
export const CONTAINER_STATES = ['pending', 'pulling', 'starting', 'running', 'stopping', ...TERMINAL_STATES];

/** A state as text with a colour; the text alone says it all. */
export function StateBadge({ state }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

/** An error as a message read out at once. */
export function ErrorMessage({ error }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error.title && error.detail ? `${error.title}: ${error.detail}` : error.message}
    </p>
  );
}

export function formatTime(iso) {
  if (!iso) return '–';
  const date = new Date(iso);
  return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) return '–';
  return ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${ms} ms`;
}

/** A cost as the API counts it: integer micro-units of the rate card's currency. */
export function formatCost(micros) {
  return `${Number(micros).toLocaleString("en-US")} micro-units`;
}

export function formatNumber(n, digits = 2) {
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits });
}
