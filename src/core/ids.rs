//! The identifiers and secrets drawn from randomness ([`Random`]): the
//! opaque ids of users ([`UserId`]) and sessions ([`SessionId`]), event ids,
//! and secret tokens.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::core::random::Random;

/// A random UUID (version 4), the form of user, session and event ids.
pub fn uuid(rng: &mut impl Random) -> String {
    uuid::Builder::from_random_bytes(rng.bytes::<16>()).into_uuid().to_string()
}

/// Defines an opaque id newtype over `String`: serialised as the bare string,
/// shown as it is, compared with strings, borrowed as `&str`.
macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new random id (a UUID v4).
            pub fn generate(rng: &mut impl Random) -> Self {
                Self(uuid(rng))
            }

            /// An id as stored, claimed by a token we signed, or named by a
            /// request: its text is not checked (ids are opaque; an unknown
            /// one simply finds nothing).
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// Its text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == &other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_string())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

opaque_id! {
    /// A user's id: a UUID minted by core at sign-up ([`UserId::generate`]),
    /// opaque everywhere else — the JSON `id` of a user, a token's `sub`,
    /// `user_id` in sessions, events, audit rows and D1 columns. Serialised
    /// as the bare string.
    UserId
}

opaque_id! {
    /// A session's id: a UUID minted by core at sign-in
    /// ([`SessionId::generate`]), opaque everywhere else — a token's `sid`,
    /// the JSON `id` of a session and `session_id` in responses, events and
    /// D1 columns. Serialised as the bare string.
    SessionId
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
    fn ids_serialise_as_the_bare_string_and_compare_with_text() {
        let user = UserId::generate(&mut SeqRandom(7));
        assert_eq!(user.as_str(), uuid(&mut SeqRandom(7)));
        assert_eq!(serde_json::to_string(&user).unwrap(), format!("\"{user}\""));
        let sid: SessionId = serde_json::from_str("\"s-1\"").unwrap();
        assert_eq!(sid, "s-1");
        assert_eq!(String::from(sid), "s-1");
    }

    #[test]
    fn token_hash_is_sha256_base64url() {
        assert_eq!(token_hash("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }
}
use crate::core::crypto::b64url;
