-- Issue 13: volumes (empty_dir, secret) and where a container mounts them.
-- Secret file contents are never here: they are sealed with secure_env in
-- secure_env_sealed (see api/src/secrets.rs `Secrets`); these columns hold
-- sizes, media and file paths only.
ALTER TABLE containers
    ADD COLUMN volumes jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN mounts jsonb NOT NULL DEFAULT '[]';
