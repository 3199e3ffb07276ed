//! Provider ID tokens (OpenID Connect Core §3.1.3.7): the compact JWS split
//! and decoded, the key chosen from the provider's JWKS by `kid` and
//! algorithm, and the claims checked — `iss`, `aud` (and `azp`), `exp`,
//! `iat`, `nbf`, `nonce`, `sub`. The signature itself is checked by the
//! [`ProviderNet`](crate::core::oauth::ProviderNet) port (WebCrypto at the edge).

use serde::Deserialize;
use serde_json::Value;

use crate::core::crypto::b64url_decode;
use crate::core::oauth::JwsAlg;
use crate::core::time::UnixTime;

/// Largest ID token accepted, in bytes.
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `iat` and `nbf`.
pub const LEEWAY_SECS: i64 = 60;
/// Google's issuer, which also appears in ID tokens without its scheme.
const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// Longest `sub` accepted (OIDC caps it at 255 ASCII characters).
pub const MAX_SUBJECT_LEN: usize = 255;

/// Why an ID token was refused; [`IdTokenError::reason`] is the
/// `login_failed` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdTokenError {
    /// Not a compact JWS with JSON header and claims, or too large.
    Malformed,
    /// `alg` is `none`, HMAC or anything but RS256, ES256, EdDSA; or `crit` is set.
    UnsupportedAlgorithm,
    /// No key in the provider's JWKS matches the `kid` and algorithm.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `iss` is not the provider's issuer.
    WrongIssuer,
    /// `aud` does not hold our client id, or `azp` names another client.
    WrongAudience,
    /// `exp` is past (or missing).
    Expired,
    /// `iat` or `nbf` is in the future.
    NotYetValid,
    /// `nonce` is not the one this sign-in sent.
    NonceMismatch,
    /// `sub` is missing or unusable.
    BadSubject,
}

impl IdTokenError {
    /// The `login_failed` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "id_token_malformed",
            Self::UnsupportedAlgorithm => "id_token_unsupported_alg",
            Self::UnknownKey => "id_token_unknown_key",
            Self::BadSignature => "id_token_bad_signature",
            Self::WrongIssuer => "id_token_wrong_issuer",
            Self::WrongAudience => "id_token_wrong_audience",
            Self::Expired => "id_token_expired",
            Self::NotYetValid => "id_token_not_yet_valid",
            Self::NonceMismatch => "id_token_nonce_mismatch",
            Self::BadSubject => "id_token_bad_subject",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// A split, decoded, not yet trusted ID token.
#[derive(Debug)]
pub struct UntrustedIdToken {
    /// The header's algorithm (already one we accept).
    pub alg: JwsAlg,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// `header.payload`, the signed bytes.
    pub signed: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// The claims object.
    pub claims: serde_json::Map<String, Value>,
}

/// Splits and decodes `raw`; refuses algorithms we never accept.
pub fn parse(raw: &str) -> Result<UntrustedIdToken, IdTokenError> {
    if raw.len() > MAX_ID_TOKEN_BYTES {
        return Err(IdTokenError::Malformed);
    }
    let mut parts = raw.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(IdTokenError::Malformed);
    };
    let decode = |part: &str| b64url_decode(part).ok_or(IdTokenError::Malformed);
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| IdTokenError::Malformed)?;
    let alg = JwsAlg::parse(&header.alg).ok_or(IdTokenError::UnsupportedAlgorithm)?;
    if header.crit.is_some() {
        return Err(IdTokenError::UnsupportedAlgorithm);
    }
    let claims = match serde_json::from_slice::<Value>(&decode(p)?) {
        Ok(Value::Object(m)) => m,
        _ => return Err(IdTokenError::Malformed),
    };
    let signature = decode(s)?;
    Ok(UntrustedIdToken { alg, kid: header.kid, signed: format!("{h}.{p}").into_bytes(), signature, claims })
}

/// Whether `jwk` can verify `alg`: the key type and curve must fit, and a
/// JWK that names an `alg` or a `use` must name this one and `sig`.
pub fn key_fits(jwk: &Value, alg: JwsAlg) -> bool {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    if s("alg").is_some_and(|a| a != alg.as_str()) || s("use").is_some_and(|u| u != "sig") {
        return false;
    }
    match alg {
        JwsAlg::Rs256 => s("kty") == Some("RSA") && s("n").is_some() && s("e").is_some(),
        JwsAlg::Es256 => s("kty") == Some("EC") && s("crv") == Some("P-256") && s("x").is_some() && s("y").is_some(),
        JwsAlg::EdDsa => s("kty") == Some("OKP") && s("crv") == Some("Ed25519") && s("x").is_some(),
    }
}

/// The key in `jwks` (a JWKS document) for a token with `kid` and `alg`: by
/// `kid` when the token names one, else the only key that fits.
pub fn select_key<'a>(jwks: &'a Value, kid: Option<&str>, alg: JwsAlg) -> Option<&'a Value> {
    let keys = jwks.get("keys")?.as_array()?;
    let mut fitting = keys.iter().filter(|k| key_fits(k, alg));
    match kid {
        Some(kid) => fitting.find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)),
        None => {
            let first = fitting.next()?;
            fitting.next().is_none().then_some(first)
        }
    }
}

