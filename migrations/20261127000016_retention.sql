-- Retention (issue 10): a container deleted long ago (and removed from its
-- host) is purged with its events, its closed meter runs and its usage
-- total; the tenant event log keeps a window. The usage ledger
-- (usage_records) is never purged: it is the bill.
CREATE INDEX containers_deleted ON containers (deleted_at) WHERE deleted_at IS NOT NULL;
CREATE INDEX tenant_events_at ON tenant_events (at);
