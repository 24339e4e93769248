-- Secrets in the command queue and the channels are sealed under the data key (AES-256-GCM, bound to the row).
-- Which payloads and results are sealed is recorded per row, so reading never guesses from the bytes.
ALTER TABLE commands ADD COLUMN payload_sealed INTEGER NOT NULL DEFAULT 0 CHECK (payload_sealed IN (0, 1));
ALTER TABLE commands ADD COLUMN result_sealed INTEGER NOT NULL DEFAULT 0 CHECK (result_sealed IN (0, 1));
-- Commands that carry a device credential when sent (ClearPasscode's UnlockToken) go out at most once.
ALTER TABLE commands ADD COLUMN deliver_once INTEGER NOT NULL DEFAULT 0 CHECK (deliver_once IN (0, 1));

-- Rows written before sealing that may hold a secret in plaintext. SQL cannot seal (the key is not in the
-- database), so the server reseals them when it starts (orchard_core::commands::secrets) and deletes each
-- entry in the same transaction.
CREATE TABLE legacy_plaintext_commands (
    command_uuid TEXT NOT NULL PRIMARY KEY
);
INSERT INTO legacy_plaintext_commands (command_uuid)
    SELECT command_uuid FROM commands
    WHERE request_type IN ('ClearPasscode', 'InstallProfile', 'EraseDevice', 'InstallApplication', 'Settings',
                           'ActivationLockBypassCode');

-- From now on channels.unlock_token holds only sealed values: plaintext ones wait here until resealed.
CREATE TABLE legacy_unlock_tokens (
    channel_id   TEXT NOT NULL PRIMARY KEY,
    unlock_token BLOB NOT NULL
);
INSERT INTO legacy_unlock_tokens (channel_id, unlock_token)
    SELECT id, unlock_token FROM channels WHERE unlock_token IS NOT NULL;
UPDATE channels SET unlock_token = NULL WHERE unlock_token IS NOT NULL;
