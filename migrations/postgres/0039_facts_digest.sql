-- A digest of what a device's last DeviceInformation answer said that smart groups and the reconciler read
-- (its tenant and every reported fact but the moment-to-moment ones: battery, free space, ...). A report
-- whose digest equals the stored one changes no group and no plan, so it skips both. NULL means "evaluate
-- the next report in full" (a tenant whose smart groups read facts that change without a report, or a
-- smart group just defined).
ALTER TABLE devices ADD COLUMN facts_digest TEXT;