/// What is checked besides the signature.
#[derive(Debug, Clone)]
pub struct ClaimChecks<'a> {
    /// Expected `iss`; a `{tenantid}` in it is filled from the `tid` claim.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// The `nonce` sent with this sign-in.
    pub nonce: &'a str,
    /// Now.
    pub now: UnixTime,
}

/// The identity an ID token (or userinfo / GitHub's API) vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The provider's stable subject.
    pub subject: String,
    /// Email, if given.
    pub email: Option<String>,
    /// Whether the provider says it verified `email`.
    pub email_verified: bool,
    /// Display name, if given.
    pub name: Option<String>,
    /// Picture URL, if given.
    pub picture: Option<String>,
    /// The standard `locale` claim (a language tag), if given.
    pub locale: Option<String>,
}

/// `email_verified` as providers send it: a boolean, or (some) the string `"true"`.
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The profile claims of a claims object (ID token or userinfo).
pub fn profile(claims: &serde_json::Map<String, Value>) -> Identity {
    let s = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string).filter(|v| !v.is_empty());
    Identity {
        subject: s("sub").unwrap_or_default(),
        email: s("email"),
        email_verified: truthy(claims.get("email_verified")),
        name: s("name"),
        picture: s("picture"),
        locale: s("locale"),
    }
}

