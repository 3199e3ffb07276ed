//! Rate limits and the login back-off, through the flows.

use portcullis::core::error::Error;
use portcullis::core::flows::account::LoginRequest;
use portcullis::core::flows::{AuthResponse, EmailRequest};
use portcullis::core::rate_limit::{LoginRecord, LOGIN_IN_FLIGHT_SECS, LOGIN_WAIT_STEPS};
use portcullis::core::time::UnixTime;

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::json;

use crate::support::{block_on, code, grant, join_all, login_at, signup_at, Done, TestRandom, World};

fn magic_link(w: &World, rng: &mut TestRandom, now: i64, email: &str, ip: Option<&str>) -> Result<(), Error> {
    let (deps, mut meta) = w.at(now);
    meta.ip = ip.map(str::to_string);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: email.into(), locale: None })).map(|_| ())
}

#[test]
fn the_email_limit_refuses_with_retry_after_and_reports_once_per_window() {
    let w = World::new(&[("RATE_LIMITS", r#"{"magic-link": {"email": "3/60s", "ip": "off"}}"#)]);
    let mut rng = TestRandom(1);
    for _ in 0..3 {
        magic_link(&w, &mut rng, 1_000, "a@example.com", Some("198.51.100.1")).unwrap();
    }
    let err = magic_link(&w, &mut rng, 1_010, "A@Example.com", Some("198.51.100.2")).unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 50 });
    let p = err.problem();
    assert_eq!((p.status, p.code, p.retry_after_secs), (429, "rate_limited", Some(50)));
    magic_link(&w, &mut rng, 1_020, "a@example.com", None).unwrap_err();
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!(ev["endpoint"], "magic-link");
    assert_eq!(ev["key_type"], "email");
    assert_eq!(ev["limit"], 3);
    assert_eq!(ev["email"], "a@example.com");
    assert_eq!(ev["ip_address"], "198.51.100.2");
    // Another address is not affected; the window ends 60 s after it opened.
    magic_link(&w, &mut rng, 1_020, "b@example.com", None).unwrap();
    magic_link(&w, &mut rng, 1_060, "a@example.com", None).unwrap();
}

#[test]
fn one_64_adds_at_most_its_own_budget_to_its_48() {
    // Defaults for magic-link: 20 an hour per /64, 80 per /48; distinct
    // addresses, so their limit of 5 plays no part.
    let w = World::new(&[]);
    let rng = &mut TestRandom(3);
    let mut sent = 0;
    let mut send = |ip: &str| {
        sent += 1;
        magic_link(&w, rng, 1_000 + sent, &format!("x{sent}@example.com"), Some(ip))
    };
    // One /64 sends far more than its budget: 20 through, the rest refused.
    let outcomes: Vec<bool> = (0..200).map(|_| send("2001:db8:1:1::1").is_ok()).collect();
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 20);
    // Its refused requests did not charge the /48: three neighbouring /64s
    // still have their whole budget each (20 + 3 × 20 = the /48's 80) ...
    for net in 2..=4 {
        for i in 0..20 {
            let ip = format!("2001:db8:1:{net}::{i}");
            assert!(send(&ip).is_ok(), "{ip} refused: {:?}", w.events.all_of("rate_limit_exceeded"));
        }
    }
    // ... and then the /48 is full: a fifth /64 is refused by it.
    assert!(matches!(send("2001:db8:1:5::1"), Err(Error::RateLimited { .. })));
    let kinds: Vec<String> =
        w.events.all_of("rate_limit_exceeded").iter().map(|e| e["key_type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["ip", "ipv6_48"]);
    // Another /48 is not affected.
    send("2001:db8:2:1::1").unwrap();
}

#[test]
fn requests_without_a_client_ip_share_one_bucket() {
    let w = World::new(&[("RATE_LIMITS", r#"{"otp": {"ip": "2/1h", "email": "off"}}"#)]);
    let mut rng = TestRandom(2);
    let (deps, mut meta) = w.at(1_000);
    meta.ip = None;
    for (i, expect_ok) in [(0, true), (1, true), (2, false)] {
        let r = block_on(deps.request_otp(
            &meta,
            &mut rng,
            EmailRequest { email: format!("u{i}@example.com"), locale: None },
        ));
        assert_eq!(r.is_ok(), expect_ok, "request {i}");
    }
    assert_eq!(w.events.last_of("rate_limit_exceeded")["key_type"], "ip");
    assert_eq!(w.events.last_of("rate_limit_exceeded")["ip_address"], serde_json::Value::Null);
}

#[test]
fn unknown_and_known_emails_are_counted_alike() {
    let w = World::new(&[("RATE_LIMITS", r#"{"password/forgot": {"email": "2/1h", "ip": "off"}}"#)]);
    let mut rng = TestRandom(3);
    signup_at(&w, &mut rng, 1_000, "known@example.com", "correct horse battery");
    for email in ["known@example.com", "unknown@example.com"] {
        let (deps, meta) = w.at(1_001);
        let mut answers = Vec::new();
        for _ in 0..3 {
            let r = block_on(deps.forgot_password(&meta, &mut rng, EmailRequest { email: email.into(), locale: None }));
            answers.push(r.map(|a| a.message).map_err(|e| e.problem().code));
        }
        assert_eq!(answers[2], Err("rate_limited"), "{email}");
        assert!(answers[0].is_ok() && answers[1].is_ok());
    }
}

#[test]
fn consecutive_login_failures_back_off_until_a_success() {
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#)]);
    let mut rng = TestRandom(4);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "correct horse battery");
    for i in 0..5 {
        assert_eq!(
            code(login_at(&w, &mut rng, 1_000 + i, "ada@example.com", "wrong password!")),
            "invalid_credentials"
        );
    }
    // Five failures are free; the sixth try must wait two seconds, right password or not.
    let err = login_at(&w, &mut rng, 1_004, "ada@example.com", "correct horse battery").unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 2 });
    assert_eq!(
        login_at(&w, &mut rng, 1_005, "ada@example.com", "wrong again!!").unwrap_err(),
        Error::RateLimited { retry_after_secs: 1 }
    );
    // The first refusal of a back-off is reported, the rest of it is not.
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!((&ev["endpoint"], &ev["key_type"], &ev["limit"]), (&"login".into(), &"email".into(), &5.into()));
    assert_eq!(ev["email"], "ada@example.com");
    assert_eq!(code(login_at(&w, &mut rng, 1_006, "ada@example.com", "wrong again!!")), "invalid_credentials");
    // Six failures: four seconds; a new back-off, reported again.
    assert_eq!(
        login_at(&w, &mut rng, 1_007, "ada@example.com", "x-x-x-x-x").unwrap_err(),
        Error::RateLimited { retry_after_secs: 3 }
    );
    login_at(&w, &mut rng, 1_008, "ada@example.com", "x-x-x-x-x").unwrap_err();
    assert_eq!(w.events.count("rate_limit_exceeded"), 2);
    login_at(&w, &mut rng, 1_010, "ada@example.com", "correct horse battery").unwrap();
    // A success clears the record.
    assert_eq!(w.store.login_failures.borrow().get("ada@example.com"), None);
    for i in 0..5 {
        assert_eq!(
            code(login_at(&w, &mut rng, 1_100 + i, "ada@example.com", "wrong password!")),
            "invalid_credentials"
        );
    }
}

#[test]
fn unknown_accounts_back_off_exactly_like_known_ones() {
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#)]);
    let mut rng = TestRandom(5);
    signup_at(&w, &mut rng, 1_000, "known@example.com", "correct horse battery");
    for email in ["known@example.com", "nobody@example.com"] {
        let answers: Vec<&str> =
            (0..7).map(|_| code(login_at(&w, &mut rng, 2_000, email, "wrong password!"))).collect();
        assert_eq!(answers, [vec!["invalid_credentials"; 5], vec!["rate_limited"; 2]].concat(), "{email}");
    }
}

#[test]
fn the_backoff_is_capped_and_forgotten_after_a_day() {
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#), ("LOGIN_BACKOFF", "2/10/60")]);
    let mut rng = TestRandom(6);
    let mut now = 10_000;
    for _ in 0..8 {
        assert_eq!(code(login_at(&w, &mut rng, now, "x@example.com", "wrong password!")), "invalid_credentials");
        now += 61;
    }
    // 8 failures: 10 s doubled six times, capped at 60 s.
    assert_eq!(
        login_at(&w, &mut rng, now - 31, "x@example.com", "pw-pw-pw-pw").unwrap_err(),
        Error::RateLimited { retry_after_secs: 30 }
    );
    let record = w.store.login_failures.borrow()["x@example.com"];
    assert_eq!(record, LoginRecord { failures: 8, last_failed_at: UnixTime(now - 61), in_flight: 0 });
    now += 86_400;
    assert_eq!(code(login_at(&w, &mut rng, now, "x@example.com", "wrong password!")), "invalid_credentials");
    assert_eq!(w.store.login_failures.borrow()["x@example.com"].failures, 1);
}

/// Ten wrong-password logins for one account, all admitted (or not) before
/// any of them has its password checked — each next one starts while the
/// one before reads the account, after its admission, as concurrent
/// requests interleave: exactly the five free failures get a password
/// check, the other five wait as the sixth of a sequence does. (Each of
/// those five is refused while the five checks are in flight — suspended
/// below it here, so none ends — and waits for them in vain, as long as a
/// refused login may.)
#[test]
fn interleaved_logins_get_no_more_password_checks_than_the_free_failures() {
    let w = Rc::new(World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#)]));
    let mut rng = TestRandom(8);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "correct horse battery");
    let answers = Rc::new(RefCell::new(Vec::new()));
    interleaved_logins(&w, &answers, 10)();
    let answers = answers.take();
    assert_eq!(answers.len(), 10);
    let checked = answers.iter().filter(|a| **a == Err(Error::InvalidCredentials)).count();
    let waiting = answers.iter().filter(|a| **a == Err(Error::RateLimited { retry_after_secs: 2 })).count();
    assert_eq!((checked, waiting), (5, 5), "{answers:?}");
    let record = w.store.login_failures.borrow()["ada@example.com"];
    assert_eq!(record, LoginRecord { failures: 5, last_failed_at: UnixTime(1_001), in_flight: 0 });
    assert_eq!(w.pause.pauses.get(), 5 * LOGIN_WAIT_STEPS);
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
}

/// A login that, once its account read starts the next (`left - 1` more),
/// records its answer; a refused one, which reads nothing, starts the next
/// itself.
fn interleaved_logins(w: &Rc<World>, answers: &Rc<RefCell<Vec<Result<(), Error>>>>, left: u64) -> Box<dyn FnOnce()> {
    let (w, answers) = (Rc::clone(w), Rc::clone(answers));
    Box::new(move || {
        if left == 0 {
            return;
        }
        *w.store.after_user_read.borrow_mut() = Some(interleaved_logins(&w, &answers, left - 1));
        let r = login_at(&w, &mut TestRandom(100 + left), 1_001, "ada@example.com", "wrong password!");
        answers.borrow_mut().push(r.map(|_| ()));
        let next = w.store.after_user_read.borrow_mut().take();
        if let Some(next) = next {
            next();
        }
    })
}

/// One login for `email` at `now`, as a future, for [`join_all`].
async fn login_future(w: &World, seed: u64, now: i64, email: &str, password: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    let req = LoginRequest { email: email.into(), password: password.into() };
    deps.login(&meta, &mut TestRandom(seed), req).await.done()
}

/// Eight logins with the right password at once (several tabs or devices):
/// the first five are admitted and checked, the other three are refused
/// while those are in flight — and wait for them instead of answering 429:
/// the first success clears the record, and all eight sign in.
#[test]
fn concurrent_logins_with_the_right_password_all_sign_in() {
    let w = World::new(&[]);
    signup_at(&w, &mut TestRandom(40), 1_000, "ada@example.com", "correct horse battery");
    w.store.give_way_on_user_read.set(true);
    let logins = (0..8).map(|i| login_future(&w, 400 + i, 1_001, "ada@example.com", "correct horse battery"));
    let answers = join_all(logins.collect());
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    // The three refused at first each waited once: the checks in flight ended.
    assert_eq!(w.pause.pauses.get(), 3);
    assert_eq!(w.events.count("login"), 8);
    assert_eq!(w.events.count("rate_limit_exceeded"), 0);
    assert!(w.store.login_failures.borrow().get("ada@example.com").is_none());
}

/// Ten wrong passwords at once, interleaved between admission and check:
/// exactly the five free ones are checked; the other five wait while those
/// are in flight, are refused again once they have failed, and get 429 —
/// one `rate_limit_exceeded` for the back-off, as without the wait.
#[test]
fn concurrent_wrong_guesses_get_exactly_the_free_checks_even_when_they_wait() {
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#)]);
    signup_at(&w, &mut TestRandom(41), 1_000, "ada@example.com", "correct horse battery");
    w.store.give_way_on_user_read.set(true);
    let guesses = (0..10).map(|i| login_future(&w, 410 + i, 1_001, "ada@example.com", "wrong password!"));
    let answers = join_all(guesses.collect());
    let checked = answers.iter().filter(|a| matches!(a, Err(Error::InvalidCredentials))).count();
    let refused = answers.iter().filter(|a| matches!(a, Err(Error::RateLimited { retry_after_secs: 2 }))).count();
    assert_eq!((checked, refused), (5, 5), "{answers:?}");
    assert_eq!(w.events.count("login_failed"), 5);
    assert_eq!(w.pause.pauses.get(), 5, "each refused guess waited once, for the checks in flight");
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
    let record = w.store.login_failures.borrow()["ada@example.com"];
    assert_eq!(record, LoginRecord { failures: 5, last_failed_at: UnixTime(1_001), in_flight: 0 });
}

/// A request that died between admission and check leaves its mark in
/// flight: a login refused within LOGIN_IN_FLIGHT_SECS of the last
/// admission waits for it, a bounded while, then gets its 429; later, the
/// mark is not waited for at all.
#[test]
fn a_mark_left_in_flight_is_waited_for_briefly_and_then_not_at_all() {
    let w = World::new(&[("LOGIN_BACKOFF", "5/30/900")]);
    signup_at(&w, &mut TestRandom(42), 1_000, "ada@example.com", "correct horse battery");
    let died = LoginRecord { failures: 5, last_failed_at: UnixTime(1_000), in_flight: 2 };
    w.store.login_failures.borrow_mut().insert("ada@example.com".into(), died);
    let err = login_at(&w, &mut TestRandom(43), 1_002, "ada@example.com", "correct horse battery").unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 28 });
    assert_eq!(w.pause.pauses.get(), LOGIN_WAIT_STEPS);
    let at = 1_000 + LOGIN_IN_FLIGHT_SECS;
    let err = login_at(&w, &mut TestRandom(44), at, "ada@example.com", "correct horse battery").unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 27 });
    assert_eq!(w.pause.pauses.get(), LOGIN_WAIT_STEPS, "a stale mark is not waited for");
    assert_eq!(w.store.login_failures.borrow()["ada@example.com"], died, "refusals write nothing");
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
}

/// A mark left by a request that died does not outlive the next admission
/// made after it is stale: that admission starts the marks over at its own,
/// so a refused login waits only for it, not for the dead one too.
#[test]
fn a_stale_mark_is_not_carried_by_later_admissions() {
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#)]);
    signup_at(&w, &mut TestRandom(48), 900, "ada@example.com", "correct horse battery");
    let dead = LoginRecord { failures: 7, last_failed_at: UnixTime(1_000), in_flight: 1 };
    w.store.login_failures.borrow_mut().insert("ada@example.com".into(), dead);
    // An hour later (within the day), a wrong guess is admitted and settles.
    let t = 1_000 + 3_600;
    assert_eq!(code(login_at(&w, &mut TestRandom(49), t, "ada@example.com", "wrong password!")), "invalid_credentials");
    assert_eq!(w.store.login_failures.borrow()["ada@example.com"].in_flight, 0, "the dead mark is gone");
    // The owner a second later: refused by the back-off, without waiting.
    let err = login_at(&w, &mut TestRandom(50), t + 1, "ada@example.com", "correct horse battery").unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }));
    assert_eq!(w.pause.pauses.get(), 0, "nothing is in flight");
}

