//! Forgotten, reset and changed passwords.

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::password::{ChangeRequest, PasswordUpdated, ResetRequest};
use portcullis::core::flows::EmailRequest;
use portcullis::core::rate_limit::LoginRecord;
use portcullis::core::time::UnixTime;

use crate::support::{block_on, code, login_at, signup_at, user, TestRandom, World};

fn forgot(w: &World, rng: &mut TestRandom, now: i64, email: &str) -> serde_json::Value {
    let (deps, meta) = w.at(now);
    serde_json::to_value(
        block_on(deps.forgot_password(&meta, rng, EmailRequest { email: email.into(), locale: None })).unwrap(),
    )
    .unwrap()
}

fn reset(w: &World, rng: &mut TestRandom, now: i64, token: &str, pw: &str) -> Result<PasswordUpdated, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.reset_password(&meta, rng, ResetRequest { token: token.into(), new_password: pw.into() }))
}

fn change(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    bearer: &str,
    old: &str,
    new: &str,
) -> Result<PasswordUpdated, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.change_password(
        &meta,
        rng,
        Some(bearer),
        ChangeRequest { old_password: old.into(), new_password: new.into() },
    ))
}

fn reset_token(w: &World) -> String {
    w.events.last_of("password_reset_requested")["token"].as_str().unwrap().to_string()
}

#[test]
fn forgot_answers_the_same_and_emits_only_for_accounts() {
    let w = World::new(&[]);
    let mut rng = TestRandom(1);
    let u = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let a = forgot(&w, &mut rng, 1_001, "ada@example.com");
    let b = forgot(&w, &mut rng, 1_001, "nobody@example.com");
    assert_eq!(a, b);
    assert_eq!(w.events.count("password_reset_requested"), 1);
    let ev = w.events.last_of("password_reset_requested");
    assert_eq!(ev["user_id"], u.user.id.as_str());
    assert_eq!(ev["email"], "ada@example.com");
}

#[test]
fn reset_sets_the_password_revokes_every_session_and_works_once() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    let s1 = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let s2 = login_at(&w, &mut rng, 1_001, "ada@example.com", "password-1").unwrap();
    forgot(&w, &mut rng, 1_002, "ada@example.com");
    let token = reset_token(&w);
    let r = reset(&w, &mut rng, 1_003, &token, "brand new password").unwrap();
    assert_eq!(r.revoked_sessions, 2);
    let kinds = w.events.kinds();
    // The account was unverified: reading the reset email verified it.
    assert_eq!(&kinds[kinds.len() - 3..], ["password_reset", "session_revoked", "email_verified"]);
    assert_eq!(w.events.last_of("session_revoked")["revoke_all"], true);
    let (deps, meta) = w.at(1_004);
    for s in [&s1, &s2] {
        assert_eq!(
            block_on(deps.me(&meta, Some(&s.access_token))).unwrap_err(),
            Error::InvalidToken(TokenError::SessionRevoked)
        );
        assert_eq!(
            block_on(deps.refresh(&meta, &mut rng, Some(&s.refresh_token))).unwrap_err(),
            Error::InvalidRefreshToken
        );
    }
    assert_eq!(login_at(&w, &mut rng, 1_005, "ada@example.com", "password-1").unwrap_err(), Error::InvalidCredentials);
    assert!(login_at(&w, &mut rng, 1_005, "ada@example.com", "brand new password").is_ok());
    assert!(user(&w, "ada@example.com").email_verified, "reading the reset email proves the address");
    assert_eq!(code(reset(&w, &mut rng, 1_006, &token, "another password")), "invalid_link");
}

#[test]
fn a_rejected_new_password_does_not_use_the_link_up() {
    let w = World::new(&[]);
    let mut rng = TestRandom(3);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    forgot(&w, &mut rng, 1_001, "ada@example.com");
    let token = reset_token(&w);
    assert_eq!(code(reset(&w, &mut rng, 1_002, &token, "short")), "password_too_short");
    assert!(reset(&w, &mut rng, 1_003, &token, "long enough now").is_ok());
}

#[test]
fn reset_links_are_superseded_and_expire() {
    let w = World::new(&[("PASSWORD_RESET_TTL", "100")]);
    let mut rng = TestRandom(4);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    forgot(&w, &mut rng, 1_001, "ada@example.com");
    let first = reset_token(&w);
    forgot(&w, &mut rng, 1_002, "ada@example.com");
    let second = reset_token(&w);
    assert_eq!(code(reset(&w, &mut rng, 1_003, &first, "new password 1")), "invalid_link");
    assert_eq!(code(reset(&w, &mut rng, 1_102, &second, "new password 1")), "invalid_link");
    assert_eq!(code(reset(&w, &mut rng, 1_003, "garbage token!", "new password 1")), "invalid_link");
}

