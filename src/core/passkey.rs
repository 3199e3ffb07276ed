//! Passkeys (WebAuthn Level 3): the relying party's half of both
//! ceremonies, pure — the options a browser is handed, and the checks of
//! what it sends back — with the bytes parsed under fixed bounds.
//!
//! # What is checked
//!
//! Registration (`navigator.credentials.create`), in the order of WebAuthn
//! §7.1: the credential is a `public-key` one whose `id` is its `rawId`;
//! `clientDataJSON` is JSON of type `webauthn.create`, its `origin` one of
//! `RP_ORIGINS` and not cross-origin; the attestation object is CBOR with
//! `fmt`, `attStmt` and `authData`; the authenticator data's `rpIdHash` is
//! SHA-256 of `RP_ID`, user presence (UP) is set, attested credential data
//! (AT) is present, and its COSE public key is an ES256 (P-256), EdDSA
//! (Ed25519) or RS256 (RSA, 2048 to 4096 bits) key that the runtime's
//! native crypto imports (for P-256: a point on the curve). The challenge is the flow's to check:
//! it takes the one it issued to the caller by the challenge the client
//! data carries (single use).
//!
//! Attestation: we ask for `"none"` and accept any format without
//! verifying its statement (WebAuthn §7.1 step 21 allows a relying party
//! not to; the big providers do the same). No decision here rests on the
//! authenticator's make or model: the statement is read (bounded) and
//! dropped, and the credential is treated as self-asserted.
//!
//! Sign-in (`navigator.credentials.get`), WebAuthn §7.2: the same checks of
//! the client data (type `webauthn.get`) and of `rpIdHash` and UP; the
//! signature over `authenticatorData ‖ SHA-256(clientDataJSON)` is checked
//! by the flow through the runtime's native crypto
//! ([`crate::core::ports::PasskeyVerifier`]); the sign counter by
//! [`counter_ok`].
//!
//! # Bounds
//!
//! Every length is capped before anything is decoded (`MAX_*` below); CBOR
//! is decoded with definite lengths only (CTAP2's canonical form), at most
//! [`MAX_CBOR_DEPTH`] levels and [`MAX_CBOR_ITEMS`] items per container, so
//! no input makes the parser recurse or allocate without bound. Anything
//! malformed is 400 `invalid_credential`; nothing here panics.

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use minicbor::data::Type;
use minicbor::Decoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::crypto::{b64url, MacKey};
use crate::core::error::Error;
use crate::core::ids::UserId;
use crate::core::signing_keys::Kek;
use crate::core::time::UnixTime;
use crate::core::users::is_unsafe_in_name;

/// How long a ceremony's challenge lives.
pub const CHALLENGE_TTL_SECS: u64 = 300;
/// The `timeout` the options give the browser, in milliseconds.
pub const CEREMONY_TIMEOUT_MS: u64 = CHALLENGE_TTL_SECS * 1000;
/// Passkeys one account may hold (bounds `excludeCredentials`).
pub const MAX_PASSKEYS_PER_USER: u32 = 20;
/// Longest passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest credential id (WebAuthn §5.8.3: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID_BYTES: usize = 1023;
/// Longest `clientDataJSON`, decoded.
pub const MAX_CLIENT_DATA_BYTES: usize = 2048;
/// Longest authenticator data, decoded.
pub const MAX_AUTHENTICATOR_DATA_BYTES: usize = 4096;
/// Longest attestation object, decoded.
pub const MAX_ATTESTATION_OBJECT_BYTES: usize = 16 * 1024;
/// Longest signature: an RS256 one of the largest modulus (a DER ECDSA
/// P-256 signature is at most 72 bytes, an Ed25519 one 64).
pub const MAX_SIGNATURE_BYTES: usize = MAX_RSA_MODULUS_BYTES;
/// Longest user handle (WebAuthn: at most 64 bytes).
pub const MAX_USER_HANDLE_BYTES: usize = 64;
/// Deepest CBOR nesting read.
pub const MAX_CBOR_DEPTH: u32 = 8;
/// Most entries in one CBOR map or array.
pub const MAX_CBOR_ITEMS: u64 = 64;
/// Most transports kept for one credential.
const MAX_TRANSPORTS: usize = 8;
/// Label of the `KEY_ENCRYPTION_KEY` subkey that derives user handles and
/// the stand-in credential ids of addresses without passkeys.
const HANDLE_KEY_LABEL: &str = "portcullis.passkey-handles";

/// `RP_ID`, `RP_ORIGINS`, `RP_NAME`: who the passkeys are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    /// `RP_ID`: a domain (`example.com`), the scope of the credentials.
    pub id: String,
    /// `RP_ORIGINS`: the web origins allowed to run the ceremonies, each
    /// serialised (`https://app.example.com`), each on `id` or below it.
    pub origins: Vec<String>,
    /// `RP_NAME`: shown by the browser.
    pub name: String,
    /// SHA-256 of `id`, computed once.
    pub id_hash: [u8; 32],
}

impl RelyingParty {
    /// A relying party; `origins` must already be serialised origins.
    pub fn new(id: String, origins: Vec<String>, name: String) -> Self {
        let id_hash = Sha256::digest(id.as_bytes()).into();
        Self { id, origins, name, id_hash }
    }

    /// Whether `host` is `id` or a subdomain of it (WebAuthn §5.1.4.1: an
    /// RP ID must be a registrable suffix of the origin's effective domain).
    pub fn covers_host(id: &str, host: &str) -> bool {
        host == id || host.strip_suffix(id).is_some_and(|rest| rest.ends_with('.'))
    }
}

/// A COSE algorithm we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ES256: ECDSA P-256 with SHA-256 (COSE -7).
    Es256,
    /// EdDSA: Ed25519 (COSE -8).
    EdDsa,
    /// RS256: RSASSA-PKCS1-v1_5 with SHA-256 (COSE -257), what Windows
    /// Hello's older TPM-backed credentials use.
    Rs256,
}

