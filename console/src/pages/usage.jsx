// Usage: the tenant's report over a chosen range, per day or per label
// value, as a bar chart (Chart.js) with the same numbers in a table, and the
// report's CSV form (`Accept: text/csv`) as a download.
import { useEffect, useRef, useState } from 'preact/hooks';
import { BarController, BarElement, CategoryScale, Chart, LinearScale, Tooltip } from 'chart.js';
import { getJson, query, request } from '../api.js';
import { ErrorMessage, Page, formatCost, formatNumber } from '../ui.jsx';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip);

const METRICS = {
  cost: { label: 'Cost (micro-units)', value: (r) => r.cost, format: (r) => formatCost(r.cost) },
  billed_seconds: { label: 'Billed seconds', value: (r) => r.billed_seconds, format: (r) => formatNumber(r.billed_seconds, 0) },
  vcpu_seconds: { label: 'vCPU-seconds', value: (r) => r.vcpu_seconds, format: (r) => formatNumber(r.vcpu_seconds) },
  gib_seconds: { label: 'GiB-seconds', value: (r) => r.gib_seconds, format: (r) => formatNumber(r.gib_seconds) },
};

const DAY_MS = 86400000;

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/** The last 7 UTC days, today included: [from, to) as dates. */
function defaultRange() {
  const today = new Date(Math.floor(Date.now() / DAY_MS) * DAY_MS);
  return { from: isoDay(new Date(today - 6 * DAY_MS)), to: isoDay(today) };
}

/** The report's parameters: `to` is the last day shown, so the window ends the day after. */
function params({ from, to, group, labelKey }) {
  const end = new Date(Date.parse(`${to}T00:00:00Z`) + DAY_MS);
  return {
    from: `${from}T00:00:00Z`,
    to: end.toISOString().replace(/\.\d+Z$/, 'Z'),
    group_by: group === 'day' ? 'day' : `label:${labelKey.trim()}`,
  };
}

/** Every day of the range, so days without usage show as zero. */
function fillDays(items, { from, to }) {
  const byKey = new Map(items.map((r) => [r.key.slice(0, 10), r]));
  const rows = [];
  const zero = { billed_seconds: 0, vcpu_seconds: 0, gib_seconds: 0, cost: 0 };
  for (let t = Date.parse(`${from}T00:00:00Z`); t <= Date.parse(`${to}T00:00:00Z`) && rows.length < 400; t += DAY_MS) {
    const key = isoDay(new Date(t));
    rows.push({ ...zero, ...byKey.get(key), key });
  }
  return rows;
}

