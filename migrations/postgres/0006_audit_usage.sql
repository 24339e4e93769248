-- Audit log and usage snapshots for billing (issue 5). Same meaning as migrations/sqlite/0006_audit_usage.sql;
-- only the append-only triggers differ between the dialects.
--
-- audit_events is append-only: every mutation through the admin API (and logins, token use) adds one row and no
-- row is ever changed or removed. The triggers make the database itself refuse UPDATE, DELETE and TRUNCATE, so a
-- bug or a careless script cannot rewrite history. tenant_id is the tenant of the target (NULL for global
-- actions) and deliberately not a foreign key: an event must be recordable even when it names a tenant that does
-- not exist (a refused request) and must outlive the rows it talks about.
CREATE TABLE audit_events (
    id          TEXT    NOT NULL PRIMARY KEY,
    at          BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,
    actor_name  TEXT,
    actor_role  TEXT,
    tenant_id   TEXT,
    action      TEXT    NOT NULL,
    target      TEXT,
    request_id  TEXT,
    outcome     TEXT    NOT NULL CHECK (outcome IN ('ok', 'denied', 'error')),
    status      BIGINT,
    details     TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at_idx ON audit_events (at, id);
CREATE INDEX audit_events_tenant_at_idx ON audit_events (tenant_id, at, id);
CREATE INDEX audit_events_actor_at_idx ON audit_events (actor, at);
CREATE INDEX audit_events_action_at_idx ON audit_events (action, at);

CREATE FUNCTION orchard_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION orchard_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION orchard_refuse_change();

-- One row per UTC day and tenant: how many of the tenant's devices were enrolled when the day's snapshot was
-- taken. day is 'YYYY-MM-DD' (sorts and compares like the date). The first snapshot of a day wins (inserted
-- with ON CONFLICT DO NOTHING by whichever node is first), and it is never changed afterwards: an invoice
-- computed from it can be computed again with the same result.
CREATE TABLE usage_snapshots (
    day               TEXT    NOT NULL,
    tenant_id         TEXT    NOT NULL,
    enrolled_devices  BIGINT  NOT NULL CHECK (enrolled_devices >= 0),
    taken_at          BIGINT  NOT NULL,
    PRIMARY KEY (day, tenant_id)
);
CREATE INDEX usage_snapshots_tenant_day_idx ON usage_snapshots (tenant_id, day);

CREATE TRIGGER usage_snapshots_no_update BEFORE UPDATE ON usage_snapshots
    FOR EACH ROW EXECUTE FUNCTION orchard_refuse_change();