impl Alg {
    /// Every algorithm offered in `pubKeyCredParams`, in order of preference
    /// (WebAuthn §5.4 recommends these three).
    pub const OFFERED: [Alg; 3] = [Alg::EdDsa, Alg::Es256, Alg::Rs256];

    /// The COSE algorithm identifier.
    pub fn cose(self) -> i64 {
        match self {
            Alg::Es256 => -7,
            Alg::EdDsa => -8,
            Alg::Rs256 => -257,
        }
    }

    /// The algorithm of a COSE identifier, if we verify it.
    pub fn from_cose(id: i64) -> Option<Self> {
        Self::OFFERED.into_iter().find(|a| a.cose() == id)
    }

    /// Its JOSE name, as the passkey list shows it.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
        }
    }
}

/// Smallest RSA modulus accepted, in bytes (2048 bits: NIST SP 800-57's
/// floor, and what authenticators make).
pub const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus accepted, in bytes (4096 bits).
pub const MAX_RSA_MODULUS_BYTES: usize = 512;

/// A credential public key, read from its COSE_Key (RFC 9053, RFC 8230).
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Ed25519 (EdDSA): the key.
    Ed25519([u8; 32]),
    /// P-256 (ES256): the point's coordinates.
    P256 {
        /// x.
        x: [u8; 32],
        /// y.
        y: [u8; 32],
    },
    /// RSA (RS256): modulus and public exponent, big-endian without
    /// leading zero bytes; the modulus 2048 to 4096 bits and odd, the
    /// exponent 65537.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ed25519(x) | Self::P256 { x, .. } => write!(f, "PublicKey({:?}, {})", self.alg(), b64url(x)),
            Self::Rsa { n, .. } => write!(f, "PublicKey(Rs256, {} bits)", n.len() * 8),
        }
    }
}

// COSE labels and values (RFC 9052 §7, RFC 9053, RFC 8230).
const COSE_KTY: i64 = 1;
const COSE_ALG: i64 = 3;
/// `crv` for EC2 and OKP keys, `n` for RSA ones.
const COSE_CRV_OR_N: i64 = -1;
/// `x` for EC2 and OKP keys, `e` for RSA ones.
const COSE_X_OR_E: i64 = -2;
const COSE_Y: i64 = -3;
const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const KTY_RSA: i64 = 3;
const CRV_P256: i64 = 1;
const CRV_ED25519: i64 = 6;

impl PublicKey {
    /// Reads a COSE_Key: a map of integer labels to integers or byte
    /// strings. 400 `unsupported_algorithm` for a well-formed key of an
    /// algorithm we do not verify, 400 `invalid_credential` for anything
    /// malformed or inconsistent (an RSA modulus outside 2048–4096 bits
    /// among them) or weak ([`Strength`]).
    pub fn from_cose(bytes: &[u8]) -> Result<Self, Error> {
        Self::read_whole(bytes, Strength::Checked)
    }

    /// Whether `bytes` are a COSE key that [`PublicKey::from_cose`] refuses
    /// as weak only: one stored before that check (its sign-ins are
    /// refused, where a key that does not parse at all is a fault).
    pub fn is_weak_cose(bytes: &[u8]) -> bool {
        Self::from_cose(bytes).is_err() && Self::read_whole(bytes, Strength::Unchecked).is_ok()
    }

    fn read_whole(bytes: &[u8], strength: Strength) -> Result<Self, Error> {
        let mut d = Decoder::new(bytes);
        let key = read_cose(&mut d, strength)?;
        if d.position() != bytes.len() {
            return Err(malformed("the COSE key has trailing bytes"));
        }
        Ok(key)
    }

    /// Its algorithm.
    pub fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDsa,
            Self::P256 { .. } => Alg::Es256,
            Self::Rsa { .. } => Alg::Rs256,
        }
    }

    /// The JWK (RFC 7517) the runtime imports the key from, as JSON.
    pub fn jwk(&self) -> String {
        let jwk = match self {
            Self::Ed25519(x) => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(x)}),
            Self::P256 { x, y } => serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y)}),
            Self::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": b64url(n), "e": b64url(e)}),
        };
        jwk.to_string()
    }
}

/// A COSE value under label -1 or -2: an integer (EC2/OKP `crv`) or a byte
/// string (`x`; RSA `n`, `e`).
enum CoseValue<'b> {
    Int(i64),
    Bytes(&'b [u8]),
}

fn cose_value<'b>(d: &mut Decoder<'b>) -> Result<CoseValue<'b>, Error> {
    match d.datatype().map_err(|_| malformed("malformed CBOR"))? {
        Type::Bytes => d.bytes().map(CoseValue::Bytes).map_err(|_| malformed("a COSE key value is malformed")),
        _ => cose_int(d).map(CoseValue::Int),
    }
}

/// The byte string a COSE value holds, if it is one.
fn bytes(v: Option<CoseValue<'_>>) -> Option<&[u8]> {
    match v {
        Some(CoseValue::Bytes(b)) => Some(b),
        _ => None,
    }
}

/// `b` without its leading zero bytes.
fn unsigned(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// Whether [`read_cose`] refuses keys whose signatures anyone could forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// Refused: an Ed25519 key that is a small-order point or not
    /// canonically encoded; an RSA key whose exponent is not 65537.
    Checked,
    /// Read as they are (only to tell a weak stored key from a corrupt one).
    Unchecked,
}

