//! Access tokens issued by the flows and verified by core.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows;
use portcullis::core::flows::account::SignupRequest;
use portcullis::core::time::UnixTime;
use portcullis::core::token::{self, Expectations, ACCESS_TOKEN_TYPE};

use crate::support::{block_on, Done, TestRandom, World, ISSUER};

fn issued(w: &World) -> String {
    let (deps, meta) = w.at(1_000);
    block_on(deps.signup(
        &meta,
        &mut TestRandom(1),
        SignupRequest { email: "a@example.com".into(), password: "password-1".into(), name: None, locale: None },
    ))
    .unwrap()
    .access_token
}

fn verify(w: &World, raw: &str, now: i64, audience: &str) -> Result<token::VerifiedToken, Error> {
    w.keys.now.set(UnixTime(now));
    let expect = Expectations { issuer: ISSUER, audience, token_type: ACCESS_TOKEN_TYPE, max_lifetime_secs: 900 };
    block_on(flows::verify_token(raw, &w.keys, &expect, UnixTime(now)))
}

fn part(raw: &str, i: usize) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

#[test]
fn access_tokens_carry_the_spec_claims_and_header() {
    let w = World::new(&[]);
    let raw = issued(&w);
    let h = part(&raw, 0);
    assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("EdDSA"), Some("at+jwt")));
    assert!(h["kid"].is_string());
    let c = part(&raw, 1);
    for claim in ["iss", "aud", "sub", "sid", "roles", "email", "email_verified", "iat", "exp", "jti"] {
        assert!(!c[claim].is_null(), "missing {claim}");
    }
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert_eq!(c["aud"], "portcullis");
    let v = verify(&w, &raw, 1_010, "portcullis").unwrap();
    assert_eq!(v.claims.email, "a@example.com");
}

#[test]
fn expired_tokens_are_refused_after_the_leeway() {
    let w = World::new(&[]);
    let raw = issued(&w);
    assert!(verify(&w, &raw, 1_000 + 900 + 29, "portcullis").is_ok());
    assert_eq!(verify(&w, &raw, 1_000 + 900 + 30, "portcullis").unwrap_err(), Error::InvalidToken(TokenError::Expired));
}

#[test]
fn wrong_audience_and_tampering_are_refused() {
    let w = World::new(&[]);
    let raw = issued(&w);
    assert_eq!(verify(&w, &raw, 1_001, "other").unwrap_err(), Error::InvalidToken(TokenError::WrongAudience));
    let mut parts: Vec<String> = raw.split('.').map(str::to_string).collect();
    let mut claims = part(&raw, 1);
    claims["roles"] = serde_json::json!(["admin"]);
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_eq!(
        verify(&w, &parts.join("."), 1_001, "portcullis").unwrap_err(),
        Error::InvalidToken(TokenError::BadSignature)
    );
}

