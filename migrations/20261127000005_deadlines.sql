-- Deadlines (issue 9): a run that exceeds its container's timeout_s is
-- stopped by the control plane and ends failed with DeadlineExceeded.
-- (BudgetExceeded is added with it, for max_cost.)

ALTER TYPE container_reason ADD VALUE 'DeadlineExceeded';
ALTER TYPE container_reason ADD VALUE 'BudgetExceeded';

ALTER TABLE containers ADD COLUMN timeout_s integer CHECK (timeout_s > 0);
-- The scheduler looks for running containers past their deadline.
CREATE INDEX containers_deadline ON containers (started_at)
    WHERE timeout_s IS NOT NULL AND desired = 'running' AND state = 'running';

-- Budgets: a container whose metered cost (micro-units, as usage reports
-- show `cost`) reaches max_cost is stopped with BudgetExceeded.
ALTER TABLE containers ADD COLUMN max_cost bigint CHECK (max_cost > 0);