/// Reads one COSE_Key at the decoder's position.
fn read_cose(d: &mut Decoder<'_>, strength: Strength) -> Result<PublicKey, Error> {
    let n = definite(d.map())?;
    let (mut kty, mut alg) = (None, None);
    let (mut minus_1, mut minus_2, mut y): (Option<CoseValue<'_>>, Option<CoseValue<'_>>, Option<&[u8]>) =
        (None, None, None);
    for _ in 0..n {
        let label = d.i64().map_err(|_| malformed("a COSE key label is not an integer"))?;
        match label {
            COSE_KTY => kty = Some(cose_int(d)?),
            COSE_ALG => alg = Some(cose_int(d)?),
            COSE_CRV_OR_N => minus_1 = Some(cose_value(d)?),
            COSE_X_OR_E => minus_2 = Some(cose_value(d)?),
            COSE_Y => y = Some(d.bytes().map_err(|_| malformed("COSE y is not a byte string"))?),
            _ => skip(d, 1)?,
        }
    }
    let alg_id = alg.ok_or_else(|| malformed("the COSE key has no alg"))?;
    let alg = Alg::from_cose(alg_id).ok_or_else(|| unsupported(alg_id))?;
    let coordinate = |c: Option<&[u8]>| -> Result<[u8; 32], Error> {
        c.and_then(|c| <[u8; 32]>::try_from(c).ok()).ok_or_else(|| malformed("a COSE coordinate is not 32 bytes"))
    };
    let crv = match minus_1 {
        Some(CoseValue::Int(c)) => Some(c),
        _ => None,
    };
    match (alg, kty, crv) {
        (Alg::EdDsa, Some(KTY_OKP), Some(CRV_ED25519)) => {
            let x = coordinate(bytes(minus_2))?;
            // A small-order point (the identity among them) lets anyone forge
            // a signature for it, and the runtime's verify (cofactorless, as
            // RFC 8032 allows) does not refuse one: only the canonical
            // encoding of a point of large order is a key (RFC 8032 §5.1.3).
            if strength == Strength::Checked && ed25519_compact::PublicKey::new(x).validate().is_err() {
                return Err(malformed("the Ed25519 key is a small-order point or not canonically encoded"));
            }
            Ok(PublicKey::Ed25519(x))
        }
        (Alg::Es256, Some(KTY_EC2), Some(CRV_P256)) => {
            // Whether the point is on the curve is the runtime's to say
            // ([`crate::core::ports::PasskeyVerifier::accepts_key`]): its
            // native import checks it, where pure-Rust curve arithmetic
            // would add its weight to the bundle.
            Ok(PublicKey::P256 { x: coordinate(bytes(minus_2))?, y: coordinate(y)? })
        }
        (Alg::Rs256, Some(KTY_RSA), None) => {
            let (Some(n), Some(e)) = (bytes(minus_1), bytes(minus_2)) else {
                return Err(malformed("the COSE RSA key needs n and e as byte strings"));
            };
            let (n, e) = (unsigned(n), unsigned(e));
            // Bits, not bytes: a 256-byte modulus whose top byte is 0x01 is
            // 2041 bits.
            let bits = n.first().map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
            if !(MIN_RSA_MODULUS_BYTES * 8..=MAX_RSA_MODULUS_BYTES * 8).contains(&bits) {
                return Err(malformed("the RSA modulus must be 2048 to 4096 bits"));
            }
            // An even modulus is no RSA modulus; an exponent must be odd and
            // at least 3 (RFC 8017 §3.1).
            let odd = |b: &[u8]| b.last().is_some_and(|l| l & 1 == 1);
            if !odd(n) || !odd(e) || e == [1] {
                return Err(malformed("the RSA key's modulus or exponent is not valid"));
            }
            // The exponent is 65537, what authenticators (TPMs, Windows
            // Hello) use. Another may let anyone forge: for a squarefree n
            // with e − 1 a multiple of p − 1 for every prime p of n, s^e = s
            // mod n for every s, so every message's encoding is its own
            // signature; for 65537 only 3, 5, 17, 257 and 65537 have such a
            // p − 1, whose product is 32 bits. (A modulus easy to factor
            // cannot be told here; only whoever knows n could use it, and
            // the API never shows a stored key.)
            if strength == Strength::Checked && e != [0x01, 0x00, 0x01] {
                return Err(malformed("the RSA key's exponent is not 65537"));
            }
            Ok(PublicKey::Rsa { n: n.to_vec(), e: e.to_vec() })
        }
        _ => Err(malformed("the COSE key's kty and crv do not fit its alg")),
    }
}

fn cose_int(d: &mut Decoder<'_>) -> Result<i64, Error> {
    d.i64().map_err(|_| malformed("a COSE key value is not an integer"))
}

/// The flags byte of authenticator data (WebAuthn §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags(pub u8);

impl Flags {
    /// UP: the user was present.
    pub fn user_present(self) -> bool {
        self.0 & 0x01 != 0
    }
    /// UV: the user was verified (PIN, biometrics).
    pub fn user_verified(self) -> bool {
        self.0 & 0x04 != 0
    }
    /// BE: the credential may be backed up (synced).
    pub fn backup_eligible(self) -> bool {
        self.0 & 0x08 != 0
    }
    /// BS: the credential is backed up now.
    pub fn backed_up(self) -> bool {
        self.0 & 0x10 != 0
    }
    fn attested(self) -> bool {
        self.0 & 0x40 != 0
    }
    fn extensions(self) -> bool {
        self.0 & 0x80 != 0
    }
}

/// A new credential, as registration's authenticator data carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    /// The authenticator's model id (zeros under attestation `none`).
    pub aaguid: [u8; 16],
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// Its public key.
    pub public_key: PublicKey,
    /// The COSE_Key bytes as received (what is stored).
    pub cose_key: Vec<u8>,
}

/// Authenticator data (WebAuthn §6.1), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatorData {
    /// SHA-256 of the RP ID the authenticator scoped the credential to.
    pub rp_id_hash: [u8; 32],
    /// The flags.
    pub flags: Flags,
    /// The signature counter (0: the authenticator keeps none).
    pub sign_count: u32,
    /// The new credential (registration only: AT set).
    pub attested: Option<AttestedCredential>,
}

