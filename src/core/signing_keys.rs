//! Signing keys: generation, encryption of the private half at rest with the
//! key-encryption key, the published JWKS, and which keys are still published.
//!
//! Keys are Ed25519 (`EdDSA`, the default) or P-256 (`ES256`), per
//! `SIGNING_ALG`. A key's `kid` is its RFC 7638 JWK thumbprint. The private
//! half (Ed25519's seed or P-256's scalar) is stored as
//! `base64url(nonce || AES-256-GCM(secret))` with the `kid` as associated
//! data, so a ciphertext cannot be moved onto another key's row.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_compact::{KeyPair, PublicKey, SecretKey, Seed};
use jwt_compact::jwk::JsonWebKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::core::crypto::{b64url, b64url_decode, MacKey, SealKey};
use crate::core::error::Error;
use crate::core::ids::Random;
use crate::core::own_signature::OwnSignatures;
use crate::core::time::UnixTime;

/// The JOSE name of Ed25519 signatures, the default.
pub const ALG_EDDSA: &str = "EdDSA";
/// The JOSE name of ECDSA P-256 / SHA-256 signatures (`SIGNING_ALG=ES256`).
pub const ALG_ES256: &str = "ES256";

/// Length of the key-encryption key, in bytes.
pub const KEK_LEN: usize = 32;

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
        MacKey::from_32(&self.0).tag(&[label.as_bytes()])
    }

    /// The KEK itself as the sealing key of signing keys' private halves.
    fn seal_key(&self) -> SealKey {
        SealKey::new(self.0)
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

/// The JOSE algorithms of signing keys: `SIGNING_ALG` picks the one new
/// keys get; tokens are accepted in either, each checked against its key's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlg {
    /// Ed25519 (RFC 8037), the default.
    #[default]
    EdDsa,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), for verifiers that have
    /// no EdDSA (e.g. `jsonwebtoken`).
    Es256,
}

impl SigningAlg {
    /// The JOSE name (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDsa => ALG_EDDSA,
            Self::Es256 => ALG_ES256,
        }
    }

    /// From its exact JOSE name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            ALG_EDDSA => Some(Self::EdDsa),
            ALG_ES256 => Some(Self::Es256),
            _ => None,
        }
    }

    /// Whether our keys of this algorithm make exactly one signature per
    /// message: Ed25519's nonce is a hash of the key and the message (RFC
    /// 8032 §5.1.6), and every signer we use (ed25519-compact without noise,
    /// the runtime's BoringSSL) follows the RFC. The holder of such a private
    /// key can then recognise its own signatures without a signature
    /// operation ([`SigningKey::made`]). ECDSA signatures are randomised:
    /// never.
    pub fn is_deterministic(self) -> bool {
        matches!(self, Self::EdDsa)
    }
}

/// A key id (`kid`): a signing key's RFC 7638 JWK thumbprint, base64url —
/// in token headers, the JWKS, the key store and the key events. Made only
/// from a key ([`generate`]) or from storage; a `kid` read from a token is a
/// plain string until it names one of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kid(String);

