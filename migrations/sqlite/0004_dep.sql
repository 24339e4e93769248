-- Automated Device Enrollment (issue 4): server tokens of ASM "MDM servers" and the devices they list.
--
-- Orchard makes the key pair whose certificate the operator uploads to ASM; the key and the decrypted server
-- token are encrypted with the data key, bound to their row. The cursor is saved after every page, so a sync
-- that stops resumes from the last stored page.
CREATE TABLE dep_tokens (
    id                   TEXT    NOT NULL PRIMARY KEY,
    name                 TEXT    NOT NULL,
    certificate_pem      TEXT    NOT NULL,
    key_encrypted        BLOB   NOT NULL,
    token_encrypted      BLOB,
    consumer_key         TEXT,
    access_token_expiry  BIGINT,
    server_name          TEXT,
    org_name             TEXT,
    cursor               TEXT,
    cursor_saved_at      BIGINT,
    last_sync_at         BIGINT,
    last_sync_error      TEXT,
    created_at           BIGINT  NOT NULL
);

-- The devices each token's MDM server lists (deleted = released from this MDM server; kept for history).
-- op_date orders updates: an older record never overwrites a newer one.
CREATE TABLE dep_devices (
    token_id              TEXT    NOT NULL REFERENCES dep_tokens (id) ON DELETE CASCADE,
    serial_number         TEXT    NOT NULL,
    model                 TEXT,
    description           TEXT,
    color                 TEXT,
    asset_tag             TEXT,
    os                    TEXT,
    device_family         TEXT,
    profile_status        TEXT,
    profile_uuid          TEXT,
    profile_assign_time   BIGINT,
    device_assigned_date  BIGINT,
    device_assigned_by    TEXT,
    op_type               TEXT,
    op_date               BIGINT,
    deleted               INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    updated_at            BIGINT  NOT NULL,
    PRIMARY KEY (token_id, serial_number)
);
CREATE INDEX dep_devices_serial_idx ON dep_devices (serial_number);
