-- Passkeys (WebAuthn): the credentials, and the challenges of ceremonies in
-- flight. Times are Unix seconds.

-- A user's passkeys. `credential_id` (base64url) is unique across users;
-- `public_key` is the COSE_Key as registered (base64url), `alg` its COSE
-- algorithm (-7 ES256, -8 EdDSA). `sign_count` only grows: a sign-in is
-- recorded by one conditional UPDATE that refuses a counter not above it
-- (unless both are 0). Removing a passkey revokes the user's other sessions
-- in the same batch (a change of factors: see 0008's triggers).
CREATE TABLE passkeys (
  id              TEXT PRIMARY KEY,
  user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  credential_id   TEXT NOT NULL UNIQUE,
  public_key      TEXT NOT NULL,
  alg             INTEGER NOT NULL,
  sign_count      INTEGER NOT NULL DEFAULT 0,
  backup_eligible INTEGER NOT NULL DEFAULT 0,
  backed_up       INTEGER NOT NULL DEFAULT 0,
  transports      TEXT NOT NULL DEFAULT '',
  aaguid          TEXT NOT NULL DEFAULT '',
  name            TEXT NOT NULL,
  created_at      INTEGER NOT NULL,
  last_used_at    INTEGER
);
CREATE INDEX passkeys_user ON passkeys(user_id);

-- Ceremony challenges: single use (consumed by one conditional DELETE …
-- RETURNING), short-lived. `ceremony` is `register` (bound to `user_id`,
-- found by its challenge) or `login` (bound to nobody, found by `id`, the
-- `challenge_id`). Expired rows are pruned by the cron trigger.
CREATE TABLE passkey_challenges (
  id         TEXT PRIMARY KEY,
  ceremony   TEXT NOT NULL CHECK (ceremony IN ('register', 'login')),
  challenge  TEXT NOT NULL,
  user_id    TEXT REFERENCES users(id) ON DELETE CASCADE,
  name       TEXT,
  expires_at INTEGER NOT NULL
);
CREATE INDEX passkey_challenges_user ON passkey_challenges(user_id, challenge);
CREATE INDEX passkey_challenges_expiry ON passkey_challenges(expires_at);
