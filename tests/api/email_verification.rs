//! Email verification links.

use portcullis::core::flows::TokenRequest;

use crate::support::{block_on, code, signup_at, user, TestRandom, World};

#[test]
fn a_verification_link_verifies_the_address_once() {
    let w = World::new(&[]);
    let mut rng = TestRandom(1);
    let s = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_email_verification(&meta, &mut rng, Some(&s.access_token))).unwrap();
    let ev = w.events.last_of("email_verification_requested");
    assert_eq!(ev["user_id"], s.user.id.as_str());
    let token = ev["token"].as_str().unwrap().to_string();
    let r = block_on(deps.verify_email(&meta, &mut rng, TokenRequest { token: token.clone() }, Some(&s.access_token)))
        .unwrap();
    assert!(r.email_verified);
    assert!(user(&w, "ada@example.com").email_verified);
    assert_eq!(w.events.last_of("email_verified")["email"], "ada@example.com");
    assert_eq!(code(block_on(deps.verify_email(&meta, &mut rng, TokenRequest { token }, None))), "invalid_link");
}

#[test]
fn a_verified_address_gets_no_new_link() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    let s = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    w.store.users.borrow_mut()[0].email_verified = true;
    let (deps, meta) = w.at(1_001);
    let r = block_on(deps.request_email_verification(&meta, &mut rng, Some(&s.access_token))).unwrap();
    assert!(r.message.contains("already"));
    assert_eq!(w.events.count("email_verification_requested"), 0);
}

#[test]
fn a_link_sent_to_a_former_address_verifies_nothing() {
    let w = World::new(&[]);
    let mut rng = TestRandom(3);
    let s = signup_at(&w, &mut rng, 1_000, "ada@example.com", "password-1");
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_email_verification(&meta, &mut rng, Some(&s.access_token))).unwrap();
    let token = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    w.store.users.borrow_mut()[0].email = "ada@new.example".into();
    assert_eq!(code(block_on(deps.verify_email(&meta, &mut rng, TokenRequest { token }, None))), "invalid_link");
    assert!(!w.store.users.borrow()[0].email_verified);
}

#[test]
fn requesting_needs_a_live_session() {
    let w = World::new(&[]);
    let (deps, meta) = w.at(1_000);
    assert_eq!(code(block_on(deps.request_email_verification(&meta, &mut TestRandom(4), None))), "missing_token");
}
