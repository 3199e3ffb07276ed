//! Signing keys: generation, encryption of the private half at rest with the
//! key-encryption key, the published JWKS, and which keys are still published.
//!
//! A key's `kid` is its RFC 7638 JWK thumbprint. The private half is stored as
//! `base64url(nonce || AES-256-GCM(seed))` with the `kid` as associated data, so
//! a ciphertext cannot be moved onto another key's row.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_compact::{KeyPair, PublicKey, SecretKey, Seed};
use jwt_compact::jwk::JsonWebKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::core::error::Error;
use crate::core::ids::Random;
use crate::core::time::UnixTime;
use crate::core::token::ALG_EDDSA;

/// Length of the key-encryption key, in bytes.
pub const KEK_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The secret `KEY_ENCRYPTION_KEY`. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct Kek([u8; KEK_LEN]);

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// Parses standard base64 (padded or not) of exactly 32 bytes.
    pub fn parse(b64: &str) -> Result<Self, String> {
        let trimmed = b64.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
            .map_err(|_| "must be base64".to_string())?;
        let arr: [u8; KEK_LEN] = bytes.try_into().map_err(|_| format!("must decode to exactly {KEK_LEN} bytes"))?;
        Ok(Self(arr))
    }

    /// From raw bytes (tests).
    pub fn from_bytes(bytes: [u8; KEK_LEN]) -> Self {
        Self(bytes)
    }

    /// A 32-byte subkey for `label` (HMAC-SHA256 of the label under the KEK),
    /// so other secrets can hang off the one configured secret without ever
    /// reusing it directly.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(mut mac) => {
                mac.update(label.as_bytes());
                mac.finalize().into_bytes().into()
            }
            // HMAC takes keys of any length; unreachable for 32 bytes.
            Err(_) => [0; 32],
        }
    }

    fn cipher(&self) -> Result<Aes256Gcm, Error> {
        Aes256Gcm::new_from_slice(&self.0).map_err(|_| Error::Internal("bad KEK length".into()))
    }
}

/// Whether a key signs new tokens or is only still published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Signs new tokens; exactly one at a time.
    Active,
    /// Published until `publish_until`, signs nothing.
    Retired,
}

impl KeyStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// JOSE algorithm (`EdDSA`).
    pub alg: String,
    /// Public key, base64url.
    pub public_key: String,
    /// Sealed private seed.
    pub private_enc: String,
    /// Active or retired.
    pub status: KeyStatus,
    /// Creation time.
    pub created_at: UnixTime,
    /// When it was retired.
    pub retired_at: Option<UnixTime>,
    /// For a retired key: the last instant any token it signed can be valid.
    pub publish_until: Option<UnixTime>,
}

impl StoredKey {
    /// Whether the key belongs in the JWKS at `now`.
    pub fn is_published(&self, now: UnixTime) -> bool {
        match self.status {
            KeyStatus::Active => true,
            KeyStatus::Retired => self.publish_until.is_some_and(|t| t > now),
        }
    }

    /// The raw 32-byte public key.
    pub fn public_bytes(&self) -> Result<Vec<u8>, Error> {
        URL_SAFE_NO_PAD
            .decode(&self.public_key)
            .map_err(|_| Error::Internal(format!("key {}: bad public key", self.kid)))
    }

    /// Decrypts the private half.
    pub fn unseal(&self, kek: &Kek) -> Result<SigningKey, Error> {
        let bad = || Error::Misconfigured(format!("KEY_ENCRYPTION_KEY cannot decrypt signing key {}", self.kid));
        let blob = URL_SAFE_NO_PAD.decode(&self.private_enc).map_err(|_| bad())?;
        if blob.len() <= NONCE_LEN {
            return Err(bad());
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let seed = kek
            .cipher()?
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: self.kid.as_bytes() })
            .map_err(|_| bad())?;
        let seed: [u8; Seed::BYTES] = seed.try_into().map_err(|_| bad())?;
        Ok(SigningKey::from_seed(self.kid.clone(), seed))
    }
}

/// A private signing key with its `kid`. Its `Debug` prints only the `kid`.
#[derive(Clone)]
pub struct SigningKey {
    /// The key id put in token headers.
    pub kid: String,
    secret: SecretKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    fn from_seed(kid: String, seed: [u8; Seed::BYTES]) -> Self {
        Self { kid, secret: KeyPair::from_seed(Seed::new(seed)).sk }
    }

