-- Push dispatch and the MDM push certificate (the APNs issue).
--
-- A push is owed to a channel while push_wanted > push_done: enqueueing commands bumps push_wanted, the
-- dispatcher claims due channels and sets push_done = push_wanted. Counters, not timestamps, so a command
-- queued in the same second as a push still owes its own. Pending pushes live in the database and survive a
-- restart; many commands queued in a burst owe one push (coalescing).
ALTER TABLE channels ADD COLUMN push_wanted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN push_done BIGINT NOT NULL DEFAULT 0;
ALTER TABLE channels ADD COLUMN push_requested_at BIGINT;
ALTER TABLE channels ADD COLUMN pushed_at BIGINT;
-- Set when APNs says the token is dead (400 BadDeviceToken…, 410 Unregistered); cleared by the next TokenUpdate.
ALTER TABLE channels ADD COLUMN push_token_dead_at BIGINT;
ALTER TABLE channels ADD COLUMN push_token_dead_reason TEXT;
CREATE INDEX channels_push_due_idx ON channels (push_requested_at) WHERE push_wanted > push_done;

-- Uploaded MDM push certificates; exactly one is active. The private key is encrypted with the data key.
CREATE TABLE push_certificates (
    id             TEXT    NOT NULL PRIMARY KEY,
    topic          TEXT    NOT NULL,
    cert_pem       TEXT    NOT NULL,
    key_encrypted  BLOB   NOT NULL,
    not_before     BIGINT  NOT NULL,
    not_after      BIGINT  NOT NULL,
    uploaded_at    BIGINT  NOT NULL,
    uploaded_by    TEXT,
    active         INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
);
CREATE INDEX push_certificates_active_idx ON push_certificates (active);
