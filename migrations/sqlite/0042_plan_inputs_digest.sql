-- A digest of what a device's last DeviceInformation answer said that the reconciler's plans read (its
-- tenant, OS version, serial number and whether it is a Shared iPad). A report that changes other facts and
-- moves the device in no group leaves every plan as it was, so it does not mark the device for the
-- reconciler. NULL: the next report's changes mark it.
ALTER TABLE devices ADD COLUMN plan_inputs_digest TEXT;