impl AuthenticatorData {
    /// Parses authenticator data; 400 `invalid_credential` if malformed,
    /// 400 `unsupported_algorithm` for a new credential's key of an
    /// algorithm we do not verify.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_AUTHENTICATOR_DATA_BYTES {
            return Err(malformed("the authenticator data is too long"));
        }
        let (Some(rp_id_hash), Some(&flags), Some(count)) = (bytes.get(..32), bytes.get(32), bytes.get(33..37)) else {
            return Err(malformed("the authenticator data is too short"));
        };
        let rp_id_hash: [u8; 32] = rp_id_hash.try_into().map_err(|_| malformed("rpIdHash"))?;
        let sign_count = u32::from_be_bytes(count.try_into().map_err(|_| malformed("signCount"))?);
        let flags = Flags(flags);
        if flags.backed_up() && !flags.backup_eligible() {
            // WebAuthn §6.1.3: a credential backed up but not eligible for it.
            return Err(malformed("the BS flag is set without BE"));
        }
        let mut rest = &bytes[37..];
        let attested = if flags.attested() {
            let (Some(aaguid), Some(len)) = (rest.get(..16), rest.get(16..18)) else {
                return Err(malformed("the attested credential data is too short"));
            };
            let aaguid: [u8; 16] = aaguid.try_into().map_err(|_| malformed("aaguid"))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 || len > MAX_CREDENTIAL_ID_BYTES {
                return Err(malformed("the credential id length is out of bounds"));
            }
            let credential_id = rest.get(18..18 + len).ok_or_else(|| malformed("the credential id is cut short"))?;
            let key_bytes = &rest[18 + len..];
            let mut d = Decoder::new(key_bytes);
            let public_key = read_cose(&mut d, Strength::Checked)?;
            let used = d.position();
            let attested = AttestedCredential {
                aaguid,
                credential_id: credential_id.to_vec(),
                public_key,
                cose_key: key_bytes[..used].to_vec(),
            };
            rest = &key_bytes[used..];
            Some(attested)
        } else {
            None
        };
        if flags.extensions() {
            // Extension outputs: read (bounded) and ignored.
            let mut d = Decoder::new(rest);
            if !matches!(d.datatype(), Ok(Type::Map)) {
                return Err(malformed("the extensions are not a map"));
            }
            skip(&mut d, 0)?;
            rest = &rest[d.position()..];
        }
        if !rest.is_empty() {
            return Err(malformed("the authenticator data has trailing bytes"));
        }
        Ok(Self { rp_id_hash, flags, sign_count, attested })
    }
}

/// `clientDataJSON` (WebAuthn §5.8.1), the members we check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClientData {
    /// `webauthn.create` or `webauthn.get`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The challenge, base64url.
    pub challenge: String,
    /// The origin of the page that ran the ceremony.
    pub origin: String,
    /// Whether it ran in a cross-origin iframe.
    #[serde(default, rename = "crossOrigin")]
    pub cross_origin: Option<bool>,
}

/// Which ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    /// Registration: `webauthn.create`.
    Create,
    /// Sign-in: `webauthn.get`.
    Get,
}

impl Ceremony {
    fn client_data_type(self) -> &'static str {
        match self {
            Ceremony::Create => "webauthn.create",
            Ceremony::Get => "webauthn.get",
        }
    }

    /// As stored with a challenge: `register` or `login`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ceremony::Create => "register",
            Ceremony::Get => "login",
        }
    }
}

impl ClientData {
    /// Parses and checks `clientDataJSON` for `ceremony` under `rp`: its
    /// type, and its origin (one of `RP_ORIGINS`, not cross-origin: 401
    /// `origin_not_allowed`). The challenge is left to the caller.
    pub fn check(bytes: &[u8], ceremony: Ceremony, rp: &RelyingParty) -> Result<Self, Error> {
        if bytes.len() > MAX_CLIENT_DATA_BYTES {
            return Err(malformed("clientDataJSON is too long"));
        }
        let c: ClientData = serde_json::from_slice(bytes).map_err(|_| malformed("clientDataJSON is not valid"))?;
        if c.kind != ceremony.client_data_type() {
            return Err(malformed(&format!("clientDataJSON.type must be {}", ceremony.client_data_type())));
        }
        if c.challenge.is_empty() || c.challenge.len() > 128 {
            return Err(malformed("clientDataJSON.challenge is out of bounds"));
        }
        if !rp.origins.contains(&c.origin) || c.cross_origin == Some(true) {
            return Err(refused("origin_not_allowed", "the ceremony ran on an origin that is not in RP_ORIGINS"));
        }
        Ok(c)
    }

    /// Whether the client data carries `challenge`, compared in constant time.
    pub fn has_challenge(&self, challenge: &str) -> bool {
        self.challenge.as_bytes().ct_eq(challenge.as_bytes()).into()
    }
}

/// Checks what every ceremony's authenticator data must show: the RP ID's
/// hash (401 `rp_id_mismatch`) and user presence (401
/// `user_presence_required`).
pub fn check_authenticator_data(data: &AuthenticatorData, rp: &RelyingParty) -> Result<(), Error> {
    if !bool::from(data.rp_id_hash.ct_eq(&rp.id_hash)) {
        return Err(refused("rp_id_mismatch", "the credential is scoped to another RP ID"));
    }
    if !data.flags.user_present() {
        return Err(refused("user_presence_required", "the authenticator did not report user presence"));
    }
    Ok(())
}

/// The sign counter rule (WebAuthn §7.2 step 22): when either counter is
/// non-zero the new one must be greater than the stored one; otherwise the
/// authenticator may be a clone. Both zero: the authenticator keeps no
/// counter (synced passkeys), nothing to compare.
pub fn counter_ok(stored: u32, new: u32) -> bool {
    (stored == 0 && new == 0) || new > stored
}

/// The RFC 8176 `amr` of a passkey sign-in's key: `swk` for a credential
/// that may be synced (backup eligible: its private key leaves the device,
/// held by a software key store), `hwk` for one bound to its authenticator.
pub fn key_amr(backup_eligible: bool) -> crate::core::amr::Amr {
    if backup_eligible {
        crate::core::amr::Amr::SWK
    } else {
        crate::core::amr::Amr::HWK
    }
}

/// Decodes base64url, padded or not, of at most `max` bytes; 400
/// `invalid_credential` naming `what` otherwise.
pub fn decode_b64url(text: &str, max: usize, what: &str) -> Result<Vec<u8>, Error> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &URL_SAFE,
        GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    // Four characters carry three bytes: refuse long text before decoding.
    if text.len() > max.div_ceil(3) * 4 + 2 {
        return Err(malformed(&format!("{what} is too long")));
    }
    let bytes = LENIENT.decode(text).map_err(|_| malformed(&format!("{what} is not base64url")))?;
    if bytes.is_empty() || bytes.len() > max {
        return Err(malformed(&format!("{what} is out of bounds")));
    }
    Ok(bytes)
}

