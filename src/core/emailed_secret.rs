//! Single-use secrets sent by email — magic links, six-digit codes, password
//! reset and email verification tokens: their kinds, their stored records,
//! and the drawing and keyed hashing of codes.
//!
//! Storage never sees a raw secret. A link token (256 random bits) is kept as
//! its SHA-256 ([`crate::core::ids::token_hash`]). A six-digit code has only
//! 20 bits, so a plain hash would fall to a brute force in a second; it is
//! kept as an HMAC under a key derived from `KEY_ENCRYPTION_KEY` (a secret
//! that is not in the database), bound to its challenge and email.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::core::crypto::{b64url, MacKey, MAC_LEN};
use crate::core::ids::{Random, UserId};
use crate::core::signing_keys::Kek;
use crate::core::time::UnixTime;

/// Digits in an email one-time code.
pub const OTP_DIGITS: usize = 6;
/// Attempts a code survives; the attempt after the last wrong one finds it dead.
pub const OTP_MAX_ATTEMPTS: u32 = 5;
/// Longest link token looked up (ours are 43 characters).
pub const MAX_LINK_TOKEN_LEN: usize = 256;

/// What an emailed secret is for; each kind has its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `POST /auth/magic-link`: a sign-in link.
    MagicLink,
    /// `POST /auth/otp`: a six-digit sign-in code.
    EmailOtp,
    /// `POST /auth/password/forgot`: a password reset link.
    PasswordReset,
    /// `POST /auth/email/verify/request`: an email verification link.
    EmailVerification,
}

impl TokenKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MagicLink => "magic_link",
            Self::EmailOtp => "email_otp",
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
        }
    }

    /// The kind with this stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::MagicLink, Self::EmailOtp, Self::PasswordReset, Self::EmailVerification]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// An emailed secret as stored: at most one is live per kind and email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailToken {
    /// SHA-256 of the link token; for a code, of a random challenge secret
    /// (the code itself is in `code_hash`). Unique.
    pub hash: String,
    /// What it is for.
    pub kind: TokenKind,
    /// The normalised address it was sent to.
    pub email: String,
    /// The account it was issued for; `None` for a passwordless sign-up.
    pub user_id: Option<UserId>,
    /// That account's epoch when it was looked up to issue the token (0
    /// without an account): the token dies when the epoch moves.
    pub user_epoch: u64,
    /// For codes: the keyed hash of the code ([`CodeKey::hash`]).
    pub code_hash: Option<String>,
    /// Issued at.
    pub created_at: UnixTime,
    /// Unusable from this instant on.
    pub expires_at: UnixTime,
    /// Attempts counted against a code, the current one included.
    pub attempts: u32,
}

/// A uniformly random code of [`OTP_DIGITS`] decimal digits (rejection
/// sampling, so no value is more likely than another).
pub fn otp_code(rng: &mut impl Random) -> String {
    const SPACE: u32 = 1_000_000;
    // The largest multiple of SPACE that fits in a u32: draws at or above it
    // would make the low codes more likely.
    const LIMIT: u32 = u32::MAX - (u32::MAX % SPACE) - 1;
    loop {
        let n = u32::from_be_bytes(rng.bytes::<4>());
        if n <= LIMIT {
            return format!("{:06}", n % SPACE);
        }
    }
}

/// `raw` if it is a code's shape: exactly [`OTP_DIGITS`] ASCII digits
/// (surrounding whitespace ignored).
pub fn parse_code(raw: &str) -> Option<&str> {
    let code = raw.trim();
    (code.len() == OTP_DIGITS && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// Whether `raw` has the shape of a link token: base64url, 1 to
/// [`MAX_LINK_TOKEN_LEN`] characters. Anything else is refused unread.
pub fn is_link_token(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_LINK_TOKEN_LEN
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The key codes are hashed with, derived from `KEY_ENCRYPTION_KEY`.
/// Its `Debug` prints nothing.
#[derive(Clone)]
pub struct CodeKey(MacKey);

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

impl CodeKey {
    /// The code-hashing key of a deployment.
    pub fn from_kek(kek: &Kek) -> Self {
        Self(MacKey::from_32(&kek.derive("portcullis email-otp v1")))
    }

    /// Each part length-prefixed, so no two inputs read alike.
    fn mac(&self, challenge: &str, email: &str, code: &str) -> [u8; MAC_LEN] {
        let lens = [challenge, email, code].map(|part| (part.len() as u64).to_be_bytes());
        self.0.tag(&[&lens[0], challenge.as_bytes(), &lens[1], email.as_bytes(), &lens[2], code.as_bytes()])
    }

    /// The stored form of `code` for the challenge `challenge` sent to `email`.
    pub fn hash(&self, challenge: &str, email: &str, code: &str) -> String {
        b64url(self.mac(challenge, email, code))
    }

    /// Whether `code` matches `stored`, in constant time.
    pub fn verify(&self, challenge: &str, email: &str, code: &str, stored: &str) -> bool {
        let expected = self.hash(challenge, email, code);
        bool::from(expected.as_bytes().ct_eq(stored.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;
    use proptest::prelude::*;

    #[test]
    fn codes_are_six_digits_and_vary() {
        let mut rng = SeqRandom(11);
        let codes: Vec<String> = (0..50).map(|_| otp_code(&mut rng)).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert!(unique.len() > 45);
    }

    /// A source that first yields draws in the rejected tail, then a fixed value.
    struct Tail(u32);
    impl Random for Tail {
        fn fill(&mut self, buf: &mut [u8]) {
            let v = if self.0 > 0 {
                self.0 -= 1;
                u32::MAX
            } else {
                1_000_042
            };
            buf.copy_from_slice(&v.to_be_bytes()[..buf.len()]);
        }
    }

    #[test]
    fn draws_in_the_biased_tail_are_rejected() {
        assert_eq!(otp_code(&mut Tail(3)), "000042");
    }

    #[test]
    fn code_shape_is_exactly_six_digits() {
        assert_eq!(parse_code(" 012345 "), Some("012345"));
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６", "12 345"] {
            assert_eq!(parse_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn code_hashes_bind_challenge_email_and_key() {
        let key = CodeKey::from_kek(&Kek::from_bytes([3; 32]));
        let h = key.hash("c1", "a@example.com", "123456");
        assert!(key.verify("c1", "a@example.com", "123456", &h));
        assert!(!key.verify("c1", "a@example.com", "123457", &h));
        assert!(!key.verify("c2", "a@example.com", "123456", &h));
        assert!(!key.verify("c1", "b@example.com", "123456", &h));
        let other = CodeKey::from_kek(&Kek::from_bytes([4; 32]));
        assert!(!other.verify("c1", "a@example.com", "123456", &h));
        assert!(!format!("{key:?}").contains('3'));
    }

    #[test]
    fn kinds_round_trip() {
        for k in [TokenKind::MagicLink, TokenKind::EmailOtp, TokenKind::PasswordReset, TokenKind::EmailVerification] {
            assert_eq!(TokenKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TokenKind::parse("other"), None);
    }

    proptest! {
        #[test]
        fn shape_checks_never_panic(s in "\\PC{0,300}") {
            let _ = parse_code(&s);
            let _ = is_link_token(&s);
        }
    }
}
