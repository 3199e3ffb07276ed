//! Fuzz targets, as proptest properties: token parsing, route rules and
//! path normalisation, request-body parsing, and the settings operators
//! type (`ROUTES`, `RATE_LIMITS`). `cargo test` (and so `npm test`) runs each
//! for a bounded number of cases; for a long run:
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release --test fuzz
//! ```
//!
//! Every target asserts more than "no panic" where there is a property to
//! state; a panic anywhere fails the run (and `panic = "abort"` in the
//! Worker would turn one into a dropped request).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;

use portcullis::core::body::parse_json;
use portcullis::core::email_address::Email;
use portcullis::core::error::TokenError;
use portcullis::core::flows::account::{LoginRequest, RefreshRequest, SignupRequest};
use portcullis::core::flows::admin::{ListQuery, UpdateUserRequest};
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::password::{ChangeRequest, ResetRequest};
use portcullis::core::flows::{EmailRequest, TokenRequest};
use portcullis::core::gateway::headers::StrippedHeaders;
use portcullis::core::gateway::policy::{normalise_path, Routes};
use portcullis::core::gateway::request::RequestView;
use portcullis::core::rate_limit::RateLimits;
use portcullis::core::time::UnixTime;
use portcullis::core::token::{Expectations, Parsed, ACCESS_TOKEN_TYPE};

const EXPECT: Expectations<'static> = Expectations {
    issuer: "https://auth.test",
    audience: "portcullis",
    token_type: ACCESS_TOKEN_TYPE,
    max_lifetime_secs: 900,
};

/// `PROPTEST_CASES`, else 512 per target (about a second in all).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

