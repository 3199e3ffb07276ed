-- The app's PKCE S256 `code_challenge` a sign-in started at
-- /auth/oauth/{id}/authorize: the exchange code its callback issues is
-- bound to it (swapped only with the app's `code_verifier`). NULL: a link,
-- or a cookie-mode sign-in started without one.
ALTER TABLE oauth_states ADD COLUMN code_challenge TEXT;
