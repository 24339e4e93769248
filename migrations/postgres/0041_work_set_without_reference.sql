-- The reconciler's work set no longer references devices. An assignment marks every device of its tenant in its
-- own transaction, and each mark's foreign-key check is a query that also locks the device's row: at 55,000
-- devices the checks cost PostgreSQL more than the marks themselves (930 ms against 271 ms for 50,000 rows,
-- measured in psql). Every mark is written from a device row (or a device id read from one); devices are never
-- deleted; and a claimed mark whose device is gone is dropped, since the claim reads its devices by id.
ALTER TABLE reconcile_dirty DROP CONSTRAINT reconcile_dirty_device_id_fkey;
