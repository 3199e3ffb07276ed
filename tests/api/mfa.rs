//! Strong authentication: TOTP enrolment, the second step on every sign-in
//! path, what the tokens say about how the user signed in, backup codes, the
//! `mfa_token`'s limits, turning TOTP off and an administrator's reset.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::account::LoginRequest;
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::mfa::{CodeRequest, MfaVerifyRequest, SecondStep};
use portcullis::core::flows::oauth::{CallbackOutcome, ExchangeRequest};
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::password::ResetRequest;
use portcullis::core::flows::{AuthResponse, EmailRequest, SignIn};
use portcullis::core::mfa::totp::{hotp, step_at, TotpSecret};
use portcullis::core::mfa::Method;
use portcullis::core::time::UnixTime;

use crate::oauth::{location_param, sign_in, FakeIdp, APP_VERIFIER, CLIENT, IDP};
use crate::support::{block_on, code, grant, refused, set_at, signup_at, user, Done, TestRandom, World};

const ADA: &str = "ada@example.com";
const PW: &str = "correct horse battery";
/// A start time in the middle of a 30-second step.
const T0: i64 = 1_700_000_010;

/// An account with TOTP on, as its holder left it.
struct Enabled {
    /// The session that turned it on.
    session: AuthResponse,
    secret: TotpSecret,
    backup_codes: Vec<String>,
}

fn secret_of(text: &str) -> TotpSecret {
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, text).unwrap();
    TotpSecret::from_bytes(bytes.try_into().unwrap())
}

/// The code of `secret` at `now`.
fn totp(secret: &TotpSecret, now: i64) -> String {
    secret.code_at(step_at(UnixTime(now)))
}

fn with_code(code: &str) -> CodeRequest {
    CodeRequest { code: Some(code.into()), backup_code: None }
}

/// Signs `email` up at `now`, enrols TOTP and confirms it with the current code.
fn enable(w: &World, rng: &mut TestRandom, now: i64, email: &str) -> Enabled {
    let session = signup_at(w, rng, now, email, PW);
    let (deps, meta) = w.at(now);
    let enrolment = block_on(deps.enroll_totp(&meta, rng, Some(&session.access_token))).unwrap();
    let secret = secret_of(&enrolment.secret);
    let codes =
        block_on(deps.confirm_totp(&meta, rng, Some(&session.access_token), with_code(&totp(&secret, now)))).unwrap();
    Enabled { session, secret, backup_codes: codes.backup_codes }
}

fn login(w: &World, rng: &mut TestRandom, now: i64, email: &str) -> Result<SignIn, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.login(&meta, rng, LoginRequest { email: email.into(), password: PW.into() }))
}

fn second_step(r: Result<SignIn, Error>) -> SecondStep {
    match r.unwrap() {
        SignIn::SecondStep(s) => s,
        SignIn::Complete(a) => panic!("signed in without a second step: {:?}", a.user),
    }
}

fn verify(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    token: &str,
    code: Option<&str>,
    backup_code: Option<&str>,
) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    let req = MfaVerifyRequest {
        mfa_token: token.into(),
        code: code.map(str::to_string),
        backup_code: backup_code.map(str::to_string),
    };
    block_on(deps.verify_mfa(&meta, rng, req))
}