impl Kid {
    /// A key id as stored or computed.
    pub fn new(kid: impl Into<String>) -> Self {
        Self(kid.into())
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Kid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Kid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for Kid {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Kid> for String {
    fn eq(&self, other: &Kid) -> bool {
        self == &other.0
    }
}

impl From<Kid> for String {
    fn from(kid: Kid) -> Self {
        kid.0
    }
}

impl From<&str> for Kid {
    fn from(kid: &str) -> Self {
        Self(kid.to_string())
    }
}

impl PartialEq<&str> for Kid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// RFC 7638 thumbprint.
    pub kid: Kid,
    /// JOSE algorithm (`EdDSA` or `ES256`).
    pub alg: String,
    /// Public key, base64url: Ed25519's 32 bytes, or P-256's uncompressed
    /// SEC1 point (65 bytes).
    pub public_key: String,
    /// Sealed private half: Ed25519's seed or P-256's scalar (32 bytes).
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

    /// The key's algorithm, if it is one we know.
    pub fn signing_alg(&self) -> Result<SigningAlg, Error> {
        SigningAlg::from_name(&self.alg)
            .ok_or_else(|| Error::Internal(format!("key {}: unsupported algorithm {}", self.kid, self.alg)))
    }

    /// The public key's JWK members: `x`, and `y` for P-256 (base64url).
    pub fn public_coordinates(&self) -> Result<(String, Option<String>), Error> {
        let bad = || Error::Internal(format!("key {}: bad public key", self.kid));
        let raw = b64url_decode(&self.public_key).ok_or_else(bad)?;
        match self.signing_alg()? {
            SigningAlg::EdDsa if raw.len() == PublicKey::BYTES => Ok((self.public_key.clone(), None)),
            SigningAlg::Es256 => {
                let point = p256::EncodedPoint::from_bytes(&raw).map_err(|_| bad())?;
                match (point.x(), point.y()) {
                    (Some(x), Some(y)) => Ok((b64url(x), Some(b64url(y)))),
                    _ => Err(bad()),
                }
            }
            SigningAlg::EdDsa => Err(bad()),
        }
    }

    /// Whether `signature` (JWS form) by this key over `signed` is valid for
    /// a token whose header says `alg`: a key only ever verifies its own
    /// algorithm. In pure Rust; the edge uses the runtime's native code.
    pub fn verify(&self, alg: SigningAlg, signed: &[u8], signature: &[u8]) -> Result<bool, Error> {
        if self.signing_alg()? != alg {
            return Ok(false);
        }
        let bad = || Error::Internal(format!("key {}: bad public key", self.kid));
        let raw = b64url_decode(&self.public_key).ok_or_else(bad)?;
        Ok(match alg {
            SigningAlg::EdDsa => {
                let pk = PublicKey::from_slice(&raw).map_err(|_| bad())?;
                ed25519_compact::Signature::from_slice(signature).is_ok_and(|sig| pk.verify(signed, &sig).is_ok())
            }
            SigningAlg::Es256 => {
                use jwt_compact::Algorithm;
                let pk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&raw).map_err(|_| bad())?;
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| jwt_compact::alg::Es256.verify_signature(&sig, &pk, signed))
            }
        })
    }

    /// Decrypts the private half.
    pub fn unseal(&self, kek: &Kek) -> Result<SigningKey, Error> {
        let bad = || Error::Misconfigured(format!("KEY_ENCRYPTION_KEY cannot decrypt signing key {}", self.kid));
        let secret = kek.seal_key().open(self.kid.as_bytes(), &self.private_enc).ok_or_else(bad)?;
        let secret: [u8; SECRET_LEN] = secret.try_into().map_err(|_| bad())?;
        let key = SigningKey::from_secret(self.kid.clone(), self.signing_alg()?, secret)
            .ok_or_else(|| Error::Internal(format!("key {}: bad private key", self.kid)))?;
        // What it signs, and recognises as its own, must verify with the key
        // the JWKS publishes for this kid.
        if key.public_key_stored() != self.public_key {
            return Err(Error::Internal(format!("key {}: private half does not match the public key", self.kid)));
        }
        Ok(key)
    }
}

/// Length of both algorithms' private halves: Ed25519's seed, P-256's scalar.
const SECRET_LEN: usize = 32;

#[derive(Clone)]
enum Secret {
    Ed25519(SecretKey, OwnSignatures),
    P256(p256::ecdsa::SigningKey),
}

/// A private signing key with its `kid`. Its `Debug` prints only the `kid`.
#[derive(Clone)]
pub struct SigningKey {
    /// The key id put in token headers.
    pub kid: Kid,
    secret: Secret,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

/// A private key as JWK members (base64url), for importing it natively:
/// `d`, `x`, and `y` for P-256.
pub struct PrivateJwk {
    /// The algorithm.
    pub alg: SigningAlg,
    /// Private part.
    pub d: String,
    /// Public `x`.
    pub x: String,
    /// Public `y` (P-256 only).
    pub y: Option<String>,
}

impl SigningKey {
    /// `None` for a P-256 scalar out of range (zero or ≥ the group order).
    fn from_secret(kid: Kid, alg: SigningAlg, secret: [u8; SECRET_LEN]) -> Option<Self> {
        let secret = match alg {
            SigningAlg::EdDsa => {
                let pair = KeyPair::from_seed(Seed::new(secret));
                let own = OwnSignatures::new(&secret, &pair.pk);
                Secret::Ed25519(pair.sk, own)
            }
            SigningAlg::Es256 => Secret::P256(p256::ecdsa::SigningKey::from_slice(&secret).ok()?),
        };
        Some(Self { kid, secret })
    }

    /// The key's algorithm.
    pub fn alg(&self) -> SigningAlg {
        match self.secret {
            Secret::Ed25519(..) => SigningAlg::EdDsa,
            Secret::P256(_) => SigningAlg::Es256,
        }
    }

