-- A tenant's smart groups' revision: raised in the unit that creates, refilters or deletes one of its smart
-- groups. A node that keeps the tenant's smart-group filters in memory checks them against it, so it never
-- evaluates a device against filters another node has since changed.
ALTER TABLE tenants ADD COLUMN smart_groups_revision BIGINT NOT NULL DEFAULT 0;
