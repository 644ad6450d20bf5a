-- meter_reports de-duplicates worker reports; once a report is in the
-- ledger its run's own state (billed seconds so far, closed or not) makes a
-- late repeat a no-op, so old report ids are pruned by age (issue 10).
CREATE INDEX meter_reports_received ON meter_reports (received_at);
