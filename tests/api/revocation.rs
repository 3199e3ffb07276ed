//! Revocation: every action that revokes a session or takes a role away is
//! recorded in the revocation log in the same write, and a gateway set read
//! from the log refuses exactly the tokens it affects; the `fresh` check,
//! introspection (RFC 7662) and revocation by token (RFC 7009).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use portcullis::core::error::Error;
use portcullis::core::flows::admin::Admin;
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::password::{ChangeRequest, ResetRequest};
use portcullis::core::flows::revocation::{Introspection, TokenForm};
use portcullis::core::flows::{AuthResponse, EmailRequest};
use portcullis::core::gateway::revocations::check_fresh;
use portcullis::core::ports::RevocationStore;
use portcullis::core::revocation::retention_secs;
use portcullis::core::signing_keys::SigningKey;
use portcullis::core::time::UnixTime;
use portcullis::core::token::{self, NewAccessToken};

use crate::support::{block_on, code, grant, login_at, refused, set_at, signup_at, TestRandom, World};

const SECRET: &str = "introspection-secret-0123456789abcdef";
const PW: &str = "password-1";

/// Ada signed in twice, and an unrelated user.
fn two_sessions(w: &World, rng: &mut TestRandom) -> (AuthResponse, AuthResponse, AuthResponse) {
    let a = signup_at(w, rng, 1_000, "ada@example.com", PW);
    let b = login_at(w, rng, 1_001, "ada@example.com", PW).unwrap();
    let other = signup_at(w, rng, 1_002, "bob@example.com", PW);
    let set = set_at(w, 1_003);
    assert!(![&a, &b, &other].iter().any(|s| refused(&set, s)), "nothing revoked yet");
    (a, b, other)
}

fn admin(w: &World, rng: &mut TestRandom) -> Admin {
    signup_at(w, rng, 900, "root@example.com", PW);
    grant(w, "root@example.com", "admin");
    let root = login_at(w, rng, 901, "root@example.com", PW).unwrap();
    let (deps, meta) = w.at(1_100);
    block_on(deps.require_admin(&meta, Some(&root.access_token))).unwrap()
}

#[test]
fn logout_is_recorded_for_that_session_only() {
    let (w, mut rng) = (World::new(&[]), TestRandom(1));
    let (a, b, other) = two_sessions(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    block_on(deps.logout(&meta, &mut rng, Some(&a.access_token), None)).unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &a));
    assert!(!refused(&set, &b) && !refused(&set, &other));
}

#[test]
fn revoking_one_the_others_or_all_sessions_is_recorded() {
    let (w, mut rng) = (World::new(&[]), TestRandom(2));
    let (a, b, other) = two_sessions(&w, &mut rng);
    let c = login_at(&w, &mut rng, 1_050, "ada@example.com", PW).unwrap();
    let (deps, meta) = w.at(1_100);
    block_on(deps.revoke_own_session(&meta, &mut rng, Some(&a.access_token), b.user.session_id.as_deref().unwrap()))
        .unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &b) && !refused(&set, &a) && !refused(&set, &c));

    block_on(deps.revoke_other_sessions(&meta, &mut rng, Some(&a.access_token))).unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &c) && !refused(&set, &a), "the others, not the caller's");

    let root = admin(&w, &mut rng);
    let (deps, meta) = w.at(1_200);
    block_on(deps.admin_revoke_sessions(&meta, &mut rng, &root, &a.user.id)).unwrap();
    let set = set_at(&w, 1_200);
    assert!(refused(&set, &a) && !refused(&set, &other));
}

#[test]
fn a_ban_and_a_deletion_are_recorded_for_every_session() {
    let (w, mut rng) = (World::new(&[]), TestRandom(3));
    let (a, b, other) = two_sessions(&w, &mut rng);
    let root = admin(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    block_on(deps.admin_set_banned(&meta, &mut rng, &root, &a.user.id, true)).unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &a) && refused(&set, &b) && !refused(&set, &other));

    let c = login_at(&w, &mut rng, 1_150, "bob@example.com", PW).unwrap();
    let (deps, meta) = w.at(1_200);
    block_on(deps.admin_delete_user(&meta, &mut rng, &root, &other.user.id)).unwrap();
    let set = set_at(&w, 1_200);
    assert!(refused(&set, &other) && refused(&set, &c), "a deleted user's live sessions go with them");
}

