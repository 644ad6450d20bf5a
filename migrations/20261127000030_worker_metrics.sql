-- Issue 14: where each worker serves Prometheus metrics, as it registered
-- (NULL: it serves none), for GET /v1/hosts and the operator's scraping.
ALTER TABLE hosts ADD COLUMN metrics_url text;