/// JSON-ish text: mostly valid shapes with hostile leaves.
fn jsonish() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        "\\PC{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"\\u0000\"".to_string()),
        Just("\"\\ud800\"".to_string()),
        Just("1e999999".to_string()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(("[a-z_]{1,14}", inner), 0..6).prop_map(|kv| {
                let members: Vec<String> = kv.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    // ---- token parsing ------------------------------------------------------

    #[test]
    fn tokens_from_arbitrary_bytes_are_refused_not_panicked(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        match Parsed::new(&text, ACCESS_TOKEN_TYPE) {
            Err(_) => {}
            Ok(p) => { let _ = p.validated_claims(&EXPECT, UnixTime(1_700_000_000)); }
        }
    }

    #[test]
    fn tokens_with_hostile_headers_never_validate_without_a_signature_check(
        alg in prop_oneof![
            Just("none".to_string()), Just("NONE".to_string()), Just("nOnE".to_string()), Just("HS256".to_string()),
            Just("RS256".to_string()), Just("ES256".to_string()), Just("EdDSA".to_string()), "[A-Za-z0-9]{0,8}",
        ],
        kid in "\\PC{0,64}",
        extra in prop::collection::hash_map("[a-z]{1,5}", "\\PC{0,20}", 0..4),
    ) {
        use base64::Engine;
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let mut header = serde_json::json!({ "alg": alg, "typ": "at+jwt", "kid": kid });
        for (k, v) in extra { header[k] = serde_json::Value::String(v); }
        let claims = serde_json::json!({ "iss": "https://auth.test", "aud": "portcullis", "sub": "u", "sid": "s", "exp": 1_900_000_000i64, "iat": 1_700_000_000i64 });
        let long_sig = "A".repeat(86);
        for sig in ["", "AAAA", long_sig.as_str()] {
            let raw = format!("{}.{}.{}", b64(&header), b64(&claims), sig);
            if let Ok(p) = Parsed::new(&raw, ACCESS_TOKEN_TYPE) {
                // Parsing pins the algorithm: anything that gets this far is EdDSA
                // or ES256 (exactly), and still needs the key ring to verify its
                // 64-byte signature with a key of that algorithm.
                prop_assert!(matches!(header["alg"].as_str(), Some("EdDSA" | "ES256")));
                prop_assert_eq!(Some(p.alg().name()), header["alg"].as_str());
                prop_assert_eq!(p.signature().len(), 64);
            }
        }
    }

    #[test]
    fn tokens_split_and_decode_exactly_as_jwt_compact_reads_them(
        header in prop_oneof![
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#.to_string()),
            Just(r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","cty":"JSON"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","cty":"cbor"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":["b64"],"b64":false}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x5t":"AAAA"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":7,"typ":"at+jwt"}"#.to_string()),
            Just(r#"{"kid":"k1","typ":"at+jwt"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","kid":"k2","typ":"at+jwt"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","typ":"JWT"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k\u0031","typ":"at\u002bjwt","jku":null,"x5u":"https://x"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","jku":7}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","x5t#S256":"not base64!"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":null,"typ":"at+jwt"}"#.to_string()),
            Just(r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt","crit":1,"crit":2}"#.to_string()),
            Just(r#"["EdDSA",null,"k1","at+jwt"]"#.to_string()),
            Just(r#" {"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#.to_string()),
            jsonish(),
        ],
        claims in prop_oneof![
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u","sid":"s","roles":["user"],"email":"a@b.io","email_verified":true,"jti":"j","iat":1700000000,"exp":1900000000}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":["x","portcullis"],"sub":"u","sid":"s","roles":[],"email":"a@b.io","email_verified":false,"jti":"j","iat":1700000000.5,"exp":1900000000,"nbf":1}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u","sid":"s","roles":["a","b"],"email":"a@b.io","email_verified":true,"jti":"j","iat":1700000000,"exp":1900000000,"exp":1700000001}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u","sub":"v","sid":"s","roles":["a"],"email":"a@b.io","email_verified":true,"jti":"j","iat":1700000000,"exp":1900000000}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u\n","sid":"s","roles":["a,b"],"email":"a@b.io","email_verified":true,"jti":"j","iat":1700000000,"exp":1900000000}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u","sid":"s","roles":["a"],"email":"a@b.io","email_verified":true,"jti":"j","exp":1900000000,"extra":{"x":[1,2]}}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u","sid":"s","roles":["a"],"email":"a@b.io","email_verified":true,"jti":"j","iat":-5,"exp":1e300}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":"portcullis","sub":"u","sid":"s","roles":["a"],"email":"a@b.io","email_verified":true,"jti":"j","iat":18446744073709551615,"exp":"1900000000"}"#.to_string()),
            Just(r#"{"iss":"https://auth.test","aud":[],"sub":"u","sid":"s","roles":["a"],"email":"a@b.io","email_verified":1,"jti":"j","iat":1,"exp":9000000000000}"#.to_string()),
            Just(r#"["https://auth.test","portcullis","u","s",["r"],"a@b.io",true,"j",1900000000,null,1700000000]"#.to_string()),
            (0i64..2_000_000_000, prop_oneof![Just("".to_string()), Just(".25".to_string()), Just("e0".to_string())]).prop_map(|(t, frac)| format!(
                r#"{{"iss":"https://auth.test","aud":"portcullis","sub":"u","sid":"s","roles":["r"],"email":"a@b.io","email_verified":true,"jti":"j","iat":{t}{frac},"exp":{}{frac}}}"#, t + 900
            )),
            jsonish(),
        ],
        sig_len in prop_oneof![Just(64usize), 0usize..80],
        mangle in prop::collection::vec((0usize..3, 0usize..200, prop_oneof![
            Just('='), Just('+'), Just('/'), Just('.'), Just(' '), Just('-'), Just('_'), Just('A'), Just('B'), Just('\u{e9}'),
        ]), 0..3),
        truncate in prop::option::of((0usize..3, 0usize..4)),
    ) {
        use base64::Engine;
        use portcullis::core::token::AccessClaims;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let mut parts = [b64(header.as_bytes()), b64(claims.as_bytes()), b64(&vec![0x5a; sig_len])];
        // Hostile spellings: padding, foreign alphabets, dots, a part cut short
        // (non-canonical trailing bits, impossible lengths).
        for (part, at, c) in mangle {
            let p = &mut parts[part];
            let at = at.min(p.len());
            if p.is_char_boundary(at) { p.insert(at, c); }
        }
        if let Some((part, n)) = truncate {
            let p = &mut parts[part];
            let keep = p.len().saturating_sub(n);
            if p.is_char_boundary(keep) { p.truncate(keep); }
        }
        let raw = parts.join(".");
        let ours = Parsed::new(&raw, ACCESS_TOKEN_TYPE);
        match jwt_compact::UntrustedToken::new(raw.as_str()) {
            Err(_) => prop_assert_eq!(ours.err(), Some(TokenError::Malformed), "{}", raw),
            Ok(t) => match ours {
                Ok(p) => {
                    prop_assert_eq!(p.alg().name(), t.algorithm());
                    prop_assert_eq!(Some(p.kid()), t.header().key_id.as_deref());
                    prop_assert_eq!(p.signature(), t.signature_bytes());
                    prop_assert_eq!(p.signed_data(), raw.rsplit_once('.').unwrap().0.as_bytes());
                    let now = 1_800_000_000;
                    let theirs = t.deserialize_claims_unchecked::<AccessClaims>().ok();
                    let mine = p.validated_claims(&EXPECT, UnixTime(now));
                    match (&mine, theirs) {
                        (Ok(v), Some(c)) => {
                            prop_assert_eq!(&v.claims, &c.custom);
                            prop_assert_eq!(Some(v.expires_at.0), c.expiration.map(|e| e.timestamp()));
                            prop_assert_eq!(Some(v.issued_at.0), c.issued_at.map(|e| e.timestamp()));
                        }
                        (Ok(_), None) => prop_assert!(false, "claims jwt-compact refuses were read: {}", claims),
                        (Err(e), None) => prop_assert_eq!(e, &TokenError::Malformed),
                        // Read alike and refused for what they say, each for the reason they give.
                        (Err(e), Some(c)) => {
                            let ts = |d: Option<chrono::DateTime<chrono::Utc>>| d.map(|d| d.timestamp());
                            let x = &c.custom;
                            let plain = |v: &str| !v.chars().any(char::is_control);
                            let fits = plain(&x.sub) && plain(&x.sid) && plain(&x.email)
                                && x.roles.iter().all(|r| !r.is_empty() && plain(r) && !r.contains([',', ' ']));
                            let why = match e {
                                TokenError::Expired => ts(c.expiration).is_none_or(|exp| now >= exp + 30),
                                TokenError::NotYetValid => ts(c.not_before).is_some_and(|n| n > now + 30) || ts(c.issued_at).is_some_and(|i| i > now + 30),
                                TokenError::TooLongLived => matches!((ts(c.issued_at), ts(c.expiration)), (Some(i), Some(e)) if e.saturating_sub(i) > EXPECT.max_lifetime_secs as i64 + 30),
                                TokenError::WrongIssuer => x.iss != EXPECT.issuer,
                                TokenError::WrongAudience => !x.aud.iter().any(|a| a == EXPECT.audience),
                                TokenError::Malformed => c.issued_at.is_none() || !fits,
                                _ => false,
                            };
                            prop_assert!(why, "{:?} for {}", e, claims);
                        }
                    }
                }
                // Parsed as a JWS by both; refused by ours for what it says.
                Err(e) => prop_assert!(
                    e != TokenError::Malformed || header.contains("crit") || header.contains("b64") || raw.len() > 4096,
                    "{:?} for {}", e, raw
                ),
            },
        }
    }

    #[test]
    fn oversized_tokens_are_malformed(n in 4_097usize..70_000) {
        let raw = format!("{}.e30.{}", "e".repeat(n), "A".repeat(86));
        prop_assert_eq!(Parsed::new(&raw, ACCESS_TOKEN_TYPE).err(), Some(TokenError::Malformed));
    }

    // ---- routes and paths ---------------------------------------------------

    #[test]
    fn route_settings_of_any_shape_parse_or_name_the_setting(routes in prop_oneof![jsonish(), "\\PC{0,120}"], default in "\\PC{0,20}") {
        match Routes::parse(Some(&routes), Some(&default)) {
            Ok(r) => { let _ = r.policy_for("GET", "/"); }
            Err(e) => prop_assert!(e.contains("ROUTES") || e.contains("DEFAULT_POLICY"), "{}", e),
        }
    }

    #[test]
    fn a_protected_prefix_cannot_be_escaped_by_encoding(
        prefix in "[a-z]{1,8}",
        rest in prop::collection::vec(prop_oneof![Just("..".to_string()), Just(".".to_string()), Just("%2e%2e".to_string()), Just("%2E".to_string()), Just("".to_string()), "[a-zA-Z0-9]{1,6}"], 0..6),
        upper in any::<bool>(),
    ) {
        let routes = Routes::parse(
            Some(&format!(r#"[{{"path": "/{prefix}/*", "policy": "role:admin"}}, {{"path": "/*", "policy": "public"}}]"#)),
            None,
        ).unwrap();
        let shown_prefix = if upper { prefix.to_uppercase() } else { prefix.clone() };
        let raw = format!("/{shown_prefix}/{}", rest.join("/"));
        if let Ok(n) = normalise_path(&raw) {
            // Whatever the raw form, the rule applied is the one for the path the origin sees.
            let lands_inside = n.to_ascii_lowercase() == format!("/{prefix}") || n.to_ascii_lowercase().starts_with(&format!("/{prefix}/"));
            let policy = routes.policy_for("GET", &n);
            prop_assert_eq!(matches!(policy, portcullis::core::gateway::policy::Policy::Role(_)), lands_inside, "{} -> {}", raw, n);
        }
    }

    #[test]
    fn any_query_and_header_are_judged(query in "\\PC{0,80}", header in proptest::option::of("\\PC{0,40}"), method in "[A-Za-z]{1,7}") {
        struct Req(String, String, Option<String>);
        impl RequestView for Req {
            fn method(&self) -> &str { &self.0 }
            fn query(&self) -> Option<&str> { Some(&self.1) }
            fn has_body(&self) -> bool { true }
            fn header(&self, _name: &str) -> Option<String> { self.2.clone() }
        }
        let routes = Routes::parse(
            Some(r#"[{"path": "/a/*", "methods": ["DELETE"], "policy": "role:admin"}, {"path": "/a/*", "policy": "public"}]"#),
            None,
        ).unwrap();
        let judged = routes.judge(&Req(method, query, header), "/a/b");
        // Whatever it names, a request here is public or needs the admin role.
        prop_assert!(judged.is_public() || judged.authorize(&["admin".into()]).is_ok());
    }

    #[test]
    fn arbitrary_paths_normalise_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(n) = normalise_path(&text) {
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.contains('\0') && !n.contains('\\'));
            prop_assert_eq!(normalise_path(&n).unwrap(), n);
        }
    }

    // ---- request bodies -----------------------------------------------------

    #[test]
    fn request_bodies_parse_or_fail_cleanly(body in prop_oneof![jsonish(), "\\PC{0,200}"]) {
        // Exactly the parser the edge uses: every failure is a 400 or a 422.
        fn check<T: serde::de::DeserializeOwned>(body: &str) -> Result<(), TestCaseError> {
            if let Err(e) = parse_json::<T>(body.as_bytes()) {
                let p = e.problem();
                prop_assert!(matches!((p.status, p.code), (400, "invalid_json") | (422, "validation_failed")), "{:?}", p);
            }
            Ok(())
        }
        check::<SignupRequest>(&body)?;
        check::<LoginRequest>(&body)?;
        check::<RefreshRequest>(&body)?;
        check::<EmailRequest>(&body)?;
        check::<TokenRequest>(&body)?;
        check::<OtpVerifyRequest>(&body)?;
        check::<ResetRequest>(&body)?;
        check::<ChangeRequest>(&body)?;
        check::<UpdateUserRequest>(&body)?;
        if let Ok(req) = parse_json::<EmailRequest>(body.as_bytes()) {
            if let Ok(e) = Email::parse(&req.email) {
                prop_assert!(!e.as_str().chars().any(char::is_control));
                let again = Email::parse(e.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), e.as_str());
            }
        }
    }

    #[test]
    fn admin_list_queries_parse_or_fail_cleanly(q in "\\PC{0,120}") {
        let _ = ListQuery::parse(Some(&q));
    }

    // ---- operator settings --------------------------------------------------

    #[test]
    fn strip_header_settings_parse_or_say_which_name_is_bad(extra in "[\\PC,*_-]{0,80}") {
        match StrippedHeaders::parse(Some(&extra)) {
            Ok(s) => prop_assert!(s.js_pattern().starts_with('^')),
            Err(e) => prop_assert!(e.contains("not a header name"), "{}", e),
        }
    }

    #[test]
    fn rate_limit_settings_parse_or_name_the_setting(limits in prop_oneof![jsonish(), "\\PC{0,80}"], backoff in "[0-9/a-z]{0,12}") {
        match RateLimits::parse(Some(&limits), Some(&backoff)) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.starts_with("RATE_LIMITS") || e.starts_with("LOGIN_BACKOFF"), "{}", e),
        }
    }
}
