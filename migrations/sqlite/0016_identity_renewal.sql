-- Identity renewal and Return to Service (issue 11).
--
-- grant_purpose says what a 'device' grant is for: 'renewal' (a fresh identity for the same enrollment: the
-- binding moves, channels and queue stay) or 'return_to_service' (the erased device enrolls anew by itself:
-- a new enrollment of the same device record). NULL for link and ADE grants, and for device grants made before
-- this migration (SCEP RenewalReq: renewals).
ALTER TABLE scep_challenges ADD COLUMN grant_purpose TEXT
    CHECK (grant_purpose IN ('renewal', 'return_to_service'));
ALTER TABLE issued_certificates ADD COLUMN grant_purpose TEXT
    CHECK (grant_purpose IN ('renewal', 'return_to_service'));
-- When the device's binding moved from this identity to its renewed successor: the old identity is accepted
-- for the grace period after this, then refused.
ALTER TABLE issued_certificates ADD COLUMN renewed_at BIGINT;
CREATE INDEX issued_certificates_not_after_idx ON issued_certificates (not_after);

-- One row per device whose identity Orchard renewed or tried to: the renewal in flight (its InstallProfile
-- command), the last one that completed and the last failure, shown on the device.
CREATE TABLE identity_renewals (
    device_id         TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    state             TEXT    NOT NULL CHECK (state IN ('pending', 'renewed', 'failed')),
    command_uuid      TEXT,
    old_fingerprint   TEXT,
    requested_at      BIGINT  NOT NULL,
    renewed_at        BIGINT,
    new_fingerprint   TEXT,
    last_error        TEXT,
    failed_at         BIGINT,
    failures          BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX identity_renewals_command_idx ON identity_renewals (command_uuid);
