//! Signup, login, refresh rotation and reuse detection, logout, sessions.

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::account::{LoginRequest, SignupRequest};
use portcullis::core::flows::AuthResponse;
use portcullis::core::ports::SessionStore;

use crate::support::{block_on, config, Done, TestRandom, World};

fn signup(w: &World, rng: &mut TestRandom, email: &str, password: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(1_000);
    block_on(deps.signup(
        &meta,
        rng,
        SignupRequest { email: email.into(), password: password.into(), name: Some(" Ada ".into()), locale: None },
    ))
}

fn login(w: &World, rng: &mut TestRandom, now: i64, email: &str, password: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.login(&meta, rng, LoginRequest { email: email.into(), password: password.into() })).done()
}

#[test]
fn signup_normalises_the_email_and_emits_user_created() {
    let w = World::new(&[]);
    let r = signup(&w, &mut TestRandom(1), "  Ada@Example.COM ", "correct horse").unwrap();
    assert_eq!(r.user.email, "ada@example.com");
    assert_eq!(r.user.name.as_deref(), Some("Ada"));
    assert_eq!(r.token_type, "Bearer");
    assert_eq!(r.expires_in, 900);
    assert_eq!(w.events.kinds(), vec!["user_created"]);
    let ev = w.events.last_json();
    assert_eq!(ev["data"]["provider"], "email");
    assert_eq!(ev["data"]["email"], "ada@example.com");
}

#[test]
fn duplicate_signup_is_a_conflict_and_writes_nothing() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let err = signup(&w, &mut rng, "A@EXAMPLE.com", "password-2").unwrap_err();
    assert_eq!(err.problem().code, "email_taken");
    assert_eq!(w.store.users.borrow().len(), 1);
    assert_eq!(w.store.sessions.borrow().len(), 1);
}

#[test]
fn signup_rejects_short_passwords_without_writing() {
    let w = World::new(&[]);
    let err = signup(&w, &mut TestRandom(3), "a@example.com", "short").unwrap_err();
    assert_eq!(err.problem().code, "password_too_short");
    assert!(w.store.users.borrow().is_empty());
    assert!(w.events.kinds().is_empty());
}

#[test]
fn login_returns_the_same_error_for_unknown_email_and_wrong_password() {
    let w = World::new(&[]);
    let mut rng = TestRandom(4);
    signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let wrong = login(&w, &mut rng, 1_001, "a@example.com", "password-2").unwrap_err();
    let unknown = login(&w, &mut rng, 1_001, "b@example.com", "password-1").unwrap_err();
    assert_eq!(wrong, Error::InvalidCredentials);
    assert_eq!(wrong.problem(), unknown.problem());
    let kinds = w.events.kinds();
    assert_eq!(&kinds[kinds.len() - 2..], ["login_failed", "login_failed"]);
    let sent = w.events.sent.borrow();
    let reasons: Vec<String> = sent[sent.len() - 2..]
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.to_json()).unwrap()["data"]["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(reasons, ["invalid_password", "user_not_found"]);
}

#[test]
fn login_succeeds_and_emits_login_with_client_facts() {
    let w = World::new(&[]);
    let mut rng = TestRandom(5);
    signup(&w, &mut rng, "a@example.com", "pass word ünï").unwrap();
    let r = login(&w, &mut rng, 1_010, "A@example.com", "pass word ünï").unwrap();
    assert_eq!(r.user.email, "a@example.com");
    let ev = w.events.last_json();
    assert_eq!(ev["type"], "login");
    assert_eq!(ev["data"]["ip_address"], "203.0.113.7");
    assert_eq!(ev["data"]["user_agent"], "tests");
}

#[test]
fn login_upgrades_the_hash_when_parameters_change() {
    let mut w = World::new(&[]);
    let mut rng = TestRandom(6);
    signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let before = w.store.users.borrow()[0].password_hash.clone().unwrap();
    assert!(before.contains("m=64,t=1,p=1"));
    w.config.hash_params.memory_kib = 128;
    login(&w, &mut rng, 1_001, "a@example.com", "password-1").unwrap();
    let after = w.store.users.borrow()[0].password_hash.clone().unwrap();
    assert!(after.contains("m=128,t=1,p=1"), "{after}");
    login(&w, &mut rng, 1_002, "a@example.com", "password-1").unwrap();
}

