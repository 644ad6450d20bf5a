-- Jobs: count tasks of one template, run at most `parallelism` at a time,
-- each failed task retried up to max_retries times. Tasks are rows made in
-- one set-based insert at creation; each attempt is an ordinary container.

CREATE TYPE job_state AS ENUM ('pending', 'running', 'succeeded', 'failed', 'cancelled');
CREATE TYPE task_state AS ENUM ('waiting', 'active', 'succeeded', 'failed', 'cancelled');

CREATE TABLE jobs (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    name          text NOT NULL,
    -- The validated container request every task starts from.
    template      jsonb NOT NULL,
    -- Per-index overrides ([{env?, command?}] of length count), or NULL.
    tasks         jsonb,
    count         integer NOT NULL CHECK (count BETWEEN 1 AND 10000),
    parallelism   integer NOT NULL CHECK (parallelism >= 1),
    max_retries   integer NOT NULL CHECK (max_retries BETWEEN 0 AND 10),
    labels        jsonb NOT NULL DEFAULT '{}',
    state         job_state NOT NULL DEFAULT 'pending',
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    deleted_at    timestamptz,
    CONSTRAINT jobs_tenant_name UNIQUE (tenant_id, name)
);
CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE state IN ('pending', 'running');

CREATE TABLE job_tasks (
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    index         integer NOT NULL,
    state         task_state NOT NULL DEFAULT 'waiting',
    attempts      integer NOT NULL DEFAULT 0,
    container_id  uuid,
    PRIMARY KEY (job_id, index)
);
CREATE INDEX job_tasks_open ON job_tasks (job_id, state) WHERE state IN ('waiting', 'active');

ALTER TABLE containers
    ADD COLUMN job_id uuid REFERENCES jobs (id),
    ADD COLUMN task_index integer,
    ADD COLUMN task_attempt integer;
CREATE INDEX containers_job ON containers (job_id) WHERE job_id IS NOT NULL;

-- A job's own deadline: past it (from its start) the job fails with
-- DeadlineExceeded, running tasks are stopped and no more start.
ALTER TABLE jobs ADD COLUMN timeout_s integer CHECK (timeout_s > 0);
ALTER TABLE jobs ADD COLUMN reason container_reason;