/// A waiting login is decided at the time its pause ends: once the
/// back-off's delay has passed meanwhile, it is admitted, as one arriving
/// then would be.
#[test]
fn a_waiting_login_is_admitted_when_the_delay_ends_meanwhile() {
    let w = World::new(&[]);
    signup_at(&w, &mut TestRandom(45), 1_000, "ada@example.com", "correct horse battery");
    let checking = LoginRecord { failures: 5, last_failed_at: UnixTime(1_000), in_flight: 1 };
    w.store.login_failures.borrow_mut().insert("ada@example.com".into(), checking);
    w.pause.moving.set(true);
    login_at(&w, &mut TestRandom(46), 1_001, "ada@example.com", "correct horse battery").unwrap();
    // 2 s after the fifth failure: five pauses of 200 ms from 1 s after it.
    assert_eq!(w.pause.pauses.get(), 5);
    assert_eq!(w.events.count("rate_limit_exceeded"), 0);
}

/// Every end of an admitted attempt but the right password takes it out of
/// flight, its failure counted: a wrong password, an unknown address, an
/// account without a password, an over-long password. The right password
/// clears the record — a banned account's too (it proved the password).
#[test]
fn every_failed_check_is_no_longer_in_flight_and_the_right_password_clears() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(47);
    signup_at(&w, rng, 1_000, "ada@example.com", "correct horse battery");
    signup_at(&w, rng, 1_000, "nopass@example.com", "correct horse battery");
    signup_at(&w, rng, 1_000, "banned@example.com", "correct horse battery");
    for u in w.store.users.borrow_mut().iter_mut() {
        match u.email.as_str() {
            "nopass@example.com" => u.password_hash = None,
            "banned@example.com" => u.banned = true,
            _ => {}
        }
    }
    let long = "x".repeat(200);
    let failed = [
        ("ada@example.com", "wrong password!", "invalid_password"),
        ("nobody@example.com", "correct horse battery", "user_not_found"),
        ("nopass@example.com", "correct horse battery", "no_password"),
        ("ada@example.com", long.as_str(), "password_too_long"),
    ];
    for (i, (email, password, reason)) in failed.into_iter().enumerate() {
        assert_eq!(code(login_at(&w, rng, 1_001, email, password)), "invalid_credentials", "{reason}");
        assert_eq!(w.events.last_of("login_failed")["reason"], reason);
        let record = w.store.login_failures.borrow()[email];
        let failures = if email == "ada@example.com" { i as u32 / 3 + 1 } else { 1 };
        assert_eq!(record, LoginRecord { failures, last_failed_at: UnixTime(1_001), in_flight: 0 }, "{reason}");
    }
    assert_eq!(code(login_at(&w, rng, 1_001, "banned@example.com", "correct horse battery")), "account_banned");
    assert!(w.store.login_failures.borrow().get("banned@example.com").is_none());
    login_at(&w, rng, 1_001, "ada@example.com", "correct horse battery").unwrap();
    assert!(w.store.login_failures.borrow().get("ada@example.com").is_none());
    assert_eq!(w.pause.pauses.get(), 0);
}

