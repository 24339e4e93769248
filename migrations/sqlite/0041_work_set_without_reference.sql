-- The reconciler's work set no longer references devices (as on PostgreSQL, where each mark's foreign-key check
-- cost more than the mark). Every mark is written from a device row (or a device id read from one); devices are
-- never deleted; and a claimed mark whose device is gone is dropped, since the claim reads its devices by id.
-- SQLite cannot drop a constraint: the two-column table is rebuilt with its marks.
CREATE TABLE reconcile_dirty_unreferenced (
    device_id TEXT   NOT NULL PRIMARY KEY,
    marked_at BIGINT NOT NULL
);
INSERT INTO reconcile_dirty_unreferenced (device_id, marked_at) SELECT device_id, marked_at FROM reconcile_dirty;
DROP TABLE reconcile_dirty;
ALTER TABLE reconcile_dirty_unreferenced RENAME TO reconcile_dirty;
CREATE INDEX reconcile_dirty_marked ON reconcile_dirty (marked_at, device_id);
