-- skiff's control-plane state. PostgreSQL is the source of truth: a request
-- is acknowledged only after its row is committed here.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tokens are stored as SHA-256 hashes; the plain token is shown once.
CREATE TABLE api_tokens (
    token_sha256  bytea PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hosts (
    id                  text PRIMARY KEY,
    agent_addr          text NOT NULL,
    cpu_millis          integer NOT NULL CHECK (cpu_millis >= 0),
    memory_mib          bigint NOT NULL CHECK (memory_mib >= 0),
    containerd_version  text NOT NULL,
    hostname            text NOT NULL,
    registered_at       timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE containers (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    name            text NOT NULL,
    image           text NOT NULL,
    image_digest    text,
    command         jsonb NOT NULL DEFAULT '[]',
    env             jsonb NOT NULL DEFAULT '{}',
    -- Never returned by the API and never logged.
    secure_env      jsonb NOT NULL DEFAULT '{}',
    cpu_millis      integer NOT NULL CHECK (cpu_millis BETWEEN 100 AND 4000),
    memory_mib      integer NOT NULL CHECK (memory_mib BETWEEN 64 AND 16384),
    restart_policy  text NOT NULL CHECK (restart_policy IN ('never', 'on_failure', 'always')),
    max_restarts    integer CHECK (max_restarts >= 0),
    stop_timeout_s  integer NOT NULL CHECK (stop_timeout_s >= 0),
    labels          jsonb NOT NULL DEFAULT '{}',

    -- What the user wants: running, stopped or deleted.
    desired         text NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'stopped', 'deleted')),
    -- Bumped for every new run; the worker replaces tasks of older generations.
    generation      bigint NOT NULL DEFAULT 1,
    -- When a restart after back-off is due (NULL: none pending).
    restart_at      timestamptz,
    -- Exponent of the next back-off delay (1 s doubling); reset by a long run.
    backoff_step    integer NOT NULL DEFAULT 0,

    state           text NOT NULL DEFAULT 'pending',
    reason          text,
    message         text,
    exit_code       integer,
    restart_count   integer NOT NULL DEFAULT 0,
    host_id         text REFERENCES hosts (id),

    created_at      timestamptz NOT NULL DEFAULT now(),
    scheduled_at    timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    queued_ms       bigint,
    pull_ms         bigint,
    create_ms       bigint,
    start_ms        bigint,
    -- Set by DELETE; the row stays (history, later billing) but is hidden.
    deleted_at      timestamptz,
    -- Set once the host has removed every trace of a deleted container.
    removed_at      timestamptz
);

CREATE UNIQUE INDEX containers_tenant_name ON containers (tenant_id, name) WHERE deleted_at IS NULL;
CREATE INDEX containers_tenant_id ON containers (tenant_id, id) WHERE deleted_at IS NULL;
CREATE INDEX containers_host ON containers (host_id) WHERE removed_at IS NULL;
CREATE INDEX containers_pending ON containers (created_at) WHERE state = 'pending';
CREATE INDEX containers_restart_at ON containers (restart_at) WHERE restart_at IS NOT NULL;
CREATE INDEX containers_labels ON containers USING gin (labels);

CREATE TABLE container_events (
    seq           bigserial PRIMARY KEY,
    container_id  uuid NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    -- Unique per container: a re-sent report stores its events once.
    event_key     text NOT NULL,
    kind          text NOT NULL,
    message       text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL,
    UNIQUE (container_id, event_key)
);