/// Settling is best effort: when its write fails, the wrong password is
/// still answered 401, and the failure reaches the log.
#[test]
fn a_failed_settlement_is_reported_and_the_answer_stands() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(48);
    signup_at(&w, rng, 1_000, "ada@example.com", "correct horse battery");
    w.store.fail_settle.set(true);
    assert_eq!(code(login_at(&w, rng, 1_001, "ada@example.com", "wrong password!")), "invalid_credentials");
    assert_eq!(w.store.login_failures.borrow()["ada@example.com"].in_flight, 1);
    let reported = w.events.reported.borrow();
    assert!(reported.iter().any(|r| r.starts_with("login: settling a failed attempt failed")), "{reported:?}");
}

#[test]
fn without_a_backoff_logins_are_neither_counted_nor_refused() {
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#), ("LOGIN_BACKOFF", "off")]);
    let mut rng = TestRandom(9);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "correct horse battery");
    for _ in 0..10 {
        assert_eq!(code(login_at(&w, &mut rng, 1_001, "ada@example.com", "wrong password!")), "invalid_credentials");
    }
    login_at(&w, &mut rng, 1_001, "ada@example.com", "correct horse battery").unwrap();
    assert!(w.store.login_failures.borrow().is_empty());
}

#[test]
fn a_broken_counter_store_fails_closed() {
    let w = World::new(&[]);
    let mut rng = TestRandom(7);
    *w.store.fail.borrow_mut() = true;
    let err = login_at(&w, &mut rng, 1_000, "a@example.com", "whatever-password").unwrap_err();
    assert_eq!(err.problem().status, 503);
}

