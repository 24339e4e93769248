-- OS currency. The catalogue of iOS/iPadOS releases per model (product type such as iPad13,18), set by
-- operators from a JSON file or refreshed from Apple's public feed; `os_catalogue_meta` (one row) says where it
-- came from and its revision, which every declaration set that depends on it includes.
CREATE TABLE os_catalogue (
    product_type TEXT   NOT NULL,
    os_version   TEXT   NOT NULL,
    build        TEXT   NOT NULL,
    posted       TEXT,
    PRIMARY KEY (product_type, os_version)
);
CREATE TABLE os_catalogue_meta (
    id           INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    revision     INTEGER NOT NULL,
    source       TEXT    NOT NULL,
    updated_at   BIGINT  NOT NULL,
    updated_by   TEXT
);

-- One OS policy per tenant: the latest release for each device's model, or a pinned version (and optionally
-- build), installed by `deadline_local` (the iPad's local time, yyyy-mm-ddThh:mm:ss). `revision` grows with
-- every change, so a device's declaration set (and its DeclarationsToken) changes exactly with the policy.
CREATE TABLE os_policies (
    tenant_id       TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    target          TEXT    NOT NULL CHECK (target IN ('latest', 'pinned')),
    pinned_version  TEXT,
    pinned_build    TEXT,
    deadline_local  TEXT    NOT NULL,
    details_url     TEXT,
    revision        INTEGER NOT NULL,
    updated_at      BIGINT  NOT NULL,
    updated_by      TEXT
);

-- Devices older than iOS 17 are updated by commands: AvailableOSUpdates, then ScheduleOSUpdate of the offered
-- product, then OSUpdateStatus. One row per device tracks where it is for which target; `pending_command` is
-- the command waiting for an answer (never a second one for the same target while it waits).
CREATE TABLE device_os_updates (
    device_id        TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    target_version   TEXT    NOT NULL,
    stage            TEXT    NOT NULL CHECK (stage IN ('checking', 'scheduling', 'scheduled', 'downloading',
                                                       'installing', 'failed')),
    product_key      TEXT,
    pending_command  TEXT,
    last_error       TEXT,
    updated_at       BIGINT  NOT NULL
);