fn claims(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// A world whose limits let one account sign in and try codes many times a minute.
fn busy_world() -> World {
    World::new(&[("RATE_LIMITS", r#"{"login": {"email": "1000/1m"}, "mfa/verify": {"email": "1000/10m"}}"#)])
}

fn sessions(w: &World) -> usize {
    w.store.sessions.borrow().len()
}

#[test]
fn rfc_6238_appendix_b_sha1_codes_and_their_time_steps() {
    // The SHA-1 rows of RFC 6238 appendix B: 8 digits, key "12345678901234567890".
    let key = b"12345678901234567890";
    for (time, code) in [
        (59, 94_287_082),
        (1_111_111_109, 7_081_804),
        (1_111_111_111, 14_050_471),
        (1_234_567_890, 89_005_924),
        (2_000_000_000, 69_279_037),
        (20_000_000_000, 65_353_130),
    ] {
        assert_eq!(hotp(key, step_at(UnixTime(time)), 8), code, "at {time}");
        let six = format!("{:06}", code % 1_000_000);
        assert_eq!(TotpSecret::from_bytes(*key).matching_step(&six, UnixTime(time)), Some(step_at(UnixTime(time))));
    }
}

#[test]
fn only_a_recent_sign_in_turns_totp_on_so_a_stolen_session_cannot_lock_the_owner_out() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(40);
    let stolen = signup_at(&w, rng, T0, ADA, PW);
    // Refreshing keeps the sign-in's time: a stolen session stays as old as it is.
    let later = T0 + 301;
    let (deps, meta) = w.at(later);
    let refreshed = block_on(deps.refresh(&meta, rng, Some(&stolen.refresh_token))).unwrap();
    for token in [&stolen.access_token, &refreshed.access_token] {
        let (deps, meta) = w.at(later);
        let e = block_on(deps.enroll_totp(&meta, rng, Some(token))).unwrap_err();
        assert_eq!((e.problem().status, e.problem().code), (403, "reauthentication_required"));
    }
    let (deps, meta) = w.at(later);
    assert_eq!(
        code(block_on(deps.confirm_totp(&meta, rng, Some(&refreshed.access_token), with_code("123456")))),
        "mfa_not_enrolled"
    );
    assert!(!block_on(deps.factors_view(&user(&w, ADA).id)).unwrap().totp);
    // Within five minutes of signing in (at the limit included), it can.
    let fresh = login(&w, rng, later - 300, ADA).done().unwrap();
    let (deps, meta) = w.at(later);
    block_on(deps.enroll_totp(&meta, rng, Some(&fresh.access_token))).unwrap();
}

#[test]
fn totp_is_on_only_once_confirmed_with_a_code_and_then_ends_the_other_sessions() {
    let w = World::new(&[("UI_NAME", "Acme: Cloud")]);
    let rng = &mut TestRandom(1);
    let first = signup_at(&w, rng, T0, ADA, PW);
    let other = login(&w, rng, T0, ADA).done().unwrap();
    let (deps, meta) = w.at(T0);
    let e = block_on(deps.enroll_totp(&meta, rng, Some(&first.access_token))).unwrap();
    assert_eq!(e.secret.len(), 32, "160 bits in base32");
    assert_eq!(
        e.otpauth_uri,
        format!(
            "otpauth://totp/Acme%20%20Cloud:ada%40example.com?secret={}&issuer=Acme%20%20Cloud&algorithm=SHA1&digits=6&period=30",
            e.secret
        )
    );
    let secret = secret_of(&e.secret);
    // Enrolled, not on: signing in needs no second step yet.
    assert!(matches!(login(&w, rng, T0 + 1, ADA).unwrap(), SignIn::Complete(_)));
    assert!(!block_on(deps.factors_view(&first.user.id)).unwrap().totp);
    // A wrong code is refused and reported.
    let wrong = format!("{:06}", (totp(&secret, T0).parse::<u32>().unwrap() + 1) % 1_000_000);
    let r = block_on(deps.confirm_totp(&meta, rng, Some(&first.access_token), with_code(&wrong)));
    assert_eq!(code(r), "invalid_code");
    assert_eq!(
        w.events.last_of("mfa_failed"),
        json!({"user_id": first.user.id, "method": "totp", "ip_address": "203.0.113.7"})
    );
    let codes =
        block_on(deps.confirm_totp(&meta, rng, Some(&first.access_token), with_code(&totp(&secret, T0)))).unwrap();
    assert_eq!(codes.backup_codes.len(), 10);
    assert!(codes.backup_codes.iter().all(|c| c.len() == 11 && &c[5..6] == "-"));
    assert_eq!(w.events.last_of("mfa_enabled"), json!({"user_id": first.user.id, "method": "totp"}));
    assert_eq!(
        w.events.last_of("session_revoked"),
        json!({"user_id": first.user.id, "session_id": null, "revoke_all": true})
    );
    let view = block_on(deps.factors_view(&first.user.id)).unwrap();
    assert_eq!((view.totp, view.backup_codes_left), (true, 10));
    // The sessions signed in with one factor are over; the one that turned it on goes on.
    let (deps, meta) = w.at(T0 + 2);
    assert_eq!(
        block_on(deps.me(&meta, Some(&other.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
    assert!(block_on(deps.me(&meta, Some(&first.access_token))).is_ok());
    let set = set_at(&w, T0 + 2);
    assert!(refused(&set, &other) && !refused(&set, &first), "the gateway refuses the other session's tokens");
    // Enrolling again, or confirming again, is refused while it is on.
    assert_eq!(code(block_on(deps.enroll_totp(&meta, rng, Some(&first.access_token)))), "mfa_already_enabled");
    let again = block_on(deps.confirm_totp(&meta, rng, Some(&first.access_token), with_code(&totp(&secret, T0 + 30))));
    assert_eq!(code(again), "mfa_already_enabled");
}

#[test]
fn without_ui_name_the_issuer_label_is_the_issuers_host() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(2);
    let s = signup_at(&w, rng, T0, ADA, PW);
    let (deps, meta) = w.at(T0);
    let e = block_on(deps.enroll_totp(&meta, rng, Some(&s.access_token))).unwrap();
    assert!(e.otpauth_uri.starts_with("otpauth://totp/auth.test:ada%40example.com?secret="), "{}", e.otpauth_uri);
    assert!(e.otpauth_uri.contains("&issuer=auth.test&"), "{}", e.otpauth_uri);
    // Confirming needs an enrolment; a second enrolment replaces the first.
    let e2 = block_on(deps.enroll_totp(&meta, rng, Some(&s.access_token))).unwrap();
    assert_ne!(e.secret, e2.secret);
    let old =
        block_on(deps.confirm_totp(&meta, rng, Some(&s.access_token), with_code(&totp(&secret_of(&e.secret), T0))));
    assert_eq!(code(old), "invalid_code");
    assert!(block_on(deps.confirm_totp(
        &meta,
        rng,
        Some(&s.access_token),
        with_code(&totp(&secret_of(&e2.secret), T0))
    ))
    .is_ok());
}

#[test]
fn a_password_login_asks_for_the_second_step_and_issues_nothing_until_then() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(3);
    let on = enable(&w, rng, T0, ADA);
    let before = (sessions(&w), w.events.count("login"), w.keys.issued.borrow().len());
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    assert_eq!(step.methods, vec![Method::Totp, Method::BackupCode]);
    assert_eq!(step.expires_in, 300);
    assert_eq!(
        step.body(),
        json!({"mfa_required": true, "mfa_token": step.mfa_token, "methods": ["totp", "backup_code"], "expires_in": 300})
    );
    assert_eq!(step.mfa_token.len(), 43);
    assert_eq!((sessions(&w), w.events.count("login"), w.keys.issued.borrow().len()), before, "nothing issued");
    // The second step signs in, once.
    let done = verify(&w, rng, T0 + 30, &step.mfa_token, Some(&totp(&on.secret, T0 + 30)), None).unwrap();
    assert_eq!(done.user.email, ADA);
    assert_eq!(sessions(&w), before.0 + 1);
    let login_event = w.events.last_of("login");
    assert_eq!(
        (login_event["provider"].clone(), login_event["user_id"].clone()),
        (json!("email"), json!(on.session.user.id))
    );
}

#[test]
fn tokens_me_and_refreshes_say_how_and_when_the_user_signed_in() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(4);
    let on = enable(&w, rng, T0, ADA);
    // One factor: the session that turned TOTP on signed in with a password.
    let c = claims(&on.session.access_token);
    assert_eq!((c["amr"].clone(), c["auth_time"].clone()), (json!(["pwd"]), json!(T0)));
    let step = second_step(login(&w, rng, T0 + 40, ADA));
    let done = verify(&w, rng, T0 + 45, &step.mfa_token, Some(&totp(&on.secret, T0 + 45)), None).unwrap();
    let c = claims(&done.access_token);
    assert_eq!((c["amr"].clone(), c["auth_time"].clone()), (json!(["pwd", "otp", "mfa"]), json!(T0 + 45)));
    // A refresh keeps both.
    let (deps, meta) = w.at(T0 + 600);
    let refreshed = block_on(deps.refresh(&meta, rng, Some(&done.refresh_token))).unwrap();
    let c = claims(&refreshed.access_token);
    assert_eq!((c["amr"].clone(), c["auth_time"].clone()), (json!(["pwd", "otp", "mfa"]), json!(T0 + 45)));
    assert_eq!(c["iat"], json!(T0 + 600));
    let me =
        serde_json::to_value(block_on(deps.me_with_providers(&meta, Some(&refreshed.access_token))).unwrap()).unwrap();
    assert_eq!((me["amr"].clone(), me["auth_time"].clone()), (json!(["pwd", "otp", "mfa"]), json!(T0 + 45)));
    assert_eq!(me["mfa"], json!({"totp": true, "backup_codes_left": 10, "passkeys": 0}));
}

#[test]
fn magic_links_and_email_codes_ask_for_the_second_step_too() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(5);
    let on = enable(&w, rng, T0, ADA);
    // Verified, so the link proves nothing new about the account.
    w.store.users.borrow_mut().iter_mut().for_each(|u| u.email_verified = true);
    let (deps, meta) = w.at(T0 + 30);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let before = (sessions(&w), w.events.count("login"), w.events.count("magic_link_login"));
    let step =
        second_step(block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token, locale: None })));
    assert_eq!((sessions(&w), w.events.count("login"), w.events.count("magic_link_login")), before);
    let done = verify(&w, rng, T0 + 31, &step.mfa_token, Some(&totp(&on.secret, T0 + 31)), None).unwrap();
    assert_eq!(claims(&done.access_token)["amr"], json!(["otp", "mfa"]));
    assert_eq!(w.events.kinds()[w.events.kinds().len() - 2..], ["magic_link_login", "login"]);
    assert_eq!(w.events.last_of("login")["provider"], "magic_link");

    let (deps, meta) = w.at(T0 + 60);
    block_on(deps.request_otp(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let code_sent = w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string();
    let before = sessions(&w);
    let step = second_step(block_on(deps.verify_otp(
        &meta,
        rng,
        OtpVerifyRequest { email: ADA.into(), code: code_sent, locale: None },
    )));
    assert_eq!(sessions(&w), before);
    let done = verify(&w, rng, T0 + 61, &step.mfa_token, None, Some(&on.backup_codes[0])).unwrap();
    assert_eq!(claims(&done.access_token)["amr"], json!(["otp", "mfa"]));
    assert_eq!(w.events.kinds()[w.events.kinds().len() - 2..], ["email_otp_login", "login"]);
    assert_eq!(w.events.last_of("login")["provider"], "email_otp");
}

fn oauth_world(cookie_mode: bool) -> World {
    let providers = json!([{"id": "idp", "issuer": IDP, "client_id": CLIENT}]).to_string();
    let mut vars = vec![
        ("OAUTH_PROVIDERS", providers),
        ("OAUTH_IDP_CLIENT_SECRET", "shh".to_string()),
        ("REDIRECT_ALLOWLIST", "https://app.test/done".to_string()),
    ];
    if cookie_mode {
        vars.push(("COOKIE_MODE", "true".to_string()));
    }
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    World::new(&vars)
}

/// Turns TOTP on for the signed-in `session`; returns its secret.
fn turn_on(w: &World, rng: &mut TestRandom, now: i64, access_token: &str) -> TotpSecret {
    let (deps, meta) = w.at(now);
    let secret = secret_of(&block_on(deps.enroll_totp(&meta, rng, Some(access_token))).unwrap().secret);
    block_on(deps.confirm_totp(&meta, rng, Some(access_token), with_code(&totp(&secret, now)))).unwrap();
    secret
}

#[test]
fn an_oauth_sign_in_exchanges_its_code_for_the_second_step_not_for_tokens() {
    let w = oauth_world(false);
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(6);
    let who = json!({"sub": "s-ada", "email": ADA, "email_verified": true});
    let out = sign_in(&w, rng, &idp, T0, who.clone());
    let (deps, meta) = w.at(T0 + 2);
    let code_ = location_param(&out, "code").unwrap();
    let first =
        block_on(deps.oauth_exchange(&meta, ExchangeRequest { code: code_, code_verifier: Some(APP_VERIFIER.into()) }))
            .done()
            .unwrap();
    assert_eq!(claims(&first.access_token)["amr"], json!(["fed"]));
    let secret = turn_on(&w, rng, T0 + 3, &first.access_token);

    let before = (sessions(&w), w.events.count("login"));
    let out = sign_in(&w, rng, &idp, T0 + 30, who);
    assert!(matches!(out, CallbackOutcome::SecondStep { .. }), "{out:?}");
    let (deps, meta) = w.at(T0 + 32);
    let step = second_step(block_on(deps.oauth_exchange(
        &meta,
        ExchangeRequest { code: location_param(&out, "code").unwrap(), code_verifier: Some(APP_VERIFIER.into()) },
    )));
    assert_eq!((sessions(&w), w.events.count("login")), before, "nothing issued before the second step");
    let done = verify(&w, rng, T0 + 33, &step.mfa_token, Some(&totp(&secret, T0 + 33)), None).unwrap();
    assert_eq!(claims(&done.access_token)["amr"], json!(["otp", "fed", "mfa"]));
    assert_eq!(w.events.last_of("login")["provider"], "idp");
}

#[test]
fn in_cookie_mode_the_oauth_callback_sets_no_cookies_and_hands_the_mfa_token_in_the_fragment() {
    let w = oauth_world(true);
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(7);
    let who = json!({"sub": "s-ada", "email": ADA, "email_verified": true});
    let CallbackOutcome::SignedIn { auth, .. } = sign_in(&w, rng, &idp, T0, who.clone()) else { panic!() };
    let secret = turn_on(&w, rng, T0 + 2, &auth.access_token);
    let before = sessions(&w);
    let out = sign_in(&w, rng, &idp, T0 + 30, who);
    let CallbackOutcome::SecondStep { location } = &out else { panic!("{out:?}") };
    let (base, fragment) = location.split_once('#').unwrap();
    assert_eq!(base, "https://app.test/done");
    let token = fragment.strip_prefix("mfa_token=").unwrap().strip_suffix("&methods=totp,backup_code").unwrap();
    assert_eq!(token.len(), 43);
    assert_eq!(sessions(&w), before);
    assert!(verify(&w, rng, T0 + 31, token, Some(&totp(&secret, T0 + 31)), None).is_ok());
}

#[test]
fn a_totp_code_is_accepted_once_within_one_step_of_skew_and_never_an_earlier_one() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(8);
    let on = enable(&w, rng, T0, ADA);
    let now = T0 + 300;
    // One step either way is accepted; two are not.
    let step = second_step(login(&w, rng, now, ADA));
    assert_eq!(code(verify(&w, rng, now, &step.mfa_token, Some(&totp(&on.secret, now - 60)), None)), "invalid_code");
    assert_eq!(code(verify(&w, rng, now, &step.mfa_token, Some(&totp(&on.secret, now + 60)), None)), "invalid_code");
    assert!(verify(&w, rng, now, &step.mfa_token, Some(&totp(&on.secret, now - 30)), None).is_ok());
    let step = second_step(login(&w, rng, now, ADA));
    assert!(verify(&w, rng, now, &step.mfa_token, Some(&totp(&on.secret, now + 30)), None).is_ok());
    // The same code again (replay), or the one before it, is refused.
    let failed = w.events.count("mfa_failed");
    let step = second_step(login(&w, rng, now + 1, ADA));
    for replayed in [totp(&on.secret, now + 30), totp(&on.secret, now)] {
        assert_eq!(code(verify(&w, rng, now + 1, &step.mfa_token, Some(&replayed), None)), "invalid_code");
    }
    assert_eq!(w.events.count("mfa_failed"), failed + 2);
    // The next step's code works.
    assert!(verify(&w, rng, now + 31, &step.mfa_token, Some(&totp(&on.secret, now + 60)), None).is_ok());
}

#[test]
fn backup_codes_are_single_use_and_a_new_set_kills_the_old_one() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(9);
    let on = enable(&w, rng, T0, ADA);
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    // Typed as people type them: any case, without the dash.
    let typed = on.backup_codes[3].replace('-', "").to_uppercase();
    assert!(verify(&w, rng, T0 + 30, &step.mfa_token, None, Some(&typed)).is_ok());
    let step = second_step(login(&w, rng, T0 + 31, ADA));
    assert_eq!(code(verify(&w, rng, T0 + 31, &step.mfa_token, None, Some(&on.backup_codes[3]))), "invalid_code");
    assert_eq!(w.events.last_of("mfa_failed")["method"], "backup_code");
    // `code` takes a backup code too.
    assert!(verify(&w, rng, T0 + 31, &step.mfa_token, Some(&on.backup_codes[4]), None).is_ok());
    let (deps, meta) = w.at(T0 + 32);
    assert_eq!(block_on(deps.factors_view(&on.session.user.id)).unwrap().backup_codes_left, 8);
    // New codes for a current code; every old one dies.
    let fresh = block_on(deps.regenerate_backup_codes(
        &meta,
        rng,
        Some(&on.session.access_token),
        with_code(&totp(&on.secret, T0 + 32)),
    ))
    .unwrap();
    assert_eq!(fresh.backup_codes.len(), 10);
    assert!(fresh.backup_codes.iter().all(|c| !on.backup_codes.contains(c)));
    let step = second_step(login(&w, rng, T0 + 33, ADA));
    assert_eq!(code(verify(&w, rng, T0 + 33, &step.mfa_token, None, Some(&on.backup_codes[5]))), "invalid_code");
    assert!(verify(&w, rng, T0 + 33, &step.mfa_token, None, Some(&fresh.backup_codes[0])).is_ok());
    // Without a code, no new codes.
    let r = block_on(deps.regenerate_backup_codes(&meta, rng, Some(&on.session.access_token), CodeRequest::default()));
    assert_eq!(code(r), "validation_failed");
}

