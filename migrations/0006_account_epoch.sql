-- The account epoch: a counter per user, bumped in the same write as every
-- change that must void what was granted before it — a password change or
-- reset, a ban, a new email address, and the takeover of an unverified
-- account by the first proof of its address. What was granted under an
-- older epoch dies with it:
--   * an emailed token (magic link, code, reset or verification link) is
--     consumed only while its `user_epoch` is still the account's;
--   * a session is created only if the account's epoch is still the one the
--     sign-in read (a password login racing a reset, a ban or a takeover
--     loses);
--   * an OAuth link started by a signed-in user (`link_epoch`) completes
--     only while the epoch is unchanged.
-- Rows written before this migration carry 0, the epoch every account starts at.
ALTER TABLE users ADD COLUMN auth_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE email_tokens ADD COLUMN user_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE oauth_states ADD COLUMN link_epoch INTEGER NOT NULL DEFAULT 0;
