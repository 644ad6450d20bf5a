-- Tenants' start rates (issue 10, noisy neighbours): a tenant's own
-- max_starts_per_s (NULL: the operator's SKIFF_QUOTA_MAX_STARTS_PER_S),
-- and its start bucket, kept by placement rounds (under the placement
-- lock): the tokens left after its last placement and when (NULL: never
-- placed, a full bucket).
ALTER TABLE tenant_quotas
    ADD COLUMN max_starts_per_s double precision CHECK (max_starts_per_s >= 0);
ALTER TABLE tenants
    ADD COLUMN start_tokens double precision,
    ADD COLUMN start_tokens_at timestamptz;
