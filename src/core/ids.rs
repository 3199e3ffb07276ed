//! The identifiers and secrets drawn from randomness ([`Random`]).

use sha2::{Digest, Sha256};

pub use crate::core::random::Random;

/// A random UUID (version 4), the form of user, session and event ids.
pub fn uuid(rng: &mut impl Random) -> String {
    uuid::Builder::from_random_bytes(rng.bytes::<16>()).into_uuid().to_string()
}

/// An opaque secret of 256 random bits, base64url without padding (43 chars):
/// refresh tokens, magic-link and verification tokens.
pub fn secret_token(rng: &mut impl Random) -> String {
    b64url(rng.bytes::<32>())
}

/// The SHA-256 of a secret token, base64url: what storage keeps instead of the
/// token, so a leaked table grants nothing.
pub fn token_hash(token: &str) -> String {
    b64url(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Random;

    /// A deterministic generator for tests (xorshift; not for production).
    pub struct SeqRandom(pub u64);

    impl Random for SeqRandom {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                *b = (self.0 >> 24) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::SeqRandom;
    use super::*;

    #[test]
    fn uuid_is_version_4() {
        let id = uuid(&mut SeqRandom(7));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn secret_tokens_carry_256_bits_and_differ() {
        let mut rng = SeqRandom(1);
        let a = secret_token(&mut rng);
        let b = secret_token(&mut rng);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn token_hash_is_sha256_base64url() {
        assert_eq!(token_hash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }
}
use crate::core::crypto::b64url;
