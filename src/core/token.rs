//! Access tokens: the claims, issuing (EdDSA or ES256 via jwt-compact) and
//! verification.
//!
//! Verification pins everything itself rather than trusting the header: the
//! algorithm must be `EdDSA` or `ES256` *and* the algorithm of the key the
//! `kid` names (a published key of ours), `typ` must be `at+jwt`, and `iss`,
//! `aud`, `exp`, `nbf` and `iat` are checked against the expectations. Header
//! fields such as `jku`, `x5u` or `jwk` are ignored: keys only ever come from
//! our own key ring. The signature check itself is the caller's ([`Parsed`]
//! hands over what it covers): the key ring's port
//! ([`crate::core::flows::verify_token`]), or the gateway's cached keys with
//! the runtime's native crypto.

use std::borrow::Cow;

use jwt_compact::{Claims, Header};
use serde::{Deserialize, Deserializer, Serialize};

use crate::core::amr::Amr;
use crate::core::crypto::{b64url, b64url_decode};
use crate::core::error::{Error, TokenError};
use crate::core::ids::{SessionId, UserId};
use crate::core::signing_keys::{SigningAlg, SigningKey};
use crate::core::time::UnixTime;
use crate::core::users::Role;

/// `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// `typ` of the gateway's signed assertions to the origin: explicitly not an
/// access token, so an assertion can never be replayed as one.
pub const ASSERTION_TYPE: &str = "portcullis-assertion+jwt";
/// Lifetime of a gateway assertion.
pub const ASSERTION_TTL_SECS: u64 = 60;
/// Tokens longer than this are refused before any decoding work.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest `kid` looked up.
pub const MAX_KID_LEN: usize = 128;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds; also what a
/// token's lifetime (`exp − iat`) may exceed its expected maximum by
/// ([`Expectations::max_lifetime_secs`]).
pub const LEEWAY_SECS: i64 = 30;

/// Claims an access token carries besides ours, e.g. from the sign-in hook.
pub type ExtraClaims = serde_json::Map<String, serde_json::Value>;

/// Claim names only Portcullis sets: extra claims never overwrite them.
pub const RESERVED_CLAIMS: [&str; 13] =
    ["iss", "aud", "sub", "sid", "roles", "email", "email_verified", "iat", "exp", "nbf", "jti", "amr", "auth_time"];

/// The claims of an access token, beyond `iat` / `exp` (carried by
/// jwt-compact's `Claims` wrapper).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience (a string when we issue; a string or array is accepted).
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// User id.
    pub sub: UserId,
    /// Session id.
    pub sid: SessionId,
    /// Role names.
    pub roles: Vec<Role>,
    /// Normalised email.
    pub email: String,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Unique token id.
    pub jti: String,
    /// How the user signed in (RFC 8176); empty in tokens issued before
    /// `amr` was.
    #[serde(default, skip_serializing_if = "Amr::is_empty")]
    pub amr: Amr,
    /// When the user signed in (the session's sign-in, kept across
    /// refreshes), Unix seconds; absent from tokens issued before it was.
    #[serde(default, deserialize_with = "timestamp", skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    sid: &'a str,
    roles: &'a [Role],
    email: &'a str,
    email_verified: bool,
    jti: &'a str,
    #[serde(skip_serializing_if = "Amr::is_empty")]
    amr: Amr,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    /// Never holds a reserved name: see [`without_reserved`].
    #[serde(flatten)]
    extra: &'a ExtraClaims,
}

/// A verified access token's content.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The claims.
    pub claims: AccessClaims,
    /// The token's claims beyond ours and the registered ones (`iat`,
    /// `exp`, `nbf`): what the sign-in hook added, carried on into the
    /// origin assertion. Empty for most tokens (no allocation then).
    pub extra: ExtraClaims,
    /// `iat`.
    pub issued_at: UnixTime,
    /// `exp`.
    pub expires_at: UnixTime,
}