/// Of racing regenerations of the backup codes, which read the same set,
/// exactly one hands out codes: the other gets 409 `backup_codes_changed`
/// and its codes are never stored.
#[test]
fn racing_backup_code_regenerations_hand_out_one_set() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(21);
    let on = enable(&w, rng, T0, ADA);
    let (sid, uid) = (on.session.user.session_id.clone().unwrap(), on.session.user.id.clone());
    let (store, racer) = (w.store.clone(), uid.clone());
    *w.store.after_factors_read.borrow_mut() = Some(Box::new(move || {
        use portcullis::core::ports::MfaStore;
        let caller = portcullis::core::session::LiveSession {
            user_id: &racer,
            session_id: &sid,
            now: UnixTime(T0 + 60),
            max_age_secs: 7_776_000,
        };
        let read = store.totp.borrow().get(&racer).unwrap().backup_set.clone();
        assert!(read.is_some(), "the confirmation names its set");
        let r = block_on(store.replace_backup_codes(&caller, read.as_deref(), "racing-set", &["racing-tag".into()]));
        assert_eq!(r.unwrap(), Some(true));
    }));
    let (deps, meta) = w.at(T0 + 60);
    let token = Some(on.session.access_token.as_str());
    let r = block_on(deps.regenerate_backup_codes(&meta, rng, token, with_code(&totp(&on.secret, T0 + 60))));
    let p = r.unwrap_err().problem();
    assert_eq!((p.status, p.code), (409, "backup_codes_changed"));
    let stored = |w: &World| -> Vec<String> {
        w.store.backup_codes.borrow().iter().filter(|(id, _)| *id == uid).map(|(_, tag)| tag.clone()).collect()
    };
    assert_eq!(stored(&w), ["racing-tag"], "the winner's set stands");
    // Asked again, it replaces the set it now reads.
    let (deps, meta) = w.at(T0 + 90);
    let fresh =
        block_on(deps.regenerate_backup_codes(&meta, rng, token, with_code(&totp(&on.secret, T0 + 90)))).unwrap();
    assert_eq!(fresh.backup_codes.len(), 10);
    assert_eq!(stored(&w).len(), 10);
    assert!(!stored(&w).contains(&"racing-tag".to_string()));
}

