//! Magic links: issuing, single use, supersession, expiry, bans, passwordless sign-up.

use portcullis::core::emailed_secret::TokenKind;
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::EmailRequest;
use portcullis::core::ids;

use crate::support::{block_on, code, signup_at, user, Done, TestRandom, World};

fn request(w: &World, rng: &mut TestRandom, now: i64, email: &str) -> serde_json::Value {
    let (deps, meta) = w.at(now);
    let accepted =
        block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: email.into(), locale: None })).unwrap();
    serde_json::to_value(accepted).unwrap()
}

fn verify(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    token: &str,
) -> Result<portcullis::core::flows::AuthResponse, portcullis::core::error::Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token: token.into(), locale: None })).done()
}

fn last_token(w: &World) -> String {
    w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string()
}

#[test]
fn a_link_is_issued_for_an_account_and_stored_only_as_a_hash() {
    let w = World::new(&[]);
    let mut rng = TestRandom(1);
    let u = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ADA@example.com");
    let ev = w.events.last_of("magic_link_requested");
    assert_eq!(ev["user_id"], u.user.id.as_str());
    assert_eq!(ev["email"], "ada@example.com");
    let token = ev["token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    let stored = w.store.email_tokens.borrow();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.hash, ids::token_hash(token));
    assert_eq!(stored[0].0.kind, TokenKind::MagicLink);
    assert_eq!(stored[0].0.expires_at.0, 1_001 + 600);
    assert!(!format!("{:?}", stored[0]).contains(token));
}

#[test]
fn the_request_answers_the_same_for_unknown_banned_and_live_addresses() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    signup_at(&w, &mut rng, 1_000, "live@example.com", "password-1");
    signup_at(&w, &mut rng, 1_000, "banned@example.com", "password-1");
    w.store.users.borrow_mut().iter_mut().find(|u| u.email == "banned@example.com").unwrap().banned = true;
    let live = request(&w, &mut rng, 1_001, "live@example.com");
    let unknown = request(&w, &mut rng, 1_001, "nobody@example.com");
    let banned = request(&w, &mut rng, 1_001, "banned@example.com");
    assert_eq!(live, unknown);
    assert_eq!(live, banned);
    assert_eq!(w.events.count("magic_link_requested"), 1);
    assert_eq!(w.store.email_tokens.borrow().len(), 1);
}

#[test]
fn verifying_signs_in_once_and_marks_the_email_verified() {
    let w = World::new(&[]);
    let mut rng = TestRandom(3);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    assert!(!user(&w, "ada@example.com").email_verified);
    request(&w, &mut rng, 1_001, "ada@example.com");
    let token = last_token(&w);
    let r = verify(&w, &mut rng, 1_002, &token).unwrap();
    assert_eq!(r.user.email, "ada@example.com");
    assert!(r.user.email_verified);
    assert!(user(&w, "ada@example.com").email_verified);
    let kinds = w.events.kinds();
    assert_eq!(&kinds[kinds.len() - 2..], ["magic_link_login", "login"]);
    assert_eq!(w.events.last_of("login")["provider"], "magic_link");
    assert_eq!(code(verify(&w, &mut rng, 1_003, &token)), "invalid_link");
    assert_eq!(verify(&w, &mut rng, 1_003, &token).unwrap_err().problem().status, 401);
}

#[test]
fn a_newer_link_supersedes_the_older_one() {
    let w = World::new(&[]);
    let mut rng = TestRandom(4);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let first = last_token(&w);
    request(&w, &mut rng, 1_002, "ada@example.com");
    let second = last_token(&w);
    assert_ne!(first, second);
    assert_eq!(code(verify(&w, &mut rng, 1_003, &first)), "invalid_link");
    assert!(verify(&w, &mut rng, 1_003, &second).is_ok());
}

#[test]
fn links_expire_after_magic_link_ttl() {
    let w = World::new(&[("MAGIC_LINK_TTL", "30")]);
    let mut rng = TestRandom(5);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_000, "ada@example.com");
    let token = last_token(&w);
    assert_eq!(code(verify(&w, &mut rng, 1_030, &token)), "invalid_link");
    request(&w, &mut rng, 1_100, "ada@example.com");
    assert!(verify(&w, &mut rng, 1_129, &last_token(&w)).is_ok());
}

