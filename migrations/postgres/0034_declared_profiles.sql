-- Profiles delivered through declarative management (`configuration.legacy`) instead of InstallProfile:
-- an assignment says how its profile travels ('command' or 'declaration'); the reconciler records, per device,
-- the version its declaration set names (declared_version) and moves the device's revision on every change, so
-- a node's cached set for the device is stale exactly when it changed.
ALTER TABLE assignments ADD COLUMN delivery TEXT NOT NULL DEFAULT 'command' CHECK (delivery IN ('command', 'declaration'));
ALTER TABLE device_profiles ADD COLUMN declared_version BIGINT;
ALTER TABLE devices ADD COLUMN declared_profiles_revision BIGINT NOT NULL DEFAULT 0;