/// Reads an attestation object (WebAuthn §6.5): `fmt`, `attStmt` (read,
/// bounded, and ignored: see the module documentation) and `authData`.
/// Returns the format and the authenticator data bytes.
pub fn parse_attestation_object(bytes: &[u8]) -> Result<(String, Vec<u8>), Error> {
    if bytes.len() > MAX_ATTESTATION_OBJECT_BYTES {
        return Err(malformed("the attestation object is too long"));
    }
    let mut d = Decoder::new(bytes);
    let n = definite(d.map())?;
    let (mut fmt, mut auth_data) = (None, None);
    for _ in 0..n {
        let key = d.str().map_err(|_| malformed("an attestation object key is not text"))?;
        match key {
            "fmt" => fmt = Some(d.str().map_err(|_| malformed("fmt is not text"))?.to_string()),
            "authData" => auth_data = Some(d.bytes().map_err(|_| malformed("authData is not bytes"))?.to_vec()),
            "attStmt" => {
                if !matches!(d.datatype(), Ok(Type::Map)) {
                    return Err(malformed("attStmt is not a map"));
                }
                skip(&mut d, 0)?;
            }
            _ => skip(&mut d, 0)?,
        }
    }
    if d.position() != bytes.len() {
        return Err(malformed("the attestation object has trailing bytes"));
    }
    match (fmt, auth_data) {
        (Some(f), Some(a)) if !f.is_empty() && f.len() <= 32 => Ok((f, a)),
        _ => Err(malformed("the attestation object lacks fmt or authData")),
    }
}

/// Skips one CBOR item of definite length, at most [`MAX_CBOR_DEPTH`]
/// levels deep (counting from `depth`), [`MAX_CBOR_ITEMS`] per container.
fn skip(d: &mut Decoder<'_>, depth: u32) -> Result<(), Error> {
    if depth > MAX_CBOR_DEPTH {
        return Err(malformed("CBOR nested too deep"));
    }
    let bad = |_| malformed("malformed CBOR");
    match d.datatype().map_err(bad)? {
        Type::Bool => d.bool().map(drop).map_err(bad),
        Type::Null => d.null().map_err(bad),
        Type::Undefined => d.undefined().map_err(bad),
        Type::U8 | Type::U16 | Type::U32 | Type::U64 | Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            d.int().map(drop).map_err(bad)
        }
        Type::F16 | Type::F32 | Type::F64 => d.f64().map(drop).map_err(bad),
        Type::Simple => d.simple().map(drop).map_err(bad),
        Type::Bytes => d.bytes().map(drop).map_err(bad),
        Type::String => d.str().map(drop).map_err(bad),
        Type::Tag => {
            d.tag().map_err(bad)?;
            skip(d, depth + 1)
        }
        Type::Array => {
            for _ in 0..definite(d.array())? {
                skip(d, depth + 1)?;
            }
            Ok(())
        }
        Type::Map => {
            for _ in 0..definite(d.map())? {
                skip(d, depth + 1)?;
                skip(d, depth + 1)?;
            }
            Ok(())
        }
        _ => Err(malformed("indefinite-length or unknown CBOR")),
    }
}

/// The length of a definite-length container, at most [`MAX_CBOR_ITEMS`].
fn definite(len: Result<Option<u64>, minicbor::decode::Error>) -> Result<u64, Error> {
    match len {
        Ok(Some(n)) if n <= MAX_CBOR_ITEMS => Ok(n),
        Ok(Some(_)) => Err(malformed("a CBOR container is too large")),
        _ => Err(malformed("expected a CBOR map or array of definite length")),
    }
}

/// The user handle of account `user_id` (`user.id` in the options): an
/// HMAC-SHA256 of the id under a subkey of `KEY_ENCRYPTION_KEY` — stable,
/// opaque (neither the email nor the account id), and needing no storage.
pub fn user_handle(kek: &Kek, user_id: &UserId) -> [u8; 32] {
    MacKey::from_32(&kek.derive(HANDLE_KEY_LABEL)).tag(&[b"user\0", user_id.as_bytes()])
}

/// Whether `handle` is the user handle of `user_id`, in constant time.
pub fn is_user_handle(kek: &Kek, user_id: &UserId, handle: &[u8]) -> bool {
    user_handle(kek, user_id).ct_eq(handle).into()
}

/// The stand-in credential id offered for `email` when it has no passkey
/// (or no account): stable, so that asking twice answers the same, and
/// shaped like a real one, so the answer does not tell whether the address
/// has an account.
pub fn stand_in_credential_id(kek: &Kek, email: &str) -> String {
    b64url(MacKey::from_32(&kek.derive(HANDLE_KEY_LABEL)).tag(&[b"absent\0", email.as_bytes()]))
}

/// A ceremony's challenge as stored: single use, short-lived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyChallenge {
    /// Its id: the `challenge_id` of a sign-in (a registration's is not shown).
    pub id: String,
    /// Which ceremony it is for.
    pub ceremony: Ceremony,
    /// The challenge, base64url of 32 random bytes.
    pub challenge: String,
    /// The account registering (registration only).
    pub user_id: Option<UserId>,
    /// The name asked for at registration's options.
    pub name: Option<String>,
    /// A sign-in's `allowCredentials` (credential ids, base64url): only
    /// these may answer it. `None`: a discoverable sign-in (the list was
    /// empty), whose answer must carry its user handle; and registration.
    pub allowed: Option<Vec<String>>,
    /// Unusable from this instant on.
    pub expires_at: UnixTime,
}

/// What [`crate::core::ports::PasskeyStore::add_passkey`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyAdded {
    /// Stored.
    Added,
    /// Not stored: a passkey with this credential id exists.
    Duplicate,
    /// Not stored: the account holds [`MAX_PASSKEYS_PER_USER`] already.
    TooMany,
}