/// `extra` without the names only Portcullis sets ([`RESERVED_CLAIMS`]):
/// the claims an access token (and its assertion) carries besides ours.
pub fn without_reserved(extra: &ExtraClaims) -> ExtraClaims {
    extra.iter().filter(|(k, _)| !RESERVED_CLAIMS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The value of the origin's `X-Auth-Claims` header (`CLAIMS_HEADER=true`):
/// `extra` as compact JSON with every character outside printable ASCII
/// written as a `\uXXXX` escape, so the value is valid in an HTTP header
/// whatever the claims hold; `None` when there are none.
pub fn claims_header_value(extra: &ExtraClaims) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    // A map of JSON values always serialises.
    let json = serde_json::to_string(extra).unwrap_or_default();
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if (' '..='~').contains(&c) {
            out.push(c);
        } else {
            // Outside a string JSON has only ASCII; inside one, an escape is
            // the same character. Beyond the BMP: a UTF-16 surrogate pair.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Some(out)
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct NewAccessToken<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `sub`.
    pub user_id: &'a UserId,
    /// `sid`.
    pub session_id: &'a SessionId,
    /// `roles`.
    pub roles: &'a [Role],
    /// `email`.
    pub email: &'a str,
    /// `email_verified`.
    pub email_verified: bool,
    /// `jti`.
    pub jti: &'a str,
    /// `iat`.
    pub now: UnixTime,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// `amr`: how the user signed in.
    pub amr: Amr,
    /// `auth_time`: when the user signed in.
    pub auth_time: UnixTime,
    /// Further claims; reserved names among them are skipped.
    pub extra: &'a ExtraClaims,
}

impl NewAccessToken<'_> {
    /// What verifying the token issued from this yields — the claims, `iat`
    /// and `exp` exactly as [`Parsed::validated_claims`] reads them back — so
    /// the isolate that signed it can trust it without checking its own
    /// signature. `None` when verification would refuse it (identity claims
    /// that cannot travel in header values).
    pub fn verified(&self) -> Option<VerifiedToken> {
        let claims = AccessClaims {
            iss: self.issuer.to_string(),
            aud: vec![self.audience.to_string()],
            sub: self.user_id.clone(),
            sid: self.session_id.clone(),
            roles: self.roles.to_vec(),
            email: self.email.to_string(),
            email_verified: self.email_verified,
            jti: self.jti.to_string(),
            amr: self.amr,
            auth_time: Some(self.auth_time.0),
        };
        fits_headers(&claims).then(|| VerifiedToken {
            claims,
            extra: without_reserved(self.extra),
            issued_at: self.now,
            expires_at: self.now.plus_secs(self.ttl_secs),
        })
    }
}

/// Whether the identity can travel in header values (X-Auth-*, roles joined
/// by commas): no control characters; roles non-empty, without `,` or space.
fn fits_headers(c: &AccessClaims) -> bool {
    let plain = |v: &str| !v.chars().any(char::is_control);
    let role_ok = |r: &Role| !r.is_empty() && plain(r) && !r.contains([',', ' ']);
    plain(&c.sub) && plain(&c.sid) && plain(&c.email) && c.roles.iter().all(role_ok)
}

/// Signs an access token with `key`.
pub fn issue(t: &NewAccessToken<'_>, key: &SigningKey) -> Result<String, Error> {
    let header = Header::empty().with_key_id(key.kid.to_string()).with_token_type(ACCESS_TOKEN_TYPE);
    let extra = without_reserved(t.extra);
    let mut claims = Claims::new(IssuedClaims {
        iss: t.issuer,
        aud: t.audience,
        sub: t.user_id.as_str(),
        sid: t.session_id.as_str(),
        roles: t.roles,
        email: t.email,
        email_verified: t.email_verified,
        jti: t.jti,
        amr: t.amr,
        auth_time: Some(t.auth_time.0),
        extra: &extra,
    });
    claims.issued_at = chrono::DateTime::from_timestamp(t.now.0, 0);
    claims.expiration = chrono::DateTime::from_timestamp(t.now.plus_secs(t.ttl_secs).0, 0);
    key.token(&header, &claims)
}

/// The signing input (`base64url(header).base64url(claims)`) of the
/// gateway's assertion about a verified caller for the origin `audience`: the
/// access token's identity claims (with `amr` and `auth_time`) and its
/// extra ones (the sign-in hook's), `aud` set to the origin, a lifetime of
/// [`ASSERTION_TTL_SECS`] capped by the end of the access token's own
/// acceptance window (its `exp` plus the leeway), so it is never already
/// expired when issued. Returns the input and the assertion's expiry; the
/// caller signs it (natively at the edge) and calls [`compact`].
pub fn assertion_signing_input(
    issuer: &str,
    audience: &str,
    verified: &VerifiedToken,
    now: UnixTime,
    kid: &str,
    alg: SigningAlg,
) -> (String, UnixTime) {
    #[derive(Serialize)]
    struct AssertionHeader<'a> {
        alg: &'a str,
        kid: &'a str,
        typ: &'a str,
    }
    #[derive(Serialize)]
    struct AssertionClaims<'a> {
        #[serde(flatten)]
        identity: IssuedClaims<'a>,
        iat: i64,
        exp: i64,
    }
    let c = &verified.claims;
    // Its own id (RFC 7519 §4.1.7): the access token's, and when it was made.
    let jti = format!("{}:{}", c.jti, now.0);
    let accepted_until = UnixTime(verified.expires_at.0.saturating_add(LEEWAY_SECS));
    let expires = now.plus_secs(ASSERTION_TTL_SECS).min(accepted_until);
    let header = AssertionHeader { alg: alg.name(), kid, typ: ASSERTION_TYPE };
    let claims = AssertionClaims {
        identity: IssuedClaims {
            iss: issuer,
            aud: audience,
            sub: &c.sub,
            sid: &c.sid,
            roles: &c.roles,
            email: &c.email,
            email_verified: c.email_verified,
            jti: &jti,
            amr: c.amr,
            auth_time: c.auth_time,
            extra: &verified.extra,
        },
        iat: now.0,
        exp: expires.0,
    };
    // Serialising plain structs of strings, bools, integers and JSON values
    // cannot fail.
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let p = serde_json::to_vec(&claims).unwrap_or_default();
    (format!("{}.{}", b64url(h), b64url(p)), expires)
}

/// A compact JWS from its signing input and signature.
pub fn compact(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", b64url(signature))
}

