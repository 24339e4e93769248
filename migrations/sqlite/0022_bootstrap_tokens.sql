-- Bootstrap tokens a supervised device escrows with SetBootstrapToken and asks back with GetBootstrapToken, one per
-- device, sealed under the data key (bound to the device id); deleting the device deletes its token.
CREATE TABLE device_bootstrap_tokens (
    device_id     TEXT    NOT NULL PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    token_sealed  BLOB    NOT NULL,
    updated_at    BIGINT  NOT NULL
);