    /// The Ed25519 secret key.
    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key, base64url.
pub fn thumbprint(public: &PublicKey) -> String {
    let jwk = JsonWebKey::from(public);
    URL_SAFE_NO_PAD.encode(jwk.thumbprint::<Sha256>())
}

/// Makes a new active key, sealed with `kek`.
pub fn generate(rng: &mut impl Random, kek: &Kek, now: UnixTime) -> Result<(StoredKey, SigningKey), Error> {
    let seed = rng.bytes::<{ Seed::BYTES }>();
    let nonce = rng.bytes::<NONCE_LEN>();
    let pair = KeyPair::from_seed(Seed::new(seed));
    let kid = thumbprint(&pair.pk);
    let ct = kek
        .cipher()?
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: &seed, aad: kid.as_bytes() })
        .map_err(|_| Error::Internal("key sealing failed".into()))?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ct);
    let stored = StoredKey {
        kid: kid.clone(),
        alg: ALG_EDDSA.to_string(),
        public_key: URL_SAFE_NO_PAD.encode(pair.pk.as_ref()),
        private_enc: URL_SAFE_NO_PAD.encode(blob),
        status: KeyStatus::Active,
        created_at: now,
        retired_at: None,
        publish_until: None,
    };
    Ok((stored, SigningKey::from_seed(kid, seed)))
}

/// One published key in JWK form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// Public key, base64url.
    pub x: String,
    /// Key id.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// A JWK Set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The JWKS for `keys` at `now`: the active key and retired keys still needed.
pub fn jwks(keys: &[StoredKey], now: UnixTime) -> Jwks {
    Jwks {
        keys: keys
            .iter()
            .filter(|k| k.is_published(now))
            .map(|k| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.public_key.clone(),
                kid: k.kid.clone(),
                alg: k.alg.clone(),
                use_: "sig".into(),
            })
            .collect(),
    }
}

/// Base64url without padding of raw bytes.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Standard base64 of raw bytes (for secrets shown to operators).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    #[test]
    fn sealed_key_unseals_with_the_same_kek_only() {
        let kek = Kek::from_bytes([9; 32]);
        let (stored, key) = generate(&mut SeqRandom(3), &kek, UnixTime(100)).unwrap();
        let back = stored.unseal(&kek).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(stored.public_bytes().unwrap(), key.public_key().as_ref());
        let other = Kek::from_bytes([8; 32]);
        assert!(matches!(stored.unseal(&other), Err(Error::Misconfigured(_))));
    }

    #[test]
    fn ciphertext_is_bound_to_its_kid() {
        let kek = Kek::from_bytes([1; 32]);
        let (mut stored, _) = generate(&mut SeqRandom(5), &kek, UnixTime(0)).unwrap();
        stored.kid = "another".into();
        assert!(stored.unseal(&kek).is_err());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3 test vector.
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let pk = PublicKey::from_slice(&x).unwrap();
        assert_eq!(thumbprint(&pk), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn retired_keys_are_published_until_their_tokens_expire() {
        let kek = Kek::from_bytes([2; 32]);
        let (mut k, _) = generate(&mut SeqRandom(6), &kek, UnixTime(0)).unwrap();
        assert_eq!(jwks(std::slice::from_ref(&k), UnixTime(10)).keys.len(), 1);
        k.status = KeyStatus::Retired;
        k.publish_until = Some(UnixTime(50));
        assert_eq!(jwks(std::slice::from_ref(&k), UnixTime(49)).keys.len(), 1);
        assert!(jwks(std::slice::from_ref(&k), UnixTime(50)).keys.is_empty());
    }

    #[test]
    fn derived_subkeys_depend_on_label_and_kek() {
        let a = Kek::from_bytes([1; 32]);
        let b = Kek::from_bytes([2; 32]);
        assert_ne!(a.derive("x"), a.derive("y"));
        assert_ne!(a.derive("x"), b.derive("x"));
        assert_eq!(a.derive("x"), a.derive("x"));
    }

    #[test]
    fn kek_parsing_names_the_problem() {
        assert!(Kek::parse(&b64(&[0; 32])).is_ok());
        assert!(Kek::parse(&b64(&[0; 16])).unwrap_err().contains("32 bytes"));
        assert!(Kek::parse("not base64!").is_err());
    }
}