/// Signs an assertion with ed25519-compact; the edge uses the runtime's Ed25519
/// over the same [`assertion_signing_input`].
pub fn issue_assertion(
    issuer: &str,
    audience: &str,
    verified: &VerifiedToken,
    now: UnixTime,
    key: &SigningKey,
) -> (String, UnixTime) {
    let (input, expires) = assertion_signing_input(issuer, audience, verified, now, &key.kid, key.alg());
    (compact(&input, &key.sign(input.as_bytes())), expires)
}

/// What a valid token must say.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// Required `iss`.
    pub issuer: &'a str,
    /// Required member of `aud`.
    pub audience: &'a str,
    /// Required `typ`.
    pub token_type: &'a str,
    /// The longest lifetime (`exp − iat`) a token may claim, besides
    /// [`LEEWAY_SECS`]: `ACCESS_TTL` for access tokens. Ours are issued with
    /// exactly `ACCESS_TTL`; a longer one was minted by someone holding a
    /// signing key (a leaked one, most likely), to outlive the key's
    /// retirement.
    pub max_lifetime_secs: u64,
}

/// A JWS header, read member for member as jwt-compact's `UntrustedToken`
/// reads one into its `Header` (same names, same types: `x5t`s are its
/// `Thumbprint`s; members read only so that a mistyped one is refused as
/// there), plus two that change how a JWS is to be read: `crit` lists
/// extensions the recipient must understand (RFC 7515 §4.1.11) and `b64` is
/// one (RFC 7797). We implement none, so a token carrying either is refused,
/// as the RFC requires. Flat, and borrowing from the decoded bytes, so
/// reading it allocates only the `kid`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct JwsHeader<'h> {
    #[serde(borrow)]
    alg: Cow<'h, str>,
    #[serde(default, borrow)]
    cty: Option<Cow<'h, str>>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, borrow)]
    typ: Option<Cow<'h, str>>,
    #[serde(default, borrow)]
    jku: Option<Cow<'h, str>>,
    #[serde(default, borrow)]
    x5u: Option<Cow<'h, str>>,
    #[serde(default)]
    x5t: Option<jwt_compact::Thumbprint<20>>,
    #[serde(default, rename = "x5t#S256")]
    x5t_s256: Option<jwt_compact::Thumbprint<32>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    b64: Option<serde::de::IgnoredAny>,
}

/// An access token's claims as they travel, read in one flat pass: the
/// members of jwt-compact's `Claims<AccessClaims>` (`exp`, `nbf`, `iat` as
/// it reads timestamps), without its flattening, which buffers every member
/// before reading it — and every other member kept in `extra` (read as a
/// JSON value, as that flattening reads it; allocated only when there is one).
///
/// Read by hand ([`WireVisitor`]) as `#[derive(Deserialize)]` would read the
/// known members — a duplicate is an error, `exp`, `nbf` and `iat` may be
/// missing, the rest may not — because a derive cannot both read them flat
/// and keep the others.
struct WireClaims {
    iss: String,
    aud: Vec<String>,
    sub: UserId,
    sid: SessionId,
    roles: Vec<Role>,
    email: String,
    email_verified: bool,
    jti: String,
    amr: Amr,
    auth_time: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    extra: ExtraClaims,
}

/// A member name of [`WireClaims`]: one of ours without allocating, any
/// other as its text.
enum WireKey {
    Iss,
    Aud,
    Sub,
    Sid,
    Roles,
    Email,
    EmailVerified,
    Jti,
    Amr,
    AuthTime,
    Exp,
    Nbf,
    Iat,
    Other(String),
}

impl<'de> Deserialize<'de> for WireKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = WireKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WireKey, E> {
                Ok(match v {
                    "iss" => WireKey::Iss,
                    "aud" => WireKey::Aud,
                    "sub" => WireKey::Sub,
                    "sid" => WireKey::Sid,
                    "roles" => WireKey::Roles,
                    "email" => WireKey::Email,
                    "email_verified" => WireKey::EmailVerified,
                    "jti" => WireKey::Jti,
                    "amr" => WireKey::Amr,
                    "auth_time" => WireKey::AuthTime,
                    "exp" => WireKey::Exp,
                    "nbf" => WireKey::Nbf,
                    "iat" => WireKey::Iat,
                    other => WireKey::Other(other.to_string()),
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// `aud`: a string or an array of strings.
struct Audience(Vec<String>);

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_or_many(d).map(Audience)
    }
}

/// `exp`, `nbf`, `iat`: a NumericDate ([`timestamp`]).
struct Timestamp(i64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Timestamp(timestamp(d)?.unwrap_or_default()))
    }
}

impl<'de> Deserialize<'de> for WireClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(WireVisitor)
    }
}

/// Reads [`WireClaims`] from a JSON object.
struct WireVisitor;

