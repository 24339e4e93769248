-- Signed webhooks (issue 15, point 6). An endpoint belongs to a tenant (its admins manage it; it receives only
-- that tenant's events) or is global (tenant_id NULL: operators manage it; it receives every event).
--
-- event_types: the subscribed types, comma-separated with a leading and trailing comma (",device.enrolled,"),
-- so one LIKE matches a type. secret_sealed: the HMAC key, sealed with the data key (bound to the endpoint id),
-- shown once when made. consecutive_failures counts failed attempts since the last success; at the server's
-- limit the endpoint is disabled (enabled = 0, disabled_at, disabled_reason) and the disabling is audited.
CREATE TABLE webhook_endpoints (
    id                   TEXT    NOT NULL PRIMARY KEY,
    tenant_id            TEXT    REFERENCES tenants (id),
    url                  TEXT    NOT NULL,
    event_types          TEXT    NOT NULL,
    secret_sealed        BYTEA   NOT NULL,
    enabled              INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    consecutive_failures BIGINT  NOT NULL DEFAULT 0,
    disabled_at          BIGINT,
    disabled_reason      TEXT,
    created_at           BIGINT  NOT NULL,
    created_by           TEXT
);
CREATE INDEX webhook_endpoints_tenant_idx ON webhook_endpoints (tenant_id);

-- Delivered and given-up deliveries (with their attempts) and events left without deliveries are deleted after
-- the server's retention (--webhook-retention-days).
--
-- The outbox: one row per event, written in the unit of work of the change that caused it (enrollment,
-- check-out, command result, DEP sync, app result) and only when an enabled endpoint wants it. body is the
-- exact JSON sent ({id, type, occurred_at, tenant, data}); tenant_id NULL for service-wide events.
CREATE TABLE webhook_events (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant_id    TEXT,
    event_type   TEXT    NOT NULL,
    occurred_at  BIGINT  NOT NULL,
    body         TEXT    NOT NULL
);
CREATE INDEX webhook_events_occurred_idx ON webhook_events (occurred_at);

-- One delivery per event and matching endpoint, made in the same statement group as the event. state:
-- pending (next_attempt_at is when it is due; a node claims it by moving next_attempt_at to the end of its
-- lease with a guarded UPDATE and records the attempt under the same lease_owner) | delivered | failed (out of
-- attempts).
CREATE TABLE webhook_deliveries (
    id               TEXT    NOT NULL PRIMARY KEY,
    endpoint_id      TEXT    NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         TEXT    NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    state            TEXT    NOT NULL DEFAULT 'pending',
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease_owner      TEXT,
    last_attempt_at  BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    created_at       BIGINT  NOT NULL
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at);
CREATE INDEX webhook_deliveries_created_idx ON webhook_deliveries (created_at);
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

-- Every attempt of a delivery: when, what the receiver answered (status_code NULL when no answer came: timeout,
-- refused connection) and when the next try is due (NULL after the last one).
CREATE TABLE webhook_delivery_attempts (
    delivery_id      TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt          BIGINT  NOT NULL,
    attempted_at     BIGINT  NOT NULL,
    status_code      BIGINT,
    error            TEXT,
    next_attempt_at  BIGINT,
    PRIMARY KEY (delivery_id, attempt)
);
