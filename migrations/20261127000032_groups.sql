-- Container groups: containers placed on one host together, sharing a
-- network namespace and volumes (core/src/groups.rs). Each member is a
-- containers row with group_id set; the group row holds what is the
-- group's own: its namespace (ACI's resource group) and name, policy,
-- labels, annotations and the request as stored (no secret values).
CREATE TABLE container_groups (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    namespace       text NOT NULL,
    name            text NOT NULL,
    restart_policy  restart_policy NOT NULL,
    labels          jsonb NOT NULL DEFAULT '{}',
    annotations     jsonb NOT NULL DEFAULT '{}',
    spec            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

-- Namespaces compare case-insensitively, as ARM's resource groups do.
CREATE UNIQUE INDEX container_groups_tenant_name
    ON container_groups (tenant_id, lower(namespace), name) WHERE deleted_at IS NULL;
CREATE INDEX container_groups_tenant ON container_groups (tenant_id, id) WHERE deleted_at IS NULL;

ALTER TABLE containers ADD COLUMN group_id uuid REFERENCES container_groups (id);
CREATE INDEX containers_group ON containers (group_id) WHERE group_id IS NOT NULL;

-- A member's name is unique within its group (checked at validation);
-- container names stay unique among the tenant's other containers.
DROP INDEX containers_tenant_name;
CREATE UNIQUE INDEX containers_tenant_name ON containers (tenant_id, name)
    WHERE deleted_at IS NULL AND group_id IS NULL;
