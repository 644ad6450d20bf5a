-- Issue 13: credentials for private image registries.
--
-- A tenant's stored credentials, one per registry server (host[:port], lower
-- case). The password is sealed like secure_env (api/src/secrets.rs): the id
-- of the key beside nonce+ciphertext, bound to `registry_credentials/<id>`.
CREATE TABLE registry_credentials (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    server          text NOT NULL,
    username        text NOT NULL,
    password_kid    text NOT NULL,
    password_sealed bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT registry_credentials_tenant_server UNIQUE (tenant_id, server)
);
CREATE INDEX registry_credentials_password_kid ON registry_credentials (password_kid);

-- The credential a container's own request gave for its image's registry
-- (it overrides the tenant's stored one for that server). Sealed, bound to
-- `containers/<id>/registry_credential`; erased with the container's other
-- secrets when its host has removed it after a delete.
CREATE TABLE container_registry_credentials (
    id              uuid PRIMARY KEY REFERENCES containers (id) ON DELETE CASCADE,
    server          text NOT NULL,
    username        text NOT NULL,
    password_kid    text NOT NULL,
    password_sealed bytea NOT NULL
);
CREATE INDEX container_registry_credentials_password_kid
    ON container_registry_credentials (password_kid);

-- A container's own credential goes with its other secrets once its host
-- has removed it (removed_at set): nothing will pull for it again.
CREATE FUNCTION erase_container_registry_credential() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM container_registry_credentials WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER containers_erase_registry_credential
    AFTER UPDATE OF removed_at ON containers
    FOR EACH ROW WHEN (NEW.removed_at IS NOT NULL AND OLD.removed_at IS NULL)
    EXECUTE FUNCTION erase_container_registry_credential();
