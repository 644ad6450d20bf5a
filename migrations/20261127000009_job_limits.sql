-- A job's own budget and completion webhook (issue 9).
--
-- max_cost bounds the cost of all of a job's task containers together
-- (micro-units, as usage reports show `cost`); past it the job fails with
-- BudgetExceeded and its running tasks are stopped.
ALTER TABLE jobs ADD COLUMN max_cost bigint CHECK (max_cost > 0);

-- notify_url: one delivery when the job reaches a terminal state, through
-- the same delivery queue as containers' (a delivery is about a container
-- run or about a job, never both).
ALTER TABLE jobs ADD COLUMN notify_url text;
ALTER TABLE webhook_deliveries
    ALTER COLUMN container_id DROP NOT NULL,
    ALTER COLUMN generation DROP NOT NULL,
    ADD COLUMN job_id uuid REFERENCES jobs (id) ON DELETE CASCADE,
    ADD CONSTRAINT webhook_deliveries_one_subject
        CHECK ((container_id IS NULL) <> (job_id IS NULL)),
    ADD CONSTRAINT webhook_deliveries_job_once UNIQUE (job_id);

CREATE FUNCTION webhook_on_job_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (tenant_id, job_id, url)
    VALUES (NEW.tenant_id, NEW.id, NEW.notify_url)
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_terminal_webhook
    AFTER UPDATE OF state ON jobs
    FOR EACH ROW
    WHEN (NEW.notify_url IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
          AND NEW.state IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION webhook_on_job_terminal();
