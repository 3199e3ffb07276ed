-- Users, roles, sessions (one row per refresh-token family) and signing keys.
-- Times are Unix seconds (INTEGER); ids are opaque TEXT.

CREATE TABLE users (
  id             TEXT PRIMARY KEY,
  email          TEXT NOT NULL UNIQUE,
  name           TEXT,
  password_hash  TEXT,
  email_verified INTEGER NOT NULL DEFAULT 0,
  avatar_url     TEXT,
  phone          TEXT,
  banned         INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL,
  updated_at     INTEGER NOT NULL
);

CREATE TABLE user_roles (
  user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (user_id, role)
);

-- A session is a refresh-token family: `refresh_hash` is the SHA-256 of the one
-- live refresh token; every token ever issued to the family is in refresh_tokens,
-- so presenting a rotated one is recognised as reuse.
CREATE TABLE sessions (
  id            TEXT PRIMARY KEY,
  user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  refresh_hash  TEXT NOT NULL UNIQUE,
  created_at    INTEGER NOT NULL,
  last_used_at  INTEGER NOT NULL,
  expires_at    INTEGER NOT NULL,
  revoked_at    INTEGER,
  revoke_reason TEXT,
  ip_address    TEXT,
  user_agent    TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
  hash       TEXT PRIMARY KEY,
  session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  issued_at  INTEGER NOT NULL
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

-- Signing keys: the private half is AES-256-GCM encrypted with KEY_ENCRYPTION_KEY.
-- At most one key is active (partial unique index), so racing first-use
-- generations cannot create two.
CREATE TABLE signing_keys (
  kid          TEXT PRIMARY KEY,
  alg          TEXT NOT NULL,
  public_key   TEXT NOT NULL,
  private_enc  TEXT NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('active', 'retired')),
  created_at   INTEGER NOT NULL,
  retired_at   INTEGER,
  -- after this time no token signed by the key can still be valid: drop from JWKS
  publish_until INTEGER
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys(status) WHERE status = 'active';
