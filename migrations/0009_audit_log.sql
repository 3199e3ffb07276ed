-- The audit log: one entry per auth event, written by the queue consumer
-- (keyed by the event id, so once however often the message comes), read by
-- GET /auth/admin/audit and GET /auth/audit, purged by the cron trigger
-- after AUDIT_RETENTION_DAYS. Times are Unix seconds (INTEGER).
--
-- `data` is the event's data as JSON without its one-time secret (the
-- `token` or `code` of the four *_requested events is never written here).
-- `user_id` is the user the event concerns, or the account that had the
-- address it names; `actor_id` the administrator who acted through the
-- admin API. Entries outlive the users they name until they are purged.
CREATE TABLE audit_log (
  id         TEXT PRIMARY KEY,
  type       TEXT NOT NULL,
  user_id    TEXT,
  actor_id   TEXT,
  outcome    TEXT NOT NULL,  -- 'success' or 'failure'
  ip_address TEXT,
  user_agent TEXT,
  at         INTEGER NOT NULL,
  data       TEXT NOT NULL
);
-- Pages are read newest first by (at, id), under each filter.
CREATE INDEX audit_log_user_at ON audit_log(user_id, at, id);
CREATE INDEX audit_log_type_at ON audit_log(type, at, id);
CREATE INDEX audit_log_at ON audit_log(at, id);