#[test]
fn a_magic_link_token_is_not_a_reset_token() {
    let w = World::new(&[]);
    let mut rng = TestRandom(5);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_magic_link(&meta, &mut rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    let magic = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    assert_eq!(code(reset(&w, &mut rng, 1_002, &magic, "new password 1")), "invalid_link");
}

#[test]
fn change_needs_the_current_password_and_revokes_only_the_other_sessions() {
    let w = World::new(&[]);
    let mut rng = TestRandom(6);
    let current = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let other = login_at(&w, &mut rng, 1_001, "ada@example.com", "password-1").unwrap();
    assert_eq!(
        code(change(&w, &mut rng, 1_002, &current.access_token, "wrong-password", "password-2")),
        "invalid_current_password"
    );
    assert_eq!(code(change(&w, &mut rng, 1_002, &current.access_token, "password-1", "short")), "password_too_short");
    assert_eq!(w.events.count("password_changed"), 0);
    let r = change(&w, &mut rng, 1_003, &current.access_token, "password-1", "password-2").unwrap();
    assert_eq!(r.revoked_sessions, 1);
    let (deps, meta) = w.at(1_004);
    assert!(block_on(deps.me(&meta, Some(&current.access_token))).is_ok());
    assert!(block_on(deps.me(&meta, Some(&other.access_token))).is_err());
    assert!(login_at(&w, &mut rng, 1_005, "ada@example.com", "password-2").is_ok());
    assert_eq!(w.events.count("password_changed"), 1);
}

#[test]
fn change_without_a_token_is_401() {
    let w = World::new(&[]);
    let (deps, meta) = w.at(1_000);
    let err = block_on(deps.change_password(
        &meta,
        &mut TestRandom(7),
        None,
        ChangeRequest { old_password: "a".into(), new_password: "password-2".into() },
    ))
    .unwrap_err();
    assert_eq!(err.problem().status, 401);
}

/// Guesses at the current password count towards the account's login
/// back-off: after the free failures, a change is refused (429) even with the
/// right password until the wait is over, and so is a login; a right one
/// then clears the record.
#[test]
fn wrong_current_passwords_count_towards_the_login_backoff() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(31);
    let s = signup_at(&w, rng, 1_000, "ada@example.com", "password-1");
    for _ in 0..5 {
        let r = change(&w, rng, 1_001, &s.access_token, "wrong-guess", "password-2");
        assert_eq!(code(r), "invalid_current_password");
    }
    assert_eq!(w.events.count("login_failed"), 5);
    assert_eq!(w.events.last_of("login_failed")["reason"], "invalid_current_password");
    // Each wrong guess settled its attempt: none is in flight, so the
    // refusal below does not wait for one.
    let record = w.store.login_failures.borrow()["ada@example.com"];
    assert_eq!(record, LoginRecord { failures: 5, last_failed_at: UnixTime(1_001), in_flight: 0 });
    let r = change(&w, rng, 1_001, &s.access_token, "password-1", "password-2");
    assert_eq!(r.unwrap_err(), Error::RateLimited { retry_after_secs: 2 });
    assert_eq!(w.pause.pauses.get(), 0);
    assert_eq!(w.events.last_of("rate_limit_exceeded")["endpoint"], "login");
    assert_eq!(code(login_at(&w, rng, 1_002, "ada@example.com", "password-1")), "rate_limited");
    change(&w, rng, 1_003, &s.access_token, "password-1", "password-2").unwrap();
    assert!(w.store.login_failures.borrow().get("ada@example.com").is_none(), "a right password clears the record");
}

/// With the back-off off, a guess at the current password is still held to
/// the login's per-email limit, as a login is.
#[test]
fn current_password_guesses_meet_the_login_limits_without_a_backoff() {
    let w = World::new(&[("LOGIN_BACKOFF", "off"), ("RATE_LIMITS", r#"{"login": {"email": "3/1h", "ip": "off"}}"#)]);
    let rng = &mut TestRandom(32);
    let s = signup_at(&w, rng, 1_000, "ada@example.com", "password-1");
    for _ in 0..3 {
        assert_eq!(
            code(change(&w, rng, 1_001, &s.access_token, "wrong-guess", "password-2")),
            "invalid_current_password"
        );
    }
    assert_eq!(code(change(&w, rng, 1_002, &s.access_token, "password-1", "password-2")), "rate_limited");
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!((&ev["endpoint"], &ev["key_type"], &ev["limit"]), (&"login".into(), &"email".into(), &3.into()));
    // The login's own counter: a login for the address waits too.
    assert_eq!(code(login_at(&w, rng, 1_003, "ada@example.com", "password-1")), "rate_limited");
}
