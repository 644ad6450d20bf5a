-- Containers that serve (issue 12): a private network per container, a
-- group of the tenant's containers it may reach, ports published on its
-- host; and the network hosts offer for them.

CREATE TYPE network_mode AS ENUM ('none', 'private');

ALTER TABLE containers
    -- 'private': its own network namespace on its host's bridge; 'none':
    -- loopback only (what every container had before). The API always
    -- writes it (its default is 'private'); the column's default keeps
    -- existing rows as they ran.
    ADD COLUMN network network_mode NOT NULL DEFAULT 'none',
    -- Private only: containers of the same tenant and group reach each
    -- other; NULL reaches no other container.
    ADD COLUMN network_group text
        CHECK (network_group ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    -- The ports it asks to publish: [{"port", "protocol", "host_port"}]
    -- (host_port null: any of its host's range).
    ADD COLUMN ports jsonb NOT NULL DEFAULT '[]',
    -- The host ports of its current placement: [{"port", "protocol",
    -- "host_port"}], assigned under the placement lock when it claims
    -- capacity on a host. They count as used on that host only while the
    -- container holds capacity there (the filter of the allocation: placed,
    -- not removed, not finished), so a finished container frees them
    -- without a write; '[]' while pending.
    ADD COLUMN host_ports jsonb NOT NULL DEFAULT '[]',
    -- Its address on its host's bridge, as the worker reported the running
    -- task of the current generation (NULL otherwise).
    ADD COLUMN ip text,
    ADD CONSTRAINT containers_network_fields CHECK (
        network = 'private' OR (network_group IS NULL AND ports = '[]' AND host_ports = '[]'));

-- Jobs made before keep their tasks as they were: a stored template
-- without a network ran its tasks without one.
UPDATE jobs SET template = template || '{"network": "none"}'
 WHERE jsonb_typeof(template) = 'object' AND NOT template ? 'network';

-- What a host offers private containers (RegisterRequest.network); all NULL
-- when it offers none (such containers are never placed there).
ALTER TABLE hosts
    -- The range host ports are published from, inclusive.
    ADD COLUMN port_range_start integer CHECK (port_range_start BETWEEN 1 AND 65535),
    ADD COLUMN port_range_end integer CHECK (port_range_end BETWEEN 1 AND 65535),
    -- The address published ports answer on.
    ADD COLUMN host_ip text,
    -- The bridge subnet containers get their addresses from (CIDR).
    ADD COLUMN subnet text,
    ADD CONSTRAINT hosts_network_offer CHECK (
        (port_range_start IS NULL AND port_range_end IS NULL AND host_ip IS NULL AND subnet IS NULL)
        OR (port_range_start IS NOT NULL AND port_range_end IS NOT NULL AND host_ip IS NOT NULL
            AND subnet IS NOT NULL AND port_range_start <= port_range_end));

-- A change of the host ports a container holds reaches its host's
-- assignment stream like any other change of its assignment (today they
-- change only with host_id or generation, which the trigger watched
-- already; this keeps it so if that ever changes).
DROP TRIGGER containers_assignment_changed ON containers;
CREATE TRIGGER containers_assignment_changed
    AFTER UPDATE OF host_id, desired, generation, removed_at, stop_timeout_s, host_ports ON containers
    FOR EACH ROW
    WHEN (OLD.host_id IS DISTINCT FROM NEW.host_id
       OR OLD.desired IS DISTINCT FROM NEW.desired
       OR OLD.generation IS DISTINCT FROM NEW.generation
       OR OLD.removed_at IS DISTINCT FROM NEW.removed_at
       OR OLD.stop_timeout_s IS DISTINCT FROM NEW.stop_timeout_s
       OR OLD.host_ports IS DISTINCT FROM NEW.host_ports)
    EXECUTE FUNCTION skiff_note_assignment_change();
