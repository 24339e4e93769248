-- Orchard initial schema (SQLite). Same meaning as migrations/postgres/0001_initial.sql.
-- Portable types (STACK.md pitfall 7): ids TEXT, times BIGINT unix seconds, booleans INTEGER 0/1,
-- bytes BLOB, JSON as TEXT. Only the command sequence differs between the dialects.

CREATE TABLE tenants (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    code       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE UNIQUE INDEX tenants_code_key ON tenants (code);

CREATE TABLE api_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL CHECK (role IN ('operator', 'helpdesk', 'admin', 'viewer')),
    tenant_id  TEXT    REFERENCES tenants (id),
    token_hash TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX api_tokens_token_hash_key ON api_tokens (token_hash);
CREATE INDEX api_tokens_tenant_id_idx ON api_tokens (tenant_id);

CREATE TABLE enrollment_links (
    id          TEXT    NOT NULL PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
    name        TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL,
    max_uses    BIGINT,
    uses        BIGINT  NOT NULL DEFAULT 0,
    expires_at  BIGINT,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT
);
CREATE UNIQUE INDEX enrollment_links_secret_hash_key ON enrollment_links (secret_hash);
CREATE INDEX enrollment_links_tenant_id_idx ON enrollment_links (tenant_id);

CREATE TABLE scep_challenges (
    challenge_hash TEXT    NOT NULL PRIMARY KEY,
    link_id        TEXT    NOT NULL REFERENCES enrollment_links (id),
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id),
    created_at     BIGINT  NOT NULL,
    expires_at     BIGINT  NOT NULL,
    used_at        BIGINT
);
CREATE INDEX scep_challenges_expires_at_idx ON scep_challenges (expires_at);

CREATE TABLE issued_certificates (
    fingerprint TEXT    NOT NULL PRIMARY KEY,
    serial_hex  TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
    link_id     TEXT    REFERENCES enrollment_links (id),
    issued_at   BIGINT  NOT NULL,
    not_after   BIGINT  NOT NULL
);
CREATE INDEX issued_certificates_tenant_id_idx ON issued_certificates (tenant_id);

CREATE TABLE devices (
    id               TEXT    NOT NULL PRIMARY KEY,
    udid             TEXT    NOT NULL,
    tenant_id        TEXT    NOT NULL REFERENCES tenants (id),
    serial_number    TEXT,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'enrolled', 'unenrolled')),
    topic            TEXT,
    cert_fingerprint TEXT,
    device_name      TEXT,
    model            TEXT,
    model_name       TEXT,
    product_name     TEXT,
    os_version       TEXT,
    build_version    TEXT,
    is_supervised    INTEGER CHECK (is_supervised IN (0, 1)),
    enrolled_at      BIGINT,
    last_seen_at     BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
CREATE UNIQUE INDEX devices_udid_key ON devices (udid);
CREATE INDEX devices_tenant_enrolled_idx ON devices (tenant_id, enrolled_at, id);
CREATE INDEX devices_enrolled_idx ON devices (enrolled_at, id);
CREATE INDEX devices_serial_number_idx ON devices (serial_number);
CREATE INDEX devices_cert_fingerprint_idx ON devices (cert_fingerprint);

-- One row per command channel (device channel = UDID, Shared iPad user channel = UDID:UserShortName).
-- A row exists only after a TokenUpdate on that channel; Authenticate and CheckOut delete them.
CREATE TABLE channels (
    id                     TEXT    NOT NULL PRIMARY KEY,
    device_id              TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_short_name        TEXT,
    user_id                TEXT,
    push_token             BLOB,
    push_magic             TEXT,
    unlock_token           BLOB,
    awaiting_configuration INTEGER NOT NULL DEFAULT 0 CHECK (awaiting_configuration IN (0, 1)),
    token_updated_at       BIGINT,
    -- TokenUpdates received since the channel last had no push token (1 = the first one).
    token_update_count     BIGINT  NOT NULL DEFAULT 0,
    created_at             BIGINT  NOT NULL
);
CREATE INDEX channels_device_id_idx ON channels (device_id);

CREATE TABLE inventory_sections (
    device_id  TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    section    TEXT    NOT NULL,
    json       TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (device_id, section)
);

-- Per-channel FIFO: seq only ever grows (AUTOINCREMENT never reuses a value), so ORDER BY seq is queue order.
-- channel_id is not a foreign key: commands outlive the channel rows that Authenticate/CheckOut delete.
CREATE TABLE commands (
    seq          INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    command_uuid TEXT    NOT NULL,
    device_id    TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id),
    channel_id   TEXT    NOT NULL,
    request_type TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('queued', 'sent', 'acknowledged', 'error',
                                                    'command_format_error', 'not_now', 'expired')),
    payload      BLOB    NOT NULL,
    result       BLOB,
    error_chain  TEXT,
    queued_by    TEXT,
    queued_at    BIGINT  NOT NULL,
    sent_at      BIGINT,
    completed_at BIGINT,
    expires_at   BIGINT,
    attempts     BIGINT  NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX commands_command_uuid_key ON commands (command_uuid);
CREATE INDEX commands_channel_status_seq_idx ON commands (channel_id, status, seq);
CREATE INDEX commands_device_seq_idx ON commands (device_id, seq);
CREATE INDEX commands_tenant_status_idx ON commands (tenant_id, status);
