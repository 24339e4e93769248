-- Pushes that survive a crash (issue 11, point 3).
--
-- A dispatcher claims a channel's owed push with a lease instead of marking it done: push_done moves only after
-- APNs answered. If the node dies between claim and answer, the lease runs out and any node claims the push
-- again. push_lease_until also holds "not before" after APNs asked us to wait (429/503 with Retry-After).
ALTER TABLE channels ADD COLUMN push_claimed_by TEXT;
ALTER TABLE channels ADD COLUMN push_lease_until BIGINT;

-- APNs refused this push certificate (403 BadCertificate …): every node stops pushing with it. A newly
-- uploaded certificate is a new row, so an upload clears the state.
ALTER TABLE push_certificates ADD COLUMN refused_at BIGINT;
ALTER TABLE push_certificates ADD COLUMN refused_reason TEXT;
