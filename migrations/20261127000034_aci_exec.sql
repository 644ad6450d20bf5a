-- The ACI layer's exec and attach sessions (api/src/aci/exec.rs): `POST
-- .../containers/{c}/exec` mints a password for one WebSocket, which any
-- replica may serve; the first connection that presents it consumes the
-- row (single use), and a row past expires_at is never honoured. Only the
-- password's SHA-256 is kept.
CREATE TABLE aci_exec_sessions (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    container_id     uuid NOT NULL,
    -- 'exec': a process with a terminal; 'attach': the container's output.
    kind             text NOT NULL CHECK (kind IN ('exec', 'attach')),
    command          jsonb NOT NULL DEFAULT '[]',
    cols             integer,
    rows             integer,
    password_sha256  bytea NOT NULL,
    expires_at       timestamptz NOT NULL
);

CREATE INDEX aci_exec_sessions_expires ON aci_exec_sessions (expires_at);
