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

use crate::core::error::{Error, TokenError};
use crate::core::keys::{SigningAlg, SigningKey};
use crate::core::time::UnixTime;

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
pub const RESERVED_CLAIMS: [&str; 11] =
    ["iss", "aud", "sub", "sid", "roles", "email", "email_verified", "iat", "exp", "nbf", "jti"];

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
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Normalised email.
    pub email: String,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Unique token id.
    pub jti: String,
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
    roles: &'a [String],
    email: &'a str,
    email_verified: bool,
    jti: &'a str,
    #[serde(flatten)]
    extra: ExtraClaims,
}

/// A verified access token's content.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The claims.
    pub claims: AccessClaims,
    /// `iat`.
    pub issued_at: UnixTime,
    /// `exp`.
    pub expires_at: UnixTime,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct NewAccessToken<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `sub`.
    pub user_id: &'a str,
    /// `sid`.
    pub session_id: &'a str,
    /// `roles`.
    pub roles: &'a [String],
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
            sub: self.user_id.to_string(),
            sid: self.session_id.to_string(),
            roles: self.roles.to_vec(),
            email: self.email.to_string(),
            email_verified: self.email_verified,
            jti: self.jti.to_string(),
        };
        fits_headers(&claims).then(|| VerifiedToken {
            claims,
            issued_at: self.now,
            expires_at: self.now.plus_secs(self.ttl_secs),
        })
    }
}

/// Whether the identity can travel in header values (X-Auth-*, roles joined
/// by commas): no control characters; roles non-empty, without `,` or space.
fn fits_headers(c: &AccessClaims) -> bool {
    let plain = |v: &str| !v.chars().any(char::is_control);
    let role_ok = |r: &String| !r.is_empty() && plain(r) && !r.contains([',', ' ']);
    plain(&c.sub) && plain(&c.sid) && plain(&c.email) && c.roles.iter().all(role_ok)
}

/// Signs an access token with `key`.
pub fn issue(t: &NewAccessToken<'_>, key: &SigningKey) -> Result<String, Error> {
    let header = Header::empty().with_key_id(key.kid.clone()).with_token_type(ACCESS_TOKEN_TYPE);
    let mut claims = Claims::new(IssuedClaims {
        iss: t.issuer,
        aud: t.audience,
        sub: t.user_id,
        sid: t.session_id,
        roles: t.roles,
        email: t.email,
        email_verified: t.email_verified,
        jti: t.jti,
        extra: t
            .extra
            .iter()
            .filter(|(k, _)| !RESERVED_CLAIMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    });
    claims.issued_at = chrono::DateTime::from_timestamp(t.now.0, 0);
    claims.expiration = chrono::DateTime::from_timestamp(t.now.plus_secs(t.ttl_secs).0, 0);
    key.token(&header, &claims)
}

/// The signing input (`base64url(header).base64url(claims)`) of the
/// gateway's assertion about a verified caller for the origin `audience`: the
/// access token's identity claims, `aud` set to the origin, a lifetime of
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
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

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
            extra: ExtraClaims::new(),
        },
        iat: now.0,
        exp: expires.0,
    };
    // Serialising plain structs of strings, bools and integers cannot fail.
    let h = serde_json::to_vec(&header).unwrap_or_default();
    let p = serde_json::to_vec(&claims).unwrap_or_default();
    (format!("{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p)), expires)
}

/// A compact JWS from its signing input and signature.
pub fn compact(signing_input: &str, signature: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
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
/// before reading it.
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    sub: String,
    sid: String,
    roles: Vec<String>,
    email: String,
    email_verified: bool,
    jti: String,
    #[serde(default, deserialize_with = "timestamp")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "timestamp")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "timestamp")]
    iat: Option<i64>,
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
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;

        if raw.is_empty() || raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut parts = raw.splitn(4, '.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed);
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
        };
        // Claims that cannot travel in header values are malformed, whoever
        // signed them.
        if !fits_headers(&custom) {
            return Err(TokenError::Malformed);
        }
        Ok(VerifiedToken { claims: custom, issued_at: UnixTime(iat), expires_at: UnixTime(exp) })
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
            use base64::Engine;
            let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let raw = format!(
                "{}.{}.{}",
                b64(&serde_json::json!(header)),
                b64(&serde_json::json!(claims)),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64]),
            );
            if let Ok(p) = Parsed::new(&raw, ACCESS_TOKEN_TYPE) {
                let _ = p.validated_claims(&EXPECT, UnixTime(0));
            }
        }
    }

    #[test]
    fn assertions_verify_as_their_own_type_only() {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::keys::{generate, Kek};
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
            let (stored, key) = generate(alg, &mut SeqRandom(4), &Kek::from_bytes([1; 32]), UnixTime(0)).unwrap();
            let raw = issue(
                &NewAccessToken {
                    issuer: "i",
                    audience: "a",
                    user_id: "u",
                    session_id: "s",
                    roles: &["admin".to_string()],
                    email: "e@x.io",
                    email_verified: true,
                    jti: "j",
                    now: UnixTime(100),
                    ttl_secs: 900,
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
            assert_eq!((v.claims.sub.as_str(), v.claims.roles.clone()), ("u", vec!["admin".to_string()]));
            assert_eq!(v.claims.jti, "j:110", "an assertion has its own jti");
            // Issued inside the leeway after the access token expired: still not born expired.
            let (_, late_exp) = issue_assertion("i", "o", &verified, UnixTime(100 + 900 + 10), &key);
            assert!(late_exp.0 > 100 + 900 + 10);
        }
    }

    /// A compact token over `header` and `claims`, validly signed by a fresh key.
    fn signed_by_a_real_key(header: serde_json::Value, claims: serde_json::Value) -> String {
        use crate::core::ids::test_support::SeqRandom;
        use crate::core::keys::{b64url, generate, Kek};
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
        use crate::core::keys::{generate, Kek};
        let (_, key) = generate(SigningAlg::EdDsa, &mut SeqRandom(6), &Kek::from_bytes([3; 32]), UnixTime(0)).unwrap();
        let extra = ExtraClaims::new();
        for (roles, email, fits) in [
            (vec!["admin".to_string()], "a@example.com", true),
            (vec![], "a@example.com", true),
            (vec!["a,b".to_string()], "a@example.com", false),
            (vec!["a b".to_string()], "a@example.com", false),
            (vec![String::new()], "a@example.com", false),
            (vec!["admin".to_string()], "a\r\n@example.com", false),
        ] {
            let new = NewAccessToken {
                issuer: "i",
                audience: "a",
                user_id: "u",
                session_id: "s",
                roles: &roles,
                email,
                email_verified: true,
                jti: "j",
                now: UnixTime(1_000),
                ttl_secs: 900,
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
