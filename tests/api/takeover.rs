//! Pre-hijacked accounts: someone signs up with an address that is not
//! theirs. The first proof of that address — a magic link, an email code, a
//! sign-in whose provider verified it, a reset link, a verification link
//! followed without the account's session — takes the account over: the
//! planted password, sessions, identities and emailed tokens go, and nothing
//! the planter starts or reads across the takeover survives it. A signed-in
//! holder's own verification link, and any proof of a verified address,
//! take nothing away.

use serde_json::json;

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::oauth::{AuthorizeRequest, CallbackOutcome};
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::password::ResetRequest;
use portcullis::core::flows::{AuthResponse, EmailRequest, TokenRequest};
use portcullis::core::ids::UserId;
use portcullis::core::ports::{AccountStore, SessionStore};
use portcullis::core::takeover::AddressProof;
use portcullis::core::time::UnixTime;

use crate::oauth::{begin, finish, location_param, sign_in, world, FakeIdp};
use crate::support::{block_on, code, login_at, signup_at, user, Done, TestRandom, World};

const VICTIM: &str = "victim@corp.example";
const PLANTED: &str = "the planter's password";

/// What the planter holds after planting the account.
struct Planted {
    user_id: UserId,
    sessions: [AuthResponse; 2],
    /// A verification link the planter asked for (mailed to the victim).
    verification: String,
}

/// The planter signs up with the victim's address, signs in a second time,
/// links their own identity at the provider and asks for a verification link.
fn plant(w: &World, rng: &mut TestRandom, idp: &FakeIdp) -> Planted {
    let first = signup_at(w, rng, 1_000, VICTIM, PLANTED);
    let second = login_at(w, rng, 1_001, VICTIM, PLANTED).unwrap();
    *idp.claims.borrow_mut() = json!({"sub": "planter", "email": "planter@evil.example", "email_verified": true});
    let b = begin(w, rng, idp, 1_002, Some(&first.access_token));
    assert_eq!(location_param(&finish(w, rng, idp, 1_003, &b), "linked").as_deref(), Some("idp"));
    let (deps, meta) = w.at(1_004);
    block_on(deps.request_email_verification(&meta, rng, Some(&first.access_token))).unwrap();
    let verification = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    assert!(!user(w, VICTIM).email_verified);
    Planted { user_id: first.user.id.clone(), sessions: [first, second], verification }
}

/// Nothing the planter set up still opens the account.
fn assert_planter_is_out(w: &World, rng: &mut TestRandom, idp: &FakeIdp, p: &Planted, now: i64) {
    assert_eq!(login_at(w, rng, now, VICTIM, PLANTED).unwrap_err(), Error::InvalidCredentials);
    let (deps, meta) = w.at(now);
    for s in &p.sessions {
        assert_eq!(
            block_on(deps.me(&meta, Some(&s.access_token))).unwrap_err(),
            Error::InvalidToken(TokenError::SessionRevoked)
        );
        assert_eq!(block_on(deps.refresh(&meta, rng, Some(&s.refresh_token))).unwrap_err(), Error::InvalidRefreshToken);
    }
    assert_eq!(
        code(block_on(deps.verify_email(&meta, rng, TokenRequest { token: p.verification.clone() }, None))),
        "invalid_link",
        "the verification link the planter asked for died"
    );
    // The planter's identity was dropped: it now makes an account of its own.
    let out =
        sign_in(w, rng, idp, now, json!({"sub": "planter", "email": "planter@evil.example", "email_verified": true}));
    let CallbackOutcome::SignedIn { auth, .. } = out else { panic!("{out:?}") };
    assert_ne!(auth.user.id, p.user_id);
    assert_eq!(auth.user.email, "planter@evil.example");
}

/// The events of a takeover that removed the password and the planter's identity.
fn assert_takeover_announced(w: &World, user_id: &str) {
    let verified = w.events.last_of("email_verified");
    assert_eq!(verified, json!({"user_id": user_id, "email": VICTIM}));
    let updated = w.events.last_of("user_updated");
    assert_eq!(updated, json!({"user_id": user_id, "fields": ["password", "providers"]}));
    let revoked = w.events.last_of("session_revoked");
    assert_eq!(revoked, json!({"user_id": user_id, "session_id": null, "revoke_all": true}));
}

