-- Completion webhooks: a container with a notify_url gets one delivery per
-- run that reaches a terminal state, queued by a trigger in the same
-- transaction as the state change, sent by any replica (rows claimed with
-- SKIP LOCKED and a lease), retried with back-off, signed with the
-- tenant's secret.

ALTER TABLE tenants ADD COLUMN webhook_secret text;
ALTER TABLE containers ADD COLUMN notify_url text;

CREATE TYPE delivery_state AS ENUM ('pending', 'delivered', 'gave_up');

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    container_id     uuid NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    generation       bigint NOT NULL,
    url              text NOT NULL,
    -- The object as sent, rendered at the first attempt: retries send the
    -- same bytes.
    body             bytea,
    state            delivery_state NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (container_id, generation)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE FUNCTION webhook_on_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (tenant_id, container_id, generation, url)
    VALUES (NEW.tenant_id, NEW.id, NEW.generation, NEW.notify_url)
    ON CONFLICT (container_id, generation) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER containers_terminal_webhook
    AFTER UPDATE OF state ON containers
    FOR EACH ROW
    WHEN (NEW.notify_url IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('succeeded', 'failed', 'stopped'))
    EXECUTE FUNCTION webhook_on_terminal();
