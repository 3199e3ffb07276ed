-- A sign-in's second step started by a passkey without user verification is
-- bound to that passkey: `passkey_id` is its id (NULL for every other first
-- step), and the session is opened only while that passkey is still the
-- account's (its removal, or an administrator's reset, voids the step).
ALTER TABLE mfa_challenges ADD COLUMN passkey_id TEXT;

-- A sign-in challenge remembers the `allowCredentials` it was issued with:
-- the credential ids (base64url), separated by a space, that may answer it.
-- NULL for a discoverable sign-in (the list was empty: the answer must then
-- carry its user handle) and for registration challenges.
ALTER TABLE passkey_challenges ADD COLUMN allowed_credentials TEXT;
