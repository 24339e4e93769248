-- The reconciler claims the oldest marks first, ties broken by device (`ORDER BY marked_at, device_id`). With an
-- index on marked_at alone every claim sorted all the marks of one moment to take its batch: an assignment marks
-- 50,000 devices at once, so each of its 25 passes sorted 50,000 rows. With both columns the claim reads its
-- batch in index order.
DROP INDEX reconcile_dirty_marked;
CREATE INDEX reconcile_dirty_marked ON reconcile_dirty (marked_at, device_id);
