-- Keys of push certificate requests (CSRs) made by Orchard for the Apple Push Certificates Portal. The key never
-- leaves the server: it is encrypted with the data key, and the certificate Apple returns is matched to it by
-- the SHA-256 of its SubjectPublicKeyInfo, so the operator uploads the certificate alone.
CREATE TABLE push_csr_keys (
    id                 TEXT    NOT NULL PRIMARY KEY,
    public_key_sha256  TEXT    NOT NULL UNIQUE,
    key_encrypted      BLOB   NOT NULL,
    created_at         BIGINT  NOT NULL
);
