//! The symmetric primitives every part of the core builds on, in one place:
//! sealing small secrets at rest ([`seal`], AES-256-GCM), keyed hashes
//! ([`MacKey`], HMAC-SHA256) and the unpadded base64url text both are kept
//! in ([`b64url`], [`b64url_decode`]).
//!
//! A key is checked once, when it is made; everything done with it after
//! that cannot fail, so no caller needs a fallback for an "impossible"
//! error (a zero key, an empty signature).

pub mod seal;

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use seal::{SealKey, SEAL_KEY_LEN};

/// Length of an HMAC-SHA256 tag, in bytes.
pub const MAC_LEN: usize = 32;

/// An HMAC-SHA256 key, keyed once: each [`tag`](Self::tag) starts from a
/// copy of the keyed state. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct MacKey(Hmac<Sha256>);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// A key HMAC refused. HMAC takes keys of any length, so this is never
/// seen in practice; it exists so that a key is checked where it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMacKey;

impl fmt::Display for BadMacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HMAC-SHA256 refused the key")
    }
}

impl MacKey {
    /// A key from its bytes.
    pub fn new(key: &[u8]) -> Result<Self, BadMacKey> {
        <Hmac<Sha256> as Mac>::new_from_slice(key).map(Self).map_err(|_| BadMacKey)
    }

    /// A 32-byte key: HMAC takes it as it is (RFC 2104 pads keys up to the
    /// hash's block size with zeros), so this cannot fail.
    pub fn from_32(key: &[u8; 32]) -> Self {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(key);
        Self(<Hmac<Sha256> as Mac>::new(&block.into()))
    }

    /// The tag of the concatenation of `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of the concatenation of `parts`, compared in
    /// constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).is_ok()
    }
}

/// Unpadded base64url (RFC 4648 §5), the text form of tokens, tags and keys.
pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Bytes from unpadded base64url; `None` for anything else.
pub fn b64url_decode(text: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_32_is_hmac_with_that_key() {
        // RFC 4231 test case 2 uses a 4-byte key; check the padding rule on
        // a 32-byte key against the general constructor instead.
        let key = [7u8; 32];
        let general = MacKey::new(&key).unwrap();
        let padded = MacKey::from_32(&key);
        assert_eq!(general.tag(&[b"a", b"bc"]), padded.tag(&[b"abc"]));
    }

    #[test]
    fn rfc_4231_case_2() {
        let key = MacKey::new(b"Jefe").unwrap();
        let tag = key.tag(&[b"what do ya want ", b"for nothing?"]);
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(key.verify(&[b"what do ya want for nothing?"], &tag));
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(!key.verify(&[b"what do ya want for nothing?"], &bad));
        assert!(!key.verify(&[b"what do ya want for nothing?"], &tag[..31]));
    }

    #[test]
    fn base64url_round_trip() {
        assert_eq!(b64url([0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(b64url_decode("+/8="), None);
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", MacKey::from_32(&[1; 32])), "MacKey(<redacted>)");
    }
}