/// Checks the claims of a token whose signature already verified.
pub fn check_claims(claims: &serde_json::Map<String, Value>, c: &ClaimChecks<'_>) -> Result<Identity, IdTokenError> {
    let s = |k: &str| claims.get(k).and_then(Value::as_str);
    let expected_issuer = match s("tid") {
        Some(tid) if c.issuer.contains("{tenantid}") => c.issuer.replace("{tenantid}", tid),
        _ => c.issuer.to_string(),
    };
    // Google documents both spellings of its issuer in ID tokens.
    let google_alias = expected_issuer == GOOGLE_ISSUER && s("iss") == Some("accounts.google.com");
    if s("iss") != Some(expected_issuer.as_str()) && !google_alias {
        return Err(IdTokenError::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&c.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    match s("azp") {
        Some(azp) if azp != c.client_id => return Err(IdTokenError::WrongAudience),
        None if audiences.len() > 1 => return Err(IdTokenError::WrongAudience),
        _ => {}
    }
    let int = |k: &str| claims.get(k).and_then(Value::as_i64);
    match int("exp") {
        Some(exp) if exp.saturating_add(LEEWAY_SECS) > c.now.0 => {}
        _ => return Err(IdTokenError::Expired),
    }
    match int("iat") {
        Some(iat) if iat <= c.now.0.saturating_add(LEEWAY_SECS) => {}
        Some(_) => return Err(IdTokenError::NotYetValid),
        None => return Err(IdTokenError::Malformed),
    }
    if int("nbf").is_some_and(|nbf| nbf > c.now.0.saturating_add(LEEWAY_SECS)) {
        return Err(IdTokenError::NotYetValid);
    }
    let nonce_ok = s("nonce").is_some_and(|n| subtle::ConstantTimeEq::ct_eq(n.as_bytes(), c.nonce.as_bytes()).into());
    if !nonce_ok {
        return Err(IdTokenError::NonceMismatch);
    }
    let identity = profile(claims);
    if identity.subject.is_empty()
        || identity.subject.len() > MAX_SUBJECT_LEN
        || identity.subject.chars().any(char::is_control)
    {
        return Err(IdTokenError::BadSubject);
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::b64url;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        b64url(v.to_string())
    }

    fn token(header: Value, claims: &Value) -> String {
        format!("{}.{}.{}", b64(&header), b64(claims), b64url([1u8, 2, 3]))
    }

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn good() -> Value {
        json!({"iss": "https://idp.example", "aud": "portcullis", "sub": "248289761001", "exp": NOW.0 + 300,
               "iat": NOW.0 - 5, "nonce": "n-0S6_WzA2Mj", "email": "jane@example.com", "email_verified": true})
    }

    fn checks() -> ClaimChecks<'static> {
        ClaimChecks { issuer: "https://idp.example", client_id: "portcullis", nonce: "n-0S6_WzA2Mj", now: NOW }
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_is_refused_not_panicked(raw in "\\PC{0,400}") {
            let _ = parse(&raw);
        }

        #[test]
        fn any_json_header_and_claims_are_handled(header in "\\PC{0,60}", body in "\\PC{0,120}", sig in "[A-Za-z0-9_-]{0,20}") {
            let raw = format!("{}.{}.{sig}", b64url(&header), b64url(&body));
            if let Ok(t) = parse(&raw) {
                let _ = check_claims(&t.claims, &checks());
            }
        }
    }

    #[test]
    fn a_good_token_yields_its_identity() {
        let t = parse(&token(json!({"alg": "RS256", "kid": "k1"}), &good())).unwrap();
        assert_eq!((t.alg, t.kid.as_deref()), (JwsAlg::Rs256, Some("k1")));
        let id = check_claims(&t.claims, &checks()).unwrap();
        assert_eq!(id.subject, "248289761001");
        assert_eq!(id.email.as_deref(), Some("jane@example.com"));
        assert!(id.email_verified);
    }

    #[test]
    fn none_hmac_and_crit_are_refused_before_any_key_is_used() {
        for h in [json!({"alg": "none"}), json!({"alg": "HS256"}), json!({"alg": "RS256", "crit": ["exp"]}), json!({})]
        {
            let e = parse(&token(h.clone(), &good())).unwrap_err();
            assert!(matches!(e, IdTokenError::UnsupportedAlgorithm | IdTokenError::Malformed), "{h}");
        }
        assert_eq!(parse("a.b").unwrap_err(), IdTokenError::Malformed);
        assert_eq!(parse(&"a".repeat(MAX_ID_TOKEN_BYTES + 1)).unwrap_err(), IdTokenError::Malformed);
    }

    #[test]
    fn every_claim_is_checked() {
        let cases: Vec<(Value, IdTokenError)> = vec![
            (json!({"iss": "https://evil.example"}), IdTokenError::WrongIssuer),
            (json!({"aud": "someone-else"}), IdTokenError::WrongAudience),
            (json!({"aud": ["portcullis", "other"]}), IdTokenError::WrongAudience),
            (json!({"aud": ["portcullis", "other"], "azp": "other"}), IdTokenError::WrongAudience),
            (json!({"exp": NOW.0 - LEEWAY_SECS - 1}), IdTokenError::Expired),
            (json!({"exp": null}), IdTokenError::Expired),
            (json!({"iat": NOW.0 + LEEWAY_SECS + 10}), IdTokenError::NotYetValid),
            (json!({"nbf": NOW.0 + LEEWAY_SECS + 10}), IdTokenError::NotYetValid),
            (json!({"nonce": "other"}), IdTokenError::NonceMismatch),
            (json!({"nonce": null}), IdTokenError::NonceMismatch),
            (json!({"sub": ""}), IdTokenError::BadSubject),
        ];
        for (patch, want) in cases {
            let mut c = good();
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            assert_eq!(check_claims(&claims(c), &checks()).unwrap_err(), want, "{patch}");
        }
        let mut c = good();
        c["aud"] = json!(["portcullis", "other"]);
        c["azp"] = json!("portcullis");
        assert!(check_claims(&claims(c), &checks()).is_ok());
    }

    #[test]
    fn microsoft_tenant_issuers_are_filled_from_tid() {
        let mut c = good();
        c["iss"] = json!("https://login.microsoftonline.com/9188040d/v2.0");
        c["tid"] = json!("9188040d");
        let checks = ClaimChecks { issuer: "https://login.microsoftonline.com/{tenantid}/v2.0", ..checks() };
        assert!(check_claims(&claims(c.clone()), &checks).is_ok());
        c["tid"] = json!("other");
        assert_eq!(check_claims(&claims(c), &checks).unwrap_err(), IdTokenError::WrongIssuer);
    }

    #[test]
    fn google_issuer_may_lack_its_scheme_and_nobody_else_may() {
        let mut c = good();
        c["iss"] = json!("accounts.google.com");
        let google = ClaimChecks { issuer: GOOGLE_ISSUER, ..checks() };
        assert!(check_claims(&claims(c.clone()), &google).is_ok());
        c["iss"] = json!("idp.example");
        assert_eq!(check_claims(&claims(c), &checks()).unwrap_err(), IdTokenError::WrongIssuer);
    }

    #[test]
    fn keys_are_chosen_by_kid_type_and_alg() {
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": "AQAB", "e": "AQAB", "use": "sig"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": "x", "y": "y", "alg": "ES256"},
            {"kty": "RSA", "kid": "enc", "n": "AQAB", "e": "AQAB", "use": "enc"},
        ]});
        assert_eq!(select_key(&jwks, Some("r1"), JwsAlg::Rs256).unwrap()["kid"], "r1");
        assert!(select_key(&jwks, Some("r1"), JwsAlg::Es256).is_none(), "an RSA key never verifies ES256");
        assert!(select_key(&jwks, Some("e1"), JwsAlg::Rs256).is_none());
        assert!(select_key(&jwks, Some("enc"), JwsAlg::Rs256).is_none());
        assert!(select_key(&jwks, Some("nope"), JwsAlg::Rs256).is_none());
        assert_eq!(select_key(&jwks, None, JwsAlg::Es256).unwrap()["kid"], "e1");
        assert!(select_key(&json!({}), None, JwsAlg::Rs256).is_none());
    }

    #[test]
    fn email_verified_may_be_a_string() {
        assert!(truthy(Some(&json!("true"))));
        assert!(!truthy(Some(&json!("false"))));
        assert!(!truthy(None));
    }
}
