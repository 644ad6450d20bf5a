-- Per-tenant quotas (issue 10). A NULL limit is the operator's default
-- (SKIFF_QUOTA_*). Admission counts a tenant's live containers: not
-- deleted, and not finished unless a restart is due (they come back).
CREATE TABLE tenant_quotas (
    tenant_id        uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    max_vcpu_millis  bigint CHECK (max_vcpu_millis >= 0),
    max_memory_mib   bigint CHECK (max_memory_mib >= 0),
    max_containers   bigint CHECK (max_containers >= 0),
    max_pending      bigint CHECK (max_pending >= 0),
    max_jobs         bigint CHECK (max_jobs >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A tenant's live containers, for counting its use.
CREATE INDEX containers_tenant_live ON containers (tenant_id)
    WHERE deleted_at IS NULL
      AND (state NOT IN ('succeeded', 'failed', 'stopped') OR restart_at IS NOT NULL);
