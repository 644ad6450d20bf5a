-- The trusted worker channel: join tokens, host identities issued at join,
-- every certificate issued (by serial) and revocations.

CREATE TABLE join_tokens (
    id            uuid PRIMARY KEY,
    token_sha256  bytea NOT NULL UNIQUE,
    description   text NOT NULL DEFAULT '',
    max_uses      integer NOT NULL CHECK (max_uses > 0),
    uses          integer NOT NULL DEFAULT 0 CHECK (uses >= 0),
    expires_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- A host id is taken once, at join, and never given out again (a revoked
-- host's id included): the certificates that name it may still exist.
CREATE TABLE host_identities (
    host_id         text PRIMARY KEY,
    requested_name  text NOT NULL,
    join_token_id   uuid REFERENCES join_tokens (id) ON DELETE SET NULL,
    joined_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- Every certificate the CA issued to a host. A call is accepted only with a
-- certificate listed here, unrevoked, unexpired, of an unrevoked host.
-- Rows are removed only once the certificate has expired (a revoked
-- certificate's row outlives it), see Store::forget_expired_certificates.
CREATE TABLE host_certs (
    serial      text PRIMARY KEY,
    host_id     text NOT NULL REFERENCES host_identities (host_id),
    issued_at   timestamptz NOT NULL DEFAULT now(),
    not_after   timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX host_certs_host ON host_certs (host_id);
CREATE INDEX host_certs_not_after ON host_certs (not_after);

ALTER TABLE hosts ADD COLUMN revoked_at timestamptz;