#[test]
fn a_password_change_records_the_other_sessions_and_a_reset_all_of_them() {
    let (w, mut rng) = (World::new(&[]), TestRandom(4));
    let (a, b, _) = two_sessions(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    let req = ChangeRequest { old_password: PW.into(), new_password: "password-2".into() };
    block_on(deps.change_password(&meta, &mut rng, Some(&a.access_token), req)).unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &b) && !refused(&set, &a), "the caller keeps their session");

    block_on(deps.forgot_password(&meta, &mut rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    let token = w.events.last_of("password_reset_requested")["token"].as_str().unwrap().to_string();
    let (deps, meta) = w.at(1_200);
    block_on(deps.reset_password(&meta, &mut rng, ResetRequest { token, new_password: "password-3".into() })).unwrap();
    let set = set_at(&w, 1_200);
    assert!(refused(&set, &a));
}

#[test]
fn refresh_token_reuse_is_recorded() {
    let (w, mut rng) = (World::new(&[]), TestRandom(5));
    let (a, b, _) = two_sessions(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    let rotated = block_on(deps.refresh(&meta, &mut rng, Some(&a.refresh_token))).unwrap();
    assert!(!refused(&set_at(&w, 1_100), &rotated));
    // The old token again: a stolen copy.
    assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(&a.refresh_token)))), "invalid_refresh_token");
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &a) && refused(&set, &rotated), "every token of the session");
    assert!(!refused(&set, &b));
}

#[test]
fn a_takeover_of_an_unverified_account_is_recorded_for_every_session() {
    let (w, mut rng) = (World::new(&[]), TestRandom(6));
    let (a, b, other) = two_sessions(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    block_on(deps.request_magic_link(&meta, &mut rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let owner = block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token, locale: None }))
        .unwrap()
        .complete()
        .unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &a) && refused(&set, &b), "the planter's sessions");
    assert!(!refused(&set, &owner) && !refused(&set, &other));
}

#[test]
fn a_role_removal_refuses_tokens_claiming_it_until_a_refresh_brings_the_new_roles() {
    let (w, mut rng) = (World::new(&[]), TestRandom(7));
    let root = admin(&w, &mut rng);
    signup_at(&w, &mut rng, 1_000, "ada@example.com", PW);
    grant(&w, "ada@example.com", "billing");
    grant(&w, "ada@example.com", "support");
    let ada = login_at(&w, &mut rng, 1_010, "ada@example.com", PW).unwrap();
    assert_eq!(ada.user.roles, ["billing", "support"]);
    assert!(!refused(&set_at(&w, 1_020), &ada), "role grants refuse nothing");

    let (deps, meta) = w.at(1_100);
    block_on(deps.admin_set_role(&meta, &mut rng, &root, &ada.user.id, "billing", false)).unwrap();
    let set = set_at(&w, 1_100);
    assert!(refused(&set, &ada), "issued while ada held billing");
    let refreshed = block_on(deps.refresh(&meta, &mut rng, Some(&ada.refresh_token))).unwrap();
    assert_eq!(refreshed.user.roles, ["support"]);
    assert!(!refused(&set, &refreshed), "the refreshed token claims only what ada holds");

    // Granted back: tokens claiming it stand again.
    let (deps, meta) = w.at(1_200);
    block_on(deps.admin_set_role(&meta, &mut rng, &root, &ada.user.id, "billing", true)).unwrap();
    assert!(!refused(&set_at(&w, 1_200), &ada));
}

