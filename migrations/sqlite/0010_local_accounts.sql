-- Break-glass accounts (issue 5): a few central-IT operators who can sign in with a password when the
-- university's identity provider is down. Only operators; the user row has issuer 'local'. The password is an
-- argon2id PHC string; repeated failures lock the account for a while.
CREATE TABLE local_accounts (
    user_id          TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash    TEXT    NOT NULL,
    failed_attempts  BIGINT  NOT NULL DEFAULT 0,
    locked_until     BIGINT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);
