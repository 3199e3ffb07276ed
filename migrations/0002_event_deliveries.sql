-- Event delivery bookkeeping for the queue consumer.
-- Times are Unix seconds (INTEGER).

-- One row per (event, target): a target is `webhook:<url>` or `email:<address>`.
-- A consumer claims the row (attempts + 1, claimed_until = a lease) before it
-- sends and sets delivered_at after a 2xx, so each target gets each event at
-- most once however often the queue delivers the message; attempts drives the
-- retry backoff. Rows are pruned by the cron trigger once no retry can need them.
CREATE TABLE event_deliveries (
  event_id         TEXT NOT NULL,
  target           TEXT NOT NULL,
  event_type       TEXT NOT NULL,
  attempts         INTEGER NOT NULL DEFAULT 0,
  first_attempt_at INTEGER NOT NULL,
  last_attempt_at  INTEGER NOT NULL,
  claimed_until    INTEGER,
  delivered_at     INTEGER,
  last_error       TEXT,
  PRIMARY KEY (event_id, target)
);
CREATE INDEX event_deliveries_last_attempt ON event_deliveries(last_attempt_at);

-- Messages that reached the dead-letter queue: events whose retries ran out
-- (with the targets still owed them) and malformed messages. `id` is the event
-- id, or `msg:<queue message id>` for a malformed message.
CREATE TABLE dead_letters (
  id         TEXT PRIMARY KEY,
  event_type TEXT,
  reason     TEXT NOT NULL,
  body       TEXT NOT NULL,
  failed     TEXT NOT NULL,  -- JSON array of {target, attempts, last_error}
  dead_at    INTEGER NOT NULL
);
CREATE INDEX dead_letters_dead_at ON dead_letters(dead_at);
