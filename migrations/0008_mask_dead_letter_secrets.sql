-- Secrets at rest: dead letters recorded before events' one-time secrets were
-- sealed hold magic-link, reset and verification tokens and email codes in
-- clear. Mask them, as the dead-letter consumer now does for any message that
-- arrives with its secret in clear; sealed ones (`{"sealed": …}`, not text)
-- are left as they are.
UPDATE dead_letters
   SET body = json_set(body, '$.data.token', '[redacted]')
 WHERE json_valid(body)
   AND json_extract(body, '$.type') IN ('magic_link_requested', 'password_reset_requested', 'email_verification_requested')
   AND json_type(body, '$.data.token') = 'text';

UPDATE dead_letters
   SET body = json_set(body, '$.data.code', '[redacted]')
 WHERE json_valid(body)
   AND json_extract(body, '$.type') = 'email_otp_requested'
   AND json_type(body, '$.data.code') = 'text';
