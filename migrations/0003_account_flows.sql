-- Account flows: single-use secrets sent by email (magic links, sign-in codes,
-- password reset and email verification tokens), and an index for listing users.
--
-- Only hashes are stored: SHA-256 of a link token; for a code, the hash of a
-- random challenge plus an HMAC of the code (`code_hash`). At most one token
-- per kind and address is live (partial unique index): issuing a new one marks
-- the previous one consumed in the same batch. Consumption and the counting of
-- code attempts are single conditional UPDATEs, so of racing requests exactly
-- one consumes a token and every attempt is counted.
CREATE TABLE email_tokens (
  hash        TEXT PRIMARY KEY,
  kind        TEXT NOT NULL CHECK (kind IN ('magic_link', 'email_otp', 'password_reset', 'email_verification')),
  email       TEXT NOT NULL,
  -- NULL for a passwordless sign-up (no account yet)
  user_id     TEXT REFERENCES users(id) ON DELETE CASCADE,
  code_hash   TEXT,
  created_at  INTEGER NOT NULL,
  expires_at  INTEGER NOT NULL,
  -- set when used, superseded by a newer token, or spent
  consumed_at INTEGER,
  attempts    INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX email_tokens_one_live ON email_tokens(kind, email) WHERE consumed_at IS NULL;
CREATE INDEX email_tokens_user ON email_tokens(user_id);
CREATE INDEX email_tokens_expiry ON email_tokens(expires_at);

CREATE INDEX users_created ON users(created_at);