#[test]
fn a_magic_link_takes_an_unverified_account_over_from_whoever_planted_it() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(71);
    let planted = plant(&w, rng, &idp);
    let (deps, meta) = w.at(1_100);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: VICTIM.into(), locale: None })).unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let before = w.events.kinds().len();
    let owner =
        block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token, locale: None })).done().unwrap();
    assert_eq!(owner.user.id, planted.user_id, "the owner lands in the account");
    assert!(owner.user.email_verified);
    assert_eq!(
        &w.events.kinds()[before..],
        ["email_verified", "user_updated", "session_revoked", "magic_link_login", "login"]
    );
    assert_takeover_announced(&w, &planted.user_id);
    let stored = user(&w, VICTIM);
    assert!(stored.password_hash.is_none() && stored.email_verified);
    assert!(w.store.oauth.borrow().linked().iter().all(|i| i.user_id != planted.user_id));

    assert_planter_is_out(&w, rng, &idp, &planted, 1_101);
    let (deps, meta) = w.at(1_102);
    assert_eq!(block_on(deps.me(&meta, Some(&owner.access_token))).unwrap().id, planted.user_id);
}

#[test]
fn an_email_code_takes_an_unverified_account_over() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(72);
    let planted = plant(&w, rng, &idp);
    let (deps, meta) = w.at(1_100);
    block_on(deps.request_otp(&meta, rng, EmailRequest { email: VICTIM.into(), locale: None })).unwrap();
    let code = w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string();
    let owner = block_on(deps.verify_otp(&meta, rng, OtpVerifyRequest { email: VICTIM.into(), code, locale: None }))
        .done()
        .unwrap();
    assert_eq!(owner.user.id, planted.user_id);
    assert_takeover_announced(&w, &planted.user_id);
    assert_eq!(w.events.last_of("login")["provider"], "email_otp");
    assert_planter_is_out(&w, rng, &idp, &planted, 1_101);
}

#[test]
fn a_sign_in_whose_provider_verified_the_address_takes_the_account_over_and_keeps_only_its_identity() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(73);
    let planted = plant(&w, rng, &idp);
    // The owner's identity at the same provider as the planter's.
    let out = sign_in(&w, rng, &idp, 1_100, json!({"sub": "owner", "email": VICTIM, "email_verified": true}));
    let CallbackOutcome::SignedIn { auth, .. } = out else { panic!("{out:?}") };
    assert_eq!(auth.user.id, planted.user_id);
    assert_eq!(w.events.last_of("oauth_link"), json!({"user_id": planted.user_id, "email": VICTIM, "provider": "idp"}));
    assert_takeover_announced(&w, &planted.user_id);
    let linked: Vec<String> = w
        .store
        .oauth
        .borrow()
        .linked()
        .iter()
        .filter(|i| i.user_id == planted.user_id)
        .map(|i| i.subject.clone())
        .collect();
    assert_eq!(linked, ["owner"]);
    assert_planter_is_out(&w, rng, &idp, &planted, 1_101);
    // The owner's identity still signs the owner in.
    let again = sign_in(&w, rng, &idp, 1_102, json!({"sub": "owner", "email": VICTIM, "email_verified": true}));
    let CallbackOutcome::SignedIn { auth, .. } = again else { panic!("{again:?}") };
    assert_eq!(auth.user.id, planted.user_id);
}

#[test]
fn a_reset_link_takes_an_unverified_account_over() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(74);
    let planted = plant(&w, rng, &idp);
    let (deps, meta) = w.at(1_100);
    block_on(deps.forgot_password(&meta, rng, EmailRequest { email: VICTIM.into(), locale: None })).unwrap();
    let token = w.events.last_of("password_reset_requested")["token"].as_str().unwrap().to_string();
    let before = w.events.kinds().len();
    let r = block_on(deps.reset_password(
        &meta,
        rng,
        ResetRequest { token, new_password: "the owner's own password".into() },
    ))
    .unwrap();
    assert_eq!(r.revoked_sessions, 2);
    assert_eq!(&w.events.kinds()[before..], ["password_reset", "session_revoked", "email_verified", "user_updated"]);
    // The reset replaced the password (it was not cleared), and dropped the identity.
    assert_eq!(w.events.last_of("user_updated")["fields"], json!(["providers"]));
    assert_planter_is_out(&w, rng, &idp, &planted, 1_101);
    assert!(login_at(&w, rng, 1_102, VICTIM, "the owner's own password").is_ok());
}

