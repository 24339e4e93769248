-- Tenant-safe identity binding (issue 10): every SCEP challenge and every identity it buys records the grant
-- that issued it, so Authenticate decides by data who may claim an enrolled UDID; identities record the device
-- they were bound to and can be revoked; an operator can release a device for re-enrollment.
--
-- grant_kind: 'link' (a profile downloaded through an enrollment link: any new device, the link's tenant) |
-- 'ade' (zero-touch: the Apple-signed MachineInfo named grant_serial and grant_udid) | 'device' (issued for
-- the known device grant_device_id: identity renewal, Return to Service).
ALTER TABLE scep_challenges ADD COLUMN grant_kind TEXT NOT NULL DEFAULT 'link'
    CHECK (grant_kind IN ('link', 'ade', 'device'));
ALTER TABLE scep_challenges ADD COLUMN grant_serial TEXT;
ALTER TABLE scep_challenges ADD COLUMN grant_udid TEXT;
ALTER TABLE scep_challenges ADD COLUMN grant_device_id TEXT;
CREATE INDEX scep_challenges_link_id_idx ON scep_challenges (link_id);

ALTER TABLE issued_certificates ADD COLUMN grant_kind TEXT NOT NULL DEFAULT 'link'
    CHECK (grant_kind IN ('link', 'ade', 'device'));
ALTER TABLE issued_certificates ADD COLUMN grant_serial TEXT;
ALTER TABLE issued_certificates ADD COLUMN grant_udid TEXT;
ALTER TABLE issued_certificates ADD COLUMN grant_device_id TEXT;
-- The device the identity was bound to at its first Authenticate; an identity binds once, to one device.
ALTER TABLE issued_certificates ADD COLUMN bound_device_id TEXT;
ALTER TABLE issued_certificates ADD COLUMN bound_at BIGINT;
-- Revoked identities are refused on every device request (and SCEP renewal).
ALTER TABLE issued_certificates ADD COLUMN revoked_at BIGINT;
ALTER TABLE issued_certificates ADD COLUMN revoked_reason TEXT;
CREATE INDEX issued_certificates_link_id_idx ON issued_certificates (link_id);
CREATE INDEX issued_certificates_bound_device_idx ON issued_certificates (bound_device_id);

-- Identities bound before this migration: the ones devices hold now.
UPDATE issued_certificates
   SET bound_device_id = (SELECT d.id FROM devices d WHERE d.cert_fingerprint = issued_certificates.fingerprint),
       bound_at = (SELECT COALESCE(d.enrolled_at, d.created_at) FROM devices d
                    WHERE d.cert_fingerprint = issued_certificates.fingerprint)
 WHERE EXISTS (SELECT 1 FROM devices d WHERE d.cert_fingerprint = issued_certificates.fingerprint);

-- An operator's "release for re-enrollment": until released_until, a new identity of released_to_tenant_id
-- (any tenant when NULL) may claim the device.
ALTER TABLE devices ADD COLUMN released_until BIGINT;
ALTER TABLE devices ADD COLUMN released_to_tenant_id TEXT REFERENCES tenants (id);
ALTER TABLE devices ADD COLUMN released_by TEXT;
