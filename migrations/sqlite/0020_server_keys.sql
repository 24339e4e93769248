-- The keys every node shares: the device CA, the server CA, the profile signer and the data key, each sealed
-- (AES-256-GCM) under the key-encryption key (KEK) every node gets from its configuration; `kek_check` seals a
-- known text so a node with the wrong KEK is told so before it touches anything. Rows are inserted all at once
-- (insert-if-absent, so racing first starts end with one CA) and replaced only by compare-and-swap on the
-- certificate.
CREATE TABLE server_keys (
    name         TEXT    NOT NULL PRIMARY KEY,
    cert_pem     BLOB,
    key_sealed   BLOB    NOT NULL,
    created_at   BIGINT  NOT NULL
);