impl<'de> serde::de::Visitor<'de> for WireVisitor {
    type Value = WireClaims;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("struct WireClaims")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<WireClaims, A::Error> {
        use serde::de::Error as _;
        /// Sets `slot` from the next value, once.
        fn once<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            slot: &mut Option<T>,
            name: &'static str,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(A::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        let (mut iss, mut aud, mut sub, mut sid, mut roles) = (None, None::<Audience>, None, None, None);
        let (mut email, mut email_verified, mut jti) = (None, None, None);
        let (mut amr, mut auth_time) = (None::<Amr>, None::<Timestamp>);
        let (mut exp, mut nbf, mut iat) = (None::<Timestamp>, None::<Timestamp>, None::<Timestamp>);
        let mut extra = ExtraClaims::new();
        while let Some(key) = map.next_key::<WireKey>()? {
            match key {
                WireKey::Iss => once(&mut map, &mut iss, "iss")?,
                WireKey::Aud => once(&mut map, &mut aud, "aud")?,
                WireKey::Sub => once(&mut map, &mut sub, "sub")?,
                WireKey::Sid => once(&mut map, &mut sid, "sid")?,
                WireKey::Roles => once(&mut map, &mut roles, "roles")?,
                WireKey::Email => once(&mut map, &mut email, "email")?,
                WireKey::EmailVerified => once(&mut map, &mut email_verified, "email_verified")?,
                WireKey::Jti => once(&mut map, &mut jti, "jti")?,
                WireKey::Amr => once(&mut map, &mut amr, "amr")?,
                WireKey::AuthTime => once(&mut map, &mut auth_time, "auth_time")?,
                WireKey::Exp => once(&mut map, &mut exp, "exp")?,
                WireKey::Nbf => once(&mut map, &mut nbf, "nbf")?,
                WireKey::Iat => once(&mut map, &mut iat, "iat")?,
                WireKey::Other(name) => {
                    let value: serde_json::Value = map.next_value()?;
                    extra.insert(name, value);
                }
            }
        }
        Ok(WireClaims {
            iss: iss.ok_or_else(|| A::Error::missing_field("iss"))?,
            aud: aud.ok_or_else(|| A::Error::missing_field("aud"))?.0,
            sub: sub.ok_or_else(|| A::Error::missing_field("sub"))?,
            sid: sid.ok_or_else(|| A::Error::missing_field("sid"))?,
            roles: roles.ok_or_else(|| A::Error::missing_field("roles"))?,
            email: email.ok_or_else(|| A::Error::missing_field("email"))?,
            email_verified: email_verified.ok_or_else(|| A::Error::missing_field("email_verified"))?,
            jti: jti.ok_or_else(|| A::Error::missing_field("jti"))?,
            amr: amr.unwrap_or_default(),
            auth_time: auth_time.map(|t| t.0),
            exp: exp.map(|t| t.0),
            nbf: nbf.map(|t| t.0),
            iat: iat.map(|t| t.0),
            extra,
        })
    }
}

/// A NumericDate as jwt-compact reads one: an integer, or a number truncated
/// to one, that is a UTC time chrono can represent.
fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("UTC timestamp")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            chrono::DateTime::from_timestamp(v, 0).map(|_| v).ok_or_else(|| E::custom("UTC timestamp overflow"))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            self.visit_i64(i64::try_from(v).map_err(E::custom)?)
        }
        #[allow(clippy::cast_possible_truncation)] // as jwt-compact: out of range is refused above
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
            self.visit_i64(v as i64)
        }
    }
    d.deserialize_i64(Seconds).map(Some)
}

/// `bytes` as a JSON object read into `T`. Only an object: a derived struct
/// would also take a JSON array, member by member in order, which
/// jwt-compact (and JOSE) refuse.
fn json_object<'b, T: Deserialize<'b>>(bytes: &'b [u8]) -> Result<T, TokenError> {
    if bytes.iter().find(|b| !b" \t\n\r".contains(b)) != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| TokenError::Malformed)
}

/// The parts of a compact token needed before its signature is checked.
///
/// The token is split and its parts decoded as jwt-compact's
/// `UntrustedToken` does (three parts; strict unpadded base64url; `cty`
/// absent or JSON; its `Header` and `Claims` members and types) — a property
/// test holds the two to the same reading of any input (`tests/fuzz`) — but
/// with the `base64` crate rather than base64ct, whose constant-time decoding
/// is needless for a token's public parts, and into flat structs: the two
/// were most of the cost of a fresh token's check outside the signature (by
/// `npm run bench`).
pub struct Parsed<'a> {
    kid: String,
    claims: Vec<u8>,
    signature: Vec<u8>,
    signed: &'a str,
    alg: SigningAlg,
}

