-- The operators' monitoring counts the hot queue by status and finds its oldest command at every scrape
-- (`/metrics`): with this index both come from the index alone, however many devices there are.
CREATE INDEX commands_status_queued_at_idx ON commands (status, queued_at);
