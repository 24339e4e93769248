-- A queue that never blocks (issue 11, point 4).
--
-- 'failed': sent (or put off with NotNow) --command-max-attempts times without a final answer; the channel
-- moves on.
ALTER TABLE commands DROP CONSTRAINT commands_status_check;
ALTER TABLE commands ADD CONSTRAINT commands_status_check
    CHECK (status IN ('queued', 'sent', 'acknowledged', 'error', 'command_format_error', 'not_now', 'expired',
                      'failed'));
-- The resend sweep looks for commands sent but unanswered for a while.
CREATE INDEX commands_sent_at_idx ON commands (sent_at) WHERE status = 'sent';

-- Finished commands (acknowledged, error, command_format_error, expired, failed) move here, so the hot queue
-- holds only live work; kept --command-history-days, then deleted. Same columns; seq keeps queue order.
CREATE TABLE command_history (
    seq            BIGINT  NOT NULL PRIMARY KEY,
    command_uuid   TEXT    NOT NULL,
    device_id      TEXT    NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tenant_id      TEXT    NOT NULL REFERENCES tenants (id),
    channel_id     TEXT    NOT NULL,
    request_type   TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('acknowledged', 'error', 'command_format_error', 'expired',
                                                      'failed')),
    payload        BYTEA    NOT NULL,
    result         BYTEA,
    error_chain    TEXT,
    queued_by      TEXT,
    queued_at      BIGINT  NOT NULL,
    sent_at        BIGINT,
    completed_at   BIGINT,
    expires_at     BIGINT,
    attempts       BIGINT  NOT NULL DEFAULT 0,
    payload_sealed INTEGER NOT NULL DEFAULT 0 CHECK (payload_sealed IN (0, 1)),
    result_sealed  INTEGER NOT NULL DEFAULT 0 CHECK (result_sealed IN (0, 1)),
    deliver_once   INTEGER NOT NULL DEFAULT 0 CHECK (deliver_once IN (0, 1))
);
CREATE UNIQUE INDEX command_history_command_uuid_key ON command_history (command_uuid);
CREATE INDEX command_history_device_seq_idx ON command_history (device_id, seq);
CREATE INDEX command_history_tenant_status_idx ON command_history (tenant_id, status);
CREATE INDEX command_history_completed_at_idx ON command_history (completed_at);
