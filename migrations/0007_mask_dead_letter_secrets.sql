-- Secrets at rest: rows recorded before events' one-time secrets were sealed
-- may hold magic-link, reset and verification tokens and email codes in
-- clear. Idempotent: running it again changes nothing.
--
-- 1. Dead letters' bodies: a `data.token` or `data.code` that is not sealed
--    (`{"sealed": …}`, an object) is masked, whatever the message's type and
--    whatever its JSON type — as the dead-letter consumer now does for any
--    message, also a malformed one, that arrives with a secret in clear.
UPDATE dead_letters
   SET body = json_set(body, '$.data.token', '[redacted]')
 WHERE json_valid(body)
   AND json_type(body, '$.data.token') IS NOT NULL
   AND json_type(body, '$.data.token') <> 'object'
   AND json_extract(body, '$.data.token') IS NOT '[redacted]';

UPDATE dead_letters
   SET body = json_set(body, '$.data.code', '[redacted]')
 WHERE json_valid(body)
   AND json_type(body, '$.data.code') IS NOT NULL
   AND json_type(body, '$.data.code') <> 'object'
   AND json_extract(body, '$.data.code') IS NOT '[redacted]';

-- A body that is not JSON (cut at 32 KiB) is withheld if it may hold one.
UPDATE dead_letters
   SET body = '[withheld: ' || length(body) || ' characters, not JSON, that may hold a secret]'
 WHERE NOT json_valid(body)
   AND (lower(body) LIKE '%token%' OR lower(body) LIKE '%code%');

-- 2. What failing receivers answered: a reply that echoed the request was
--    scrubbed of the secret only after it was cut to 200 characters, so a
--    cut through the secret left a prefix of it. The secret itself cannot be
--    known here, so for the four secret-carrying events the reply text is
--    withheld and only `HTTP <status>:` kept — in `event_deliveries` and in
--    the `failed` targets of dead letters. Other failures (timeouts, network
--    errors, an unusable address) never quote a reply and are kept.
UPDATE event_deliveries
   SET last_error = substr(last_error, 1, instr(last_error, ':')) || ' [reply withheld]'
 WHERE event_type IN ('magic_link_requested', 'email_otp_requested', 'password_reset_requested', 'email_verification_requested')
   AND last_error LIKE 'HTTP %:%'
   AND last_error NOT LIKE 'HTTP %: [reply withheld]';

UPDATE dead_letters
   SET failed = (
         SELECT json_group_array(json(
                  CASE WHEN json_extract(value, '$.last_error') LIKE 'HTTP %:%'
                        AND json_extract(value, '$.last_error') NOT LIKE 'HTTP %: [reply withheld]'
                       THEN json_set(value, '$.last_error',
                              substr(json_extract(value, '$.last_error'), 1, instr(json_extract(value, '$.last_error'), ':'))
                              || ' [reply withheld]')
                       ELSE value END))
           FROM json_each(dead_letters.failed))
 WHERE event_type IN ('magic_link_requested', 'email_otp_requested', 'password_reset_requested', 'email_verification_requested')
   AND json_valid(failed)
   AND json_type(failed) = 'array';
