-- Tenancy (issue 5), part one.
--
-- API tokens managed through the API: who made a token, and when it was last used (written at most once a
-- minute per token, so a busy script does not turn every request into a write).
ALTER TABLE api_tokens ADD COLUMN created_by TEXT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_created_at_idx ON api_tokens (created_at, id);

-- What central IT needs to know about a department: its cost centre (billing) and who to warn about
-- certificates and tokens that expire.
ALTER TABLE tenants ADD COLUMN cost_centre TEXT;
ALTER TABLE tenants ADD COLUMN contact_name TEXT;
ALTER TABLE tenants ADD COLUMN contact_email TEXT;
ALTER TABLE tenants ADD COLUMN updated_at BIGINT;
