-- App installs through Apps and Books device licences (issue 13, point 4).
--
-- What an assignment of kind 'app' (object_id = the adamId of an app in the tenant's location) does on the devices
-- it reaches: 'required' installs it, 'removed' removes it (and frees the licence). configuration_plist is the
-- managed app configuration (an XML plist dictionary, validated by core); remove_on_unmanage sends
-- ManagementFlags 1 so the app goes with the MDM profile.
CREATE TABLE app_assignment_options (
    assignment_id       TEXT    NOT NULL PRIMARY KEY REFERENCES assignments (id) ON DELETE CASCADE,
    install_behaviour   TEXT    NOT NULL CHECK (install_behaviour IN ('required', 'removed')),
    configuration_plist TEXT,
    remove_on_unmanage  INTEGER NOT NULL CHECK (remove_on_unmanage IN (0, 1))
);

-- One row per device and app whose licence Orchard holds or is getting, owned by the tenant whose location the
-- licence comes from (which is the device's tenant unless the device moved, when the old tenant's licence is
-- disassociated with the old tenant's token). No foreign key to devices on purpose: a licence outlives whatever
-- happens to the device record until Apple confirms it is free again (licences are money).
--
-- state: 'associating' (wanted; event_id set once Apple accepted the association, polled to completion),
-- 'associated' (licence on the serial, InstallApplication next), 'installing' (InstallApplication sent or
-- answered, the device not yet reporting it Managed), 'installed' (ManagedApplicationList says Managed),
-- 'shortage' (Apple had no licence left: waits for licences to be added), 'failed' (reason says Apple's or the
-- device's error), 'disassociating' (the device left scope, was erased, retired or moved: licence being freed).
-- lease_until: a licence pass on some node works on the row until then (calls to Apple happen outside units).
CREATE TABLE device_app_licences (
    device_id       TEXT    NOT NULL,
    adam_id         TEXT    NOT NULL,
    tenant_id       TEXT    NOT NULL REFERENCES tenants (id),
    pricing_param   TEXT    NOT NULL,
    serial_number   TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('associating', 'associated', 'installing', 'installed',
                                                      'shortage', 'failed', 'disassociating')),
    event_id        TEXT,
    lease_until     BIGINT,
    reason          TEXT,
    bundle_id       TEXT,
    pending_command TEXT,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (device_id, adam_id)
);
CREATE INDEX device_app_licences_state ON device_app_licences (state, tenant_id);
CREATE INDEX device_app_licences_app ON device_app_licences (tenant_id, adam_id);
CREATE INDEX device_app_licences_command ON device_app_licences (pending_command);
