-- Sign-in with OAuth / OIDC providers. Times are Unix seconds (INTEGER).

-- A provider identity linked to a user: at most one per (provider, subject),
-- and one per provider per user. Deleted with the user.
CREATE TABLE oauth_accounts (
  provider       TEXT NOT NULL,
  subject        TEXT NOT NULL,
  user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  email          TEXT,
  email_verified INTEGER NOT NULL DEFAULT 0,
  linked_at      INTEGER NOT NULL,
  PRIMARY KEY (provider, subject)
);
CREATE UNIQUE INDEX oauth_accounts_user_provider ON oauth_accounts(user_id, provider);

-- Sign-ins in progress, keyed by the SHA-256 of their `state`: consumed by a
-- single DELETE ... RETURNING, so of racing callbacks exactly one gets it.
CREATE TABLE oauth_states (
  hash          TEXT PRIMARY KEY,
  provider      TEXT NOT NULL,
  code_verifier TEXT NOT NULL,
  nonce         TEXT NOT NULL,
  redirect_to   TEXT NOT NULL,
  link_user_id  TEXT REFERENCES users(id) ON DELETE CASCADE,
  binding_hash  TEXT NOT NULL,
  created_at    INTEGER NOT NULL,
  expires_at    INTEGER NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states(expires_at);

-- One-time codes the app swaps for a finished sign-in's tokens: keyed by the
-- code's SHA-256, the tokens sealed (AES-256-GCM) under a key derived from
-- the code itself, so a row is useless without the code. Single use as above.
CREATE TABLE oauth_exchange_codes (
  hash       TEXT PRIMARY KEY,
  sealed     TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX oauth_exchange_codes_expiry ON oauth_exchange_codes(expires_at);
