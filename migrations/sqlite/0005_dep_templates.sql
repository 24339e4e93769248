-- Enrollment templates (Jamf's "PreStage enrollments"), assignment of DEP serials to them, zero-touch setup
-- state and the Activation Lock bypass code escrow (issue 4).
--
-- A template belongs to one DEP token (Apple's profile uuids are per ASM "MDM server") and to one tenant:
-- assigning a serial to a template assigns the device's tenant. Each template owns a hidden enrollment link
-- (enrollment_links row) so that its SCEP challenges and issued certificates carry the tenant exactly like a
-- link's do. profile_json holds the ADE profile fields Orchard sends to Apple; setup_json what Orchard does
-- during Setup Assistant (device name pattern, organization info, commands to run before release).
CREATE TABLE dep_templates (
    id                  TEXT    NOT NULL PRIMARY KEY,
    token_id            TEXT    NOT NULL REFERENCES dep_tokens (id) ON DELETE CASCADE,
    tenant_id           TEXT    NOT NULL REFERENCES tenants (id),
    link_id             TEXT    NOT NULL REFERENCES enrollment_links (id),
    name                TEXT    NOT NULL,
    profile_json        TEXT    NOT NULL,
    setup_json          TEXT    NOT NULL,
    minimum_os_version  TEXT,
    -- The assignment rule: new serials of the token get this template (at most one per token).
    auto_assign         INTEGER NOT NULL DEFAULT 0 CHECK (auto_assign IN (0, 1)),
    -- Apple's uuid for the profile as last defined; NULL until defined (or after the template changed and the
    -- new definition failed: define_error says why).
    profile_uuid        TEXT,
    defined_at          BIGINT,
    define_error        TEXT,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
CREATE UNIQUE INDEX dep_templates_token_name_key ON dep_templates (token_id, name);
CREATE UNIQUE INDEX dep_templates_link_key ON dep_templates (link_id);
CREATE UNIQUE INDEX dep_templates_auto_assign_key ON dep_templates (token_id) WHERE auto_assign = 1;
CREATE INDEX dep_templates_tenant_idx ON dep_templates (tenant_id);

-- The wanted assignment of a serial (template and so tenant) and how far Apple has taken it.
-- assign_status: pending (to send) | assigned | throttled (retry at assign_retry_at) | failed | not_accessible.
ALTER TABLE dep_devices ADD COLUMN template_id TEXT REFERENCES dep_templates (id) ON DELETE SET NULL;
ALTER TABLE dep_devices ADD COLUMN tenant_id TEXT REFERENCES tenants (id);
ALTER TABLE dep_devices ADD COLUMN assign_status TEXT;
ALTER TABLE dep_devices ADD COLUMN assign_error TEXT;
ALTER TABLE dep_devices ADD COLUMN assign_retry_at BIGINT;
ALTER TABLE dep_devices ADD COLUMN assigned_at BIGINT;
CREATE INDEX dep_devices_tenant_idx ON dep_devices (tenant_id, serial_number);
CREATE INDEX dep_devices_template_idx ON dep_devices (template_id);
CREATE INDEX dep_devices_assign_due_idx ON dep_devices (assign_status, assign_retry_at);

-- Zero-touch setup of a device enrolled through a template: NULL (not enrolled through a template) |
-- configuring (setup commands queued) | releasing (DeviceConfigured queued) | configured | failed (setup_error
-- says which command and why; the device stays in Setup Assistant until an operator retries or releases it).
ALTER TABLE devices ADD COLUMN dep_template_id TEXT REFERENCES dep_templates (id) ON DELETE SET NULL;
ALTER TABLE devices ADD COLUMN setup_state TEXT;
ALTER TABLE devices ADD COLUMN setup_error TEXT;
ALTER TABLE devices ADD COLUMN setup_updated_at BIGINT;
-- The device's Activation Lock bypass code (ActivationLockBypassCode), sealed with the data key.
ALTER TABLE devices ADD COLUMN bypass_code_encrypted BLOB;
ALTER TABLE devices ADD COLUMN bypass_code_at BIGINT;

-- Background sync of a token is claimed by one node at a time through a lease (several nodes on PostgreSQL).
ALTER TABLE dep_tokens ADD COLUMN sync_lease_owner TEXT;
ALTER TABLE dep_tokens ADD COLUMN sync_lease_until BIGINT;
