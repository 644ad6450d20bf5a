-- Running usage totals (issue 10): a container's (and a job's) usage is
-- read from one row kept up to date by a trigger on the ledger, not summed
-- from all of its records on every read. The ledger stays the truth
-- (reports and verification read the records); these rows are a cache of
-- sums, backfilled here.
--
-- Costs are kept as their exact numerators (seconds x size x nano-price),
-- summed as numeric, as the per-record sums were.

CREATE TABLE container_usage_totals (
    container_id        uuid PRIMARY KEY,
    seconds             bigint NOT NULL,
    milli_vcpu_seconds  bigint NOT NULL,
    mib_seconds         bigint NOT NULL,
    cpu_cost            numeric NOT NULL,
    memory_cost         numeric NOT NULL
);

CREATE TABLE job_usage_totals (
    job_id              uuid PRIMARY KEY,
    seconds             bigint NOT NULL,
    milli_vcpu_seconds  bigint NOT NULL,
    mib_seconds         bigint NOT NULL,
    cpu_cost            numeric NOT NULL,
    memory_cost         numeric NOT NULL
);

CREATE FUNCTION usage_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    job uuid;
BEGIN
    INSERT INTO container_usage_totals AS t VALUES (
        NEW.container_id, NEW.seconds, NEW.seconds::bigint * NEW.cpu_millis,
        NEW.seconds::bigint * NEW.memory_mib,
        NEW.seconds::numeric * NEW.cpu_millis * NEW.nano_per_vcpu_second,
        NEW.seconds::numeric * NEW.memory_mib * NEW.nano_per_gib_second)
    ON CONFLICT (container_id) DO UPDATE SET
        seconds = t.seconds + EXCLUDED.seconds,
        milli_vcpu_seconds = t.milli_vcpu_seconds + EXCLUDED.milli_vcpu_seconds,
        mib_seconds = t.mib_seconds + EXCLUDED.mib_seconds,
        cpu_cost = t.cpu_cost + EXCLUDED.cpu_cost,
        memory_cost = t.memory_cost + EXCLUDED.memory_cost;
    SELECT c.job_id INTO job FROM containers c WHERE c.id = NEW.container_id;
    IF job IS NOT NULL THEN
        INSERT INTO job_usage_totals AS t VALUES (
            job, NEW.seconds, NEW.seconds::bigint * NEW.cpu_millis,
            NEW.seconds::bigint * NEW.memory_mib,
            NEW.seconds::numeric * NEW.cpu_millis * NEW.nano_per_vcpu_second,
            NEW.seconds::numeric * NEW.memory_mib * NEW.nano_per_gib_second)
        ON CONFLICT (job_id) DO UPDATE SET
            seconds = t.seconds + EXCLUDED.seconds,
            milli_vcpu_seconds = t.milli_vcpu_seconds + EXCLUDED.milli_vcpu_seconds,
            mib_seconds = t.mib_seconds + EXCLUDED.mib_seconds,
            cpu_cost = t.cpu_cost + EXCLUDED.cpu_cost,
            memory_cost = t.memory_cost + EXCLUDED.memory_cost;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_records_totals
    AFTER INSERT ON usage_records
    FOR EACH ROW EXECUTE FUNCTION usage_totals_add();

INSERT INTO container_usage_totals
SELECT container_id, sum(seconds), sum(seconds::bigint * cpu_millis), sum(seconds::bigint * memory_mib),
       sum(seconds::numeric * cpu_millis * nano_per_vcpu_second),
       sum(seconds::numeric * memory_mib * nano_per_gib_second)
  FROM usage_records GROUP BY container_id;

INSERT INTO job_usage_totals
SELECT c.job_id, sum(r.seconds), sum(r.seconds::bigint * r.cpu_millis), sum(r.seconds::bigint * r.memory_mib),
       sum(r.seconds::numeric * r.cpu_millis * r.nano_per_vcpu_second),
       sum(r.seconds::numeric * r.memory_mib * r.nano_per_gib_second)
  FROM usage_records r JOIN containers c ON c.id = r.container_id
 WHERE c.job_id IS NOT NULL GROUP BY c.job_id;
