-- Users' languages: the BCP 47 tag given at sign-up (normalised, e.g. `fr`,
-- `pt-BR`), in which their emails are written. NULL: not known (the
-- emails then use the request's `locale`, or the first of EMAIL_LOCALES).
ALTER TABLE users ADD COLUMN locale TEXT;
