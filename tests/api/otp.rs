//! Email one-time codes: issuing, attempts, supersession, expiry, binding to the address.

use portcullis::core::error::Error;
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::{AuthResponse, EmailRequest};

use crate::support::{block_on, code, signup_at, Done, TestRandom, World};

fn request(w: &World, rng: &mut TestRandom, now: i64, email: &str) -> serde_json::Value {
    let (deps, meta) = w.at(now);
    serde_json::to_value(
        block_on(deps.request_otp(&meta, rng, EmailRequest { email: email.into(), locale: None })).unwrap(),
    )
    .unwrap()
}

fn verify(w: &World, rng: &mut TestRandom, now: i64, email: &str, c: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.verify_otp(&meta, rng, OtpVerifyRequest { email: email.into(), code: c.into(), locale: None })).done()
}

fn last_code(w: &World) -> String {
    w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string()
}

/// A six-digit code that is not `c`.
fn wrong(c: &str) -> String {
    format!("{:06}", (c.parse::<u32>().unwrap() + 1) % 1_000_000)
}

#[test]
fn a_six_digit_code_is_emailed_and_stored_only_as_a_keyed_hash() {
    let w = World::new(&[]);
    let mut rng = TestRandom(1);
    let u = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let ev = w.events.last_of("email_otp_requested");
    assert_eq!(ev["user_id"], u.user.id.as_str());
    let c = ev["code"].as_str().unwrap();
    assert!(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()));
    let stored = w.store.email_tokens.borrow();
    let t = &stored[0].0;
    assert_eq!(t.expires_at.0, 1_001 + 600);
    let h = t.code_hash.as_deref().unwrap();
    assert!(!h.contains(c) && !t.hash.contains(c));
}

#[test]
fn the_right_code_signs_in_once() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let c = last_code(&w);
    let r = verify(&w, &mut rng, 1_002, " Ada@Example.com ", &c).unwrap();
    assert!(r.user.email_verified);
    let kinds = w.events.kinds();
    assert_eq!(&kinds[kinds.len() - 2..], ["email_otp_login", "login"]);
    assert_eq!(w.events.last_of("login")["provider"], "email_otp");
    assert_eq!(code(verify(&w, &mut rng, 1_003, "ada@example.com", &c)), "invalid_code");
}

#[test]
fn five_wrong_codes_kill_the_code_even_for_the_right_digits() {
    let w = World::new(&[]);
    let mut rng = TestRandom(3);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let c = last_code(&w);
    for _ in 0..5 {
        assert_eq!(code(verify(&w, &mut rng, 1_002, "ada@example.com", &wrong(&c))), "invalid_code");
    }
    assert_eq!(w.events.count("login_failed"), 5);
    assert_eq!(code(verify(&w, &mut rng, 1_002, "ada@example.com", &c)), "invalid_code");
    assert_eq!(w.store.email_tokens.borrow()[0].0.attempts, 5, "attempts stop counting at the limit");
}

#[test]
fn four_wrong_codes_still_leave_the_right_one_usable() {
    let w = World::new(&[]);
    let mut rng = TestRandom(4);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let c = last_code(&w);
    for _ in 0..4 {
        assert!(verify(&w, &mut rng, 1_002, "ada@example.com", &wrong(&c)).is_err());
    }
    assert!(verify(&w, &mut rng, 1_002, "ada@example.com", &c).is_ok());
}

#[test]
fn a_code_is_only_valid_for_the_address_it_was_sent_to() {
    let w = World::new(&[]);
    let mut rng = TestRandom(5);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    signup_at(&w, &mut rng, 1_000, "bob@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let ada = last_code(&w);
    request(&w, &mut rng, 1_001, "bob@example.com");
    let bob = last_code(&w);
    if ada != bob {
        assert_eq!(code(verify(&w, &mut rng, 1_002, "bob@example.com", &ada)), "invalid_code");
    }
    assert_eq!(verify(&w, &mut rng, 1_002, "ada@example.com", &ada).unwrap().user.email, "ada@example.com");
    assert_eq!(verify(&w, &mut rng, 1_002, "bob@example.com", &bob).unwrap().user.email, "bob@example.com");
}

#[test]
fn a_new_code_supersedes_the_old_one() {
    let w = World::new(&[]);
    let mut rng = TestRandom(6);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let old = last_code(&w);
    request(&w, &mut rng, 1_002, "ada@example.com");
    let new = last_code(&w);
    if old != new {
        assert_eq!(code(verify(&w, &mut rng, 1_003, "ada@example.com", &old)), "invalid_code");
    }
    assert!(verify(&w, &mut rng, 1_003, "ada@example.com", &new).is_ok());
}

#[test]
fn codes_expire_after_otp_ttl() {
    let w = World::new(&[("OTP_TTL", "60")]);
    let mut rng = TestRandom(7);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_000, "ada@example.com");
    assert_eq!(code(verify(&w, &mut rng, 1_060, "ada@example.com", &last_code(&w))), "invalid_code");
}

