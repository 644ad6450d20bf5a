-- Lost hosts are forgotten after a retention period (issue 10): their row
-- goes, and the containers that last ran there (all finished: a host is
-- forgotten only when nothing live is on it) keep their history but lose
-- the host reference. Revoked hosts are kept (their revocation must stand
-- if the host comes back); identities and certificates are kept as before.
ALTER TABLE containers DROP CONSTRAINT containers_host_id_fkey;
ALTER TABLE containers ADD CONSTRAINT containers_host_id_fkey
    FOREIGN KEY (host_id) REFERENCES hosts (id) ON DELETE SET NULL;
CREATE INDEX hosts_lost ON hosts (lost_at) WHERE lost_at IS NOT NULL;
