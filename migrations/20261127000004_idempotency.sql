-- Idempotency keys: the response to a tenant's request made with an
-- Idempotency-Key, stored in the same transaction as what the request
-- created, and returned again for the same key and request.

CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    key           text NOT NULL,
    -- sha256 of the method, the path and the canonical JSON body
    fingerprint   bytea NOT NULL,
    status        smallint NOT NULL,
    content_type  text NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
