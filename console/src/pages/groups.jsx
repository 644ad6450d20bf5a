// Container groups: each group's state, host and published ports, and its
// members, each a link to its container's page.
import { getJson } from '../api.js';
import { Link } from '../router.jsx';
import { ErrorMessage, Page, StateBadge, formatTime, usePoll } from '../ui.jsx';

export function Groups() {
  const groups = usePoll((signal) => getJson('/v1/groups?limit=100', { signal }), 2000);
  const items = groups.data?.items ?? [];
  return (
    <Page title="Groups">
      <ErrorMessage error={groups.error} />
      {groups.data && items.length === 0 && <p class="empty">No groups yet (POST /v1/groups makes one).</p>}
      <ul class="groups">
        {items.map((group) => (
          <li key={group.id} class="card group">
            <div class="section-head">
              <h2 class="wrap">{group.name}</h2>
              <StateBadge state={group.state} />
            </div>
            <p class="help">
              Namespace {group.namespace}; {group.host_id ? `on ${group.host_id}` : 'waiting for a host'}
              {group.ip ? `, address ${group.ip}` : ''}
              {group.ports.length > 0
                ? `; ports ${group.ports.map((p) => (p.host_port ? `${p.host_port}→${p.port}` : p.port)).join(', ')}`
                : ''}
              ; restart {group.restart_policy}; created {formatTime(group.created_at)}
            </p>
            <ul class="members" aria-label={`Members of ${group.name}`}>
              {group.containers.map((member) => (
                <li key={member.container.id}>
                  <Link to={`/containers/${member.container.id}`}>{member.name}</Link>{' '}
                  <StateBadge state={member.container.state} />
                </li>
              ))}
            </ul>
          </li>
        ))}
      </ul>
    </Page>
  );
}
