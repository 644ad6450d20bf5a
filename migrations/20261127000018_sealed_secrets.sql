-- Secrets at rest: a container's `secure_env` (and a job template's) is
-- kept sealed with AES-256-GCM under the operator's keyring (api/src/secrets.rs):
-- the id of the key beside the nonce+ciphertext. The keys alone stay in
-- plain text, for the container view.
ALTER TABLE containers
    ADD COLUMN secure_env_keys   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN secure_env_kid    text,
    ADD COLUMN secure_env_sealed bytea,
    ADD CONSTRAINT containers_secure_env_sealed_with_kid
        CHECK ((secure_env_kid IS NULL) = (secure_env_sealed IS NULL));
UPDATE containers
   SET secure_env_keys = ARRAY(SELECT jsonb_object_keys(secure_env) ORDER BY 1)
 WHERE secure_env <> '{}';
-- What `skiff-api secrets reencrypt` and the start-up check look for.
CREATE INDEX containers_secure_env_kid ON containers (secure_env_kid)
    WHERE secure_env_kid IS NOT NULL;

ALTER TABLE jobs
    ADD COLUMN secure_env_kid    text,
    ADD COLUMN secure_env_sealed bytea,
    ADD CONSTRAINT jobs_secure_env_sealed_with_kid
        CHECK ((secure_env_kid IS NULL) = (secure_env_sealed IS NULL));
CREATE INDEX jobs_secure_env_kid ON jobs (secure_env_kid)
    WHERE secure_env_kid IS NOT NULL;

-- Rows written before this migration still hold plain text in
-- containers.secure_env and jobs.template->'secure_env': every API replica
-- seals those at start (it holds the key, this migration does not) and
-- empties the plain-text copy. From then on `containers.secure_env` stays '{}'.
CREATE INDEX containers_legacy_secure_env ON containers (id) WHERE secure_env <> '{}';
CREATE INDEX jobs_legacy_secure_env ON jobs (id) WHERE template ? 'secure_env';
