-- The reconciler's work set: devices whose desired and known state must be compared again, marked in the
-- same transaction as the change that made them dirty (assignment, membership, profile version, report).
CREATE TABLE reconcile_dirty (
    device_id TEXT   NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    marked_at BIGINT NOT NULL
);
CREATE INDEX reconcile_dirty_marked ON reconcile_dirty (marked_at);

-- Retries of failed profile commands: attempts so far and when the next may be queued. `reconciled` = 1 once
-- the reconciler queued an install of this profile on the device: only those does it ever remove (never a
-- profile installed by hand, the enrollment profile, or profiles Orchard does not know).
ALTER TABLE device_profiles ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE device_profiles ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE device_profiles ADD COLUMN reconciled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX device_profiles_retry ON device_profiles (next_attempt_at);
