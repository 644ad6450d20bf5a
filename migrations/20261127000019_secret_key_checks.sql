-- One known value sealed under each key id the keyrings have used: an API
-- whose keyring holds a different key under a known id (regenerated, or a
-- typo) refuses to start, instead of failing to open every secret later.
CREATE TABLE secret_key_checks (
    kid         text PRIMARY KEY,
    sealed      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
