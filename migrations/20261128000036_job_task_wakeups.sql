-- A job's task is inserted by the scheduler's own pass (jobs::drive), which
-- places it in the same pass. Its insert woke every scheduler again for a
-- pass with nothing left to do: one extra pass per task of every job.
-- Everything else that wakes the scheduler still does.
CREATE OR REPLACE FUNCTION skiff_note_container_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('skiff_container', NEW.id::text);
    IF (NEW.state = 'pending' AND NOT (TG_OP = 'INSERT' AND NEW.job_id IS NOT NULL))
       OR (TG_OP = 'UPDATE' AND NEW.state IN ('succeeded', 'failed', 'stopped')
           AND OLD.state IS DISTINCT FROM NEW.state)
       OR (TG_OP = 'UPDATE' AND NEW.removed_at IS NOT NULL AND OLD.removed_at IS NULL) THEN
        PERFORM pg_notify('skiff_scheduler', '');
    END IF;
    RETURN NULL;
END $$;