#[test]
fn alg_none_and_foreign_headers_are_refused() {
    let w = World::new(&[]);
    let raw = issued(&w);
    let body = raw.split('.').nth(1).unwrap();
    for (header, want) in [
        (r#"{"alg":"none","typ":"at+jwt","kid":"x"}"#, TokenError::UnsupportedAlgorithm),
        (r#"{"alg":"NoNe","typ":"at+jwt","kid":"x"}"#, TokenError::UnsupportedAlgorithm),
        (r#"{"alg":"HS256","typ":"at+jwt","kid":"x"}"#, TokenError::UnsupportedAlgorithm),
        (r#"{"alg":"EdDSA","typ":"JWT","kid":"x"}"#, TokenError::WrongType),
        (r#"{"alg":"EdDSA","typ":"at+jwt"}"#, TokenError::UnknownKey),
        (r#"{"alg":"EdDSA","typ":"at+jwt","kid":"../../etc/passwd"}"#, TokenError::UnknownKey),
    ] {
        let forged = format!("{}.{body}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert_eq!(verify(&w, &forged, 1_001, "portcullis").unwrap_err(), Error::InvalidToken(want), "{header}");
        let stripped = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(header));
        assert!(verify(&w, &stripped, 1_001, "portcullis").is_err());
    }
    for malformed in ["", "a.b", "a.b.c.d", "!!!.???.###", &"a".repeat(70_000)] {
        assert_eq!(verify(&w, malformed, 1_001, "portcullis").unwrap_err(), Error::InvalidToken(TokenError::Malformed));
    }
}

#[test]
fn every_issued_token_is_handed_to_the_key_ring_exactly_as_verifying_it_reads_it() {
    use portcullis::core::flows::account::LoginRequest;
    let w = World::new(&[]);
    let mut rng = TestRandom(3);
    let (deps, meta) = w.at(1_000);
    let signup = block_on(deps.signup(
        &meta,
        &mut rng,
        SignupRequest { email: "a@example.com".into(), password: "password-1".into(), name: None, locale: None },
    ))
    .unwrap();
    let (deps, meta) = w.at(1_050);
    let login = block_on(deps.login(
        &meta,
        &mut rng,
        LoginRequest { email: "a@example.com".into(), password: "password-1".into() },
    ))
    .done()
    .unwrap();
    let (deps, meta) = w.at(1_100);
    let refreshed = block_on(deps.refresh(&meta, &mut rng, Some(&login.refresh_token))).unwrap();

    let issued = w.keys.issued.borrow().clone();
    let raws: Vec<&str> = issued.iter().map(|(raw, _, _, _)| raw.as_str()).collect();
    assert_eq!(raws, [&signup.access_token, &login.access_token, &refreshed.access_token]);
    for ((raw, kid, told, at), now) in issued.iter().zip([1_000, 1_050, 1_100]) {
        assert_eq!(*at, UnixTime(now));
        assert_eq!(Some(kid.as_str()), part(raw, 0)["kid"].as_str(), "told the kid that signed it");
        // What an edge would cache for it is what the gateway would get by
        // verifying the token itself, field for field.
        assert_eq!(*told, verify(&w, raw, now, "portcullis").unwrap());
    }
}

#[test]
fn es256_keys_sign_es256_tokens_and_each_key_verifies_its_own_algorithm_only() {
    let w = World::new(&[("SIGNING_ALG", "ES256")]);
    let raw = issued(&w);
    let h = part(&raw, 0);
    assert_eq!((h["alg"].as_str(), h["typ"].as_str()), (Some("ES256"), Some("at+jwt")));
    let v = verify(&w, &raw, 1_010, "portcullis").unwrap();
    assert_eq!(v.claims.email, "a@example.com");
    let jwks = portcullis::core::signing_keys::jwks(&w.store.keys.borrow(), UnixTime(1_010));
    assert_eq!((jwks.keys[0].kty.as_str(), jwks.keys[0].crv.as_str()), ("EC", "P-256"));
    assert!(jwks.keys[0].y.is_some());
    // The same signature under a header claiming EdDSA: the key is ES256, so no.
    let (_, rest) = raw.split_once('.').unwrap();
    let mut header = h.clone();
    header["alg"] = "EdDSA".into();
    let swapped = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
    assert_eq!(verify(&w, &swapped, 1_010, "portcullis").unwrap_err(), Error::InvalidToken(TokenError::BadSignature));
    // A tampered signature.
    let mut bytes = URL_SAFE_NO_PAD.decode(raw.rsplit('.').next().unwrap()).unwrap();
    bytes[3] ^= 1;
    let (signed, _) = raw.rsplit_once('.').unwrap();
    let tampered = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(verify(&w, &tampered, 1_010, "portcullis").unwrap_err(), Error::InvalidToken(TokenError::BadSignature));
}

#[test]
fn signing_alg_is_validated_by_name() {
    let with = |alg: &str| {
        let alg = alg.to_string();
        portcullis::core::config::Config::from_lookup(move |name| match name {
            "KEY_ENCRYPTION_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
            "SIGNING_ALG" => Some(alg.clone()),
            _ => None,
        })
    };
    for bad in ["es256", "RS256", "HS256", "none", "EdDSA,ES256"] {
        let e = with(bad).unwrap_err();
        assert!(e.0.starts_with("SIGNING_ALG"), "{bad}: {}", e.0);
    }
    assert_eq!(with("ES256").unwrap().signing_alg, portcullis::core::signing_keys::SigningAlg::Es256);
    assert_eq!(with("EdDSA").unwrap().signing_alg, portcullis::core::signing_keys::SigningAlg::EdDsa);
}

#[test]
fn tokens_claiming_a_lifetime_beyond_access_ttl_plus_the_leeway_are_refused_though_validly_signed() {
    use portcullis::core::crypto::b64url;
    use portcullis::core::ports::KeyRing;
    for alg in ["EdDSA", "ES256"] {
        let w = World::new(&[("ACCESS_TTL", "600"), ("SIGNING_ALG", alg)]);
        let (deps, meta) = w.at(1_000);
        let auth = block_on(deps.signup(
            &meta,
            &mut TestRandom(4),
            SignupRequest { email: "a@example.com".into(), password: "password-1".into(), name: None, locale: None },
        ))
        .unwrap();
        // Someone holding our signing key mints a token of their own: the
        // signature is valid, the claims are the user's, only the lifetime is long.
        let key = block_on(w.keys.signing_key()).unwrap();
        let mut claims = part(&auth.access_token, 1);
        let mint = |iat: i64, exp: i64, claims: &mut serde_json::Value| {
            claims["iat"] = iat.into();
            claims["exp"] = exp.into();
            let header = serde_json::json!({"alg": alg, "typ": "at+jwt", "kid": key.kid});
            let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
            token::compact(&input, &key.sign(input.as_bytes()))
        };
        let at_limit = mint(1_000, 1_000 + 600 + 30, &mut claims);
        let beyond = mint(1_000, 1_000 + 600 + 31, &mut claims);
        let a_year = mint(1_000, 1_000 + 365 * 86_400, &mut claims);
        let expect = Expectations {
            issuer: ISSUER,
            audience: "portcullis",
            token_type: ACCESS_TOKEN_TYPE,
            max_lifetime_secs: 600,
        };
        w.keys.now.set(UnixTime(1_001));
        assert!(block_on(flows::verify_token(&at_limit, &w.keys, &expect, UnixTime(1_001))).is_ok(), "{alg}");
        for raw in [&beyond, &a_year] {
            assert_eq!(
                block_on(flows::verify_token(raw, &w.keys, &expect, UnixTime(1_001))).unwrap_err(),
                Error::InvalidToken(TokenError::TooLongLived),
                "{alg}"
            );
        }
        // The auth API holds tokens to ACCESS_TTL too; the refusal is a plain invalid_token.
        let (deps, meta) = w.at(1_001);
        assert!(block_on(deps.me(&meta, Some(&at_limit))).is_ok(), "{alg}");
        let refused = block_on(deps.me(&meta, Some(&a_year))).unwrap_err();
        assert_eq!(refused, Error::InvalidToken(TokenError::TooLongLived));
        let p = refused.problem();
        assert_eq!((p.status, p.code), (401, "invalid_token"));
        assert!(p.www_authenticate.unwrap().contains("error=\"invalid_token\""));
        // What we issue is exactly ACCESS_TTL long, and passes.
        assert_eq!(
            part(&auth.access_token, 1)["exp"].as_i64().unwrap() - part(&auth.access_token, 1)["iat"].as_i64().unwrap(),
            600
        );
        assert!(block_on(deps.me(&meta, Some(&auth.access_token))).is_ok());
    }
}
