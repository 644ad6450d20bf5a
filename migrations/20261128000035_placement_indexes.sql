-- Placement reads every host's allocation and used host ports on each
-- round. Both scanned every container still on a host (containers_host),
-- finished ones included: a host keeps a finished container (its logs,
-- a later start) until it is deleted, so a round's cost grew with every
-- finished task of every job. These cover only what holds capacity
-- (holds_capacity! in api/src/store/mod.rs) and what holds a host port.
CREATE INDEX containers_holding ON containers (host_id) INCLUDE (cpu_millis, memory_mib, state)
    WHERE host_id IS NOT NULL AND removed_at IS NULL
      AND state NOT IN ('succeeded', 'failed', 'stopped');
CREATE INDEX containers_host_ports ON containers (host_id)
    WHERE host_ports <> '[]' AND host_id IS NOT NULL AND removed_at IS NULL;
