-- Security review (issue 10): a token minted by a person acts for that person and dies with them. The owner is
-- the person who minted it through a session, or the owner of the token that minted it; service and
-- bootstrap tokens have none. No foreign key: a token's row outlives its owner for the audit trail, and a
-- token whose owner is gone is refused like one whose owner is disabled.
ALTER TABLE api_tokens ADD COLUMN owner_user_id TEXT;
CREATE INDEX api_tokens_owner_idx ON api_tokens (owner_user_id);
