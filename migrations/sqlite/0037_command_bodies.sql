-- Command bodies shared by many queued commands (issue 12's benchmark: one profile assigned to 50,000 iPads).
-- A profile install queued by the reconciler is the same `Command` dictionary for every device; only the
-- CommandUUID differs. The dictionary is stored once per profile version (sealed under the data key, bound to
-- its row), each queue row names it in body_id and keeps an empty payload, and the envelope
-- ({CommandUUID, Command}) is built when the command is handed out. `source` says what the body is made from
-- (`profile:{id}:{version}`), so later passes find it instead of writing another. A body nothing refers to any
-- more is deleted by the queue's hygiene job once it has not been used for a while.
CREATE TABLE command_bodies (
    id           TEXT    NOT NULL PRIMARY KEY,
    source       TEXT    NOT NULL,
    body         BLOB    NOT NULL,
    body_sealed  INTEGER NOT NULL CHECK (body_sealed IN (0, 1)),
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT  NOT NULL
);
CREATE UNIQUE INDEX command_bodies_source_key ON command_bodies (source);
CREATE INDEX command_bodies_last_used_at_idx ON command_bodies (last_used_at);
ALTER TABLE commands ADD COLUMN body_id TEXT REFERENCES command_bodies (id);
ALTER TABLE command_history ADD COLUMN body_id TEXT REFERENCES command_bodies (id);
CREATE INDEX commands_body_id_idx ON commands (body_id) WHERE body_id IS NOT NULL;
CREATE INDEX command_history_body_id_idx ON command_history (body_id) WHERE body_id IS NOT NULL;