    /// The JWS signature over `data` (64 bytes for both algorithms); for
    /// Ed25519 the one RFC 8032 signature (no noise).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        use jwt_compact::Algorithm;
        match &self.secret {
            Secret::Ed25519(sk, _) => sk.sign(data, None).to_vec(),
            Secret::P256(sk) => jwt_compact::alg::Es256.sign(sk, data).to_bytes().to_vec(),
        }
    }

    /// Whether `signature` is exactly the one this key makes over `data`:
    /// always false for ES256 (randomised). True means the signature is
    /// valid; false proves nothing (another signer of the key may have made
    /// it), and the caller verifies it. About a tenth of a native signature
    /// operation ([`crate::core::own_signature`]).
    pub fn made(&self, data: &[u8], signature: &[u8]) -> bool {
        match &self.secret {
            Secret::Ed25519(_, own) => own.made(data, signature),
            Secret::P256(_) => false,
        }
    }

    /// A signed compact JWT: `header` (its `alg` set here) and `claims`.
    pub fn token<T: Serialize>(
        &self,
        header: &jwt_compact::Header,
        claims: &jwt_compact::Claims<T>,
    ) -> Result<String, Error> {
        use jwt_compact::AlgorithmExt;
        let signed = match &self.secret {
            Secret::Ed25519(sk, _) => Rfc8032Ed25519.token(header, claims, sk),
            Secret::P256(sk) => jwt_compact::alg::Es256.token(header, claims, sk),
        };
        signed.map_err(|e| Error::Internal(format!("signing failed: {e}")))
    }

    /// The private key as JWK members.
    pub fn private_jwk(&self) -> PrivateJwk {
        match &self.secret {
            Secret::Ed25519(sk, _) => PrivateJwk {
                alg: SigningAlg::EdDsa,
                d: b64url(sk.seed().as_ref()),
                x: b64url(sk.public_key().as_ref()),
                y: None,
            },
            Secret::P256(sk) => {
                let point = sk.verifying_key().to_encoded_point(false);
                PrivateJwk {
                    alg: SigningAlg::Es256,
                    d: b64url(sk.to_bytes()),
                    x: point.x().map(b64url).unwrap_or_default(),
                    y: point.y().map(b64url),
                }
            }
        }
    }

    /// The public key as stored (base64url): see [`StoredKey::public_key`].
    fn public_key_stored(&self) -> String {
        match &self.secret {
            Secret::Ed25519(sk, _) => b64url(sk.public_key().as_ref()),
            Secret::P256(sk) => b64url(sk.verifying_key().to_encoded_point(false).as_bytes()),
        }
    }

    /// The RFC 7638 thumbprint of the public key, base64url.
    fn thumbprint(&self) -> String {
        match &self.secret {
            Secret::Ed25519(sk, _) => thumbprint(&sk.public_key()),
            Secret::P256(sk) => b64url(JsonWebKey::from(sk.verifying_key()).thumbprint::<Sha256>()),
        }
    }
}

/// The private halves of the published keys whose signatures can be
/// recognised ([`SigningKey::made`]): the active `signing` key and every
/// retired Ed25519 key still published at `now`, whose tokens may still be
/// live. Keys already unsealed (`unsealed`, from the previous load) are
/// reused, so a reload decrypts only keys it has not seen. A retired key
/// that does not unseal is left out: its tokens are then verified.
pub fn recognisable(
    stored: &[StoredKey],
    signing: &SigningKey,
    mut unsealed: Vec<SigningKey>,
    kek: &Kek,
    now: UnixTime,
) -> Vec<SigningKey> {
    let retired = stored.iter().filter(|k| {
        k.status == KeyStatus::Retired
            && k.is_published(now)
            && k.kid != signing.kid
            && k.signing_alg().is_ok_and(SigningAlg::is_deterministic)
    });
    let mut keys: Vec<SigningKey> = Vec::new();
    if signing.alg().is_deterministic() {
        keys.push(signing.clone());
    }
    for k in retired {
        if keys.iter().any(|o| o.kid == k.kid) {
            continue;
        }
        match unsealed.iter().position(|u| u.kid == k.kid) {
            Some(i) => keys.push(unsealed.swap_remove(i)),
            None => keys.extend(k.unseal(kek).ok()),
        }
    }
    keys
}

/// The RFC 7638 thumbprint of an Ed25519 public key, base64url.
pub fn thumbprint(public: &PublicKey) -> String {
    let jwk = JsonWebKey::from(public);
    b64url(jwk.thumbprint::<Sha256>())
}