#[test]
fn revocations_leave_the_set_once_no_token_they_refuse_can_be_valid_and_the_purge_deletes_them() {
    let (w, mut rng) = (World::new(&[]), TestRandom(8));
    let (a, _, _) = two_sessions(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    block_on(deps.logout(&meta, &mut rng, Some(&a.access_token), None)).unwrap();
    let retention = retention_secs(w.config.access_ttl_secs) as i64;
    assert!(refused(&set_at(&w, 1_100 + retention - 1), &a));
    assert!(!refused(&set_at(&w, 1_100 + retention), &a));
    // The upkeep purges what was recorded `retention` or more before it runs.
    assert_eq!(block_on(w.store.purge_revocations(UnixTime(1_100 + retention - 1 - retention))).unwrap(), 0);
    assert_eq!(block_on(w.store.purge_revocations(UnixTime(1_100 + retention - retention))).unwrap(), 1);
    assert!(w.store.revocations.borrow().is_empty());
}

#[test]
fn the_fresh_check_reads_the_session_and_the_roles_now() {
    let (w, mut rng) = (World::new(&[]), TestRandom(9));
    let root = admin(&w, &mut rng);
    let (a, b, _) = two_sessions(&w, &mut rng);
    grant(&w, "ada@example.com", "billing");
    let c = login_at(&w, &mut rng, 1_050, "ada@example.com", PW).unwrap();
    let fresh = |s: &AuthResponse, now: i64| {
        let sid = s.user.session_id.as_ref().unwrap();
        block_on(check_fresh(&*w.store, sid, &s.user.id, &s.user.roles, UnixTime(now), w.config.session_max_age_secs))
    };
    assert_eq!(fresh(&a, 1_100), Ok(()));
    let (deps, meta) = w.at(1_100);
    block_on(deps.logout(&meta, &mut rng, Some(&a.access_token), None)).unwrap();
    assert_eq!(code(fresh(&a, 1_100)), "token_revoked", "at once, no lag");
    assert_eq!(fresh(&b, 1_100), Ok(()));
    block_on(deps.admin_set_role(&meta, &mut rng, &root, &c.user.id, "billing", false)).unwrap();
    assert_eq!(code(fresh(&c, 1_100)), "token_revoked", "a role it claims was removed");
    *w.store.fail.borrow_mut() = true;
    assert_eq!(code(fresh(&b, 1_100)), "service_unavailable", "fails closed");
}

fn introspect(w: &World, now: i64, token: &str) -> Introspection {
    let (deps, meta) = w.at(now);
    block_on(deps.introspect(&meta, &TokenForm { token: token.into() })).unwrap()
}

#[test]
fn introspection_is_active_only_for_live_tokens_and_needs_the_secret() {
    let (w, mut rng) = (World::new(&[("INTROSPECTION_SECRET", SECRET)]), TestRandom(10));
    let (a, b, _) = two_sessions(&w, &mut rng);
    let (deps, _) = w.at(1_100);
    let bearer = format!("Bearer {SECRET}");
    assert_eq!(deps.admit_introspection(Some(&bearer)), Ok(()));
    assert_eq!(deps.admit_introspection(None), Err(Error::InvalidClient { presented: false }));
    assert_eq!(
        deps.admit_introspection(Some("Bearer introspection-secret-0123456789abcdeX")).unwrap_err().problem().status,
        401
    );
    // client_secret_basic, as standard introspection clients send it: any
    // client id, the secret as the password, both form-urlencoded.
    let basic = |id: &str, pw: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{pw}")));
    assert_eq!(deps.admit_introspection(Some(&basic("my-api", SECRET))), Ok(()));
    assert_eq!(deps.admit_introspection(Some(&basic("", SECRET))), Ok(()));
    // A base64 secret holds `+` and `/`: sent form-urlencoded or as is.
    let w64 = World::new(&[("INTROSPECTION_SECRET", "ab+cd/ef+gh/ij+kl/mn+op/qr+st/uv==")]);
    let (d64, _) = w64.at(1_100);
    assert_eq!(d64.admit_introspection(Some(&basic("api", "ab+cd/ef+gh/ij+kl/mn+op/qr+st/uv=="))), Ok(()));
    assert_eq!(
        d64.admit_introspection(Some(&basic("api", "ab%2Bcd%2Fef%2Bgh%2Fij%2Bkl%2Fmn%2Bop%2Fqr%2Bst%2Fuv%3D%3D"))),
        Ok(())
    );
    assert!(d64.admit_introspection(Some(&basic("api", "ab cd/ef gh/ij kl/mn op/qr st/uv=="))).is_err());
    for wrong in [basic("my-api", "nope"), basic(SECRET, ""), "Basic !!!".into(), "Digest x".into(), SECRET.into()] {
        assert_eq!(deps.admit_introspection(Some(&wrong)), Err(Error::InvalidClient { presented: true }), "{wrong}");
    }

    let active = serde_json::to_value(introspect(&w, 1_100, &a.access_token)).unwrap();
    assert_eq!(
        active,
        json!({"active": true, "sub": a.user.id, "sid": a.user.session_id, "exp": 1_000 + 900, "iat": 1_000,
               "iss": "https://auth.test", "aud": "portcullis", "token_type": "Bearer", "roles": []})
    );
    let refresh = serde_json::to_value(introspect(&w, 1_100, &b.refresh_token)).unwrap();
    assert_eq!(refresh["token_type"], "refresh_token");
    assert_eq!((refresh["active"].clone(), refresh["sid"].clone()), (json!(true), json!(b.user.session_id)));

    let inactive = Introspection::INACTIVE;
    assert_eq!(introspect(&w, 1_000 + 900 + 30, &a.access_token), inactive, "expired");
    assert!(introspect(&w, 1_000 + 899, &a.access_token).active, "a second before its exp");
    assert_eq!(introspect(&w, 1_000 + 900, &a.access_token), inactive, "at its exp, within the leeway: inactive");
    assert_eq!(introspect(&w, 1_100, "not.a.token"), inactive, "malformed");
    assert_eq!(introspect(&w, 1_100, "x"), inactive, "unknown refresh token");
    assert_eq!(introspect(&w, 1_100, &"a".repeat(5_000)), inactive, "oversized");
    assert_eq!(introspect(&w, 1_100, &foreign_token(&a)), inactive, "signed by a key that is not ours");
    let (deps, meta) = w.at(1_100);
    block_on(deps.logout(&meta, &mut rng, Some(&a.access_token), None)).unwrap();
    assert_eq!(introspect(&w, 1_100, &a.access_token), inactive, "revoked");
    assert_eq!(introspect(&w, 1_100, &a.refresh_token), inactive, "its refresh token too");
    assert!(introspect(&w, 1_100, &b.access_token).active, "the other session stands");

    let disabled = World::new(&[]);
    let (deps, _) = disabled.at(1_100);
    assert_eq!(code(deps.admit_introspection(Some(&bearer))), "introspection_disabled");
}

/// A token like `a`'s, signed by a key of the same shape that is not ours.
fn foreign_token(a: &AuthResponse) -> String {
    let kek = portcullis::core::signing_keys::Kek::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
    let (_, key): (_, SigningKey) = {
        let store = crate::support::MemStore::default();
        block_on(portcullis::core::flows::key_rotation::load_or_create(
            &store,
            &kek,
            portcullis::core::signing_keys::SigningAlg::EdDsa,
            &mut TestRandom(4242),
            UnixTime(1_000),
        ))
        .unwrap()
    };
    let new = NewAccessToken {
        issuer: "https://auth.test",
        audience: "portcullis",
        user_id: &a.user.id,
        session_id: a.user.session_id.as_ref().unwrap(),
        roles: &[],
        email: &a.user.email,
        email_verified: false,
        jti: "j",
        now: UnixTime(1_000),
        ttl_secs: 900,
        amr: portcullis::core::amr::Amr::PWD,
        auth_time: UnixTime(1_000),
        extra: &Default::default(),
    };
    token::issue(&new, &key).unwrap()
}

fn revoke(w: &World, rng: &mut TestRandom, now: i64, token: &str) {
    let (deps, meta) = w.at(now);
    block_on(deps.revoke_token(&meta, rng, &TokenForm { token: token.into() })).unwrap();
}

#[test]
fn rfc7009_revokes_the_session_of_a_refresh_or_access_token_and_ignores_anything_else() {
    let (w, mut rng) = (World::new(&[]), TestRandom(11));
    let (a, b, other) = two_sessions(&w, &mut rng);
    let events = w.events.count("session_revoked");
    for garbage in ["garbage", "a.b.c", &"z".repeat(300), &foreign_token(&other)] {
        revoke(&w, &mut rng, 1_100, garbage);
    }
    assert_eq!(w.events.count("session_revoked"), events, "nothing revoked");
    assert!(!refused(&set_at(&w, 1_100), &other));

    revoke(&w, &mut rng, 1_100, &a.refresh_token);
    assert!(refused(&set_at(&w, 1_100), &a));
    assert_eq!(
        w.events.last_of("session_revoked"),
        json!({"user_id": a.user.id, "session_id": a.user.session_id, "revoke_all": false})
    );
    revoke(&w, &mut rng, 1_101, &a.refresh_token);
    revoke(&w, &mut rng, 1_101, &a.access_token);
    assert_eq!(w.events.count("session_revoked"), events + 1, "revoked once, reported once");

    revoke(&w, &mut rng, 1_102, &b.access_token);
    assert!(refused(&set_at(&w, 1_102), &b));
    let (deps, meta) = w.at(1_103);
    assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(&b.refresh_token)))), "invalid_refresh_token");
    // An expired access token revokes nothing.
    revoke(&w, &mut rng, 1_002 + 900 + 30, &other.access_token);
    assert!(!refused(&set_at(&w, 1_100), &other));
}