#[test]
fn the_last_backup_code_leaves_totp_as_the_only_method() {
    let w = busy_world();
    let rng = &mut TestRandom(10);
    let on = enable(&w, rng, T0, ADA);
    for (i, c) in on.backup_codes.iter().enumerate() {
        let step = second_step(login(&w, rng, T0 + i as i64, ADA));
        assert_eq!(step.methods, vec![Method::Totp, Method::BackupCode]);
        verify(&w, rng, T0 + i as i64, &step.mfa_token, None, Some(c)).unwrap();
    }
    assert_eq!(second_step(login(&w, rng, T0 + 20, ADA)).methods, vec![Method::Totp]);
}

#[test]
fn an_mfa_token_is_single_use_and_short_lived() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(11);
    let on = enable(&w, rng, T0, ADA);
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    assert!(verify(&w, rng, T0 + 30, &step.mfa_token, None, Some(&on.backup_codes[0])).is_ok());
    let r = verify(&w, rng, T0 + 30, &step.mfa_token, None, Some(&on.backup_codes[1]));
    assert_eq!(code(r), "invalid_mfa_token");
    // Expired after five minutes, even with the right code.
    let step = second_step(login(&w, rng, T0 + 60, ADA));
    let r = verify(&w, rng, T0 + 60 + 300, &step.mfa_token, Some(&totp(&on.secret, T0 + 360)), None);
    assert_eq!(code(r), "invalid_mfa_token");
    let r = verify(&w, rng, T0 + 60 + 299, &step.mfa_token, Some(&totp(&on.secret, T0 + 359)), None);
    assert!(r.is_ok(), "{r:?}");
    // Malformed tokens are refused without a lookup.
    for bad in ["", "not a token", &"a".repeat(65)] {
        assert_eq!(code(verify(&w, rng, T0 + 400, bad, Some("123456"), None)), "invalid_mfa_token", "{bad:?}");
    }
}