#[test]
fn unknown_addresses_look_exactly_like_wrong_codes() {
    let w = World::new(&[]);
    let mut rng = TestRandom(8);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let a = request(&w, &mut rng, 1_001, "ada@example.com");
    let b = request(&w, &mut rng, 1_001, "nobody@example.com");
    assert_eq!(a, b);
    assert_eq!(w.events.count("email_otp_requested"), 1);
    let c = last_code(&w);
    let unknown = verify(&w, &mut rng, 1_002, "nobody@example.com", &c).unwrap_err();
    let wrong_code = verify(&w, &mut rng, 1_002, "ada@example.com", &wrong(&c)).unwrap_err();
    assert_eq!(unknown.problem(), wrong_code.problem());
}

#[test]
fn malformed_codes_are_refused_without_counting() {
    let w = World::new(&[]);
    let mut rng = TestRandom(9);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    for bad in ["", "12345", "1234567", "abcdef", "12 456"] {
        assert_eq!(code(verify(&w, &mut rng, 1_002, "ada@example.com", bad)), "invalid_code", "{bad:?}");
    }
    assert_eq!(w.store.email_tokens.borrow()[0].0.attempts, 0);
    assert_eq!(code(verify(&w, &mut rng, 1_002, "not-an-email", "123456")), "invalid_email");
}

#[test]
fn banned_users_get_no_code_and_cannot_use_an_earlier_one() {
    let w = World::new(&[]);
    let mut rng = TestRandom(10);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let c = last_code(&w);
    w.store.users.borrow_mut()[0].banned = true;
    request(&w, &mut rng, 1_002, "ada@example.com");
    assert_eq!(w.events.count("email_otp_requested"), 1);
    assert_eq!(code(verify(&w, &mut rng, 1_003, "ada@example.com", &c)), "account_banned");
}

#[test]
fn passwordless_signup_by_code_creates_the_account() {
    let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true")]);
    let mut rng = TestRandom(11);
    request(&w, &mut rng, 1_000, "new@example.com");
    let r = verify(&w, &mut rng, 1_001, "new@example.com", &last_code(&w)).unwrap();
    assert!(r.user.email_verified);
    assert_eq!(w.events.last_of("user_created")["provider"], "email_otp");
}

#[test]
fn failed_codes_are_capped_per_address_per_day_across_new_codes() {
    let w = World::new(&[("OTP_MAX_FAILURES_PER_DAY", "6")]);
    let mut rng = TestRandom(12);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    // Four wrong guesses leave the first code alive; a new code starts its own
    // five attempts over, but not the day's count.
    request(&w, &mut rng, 1_001, "ada@example.com");
    let first = last_code(&w);
    for t in 0..4 {
        assert_eq!(code(verify(&w, &mut rng, 1_010 + t, "ada@example.com", &wrong(&first))), "invalid_code");
    }
    request(&w, &mut rng, 2_000, "ada@example.com");
    let second = last_code(&w);
    for t in 0..2 {
        assert_eq!(code(verify(&w, &mut rng, 2_010 + t, "ada@example.com", &wrong(&second))), "invalid_code");
    }
    // Six failures: from now until the day's window (opened at 1010) ends, even the right code is refused.
    let err = verify(&w, &mut rng, 2_020, "ada@example.com", &second).unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 1_010 + 86_400 - 2_020 });
    assert_eq!(err.problem().code, "rate_limited");
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!((&ev["endpoint"], &ev["key_type"], &ev["limit"]), (&"otp/verify".into(), &"account".into(), &6.into()));
    assert_eq!(ev["email"], "ada@example.com");
    request(&w, &mut rng, 5_000, "ada@example.com");
    let third = last_code(&w);
    assert_eq!(code(verify(&w, &mut rng, 5_001, "ada@example.com", &third)), "rate_limited");
    assert_eq!(w.events.count("rate_limit_exceeded"), 1, "one event per window");
    assert_eq!(w.events.count("email_otp_login"), 0);
    // A day after the window opened, codes work again.
    request(&w, &mut rng, 1_010 + 86_400, "ada@example.com");
    verify(&w, &mut rng, 1_010 + 86_400, "ada@example.com", &last_code(&w)).unwrap();
}