fn refresh(w: &World, rng: &mut TestRandom, now: i64, token: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.refresh(&meta, rng, Some(token)))
}

#[test]
fn refresh_is_limited_per_session_and_a_refused_refresh_keeps_its_token() {
    let w = World::new(&[("RATE_LIMITS", r#"{"refresh": {"session": "3/1m"}}"#)]);
    let mut rng = TestRandom(20);
    let first = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let other = login_at(&w, &mut rng, 1_000, "ada@example.com", "password-1").unwrap();
    let mut token = first.refresh_token.clone();
    for i in 0..3 {
        token = refresh(&w, &mut rng, 1_001 + i, &token).unwrap().refresh_token;
    }
    let err = refresh(&w, &mut rng, 1_010, &token).unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 51 });
    assert_eq!((err.problem().status, err.problem().code), (429, "rate_limited"));
    assert_eq!(code(refresh(&w, &mut rng, 1_020, &token)), "rate_limited");
    // One event per window, naming the session's account.
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!(
        (&ev["endpoint"], &ev["key_type"], &ev["limit"], &ev["email"], &ev["ip_address"]),
        (&json!("refresh"), &json!("session"), &json!(3), &json!("ada@example.com"), &json!("203.0.113.7"))
    );
    assert_eq!(w.events.count("token_refreshed"), 3, "a refused refresh writes no token_refreshed");
    // The other session of the same account has its own budget.
    refresh(&w, &mut rng, 1_020, &other.refresh_token).unwrap();
    // The refused token was not rotated away: after the window it refreshes,
    // and the session lives on (no reuse).
    let next = refresh(&w, &mut rng, 1_061, &token).unwrap();
    refresh(&w, &mut rng, 1_062, &next.refresh_token).unwrap();
}

#[test]
fn the_default_refresh_limit_lets_an_honest_client_through_and_stops_a_loop() {
    let w = World::new(&[]);
    let mut rng = TestRandom(21);
    let auth = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    // A refresh a minute (far more often than once per ACCESS_TTL), for an hour.
    let mut token = auth.refresh_token;
    for minute in 0..60 {
        token = refresh(&w, &mut rng, 1_000 + 60 * minute, &token).unwrap().refresh_token;
    }
    // A loop: ten a minute get through, the eleventh does not.
    let looped: Vec<bool> = (0..11)
        .map(|_| match refresh(&w, &mut rng, 5_000, &token) {
            Ok(a) => {
                token = a.refresh_token;
                true
            }
            Err(_) => false,
        })
        .collect();
    assert_eq!(looped.iter().filter(|ok| **ok).count(), 10);
    assert!(!looped[10]);
}

#[test]
fn refresh_may_also_be_limited_per_ip() {
    let w = World::new(&[("RATE_LIMITS", r#"{"refresh": {"ip": "2/1m"}}"#)]);
    let mut rng = TestRandom(22);
    let a = signup_at(&w, &mut rng, 1_000, "a@example.com", "password-1");
    let b = signup_at(&w, &mut rng, 1_000, "b@example.com", "password-1");
    let a = refresh(&w, &mut rng, 1_001, &a.refresh_token).unwrap();
    refresh(&w, &mut rng, 1_001, &b.refresh_token).unwrap();
    assert_eq!(code(refresh(&w, &mut rng, 1_002, &a.refresh_token)), "rate_limited", "two a minute from one IP");
    // Counted before the token is even looked at: made-up ones count too.
    let (deps, mut meta) = w.at(1_002);
    meta.ip = Some("198.51.100.9".into());
    let unknown = "A".repeat(43);
    assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(&unknown)))), "invalid_refresh_token");
    assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(&unknown)))), "invalid_refresh_token");
    assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(&a.refresh_token)))), "rate_limited");
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!((&ev["endpoint"], &ev["key_type"]), (&json!("refresh"), &json!("ip")));
}

