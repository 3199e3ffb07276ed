-- Login attempts in flight (core::rate_limit::LoginRecord): each attempt the
-- back-off admits adds one here, as it adds a failure, and takes it back when
-- its check fails; a success deletes the row. A login refused while attempts
-- admitted moments ago are still counted waits briefly for one of them to
-- clear the record, so concurrent logins with the right password all get in.
ALTER TABLE login_failures ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
