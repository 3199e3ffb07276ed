-- The set of backup codes a TOTP has: `backup_set` names the set its
-- confirmation or its last regeneration made (NULL: a set made before this
-- column). A regeneration replaces the set it read, decided by one
-- conditional write, so of racing regenerations exactly one hands out codes
-- that work.
ALTER TABLE mfa_totp ADD COLUMN backup_set TEXT;
