-- Device Assignment protocol version 8 (issue 11): what Apple now says about a device. profile_push_time: when
-- the device last fetched its ADE profile; mdm_migration_deadline: when ASM will move the device to another
-- MDM server without an erase (it is about to leave us); response_status: Apple's per-record status.
ALTER TABLE dep_devices ADD COLUMN profile_push_time BIGINT;
ALTER TABLE dep_devices ADD COLUMN mdm_migration_deadline BIGINT;
ALTER TABLE dep_devices ADD COLUMN response_status TEXT;
