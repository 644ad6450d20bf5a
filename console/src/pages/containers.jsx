// Containers: the run-a-container form (the API's validation messages shown
// at the field they name) and the live list with its filters.
import { useRef, useState } from 'preact/hooks';
import { ApiProblem, getJson, query } from '../api.js';
import { Link, navigate } from '../router.jsx';
import { CONTAINER_STATES, ErrorMessage, Page, StateBadge, formatTime, usePoll } from '../ui.jsx';

export function Containers() {
  return (
    <Page title="Containers">
      <RunForm />
      <ContainerList />
    </Page>
  );
}

/** The form's inputs, by the request field they fill. */
const FIELDS = ['image', 'command', 'cpu', 'memory_mib', 'name', 'labels', 'restart_policy'];

/** "a=b, c=d" -> {a: "b", c: "d"}; throws naming the bad pair. */
function parseLabels(text) {
  const labels = {};
  for (const pair of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const at = pair.indexOf('=');
    if (at <= 0) throw new Error(`"${pair}" is not key=value`);
    labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
  }
  return labels;
}

/** A JSON array of strings, or words separated by spaces. */
function parseCommand(text) {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  if (trimmed.startsWith('[')) {
    let parsed;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      throw new Error('not a valid JSON array');
    }
    if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === 'string')) {
      throw new Error('must be a JSON array of strings');
    }
    return parsed;
  }
  return trimmed.split(/\s+/);
}

