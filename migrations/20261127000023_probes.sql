-- Issue 13: liveness and readiness probes. A run its liveness probe ended
-- has its own reason; `ready` is the current run's readiness as its host
-- last reported it (false from every start until the probe passes).
ALTER TYPE container_reason ADD VALUE IF NOT EXISTS 'LivenessProbeFailed';
ALTER TABLE containers
    ADD COLUMN liveness_probe jsonb,
    ADD COLUMN readiness_probe jsonb,
    ADD COLUMN ready boolean NOT NULL DEFAULT false;