/// Makes a new active key for `alg`, sealed with `kek`.
pub fn generate(
    alg: SigningAlg,
    rng: &mut impl Random,
    kek: &Kek,
    now: UnixTime,
) -> Result<(StoredKey, SigningKey), Error> {
    // A P-256 scalar is out of range with probability about 2^-32: draw again.
    let (secret, key) = (0..8)
        .map(|_| rng.bytes::<SECRET_LEN>())
        .find_map(|secret| SigningKey::from_secret(Kid::new(String::new()), alg, secret).map(|k| (secret, k)))
        .ok_or_else(|| Error::Internal("no valid private key drawn".into()))?;
    let kid = Kid::new(key.thumbprint());
    let private_enc = kek.seal_key().seal(kid.as_bytes(), &secret, rng)?;
    let stored = StoredKey {
        kid: kid.clone(),
        alg: alg.name().to_string(),
        public_key: key.public_key_stored(),
        private_enc,
        status: KeyStatus::Active,
        created_at: now,
        retired_at: None,
        publish_until: None,
    };
    Ok((stored, SigningKey { kid, ..key }))
}

/// One published key in JWK form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `OKP` (Ed25519) or `EC` (P-256).
    pub kty: String,
    /// `Ed25519` or `P-256`.
    pub crv: String,
    /// Public key (`x` coordinate for P-256), base64url.
    pub x: String,
    /// `y` coordinate (P-256 only), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id.
    pub kid: Kid,
    /// `EdDSA` or `ES256`.
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

/// The JWKS for `keys` at `now`: the active key and retired keys still
/// needed (a key that cannot be read is left out rather than published wrong).
pub fn jwks(keys: &[StoredKey], now: UnixTime) -> Jwks {
    Jwks {
        keys: keys
            .iter()
            .filter(|k| k.is_published(now))
            .filter_map(|k| {
                let (x, y) = k.public_coordinates().ok()?;
                let (kty, crv) = match k.signing_alg().ok()? {
                    SigningAlg::EdDsa => ("OKP", "Ed25519"),
                    SigningAlg::Es256 => ("EC", "P-256"),
                };
                Some(Jwk {
                    kty: kty.into(),
                    crv: crv.into(),
                    x,
                    y,
                    kid: k.kid.clone(),
                    alg: k.alg.clone(),
                    use_: "sig".into(),
                })
            })
            .collect(),
    }
}

/// Standard base64 of raw bytes (for secrets shown to operators).
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// jwt-compact's `EdDSA`, signing as RFC 8032 does: its `Ed25519` signs
/// with noise (hedged signatures), and a token signed so could not be
/// checked by signing it again ([`SigningAlg::is_deterministic`]): every
/// other isolate would verify it instead, at about twice the cost. Verifies
/// as jwt-compact's does.
struct Rfc8032Ed25519;

impl jwt_compact::Algorithm for Rfc8032Ed25519 {
    type SigningKey = ed25519_compact::SecretKey;
    type VerifyingKey = ed25519_compact::PublicKey;
    type Signature = ed25519_compact::Signature;

    fn name(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(ALG_EDDSA)
    }

    fn sign(&self, signing_key: &Self::SigningKey, message: &[u8]) -> Self::Signature {
        signing_key.sign(message, None)
    }

