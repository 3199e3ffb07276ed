-- Revocations the gateway must honour before the access tokens they affect
-- expire (REVOCATION_LAG, see docs/revocation.md). Every isolate keeps them in
-- memory and reads the rows added since its last read (`seq` > the last one
-- it saw): `seq` only grows, and D1 runs one write at a time, so a row is
-- never committed behind one a reader has already passed.
--
--   kind session: session `subject` was revoked (or deleted while live) at
--     `at`, and every access token it carries is refused.
--   kind roles: the roles of user `subject` changed at `at`, and `roles` is
--     the comma-separated set the user holds after the change (NULL: none).
--     A token of that user claiming a role outside the set was issued before
--     the change and is refused. The next refresh carries the new roles.
--
-- A row matters for as long as a token issued before it can be valid:
-- `at` + ACCESS_TTL + twice the verification leeway + a margin for requests
-- in flight (core::revocation::retention_secs). Readers ignore older rows and
-- the scheduled upkeep deletes them. The lifetime is computed from `at` with
-- the ACCESS_TTL in force, never stored.
--
-- The rows are written by triggers, inside the very statement that revokes
-- a session or changes a role: no write path (the API, a cascade from a
-- deleted user, SQL run by an operator such as `npm run admin:grant`) can
-- revoke without recording it, nor record without revoking. D1 counts the
-- rows a trigger writes in the `changes` of the statement that fired it, so
-- such statements are counted by their RETURNING rows (src/edge/d1).
--
-- Comments here hold no semicolon or quote: a statement splitter that does
-- not know comments must not be led astray.
CREATE TABLE revocations (
  seq     INTEGER PRIMARY KEY AUTOINCREMENT,
  kind    TEXT NOT NULL CHECK (kind IN ('session', 'roles')),
  subject TEXT NOT NULL,
  roles   TEXT,
  at      INTEGER NOT NULL
);
CREATE INDEX revocations_at ON revocations(at);

CREATE TRIGGER revocations_session_revoked AFTER UPDATE OF revoked_at ON sessions
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
  INSERT INTO revocations (kind, subject, at) VALUES ('session', NEW.id, NEW.revoked_at);
END;

CREATE TRIGGER revocations_session_deleted AFTER DELETE ON sessions
WHEN OLD.revoked_at IS NULL
BEGIN
  INSERT INTO revocations (kind, subject, at) VALUES ('session', OLD.id, unixepoch());
END;

CREATE TRIGGER revocations_role_added AFTER INSERT ON user_roles
BEGIN
  INSERT INTO revocations (kind, subject, roles, at)
  VALUES ('roles', NEW.user_id, (SELECT group_concat(role, ',') FROM user_roles WHERE user_id = NEW.user_id), unixepoch());
END;

CREATE TRIGGER revocations_role_removed AFTER DELETE ON user_roles
BEGIN
  INSERT INTO revocations (kind, subject, roles, at)
  VALUES ('roles', OLD.user_id, (SELECT group_concat(role, ',') FROM user_roles WHERE user_id = OLD.user_id), unixepoch());
END;
