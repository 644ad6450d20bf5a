// Jobs: each job's progress (tasks finished of its count) and state.
import { getJson } from '../api.js';
import { ErrorMessage, Page, StateBadge, formatTime, usePoll } from '../ui.jsx';

export function Jobs() {
  const jobs = usePoll((signal) => getJson('/v1/jobs?limit=100', { signal }), 2000);
  const items = jobs.data?.items ?? [];
  return (
    <Page title="Jobs">
      <ErrorMessage error={jobs.error} />
      {jobs.data && items.length === 0 && <p class="empty">No jobs yet (POST /v1/jobs makes one).</p>}
      <ul class="jobs">
        {items.map((job) => {
          const t = job.tasks;
          const done = t.succeeded + t.failed + t.cancelled;
          const progressId = `job-${job.id}-progress`;
          return (
            <li key={job.id} class="card job">
              <div class="section-head">
                <h2 class="wrap">{job.name}</h2>
                <StateBadge state={job.state} />
              </div>
              <label for={progressId}>
                {done} of {job.count} tasks finished
              </label>
              <progress id={progressId} max={job.count} value={done}>
                {Math.round((100 * done) / Math.max(job.count, 1))}%
              </progress>
              <p class="counts">
                {t.active} active, {t.waiting} waiting, {t.succeeded} succeeded, {t.failed} failed,{' '}
                {t.cancelled} cancelled; parallelism {job.parallelism}
                {job.reason ? `; ${job.reason}` : ''}
              </p>
              <p class="help">
                Created {formatTime(job.created_at)}
                {job.finished_at ? `, finished ${formatTime(job.finished_at)}` : ''}
              </p>
            </li>
          );
        })}
      </ul>
    </Page>
  );
}