#[test]
fn right_and_malformed_codes_do_not_count_towards_the_daily_cap() {
    let w = World::new(&[
        ("OTP_MAX_FAILURES_PER_DAY", "2"),
        ("RATE_LIMITS", r#"{"otp": {"email": "off"}, "otp/verify": {"email": "off"}}"#),
    ]);
    let mut rng = TestRandom(13);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    for t in 0..5 {
        request(&w, &mut rng, 1_001 + t, "ada@example.com");
        verify(&w, &mut rng, 1_001 + t, "ada@example.com", &last_code(&w)).unwrap();
        assert_eq!(code(verify(&w, &mut rng, 1_001 + t, "ada@example.com", "12345")), "invalid_code");
    }
    request(&w, &mut rng, 1_100, "ada@example.com");
    let c = last_code(&w);
    assert_eq!(code(verify(&w, &mut rng, 1_100, "ada@example.com", &wrong(&c))), "invalid_code");
    verify(&w, &mut rng, 1_100, "ada@example.com", &c).unwrap();
    request(&w, &mut rng, 1_101, "ada@example.com");
    let c = last_code(&w);
    assert_eq!(code(verify(&w, &mut rng, 1_101, "ada@example.com", &wrong(&c))), "invalid_code");
    assert_eq!(code(verify(&w, &mut rng, 1_101, "ada@example.com", &c)), "rate_limited");
}

#[test]
fn unknown_addresses_reach_the_daily_cap_exactly_like_accounts() {
    let w = World::new(&[("OTP_MAX_FAILURES_PER_DAY", "3")]);
    let mut rng = TestRandom(14);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    request(&w, &mut rng, 1_001, "nobody@example.com");
    let c = last_code(&w);
    for email in ["ada@example.com", "nobody@example.com"] {
        let answers: Vec<_> =
            (0..5).map(|_| verify(&w, &mut rng, 1_002, email, &wrong(&c)).unwrap_err().problem()).collect();
        assert_eq!(
            answers.iter().map(|p| p.code).collect::<Vec<_>>(),
            [vec!["invalid_code"; 3], vec!["rate_limited"; 2]].concat()
        );
        assert_eq!(answers[3].retry_after_secs, Some(86_400));
        let ev = w.events.last_of("rate_limit_exceeded");
        assert_eq!((ev["email"].as_str(), ev["key_type"].as_str()), (Some(email), Some("account")));
    }
    assert_eq!(w.events.count("rate_limit_exceeded"), 2);
}

#[test]
fn the_daily_cap_can_be_switched_off() {
    let w = World::new(&[
        ("OTP_MAX_FAILURES_PER_DAY", "off"),
        ("RATE_LIMITS", r#"{"otp": {"email": "off"}, "otp/verify": {"email": "off", "ip": "off"}}"#),
    ]);
    let mut rng = TestRandom(15);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    for _ in 0..6 {
        request(&w, &mut rng, 1_001, "ada@example.com");
        let c = last_code(&w);
        for _ in 0..5 {
            assert_eq!(code(verify(&w, &mut rng, 1_002, "ada@example.com", &wrong(&c))), "invalid_code");
        }
    }
    request(&w, &mut rng, 1_003, "ada@example.com");
    verify(&w, &mut rng, 1_003, "ada@example.com", &last_code(&w)).unwrap();
}

/// Giving a right (or malformed) code's charged attempt back is best effort:
/// a refund that fails is reported for the log, and the right code still
/// signs in (its code is spent by then), the malformed one still gets 401.
#[test]
fn a_right_code_signs_in_even_when_giving_its_attempt_back_fails() {
    let w = World::new(&[]);
    let mut rng = TestRandom(30);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let c = last_code(&w);
    w.store.fail_unhit.set(true);
    assert_eq!(code(verify(&w, &mut rng, 1_002, "ada@example.com", "12345")), "invalid_code");
    let r = verify(&w, &mut rng, 1_003, "ada@example.com", &c).unwrap();
    assert_eq!(r.user.email, "ada@example.com");
    let reported = w.events.reported.borrow();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert!(
        reported.iter().all(|m| m.contains("giving back") && m.contains("injected refund failure")),
        "{reported:?}"
    );
}
