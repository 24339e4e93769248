-- Planned-maintenance notices central IT publishes to every department: a time window and a text in Swedish
-- and English. Shown on every department's dashboard and through the API from publication until the window
-- ends; withdrawn notices are kept (withdrawn_at set) so the audit log's references stay meaningful.
CREATE TABLE maintenance_notices (
    id           TEXT   NOT NULL PRIMARY KEY,
    starts_at    BIGINT NOT NULL,
    ends_at      BIGINT NOT NULL,
    text_sv      TEXT   NOT NULL,
    text_en      TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT,
    withdrawn_at BIGINT
);
CREATE INDEX maintenance_notices_current ON maintenance_notices (ends_at) WHERE withdrawn_at IS NULL;
