-- A link belongs to the session that started it: it completes only while
-- that session is live, so signing out (logout, revoke-others) stops a link
-- in progress too, not only a password change.
ALTER TABLE oauth_states ADD COLUMN link_session_id TEXT;