#[test]
fn a_password_login_that_read_the_account_before_the_takeover_gets_no_session() {
    let w = world();
    let rng = &mut TestRandom(75);
    let planted = signup_at(&w, rng, 1_000, VICTIM, PLANTED);
    // The owner's proof lands between the planter's read of the account and
    // the planter's session being written.
    *w.store.after_user_read.borrow_mut() = Some(takeover_hook(&w, &planted.user.id, 1_500));
    let sessions_before = w.store.sessions.borrow().len();
    assert_eq!(code(login_at(&w, rng, 1_500, VICTIM, PLANTED)), "account_changed");
    assert_eq!(w.store.sessions.borrow().len(), sessions_before, "no session was written");
    assert_eq!(w.events.last_of("login_failed")["reason"], "account_changed");
    assert!(w.store.sessions.borrow().iter().all(|(s, _)| s.revoked_at.is_some()));
    assert_eq!(login_at(&w, rng, 1_501, VICTIM, PLANTED).unwrap_err(), Error::InvalidCredentials);
}

#[test]
fn a_link_the_planter_started_before_the_takeover_cannot_complete_after_it() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(76);
    let planted = signup_at(&w, rng, 1_000, VICTIM, PLANTED);
    *idp.claims.borrow_mut() = json!({"sub": "planter", "email": "planter@evil.example", "email_verified": true});
    let pending = begin(&w, rng, &idp, 1_001, Some(&planted.access_token));
    let (deps, meta) = w.at(1_100);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: VICTIM.into(), locale: None })).unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token, locale: None })).unwrap();
    let out = finish(&w, rng, &idp, 1_101, &pending);
    assert_eq!(location_param(&out, "error").as_deref(), Some("account_changed"));
    assert_eq!(w.events.last_of("login_failed")["reason"], "account_changed");
    assert!(w.store.oauth.borrow().linked().is_empty());
}

#[test]
fn the_holders_own_verification_link_confirms_the_account_as_it_stands() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(77);
    let s = signup_at(&w, rng, 1_000, "ada@example.com", "ada's own password");
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_email_verification(&meta, rng, Some(&s.access_token))).unwrap();
    let token = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    let before = w.events.kinds().len();
    block_on(deps.verify_email(&meta, rng, TokenRequest { token }, Some(&s.access_token))).unwrap();
    assert_eq!(&w.events.kinds()[before..], ["email_verified"]);
    assert!(block_on(deps.me(&meta, Some(&s.access_token))).is_ok(), "the session lives on");
    assert!(login_at(&w, rng, 1_002, "ada@example.com", "ada's own password").is_ok(), "the password too");
}

#[test]
fn a_proof_of_a_verified_address_takes_nothing_away() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(78);
    let s = signup_at(&w, rng, 1_000, "ada@example.com", "ada's own password");
    w.store.users.borrow_mut()[0].email_verified = true;
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let before = w.events.kinds().len();
    block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token, locale: None })).unwrap();
    assert_eq!(&w.events.kinds()[before..], ["magic_link_login", "login"]);
    assert!(block_on(deps.me(&meta, Some(&s.access_token))).is_ok());
    assert!(login_at(&w, rng, 1_002, "ada@example.com", "ada's own password").is_ok());
}

/// Runs the owner's takeover of `user_id` (a magic link's proof, as the
/// store records it) at `at` — for a hook between a planter's read and write.
fn takeover_hook(w: &World, user_id: &UserId, at: i64) -> Box<dyn FnOnce()> {
    let store = w.store.clone();
    let user_id = user_id.clone();
    Box::new(move || {
        let proof = AddressProof {
            user_id: &user_id,
            email: VICTIM,
            link: None,
            new_password: None,
            profile: Default::default(),
            now: UnixTime(at),
        };
        assert!(block_on(store.prove_address(&proof)).unwrap().unwrap().took_over);
    })
}

