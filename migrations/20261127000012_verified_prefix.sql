-- Incremental ledger verification (issue 10): the last record of a
-- tenant's chain that a verification found intact. The next one checks
-- only the records after it, linked onto its hash (a full re-read stays
-- available: `?full=true`, and the skiff-billing CLI). verified_at paces
-- verifications per tenant.
CREATE TABLE usage_chain_verified (
    tenant_id    uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    seq          bigint NOT NULL,
    hash         bytea NOT NULL,
    verified_at  timestamptz NOT NULL DEFAULT now()
);
