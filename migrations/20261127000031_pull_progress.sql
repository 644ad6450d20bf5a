-- Issue 14: how far the current run's image pull is, as its host last
-- reported (shown as `pull` while the container is `pulling`).
ALTER TABLE containers
    ADD COLUMN pull_bytes_done bigint,
    ADD COLUMN pull_bytes_total bigint;