#[test]
fn a_user_banned_after_the_request_cannot_use_the_link() {
    let w = World::new(&[]);
    let mut rng = TestRandom(6);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    w.store.users.borrow_mut()[0].banned = true;
    assert_eq!(code(verify(&w, &mut rng, 1_002, &last_token(&w))), "account_banned");
    assert_eq!(w.events.last_of("login_failed")["reason"], "banned");
    assert_eq!(w.events.count("magic_link_login"), 0);
}

#[test]
fn unknown_addresses_get_no_link_unless_passwordless_signup_is_on() {
    let off = World::new(&[]);
    request(&off, &mut TestRandom(7), 1_000, "new@example.com");
    assert_eq!(off.events.count("magic_link_requested"), 0);

    let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true")]);
    let mut rng = TestRandom(8);
    request(&w, &mut rng, 1_000, "New@Example.com");
    let ev = w.events.last_of("magic_link_requested");
    assert!(ev["user_id"].is_null());
    let r = verify(&w, &mut rng, 1_001, ev["token"].as_str().unwrap()).unwrap();
    assert_eq!(r.user.email, "new@example.com");
    assert!(r.user.email_verified);
    assert_eq!(w.events.kinds(), ["magic_link_requested", "user_created", "magic_link_login", "login"]);
    let created = w.events.last_of("user_created");
    assert_eq!(created["provider"], "magic_link");
    assert_eq!(created["user_id"], r.user.id.as_str());
    assert!(user(&w, "new@example.com").password_hash.is_none());
}

#[test]
fn a_link_for_an_address_the_account_no_longer_has_is_refused() {
    let w = World::new(&[]);
    let mut rng = TestRandom(9);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    w.store.users.borrow_mut()[0].email = "ada@elsewhere.example".into();
    assert_eq!(code(verify(&w, &mut rng, 1_002, &last_token(&w))), "invalid_link");
}

#[test]
fn malformed_tokens_are_refused_without_a_lookup() {
    let w = World::new(&[]);
    *w.store.fail.borrow_mut() = true; // a lookup would be a 503
    for bad in ["", "has space", "ü", &"a".repeat(300)] {
        assert_eq!(code(verify(&w, &mut TestRandom(10), 1_000, bad)), "invalid_link", "{bad:?}");
    }
}

#[test]
fn malformed_emails_are_422_and_storage_failures_503() {
    let w = World::new(&[]);
    let (deps, meta) = w.at(1_000);
    let err = block_on(deps.request_magic_link(
        &meta,
        &mut TestRandom(11),
        EmailRequest { email: "nope".into(), locale: None },
    ))
    .unwrap_err();
    assert_eq!((err.problem().status, err.problem().code), (422, "invalid_email"));
    *w.store.fail.borrow_mut() = true;
    let err = block_on(deps.request_magic_link(
        &meta,
        &mut TestRandom(11),
        EmailRequest { email: "a@example.com".into(), locale: None },
    ))
    .unwrap_err();
    assert_eq!(err.problem().status, 503);
}

fn account_of(w: &World, now: i64, token: &str) -> Option<String> {
    let (deps, meta) = w.at(now);
    block_on(deps.magic_link_account(&meta, token)).unwrap()
}

#[test]
fn the_landing_page_learns_whose_link_it_is_without_using_it_up() {
    let w = World::new(&[]);
    let mut rng = TestRandom(40);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    request(&w, &mut rng, 1_001, "ada@example.com");
    let token = last_token(&w);
    // Named as often as asked, and still good for one sign-in.
    assert_eq!(account_of(&w, 1_002, &token).as_deref(), Some("ada@example.com"));
    assert_eq!(account_of(&w, 1_003, &format!("  {token}\n")).as_deref(), Some("ada@example.com"));
    verify(&w, &mut rng, 1_004, &token).unwrap();
    // Used, unknown, malformed, superseded or expired: nobody's.
    assert_eq!(account_of(&w, 1_005, &token), None);
    assert_eq!(account_of(&w, 1_005, &"A".repeat(43)), None);
    assert_eq!(account_of(&w, 1_005, "not a token"), None);
    request(&w, &mut rng, 1_010, "ada@example.com");
    let first = last_token(&w);
    request(&w, &mut rng, 1_011, "ada@example.com");
    assert_eq!(account_of(&w, 1_012, &first), None, "superseded");
    assert_eq!(account_of(&w, 1_011 + 600, &last_token(&w)), None, "expired");
}
