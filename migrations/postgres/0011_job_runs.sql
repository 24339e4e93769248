-- Background jobs (issue 9): one row per job that must run on one node at a time and at most once per
-- interval across all nodes (the usage snapshot today; the reconciler and expiry watcher next). A node claims
-- the row with a lease; a node that dies mid-run is replaced when its lease runs out. The last run's outcome
-- is kept for operators.
CREATE TABLE job_runs (
    name          TEXT    NOT NULL PRIMARY KEY,
    lease_owner   TEXT,
    lease_until   BIGINT,
    last_started_at   BIGINT,
    last_finished_at  BIGINT,
    last_error    TEXT,
    runs          BIGINT  NOT NULL DEFAULT 0
);
