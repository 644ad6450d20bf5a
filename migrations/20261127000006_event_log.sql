-- The tenant's event log (GET /v1/events): every event of its containers
-- and every change of their state, in commit order. A row's position is
-- (xid, id): the writing transaction's id, then the row's own. Readers only
-- read below the oldest transaction still running anywhere
-- (pg_snapshot_xmin), so a transaction that commits late can never add a
-- row behind a cursor a reader already holds, with any number of replicas
-- writing.

CREATE TABLE tenant_events (
    id            bigserial PRIMARY KEY,
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    tenant_id     uuid NOT NULL,
    container_id  uuid NOT NULL,
    -- 'state' for a change of state; else the container event's kind.
    type          text NOT NULL,
    state         container_state,
    reason        container_reason,
    message       text NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX tenant_events_position ON tenant_events (tenant_id, xid, id);

CREATE FUNCTION tenant_events_from_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_events (tenant_id, container_id, type, message, at)
    SELECT c.tenant_id, NEW.container_id, NEW.kind, NEW.message, NEW.at
      FROM containers c WHERE c.id = NEW.container_id;
    RETURN NULL;
END $$;

CREATE TRIGGER container_events_logged
    AFTER INSERT ON container_events
    FOR EACH ROW EXECUTE FUNCTION tenant_events_from_event();

CREATE FUNCTION tenant_events_from_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_events (tenant_id, container_id, type, state, reason, message)
    VALUES (NEW.tenant_id, NEW.id, 'state', NEW.state, NEW.reason, COALESCE(NEW.message, ''));
    RETURN NULL;
END $$;

CREATE TRIGGER containers_created_logged
    AFTER INSERT ON containers
    FOR EACH ROW EXECUTE FUNCTION tenant_events_from_state();

CREATE TRIGGER containers_state_logged
    AFTER UPDATE OF state ON containers
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION tenant_events_from_state();
