-- Metering (issue 3): runs as the worker reports them, the per-tenant
-- hash-chained usage ledger, rate cards, and the report ids that make a
-- re-sent worker report harmless. All quantities are integers: whole
-- seconds, milli-vCPUs, MiB, and prices in nano-units per unit-second.

-- Prices. A card applies from effective_from (a whole UTC hour, never in the
-- past when added) until the next card. Usage records lie within one UTC hour
-- and stamp the card in force at their start, so a stamped price is exact.
CREATE TABLE rate_cards (
    effective_from        timestamptz PRIMARY KEY
                          CHECK (mod(extract(epoch FROM effective_from), 3600) = 0),
    -- nano-units (1e-9 of the currency) per vCPU-second / per GiB-second.
    -- The upper bound keeps every per-record product inside bigint.
    nano_per_vcpu_second  bigint NOT NULL CHECK (nano_per_vcpu_second BETWEEN 0 AND 1000000000),
    nano_per_gib_second   bigint NOT NULL CHECK (nano_per_gib_second BETWEEN 0 AND 1000000000),
    created_at            timestamptz NOT NULL DEFAULT now()
);

-- One row per run (container, generation): what billing knows about it.
-- Not a ledger: it is updated in place; usage_records is the ledger.
CREATE TABLE metering_runs (
    container_id           uuid NOT NULL REFERENCES containers (id),
    generation             bigint NOT NULL,
    tenant_id              uuid NOT NULL REFERENCES tenants (id),
    container_name         text NOT NULL,
    labels                 jsonb NOT NULL DEFAULT '{}',
    host_id                text NOT NULL,
    cpu_millis             integer NOT NULL CHECK (cpu_millis BETWEEN 1 AND 1000000),
    memory_mib             integer NOT NULL CHECK (memory_mib BETWEEN 1 AND 2097152),
    -- containerd's task start, millisecond precision.
    started_at             timestamptz NOT NULL,
    -- The latest time the worker confirmed the task running.
    last_seen_at           timestamptz NOT NULL,
    ended_at               timestamptz,
    -- Whole seconds already written to usage_records for this run.
    billed_seconds_so_far  bigint NOT NULL DEFAULT 0 CHECK (billed_seconds_so_far >= 0),
    close_reason           text,
    -- Measured by the worker from the cgroup, for reports (not billed).
    cpu_usage_ns           bigint,
    peak_memory_bytes      bigint,
    PRIMARY KEY (container_id, generation)
);

CREATE INDEX metering_runs_open_by_host ON metering_runs (host_id) WHERE ended_at IS NULL;

-- Worker report ids already applied. A checkpoint or close whose id is here
-- changes nothing: the unique key, not memory, makes re-delivery harmless.
CREATE TABLE meter_reports (
    report_id    text PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- The ledger. Append-only; corrections are 'adjustment' records. Each record
-- lies within one UTC hour (start_at and end_at whole seconds), so reports by
-- hour or day are plain GROUP BYs and a window boundary splits records
-- exactly. Each tenant's records form a hash chain in seq order:
-- hash = sha256(canonical encoding of every field, prev_hash included),
-- see billing/src/chain.rs.
--
-- Deliberately no CHECK ties seconds to the interval and no trigger forbids
-- UPDATE: tampering must stay possible for verify_chain to be testable, and
-- it is the chain, not a constraint, that proves the rows unaltered.
CREATE TABLE usage_records (
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    seq                   bigint NOT NULL CHECK (seq >= 1),
    record_id             text NOT NULL UNIQUE,
    kind                  text NOT NULL CHECK (kind IN ('usage', 'adjustment')),
    container_id          uuid NOT NULL,
    generation            bigint NOT NULL,
    container_name        text NOT NULL,
    labels                jsonb NOT NULL DEFAULT '{}',
    start_at              timestamptz NOT NULL,
    end_at                timestamptz NOT NULL,
    -- end_at - start_at for usage; may be negative for an adjustment.
    seconds               integer NOT NULL,
    cpu_millis            integer NOT NULL CHECK (cpu_millis BETWEEN 1 AND 1000000),
    memory_mib            integer NOT NULL CHECK (memory_mib BETWEEN 1 AND 2097152),
    nano_per_vcpu_second  bigint NOT NULL CHECK (nano_per_vcpu_second BETWEEN 0 AND 1000000000),
    nano_per_gib_second   bigint NOT NULL CHECK (nano_per_gib_second BETWEEN 0 AND 1000000000),
    note                  text,
    prev_hash             bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash                  bytea NOT NULL CHECK (octet_length(hash) = 32),
    recorded_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    CHECK (end_at > start_at),
    CHECK (mod(extract(epoch FROM start_at), 1) = 0 AND mod(extract(epoch FROM end_at), 1) = 0),
    -- Within one UTC hour: [start_at, end_at) never crosses an hour boundary.
    CHECK (floor(extract(epoch FROM start_at) / 3600) = floor((extract(epoch FROM end_at) - 1) / 3600))
);

-- Reports: a tenant's records overlapping a window. Covering, so a monthly
-- report is an index-only scan (records lie within one hour, so the window
-- [from, to) needs start_at in [from - 1 h, to)).
CREATE INDEX usage_records_window ON usage_records (tenant_id, start_at)
    INCLUDE (end_at, seconds, cpu_millis, memory_mib, nano_per_vcpu_second, nano_per_gib_second, container_id);
-- Admin reports across tenants.
CREATE INDEX usage_records_start ON usage_records (start_at);
-- The container object's `usage` (totals so far).
CREATE INDEX usage_records_container ON usage_records (container_id)
    INCLUDE (seconds, cpu_millis, memory_mib, nano_per_vcpu_second, nano_per_gib_second);

-- Hourly rollup of usage_records, maintained in the same statement as each
-- record insert (billing/src/ledger.rs), so it is always consistent with the
-- ledger it summarises. Reports read whole hours from here and only the
-- partial hours at a window's edges from usage_records: a month is a few
-- thousand rollup rows instead of a million records. Derived data: the
-- ledger stays the source of truth (skiff_billing::report_from_records
-- recomputes any report from the records alone).
CREATE TABLE usage_hourly (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    hour_start          timestamptz NOT NULL
                        CHECK (mod(extract(epoch FROM hour_start), 3600) = 0),
    container_id        uuid NOT NULL,
    labels              jsonb NOT NULL,
    container_name      text NOT NULL,
    records             bigint NOT NULL,
    seconds             bigint NOT NULL,
    milli_vcpu_seconds  bigint NOT NULL,
    mib_seconds         bigint NOT NULL,
    -- sum(seconds * cpu_millis * nano_per_vcpu_second) and
    -- sum(seconds * memory_mib * nano_per_gib_second): exact cost parts.
    cpu_cost            numeric NOT NULL,
    mem_cost            numeric NOT NULL,
    PRIMARY KEY (tenant_id, hour_start, container_id, labels)
);

-- Admin reports across tenants.
CREATE INDEX usage_hourly_start ON usage_hourly (hour_start);

-- Per-tenant chain head. Appends lock it FOR UPDATE, which serialises a
-- tenant's appends and lets verify_chain notice removed trailing records.
CREATE TABLE usage_chain_heads (
    tenant_id      uuid PRIMARY KEY REFERENCES tenants (id),
    last_seq       bigint NOT NULL DEFAULT 0,
    last_hash      bytea NOT NULL CHECK (octet_length(last_hash) = 32),
    -- Sum of `seconds` over the tenant's usage records (not adjustments):
    -- a cheap source for the metered-seconds Prometheus counter.
    usage_seconds  bigint NOT NULL DEFAULT 0
);