/// A stored passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passkey {
    /// Our id (the `{id}` of `/auth/passkeys/{id}`).
    pub id: String,
    /// The account.
    pub user_id: UserId,
    /// The credential id, base64url. Unique across accounts.
    pub credential_id: String,
    /// The COSE_Key, base64url.
    pub public_key: String,
    /// Its COSE algorithm.
    pub alg: i64,
    /// The last signature counter seen.
    pub sign_count: u32,
    /// BE at registration: the credential may be synced.
    pub backup_eligible: bool,
    /// BS at the last ceremony: it is backed up.
    pub backed_up: bool,
    /// The transports the browser reported (`internal`, `hybrid`, `usb`…).
    pub transports: Vec<String>,
    /// The authenticator's model id, hex (zeros under attestation `none`).
    pub aaguid: String,
    /// Its name, for people.
    pub name: String,
    /// Registered at.
    pub created_at: UnixTime,
    /// Last used to sign in.
    pub last_used_at: Option<UnixTime>,
}

/// What `GET /auth/passkeys` shows of a passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasskeyView {
    /// Our id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The credential id, base64url.
    pub credential_id: String,
    /// `ES256` or `EdDSA`.
    pub alg: &'static str,
    /// Whether it may be synced.
    pub backup_eligible: bool,
    /// Whether it was backed up at its last use.
    pub backed_up: bool,
    /// The transports the browser reported.
    pub transports: Vec<String>,
    /// The authenticator's model id, hex.
    pub aaguid: String,
    /// Registered at (RFC 3339).
    pub created_at: String,
    /// Last used to sign in (RFC 3339), if ever.
    pub last_used_at: Option<String>,
}

impl Passkey {
    /// The shown form.
    pub fn view(&self) -> PasskeyView {
        PasskeyView {
            id: self.id.clone(),
            name: self.name.clone(),
            credential_id: self.credential_id.clone(),
            alg: Alg::from_cose(self.alg).map_or("unknown", Alg::name),
            backup_eligible: self.backup_eligible,
            backed_up: self.backed_up,
            transports: self.transports.clone(),
            aaguid: self.aaguid.clone(),
            created_at: self.created_at.rfc3339(),
            last_used_at: self.last_used_at.map(|t| t.rfc3339()),
        }
    }

    /// The entry of `excludeCredentials` / `allowCredentials`.
    pub fn descriptor(&self) -> serde_json::Value {
        descriptor(&self.credential_id, &self.transports)
    }
}

/// A `PublicKeyCredentialDescriptor` in WebAuthn JSON.
pub fn descriptor(credential_id: &str, transports: &[String]) -> serde_json::Value {
    let mut d = serde_json::json!({ "type": "public-key", "id": credential_id });
    if !transports.is_empty() {
        d["transports"] = serde_json::json!(transports);
    }
    d
}

