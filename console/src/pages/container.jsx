// One container: its state, the start-latency breakdown, the events
// timeline, the log followed live, and stop / start / restart / delete.
import { useEffect, useRef, useState } from 'preact/hooks';
import { followLogs, getJson, request } from '../api.js';
import { Link, navigate } from '../router.jsx';
import { ErrorMessage, Page, StateBadge, TERMINAL_STATES, formatCost, formatMs, formatTime, usePoll } from '../ui.jsx';

export function ContainerDetail({ id }) {
  const path = `/v1/containers/${encodeURIComponent(id)}`;
  const container = usePoll((signal) => getJson(path, { signal }), 1500, [id]);
  const c = container.data;
  const notFound = container.error?.status === 404;
  return (
    <Page
      title="Container"
      actions={
        <Link to="/containers" class="back">
          All containers
        </Link>
      }
    >
      {notFound ? (
        <p class="empty">This container does not exist (or was deleted).</p>
      ) : (
        <ErrorMessage error={container.error} />
      )}
      {c && (
        <>
          <Summary c={c} />
          <Actions c={c} path={path} onDone={container.reload} />
          <Timings timings={c.timings} />
          <Events path={path} state={c.state} restarts={c.restart_count} />
          <Logs id={c.id} hostId={c.host_id} state={c.state} restarts={c.restart_count} />
        </>
      )}
    </Page>
  );
}

function formatMiB(bytes) {
  return (bytes / 1048576).toFixed(1);
}

function Summary({ c }) {
  return (
    <section class="card" aria-labelledby="summary-title">
      <h2 id="summary-title" class="wrap">
        {c.name}
      </h2>
      <dl class="facts">
        <dt>State</dt>
        <dd data-testid="container-state">
          <StateBadge state={c.state} />
          {c.reason && <span class="reason"> {c.reason}</span>}
        </dd>
        {c.pull && (
          <>
            <dt>
              <label for="pull-progress">Pull</label>
            </dt>
            <dd>
              <progress id="pull-progress" max={Math.max(c.pull.bytes_total, 1)} value={c.pull.bytes_done} />{' '}
              {formatMiB(c.pull.bytes_done)} of {formatMiB(c.pull.bytes_total)} MiB
            </dd>
          </>
        )}
        {c.message && (
          <>
            <dt>Message</dt>
            <dd class="wrap">{c.message}</dd>
          </>
        )}
        <dt>Exit code</dt>
        <dd>{c.exit_code ?? '–'}</dd>
        <dt>Image</dt>
        <dd class="mono wrap">{c.image}</dd>
        <dt>Command</dt>
        <dd class="mono wrap">{c.command.length ? JSON.stringify(c.command) : '(the image’s)'}</dd>
        <dt>Resources</dt>
        <dd>
          {c.cpu} vCPU, {c.memory_mib} MiB
        </dd>
        <dt>Host</dt>
        <dd class="mono">{c.host_id ?? '–'}</dd>
        <dt>Restarts</dt>
        <dd>{c.restart_count}</dd>
        <dt>Created</dt>
        <dd>{formatTime(c.created_at)}</dd>
        <dt>Started</dt>
        <dd>{formatTime(c.started_at)}</dd>
        <dt>Finished</dt>
        <dd>{formatTime(c.finished_at)}</dd>
        <dt>Billed</dt>
        <dd>
          {c.usage.billed_seconds} s, cost {formatCost(c.usage.cost)}
        </dd>
        <dt>Id</dt>
        <dd class="mono wrap">{c.id}</dd>
      </dl>
    </section>
  );
}

function Actions({ c, path, onDone }) {
  const [busy, setBusy] = useState(null);
  const [error, setError] = useState(null);
  const [confirming, setConfirming] = useState(false);
  const [status, setStatus] = useState('');
  const terminal = TERMINAL_STATES.includes(c.state);
  const act = async (what) => {
    setBusy(what);
    setError(null);
    try {
      if (what === 'delete') {
        await request(path, { method: 'DELETE' });
        navigate('/containers');
        return;
      }
      await request(`${path}/${what}`, { method: 'POST' });
      setStatus(`${what} requested`);
      onDone();
    } catch (problem) {
      setError(problem);
    } finally {
      setBusy(null);
      setConfirming(false);
    }
  };
  return (
    <section class="card actions" aria-label="Actions">
      <div class="buttons">
        {!terminal && c.state !== 'stopping' && (
          <button type="button" disabled={busy} onClick={() => act('stop')}>
            Stop
          </button>
        )}
        {terminal && (
          <button type="button" disabled={busy} onClick={() => act('start')}>
            Start again
          </button>
        )}
        {c.state === 'running' && (
          <button type="button" disabled={busy} onClick={() => act('restart')}>
            Restart
          </button>
        )}
        {!confirming ? (
          <button type="button" class="danger" disabled={busy} onClick={() => setConfirming(true)}>
            Delete…
          </button>
        ) : (
          <span class="confirm" role="group" aria-label="Confirm delete">
            <button type="button" class="danger" disabled={busy} onClick={() => act('delete')} autoFocus>
              Delete for good
            </button>
            <button type="button" class="secondary" onClick={() => setConfirming(false)}>
              Keep it
            </button>
          </span>
        )}
      </div>
      <p class="sr-only" role="status">
        {status}
      </p>
      <ErrorMessage error={error} />
    </section>
  );
}