#[test]
fn login_rehashes_to_the_light_profile_once_it_is_chosen() {
    let mut w = World::new(&[]);
    let mut rng = TestRandom(61);
    signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    // The operator switches PASSWORD_HASH_PROFILE: old hashes still verify, and are replaced.
    w.config = config(&[("ARGON2_MEMORY_KIB", ""), ("ARGON2_ITERATIONS", ""), ("PASSWORD_HASH_PROFILE", "light")]);
    login(&w, &mut rng, 1_001, "a@example.com", "password-1").unwrap();
    let after = w.store.users.borrow()[0].password_hash.clone().unwrap();
    assert!(after.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{after}");
    login(&w, &mut rng, 1_002, "a@example.com", "password-1").unwrap();
    assert_eq!(login(&w, &mut rng, 1_003, "a@example.com", "password-2").unwrap_err(), Error::InvalidCredentials);
}

#[test]
fn banned_users_cannot_log_in_or_refresh() {
    let w = World::new(&[]);
    let mut rng = TestRandom(7);
    let r = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    w.store.users.borrow_mut()[0].banned = true;
    assert_eq!(login(&w, &mut rng, 1_001, "a@example.com", "password-1").unwrap_err().problem().code, "account_banned");
    let (deps, meta) = w.at(1_002);
    let err = block_on(deps.refresh(&meta, &mut rng, Some(&r.refresh_token))).unwrap_err();
    assert_eq!(err.problem().code, "account_banned");
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_whole_session() {
    let w = World::new(&[]);
    let mut rng = TestRandom(8);
    let first = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_100);
    let second = block_on(deps.refresh(&meta, &mut rng, Some(&first.refresh_token))).unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.user.session_id, first.user.session_id);
    assert_eq!(w.events.kinds().last(), Some(&"token_refreshed"));

    // Presenting the rotated token again: refused, and the session dies.
    let reuse = block_on(deps.refresh(&meta, &mut rng, Some(&first.refresh_token))).unwrap_err();
    assert_eq!(reuse, Error::InvalidRefreshToken);
    assert_eq!(w.events.kinds().last(), Some(&"session_revoked"));
    let current = block_on(deps.refresh(&meta, &mut rng, Some(&second.refresh_token))).unwrap_err();
    assert_eq!(current, Error::InvalidRefreshToken);
    let me = block_on(deps.me(&meta, Some(&second.access_token))).unwrap_err();
    assert_eq!(me, Error::InvalidToken(TokenError::SessionRevoked));
}

#[test]
fn expired_sessions_cannot_refresh() {
    let w = World::new(&[("REFRESH_TTL", "100")]);
    let mut rng = TestRandom(9);
    let r = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_100);
    assert_eq!(
        block_on(deps.refresh(&meta, &mut rng, Some(&r.refresh_token))).unwrap_err(),
        Error::InvalidRefreshToken
    );
}

#[test]
fn malformed_refresh_tokens_are_refused_without_lookup() {
    let w = World::new(&[]);
    let (deps, meta) = w.at(1_000);
    for bad in [None, Some(""), Some("has space"), Some("x".repeat(300).as_str())] {
        assert_eq!(block_on(deps.refresh(&meta, &mut TestRandom(1), bad)).unwrap_err(), Error::InvalidRefreshToken);
    }
}