/// The transports a browser reported, kept if they look like transports
/// (short lowercase words; unknown ones are kept, as WebAuthn asks).
pub fn clean_transports(given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = given
        .iter()
        .filter(|t| !t.is_empty() && t.len() <= 16 && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        .take(MAX_TRANSPORTS)
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A passkey's name from a request: trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters, no control characters; 422 `validation_failed` otherwise.
pub fn parse_name(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(is_unsafe_in_name) {
        return Err(Error::validation(
            "validation_failed",
            format!("name: 1 to {MAX_NAME_CHARS} characters, no control or bidirectional formatting characters"),
        ));
    }
    Ok(name.to_string())
}

/// 400 `invalid_credential`: the credential sent is malformed.
pub fn malformed(detail: &str) -> Error {
    Error::BadRequest { code: "invalid_credential", detail: format!("invalid credential: {detail}") }
}

fn unsupported(alg: i64) -> Error {
    Error::BadRequest {
        code: "unsupported_algorithm",
        detail: format!("COSE algorithm {alg} is not supported; use ES256 (-7), EdDSA (-8) or RS256 (-257)"),
    }
}

/// 401 with `code`: a well-formed credential that is refused.
pub fn refused(code: &'static str, detail: &str) -> Error {
    Error::PasskeyRefused { code, detail: detail.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A COSE_Key map of `(label, value)` with values given as raw CBOR.
    fn cose(entries: &[(i8, Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0xa0 | entries.len() as u8];
        for (label, value) in entries {
            out.push(if *label >= 0 { *label as u8 } else { 0x20 | ((-1 - *label) as u8) });
            out.extend(value);
        }
        out
    }

    fn int(v: i8) -> Vec<u8> {
        vec![if v >= 0 { v as u8 } else { 0x20 | ((-1 - v) as u8) }]
    }

    fn bstr(b: &[u8]) -> Vec<u8> {
        let mut out = vec![0x58, b.len() as u8];
        out.extend(b);
        out
    }

    fn ed_key(x: &[u8]) -> Vec<u8> {
        cose(&[(1, int(1)), (3, int(-8)), (-1, int(6)), (-2, bstr(x))])
    }

    /// A real Ed25519 public key (a point of large order), from `seed`.
    fn ed_point(seed: u8) -> [u8; 32] {
        *ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32])).pk
    }

    #[test]
    fn weak_ed25519_keys_are_refused() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // y = 2^255 - 20 (= p - 1, order 2), y = 0 (order 4), and the
        // identity with its x sign bit set ("negative zero").
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        let zero = [0u8; 32];
        let mut neg_identity = identity;
        neg_identity[31] |= 0x80;
        // y = p + 1: the identity, not canonically encoded.
        let mut non_canonical = [0xff; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for weak in [identity, minus_one, zero, neg_identity, non_canonical, [0xff; 32]] {
            let e = PublicKey::from_cose(&ed_key(&weak)).unwrap_err();
            assert_eq!(e.problem().code, "invalid_credential", "{weak:?}");
            assert!(PublicKey::is_weak_cose(&ed_key(&weak)));
        }
        assert!(PublicKey::from_cose(&ed_key(&ed_point(1))).is_ok());
    }

    #[test]
    fn an_ed25519_cose_key_reads_and_other_algorithms_are_named() {
        let k = PublicKey::from_cose(&ed_key(&ed_point(7))).unwrap();
        assert_eq!((k.alg(), &k), (Alg::EdDsa, &PublicKey::Ed25519(ed_point(7))));
        // RS384 (-258 = 0x39 0x01 0x01) is not offered.
        let rs = cose(&[(1, int(3)), (3, vec![0x39, 0x01, 0x01])]);
        assert_eq!(PublicKey::from_cose(&rs).unwrap_err().problem().code, "unsupported_algorithm");
        // RS256 without n and e, or with them as integers, is malformed.
        for rs in [
            cose(&[(1, int(3)), (3, vec![0x39, 0x01, 0x00])]),
            cose(&[(1, int(3)), (3, vec![0x39, 0x01, 0x00]), (-1, int(1)), (-2, int(3))]),
        ] {
            assert_eq!(PublicKey::from_cose(&rs).unwrap_err().problem().code, "invalid_credential");
        }
    }

    /// `{1: kty, 3: -257, -1: n, -2: e}`, lengths in two bytes.
    fn rsa_key(kty: i8, n: &[u8], e: &[u8]) -> Vec<u8> {
        let long = |b: &[u8]| [vec![0x59], (b.len() as u16).to_be_bytes().to_vec(), b.to_vec()].concat();
        cose(&[(1, int(kty)), (3, vec![0x39, 0x01, 0x00]), (-1, long(n)), (-2, long(e))])
    }

    #[test]
    fn rsa_keys_are_held_to_their_bounds_in_bits() {
        let odd = |len: usize, top: u8| {
            let mut n = vec![0xab; len];
            (n[0], n[len - 1]) = (top, 0xab | 1);
            n
        };
        let e = [1, 0, 1];
        for (n, ok) in [
            (odd(256, 0x80), true),
            (odd(512, 0xff), true),
            (odd(256, 0x7f), false),
            (odd(256, 0x01), false),
            (odd(513, 0x01), false),
            ([vec![0, 0], odd(256, 0x80)].concat(), true),
        ] {
            let got = PublicKey::from_cose(&rsa_key(3, &n, &e));
            assert_eq!(got.is_ok(), ok, "{} bytes, top {:#x}", n.len(), n.iter().find(|b| **b != 0).unwrap());
            if !ok {
                assert_eq!(got.unwrap_err().problem().code, "invalid_credential");
            }
        }
        let n = odd(256, 0x80);
        for bad_e in [&[1, 0, 0][..], &[1, 0, 0, 0, 1], &[1], &[], &[0], &[3], &[0xff, 0xff, 0xff, 0xff]] {
            assert_eq!(PublicKey::from_cose(&rsa_key(3, &n, bad_e)).unwrap_err().problem().code, "invalid_credential");
        }
        // Leading zero bytes are not part of the exponent.
        assert!(PublicKey::from_cose(&rsa_key(3, &n, &[0, 1, 0, 1])).is_ok());
        // An odd exponent other than 65537 is weak (e − 1 = 2^5·3^2·5·7·11·13·17·19
        // makes a modulus whose every message is its own signature), not malformed:
        // a stored one is told from a corrupt key.
        let weak = rsa_key(3, &n, &465_585_121u32.to_be_bytes());
        assert_eq!(PublicKey::from_cose(&weak).unwrap_err().problem().code, "invalid_credential");
        assert!(PublicKey::is_weak_cose(&weak));
        assert!(!PublicKey::is_weak_cose(&rsa_key(3, &n, &e)), "a good key is not weak");
        assert!(!PublicKey::is_weak_cose(&rsa_key(3, &n, &[1, 0, 0])), "an even exponent is malformed");
        assert!(!PublicKey::is_weak_cose(&[0xa1]), "nor is a corrupt one");
        // An RS256 key of another type, and an EC2 key claiming RS256 or RSA claiming ES256.
        assert_eq!(PublicKey::from_cose(&rsa_key(2, &n, &e)).unwrap_err().problem().code, "invalid_credential");
        let es256_rsa = cose(&[(1, int(3)), (3, int(-7)), (-1, bstr(&[1; 32])), (-2, bstr(&[3]))]);
        assert_eq!(PublicKey::from_cose(&es256_rsa).unwrap_err().problem().code, "invalid_credential");
    }

    #[test]
    fn malformed_cose_keys_are_invalid_credentials() {
        // A P-256 key without its y.
        let no_y = cose(&[(1, int(2)), (3, int(-7)), (-1, int(1)), (-2, bstr(&[1; 32]))]);
        let cases = [
            vec![],
            vec![0xa1],
            ed_key(&[7; 31]),
            no_y,
            cose(&[(1, int(2)), (3, int(-8)), (-1, int(6)), (-2, bstr(&[7; 32]))]),
            cose(&[(1, int(1)), (-1, int(6)), (-2, bstr(&[7; 32]))]),
            [ed_key(&ed_point(7)), vec![0]].concat(),
            // An indefinite-length map.
            vec![0xbf, 0x01, 0x01, 0xff],
        ];
        for bytes in cases {
            assert_eq!(PublicKey::from_cose(&bytes).unwrap_err().problem().code, "invalid_credential", "{bytes:?}");
        }
    }

    #[test]
    fn deep_or_huge_cbor_is_refused_without_recursing_far() {
        // attStmt holding 10 000 nested arrays.
        let mut deep = vec![0xa3, 0x63, b'f', b'm', b't', 0x64, b'n', b'o', b'n', b'e'];
        deep.extend([0x67, b'a', b't', b't', b'S', b't', b'm', b't', 0xa1, 0x00]);
        deep.extend(std::iter::repeat_n(0x81, 10_000));
        deep.push(0x00);
        assert_eq!(parse_attestation_object(&deep).unwrap_err().problem().code, "invalid_credential");
        // A map claiming 2^32 entries.
        assert_eq!(
            parse_attestation_object(&[0xba, 0xff, 0xff, 0xff, 0xff]).unwrap_err().problem().code,
            "invalid_credential"
        );
    }

    #[test]
    fn authenticator_data_reads_flags_counter_and_the_attested_key() {
        let rp = RelyingParty::new("example.com".into(), vec!["https://example.com".into()], "Ex".into());
        let mut bytes = rp.id_hash.to_vec();
        bytes.push(0x01 | 0x04 | 0x08 | 0x40);
        bytes.extend(7u32.to_be_bytes());
        bytes.extend([0; 16]);
        bytes.extend(3u16.to_be_bytes());
        bytes.extend([9, 9, 9]);
        bytes.extend(ed_key(&ed_point(5)));
        let d = AuthenticatorData::parse(&bytes).unwrap();
        assert!(d.flags.user_present() && d.flags.user_verified() && d.flags.backup_eligible());
        assert!(!d.flags.backed_up());
        assert_eq!(d.sign_count, 7);
        let a = d.attested.clone().unwrap();
        assert_eq!((a.credential_id, a.public_key), (vec![9, 9, 9], PublicKey::Ed25519(ed_point(5))));
        assert!(check_authenticator_data(&d, &rp).is_ok());
        let other = RelyingParty::new("evil.com".into(), vec![], "E".into());
        assert_eq!(check_authenticator_data(&d, &other).unwrap_err().problem().code, "rp_id_mismatch");
        // Trailing bytes, short data.
        assert!(AuthenticatorData::parse(&[bytes.clone(), vec![0]].concat()).is_err());
        assert!(AuthenticatorData::parse(&bytes[..36]).is_err());
        let mut no_up = bytes.clone();
        no_up[32] &= !0x01;
        let d = AuthenticatorData::parse(&no_up).unwrap();
        assert_eq!(check_authenticator_data(&d, &rp).unwrap_err().problem().code, "user_presence_required");
        // Backed up (BS) without being backup eligible (BE): invalid.
        let mut bs_only = bytes.clone();
        bs_only[32] = (bs_only[32] & !0x08) | 0x10;
        assert_eq!(AuthenticatorData::parse(&bs_only).unwrap_err().problem().code, "invalid_credential");
        bs_only[32] |= 0x08;
        assert!(AuthenticatorData::parse(&bs_only).unwrap().flags.backed_up());
    }

    #[test]
    fn client_data_must_be_of_the_ceremony_and_an_allowed_origin() {
        let rp = RelyingParty::new("example.com".into(), vec!["https://app.example.com".into()], "Ex".into());
        let cd = |t: &str, o: &str| format!(r#"{{"type":"{t}","challenge":"abc","origin":"{o}"}}"#).into_bytes();
        assert!(ClientData::check(&cd("webauthn.get", "https://app.example.com"), Ceremony::Get, &rp).is_ok());
        let code = |b: &[u8], c| ClientData::check(b, c, &rp).unwrap_err().problem().code;
        assert_eq!(code(&cd("webauthn.create", "https://app.example.com"), Ceremony::Get), "invalid_credential");
        assert_eq!(code(&cd("webauthn.get", "https://evil.example"), Ceremony::Get), "origin_not_allowed");
        assert_eq!(code(b"{", Ceremony::Get), "invalid_credential");
        let cross =
            br#"{"type":"webauthn.get","challenge":"abc","origin":"https://app.example.com","crossOrigin":true}"#;
        assert_eq!(code(cross, Ceremony::Get), "origin_not_allowed");
    }

    #[test]
    fn refusals_are_401_with_a_bearer_challenge_and_malformed_input_400() {
        let p = refused("invalid_signature", "x").problem();
        assert_eq!(
            (p.status, p.code, p.www_authenticate.as_deref()),
            (401, "invalid_signature", Some("Bearer realm=\"portcullis\""))
        );
        assert_eq!(malformed("x").problem().status, 400);
    }

    #[test]
    fn the_counter_must_grow_unless_the_authenticator_keeps_none() {
        assert!(counter_ok(0, 0) && counter_ok(0, 1) && counter_ok(5, 6));
        assert!(!counter_ok(5, 5) && !counter_ok(5, 4) && !counter_ok(5, 0));
    }

    #[test]
    fn rp_ids_cover_their_subdomains_only() {
        assert!(RelyingParty::covers_host("example.com", "example.com"));
        assert!(RelyingParty::covers_host("example.com", "app.example.com"));
        assert!(!RelyingParty::covers_host("example.com", "badexample.com"));
        assert!(!RelyingParty::covers_host("example.com", "example.com.evil"));
    }

    #[test]
    fn base64url_is_bounded_and_padding_optional() {
        assert_eq!(decode_b64url("AQI", 8, "x").unwrap(), vec![1, 2]);
        assert_eq!(decode_b64url("AQI=", 8, "x").unwrap(), vec![1, 2]);
        for bad in ["", "A", "AQI*", "+/8", &"A".repeat(100)] {
            assert!(decode_b64url(bad, 8, "x").is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_refused_or_read_never_panicked(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let rp = RelyingParty::new("example.com".into(), vec!["https://example.com".into()], "Ex".into());
            let _ = PublicKey::from_cose(&bytes);
            let _ = parse_attestation_object(&bytes);
            let _ = ClientData::check(&bytes, Ceremony::Get, &rp);
            // Behind a valid header, so the attested-data and extension readers run too.
            let mut data = rp.id_hash.to_vec();
            data.push(0xc5);
            data.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 7, 7]);
            data.extend(&bytes);
            let _ = AuthenticatorData::parse(&data);
        }
    }

    #[test]
    fn user_handles_are_stable_opaque_and_per_account() {
        let kek = Kek::from_bytes([1; 32]);
        let (u1, u2) = (UserId::from("u1"), UserId::from("u2"));
        assert_eq!(user_handle(&kek, &u1), user_handle(&kek, &u1));
        assert_ne!(user_handle(&kek, &u1), user_handle(&kek, &u2));
        assert!(is_user_handle(&kek, &u1, &user_handle(&kek, &u1)));
        assert!(!is_user_handle(&kek, &u1, b"u1"));
        assert_ne!(stand_in_credential_id(&kek, "a@x"), stand_in_credential_id(&kek, "b@x"));
    }
}
