-- The revocation log records only sessions that may still carry a valid
-- access token (see 0008_revocations.sql and docs/revocation.md).
--
-- An access token is minted only when a session signs in or refreshes, and
-- both set `last_used_at`. ACCESS_TTL is at most 23 hours, so a token of a
-- session idle for a day has expired, with every margin
-- (core::revocation::LOGGED_SESSION_IDLE_SECS). Revoking such a session, or
-- deleting it, is not logged: revoking every session of an old account, or
-- of many accounts, no longer fills the log and every isolate with sessions
-- that carry nothing to refuse.
--
-- The row is stamped with the time it is written, not with the revoked_at
-- the statement wrote: a row dated in the past (an operator setting an old
-- revoked_at by hand) would be skipped by readers as already expired.
--
-- Comments here hold no semicolon or quote: a statement splitter that does
-- not know comments must not be led astray.
DROP TRIGGER revocations_session_revoked;
DROP TRIGGER revocations_session_deleted;

CREATE TRIGGER revocations_session_revoked AFTER UPDATE OF revoked_at ON sessions
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL AND OLD.last_used_at > unixepoch() - 86400
BEGIN
  INSERT INTO revocations (kind, subject, at) VALUES ('session', NEW.id, unixepoch());
END;

CREATE TRIGGER revocations_session_deleted AFTER DELETE ON sessions
WHEN OLD.revoked_at IS NULL AND OLD.last_used_at > unixepoch() - 86400
BEGIN
  INSERT INTO revocations (kind, subject, at) VALUES ('session', OLD.id, unixepoch());
END;