impl<'a> Parsed<'a> {
    /// Splits and decodes `raw`, and checks the header's `alg`, `typ` and `kid`
    /// against what we accept. Cheap and bounded: the length cap comes first.
    pub fn new(raw: &'a str, token_type: &str) -> Result<Self, TokenError> {
        if raw.is_empty() || raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = raw.splitn(4, '.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| b64url_decode(part).ok_or(TokenError::Malformed);
        let (header, claims, signature) = (decode(header)?, decode(claims)?, decode(signature)?);
        let header: JwsHeader<'_> = json_object(&header)?;
        if header.cty.as_deref().is_some_and(|c| !c.eq_ignore_ascii_case("json")) {
            return Err(TokenError::Malformed);
        }
        let Some(alg) = SigningAlg::from_name(&header.alg) else {
            return Err(TokenError::UnsupportedAlgorithm);
        };
        if header.crit.is_some() || header.b64.is_some() {
            return Err(TokenError::Malformed);
        }
        let typ = header.typ.as_deref().unwrap_or("");
        let typ_ok = typ.eq_ignore_ascii_case(token_type)
            || typ.strip_prefix("application/").is_some_and(|t| t.eq_ignore_ascii_case(token_type));
        if !typ_ok {
            return Err(TokenError::WrongType);
        }
        let kid = match header.kid {
            Some(kid) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => kid,
            _ => return Err(TokenError::UnknownKey),
        };
        // Both algorithms' JWS signatures are 64 bytes.
        if signature.len() != ed25519_compact::Signature::BYTES {
            return Err(TokenError::BadSignature);
        }
        let signed = raw.rsplit_once('.').map(|(s, _)| s).ok_or(TokenError::Malformed)?;
        Ok(Self { kid, claims, signature, signed, alg })
    }

    /// The header's `alg`, one we know; the key must be of it too.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The `kid` (present: checked by [`Parsed::new`]).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The bytes the signature covers.
    pub fn signed_data(&self) -> &[u8] {
        self.signed.as_bytes()
    }

    /// The raw signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Decodes and checks the claims. Call only after the signature verified.
    pub fn validated_claims(&self, expect: &Expectations<'_>, now: UnixTime) -> Result<VerifiedToken, TokenError> {
        let c: WireClaims = json_object(&self.claims)?;
        let exp = c.exp.ok_or(TokenError::Expired)?;
        if now.0 >= exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if c.nbf.is_some_and(|nbf| nbf > now.0.saturating_add(LEEWAY_SECS)) {
            return Err(TokenError::NotYetValid);
        }
        let iat = c.iat.ok_or(TokenError::Malformed)?;
        if iat > now.0.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        let max_lifetime = i64::try_from(expect.max_lifetime_secs).unwrap_or(i64::MAX).saturating_add(LEEWAY_SECS);
        if exp.saturating_sub(iat) > max_lifetime {
            return Err(TokenError::TooLongLived);
        }
        // A sign-in comes before the tokens it gets: an `auth_time` after
        // `iat` would pass every `max_age` rule for as long as it lies ahead.
        if c.auth_time.is_some_and(|t| t > iat.saturating_add(LEEWAY_SECS)) {
            return Err(TokenError::Malformed);
        }
        // Whose and which session: an empty one names nobody.
        if c.sub.as_str().is_empty() || c.sid.as_str().is_empty() {
            return Err(TokenError::Malformed);
        }
        if c.iss != expect.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !c.aud.iter().any(|a| a == expect.audience) {
            return Err(TokenError::WrongAudience);
        }
        let custom = AccessClaims {
            iss: c.iss,
            aud: c.aud,
            sub: c.sub,
            sid: c.sid,
            roles: c.roles,
            email: c.email,
            email_verified: c.email_verified,
            jti: c.jti,
            amr: c.amr,
            auth_time: c.auth_time,
        };
        // Claims that cannot travel in header values are malformed, whoever
        // signed them.
        if !fits_headers(&custom) {
            return Err(TokenError::Malformed);
        }
        Ok(VerifiedToken { claims: custom, extra: c.extra, issued_at: UnixTime(iat), expires_at: UnixTime(exp) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXPECT: Expectations<'static> =
        Expectations { issuer: "i", audience: "a", token_type: ACCESS_TOKEN_TYPE, max_lifetime_secs: 900 };

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,300}") {
            if let Ok(p) = Parsed::new(&s, ACCESS_TOKEN_TYPE) {
                let _ = p.validated_claims(&EXPECT, UnixTime(0));
            }
        }

        #[test]
        fn parsing_token_shaped_input_never_panics(
            h in "[A-Za-z0-9_-]{0,80}",
            c in "[A-Za-z0-9_-]{0,200}",
            s in "[A-Za-z0-9_-]{0,100}",
        ) {
            let raw = format!("{h}.{c}.{s}");
            if let Ok(p) = Parsed::new(&raw, ACCESS_TOKEN_TYPE) {
                let _ = p.validated_claims(&EXPECT, UnixTime(0));
            }
        }

        #[test]
        fn any_json_header_and_claims_are_handled(
            header in prop::collection::hash_map("[a-z]{1,4}", "[ -~]{0,12}", 0..6),
            claims in prop::collection::hash_map("[a-z]{1,4}", any::<i64>(), 0..6),
        ) {

            let b64 = |v: &serde_json::Value| b64url(v.to_string());
            let raw = format!(
                "{}.{}.{}",
                b64(&serde_json::json!(header)),
                b64(&serde_json::json!(claims)),
                b64url([7u8; 64]),
            );
            if let Ok(p) = Parsed::new(&raw, ACCESS_TOKEN_TYPE) {
                let _ = p.validated_claims(&EXPECT, UnixTime(0));
            }
        }
    }

    #[test]
    fn assertions_verify_as_their_own_type_only() {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::signing_keys::{generate, Kek};
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
            let (stored, key) = generate(alg, &mut SeqRandom(4), &Kek::from_bytes([1; 32]), UnixTime(0)).unwrap();
            let raw = issue(
                &NewAccessToken {
                    issuer: "i",
                    audience: "a",
                    user_id: &"u".into(),
                    session_id: &"s".into(),
                    roles: &["admin".into()],
                    email: "e@x.io",
                    email_verified: true,
                    jti: "j",
                    now: UnixTime(100),
                    ttl_secs: 900,
                    amr: Amr::PWD.with(Amr::OTP).with(Amr::MFA),
                    auth_time: UnixTime(90),
                    extra: &ExtraClaims::new(),
                },
                &key,
            )
            .unwrap();
            let parsed = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap();
            assert_eq!(parsed.alg(), alg);
            assert!(stored.verify(alg, parsed.signed_data(), parsed.signature()).unwrap());
            // Ed25519 tokens carry RFC 8032's one signature per message,
            // which any isolate holding the key recognises as its own.
            if alg.is_deterministic() {
                assert_eq!(parsed.signature(), key.sign(parsed.signed_data()).as_slice());
                assert!(key.made(parsed.signed_data(), parsed.signature()));
            }
            let verified = parsed.validated_claims(&EXPECT, UnixTime(100)).unwrap();
            let (assertion, exp) = issue_assertion("i", "https://origin.example", &verified, UnixTime(110), &key);
            assert_eq!(exp, UnixTime(170));
            assert_eq!(Parsed::new(&assertion, ACCESS_TOKEN_TYPE).err(), Some(TokenError::WrongType));
            let p = Parsed::new(&assertion, ASSERTION_TYPE).unwrap();
            assert_eq!(p.alg(), alg);
            assert!(stored.verify(alg, p.signed_data(), p.signature()).unwrap());
            let expect = Expectations {
                issuer: "i",
                audience: "https://origin.example",
                token_type: ASSERTION_TYPE,
                max_lifetime_secs: ASSERTION_TTL_SECS,
            };
            let v = p.validated_claims(&expect, UnixTime(110)).unwrap();
            assert_eq!((v.claims.sub.as_str(), v.claims.roles.clone()), ("u", vec![Role::from("admin")]));
            assert_eq!(v.claims.jti, "j:110", "an assertion has its own jti");
            // How and when the user signed in travel to the origin too.
            assert_eq!((v.claims.amr, v.claims.auth_time), (Amr::PWD.with(Amr::OTP).with(Amr::MFA), Some(90)));
            assert_eq!((verified.claims.amr, verified.claims.auth_time), (v.claims.amr, v.claims.auth_time));
            // Issued inside the leeway after the access token expired: still not born expired.
            let (_, late_exp) = issue_assertion("i", "o", &verified, UnixTime(100 + 900 + 10), &key);
            assert!(late_exp.0 > 100 + 900 + 10);
        }
    }

