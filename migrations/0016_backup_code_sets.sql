-- The set of backup codes a TOTP has: `backup_set` names the set the last
-- regeneration made (NULL: the set its confirmation made). A regeneration
-- replaces the set it read, decided by one conditional write, so of racing
-- regenerations exactly one hands out codes that work.
ALTER TABLE mfa_totp ADD COLUMN backup_set TEXT;
