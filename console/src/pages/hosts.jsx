// Hosts (admin token): each host's capacity and what is allocated of it.
import { getJson } from '../api.js';
import { ErrorMessage, Page, StateBadge, formatNumber, formatTime, usePoll } from '../ui.jsx';

function Allocation({ id, label, used, total, unit }) {
  return (
    <div class="allocation">
      <label for={id}>
        {label}: {formatNumber(used)} of {formatNumber(total)} {unit}
      </label>
      <meter id={id} min={0} max={total || 1} value={used} high={(total || 1) * 0.9}>
        {formatNumber(used)} of {formatNumber(total)} {unit}
      </meter>
    </div>
  );
}

export function Hosts() {
  const hosts = usePoll((signal) => getJson('/v1/hosts', { signal }), 3000);
  const items = hosts.data?.items ?? [];
  return (
    <Page title="Hosts">
      <ErrorMessage error={hosts.error} />
      {hosts.data && items.length === 0 && <p class="empty">No host has joined yet.</p>}
      <ul class="hosts">
        {items.map((h) => (
          <li key={h.id} class="card host" data-host-id={h.id}>
            <div class="section-head">
              <h2 class="mono wrap">{h.id}</h2>
              <StateBadge state={h.state} />
            </div>
            <Allocation id={`cpu-${h.id}`} label="CPU" used={h.allocated_cpu} total={h.cpu} unit="vCPU" />
            <Allocation
              id={`mem-${h.id}`}
              label="Memory"
              used={h.allocated_memory_mib}
              total={h.memory_mib}
              unit="MiB"
            />
            <p class="counts">
              {h.running} running, {h.images.length} image{h.images.length === 1 ? '' : 's'}
              {Object.keys(h.labels).length > 0 &&
                `; labels ${Object.entries(h.labels)
                  .map(([k, v]) => `${k}=${v}`)
                  .join(', ')}`}
            </p>
            <p class="help">
              Last heartbeat {formatTime(h.last_heartbeat_at)}; containerd {h.containerd_version}
            </p>
          </li>
        ))}
      </ul>
    </Page>
  );
}
