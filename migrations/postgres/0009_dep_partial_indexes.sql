-- Orchard's assignment columns of dep_devices are NULL for most rows while a sync inserts them by the tens of
-- thousands: index only the rows that have a value, so a sync does not maintain three indexes full of NULLs
-- (measured in the DEP sync benchmark, docs/benchmarks.md). Every query on these columns compares them to a
-- value, which implies the partial index's condition.
DROP INDEX dep_devices_tenant_idx;
DROP INDEX dep_devices_template_idx;
DROP INDEX dep_devices_assign_due_idx;
CREATE INDEX dep_devices_tenant_idx ON dep_devices (tenant_id, serial_number) WHERE tenant_id IS NOT NULL;
CREATE INDEX dep_devices_template_idx ON dep_devices (template_id) WHERE template_id IS NOT NULL;
CREATE INDEX dep_devices_assign_due_idx ON dep_devices (token_id, assign_status, assign_retry_at)
    WHERE assign_status IN ('pending', 'throttled');