#[test]
fn logout_revokes_the_session_for_refresh_and_me() {
    let w = World::new(&[]);
    let mut rng = TestRandom(10);
    let r = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_001);
    block_on(deps.logout(&meta, &mut rng, Some(&r.access_token), None)).unwrap();
    assert_eq!(w.events.kinds().last(), Some(&"logout"));
    assert_eq!(
        block_on(deps.refresh(&meta, &mut rng, Some(&r.refresh_token))).unwrap_err(),
        Error::InvalidRefreshToken
    );
    assert_eq!(
        block_on(deps.me(&meta, Some(&r.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
}

#[test]
fn sessions_are_listed_and_revoked_by_their_owner_only() {
    let w = World::new(&[]);
    let mut rng = TestRandom(11);
    let a1 = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let a2 = login(&w, &mut rng, 1_001, "a@example.com", "password-1").unwrap();
    let b = signup(&w, &mut rng, "b@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_002);
    let list = block_on(deps.sessions(&meta, Some(&a1.access_token))).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s.current).count(), 1);
    let other = b.user.session_id.clone().unwrap();
    assert_eq!(
        block_on(deps.revoke_own_session(&meta, &mut rng, Some(&a1.access_token), &other)).unwrap_err(),
        Error::NotFound
    );
    let n = block_on(deps.revoke_other_sessions(&meta, &mut rng, Some(&a1.access_token))).unwrap();
    assert_eq!(n, 1);
    assert!(block_on(deps.me(&meta, Some(&a2.access_token))).is_err());
    assert!(block_on(deps.me(&meta, Some(&a1.access_token))).is_ok());
    let events_before = w.events.sent.borrow().len();
    assert_eq!(block_on(deps.revoke_other_sessions(&meta, &mut rng, Some(&a1.access_token))).unwrap(), 0);
    assert_eq!(w.events.sent.borrow().len(), events_before, "nothing revoked, nothing emitted");
}

#[test]
fn a_session_revoked_in_between_is_not_revoked_twice() {
    let w = World::new(&[]);
    let mut rng = TestRandom(13);
    let a1 = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let a2 = login(&w, &mut rng, 1_001, "a@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_002);
    let victim = a2.user.session_id.clone().unwrap();
    // Another request's write lands between this one's read and write.
    block_on(w.store.revoke_session(&victim, meta.now, "raced")).unwrap();
    let events_before = w.events.sent.borrow().len();
    assert_eq!(
        block_on(deps.revoke_own_session(&meta, &mut rng, Some(&a1.access_token), &victim)).unwrap_err(),
        Error::NotFound
    );
    assert_eq!(w.events.sent.borrow().len(), events_before);
}

#[test]
fn storage_failures_fail_closed() {
    let w = World::new(&[]);
    *w.store.fail.borrow_mut() = true;
    let err = signup(&w, &mut TestRandom(12), "a@example.com", "password-1").unwrap_err();
    assert_eq!(err.problem().status, 503);
}

/// The JSON a client receives for `r` under the world's configuration.
fn body_text(w: &World, r: &AuthResponse) -> String {
    serde_json::to_string(&r.body(&w.config)).unwrap()
}

#[test]
fn in_cookie_mode_sign_in_bodies_carry_the_user_and_expiry_but_no_token() {
    let w = World::new(&[("COOKIE_MODE", "true")]);
    let mut rng = TestRandom(14);
    let signed_up = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let logged_in = login(&w, &mut rng, 1_001, "a@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_002);
    let refreshed = block_on(deps.refresh(&meta, &mut rng, Some(&logged_in.refresh_token))).unwrap();
    for (what, r) in [("signup", &signed_up), ("login", &logged_in), ("refresh", &refreshed)] {
        let text = body_text(&w, r);
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["expires_in", "token_type", "user"], "{what}: {text}");
        assert_eq!((body["token_type"].as_str(), body["expires_in"].as_u64()), (Some("Bearer"), Some(900)), "{what}");
        assert_eq!(body["user"]["email"], "a@example.com", "{what}");
        assert_eq!(body["user"]["session_id"].as_str(), r.user.session_id.as_deref(), "{what}");
        // Neither token appears anywhere in the body, under any name.
        assert!(!text.contains(&r.access_token) && !text.contains(&r.refresh_token), "{what}: {text}");
        // They still exist for the cookies, and work.
        assert!(block_on(deps.me(&meta, Some(&r.access_token))).is_ok(), "{what}");
    }
    assert!(block_on(deps.refresh(&meta, &mut rng, Some(&refreshed.refresh_token))).is_ok());
}

#[test]
fn sign_in_bodies_carry_the_tokens_without_cookie_mode_or_with_cookie_mode_body_tokens() {
    for vars in [&[][..], &[("COOKIE_MODE", "true"), ("COOKIE_MODE_BODY_TOKENS", "true")][..]] {
        let w = World::new(vars);
        let mut rng = TestRandom(15);
        let r = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
        let body: serde_json::Value = serde_json::from_str(&body_text(&w, &r)).unwrap();
        assert_eq!(body["access_token"].as_str(), Some(r.access_token.as_str()), "{vars:?}");
        assert_eq!(body["refresh_token"].as_str(), Some(r.refresh_token.as_str()), "{vars:?}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["user"]["email"], "a@example.com");
    }
}

/// `(iat, exp)` of an access token, read from its payload.
fn iat_exp(raw: &str) -> (i64, i64) {
    use base64::Engine;
    let payload = raw.split('.').nth(1).unwrap();
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap())
}

fn refresh_at(w: &World, rng: &mut TestRandom, now: i64, token: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.refresh(&meta, rng, Some(token)))
}

#[test]
fn a_session_ends_at_session_max_age_however_often_it_is_refreshed() {
    let w = World::new(&[("SESSION_MAX_AGE", "1000"), ("REFRESH_TTL", "600"), ("ACCESS_TTL", "300")]);
    let mut rng = TestRandom(14);
    let first = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let sid = first.user.session_id.clone().unwrap();
    let stored = |w: &World| block_on(w.store.session_by_id(&sid)).unwrap().unwrap();
    assert_eq!((first.expires_in, iat_exp(&first.access_token)), (300, (1_000, 1_300)));
    // Refreshed in time, the refresh token lives REFRESH_TTL, until the session's end at 2000.
    let second = refresh_at(&w, &mut rng, 1_500, &first.refresh_token).unwrap();
    assert_eq!(stored(&w).expires_at.0, 2_000, "1500 + 600 capped at 1000 + 1000");
    assert_eq!((second.expires_in, iat_exp(&second.access_token)), (300, (1_500, 1_800)));
    // Near the end, the access token stops at the end too.
    let third = refresh_at(&w, &mut rng, 1_900, &second.refresh_token).unwrap();
    assert_eq!((third.expires_in, iat_exp(&third.access_token)), (100, (1_900, 2_000)));
    assert_eq!(stored(&w).expires_at.0, 2_000);
    assert_eq!(w.events.count("session_revoked"), 0);
    // At the end: 401 invalid_refresh_token, like any expired refresh token, and the session is revoked, once.
    assert_eq!(refresh_at(&w, &mut rng, 2_000, &third.refresh_token).unwrap_err(), Error::InvalidRefreshToken);
    assert_eq!(w.events.count("session_revoked"), 1);
    let ev = w.events.last_of("session_revoked");
    assert_eq!((ev["user_id"].as_str(), ev["session_id"].as_str()), (Some(first.user.id.as_str()), Some(sid.as_str())));
    assert_eq!(ev["revoke_all"], false);
    assert!(stored(&w).revoked_at.is_some());
    assert_eq!(refresh_at(&w, &mut rng, 2_001, &third.refresh_token).unwrap_err(), Error::InvalidRefreshToken);
    assert_eq!(w.events.count("session_revoked"), 1, "reported once");
    let (deps, meta) = w.at(2_000);
    assert_eq!(
        block_on(deps.me(&meta, Some(&third.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
}

#[test]
fn a_refresh_token_that_merely_went_unused_for_refresh_ttl_is_refused_without_an_event() {
    let w = World::new(&[("SESSION_MAX_AGE", "1000"), ("REFRESH_TTL", "100")]);
    let mut rng = TestRandom(15);
    let r = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    assert_eq!(refresh_at(&w, &mut rng, 1_100, &r.refresh_token).unwrap_err(), Error::InvalidRefreshToken);
    assert_eq!(w.events.count("session_revoked"), 0);
}

#[test]
fn tokens_of_a_new_session_never_outlive_a_short_session_max_age() {
    let w = World::new(&[("SESSION_MAX_AGE", "60")]);
    let mut rng = TestRandom(16);
    let r = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    assert_eq!((r.expires_in, iat_exp(&r.access_token)), (60, (1_000, 1_060)));
    let s = block_on(w.store.session_by_id(r.user.session_id.as_ref().unwrap())).unwrap().unwrap();
    assert_eq!(s.expires_at.0, 1_060);
    let (deps, meta) = w.at(1_059);
    assert!(block_on(deps.me(&meta, Some(&r.access_token))).is_ok());
    assert_eq!(block_on(deps.sessions(&meta, Some(&r.access_token))).unwrap().len(), 1);
    let (deps, meta) = w.at(1_060);
    assert_eq!(
        block_on(deps.me(&meta, Some(&r.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
}

#[test]
fn a_shortened_session_max_age_ends_older_sessions_at_once() {
    let mut w = World::new(&[]);
    let mut rng = TestRandom(17);
    let old = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let fresh = login(&w, &mut rng, 1_500, "a@example.com", "password-1").unwrap();
    // The operator lowers SESSION_MAX_AGE to 400 s: the first session (created at 1000) is past it at 1500.
    w.config.session_max_age_secs = 400;
    let (deps, meta) = w.at(1_500);
    assert_eq!(
        block_on(deps.me(&meta, Some(&old.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
    let listed = block_on(deps.sessions(&meta, Some(&fresh.access_token))).unwrap();
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [fresh.user.session_id.as_deref().unwrap()]);
    assert_eq!(refresh_at(&w, &mut rng, 1_500, &old.refresh_token).unwrap_err(), Error::InvalidRefreshToken);
    assert_eq!(w.events.last_of("session_revoked")["session_id"], old.user.session_id.as_deref().unwrap());
    let renewed = refresh_at(&w, &mut rng, 1_500, &fresh.refresh_token).unwrap();
    assert_eq!(renewed.expires_in, 400);
}

/// "Sign out my other sessions" is decided with the caller's session in the
/// same write: a request that authenticated just before its session was
/// revoked (here with the account's every session, by a password reset
/// after which the owner signed in again) signs nobody out.
#[test]
fn revoking_the_other_sessions_from_a_session_revoked_meanwhile_revokes_nothing() {
    use portcullis::core::ports::AccountStore;
    use portcullis::core::session::{Session, SignInBasis};
    use portcullis::core::takeover::AddressProof;
    use portcullis::core::time::UnixTime;

    let w = World::new(&[]);
    let mut rng = TestRandom(20);
    let stolen = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    let store = w.store.clone();
    let user_id = stolen.user.id.clone();
    *w.store.after_session_read.borrow_mut() = Some(Box::new(move || {
        let reset = AddressProof {
            user_id: &user_id,
            email: "a@example.com",
            link: None,
            new_password: Some("the owner's new hash"),
            profile: Default::default(),
            now: UnixTime(1_100),
        };
        let proven = block_on(store.prove_address(&reset)).unwrap().unwrap();
        let owners = Session {
            id: "the-owners-new-session".into(),
            user_id: user_id.clone(),
            created_at: UnixTime(1_100),
            last_used_at: UnixTime(1_100),
            expires_at: UnixTime(1_100 + 86_400),
            revoked_at: None,
            ip_address: None,
            user_agent: None,
            extra_claims: Default::default(),
            amr: Default::default(),
        };
        let basis = SignInBasis::epoch(proven.auth_epoch);
        assert!(block_on(store.create_session(&owners, "owners-refresh-hash", &basis)).unwrap());
    }));
    let (deps, meta) = w.at(1_100);
    let revoked_events = w.events.count("session_revoked");
    assert_eq!(
        block_on(deps.revoke_other_sessions(&meta, &mut rng, Some(&stolen.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
    let owners = block_on(w.store.session_by_id(&"the-owners-new-session".into())).unwrap().unwrap();
    assert!(owners.revoked_at.is_none(), "the owner's new session lives");
    assert_eq!(w.events.count("session_revoked"), revoked_events);
}

/// In cookie mode each cookie lives as long as the token it carries: the
/// access cookie `expires_in`, the refresh cookie until the refresh token
/// stops working — `REFRESH_TTL` after it was issued, or the session's end
/// (`SESSION_MAX_AGE`), whichever is first.
#[test]
fn cookies_live_as_long_as_their_tokens_up_to_the_sessions_end() {
    let w = World::new(&[("SESSION_MAX_AGE", "1000"), ("REFRESH_TTL", "600"), ("ACCESS_TTL", "300")]);
    let mut rng = TestRandom(21);
    let first = signup(&w, &mut rng, "a@example.com", "password-1").unwrap();
    assert_eq!(first.cookie_max_ages(&w.config, portcullis::core::time::UnixTime(1_000)), (300, 600));
    let second = refresh_at(&w, &mut rng, 1_500, &first.refresh_token).unwrap();
    assert_eq!(
        second.cookie_max_ages(&w.config, portcullis::core::time::UnixTime(1_500)),
        (300, 500),
        "the refresh cookie stops at the session's end, 1000 + 1000"
    );
    let third = refresh_at(&w, &mut rng, 1_900, &second.refresh_token).unwrap();
    assert_eq!(third.cookie_max_ages(&w.config, portcullis::core::time::UnixTime(1_900)), (100, 100));
    // A short SESSION_MAX_AGE cuts both from the sign-in on.
    let w = World::new(&[("SESSION_MAX_AGE", "60")]);
    let r = signup(&w, &mut rng, "b@example.com", "password-1").unwrap();
    assert_eq!(r.cookie_max_ages(&w.config, portcullis::core::time::UnixTime(1_000)), (60, 60));
}
