//! Users' languages: a `locale` given at sign-up is stored, and every email
//! event carries the language its email is to be written in — the one the
//! request asked for, else the account's own.

use portcullis::core::flows::account::SignupRequest;
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::EmailRequest;

use crate::support::{block_on, code, user, Done, TestRandom, World};

fn signup(w: &World, rng: &mut TestRandom, email: &str, locale: Option<&str>) -> String {
    let (deps, meta) = w.at(1_000);
    let r = block_on(deps.signup(
        &meta,
        rng,
        SignupRequest {
            email: email.into(),
            password: "correct horse battery".into(),
            name: None,
            locale: locale.map(str::to_string),
        },
    ))
    .unwrap();
    r.access_token
}

fn ask(email: &str, locale: Option<&str>) -> EmailRequest {
    EmailRequest { email: email.into(), locale: locale.map(str::to_string) }
}

#[test]
fn signup_stores_the_locale_normalised_and_refuses_a_malformed_one() {
    let w = World::new(&[]);
    let mut rng = TestRandom(1);
    signup(&w, &mut rng, "ada@example.com", Some("pt_br"));
    assert_eq!(user(&w, "ada@example.com").locale.as_deref(), Some("pt-BR"));
    signup(&w, &mut rng, "bob@example.com", None);
    assert_eq!(user(&w, "bob@example.com").locale, None);
    let (deps, meta) = w.at(1_000);
    let bad = block_on(deps.signup(
        &meta,
        &mut rng,
        SignupRequest {
            email: "eve@example.com".into(),
            password: "correct horse battery".into(),
            name: None,
            locale: Some("<script>".into()),
        },
    ));
    assert_eq!(code(bad), "invalid_locale");
    assert!(w.store.users.borrow().iter().all(|u| u.email != "eve@example.com"), "nothing written");
}

#[test]
fn email_events_carry_the_requested_locale_else_the_accounts_own() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    let access = signup(&w, &mut rng, "ada@example.com", Some("de"));
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_magic_link(&meta, &mut rng, ask("ada@example.com", None))).unwrap();
    assert_eq!(w.events.last_of("magic_link_requested")["locale"], "de");
    block_on(deps.request_magic_link(&meta, &mut rng, ask("ada@example.com", Some("fr_ca")))).unwrap();
    assert_eq!(w.events.last_of("magic_link_requested")["locale"], "fr-CA", "the request's wins");
    block_on(deps.request_otp(&meta, &mut rng, ask("ada@example.com", None))).unwrap();
    assert_eq!(w.events.last_of("email_otp_requested")["locale"], "de");
    block_on(deps.forgot_password(&meta, &mut rng, ask("ada@example.com", Some("en")))).unwrap();
    assert_eq!(w.events.last_of("password_reset_requested")["locale"], "en");
    block_on(deps.request_email_verification(&meta, &mut rng, Some(&access))).unwrap();
    assert_eq!(w.events.last_of("email_verification_requested")["locale"], "de");
    // The request's locale is for that email only: the account keeps its own.
    assert_eq!(user(&w, "ada@example.com").locale.as_deref(), Some("de"));
}

#[test]
fn an_account_without_a_locale_gets_null_and_an_unknown_address_its_email_in_the_asked_one() {
    let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true")]);
    let mut rng = TestRandom(3);
    signup(&w, &mut rng, "bob@example.com", None);
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_otp(&meta, &mut rng, ask("bob@example.com", None))).unwrap();
    assert_eq!(w.events.last_of("email_otp_requested")["locale"], serde_json::Value::Null);
    block_on(deps.request_magic_link(&meta, &mut rng, ask("new@example.com", Some("FR")))).unwrap();
    let ev = w.events.last_of("magic_link_requested");
    assert_eq!((ev["user_id"].clone(), ev["locale"].clone()), (serde_json::Value::Null, "fr".into()));
}

fn link(w: &World) -> String {
    w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string()
}

#[test]
fn a_passwordless_signup_takes_the_language_of_the_request_that_uses_the_secret() {
    let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true")]);
    let mut rng = TestRandom(5);
    let (deps, meta) = w.at(1_001);
    // Whoever asks for the link (anyone may) does not choose the account's
    // language: the mailbox's reader, who uses it, does.
    block_on(deps.request_magic_link(&meta, &mut rng, ask("link@example.com", Some("de")))).unwrap();
    let token = link(&w);
    let bad = block_on(deps.verify_magic_link(
        &meta,
        &mut rng,
        MagicLinkVerifyRequest { token: token.clone(), locale: Some("not a tag".into()) },
    ));
    assert_eq!(code(bad), "invalid_locale");
    // The refused request did not use the link up.
    block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: Some("pt_br".into()) }))
        .done()
        .unwrap();
    assert_eq!(user(&w, "link@example.com").locale.as_deref(), Some("pt-BR"));

    block_on(deps.request_magic_link(&meta, &mut rng, ask("asked@example.com", Some("de")))).unwrap();
    let token = link(&w);
    block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: None })).done().unwrap();
    assert_eq!(user(&w, "asked@example.com").locale, None, "the asker's language is not stored");

    block_on(deps.request_otp(&meta, &mut rng, ask("code@example.com", None))).unwrap();
    let c = w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string();
    let verify = OtpVerifyRequest { email: "code@example.com".into(), code: c, locale: Some("de".into()) };
    block_on(deps.verify_otp(&meta, &mut rng, verify)).done().unwrap();
    assert_eq!(user(&w, "code@example.com").locale.as_deref(), Some("de"));

    // An account that exists keeps its own language.
    block_on(deps.request_magic_link(&meta, &mut rng, ask("link@example.com", None))).unwrap();
    let token = link(&w);
    block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: Some("fr".into()) }))
        .done()
        .unwrap();
    assert_eq!(user(&w, "link@example.com").locale.as_deref(), Some("pt-BR"));
}

#[test]
fn a_takeover_replaces_the_profile_the_planter_gave_the_account() {
    let w = World::new(&[]);
    let mut rng = TestRandom(6);
    let (deps, meta) = w.at(1_000);
    let planted = SignupRequest {
        email: "victim@example.com".into(),
        password: "correct horse battery".into(),
        name: Some("Planter".into()),
        locale: Some("de".into()),
    };
    block_on(deps.signup(&meta, &mut rng, planted)).unwrap();
    w.store.users.borrow_mut()[0].phone = Some("+1 555 0100".into());
    let (deps, meta) = w.at(1_010);
    block_on(deps.request_magic_link(&meta, &mut rng, ask("victim@example.com", None))).unwrap();
    let token = link(&w);
    let owner =
        block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: Some("fr".into()) }))
            .done()
            .unwrap();
    assert_eq!(owner.user.name, None);
    let victim = user(&w, "victim@example.com");
    assert_eq!((victim.name, victim.phone, victim.locale.as_deref()), (None, None, Some("fr")));
    assert_eq!(w.events.last_of("user_updated")["fields"], serde_json::json!(["password", "name", "phone"]));
}

#[test]
fn a_malformed_locale_on_an_email_request_is_refused_and_sends_nothing() {
    let w = World::new(&[]);
    let mut rng = TestRandom(4);
    signup(&w, &mut rng, "ada@example.com", None);
    let (deps, meta) = w.at(1_001);
    for bad in ["", "x", "en US", "fr;q=0.8", &"a".repeat(36)] {
        let r = block_on(deps.request_magic_link(&meta, &mut rng, ask("ada@example.com", Some(bad))));
        assert_eq!(code(r), "invalid_locale", "{bad:?}");
    }
    assert_eq!(w.events.count("magic_link_requested"), 0);
}