const PHASES = [
  ['queued_ms', 'queued'],
  ['pull_ms', 'pull'],
  ['create_ms', 'create'],
  ['start_ms', 'start'],
];

/** Where the start time went, as a bar of proportional segments and as text. */
function Timings({ timings }) {
  const known = PHASES.filter(([key]) => timings[key] !== null && timings[key] !== undefined);
  const total = known.reduce((sum, [key]) => sum + timings[key], 0);
  const summary = known.map(([key, label]) => `${label} ${formatMs(timings[key])}`).join(', ');
  return (
    <section class="card" aria-labelledby="timings-title">
      <h2 id="timings-title">Start latency</h2>
      {known.length === 0 ? (
        <p class="empty">Not started yet.</p>
      ) : (
        <>
          <div class="latency-bar" role="img" aria-label={`Start latency ${formatMs(total)}: ${summary}`}>
            {known.map(([key, label]) => (
              <span
                key={key}
                class={`segment phase-${label}`}
                style={{ flexGrow: Math.max(timings[key], total / 100) }}
                title={`${label}: ${formatMs(timings[key])}`}
              />
            ))}
          </div>
          <ul class="legend">
            {known.map(([key, label]) => (
              <li key={key}>
                <span class={`swatch phase-${label}`} aria-hidden="true" />
                {label} <strong>{formatMs(timings[key])}</strong>
              </li>
            ))}
            <li>
              total <strong>{formatMs(total)}</strong>
            </li>
          </ul>
        </>
      )}
    </section>
  );
}

function Events({ path, state, restarts }) {
  // Re-read when the state or the run changes, and while it is not finished.
  const terminal = TERMINAL_STATES.includes(state);
  const events = usePoll((signal) => getJson(`${path}/events`, { signal }), terminal ? 0 : 2000, [path, state, restarts]);
  const items = events.data?.items ?? [];
  return (
    <section class="card" aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <ErrorMessage error={events.error} />
      {items.length === 0 ? (
        <p class="empty">No events yet.</p>
      ) : (
        <ol class="timeline">
          {items.map((e, i) => (
            <li key={i}>
              <time dateTime={e.at}>{formatTime(e.at)}</time> <strong>{e.kind}</strong>
              {e.message && <span class="wrap"> {e.message}</span>}
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}

/**
 * The log, followed live: a follow stream is (re)opened when the container
 * gets a host, a new run or finishes, and again a second after a stream
 * ends while the container is not finished (its host ends a follow at once
 * while the task is not started yet). Each stream starts from the log's
 * beginning, so its text replaces what was shown.
 */
function Logs({ id, hostId, state, restarts }) {
  const [text, setText] = useState('');
  const [status, setStatus] = useState('waiting');
  const [error, setError] = useState(null);
  const [autoScroll, setAutoScroll] = useState(true);
  const box = useRef(null);
  const terminal = TERMINAL_STATES.includes(state);
  const latestState = useRef(state);
  latestState.current = state;
  useEffect(() => {
    if (!hostId) {
      setStatus('waiting');
      return undefined;
    }
    const controller = new AbortController();
    const follow = async () => {
      for (;;) {
        let received = '';
        setStatus('following');
        setError(null);
        try {
          await followLogs(
            id,
            (chunk) => {
              received += chunk;
              setText(received);
            },
            controller.signal,
          );
          setText(received);
        } catch (e) {
          if (e.name === 'AbortError') return;
          setError(e);
        }
        if (controller.signal.aborted) return;
        if (TERMINAL_STATES.includes(latestState.current)) break;
        await new Promise((done) => setTimeout(done, 1000));
        if (controller.signal.aborted) return;
      }
      setStatus('ended');
    };
    follow();
    return () => controller.abort();
    // `terminal` reads the whole log once more at the end, in case the
    // last stream began before the last output.
  }, [id, hostId, restarts, terminal]);
  useEffect(() => {
    if (autoScroll && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [text, autoScroll]);
  return (
    <section class="card" aria-labelledby="logs-title">
      <div class="section-head">
        <h2 id="logs-title">Logs</h2>
        <span class="log-status" data-testid="log-status">
          {status === 'following' ? 'following live' : status === 'ended' ? 'complete' : 'waiting for a host'}
        </span>
      </div>
      <label class="inline">
        <input type="checkbox" checked={autoScroll} onChange={(e) => setAutoScroll(e.currentTarget.checked)} /> Keep
        the newest line in view
      </label>
      <ErrorMessage error={error} />
      <pre class="logs" ref={box} tabIndex={0} aria-label="Log output" data-testid="logs">
        {text || (status === 'ended' ? '(no output)' : '')}
      </pre>
    </section>
  );
}