#[test]
fn the_audit_listings_are_limited_per_caller() {
    let w = World::new(&[("RATE_LIMITS", r#"{"audit": {"user": "2/1m"}}"#)]);
    let mut rng = TestRandom(23);
    signup_at(&w, &mut rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let root = login_at(&w, &mut rng, 1_000, "root@example.com", "password-1").unwrap();
    let ada = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let bob = signup_at(&w, &mut rng, 1_000, "bob@example.com", "password-1");
    let own = |rng: &mut TestRandom, who: &AuthResponse, q: &str| {
        let (deps, meta) = w.at(1_010);
        block_on(deps.own_audit(&meta, rng, Some(&who.access_token), Some(q)))
    };
    own(&mut rng, &ada, "").unwrap();
    own(&mut rng, &ada, "type=login").unwrap();
    let err = own(&mut rng, &ada, "").unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 60 });
    // Counted before the query is read: a bad one is refused by the limit too.
    assert_eq!(code(own(&mut rng, &ada, "limit=0")), "rate_limited");
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!(
        (&ev["endpoint"], &ev["key_type"], &ev["limit"], &ev["email"]),
        (&json!("audit"), &json!("user"), &json!(2), &json!("ada@example.com"))
    );
    // Another caller has their own budget, in either view.
    own(&mut rng, &bob, "").unwrap();
    let (deps, meta) = w.at(1_010);
    let admin = block_on(deps.require_admin(&meta, Some(&root.access_token))).unwrap();
    block_on(deps.admin_audit(&meta, &mut rng, &admin, None)).unwrap();
    block_on(deps.admin_audit(&meta, &mut rng, &admin, Some("type=login"))).unwrap();
    assert_eq!(code(block_on(deps.admin_audit(&meta, &mut rng, &admin, None))), "rate_limited");
    // Unauthenticated requests are refused before anything is counted.
    assert_eq!(code(own(&mut rng, &AuthResponse { access_token: "x".into(), ..bob.clone() }, "")), "invalid_token");
}

fn verify_request(w: &World, rng: &mut TestRandom, now: i64, access: &str, ip: &str) -> Result<(), Error> {
    let (deps, mut meta) = w.at(now);
    meta.ip = Some(ip.into());
    block_on(deps.request_email_verification(&meta, rng, Some(access))).map(|_| ())
}

#[test]
fn verification_links_are_limited_per_address_before_a_token_is_issued() {
    // Defaults: 5 an hour per address (20 per IP), as magic-link's.
    let w = World::new(&[]);
    let rng = &mut TestRandom(21);
    let s = signup_at(&w, rng, 1_000, "victim@example.com", "correct horse battery");
    for i in 0..5 {
        // From a new IP each time: the address's own limit stops it.
        verify_request(&w, rng, 1_001 + i, &s.access_token, &format!("198.51.100.{}", i + 1)).unwrap();
    }
    assert_eq!(w.events.count("email_verification_requested"), 5);
    let tokens = w.store.email_tokens.borrow().len();
    let err = verify_request(&w, rng, 1_010, &s.access_token, "198.51.100.9").unwrap_err();
    assert_eq!(err, Error::RateLimited { retry_after_secs: 3_591 });
    let p = err.problem();
    assert_eq!((p.status, p.code, p.retry_after_secs), (429, "rate_limited", Some(3_591)));
    // Nothing issued, nothing mailed; the refusal is reported once.
    assert_eq!(w.store.email_tokens.borrow().len(), tokens);
    assert_eq!(w.events.count("email_verification_requested"), 5);
    verify_request(&w, rng, 1_011, &s.access_token, "198.51.100.10").unwrap_err();
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!(
        ev,
        json!({"endpoint": "email/verify/request", "ip_address": "198.51.100.9", "email": "victim@example.com",
            "limit": 5, "key_type": "email"})
    );
    // The window ends an hour after it opened.
    let again = login_at(&w, rng, 4_601, "victim@example.com", "correct horse battery").unwrap();
    verify_request(&w, rng, 4_601, &again.access_token, "198.51.100.11").unwrap();
    assert_eq!(w.events.count("email_verification_requested"), 6);
}

#[test]
fn verification_links_are_limited_per_ip_across_accounts_and_configurable() {
    let w = World::new(&[("RATE_LIMITS", r#"{"email/verify/request": {"ip": "2/1h", "email": "off"}}"#)]);
    let rng = &mut TestRandom(22);
    let ip = "198.51.100.20";
    let answers: Vec<bool> = (0..3)
        .map(|i| {
            let s = signup_at(&w, rng, 1_000 + i, &format!("v{i}@example.com"), "correct horse battery");
            verify_request(&w, rng, 1_000 + i, &s.access_token, ip).is_ok()
        })
        .collect();
    assert_eq!(answers, [true, true, false]);
    assert_eq!(w.events.count("email_verification_requested"), 2);
    let ev = w.events.last_of("rate_limit_exceeded");
    assert_eq!(
        (&ev["endpoint"], &ev["key_type"], &ev["limit"]),
        (&"email/verify/request".into(), &"ip".into(), &2.into())
    );
    assert_eq!(ev["email"], "v2@example.com");
}

/// Ten requests for one account, each next one started right after the one
/// before has checked its session, as concurrent requests interleave: the
/// count is taken in one write per request, so exactly five links go out.
#[test]
fn interleaved_verification_requests_send_no_more_links_than_the_limit() {
    let w = Rc::new(World::new(&[]));
    let rng = &mut TestRandom(23);
    let s = signup_at(&w, rng, 1_000, "victim@example.com", "correct horse battery");
    let answers = Rc::new(RefCell::new(Vec::new()));
    interleaved_verify_requests(&w, &answers, &Rc::new(s.access_token), 10)();
    let answers = answers.take();
    assert_eq!(answers.len(), 10);
    let refused = answers.iter().filter(|a| matches!(a, Err(Error::RateLimited { .. }))).count();
    assert_eq!((answers.iter().filter(|a| a.is_ok()).count(), refused), (5, 5), "{answers:?}");
    assert_eq!(w.events.count("email_verification_requested"), 5);
    assert_eq!(w.events.count("rate_limit_exceeded"), 1);
}

fn interleaved_verify_requests(
    w: &Rc<World>,
    answers: &Rc<RefCell<Vec<Result<(), Error>>>>,
    access: &Rc<String>,
    left: u64,
) -> Box<dyn FnOnce()> {
    let (w, answers, access) = (Rc::clone(w), Rc::clone(answers), Rc::clone(access));
    Box::new(move || {
        if left == 0 {
            return;
        }
        *w.store.after_session_read.borrow_mut() = Some(interleaved_verify_requests(&w, &answers, &access, left - 1));
        let r = verify_request(&w, &mut TestRandom(200 + left), 1_001, &access, "198.51.100.30");
        answers.borrow_mut().push(r);
    })
}

/// A wrong guess whose check outlives LOGIN_IN_FLIGHT_SECS ends after a
/// newer admission started the marks over: it must not take back the newer
/// (right-password) attempt's mark, or a right-password login refused
/// meanwhile would stop waiting and get 429.
#[test]
fn a_slow_check_ending_after_the_marks_started_over_leaves_the_newer_mark() {
    use portcullis::core::ports::RateLimitStore;
    use portcullis::core::rate_limit::Backoff;
    use std::future::Future;
    use std::pin::Pin;
    let w = World::new(&[("RATE_LIMITS", r#"{"login": {"email": "off", "ip": "off"}}"#)]);
    signup_at(&w, &mut TestRandom(60), 900, "ada@example.com", "correct horse battery");
    let ada = "ada@example.com";
    let three = LoginRecord { failures: 3, last_failed_at: UnixTime(990), in_flight: 0 };
    w.store.login_failures.borrow_mut().insert(ada.into(), three);
    let b = Backoff::default();
    let forget = |t: i64| UnixTime(t - 86_400);
    // A (a wrong guess) admitted at 1000; its check is slow.
    assert_eq!(block_on(w.store.count_login_attempt(ada, &b, UnixTime(1_000), forget(1_000))).unwrap(), None);
    // B (the owner, right password) admitted at 1003, the fifth failure: the marks start over.
    assert_eq!(block_on(w.store.count_login_attempt(ada, &b, UnixTime(1_003), forget(1_003))).unwrap(), None);
    assert_eq!(w.store.login_failures.borrow()[ada].in_flight, 1);
    type F<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + 'a>>;
    let c: F = Box::pin(async { login_future(&w, 61, 1_003, ada, "correct horse battery").await.map(|_| ()) });
    // A's check ends (wrong): it takes back nothing, its mark is gone already.
    let a_ends: F = Box::pin(async {
        crate::support::give_way().await;
        w.store.settle_login_attempt(ada, UnixTime(1_000)).await.unwrap();
        Ok(())
    });
    // B's check ends a little later (right): it clears the record.
    let b_ends: F = Box::pin(async {
        for _ in 0..3 {
            crate::support::give_way().await;
        }
        w.store.clear_login_failures(ada).await.unwrap();
        Ok(())
    });
    let answers = join_all(vec![c, a_ends, b_ends]);
    assert!(answers[0].is_ok(), "C, the owner's concurrent login, was refused: {:?}", answers[0]);
}
