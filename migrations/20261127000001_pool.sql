-- A real pool (issue 7): typed states, host lifecycle (labels, images held,
-- drain, loss and fencing), capacity-aware queueing, and revisioned
-- assignment streams with wake-ups through LISTEN/NOTIFY, so any number of
-- API replicas can serve one database.

-- ---- states as enums ------------------------------------------------------
CREATE TYPE container_state AS ENUM (
    'pending', 'scheduled', 'pulling', 'starting', 'running', 'stopping',
    'succeeded', 'failed', 'stopped');
CREATE TYPE desired_state AS ENUM ('running', 'stopped', 'deleted');
CREATE TYPE restart_policy AS ENUM ('never', 'on_failure', 'always');
CREATE TYPE container_reason AS ENUM (
    'Error', 'Completed', 'ImagePullFailed', 'StartFailed', 'OOMKilled',
    'HostLost', 'TaskLost', 'StopRequested', 'BackOff',
    'WaitingForCapacity', 'NoCapacity');

-- The waiting reason was called NoCapacity; NoCapacity is now terminal.
UPDATE containers SET reason = 'WaitingForCapacity' WHERE reason = 'NoCapacity' AND state = 'pending';
UPDATE containers SET reason = NULL
 WHERE reason IS NOT NULL AND reason NOT IN (
    'Error', 'Completed', 'ImagePullFailed', 'StartFailed', 'OOMKilled',
    'HostLost', 'TaskLost', 'StopRequested', 'BackOff',
    'WaitingForCapacity', 'NoCapacity');

DROP INDEX containers_pending;
ALTER TABLE containers DROP CONSTRAINT containers_desired_check;
ALTER TABLE containers DROP CONSTRAINT containers_restart_policy_check;
ALTER TABLE containers
    ALTER COLUMN state DROP DEFAULT,
    ALTER COLUMN state TYPE container_state USING state::container_state,
    ALTER COLUMN state SET DEFAULT 'pending',
    ALTER COLUMN desired DROP DEFAULT,
    ALTER COLUMN desired TYPE desired_state USING desired::desired_state,
    ALTER COLUMN desired SET DEFAULT 'running',
    ALTER COLUMN restart_policy TYPE restart_policy USING restart_policy::restart_policy,
    ALTER COLUMN reason TYPE container_reason USING reason::container_reason;

-- ---- queueing and placement constraints -----------------------------------
ALTER TABLE containers
    -- How long the container may wait for capacity before it fails NoCapacity.
    ADD COLUMN max_pending_s integer NOT NULL DEFAULT 600 CHECK (max_pending_s BETWEEN 1 AND 86400),
    -- Since when the current run has been waiting for a host (NULL: placed).
    ADD COLUMN pending_since timestamptz,
    -- placement.host_labels: a host must carry every one of them.
    ADD COLUMN host_labels jsonb NOT NULL DEFAULT '{}',
    -- A new run of a finished container goes back to its host when it fits
    -- there (its logs are there).
    ADD COLUMN prefer_host_id text;
UPDATE containers SET pending_since = created_at WHERE state = 'pending';

CREATE INDEX containers_pending ON containers (tenant_id, created_at)
    WHERE state = 'pending' AND desired = 'running' AND deleted_at IS NULL;

-- ---- hosts -----------------------------------------------------------------
ALTER TABLE hosts
    ADD COLUMN labels jsonb NOT NULL DEFAULT '{}',
    -- [{"reference": ..., "digest": ...}] of images unpacked on the host.
    ADD COLUMN images jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN running integer NOT NULL DEFAULT 0,
    -- Set by an operator: no new placements, running containers stay.
    ADD COLUMN draining boolean NOT NULL DEFAULT false,
    -- Set when the host was judged lost; cleared once its worker has applied
    -- an assignment revision >= lost_revision (it has fenced what moved away).
    ADD COLUMN lost_at timestamptz,
    ADD COLUMN lost_revision bigint,
    -- The assignment revision the worker last reported as applied.
    ADD COLUMN applied_revision bigint NOT NULL DEFAULT 0;

-- ---- revisioned assignments ------------------------------------------------
-- One row per change of a container's assignment to a host (placed, moved
-- away, desired state or generation changed, removed), written by trigger so
-- no code path can forget it. A host's stream reads the changes of
-- transactions that have finished: xid < the snapshot's xmin, so a change is
-- never skipped because a transaction with a lower id committed late. The
-- revision a worker holds is that xmin watermark (an xid8 as a number).
CREATE TABLE assignment_changes (
    seq           bigserial PRIMARY KEY,
    host_id       text NOT NULL,
    container_id  uuid NOT NULL,
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assignment_changes_host_xid ON assignment_changes (host_id, xid);
CREATE INDEX assignment_changes_at ON assignment_changes (at);

-- Changes below this watermark were pruned: a worker asking to resume from
-- an older revision gets a snapshot.
CREATE TABLE assignment_log (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_below  xid8 NOT NULL DEFAULT '0'
);
INSERT INTO assignment_log DEFAULT VALUES;

CREATE FUNCTION skiff_note_assignment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.host_id IS NOT NULL AND OLD.host_id IS DISTINCT FROM NEW.host_id THEN
        INSERT INTO assignment_changes (host_id, container_id) VALUES (OLD.host_id, OLD.id);
        PERFORM pg_notify('skiff_host', OLD.host_id);
    END IF;
    IF NEW.host_id IS NOT NULL THEN
        INSERT INTO assignment_changes (host_id, container_id) VALUES (NEW.host_id, NEW.id);
        PERFORM pg_notify('skiff_host', NEW.host_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER containers_assignment_changed
    AFTER UPDATE OF host_id, desired, generation, removed_at, stop_timeout_s ON containers
    FOR EACH ROW
    WHEN (OLD.host_id IS DISTINCT FROM NEW.host_id
       OR OLD.desired IS DISTINCT FROM NEW.desired
       OR OLD.generation IS DISTINCT FROM NEW.generation
       OR OLD.removed_at IS DISTINCT FROM NEW.removed_at
       OR OLD.stop_timeout_s IS DISTINCT FROM NEW.stop_timeout_s)
    EXECUTE FUNCTION skiff_note_assignment_change();

-- Wake-ups for every API replica: `wait` and `delete` watchers (a container
-- changed), and the scheduler (something to place, or capacity freed).
-- NOTIFY is delivered at commit, so a listener that re-reads sees the change.
CREATE FUNCTION skiff_note_container_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skiff_container', NEW.id::text);
    IF NEW.state = 'pending'
       OR (TG_OP = 'UPDATE' AND NEW.state IN ('succeeded', 'failed', 'stopped')
           AND OLD.state IS DISTINCT FROM NEW.state)
       OR (TG_OP = 'UPDATE' AND NEW.removed_at IS NOT NULL AND OLD.removed_at IS NULL) THEN
        PERFORM pg_notify('skiff_scheduler', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER containers_inserted_notify
    AFTER INSERT ON containers
    FOR EACH ROW EXECUTE FUNCTION skiff_note_container_change();

CREATE TRIGGER containers_changed_notify
    AFTER UPDATE OF state, removed_at, restart_at, generation, desired ON containers
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
       OR OLD.removed_at IS DISTINCT FROM NEW.removed_at
       OR OLD.restart_at IS DISTINCT FROM NEW.restart_at
       OR OLD.generation IS DISTINCT FROM NEW.generation
       OR OLD.desired IS DISTINCT FROM NEW.desired)
    EXECUTE FUNCTION skiff_note_container_change();
