-- Rate limits, the login back-off, and the event outbox.
-- Times are Unix seconds (INTEGER).

-- One window counter per key: `<endpoint>:<ip|email>:<value>`. A request
-- bumps its counters with one upsert each (exact under concurrency); the
-- window opens at the key's first request and ends at `expires_at`, after
-- which the next request opens a new one. Ended rows are pruned by the cron
-- trigger.
CREATE TABLE rate_limits (
  key          TEXT PRIMARY KEY,
  window_start INTEGER NOT NULL,
  count        INTEGER NOT NULL,
  expires_at   INTEGER NOT NULL
);
CREATE INDEX rate_limits_expires ON rate_limits(expires_at);

-- Consecutive failed logins per email (known or not, so that the back-off
-- says nothing about which accounts exist). Cleared by a successful login or
-- a password reset; forgotten a day after the last failure.
CREATE TABLE login_failures (
  email          TEXT PRIMARY KEY,
  failures       INTEGER NOT NULL,
  last_failed_at INTEGER NOT NULL
);

-- Events whose action happened but which the queue did not take: kept here
-- and re-sent by the cron trigger, oldest first, until the queue takes them.
CREATE TABLE event_outbox (
  id         TEXT PRIMARY KEY,
  body       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  attempts   INTEGER NOT NULL DEFAULT 0,
  last_error TEXT
);
CREATE INDEX event_outbox_created ON event_outbox(created_at);