#[test]
fn a_rotated_refresh_token_revokes_its_session_at_revoke_and_at_logout() {
    let (w, mut rng) = (World::new(&[]), TestRandom(12));
    let (a, b, _) = two_sessions(&w, &mut rng);
    // A thief (or the client's own background refresh) rotated first.
    let (deps, meta) = w.at(1_100);
    let a2 = block_on(deps.refresh(&meta, &mut rng, Some(&a.refresh_token))).unwrap();
    revoke(&w, &mut rng, 1_101, &a.refresh_token);
    let (deps, meta) = w.at(1_102);
    assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(&a2.refresh_token)))), "invalid_refresh_token");
    assert_eq!(code(block_on(deps.me(&meta, Some(&a2.access_token)))), "session_revoked");
    assert_eq!(
        w.events.last_of("session_revoked"),
        json!({"user_id": a.user.id, "session_id": a.user.session_id, "revoke_all": false})
    );

    let b2 = block_on(deps.refresh(&meta, &mut rng, Some(&b.refresh_token))).unwrap();
    let logouts = w.events.count("logout");
    block_on(deps.logout(&meta, &mut rng, None, Some(&b.refresh_token))).unwrap();
    assert_eq!(w.events.count("logout"), logouts + 1);
    assert_eq!(code(block_on(deps.me(&meta, Some(&b2.access_token)))), "session_revoked");
    // Once the session is over, its tokens end nothing more.
    assert_eq!(code(block_on(deps.logout(&meta, &mut rng, None, Some(&b2.refresh_token)))), "invalid_refresh_token");
}