/// The planter's `POST /auth/oauth/idp/link` checks its session (live), then
/// the owner's takeover commits, then the flow reads the account at its new
/// epoch: the link must not be stored, or the planter would finish it with
/// their own identity after the takeover and sign into the owner's account.
#[test]
fn a_link_the_planter_starts_across_the_takeover_is_never_stored() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(901);
    let planted = signup_at(&w, rng, 1_000, VICTIM, PLANTED);
    *w.store.after_session_read.borrow_mut() = Some(takeover_hook(&w, &planted.user.id, 1_100));
    let (deps, meta) = w.at(1_100);
    let started = block_on(deps.oauth_link_start(
        &meta,
        rng,
        &idp,
        Some(&planted.access_token),
        "idp",
        AuthorizeRequest { redirect_to: Some("https://app.test/done".into()) },
    ));
    assert_eq!(started.unwrap_err(), Error::InvalidToken(TokenError::SessionRevoked));
    assert!(user(&w, VICTIM).email_verified && user(&w, VICTIM).password_hash.is_none(), "taken over");
    assert!(w.store.oauth.borrow().states().is_empty(), "no link state was stored");
    // The planter's identity opens an account of its own, not the owner's.
    let out = sign_in(
        &w,
        rng,
        &idp,
        1_200,
        json!({"sub": "planter", "email": "planter@evil.example", "email_verified": true}),
    );
    let CallbackOutcome::SignedIn { auth, .. } = out else { panic!("{out:?}") };
    assert_ne!(auth.user.id, planted.user.id);
}

/// The planter signs in through the identity they linked; the owner's
/// takeover, which drops that identity, commits between the flow's read of
/// the identity and its read of the account (so the account is read at its
/// new epoch): no session, since the identity is no longer the account's.
#[test]
fn a_provider_sign_in_through_an_identity_the_takeover_dropped_gets_no_session() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(902);
    let planted = signup_at(&w, rng, 1_000, VICTIM, PLANTED);
    *idp.claims.borrow_mut() = json!({"sub": "planter", "email": "planter@evil.example", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_001, Some(&planted.access_token));
    assert_eq!(location_param(&finish(&w, rng, &idp, 1_002, &b), "linked").as_deref(), Some("idp"));

    *w.store.after_identity_read.borrow_mut() = Some(takeover_hook(&w, &planted.user.id, 1_100));
    let sessions_before = w.store.sessions.borrow().len();
    let out = sign_in(
        &w,
        rng,
        &idp,
        1_100,
        json!({"sub": "planter", "email": "planter@evil.example", "email_verified": true}),
    );
    assert_eq!(location_param(&out, "error").as_deref(), Some("account_changed"), "{out:?}");
    assert_eq!(w.events.last_of("login_failed")["reason"], "account_changed");
    assert!(w.store.oauth.borrow().linked().is_empty(), "the takeover dropped the identity");
    assert_eq!(w.store.sessions.borrow().len(), sessions_before, "no session was written");
    assert!(w.store.sessions.borrow().iter().all(|(s, _)| s.revoked_at.is_some()));
}

