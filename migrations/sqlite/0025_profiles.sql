-- The profile library: configuration profiles of a tenant (tenant_id set) or global ones operators offer to
-- every tenant (tenant_id NULL). A profile keeps its PayloadIdentifier for life; every change is a new,
-- immutable version with its own PayloadUUID. An assignment (later) points at (profile_id, version).
CREATE TABLE profiles (
    id             TEXT    NOT NULL PRIMARY KEY,
    tenant_id      TEXT    REFERENCES tenants (id),
    -- 'global' or the tenant id: identifiers are unique per owner among live profiles.
    owner_key      TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    identifier     TEXT    NOT NULL,
    latest_version INTEGER NOT NULL,
    created_at     BIGINT  NOT NULL,
    created_by     TEXT,
    updated_at     BIGINT  NOT NULL,
    archived_at    BIGINT
);
CREATE UNIQUE INDEX profiles_live_identifier ON profiles (owner_key, identifier) WHERE archived_at IS NULL;
CREATE INDEX profiles_tenant ON profiles (tenant_id);

-- One version of a profile. `plist_sealed` is the whole profile plist (secrets included) sealed under the data
-- key, bound to (profile, version); `redacted_json` is what people see, every secret replaced by "<sealed>".
CREATE TABLE profile_versions (
    profile_id        TEXT    NOT NULL REFERENCES profiles (id),
    version           INTEGER NOT NULL,
    payload_uuid      TEXT    NOT NULL,
    display_name      TEXT,
    payload_types     TEXT    NOT NULL,
    plist_sealed      BLOB    NOT NULL,
    redacted_json     TEXT    NOT NULL,
    sealed_secrets    INTEGER NOT NULL,
    shared_ipad       INTEGER NOT NULL CHECK (shared_ipad IN (0, 1)),
    user_channel      INTEGER NOT NULL CHECK (user_channel IN (0, 1)),
    source            TEXT    NOT NULL CHECK (source IN ('upload', 'signed_upload', 'json')),
    signer_subject    TEXT,
    signer_issuer     TEXT,
    signer_not_after  BIGINT,
    created_at        BIGINT  NOT NULL,
    created_by        TEXT,
    PRIMARY KEY (profile_id, version)
);
CREATE INDEX profile_versions_uuid ON profile_versions (payload_uuid);

-- What Orchard knows a device has of a profile, and what it has asked for: the one table the reconciler reads.
-- `installed_payload_uuid` is set while the device has the profile (acknowledged InstallProfile or seen in
-- ProfileList), `installed_version` when that uuid is one of our versions. `pending_*` is the InstallProfile or
-- RemoveProfile queued and not yet answered.
CREATE TABLE device_profiles (
    device_id              TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    profile_id             TEXT    NOT NULL REFERENCES profiles (id),
    installed_version      INTEGER,
    installed_payload_uuid TEXT,
    installed_at           BIGINT,
    pending_action         TEXT    CHECK (pending_action IN ('install', 'remove')),
    pending_version        INTEGER,
    pending_command        TEXT,
    last_error             TEXT,
    updated_at             BIGINT  NOT NULL,
    PRIMARY KEY (device_id, profile_id)
);
CREATE INDEX device_profiles_profile ON device_profiles (profile_id);
CREATE INDEX device_profiles_pending ON device_profiles (pending_command);
