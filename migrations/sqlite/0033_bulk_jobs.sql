-- Bulk actions started from the web UI (issue 14, point 7): one row per action on many iPads, and the commands it
-- queued, so its progress (how many iPads answered, failed, still wait) is read from the queue itself and survives a
-- reload, a restart and another node. The job row, its commands and these links commit in one transaction.
--
-- tenant_id: the department of the person who started it (NULL for central IT), which decides who sees it.
-- action: the UI's name of the action (lock, restart …); request_types: the command types queued, comma-separated.
CREATE TABLE bulk_jobs (
    id             TEXT    NOT NULL PRIMARY KEY,
    tenant_id      TEXT    REFERENCES tenants (id),
    action         TEXT    NOT NULL,
    request_types  TEXT    NOT NULL,
    devices        BIGINT  NOT NULL,
    skipped        BIGINT  NOT NULL,
    commands       BIGINT  NOT NULL,
    created_by     TEXT    NOT NULL,
    created_by_name TEXT,
    created_at     BIGINT  NOT NULL
);
CREATE INDEX bulk_jobs_tenant_created_idx ON bulk_jobs (tenant_id, created_at);
CREATE INDEX bulk_jobs_created_idx ON bulk_jobs (created_at);

CREATE TABLE bulk_job_commands (
    job_id       TEXT    NOT NULL REFERENCES bulk_jobs (id) ON DELETE CASCADE,
    command_uuid TEXT    NOT NULL,
    PRIMARY KEY (job_id, command_uuid)
);