    fn verify_signature(
        &self,
        signature: &Self::Signature,
        verifying_key: &Self::VerifyingKey,
        message: &[u8],
    ) -> bool {
        verifying_key.verify(message, signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    const ALGS: [SigningAlg; 2] = [SigningAlg::EdDsa, SigningAlg::Es256];

    #[test]
    fn sealed_key_unseals_with_the_same_kek_only() {
        for alg in ALGS {
            let kek = Kek::from_bytes([9; 32]);
            let (stored, key) = generate(alg, &mut SeqRandom(3), &kek, UnixTime(100)).unwrap();
            assert_eq!(stored.alg, alg.name());
            let back = stored.unseal(&kek).unwrap();
            assert_eq!((back.alg(), back.private_jwk().d), (alg, key.private_jwk().d));
            assert_eq!(back.public_key_stored(), stored.public_key);
            let other = Kek::from_bytes([8; 32]);
            assert!(matches!(stored.unseal(&other), Err(Error::Misconfigured(_))));
        }
    }

    #[test]
    fn ciphertext_is_bound_to_its_kid() {
        for alg in ALGS {
            let kek = Kek::from_bytes([1; 32]);
            let (mut stored, _) = generate(alg, &mut SeqRandom(5), &kek, UnixTime(0)).unwrap();
            stored.kid = "another".into();
            assert!(stored.unseal(&kek).is_err());
        }
    }

    #[test]
    fn a_key_verifies_its_own_signatures_in_its_own_algorithm_only() {
        let kek = Kek::from_bytes([4; 32]);
        let (ed, ed_key) = generate(SigningAlg::EdDsa, &mut SeqRandom(7), &kek, UnixTime(0)).unwrap();
        let (ec, ec_key) = generate(SigningAlg::Es256, &mut SeqRandom(8), &kek, UnixTime(0)).unwrap();
        for (stored, key) in [(&ed, &ed_key), (&ec, &ec_key)] {
            let sig = key.sign(b"data");
            assert_eq!(sig.len(), 64);
            assert!(stored.verify(key.alg(), b"data", &sig).unwrap());
            assert!(!stored.verify(key.alg(), b"datA", &sig).unwrap());
            let mut bad = sig.clone();
            bad[10] ^= 1;
            assert!(!stored.verify(key.alg(), b"data", &bad).unwrap());
            assert!(!stored.verify(key.alg(), b"data", &sig[..63]).unwrap());
        }
        // The header's algorithm must be the key's: no confusion either way.
        assert!(!ed.verify(SigningAlg::Es256, b"data", &ed_key.sign(b"data")).unwrap());
        assert!(!ec.verify(SigningAlg::EdDsa, b"data", &ec_key.sign(b"data")).unwrap());
        assert!(!ec.verify(SigningAlg::Es256, b"data", &ed_key.sign(b"data")).unwrap());
    }

    #[test]
    fn ed25519_signatures_are_rfc_8032s_so_any_conforming_signer_makes_the_same() {
        // RFC 8032 §7.1, TEST 1 and TEST 2: the runtime's BoringSSL makes exactly
        // these bytes too, so a token or assertion signed by any isolate is
        // recognised by every other as its key's own.
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
        };
        let vectors = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ];
        assert!(SigningAlg::EdDsa.is_deterministic() && !SigningAlg::Es256.is_deterministic());
        for (seed, msg, sig) in vectors {
            let key = SigningKey::from_secret("k".into(), SigningAlg::EdDsa, hex(seed).try_into().unwrap()).unwrap();
            let ours = key.sign(&hex(msg));
            assert_eq!(ours, hex(sig));
            assert!(key.made(&hex(msg), &hex(sig)));
        }
    }