export function Usage() {
  const [form, setForm] = useState({ ...defaultRange(), group: 'day', labelKey: '', metric: 'cost' });
  const [applied, setApplied] = useState(form);
  const [report, setReport] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const [downloadError, setDownloadError] = useState(null);
  const [tick, setTick] = useState(0);
  const set = (key) => (e) => setForm({ ...form, [key]: e.currentTarget.value });

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    setError(null);
    getJson(`/v1/usage${query(params(applied))}`, { signal: controller.signal })
      .then((data) => {
        setReport(data);
        setLoading(false);
      })
      .catch((e) => {
        if (e.name === 'AbortError') return;
        setReport(null);
        setError(e);
        setLoading(false);
      });
    return () => controller.abort();
  }, [applied, tick]);

  const submit = (e) => {
    e.preventDefault();
    const next = { ...form };
    if (next.group === 'label' && !next.labelKey.trim()) {
      setError(new Error('Name the label to group by.'));
      return;
    }
    // Same settings: read again (new usage may have landed).
    if (JSON.stringify(next) === JSON.stringify(applied)) setTick((t) => t + 1);
    else setApplied(next);
  };

  const download = async () => {
    setDownloadError(null);
    try {
      const response = await request(`/v1/usage${query(params(applied))}`, { accept: 'text/csv' });
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `skiff-usage-${applied.from}-${applied.to}-${params(applied).group_by.replace(':', '-')}.csv`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      setDownloadError(e);
    }
  };

  const rows = report ? (applied.group === 'day' ? fillDays(report.items, applied) : report.items) : [];
  const metric = METRICS[applied.metric];
  return (
    <Page title="Usage">
      <form class="card filters usage-form" onSubmit={submit} noValidate aria-label="Usage report">
        <div class="field">
          <label for="usage-from">From (UTC day)</label>
          <input id="usage-from" type="date" value={form.from} onInput={set('from')} required />
        </div>
        <div class="field">
          <label for="usage-to">To (UTC day, included)</label>
          <input id="usage-to" type="date" value={form.to} onInput={set('to')} required />
        </div>
        <div class="field">
          <label for="usage-group">Group by</label>
          <select id="usage-group" value={form.group} onChange={set('group')}>
            <option value="day">day</option>
            <option value="label">label</option>
          </select>
        </div>
        {form.group === 'label' && (
          <div class="field">
            <label for="usage-label">Label key</label>
            <input id="usage-label" type="text" autocomplete="off" value={form.labelKey} onInput={set('labelKey')} />
          </div>
        )}
        <div class="field">
          <label for="usage-metric">Measure</label>
          <select id="usage-metric" value={form.metric} onChange={set('metric')}>
            {Object.entries(METRICS).map(([key, m]) => (
              <option key={key} value={key}>
                {m.label}
              </option>
            ))}
          </select>
        </div>
        <div class="buttons">
          <button type="submit">Show</button>
          <button type="button" class="secondary" onClick={download}>
            Download CSV
          </button>
        </div>
      </form>
      <ErrorMessage error={error} />
      <ErrorMessage error={downloadError} />
      <p class="sr-only" role="status">
        {loading ? 'Loading the report…' : report ? `Report of ${rows.length} rows` : ''}
      </p>
      {report && (
        <section class="card" aria-labelledby="chart-title">
          <h2 id="chart-title">
            {metric.label} per {applied.group === 'day' ? 'day' : `value of label ${applied.labelKey}`}
          </h2>
          <BarChart rows={rows} metric={metric} />
          <p class="total">
            Total: {report.total.billed_seconds} billed seconds, {formatNumber(report.total.vcpu_seconds)} vCPU-s,{' '}
            {formatNumber(report.total.gib_seconds)} GiB-s, cost {formatCost(report.total.cost)}
          </p>
          <div class="table-wrap">
            <table>
              <caption class="sr-only">The chart's numbers</caption>
              <thead>
                <tr>
                  <th scope="col">{applied.group === 'day' ? 'Day' : applied.labelKey}</th>
                  <th scope="col">{metric.label}</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <tr key={r.key}>
                    <th scope="row" class="mono">
                      {r.key || '(none)'}
                    </th>
                    <td>{metric.format(r)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </section>
      )}
    </Page>
  );
}

function BarChart({ rows, metric }) {
  const canvas = useRef(null);
  const chart = useRef(null);
  useEffect(() => {
    chart.current = new Chart(canvas.current, {
      type: 'bar',
      data: { labels: [], datasets: [{ label: '', data: [], backgroundColor: '#1f5fa8' }] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: true } },
        plugins: { tooltip: { enabled: true } },
      },
    });
    return () => chart.current.destroy();
  }, []);
  useEffect(() => {
    const c = chart.current;
    c.data.labels = rows.map((r) => r.key || '(none)');
    c.data.datasets[0].label = metric.label;
    c.data.datasets[0].data = rows.map(metric.value);
    c.update();
  }, [rows, metric]);
  const nonZero = rows.filter((r) => metric.value(r) > 0).length;
  return (
    <figure class="chart" data-points={rows.length} data-nonzero={nonZero}>
      <div class="chart-box">
        <canvas
          ref={canvas}
          role="img"
          aria-label={`Bar chart of ${metric.label.toLowerCase()}: ${rows
            .map((r) => `${r.key || '(none)'} ${metric.format(r)}`)
            .join(', ')}`}
        />
      </div>
    </figure>
  );
}
