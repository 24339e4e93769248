-- Shared iPad policy (issue 18): the SharedDeviceConfiguration settings a tenant wants on its Shared iPads, for
-- the whole tenant (group_id NULL) and per device group (a group's settings override the tenant's, key by key).
-- `settings_json` holds only the keys set. The reconciler sends each Shared iPad its effective settings.
CREATE TABLE shared_ipad_policies (
    tenant_id     TEXT    NOT NULL REFERENCES tenants (id),
    group_id      TEXT    REFERENCES device_groups (id) ON DELETE CASCADE,
    settings_json TEXT    NOT NULL,
    revision      BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    updated_by    TEXT
);
CREATE UNIQUE INDEX shared_ipad_policies_tenant ON shared_ipad_policies (tenant_id) WHERE group_id IS NULL;
CREATE UNIQUE INDEX shared_ipad_policies_group ON shared_ipad_policies (group_id) WHERE group_id IS NOT NULL;

-- What a Shared iPad has of its effective settings: the last set it acknowledged (applied_*) and the Settings
-- command waiting for an answer (pending_*: never a second one while it waits), or the error of the last one.
CREATE TABLE device_shared_ipad_settings (
    device_id       TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    applied_hash    TEXT,
    applied_json    TEXT,
    applied_at      BIGINT,
    pending_hash    TEXT,
    pending_json    TEXT,
    pending_command TEXT,
    last_error      TEXT,
    updated_at      BIGINT  NOT NULL
);