    #[test]
    fn a_key_recognises_only_the_signature_it_makes() {
        let kek = Kek::from_bytes([6; 32]);
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(11), &kek, UnixTime(0)).unwrap();
        let ours = key.sign(b"header.claims");
        assert_eq!(ours, key.sign(b"header.claims"));
        assert!(key.made(b"header.claims", &ours));
        for i in [0, 31, 32, 63] {
            let mut other = ours.clone();
            other[i] ^= 0x80;
            assert!(!key.made(b"header.claims", &other));
        }
        assert!(!key.made(b"header.claims", &ours[..63]));
        assert!(!key.made(b"header.claims", &[ours.as_slice(), &[0]].concat()));
        assert!(!key.made(b"header.claims", &[]));
        assert!(!key.made(b"header.claimz", &ours));
        assert!(!key.made(b"header.claims", &key.sign(b"header.claimz")));
        // The same key material after sealing and unsealing.
        let (stored, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(12), &kek, UnixTime(0)).unwrap();
        assert!(stored.unseal(&kek).unwrap().made(b"x", &key.sign(b"x")));
        // ECDSA signatures are randomised: never recognised, always verified.
        let (_, ec) = generate(SigningAlg::Es256, &mut SeqRandom(13), &kek, UnixTime(0)).unwrap();
        assert!(!ec.made(b"x", &ec.sign(b"x")));
    }

    #[test]
    fn recognisable_keys_are_the_active_and_the_published_retired_ed25519_ones() {
        let kek = Kek::from_bytes([7; 32]);
        let make = |alg, seed| generate(alg, &mut SeqRandom(seed), &kek, UnixTime(0)).unwrap();
        let (active, signing) = make(SigningAlg::EdDsa, 20);
        let (mut live, live_key) = make(SigningAlg::EdDsa, 21);
        let (mut gone, _) = make(SigningAlg::EdDsa, 22);
        let (mut ec, _) = make(SigningAlg::Es256, 23);
        let (mut sealed_elsewhere, _) =
            generate(SigningAlg::EdDsa, &mut SeqRandom(24), &Kek::from_bytes([8; 32]), UnixTime(0)).unwrap();
        for (k, until) in [(&mut live, 100), (&mut gone, 50), (&mut ec, 100), (&mut sealed_elsewhere, 100)] {
            k.status = KeyStatus::Retired;
            k.publish_until = Some(UnixTime(until));
        }
        let stored = [active, live.clone(), gone, ec, sealed_elsewhere];
        let kids = |keys: &[SigningKey]| keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>();
        let keys = recognisable(&stored, &signing, Vec::new(), &kek, UnixTime(60));
        assert_eq!(kids(&keys), [signing.kid.clone(), live.kid.clone()]);
        assert!(keys[1].made(b"t", &live_key.sign(b"t")));
        // A reload reuses what it unsealed (here: a stand-in under the same kid).
        let stand_in = SigningKey { kid: live.kid.clone(), ..signing.clone() };
        let again = recognisable(&stored, &signing, vec![stand_in], &kek, UnixTime(60));
        assert!(again[1].made(b"t", &signing.sign(b"t")));
        // An ES256 active key recognises nothing; the retired Ed25519 one still counts.
        let (_, ec_signing) = make(SigningAlg::Es256, 25);
        assert_eq!(kids(&recognisable(&stored, &ec_signing, Vec::new(), &kek, UnixTime(60))), [live.kid.clone()]);
        // Past its publication, a retired key is left out, even when unsealed before.
        let unsealed = recognisable(&stored, &signing, Vec::new(), &kek, UnixTime(60));
        assert_eq!(kids(&recognisable(&stored, &signing, unsealed, &kek, UnixTime(100))), [signing.kid.as_str()]);
        // A kid stored twice is one key.
        let twice = [stored.as_slice(), &[live.clone()]].concat();
        assert_eq!(kids(&recognisable(&twice, &signing, Vec::new(), &kek, UnixTime(60))).len(), 2);
    }

    #[test]
    fn a_private_half_that_does_not_match_its_public_key_is_refused() {
        let kek = Kek::from_bytes([3; 32]);
        for alg in ALGS {
            let (mut stored, _) = generate(alg, &mut SeqRandom(30), &kek, UnixTime(0)).unwrap();
            let (other, _) = generate(alg, &mut SeqRandom(31), &kek, UnixTime(0)).unwrap();
            stored.public_key = other.public_key;
            assert!(matches!(stored.unseal(&kek), Err(Error::Internal(m)) if m.contains("does not match")));
        }
    }

    #[test]
    fn jwks_carries_each_keys_own_members() {
        let kek = Kek::from_bytes([5; 32]);
        let (ed, _) = generate(SigningAlg::EdDsa, &mut SeqRandom(9), &kek, UnixTime(0)).unwrap();
        let (ec, key) = generate(SigningAlg::Es256, &mut SeqRandom(10), &kek, UnixTime(0)).unwrap();
        let set = jwks(&[ed.clone(), ec.clone()], UnixTime(1));
        let json = serde_json::to_value(&set).unwrap();
        assert_eq!(json["keys"][0]["kty"], "OKP");
        assert_eq!(json["keys"][0]["crv"], "Ed25519");
        assert!(json["keys"][0].get("y").is_none());
        assert_eq!(json["keys"][1]["kty"], "EC");
        assert_eq!(json["keys"][1]["crv"], "P-256");
        assert_eq!(json["keys"][1]["alg"], "ES256");
        let jwk = key.private_jwk();
        assert_eq!((json["keys"][1]["x"].as_str(), json["keys"][1]["y"].as_str()), (Some(&*jwk.x), jwk.y.as_deref()));
        assert_eq!(b64url_decode(&jwk.x).unwrap().len(), 32);
        // The kid is the RFC 7638 thumbprint over crv, kty, x, y in that order.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, jwk.x, jwk.y.unwrap());
        use sha2::Digest;
        assert_eq!(ec.kid, b64url(Sha256::digest(canonical.as_bytes())).as_str());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037 appendix A.3 test vector.
        let x = b64url_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let pk = PublicKey::from_slice(&x).unwrap();
        assert_eq!(thumbprint(&pk), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn retired_keys_are_published_until_their_tokens_expire() {
        let kek = Kek::from_bytes([2; 32]);
        let (mut k, _) = generate(SigningAlg::EdDsa, &mut SeqRandom(6), &kek, UnixTime(0)).unwrap();
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
