-- Device groups of a tenant: static (members added by hand) or smart (members are the tenant's enrolled
-- devices whose inventory matches `filter_json`, a typed filter core validates). Membership is materialised in
-- `device_group_members` and kept current by core when a device's inventory, the definition, or an enrollment
-- changes; every join and leave is kept in `device_group_history`.
CREATE TABLE device_groups (
    id          TEXT    NOT NULL PRIMARY KEY,
    tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
    name        TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('static', 'smart')),
    filter_json TEXT,
    created_at  BIGINT  NOT NULL,
    created_by  TEXT,
    updated_at  BIGINT  NOT NULL
);
CREATE UNIQUE INDEX device_groups_name ON device_groups (tenant_id, name);

CREATE TABLE device_group_members (
    group_id  TEXT   NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    device_id TEXT   NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, device_id)
);
CREATE INDEX device_group_members_device ON device_group_members (device_id);

-- Append-only: 'joined' or 'left', with why (added, removed, matched, unmatched, definition, checked_out …).
CREATE TABLE device_group_history (
    group_id  TEXT   NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    device_id TEXT   NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    event     TEXT   NOT NULL CHECK (event IN ('joined', 'left')),
    reason    TEXT   NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX device_group_history_group ON device_group_history (group_id, at);
CREATE INDEX device_group_history_device ON device_group_history (device_id, at);

-- What a tenant wants on its devices: one object (kind + id; 'profile' now, 'app' and 'os_policy' later) for
-- the whole tenant or for targets, minus exclusions. One assignment per (tenant, object).
CREATE TABLE assignments (
    id             TEXT    NOT NULL PRIMARY KEY,
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id),
    object_kind    TEXT    NOT NULL CHECK (object_kind IN ('profile', 'app', 'os_policy')),
    object_id      TEXT    NOT NULL,
    version_policy TEXT    NOT NULL CHECK (version_policy IN ('latest')),
    all_devices    INTEGER NOT NULL CHECK (all_devices IN (0, 1)),
    created_at     BIGINT  NOT NULL,
    created_by     TEXT,
    updated_at     BIGINT  NOT NULL
);
CREATE UNIQUE INDEX assignments_object ON assignments (tenant_id, object_kind, object_id);
CREATE INDEX assignments_object_id ON assignments (object_kind, object_id);

-- An assignment's targets and exclusions: a group or a device of the assignment's tenant.
CREATE TABLE assignment_targets (
    assignment_id TEXT    NOT NULL REFERENCES assignments (id) ON DELETE CASCADE,
    target_kind   TEXT    NOT NULL CHECK (target_kind IN ('group', 'device')),
    target_id     TEXT    NOT NULL,
    exclude       INTEGER NOT NULL CHECK (exclude IN (0, 1)),
    PRIMARY KEY (assignment_id, target_kind, target_id)
);
CREATE INDEX assignment_targets_target ON assignment_targets (target_kind, target_id);
