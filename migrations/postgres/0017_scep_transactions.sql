-- SCEP per RFC 8894 (issue 11): the transactionID a certificate was issued for, so a client that retries after
-- a lost answer (same transactionID, same key) gets the same certificate and CertPoll/GetCertInitial can be
-- answered; the certificate itself, to answer it again; and SHA-256 of the request signer's public key, since a
-- poll is signed like the request was (possibly with a throwaway key, not the certificate's); and the hash of
-- the challenge it spent, since only the same request (same challenge) is a retry: a client that enrolls again
-- with the same key and a new challenge has the same transactionID (a hash of the key) and a new certificate.
ALTER TABLE issued_certificates ADD COLUMN scep_transaction_id TEXT;
ALTER TABLE issued_certificates ADD COLUMN scep_challenge_hash TEXT;
ALTER TABLE issued_certificates ADD COLUMN scep_signer_key_sha256 TEXT;
-- Order of the transactions' certificates (several can be issued within one second): the newest answers a poll.
ALTER TABLE issued_certificates ADD COLUMN scep_sequence BIGINT;
ALTER TABLE issued_certificates ADD COLUMN certificate_der BYTEA;
CREATE INDEX issued_certificates_scep_transaction_idx ON issued_certificates (scep_transaction_id)
    WHERE scep_transaction_id IS NOT NULL;
