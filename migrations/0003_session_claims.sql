-- Claims the sign-in hook added when the session started (a JSON object, NULL
-- for none): every access token of the session carries them, refreshed ones too.
ALTER TABLE sessions ADD COLUMN extra_claims TEXT;
