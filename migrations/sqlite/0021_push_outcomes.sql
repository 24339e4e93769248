-- Push state per device in the API (issue 11, point 8): what APNs answered to the last push of each channel, so
-- an operator sees "delivered at …", "429 TooManyRequests, waits until …" or "410 Unregistered" without the logs.
-- pushed_at stays the time of the last delivered push; these two cover every outcome.
ALTER TABLE channels ADD COLUMN push_attempted_at BIGINT;
ALTER TABLE channels ADD COLUMN push_last_result TEXT;
