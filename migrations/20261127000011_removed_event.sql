-- A deleted container's removal from its host (the worker confirmed it,
-- or it never had one) is an event of the tenant's log: `DELETE` answers
-- before the host is done, and a client that must know when the runtime
-- state and logs are gone follows `type=removed`.
CREATE FUNCTION tenant_events_from_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tenant_events (tenant_id, container_id, type, message)
    VALUES (NEW.tenant_id, NEW.id, 'removed', 'removed from its host');
    RETURN NULL;
END $$;

CREATE TRIGGER containers_removed_logged
    AFTER UPDATE OF removed_at ON containers
    FOR EACH ROW WHEN (OLD.removed_at IS NULL AND NEW.removed_at IS NOT NULL)
    EXECUTE FUNCTION tenant_events_from_removal();