/** The input a problem's `field` ("cpu", "labels.a", "env.X", "ports[0].port") belongs to. */
function inputOf(field) {
  const head = String(field ?? '').split(/[.[]/)[0];
  return FIELDS.includes(head) ? head : null;
}

function RunForm() {
  const [values, setValues] = useState({
    image: '',
    command: '',
    cpu: '0.5',
    memory_mib: '256',
    name: '',
    labels: '',
    restart_policy: 'never',
  });
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [busy, setBusy] = useState(false);
  const form = useRef(null);
  const set = (key) => (event) => setValues({ ...values, [key]: event.currentTarget.value });

  const focusField = (key) => {
    requestAnimationFrame(() => form.current?.querySelector(`[name="${key}"]`)?.focus());
  };

  const submit = async (event) => {
    event.preventDefault();
    setErrors({});
    setFormError(null);
    // What only the form can get wrong (turning text into JSON); every rule
    // on the values themselves is the API's, and its answer is shown.
    const body = {
      image: values.image.trim(),
      cpu: values.cpu.trim() === '' ? undefined : Number(values.cpu),
      memory_mib: values.memory_mib.trim() === '' ? undefined : Number(values.memory_mib),
      restart_policy: values.restart_policy,
    };
    try {
      body.command = parseCommand(values.command);
    } catch (error) {
      setErrors({ command: `Command: ${error.message}.` });
      focusField('command');
      return;
    }
    try {
      const labels = parseLabels(values.labels);
      if (Object.keys(labels).length) body.labels = labels;
    } catch (error) {
      setErrors({ labels: `Labels: ${error.message}.` });
      focusField('labels');
      return;
    }
    if (values.name.trim()) body.name = values.name.trim();
    for (const key of Object.keys(body)) if (body[key] === undefined) delete body[key];
    setBusy(true);
    try {
      const created = await getJson('/v1/containers', { method: 'POST', body });
      navigate(`/containers/${created.id}`);
    } catch (problem) {
      const key = problem instanceof ApiProblem ? inputOf(problem.field) : null;
      if (key) {
        setErrors({ [key]: problem.detail || problem.title });
        focusField(key);
      } else {
        setFormError(problem);
      }
    } finally {
      setBusy(false);
    }
  };

  const field = (key, label, input, help) => (
    <div class={`field field-${key}`}>
      <label for={`run-${key}`}>{label}</label>
      {input({
        id: `run-${key}`,
        name: key,
        value: values[key],
        onInput: set(key),
        'aria-invalid': errors[key] ? 'true' : undefined,
        'aria-describedby': [help && `run-${key}-help`, errors[key] && `run-${key}-error`].filter(Boolean).join(' ') || undefined,
      })}
      {help && (
        <p id={`run-${key}-help`} class="help">
          {help}
        </p>
      )}
      {errors[key] && (
        <p id={`run-${key}-error`} class="error field-error" role="alert">
          {errors[key]}
        </p>
      )}
    </div>
  );

  return (
    <form ref={form} class="card run-form" onSubmit={submit} noValidate aria-labelledby="run-title">
      <h2 id="run-title">Run a container</h2>
      <div class="grid">
        {field('image', 'Image', (p) => <input {...p} type="text" autocomplete="off" spellcheck={false} required />, 'e.g. registry.example/app:1.2')}
        {field(
          'command',
          'Command',
          (p) => <input {...p} type="text" autocomplete="off" spellcheck={false} />,
          'Words separated by spaces, or a JSON array: ["sh", "-c", "echo hi"]. Empty: the image’s own.',
        )}
        {field('cpu', 'CPU (vCPU)', (p) => <input {...p} type="number" inputMode="decimal" step="0.01" required />)}
        {field('memory_mib', 'Memory (MiB)', (p) => <input {...p} type="number" inputMode="numeric" step="1" required />)}
        {field('name', 'Name (optional)', (p) => <input {...p} type="text" autocomplete="off" spellcheck={false} />)}
        {field('labels', 'Labels (optional)', (p) => <input {...p} type="text" autocomplete="off" spellcheck={false} />, 'key=value, separated by commas')}
        {field('restart_policy', 'Restart policy', (p) => (
          <select {...p}>
            <option value="never">never</option>
            <option value="on_failure">on failure</option>
            <option value="always">always</option>
          </select>
        ))}
      </div>
      <ErrorMessage error={formError} />
      <button type="submit" disabled={busy}>
        {busy ? 'Starting…' : 'Run'}
      </button>
    </form>
  );
}

function ContainerList() {
  const [state, setState] = useState('');
  const [label, setLabel] = useState('');
  const [appliedLabel, setAppliedLabel] = useState('');
  const list = usePoll(
    (signal) => getJson(`/v1/containers${query({ limit: 100, state, label: appliedLabel })}`, { signal }),
    2000,
    [state, appliedLabel],
  );
  const items = list.data?.items ?? [];
  return (
    <section class="card" aria-labelledby="list-title">
      <h2 id="list-title">Your containers</h2>
      <form
        class="filters"
        role="search"
        aria-label="Filter containers"
        onSubmit={(e) => {
          e.preventDefault();
          setAppliedLabel(label.trim());
        }}
      >
        <div class="field">
          <label for="filter-state">State</label>
          <select id="filter-state" value={state} onChange={(e) => setState(e.currentTarget.value)}>
            <option value="">any</option>
            {CONTAINER_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-label">Label</label>
          <input
            id="filter-label"
            type="text"
            placeholder="key=value"
            autocomplete="off"
            value={label}
            onInput={(e) => setLabel(e.currentTarget.value)}
          />
        </div>
        <button type="submit" class="secondary">
          Apply
        </button>
      </form>
      <ErrorMessage error={list.error} />
      <p class="sr-only" role="status">
        {list.data ? `${items.length} container${items.length === 1 ? '' : 's'}` : ''}
      </p>
      {list.data && items.length === 0 && <p class="empty">No containers{state || appliedLabel ? ' match these filters' : ' yet'}.</p>}
      {items.length > 0 && (
        <div class="table-wrap">
          <table class="stack">
            <caption class="sr-only">Containers, newest first; refreshed every 2 seconds</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">State</th>
                <th scope="col">Image</th>
                <th scope="col">Created</th>
              </tr>
            </thead>
            <tbody>
              {items.map((c) => (
                <tr key={c.id} data-container-id={c.id}>
                  <td data-label="Name">
                    <span class="wrap">
                      <Link to={`/containers/${c.id}`}>{c.name}</Link>
                    </span>
                  </td>
                  <td data-label="State">
                    <span>
                      <StateBadge state={c.state} />
                      {c.reason && <span class="reason"> {c.reason}</span>}
                    </span>
                  </td>
                  <td data-label="Image">
                    <span class="mono wrap">{c.image}</span>
                  </td>
                  <td data-label="Created">
                    <span>{formatTime(c.created_at)}</span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