#[test]
fn rotated_tokens_end_their_session_once_and_introspect_as_inactive() {
    let (w, mut rng) = (World::new(&[("INTROSPECTION_SECRET", SECRET)]), TestRandom(77));
    let (a, b, other) = two_sessions(&w, &mut rng);
    let (deps, meta) = w.at(1_100);
    let a2 = block_on(deps.refresh(&meta, &mut rng, Some(&a.refresh_token))).unwrap();
    let a3 = block_on(deps.refresh(&meta, &mut rng, Some(&a2.refresh_token))).unwrap();
    // Introspection of rotated tokens: inactive, session alive.
    assert_eq!(introspect(&w, 1_100, &a.refresh_token), Introspection::INACTIVE);
    assert_eq!(introspect(&w, 1_100, &a2.refresh_token), Introspection::INACTIVE);
    assert!(introspect(&w, 1_100, &a3.refresh_token).active);
    // Introspection did not revoke anything.
    assert!(introspect(&w, 1_100, &a3.access_token).active);
    let before = w.events.count("session_revoked");
    // The oldest token (two rotations back) ends the session; b and other stand.
    revoke(&w, &mut rng, 1_101, &a.refresh_token);
    assert_eq!(w.events.count("session_revoked"), before + 1);
    assert!(refused(&set_at(&w, 1_101), &a3));
    assert!(!refused(&set_at(&w, 1_101), &b) && !refused(&set_at(&w, 1_101), &other));
    // Again with each token of the now-revoked family: nothing more.
    revoke(&w, &mut rng, 1_102, &a2.refresh_token);
    revoke(&w, &mut rng, 1_102, &a3.refresh_token);
    assert_eq!(w.events.count("session_revoked"), before + 1);
    let (deps, meta) = w.at(1_103);
    for t in [&a.refresh_token, &a2.refresh_token, &a3.refresh_token] {
        assert_eq!(code(block_on(deps.logout(&meta, &mut rng, None, Some(t)))), "invalid_refresh_token");
        assert_eq!(code(block_on(deps.refresh(&meta, &mut rng, Some(t)))), "invalid_refresh_token");
    }
    assert_eq!(w.events.count("session_revoked"), before + 1);
    // logout with a rotated token emits logout, not session_revoked.
    let b2 = block_on(deps.refresh(&meta, &mut rng, Some(&b.refresh_token))).unwrap();
    let (l, s) = (w.events.count("logout"), w.events.count("session_revoked"));
    block_on(deps.logout(&meta, &mut rng, None, Some(&b.refresh_token))).unwrap();
    assert_eq!((w.events.count("logout"), w.events.count("session_revoked")), (l + 1, s));
    assert!(refused(&set_at(&w, 1_103), &b2));
    assert!(!refused(&set_at(&w, 1_103), &other));
}
