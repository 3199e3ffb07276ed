-- The audit log's own view (GET /auth/audit), by type and since a takeover.
--
-- `?type=` on a user's own entries reads (user_id, type) newest first: with
-- only (user_id, at, id) it walked every entry of the user to find the few
-- of one type.
CREATE INDEX audit_log_user_type_at ON audit_log(user_id, type, at, id);

-- When the account was last taken over (src/core/takeover.rs: a proof of
-- the address of an unverified account), set in the takeover's own write.
-- A user's own view starts there: what the earlier holder did, and from
-- which IP addresses and clients, is not the new holder's to read.
ALTER TABLE users ADD COLUMN taken_over_at INTEGER;