#[test]
fn an_mfa_token_dies_after_five_wrong_codes() {
    let w = busy_world();
    let rng = &mut TestRandom(12);
    let on = enable(&w, rng, T0, ADA);
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    let right = totp(&on.secret, T0 + 30);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 500_000) % 1_000_000);
    for _ in 0..5 {
        assert_eq!(code(verify(&w, rng, T0 + 30, &step.mfa_token, Some(&wrong), None)), "invalid_code");
    }
    assert_eq!(code(verify(&w, rng, T0 + 30, &step.mfa_token, Some(&right), None)), "invalid_mfa_token");
    // Four wrong, then right: signed in.
    let step = second_step(login(&w, rng, T0 + 31, ADA));
    for _ in 0..4 {
        assert_eq!(code(verify(&w, rng, T0 + 31, &step.mfa_token, Some(&wrong), None)), "invalid_code");
    }
    assert!(verify(&w, rng, T0 + 31, &step.mfa_token, Some(&right), None).is_ok());
}

#[test]
fn an_mfa_token_dies_with_the_account_epoch_it_was_issued_under() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(13);
    let on = enable(&w, rng, T0, ADA);
    w.store.users.borrow_mut().iter_mut().for_each(|u| u.email_verified = true);
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    // A password reset lands between the two steps.
    let (deps, meta) = w.at(T0 + 31);
    block_on(deps.forgot_password(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let token = w.events.last_of("password_reset_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.reset_password(&meta, rng, ResetRequest { token, new_password: "another good password".into() }))
        .unwrap();
    let before = sessions(&w);
    let r = verify(&w, rng, T0 + 32, &step.mfa_token, Some(&totp(&on.secret, T0 + 32)), None);
    assert_eq!(code(r), "invalid_mfa_token");
    assert_eq!(sessions(&w), before);
    // A ban too: the token dies with the account's refusal.
    let step = second_step(block_on(deps.login(
        &meta,
        rng,
        LoginRequest { email: ADA.into(), password: "another good password".into() },
    )));
    w.store.users.borrow_mut().iter_mut().for_each(|u| u.banned = true);
    let r = verify(&w, rng, T0 + 33, &step.mfa_token, Some(&totp(&on.secret, T0 + 33)), None);
    assert_eq!(code(r), "account_banned");
    w.store.users.borrow_mut().iter_mut().for_each(|u| u.banned = false);
    let r = verify(&w, rng, T0 + 33, &step.mfa_token, Some(&totp(&on.secret, T0 + 33)), None);
    assert_eq!(code(r), "invalid_mfa_token", "gone with the refusal");
}

#[test]
fn the_sign_in_hook_is_asked_once_after_the_second_step() {
    let w = World::new(&[
        ("HOOK_URL", "https://hooks.example/signin"),
        ("HOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ]);
    let rng = &mut TestRandom(14);
    let on = enable(&w, rng, T0, ADA);
    let asked = w.hook.requests.borrow().len();
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    assert_eq!(w.hook.requests.borrow().len(), asked, "not asked at the first step");
    w.hook.answer(200, r#"{"allow": true, "claims": {"plan": "pro", "amr": ["hwk"]}}"#);
    let done = verify(&w, rng, T0 + 30, &step.mfa_token, Some(&totp(&on.secret, T0 + 30)), None).unwrap();
    assert_eq!(w.hook.requests.borrow().len(), asked + 1);
    let body: Value = serde_json::from_str(&w.hook.requests.borrow().last().unwrap().body).unwrap();
    assert_eq!(body["provider"], "email");
    let c = claims(&done.access_token);
    assert_eq!(
        (c["plan"].clone(), c["amr"].clone()),
        (json!("pro"), json!(["pwd", "otp", "mfa"])),
        "amr is ours alone"
    );
    // A refusal at the end: no session, `login_failed`.
    let step = second_step(login(&w, rng, T0 + 60, ADA));
    w.hook.answer(200, r#"{"allow": false, "reason": "waitlisted"}"#);
    let before = sessions(&w);
    let r = verify(&w, rng, T0 + 60, &step.mfa_token, Some(&totp(&on.secret, T0 + 60)), None);
    assert_eq!(code(r), "signin_denied");
    assert_eq!(sessions(&w), before);
    assert_eq!(w.events.last_of("login_failed")["reason"], "signin_denied");
}

#[test]
fn wrong_codes_count_against_the_accounts_daily_cap_and_then_even_the_right_one_is_refused() {
    let w = World::new(&[("OTP_MAX_FAILURES_PER_DAY", "3")]);
    let rng = &mut TestRandom(15);
    let on = enable(&w, rng, T0, ADA);
    let right = totp(&on.secret, T0 + 30);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    for i in 0..3 {
        let step = second_step(login(&w, rng, T0 + 30 + i, ADA));
        assert_eq!(code(verify(&w, rng, T0 + 30, &step.mfa_token, Some(&wrong), None)), "invalid_code");
    }
    let step = second_step(login(&w, rng, T0 + 40, ADA));
    let r = verify(&w, rng, T0 + 40, &step.mfa_token, Some(&right), None);
    // The day's window opened with the code that turned TOTP on.
    assert_eq!(r.unwrap_err(), Error::RateLimited { retry_after_secs: 86_400 - 40 });
    // Counted on a counter of its own: email codes keep theirs.
    let counters = w.store.counters.borrow();
    assert_eq!(counters.get("mfa/verify:account:ada@example.com").map(|c| c.1), Some(4));
    assert!(!counters.contains_key("otp/verify:account:ada@example.com"));
}

#[test]
fn malformed_codes_are_refused_without_counting_anything() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(16);
    let on = enable(&w, rng, T0, ADA);
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    let counters = w.store.counters.borrow().clone();
    for bad in ["12345", "1234567", "abcdef", "abcde-fghi", ""] {
        assert_eq!(code(verify(&w, rng, T0 + 30, &step.mfa_token, Some(bad), None)), "invalid_code", "{bad:?}");
    }
    assert_eq!(
        code(verify(&w, rng, T0 + 30, &step.mfa_token, Some("123456"), Some("abcde-fgh12"))),
        "validation_failed"
    );
    assert_eq!(code(verify(&w, rng, T0 + 30, &step.mfa_token, None, None)), "validation_failed");
    assert_eq!(*w.store.counters.borrow(), counters);
    assert_eq!(w.store.challenges.borrow()[0].attempts, 0, "no attempt counted on the token");
    assert_eq!(w.events.count("mfa_failed"), 0);
    assert!(verify(&w, rng, T0 + 30, &step.mfa_token, Some(&totp(&on.secret, T0 + 30)), None).is_ok());
}

#[test]
fn turning_totp_off_needs_a_code_or_a_recent_sign_in_and_ends_the_other_sessions() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(17);
    let on = enable(&w, rng, T0, ADA);
    let step = second_step(login(&w, rng, T0 + 30, ADA));
    let other = verify(&w, rng, T0 + 30, &step.mfa_token, Some(&totp(&on.secret, T0 + 30)), None).unwrap();
    // Ten minutes after its sign-in, the first session needs a code.
    let (deps, meta) = w.at(T0 + 600);
    let r = block_on(deps.disable_totp(&meta, rng, Some(&on.session.access_token), CodeRequest::default()));
    let p = r.unwrap_err().problem();
    assert_eq!((p.status, p.code), (403, "code_required"));
    let wrong = block_on(deps.disable_totp(&meta, rng, Some(&on.session.access_token), with_code("000000")));
    assert_eq!(code(wrong), "invalid_code");
    block_on(deps.disable_totp(&meta, rng, Some(&on.session.access_token), with_code(&totp(&on.secret, T0 + 600))))
        .unwrap();
    assert_eq!(w.events.last_of("mfa_disabled"), json!({"user_id": on.session.user.id, "method": "totp"}));
    assert_eq!(w.events.last_of("session_revoked")["revoke_all"], true);
    assert_eq!(
        block_on(deps.me(&meta, Some(&other.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
    let set = set_at(&w, T0 + 600);
    assert!(refused(&set, &other) && !refused(&set, &on.session), "the gateway refuses the other session's tokens");
    let view = block_on(deps.factors_view(&on.session.user.id)).unwrap();
    assert_eq!((view.totp, view.backup_codes_left), (false, 0));
    assert!(matches!(login(&w, rng, T0 + 601, ADA).unwrap(), SignIn::Complete(_)));
    let again = block_on(deps.disable_totp(&meta, rng, Some(&on.session.access_token), CodeRequest::default()));
    assert_eq!(code(again), "mfa_not_enabled");

    // Within five minutes of its sign-in, a session turns it off without a code.
    let on = enable(&w, rng, T0 + 1_000, "bo@example.com");
    let (deps, meta) = w.at(T0 + 1_000 + 300);
    block_on(deps.disable_totp(&meta, rng, Some(&on.session.access_token), CodeRequest::default())).unwrap();
    assert!(!block_on(deps.factors_view(&on.session.user.id)).unwrap().totp);
}

#[test]
fn a_one_factor_sign_in_racing_totp_being_turned_on_gets_no_session() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(18);
    let holder = signup_at(&w, rng, T0, ADA, PW);
    let (deps, meta) = w.at(T0);
    block_on(deps.enroll_totp(&meta, rng, Some(&holder.access_token))).unwrap();
    // Between the login's factor check (none on) and its session write,
    // the holder turns TOTP on.
    let store = w.store.clone();
    let (sid, uid) = (holder.user.session_id.clone().unwrap(), holder.user.id.clone());
    *w.store.after_factors_read.borrow_mut() = Some(Box::new(move || {
        use portcullis::core::ports::MfaStore;
        let caller = portcullis::core::session::LiveSession {
            user_id: &uid,
            session_id: &sid,
            now: UnixTime(T0),
            max_age_secs: 7_776_000,
        };
        let sealed = store.totp.borrow().get(&uid).unwrap().sealed.clone();
        assert!(block_on(store.confirm_totp(&caller, &sealed, step_at(UnixTime(T0)), &[], "set", "test"))
            .unwrap()
            .is_some());
    }));
    let before = sessions(&w);
    let r = login(&w, rng, T0 + 1, ADA);
    assert_eq!(code(r), "account_changed");
    assert_eq!(sessions(&w), before, "no one-factor session after TOTP went on");
    // Signing in again asks for the second step.
    second_step(login(&w, rng, T0 + 2, ADA));
}

#[test]
fn a_takeover_removes_the_planters_totp() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(19);
    // The planter signs up with the victim's address and turns TOTP on.
    let planted = enable(&w, rng, T0, ADA);
    assert!(!user(&w, ADA).email_verified);
    let (deps, meta) = w.at(T0 + 30);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    // The owner follows the link: signed in at once, the planter's factor gone.
    let owner =
        block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token, locale: None })).done().unwrap();
    assert_eq!(owner.user.id, planted.session.user.id);
    assert_eq!(w.events.last_of("mfa_disabled"), json!({"user_id": owner.user.id, "method": "totp"}));
    let view = block_on(deps.factors_view(&owner.user.id)).unwrap();
    assert_eq!((view.totp, view.backup_codes_left), (false, 0));
}

#[test]
fn an_administrator_sees_and_resets_a_users_factors() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(20);
    let on = enable(&w, rng, T0, ADA);
    let admin = signup_at(&w, rng, T0, "root@example.com", PW);
    grant(&w, "root@example.com", "admin");
    let (deps, meta) = w.at(T0 + 10);
    let a = block_on(deps.require_admin(&meta, Some(&admin.access_token))).unwrap();
    let view = serde_json::to_value(block_on(deps.admin_get_user(&a, &on.session.user.id)).unwrap()).unwrap();
    assert_eq!(view["email"], ADA);
    assert_eq!(view["mfa"], json!({"totp": true, "backup_codes_left": 10, "passkeys": 0}));
    block_on(deps.admin_reset_mfa(&meta, rng, &a, &on.session.user.id)).unwrap();
    assert_eq!(w.events.last_of("mfa_disabled"), json!({"user_id": on.session.user.id, "method": "totp"}));
    assert_eq!(
        block_on(deps.me(&meta, Some(&on.session.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked),
        "every session of the user ends"
    );
    assert!(refused(&set_at(&w, T0 + 10), &on.session), "and the gateway refuses its tokens");
    assert!(matches!(login(&w, rng, T0 + 11, ADA).unwrap(), SignIn::Complete(_)));
    let view = serde_json::to_value(block_on(deps.admin_get_user(&a, &on.session.user.id)).unwrap()).unwrap();
    assert_eq!(view["mfa"], json!({"totp": false, "backup_codes_left": 0, "passkeys": 0}));
    // Nothing to reset: answered the same, nothing announced.
    let disabled = w.events.count("mfa_disabled");
    block_on(deps.admin_reset_mfa(&meta, rng, &a, &on.session.user.id)).unwrap();
    assert_eq!(w.events.count("mfa_disabled"), disabled);
    assert_eq!(code(block_on(deps.admin_reset_mfa(&meta, rng, &a, "no-such-user"))), "not_found");
}

#[test]
fn a_second_step_pending_when_the_factor_is_reset_dies_without_counting_a_wrong_code() {
    let w = busy_world();
    let rng = &mut TestRandom(21);
    let on = enable(&w, rng, T0, ADA);
    let admin = signup_at(&w, rng, T0, "root@example.com", PW);
    grant(&w, "root@example.com", "admin");
    let step = second_step(login(&w, rng, T0 + 5, ADA));
    let (deps, meta) = w.at(T0 + 6);
    let a = block_on(deps.require_admin(&meta, Some(&admin.access_token))).unwrap();
    block_on(deps.admin_reset_mfa(&meta, rng, &a, &on.session.user.id)).unwrap();
    let failed = w.events.count("mfa_failed");
    let backup = on.backup_codes[0].as_str();
    assert_eq!(code(verify(&w, rng, T0 + 7, &step.mfa_token, None, Some(backup))), "invalid_mfa_token");
    assert_eq!(w.events.count("mfa_failed"), failed, "no wrong code is announced or counted");
    assert!(w.store.challenges.borrow().iter().all(|c| c.user_id != on.session.user.id), "the token is gone");
    assert!(matches!(login(&w, rng, T0 + 9, ADA).unwrap(), SignIn::Complete(_)), "a new sign-in needs no second step");
}

/// An OAuth sign-in that stops at the second step gives a code bound to the
/// app's challenge, like a complete one: a victim's app exchanging an
/// attacker's planted code with its own verifier gets nothing.
#[test]
fn a_second_step_code_is_bound_to_the_apps_challenge() {
    let w = oauth_world(false);
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(66);
    let who = json!({"sub": "s-ada", "email": ADA, "email_verified": true});
    let out = sign_in(&w, rng, &idp, T0, who.clone());
    let (deps, meta) = w.at(T0 + 2);
    let first = block_on(deps.oauth_exchange(
        &meta,
        ExchangeRequest { code: location_param(&out, "code").unwrap(), code_verifier: Some(APP_VERIFIER.into()) },
    ))
    .done()
    .unwrap();
    turn_on(&w, rng, T0 + 3, &first.access_token);
    let out = sign_in(&w, rng, &idp, T0 + 30, who.clone());
    let (deps, meta) = w.at(T0 + 32);
    let wrong = "victim-verifier-0123456789-0123456789-abcdefgh";
    let refused = block_on(deps.oauth_exchange(
        &meta,
        ExchangeRequest { code: location_param(&out, "code").unwrap(), code_verifier: Some(wrong.into()) },
    ));
    assert_eq!(code(refused.map(|_| ())), "invalid_exchange_code");
    // With the app's own verifier, the second step is handed over.
    let out = sign_in(&w, rng, &idp, T0 + 40, who);
    let (deps, meta) = w.at(T0 + 42);
    let step = second_step(block_on(deps.oauth_exchange(
        &meta,
        ExchangeRequest { code: location_param(&out, "code").unwrap(), code_verifier: Some(APP_VERIFIER.into()) },
    )));
    assert!(!step.mfa_token.is_empty());
}

#[test]
fn a_second_step_dies_with_its_factor_even_if_a_new_one_is_turned_on() {
    let w = busy_world();
    let rng = &mut TestRandom(91);
    let on = enable(&w, rng, T0, ADA);
    let step = second_step(login(&w, rng, T0 + 5, ADA));
    // The user turns TOTP off (recent sign-in, no code needed).
    let (deps, meta) = w.at(T0 + 6);
    block_on(deps.disable_totp(&meta, rng, Some(&on.session.access_token), CodeRequest::default())).unwrap();
    let counters = w.store.counters.borrow().clone();
    let failed = w.events.count("mfa_failed");
    assert_eq!(code(verify(&w, rng, T0 + 7, &step.mfa_token, Some("123456"), None)), "invalid_mfa_token");
    assert_eq!(*w.store.counters.borrow(), counters, "nothing charged");
    assert_eq!(w.events.count("mfa_failed"), failed);
    assert!(w.store.challenges.borrow().iter().all(|c| c.user_id != on.session.user.id), "challenge removed");
    // TOTP turned on again with a new secret: the old mfa_token must not complete.
    let (deps, meta) = w.at(T0 + 40);
    let enrolment = block_on(deps.enroll_totp(&meta, rng, Some(&on.session.access_token))).unwrap();
    let secret = secret_of(&enrolment.secret);
    block_on(deps.confirm_totp(&meta, rng, Some(&on.session.access_token), with_code(&totp(&secret, T0 + 40))))
        .unwrap();
    let r = verify(&w, rng, T0 + 70, &step.mfa_token, Some(&totp(&secret, T0 + 70)), None);
    assert_eq!(code(r), "invalid_mfa_token", "the old token is dead");
}
