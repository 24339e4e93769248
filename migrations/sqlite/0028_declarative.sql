-- Declarative device management per enrollment channel (the device channel, or a Shared iPad user channel):
-- the DeclarationsToken Orchard last announced with its time, the DeclarativeManagement command waiting for an
-- answer (never a second one while it waits), and the status the device reported (incremental reports merged
-- into `status_json`, a FullReport replacing it).
CREATE TABLE ddm_channels (
    channel             TEXT    NOT NULL PRIMARY KEY,
    device_id           TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    declarations_token  TEXT,
    token_changed_at    BIGINT,
    sync_command        TEXT,
    status_json         TEXT,
    errors_json         TEXT,
    status_at           BIGINT,
    full_report_at      BIGINT,
    updated_at          BIGINT  NOT NULL
);
CREATE INDEX ddm_channels_device ON ddm_channels (device_id);
