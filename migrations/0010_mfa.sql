-- Strong authentication: second factors, the sign-ins waiting for their
-- second step, and how each session signed in. Times are Unix seconds.

-- A user's TOTP (RFC 6238). The secret is sealed (AES-256-GCM under a subkey
-- of KEY_ENCRYPTION_KEY, bound to the user id). Enrolled until confirmed with
-- a code (`confirmed_at`); only then is it on. `last_step` is the last time
-- step accepted: a code is accepted only for a later step, decided by one
-- conditional UPDATE, so a code works once.
CREATE TABLE mfa_totp (
  user_id      TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
  secret       TEXT NOT NULL,
  created_at   INTEGER NOT NULL,
  confirmed_at INTEGER,
  last_step    INTEGER
);

-- Unused backup codes, kept as HMAC-SHA256 tags under a subkey of
-- KEY_ENCRYPTION_KEY, bound to the user id. Using a code deletes its row.
CREATE TABLE mfa_backup_codes (
  user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  hash       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, hash)
);

-- Sign-ins waiting for their second step, keyed by the SHA-256 of their
-- `mfa_token`, bound to the first step (account epoch, provider, amr, the
-- provider identity it came through). Attempts are counted by one
-- conditional UPDATE; the token is consumed by one conditional DELETE.
-- Expired rows are pruned by the cron trigger.
CREATE TABLE mfa_challenges (
  hash              TEXT PRIMARY KEY,
  user_id           TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  user_epoch        INTEGER NOT NULL,
  provider          TEXT NOT NULL,
  amr               TEXT NOT NULL,
  identity_provider TEXT,
  identity_subject  TEXT,
  attempts          INTEGER NOT NULL DEFAULT 0,
  created_at        INTEGER NOT NULL,
  expires_at        INTEGER NOT NULL
);
CREATE INDEX mfa_challenges_user ON mfa_challenges(user_id);
CREATE INDEX mfa_challenges_expiry ON mfa_challenges(expires_at);

-- How each session's user signed in: RFC 8176 values separated by spaces
-- (`pwd otp mfa`). NULL for sessions from before: their tokens carry no amr.
ALTER TABLE sessions ADD COLUMN amr TEXT;
