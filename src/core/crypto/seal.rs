//! Sealing small secrets at rest: AES-256-GCM under a 32-byte key, with a
//! fresh random 96-bit nonce per seal, kept as
//! `base64url(nonce || ciphertext || tag)`, and bound by associated data to
//! what it belongs to, so a sealed value copied onto another record — or
//! left on a record whose bound parts were changed — does not open. What
//! the caller binds is its choice, and its guarantee: a signing key's `kid`;
//! for an event's secret, the whole envelope (id, type, timestamp, version
//! and every data member, the recipient included: `events::sealing_aad`);
//! an OAuth exchange result only a fixed label, its key being derived from
//! the one-time code itself.
//!
//! The one primitive behind the private halves of signing keys (under
//! `KEY_ENCRYPTION_KEY`), OAuth exchange results (under a key derived from
//! the one-time code) and the one-time secrets of queued events (under a
//! subkey of `KEY_ENCRYPTION_KEY`). Random nonces are safe here: far fewer
//! than 2^32 seals per key are ever made.

use std::fmt;

use super::{b64url, b64url_decode};
use crate::core::error::Error;
use crate::core::random::Random;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Length of a sealing key, in bytes.
pub const SEAL_KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// An AES-256-GCM key, its cipher set up once. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct SealKey(Aes256Gcm);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; SEAL_KEY_LEN]) -> Self {
        Self(Aes256Gcm::new(&bytes.into()))
    }

    /// Seals `plaintext`, bound to `aad`: `base64url(nonce || ciphertext || tag)`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], rng: &mut impl Random) -> Result<String, Error> {
        let nonce = rng.bytes::<NONCE_LEN>();
        let ct = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .map_err(|_| Error::Internal("sealing failed".into()))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        Ok(b64url(blob))
    }

    /// Opens what [`seal`](Self::seal) sealed with this key and the same
    /// `aad`; `None` for anything else (another key, another `aad`, a
    /// changed byte, not base64url).
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let blob = b64url_decode(sealed)?;
        if blob.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        self.0.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    #[test]
    fn a_seal_opens_only_with_its_key_and_associated_data() {
        let key = SealKey::new([7; 32]);
        let sealed = key.seal(b"record-1", b"s3cret", &mut SeqRandom(1)).unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open(b"record-1", &sealed).as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(key.open(b"record-2", &sealed), None, "moved onto another record");
        assert_eq!(SealKey::new([8; 32]).open(b"record-1", &sealed), None, "another key");
        let mut bytes = b64url_decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(key.open(b"record-1", &b64url(bytes)), None, "a changed byte");
        assert_eq!(key.open(b"record-1", "AAAA"), None);
        assert_eq!(key.open(b"record-1", "not base64!"), None);
    }

    #[test]
    fn every_seal_has_its_own_nonce() {
        let key = SealKey::new([1; 32]);
        let a = key.seal(b"", b"same", &mut SeqRandom(1)).unwrap();
        let b = key.seal(b"", b"same", &mut SeqRandom(2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(b64url_decode(&a).unwrap().len(), NONCE_LEN + 4 + 16);
    }

    #[test]
    fn debug_prints_no_key() {
        assert_eq!(format!("{:?}", SealKey::new([9; 32])), "SealKey(<redacted>)");
    }
}
