-- Tenancy (issue 5), part two: people who sign in through the university's OpenID Connect provider.
--
-- A user is one (issuer, subject) pair: the provider's stable identifier, not the e-mail address, which people
-- change. Memberships are what the operators' role mappings grant from the user's claims; they are rewritten
-- at every sign-in, so a person who leaves a group loses the role at the next login.
CREATE TABLE users (
    id            TEXT   NOT NULL PRIMARY KEY,
    issuer        TEXT   NOT NULL,
    subject       TEXT   NOT NULL,
    email         TEXT,
    display_name  TEXT,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT,
    disabled_at   BIGINT,
    UNIQUE (issuer, subject)
);

-- operator and helpdesk span every tenant and carry none; admin and viewer belong to exactly one.
CREATE TABLE memberships (
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT   NOT NULL CHECK (role IN ('operator', 'helpdesk', 'admin', 'viewer')),
    tenant_id  TEXT   REFERENCES tenants (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    CHECK ((role IN ('operator', 'helpdesk') AND tenant_id IS NULL)
        OR (role IN ('admin', 'viewer') AND tenant_id IS NOT NULL))
);
-- NULL tenants never compare equal, so the uniqueness goes through COALESCE.
CREATE UNIQUE INDEX memberships_key ON memberships (user_id, role, COALESCE(tenant_id, ''));

-- Operator-defined rules: a user whose claim `claim` equals (or, for a list claim, contains) `value` gets
-- `role` (on `tenant_id` for tenant roles).
CREATE TABLE role_mappings (
    id         TEXT   NOT NULL PRIMARY KEY,
    claim      TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    role       TEXT   NOT NULL CHECK (role IN ('operator', 'helpdesk', 'admin', 'viewer')),
    tenant_id  TEXT   REFERENCES tenants (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    created_by TEXT,
    CHECK ((role IN ('operator', 'helpdesk') AND tenant_id IS NULL)
        OR (role IN ('admin', 'viewer') AND tenant_id IS NOT NULL))
);
CREATE UNIQUE INDEX role_mappings_key ON role_mappings (claim, value, role, COALESCE(tenant_id, ''));

-- Sign-ins under way, kept in the database so that whichever node receives the provider's redirect can finish
-- the login. Keyed by the hash of the state; the PKCE verifier is sealed with the data key.
CREATE TABLE oidc_logins (
    state_hash    TEXT   NOT NULL PRIMARY KEY,
    pkce_verifier BYTEA  NOT NULL,
    nonce         TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX oidc_logins_expires_idx ON oidc_logins (expires_at);

-- Browser sessions. Only hashes are stored: of the cookie's secret and of the CSRF token derived from it.
CREATE TABLE sessions (
    id_hash    TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_hash  TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