    #[test]
    fn a_sign_in_after_the_token_or_an_empty_subject_or_session_is_malformed() {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::signing_keys::{generate, Kek};
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(9), &Kek::from_bytes([5; 32]), UnixTime(0)).unwrap();
        let check = |user: &str, session: &str, auth_time: i64| {
            let raw = issue(
                &NewAccessToken {
                    issuer: "i",
                    audience: "a",
                    user_id: &user.into(),
                    session_id: &session.into(),
                    roles: &[],
                    email: "e@x.io",
                    email_verified: false,
                    jti: "j",
                    now: UnixTime(100),
                    ttl_secs: 900,
                    amr: Amr::PWD,
                    auth_time: UnixTime(auth_time),
                    extra: &ExtraClaims::new(),
                },
                &key,
            )
            .unwrap();
            Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).map(|_| ())
        };
        assert_eq!(check("u", "s", 100), Ok(()));
        assert_eq!(check("u", "s", 100 + LEEWAY_SECS), Ok(()), "clocks of two isolates");
        assert_eq!(check("u", "s", 101 + LEEWAY_SECS), Err(TokenError::Malformed));
        assert_eq!(check("u", "s", i64::MAX), Err(TokenError::Malformed));
        assert_eq!(check("", "s", 100), Err(TokenError::Malformed));
        assert_eq!(check("u", "", 100), Err(TokenError::Malformed));
    }

    #[test]
    fn the_claims_a_token_carries_besides_ours_reach_its_assertion_and_reserved_ones_never() {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::signing_keys::{generate, Kek};
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(7), &Kek::from_bytes([4; 32]), UnixTime(0)).unwrap();
        let extra: ExtraClaims = serde_json::from_value(serde_json::json!({
            "plan": "pro", "org": {"id": 7, "name": "Acme"}, "sub": "someone-else", "exp": 1, "roles": ["admin"],
        }))
        .unwrap();
        let new = NewAccessToken {
            issuer: "i",
            audience: "a",
            user_id: &"u".into(),
            session_id: &"s".into(),
            roles: &[],
            email: "e@x.io",
            email_verified: false,
            jti: "j",
            now: UnixTime(100),
            ttl_secs: 900,
            amr: Amr::PWD,
            auth_time: UnixTime(100),
            extra: &extra,
        };
        let raw = issue(&new, &key).unwrap();
        let verified = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).unwrap();
        let want = serde_json::json!({"plan": "pro", "org": {"id": 7, "name": "Acme"}});
        assert_eq!(serde_json::Value::Object(verified.extra.clone()), want);
        assert_eq!((verified.claims.sub.as_str(), verified.claims.roles.len()), ("u", 0));
        assert_eq!(new.verified().unwrap(), verified, "the signer's own reading is the verifier's");
        let (assertion, _) = issue_assertion("i", "https://origin.example", &verified, UnixTime(110), &key);
        let p = Parsed::new(&assertion, ASSERTION_TYPE).unwrap();
        let expect = Expectations {
            issuer: "i",
            audience: "https://origin.example",
            token_type: ASSERTION_TYPE,
            max_lifetime_secs: ASSERTION_TTL_SECS,
        };
        let a = p.validated_claims(&expect, UnixTime(110)).unwrap();
        assert_eq!(serde_json::Value::Object(a.extra), want);
        assert_eq!((a.claims.sub.as_str(), a.expires_at), ("u", UnixTime(170)));
        // Without extra claims the assertion carries none (and reads none).
        let plain = VerifiedToken { extra: ExtraClaims::new(), ..verified };
        let (assertion, _) = issue_assertion("i", "https://origin.example", &plain, UnixTime(110), &key);
        let a = Parsed::new(&assertion, ASSERTION_TYPE).unwrap().validated_claims(&expect, UnixTime(110)).unwrap();
        assert!(a.extra.is_empty());
    }

    #[test]
    fn our_members_may_appear_once_and_others_are_kept_as_they_came() {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        let base = access_claims(serde_json::json!({}));
        let body = base.to_string();
        // A duplicate of ours is refused, as a derived reading refuses it.
        let dup = format!("{}, \"sub\": \"other\"}}", body.trim_end_matches('}'));
        let input = format!("{}.{}", b64url(header.to_string()), b64url(&dup));
        let raw = compact(&input, &[7u8; 64]);
        assert_eq!(
            Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).err(),
            Some(TokenError::Malformed)
        );
        // Anything else is kept as JSON, unicode included.
        let raw = signed_by_a_real_key(
            header,
            access_claims(serde_json::json!({"tier": 3, "note": "zürich ✓", "list": [1, null, true]})),
        );
        let v = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).unwrap();
        assert_eq!(
            serde_json::Value::Object(v.extra),
            serde_json::json!({"tier": 3, "note": "zürich ✓", "list": [1, null, true]})
        );
    }

    #[test]
    fn the_claims_header_is_compact_json_in_printable_ascii() {
        assert_eq!(claims_header_value(&ExtraClaims::new()), None);
        let extra: ExtraClaims = serde_json::from_value(
            serde_json::json!({"plan": "pro", "city": "Zürich", "emoji": "🚀", "n": 1, "t": "a\nb"}),
        )
        .unwrap();
        let v = claims_header_value(&extra).unwrap();
        assert!(v.chars().all(|c| (' '..='~').contains(&c)), "{v}");
        assert!(v.contains(r#""city":"Z\u00fcrich""#) && v.contains(r#""emoji":"\ud83d\ude80""#), "{v}");
        let back: serde_json::Value = serde_json::from_str(&v).unwrap();
        assert_eq!(back, serde_json::Value::Object(extra));
    }

    /// A compact token over `header` and `claims`, validly signed by a fresh key.
    fn signed_by_a_real_key(header: serde_json::Value, claims: serde_json::Value) -> String {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::signing_keys::{generate, Kek};
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(5), &Kek::from_bytes([2; 32]), UnixTime(0)).unwrap();
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        compact(&input, &key.sign(input.as_bytes()))
    }

    fn access_claims(over: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "iss": "i", "aud": "a", "sub": "u", "sid": "s", "roles": ["admin"], "email": "e@x.io",
            "email_verified": true, "jti": "j", "iat": 100, "exp": 1000,
        });
        c.as_object_mut().unwrap().extend(over.as_object().unwrap().clone());
        c
    }

    #[test]
    fn the_verified_form_of_a_new_token_is_refused_exactly_when_verification_would_be() {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::signing_keys::{generate, Kek};
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(6), &Kek::from_bytes([3; 32]), UnixTime(0)).unwrap();
        let extra = ExtraClaims::new();
        for (roles, email, fits) in [
            (vec![Role::from("admin")], "a@example.com", true),
            (vec![], "a@example.com", true),
            (vec![Role::from("a,b")], "a@example.com", false),
            (vec![Role::from("a b")], "a@example.com", false),
            (vec![Role::from("")], "a@example.com", false),
            (vec![Role::from("admin")], "a\r\n@example.com", false),
        ] {
            let new = NewAccessToken {
                issuer: "i",
                audience: "a",
                user_id: &"u".into(),
                session_id: &"s".into(),
                roles: &roles,
                email,
                email_verified: true,
                jti: "j",
                now: UnixTime(1_000),
                ttl_secs: 900,
                amr: Amr::FED,
                auth_time: UnixTime(1_000),
                extra: &extra,
            };
            let raw = issue(&new, &key).unwrap();
            let parsed = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap();
            let verified = parsed.validated_claims(&EXPECT, UnixTime(1_001));
            assert_eq!(new.verified().is_some(), fits, "{roles:?} {email:?}");
            assert_eq!(new.verified().ok_or(TokenError::Malformed), verified, "{roles:?} {email:?}");
        }
    }

    #[test]
    fn extra_claims_never_set_how_or_when_the_user_signed_in() {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::signing_keys::{generate, Kek};
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(7), &Kek::from_bytes([3; 32]), UnixTime(0)).unwrap();
        let mut extra = ExtraClaims::new();
        extra.insert("amr".into(), serde_json::json!(["pwd", "otp", "mfa"]));
        extra.insert("auth_time".into(), serde_json::json!(999_999));
        extra.insert("plan".into(), serde_json::json!("pro"));
        let new = NewAccessToken {
            issuer: "i",
            audience: "a",
            user_id: &"u".into(),
            session_id: &"s".into(),
            roles: &[],
            email: "e@x.io",
            email_verified: true,
            jti: "j",
            now: UnixTime(100),
            ttl_secs: 900,
            amr: Amr::PWD,
            auth_time: UnixTime(80),
            extra: &extra,
        };
        let raw = issue(&new, &key).unwrap();
        let v = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).unwrap();
        assert_eq!((v.claims.amr, v.claims.auth_time), (Amr::PWD, Some(80)));
        assert_eq!(Some(v), new.verified());
        let payload = raw.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap();
        assert_eq!((claims["amr"].clone(), claims["auth_time"].clone()), (serde_json::json!(["pwd"]), 80.into()));
        assert_eq!(claims["plan"], "pro");
    }

    #[test]
    fn tokens_without_amr_or_auth_time_read_as_none() {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        let raw = signed_by_a_real_key(header.clone(), access_claims(serde_json::json!({})));
        let v = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).unwrap();
        assert_eq!((v.claims.amr, v.claims.auth_time), (Amr::NONE, None));
        for bad in [serde_json::json!({"amr": "mfa"}), serde_json::json!({"auth_time": "soon"})] {
            let raw = signed_by_a_real_key(header.clone(), access_claims(bad.clone()));
            let parsed = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap();
            assert_eq!(parsed.validated_claims(&EXPECT, UnixTime(100)).err(), Some(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn critical_header_members_are_refused() {
        let ok = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        let raw = signed_by_a_real_key(ok.clone(), access_claims(serde_json::json!({})));
        assert!(Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).is_ok());
        for (name, value) in
            [("crit", serde_json::json!(["exp2"])), ("crit", serde_json::json!([])), ("b64", serde_json::json!(false))]
        {
            let mut h = ok.clone();
            h[name] = value;
            let raw = signed_by_a_real_key(h, access_claims(serde_json::json!({})));
            assert_eq!(Parsed::new(&raw, ACCESS_TOKEN_TYPE).err(), Some(TokenError::Malformed), "{name}");
        }
    }

    #[test]
    fn identity_claims_that_cannot_be_header_values_are_refused() {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        for bad in [
            serde_json::json!({"sub": "u\r\nX-Auth-Roles: admin"}),
            serde_json::json!({"sid": "s\n"}),
            serde_json::json!({"email": "e@x.io\r\nX-Injected: 1"}),
            serde_json::json!({"email": "e\u{0}@x.io"}),
            serde_json::json!({"roles": ["user,admin"]}),
            serde_json::json!({"roles": ["user admin"]}),
            serde_json::json!({"roles": [""]}),
            serde_json::json!({"roles": ["a\tb"]}),
        ] {
            let raw = signed_by_a_real_key(header.clone(), access_claims(bad.clone()));
            let parsed = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap();
            assert_eq!(parsed.validated_claims(&EXPECT, UnixTime(100)).err(), Some(TokenError::Malformed), "{bad}");
        }
        // Unicode is an identity, not an injection.
        let raw = signed_by_a_real_key(header, access_claims(serde_json::json!({"email": "ａü@bücher.example"})));
        assert!(Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100)).is_ok());
    }

    #[test]
    fn a_lifetime_beyond_the_expected_one_plus_the_leeway_is_refused_whoever_signed_it() {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k"});
        let check = |iat: i64, exp: i64| {
            let raw = signed_by_a_real_key(header.clone(), access_claims(serde_json::json!({"iat": iat, "exp": exp})));
            Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap().validated_claims(&EXPECT, UnixTime(100))
        };
        // EXPECT allows 900 s; the leeway adds 30.
        assert!(check(100, 100 + 900).is_ok());
        assert!(check(100, 100 + 900 + LEEWAY_SECS).is_ok());
        assert_eq!(check(100, 100 + 900 + LEEWAY_SECS + 1).err(), Some(TokenError::TooLongLived));
        assert_eq!(check(100, 100 + 365 * 86_400).err(), Some(TokenError::TooLongLived));
        // Backdating `iat` to stay inside the bound leaves less time, not more.
        assert!(check(-800, 130).is_ok());
        assert_eq!(check(-801, 130).err(), Some(TokenError::TooLongLived));
        // Extreme timestamps do not overflow into acceptance.
        assert_eq!(check(-62_135_596_800, 200).err(), Some(TokenError::TooLongLived));
        assert_eq!(check(100, 253_402_300_799).err(), Some(TokenError::TooLongLived));
        // The bound is the expectation's: an assertion may live ASSERTION_TTL_SECS.
        let short = Expectations { max_lifetime_secs: 60, ..EXPECT };
        let raw = signed_by_a_real_key(header, access_claims(serde_json::json!({"iat": 100, "exp": 191})));
        let parsed = Parsed::new(&raw, ACCESS_TOKEN_TYPE).unwrap();
        assert_eq!(parsed.validated_claims(&short, UnixTime(100)).err(), Some(TokenError::TooLongLived));
        assert!(parsed.validated_claims(&EXPECT, UnixTime(100)).is_ok());
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let raw = format!("{}.{}.{}", "a".repeat(MAX_TOKEN_LEN), "b", "c");
        assert_eq!(Parsed::new(&raw, ACCESS_TOKEN_TYPE).err(), Some(TokenError::Malformed));
    }
}
