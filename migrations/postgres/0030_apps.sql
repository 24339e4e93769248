-- Apps and Books (issue 13): each tenant's content token for its Apps and Books location, and the apps (assets)
-- bought there with their licence counts as last synced.
--
-- The token is sealed with the data key, bound to its tenant (never returned by any API). claim_state says whether
-- Orchard manages the location: 'claimed' (by Orchard), 'claimed_elsewhere' (another MDM's mdmInfo; its name in
-- other_mdm_name, nothing taken over until an admin confirms), 'token_error' (Apple refused the token: expired,
-- revoked …; last_error says what to do).
CREATE TABLE vpp_tokens (
    tenant_id       TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id),
    token_sealed    BYTEA    NOT NULL,
    org_name        TEXT    NOT NULL,
    location_name   TEXT,
    location_uid    TEXT,
    expires_at      BIGINT  NOT NULL,
    claim_state     TEXT    NOT NULL,
    other_mdm_name  TEXT,
    last_sync_at    BIGINT,
    last_error      TEXT,
    uploaded_at     BIGINT  NOT NULL,
    uploaded_by     TEXT
);

-- One row per app (adamId and licence quality) of a tenant's location. name: what the local Apps and Books server
-- or a later metadata lookup gives; NULL until known.
CREATE TABLE vpp_assets (
    tenant_id          TEXT    NOT NULL REFERENCES tenants (id),
    adam_id            TEXT    NOT NULL,
    pricing_param      TEXT    NOT NULL,
    name               TEXT,
    total_count        BIGINT  NOT NULL,
    assigned_count     BIGINT  NOT NULL,
    available_count    BIGINT  NOT NULL,
    device_assignable  INTEGER NOT NULL,
    synced_at          BIGINT  NOT NULL,
    PRIMARY KEY (tenant_id, adam_id, pricing_param)
);
