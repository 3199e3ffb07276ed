-- The language asked for when an emailed sign-in secret was issued to an
-- address without an account (`locale` of POST /auth/magic-link or
-- /auth/otp, normalised). The account a password-less sign-up creates from
-- that secret keeps it as `users.locale`. NULL: none asked, or the secret
-- was issued for an existing account.
ALTER TABLE email_tokens ADD COLUMN locale TEXT;