/// The planter asks for a verification link, which is mailed to the owner;
/// the owner follows it, not signed in. That proves the address: the
/// account is taken over, and the owner's later sign-in (by provider or
/// link) lands in an account the planter can no longer open.
#[test]
fn following_a_verification_link_without_the_accounts_session_takes_the_account_over() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(904);
    let planted = plant(&w, rng, &idp);
    let (deps, meta) = w.at(1_100);
    let before = w.events.kinds().len();
    let r =
        block_on(deps.verify_email(&meta, rng, TokenRequest { token: planted.verification.clone() }, None)).unwrap();
    assert!(r.email_verified);
    assert_eq!(&w.events.kinds()[before..], ["email_verified", "user_updated", "session_revoked"]);
    assert_takeover_announced(&w, &planted.user_id);
    let stored = user(&w, VICTIM);
    assert!(stored.email_verified && stored.password_hash.is_none());
    // The link is spent: `assert_planter_is_out` finds it dead.
    assert_planter_is_out(&w, rng, &idp, &planted, 1_101);
    // The owner signs in with their own provider-verified identity: the
    // account is theirs, and the planter's password and sessions stay dead.
    let out = sign_in(&w, rng, &idp, 1_200, json!({"sub": "owner", "email": VICTIM, "email_verified": true}));
    let CallbackOutcome::SignedIn { auth, .. } = out else { panic!("{out:?}") };
    assert_eq!(auth.user.id, planted.user_id);
    assert_eq!(login_at(&w, rng, 1_201, VICTIM, PLANTED).unwrap_err(), Error::InvalidCredentials);
    let (deps, meta) = w.at(1_202);
    assert!(block_on(deps.me(&meta, Some(&planted.sessions[0].access_token))).is_err());
}

/// A session of another account is no holder's: the link still takes over.
#[test]
fn a_verification_link_followed_while_signed_in_to_another_account_takes_this_one_over() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(905);
    let planted = plant(&w, rng, &idp);
    let elsewhere = signup_at(&w, rng, 1_050, "owner@home.example", "the owner's other password");
    let (deps, meta) = w.at(1_100);
    block_on(deps.verify_email(
        &meta,
        rng,
        TokenRequest { token: planted.verification.clone() },
        Some(&elsewhere.access_token),
    ))
    .unwrap();
    assert_takeover_announced(&w, &planted.user_id);
    assert_planter_is_out(&w, rng, &idp, &planted, 1_101);
    let (deps, meta) = w.at(1_102);
    assert!(block_on(deps.me(&meta, Some(&elsewhere.access_token))).is_ok(), "the other account is untouched");
}

/// A credential that is presented must authenticate: refused before the
/// link is spent, so following it again (signed in, or not) still works.
#[test]
fn a_verification_link_with_a_dead_credential_is_refused_and_not_spent() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(906);
    let s = signup_at(&w, rng, 1_000, "ada@example.com", "ada's own password");
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_email_verification(&meta, rng, Some(&s.access_token))).unwrap();
    let token = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.logout(&meta, rng, Some(&s.access_token), None)).unwrap();
    assert_eq!(
        block_on(deps.verify_email(&meta, rng, TokenRequest { token: token.clone() }, Some(&s.access_token)))
            .unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
    assert!(!user(&w, "ada@example.com").email_verified);
    let again = login_at(&w, rng, 1_002, "ada@example.com", "ada's own password").unwrap();
    let (deps, meta) = w.at(1_003);
    block_on(deps.verify_email(&meta, rng, TokenRequest { token }, Some(&again.access_token))).unwrap();
    assert!(user(&w, "ada@example.com").email_verified);
    assert!(login_at(&w, rng, 1_004, "ada@example.com", "ada's own password").is_ok(), "kept: the holder's link");
}

/// The holder's session is checked in the write that verifies: one revoked
/// after the request authenticated (here by a sign-out elsewhere) is no
/// holder's, and the link takes the account over.
#[test]
fn a_holder_whose_session_ends_before_the_verifying_write_is_no_holder() {
    let w = World::new(&[]);
    let rng = &mut TestRandom(907);
    let s = signup_at(&w, rng, 1_000, "ada@example.com", "ada's own password");
    let (deps, meta) = w.at(1_001);
    block_on(deps.request_email_verification(&meta, rng, Some(&s.access_token))).unwrap();
    let token = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    let store = w.store.clone();
    let sid = s.user.session_id.clone().unwrap();
    *w.store.after_session_read.borrow_mut() =
        Some(Box::new(move || assert!(block_on(store.revoke_session(&sid, UnixTime(1_002), "logout")).unwrap())));
    let (deps, meta) = w.at(1_002);
    block_on(deps.verify_email(&meta, rng, TokenRequest { token }, Some(&s.access_token))).unwrap();
    let stored = user(&w, "ada@example.com");
    assert!(stored.email_verified && stored.password_hash.is_none(), "taken over");
    assert_eq!(w.events.last_of("user_updated")["fields"], json!(["password"]));
}
