-- Expiry warnings of the credential register (issue 15, point 4): one row per (credential, its expiry, threshold,
-- recipient), so each warning is sent once. The row is recorded and claimed in one transaction before the e-mail
-- goes out, then marked sent; a node that dies after claiming leaves a claim that runs out (claimed_until), and a
-- failed send waits until next_attempt_at (backoff), so every warning is retried until it is delivered.
--
-- credential_key: the register's stable id of the credential (push-certificate, dep-token:<id>, apps-token:<tenant>);
-- expires_at: that credential's expiry when the warning was due, so a renewed credential is warned about afresh.
-- threshold_days: the warning level reached (60, 30, 7, 1 … configurable), 0 once the credential has expired.
-- tenant_id: the owning department (NULL for central IT's credentials); state: pending, sent, or superseded (a
-- pending warning of a looser threshold once a tighter one is due: the owner gets the current one, not both).
CREATE TABLE credential_warnings (
    id              TEXT    NOT NULL PRIMARY KEY,
    credential_key  TEXT    NOT NULL,
    expires_at      BIGINT  NOT NULL,
    threshold_days  BIGINT  NOT NULL,
    recipient       TEXT    NOT NULL,
    tenant_id       TEXT    REFERENCES tenants (id) ON DELETE CASCADE,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        BIGINT  NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    claimed_by      TEXT,
    claimed_until   BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    sent_at         BIGINT,
    UNIQUE (credential_key, expires_at, threshold_days, recipient)
);
CREATE INDEX credential_warnings_due_idx ON credential_warnings (state, next_attempt_at);
