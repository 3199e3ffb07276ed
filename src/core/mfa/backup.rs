//! Backup codes: ten single-use codes handed out when TOTP is turned on (and
//! on request, the old ones then dying), for signing in without the
//! authenticator app.
//!
//! A code is ten symbols of Crockford's base32 alphabet (50 random bits),
//! shown as `xxxxx-xxxxx`; read back case-insensitively, dashes and spaces
//! ignored, `i`/`l` as `1` and `o` as `0`. Storage keeps only an HMAC-SHA256
//! of each code under a subkey of `KEY_ENCRYPTION_KEY`, bound to its user id:
//! a leaked table is useless without that secret, and a code is found by its
//! tag without a scan. A code is used up by deleting its row, one
//! conditional write ([`crate::core::ports::MfaStore::use_backup_code`]).

use std::fmt;

use crate::core::crypto::{b64url, MacKey};
use crate::core::ids::{Random, UserId};
use crate::core::signing_keys::Kek;

/// Backup codes handed out at a time.
pub const BACKUP_CODE_COUNT: usize = 10;
/// Symbols in a backup code.
pub const BACKUP_CODE_SYMBOLS: usize = 10;
/// Crockford's base32 alphabet, lowercase: no `i`, `l`, `o` or `u`.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Label of the `KEY_ENCRYPTION_KEY` subkey that tags backup codes.
const MAC_KEY_LABEL: &str = "portcullis.mfa-backup-codes";

/// A fresh backup code, `xxxxx-xxxxx`. Each symbol takes five random bits
/// (32 divides 256, so every symbol is equally likely).
pub fn generate(rng: &mut impl Random) -> String {
    let bytes: [u8; BACKUP_CODE_SYMBOLS] = rng.bytes();
    let mut code = String::with_capacity(BACKUP_CODE_SYMBOLS + 1);
    for (i, b) in bytes.iter().enumerate() {
        if i == BACKUP_CODE_SYMBOLS / 2 {
            code.push('-');
        }
        code.push(char::from(ALPHABET[usize::from(b & 0x1f)]));
    }
    code
}

/// `raw` as a backup code's canonical ten symbols, or `None` when it cannot
/// be one.
pub fn normalize(raw: &str) -> Option<String> {
    if raw.len() > 32 {
        return None;
    }
    let mut out = String::with_capacity(BACKUP_CODE_SYMBOLS);
    for c in raw.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' => continue,
            'i' | 'l' => '1',
            'o' => '0',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        out.push(c);
    }
    (out.len() == BACKUP_CODE_SYMBOLS).then_some(out)
}

/// The key backup codes are tagged with. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct BackupCodeKey(MacKey);

impl fmt::Debug for BackupCodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupCodeKey(<redacted>)")
    }
}

impl BackupCodeKey {
    /// The tagging key of a deployment.
    pub fn from_kek(kek: &Kek) -> Self {
        Self(MacKey::from_32(&kek.derive(MAC_KEY_LABEL)))
    }

    /// The stored form of the normalised code `code` of account `user_id`
    /// (each part length-prefixed, so no two inputs read alike).
    pub fn hash(&self, user_id: &UserId, code: &str) -> String {
        let lens = [user_id, code].map(|part| (part.len() as u64).to_be_bytes());
        b64url(self.0.tag(&[&lens[0], user_id.as_bytes(), &lens[1], code.as_bytes()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    #[test]
    fn codes_are_ten_symbols_in_two_groups_and_vary() {
        let mut rng = SeqRandom(21);
        let codes: Vec<String> = (0..200).map(|_| generate(&mut rng)).collect();
        for c in &codes {
            assert_eq!(c.len(), 11, "{c}");
            assert_eq!(&c[5..6], "-");
            assert_eq!(normalize(c).unwrap(), c.replace('-', ""));
        }
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
    }

    #[test]
    fn input_is_read_forgivingly_but_only_as_ten_symbols() {
        assert_eq!(normalize("ABCDE-FGH12").as_deref(), Some("abcdefgh12"));
        assert_eq!(normalize(" abcde fgh12 ").as_deref(), Some("abcdefgh12"));
        assert_eq!(normalize("Oolli-23456").as_deref(), Some("00111-23456".replace('-', "").as_str()));
        for bad in ["", "abcde-fgh1", "abcde-fgh123", "abcde-fghu2", "abcdé-fgh12", "123456", &"a".repeat(40)] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tags_bind_the_account_and_the_key() {
        let key = BackupCodeKey::from_kek(&Kek::from_bytes([3; 32]));
        let t = key.hash(&"u1".into(), "abcdefgh12");
        assert_eq!(t, key.hash(&"u1".into(), "abcdefgh12"));
        assert_ne!(t, key.hash(&"u2".into(), "abcdefgh12"));
        assert_ne!(t, key.hash(&"u1".into(), "abcdefgh13"));
        assert_ne!(t, BackupCodeKey::from_kek(&Kek::from_bytes([4; 32])).hash(&"u1".into(), "abcdefgh12"));
        assert_eq!(format!("{key:?}"), "BackupCodeKey(<redacted>)");
    }
}
