//! The admin API: authorisation, listing, editing, deleting, bans, roles, sessions.

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::admin::{Admin, ListQuery, UpdateUserRequest};
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::{AuthResponse, EmailRequest};

use crate::support::{block_on, code, grant, login_at, signup_at, user, TestRandom, World};

/// A world with an administrator (returned signed in) and a user `ada`.
fn setup(rng: &mut TestRandom) -> (World, AuthResponse, AuthResponse) {
    let w = World::new(&[]);
    signup_at(&w, rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let admin = login_at(&w, rng, 1_001, "root@example.com", "password-1").unwrap();
    let ada = signup_at(&w, rng, 1_002, "ada@example.com", "password-1");
    (w, admin, ada)
}

fn admin_of(w: &World, bearer: &str) -> Admin {
    let (deps, meta) = w.at(1_500);
    block_on(deps.require_admin(&meta, Some(bearer))).unwrap()
}

fn list(w: &World, bearer: &str, q: &str) -> Result<serde_json::Value, Error> {
    let a = admin_of(w, bearer);
    let (deps, _) = w.at(1_500);
    block_on(deps.admin_list_users(&a, ListQuery::parse(Some(q))?)).map(|l| serde_json::to_value(l).unwrap())
}

fn patch(w: &World, rng: &mut TestRandom, bearer: &str, id: &str, body: &str) -> Result<serde_json::Value, Error> {
    let a = admin_of(w, bearer);
    let (deps, meta) = w.at(1_500);
    let req: UpdateUserRequest = serde_json::from_str(body).unwrap();
    block_on(deps.admin_update_user(&meta, rng, &a, id, req)).map(|u| serde_json::to_value(u).unwrap())
}

#[test]
fn only_current_unbanned_admins_pass_and_others_get_401_or_403() {
    let mut rng = TestRandom(1);
    let (w, admin, ada) = setup(&mut rng);
    let (deps, meta) = w.at(1_500);
    assert_eq!(code(block_on(deps.require_admin(&meta, Some(&ada.access_token)))), "insufficient_role");
    assert_eq!(code(block_on(deps.require_admin(&meta, None))), "missing_token");
    assert_eq!(code(block_on(deps.require_admin(&meta, Some("garbage")))), "invalid_token");
    let a = block_on(deps.require_admin(&meta, Some(&admin.access_token))).unwrap();
    assert_eq!(a.user().email, "root@example.com");
    w.store.users.borrow_mut()[0].banned = true;
    assert_eq!(code(block_on(deps.require_admin(&meta, Some(&admin.access_token)))), "account_banned");
}

#[test]
fn the_admin_role_is_checked_in_the_store_not_the_token() {
    let mut rng = TestRandom(2);
    let (w, admin, ada) = setup(&mut rng);
    assert_eq!(admin.user.roles, ["admin"]);
    w.store.users.borrow_mut()[0].roles.clear();
    let (deps, meta) = w.at(1_500);
    assert_eq!(code(block_on(deps.require_admin(&meta, Some(&admin.access_token)))), "insufficient_role");
    let _ = ada;
}

#[test]
fn users_are_listed_newest_first_with_query_limit_offset_and_total() {
    let mut rng = TestRandom(3);
    let (w, admin, _) = setup(&mut rng);
    for i in 0..5 {
        signup_at(&w, &mut rng, 1_100 + i, &format!("team{i}@corp.example"), "password-1");
    }
    let all = list(&w, &admin.access_token, "").unwrap();
    assert_eq!((all["total"].as_u64(), all["limit"].as_u64(), all["offset"].as_u64()), (Some(7), Some(20), Some(0)));
    assert_eq!(all["users"][0]["email"], "team4@corp.example");
    let page = list(&w, &admin.access_token, "query=CORP&limit=2&offset=2").unwrap();
    assert_eq!(page["total"], 5);
    let emails: Vec<&str> = page["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["team2@corp.example", "team1@corp.example"]);
    assert!(page["users"][0]["session_id"].is_null());
    assert_eq!(list(&w, &admin.access_token, "limit=1000").unwrap()["limit"], 100);
    assert_eq!(code(list(&w, &admin.access_token, "limit=abc")), "invalid_query");
}

#[test]
fn patch_updates_profile_fields_and_names_them_in_user_updated() {
    let mut rng = TestRandom(4);
    let (w, admin, ada) = setup(&mut rng);
    let id = ada.user.id.as_str();
    let u = patch(
        &w,
        &mut rng,
        &admin.access_token,
        id,
        r#"{"name": "Ada L", "phone": "+44 20 7946 0958", "email_verified": true}"#,
    )
    .unwrap();
    assert_eq!((u["name"].as_str(), u["email_verified"].as_bool()), (Some("Ada L"), Some(true)));
    assert_eq!(w.events.last_of("user_updated")["fields"], serde_json::json!(["name", "phone", "email_verified"]));
    let u = patch(&w, &mut rng, &admin.access_token, id, r#"{"email": "Ada@New.example", "name": null}"#).unwrap();
    assert_eq!(u["email"], "ada@new.example");
    assert!(u["name"].is_null());
    assert_eq!(u["email_verified"], false, "a new address is unverified");
    assert_eq!(w.events.last_of("user_updated")["fields"], serde_json::json!(["email", "name", "email_verified"]));
    patch(&w, &mut rng, &admin.access_token, id, r#"{"locale": "pt_br"}"#).unwrap();
    assert_eq!(user(&w, "ada@new.example").locale.as_deref(), Some("pt-BR"));
    assert_eq!(w.events.last_of("user_updated")["fields"], serde_json::json!(["locale"]));
    assert_eq!(code(patch(&w, &mut rng, &admin.access_token, id, r#"{"locale": "no tag!"}"#)), "invalid_locale");
    let before = w.events.count("user_updated");
    patch(&w, &mut rng, &admin.access_token, id, "{}").unwrap();
    assert_eq!(w.events.count("user_updated"), before, "no change, no event");
}

#[test]
fn patch_refuses_taken_emails_and_bad_values_without_writing() {
    let mut rng = TestRandom(5);
    let (w, admin, ada) = setup(&mut rng);
    let id = ada.user.id.as_str();
    assert_eq!(code(patch(&w, &mut rng, &admin.access_token, id, r#"{"email": "root@example.com"}"#)), "email_taken");
    assert_eq!(
        code(patch(&w, &mut rng, &admin.access_token, id, r#"{"name": "ok", "avatar_url": "javascript:alert(1)"}"#)),
        "invalid_avatar_url"
    );
    assert_eq!(code(patch(&w, &mut rng, &admin.access_token, id, r#"{"email": null}"#)), "invalid_email");
    assert_eq!(code(patch(&w, &mut rng, &admin.access_token, "no-such-user", r#"{"name": "x"}"#)), "not_found");
    let u = user(&w, "ada@example.com");
    assert_eq!(u.name, None);
    assert_eq!(w.events.count("user_updated"), 0);
}

#[test]
fn delete_removes_the_user_with_sessions_and_tokens() {
    let mut rng = TestRandom(6);
    let (w, admin, ada) = setup(&mut rng);
    let (deps, meta) = w.at(1_500);
    block_on(deps.request_magic_link(&meta, &mut rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    block_on(deps.admin_delete_user(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id)).unwrap();
    assert_eq!(
        w.events.last_of("user_deleted"),
        serde_json::json!({"user_id": ada.user.id, "email": "ada@example.com"})
    );
    assert!(w.store.users.borrow().iter().all(|u| u.id != ada.user.id));
    assert!(w.store.sessions.borrow().iter().all(|(s, _)| s.user_id != ada.user.id));
    assert!(w.store.email_tokens.borrow().is_empty());
    assert_eq!(code(block_on(deps.me(&meta, Some(&ada.access_token)))), "session_revoked");
    assert_eq!(
        code(block_on(deps.admin_delete_user(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id))),
        "not_found"
    );
}

#[test]
fn a_ban_revokes_every_session_and_blocks_every_sign_in_until_unbanned() {
    let mut rng = TestRandom(7);
    let (w, admin, ada) = setup(&mut rng);
    let (deps, meta) = w.at(1_500);
    // Secrets issued before the ban.
    block_on(deps.request_magic_link(&meta, &mut rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    let link = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.request_otp(&meta, &mut rng, EmailRequest { email: "ada@example.com".into(), locale: None }))
        .unwrap();
    let otp = w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string();

    let u = block_on(deps.admin_set_banned(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id, true))
        .unwrap();
    assert!(u.banned);
    let kinds = w.events.kinds();
    assert_eq!(&kinds[kinds.len() - 2..], ["user_banned", "session_revoked"]);
    assert_eq!(w.events.last_of("session_revoked")["revoke_all"], true);

    assert_eq!(
        block_on(deps.me(&meta, Some(&ada.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::SessionRevoked)
    );
    assert_eq!(
        block_on(deps.refresh(&meta, &mut rng, Some(&ada.refresh_token))).unwrap_err(),
        Error::InvalidRefreshToken
    );
    assert_eq!(code(login_at(&w, &mut rng, 1_501, "ada@example.com", "password-1")), "account_banned");
    // The ban killed the secrets issued before it (and none is issued while it lasts).
    assert_eq!(
        code(block_on(deps.verify_magic_link(
            &meta,
            &mut rng,
            MagicLinkVerifyRequest { token: link.clone(), locale: None }
        ))),
        "invalid_link"
    );
    assert_eq!(
        code(block_on(deps.verify_otp(
            &meta,
            &mut rng,
            OtpVerifyRequest { email: "ada@example.com".into(), code: otp.clone(), locale: None }
        ))),
        "invalid_code"
    );

    let u = block_on(deps.admin_set_banned(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id, false))
        .unwrap();
    assert!(!u.banned);
    assert_eq!(w.events.kinds().last(), Some(&"user_unbanned"));
    assert!(login_at(&w, &mut rng, 1_502, "ada@example.com", "password-1").is_ok());
    // ... and unbanning does not bring them back.
    assert_eq!(
        code(block_on(deps.verify_magic_link(&meta, &mut rng, MagicLinkVerifyRequest { token: link, locale: None }))),
        "invalid_link"
    );
    assert_eq!(
        code(block_on(deps.verify_otp(
            &meta,
            &mut rng,
            OtpVerifyRequest { email: "ada@example.com".into(), code: otp, locale: None }
        ))),
        "invalid_code"
    );
    let n = w.events.count("user_unbanned");
    block_on(deps.admin_set_banned(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id, false)).unwrap();
    assert_eq!(w.events.count("user_unbanned"), n, "unbanning an unbanned user changes nothing");
}

#[test]
fn roles_are_granted_and_withdrawn_and_reach_the_token_at_refresh() {
    let mut rng = TestRandom(8);
    let (w, admin, ada) = setup(&mut rng);
    let (deps, meta) = w.at(1_500);
    let t = &admin_of(&w, &admin.access_token);
    let u = block_on(deps.admin_set_role(&meta, &mut rng, t, &ada.user.id, "editor", true)).unwrap();
    assert_eq!(u.roles, ["editor"]);
    assert_eq!(w.events.last_of("role_added"), serde_json::json!({"user_id": ada.user.id, "role": "editor"}));
    let n = w.events.count("role_added");
    block_on(deps.admin_set_role(&meta, &mut rng, t, &ada.user.id, "editor", true)).unwrap();
    assert_eq!(w.events.count("role_added"), n);
    let refreshed = block_on(deps.refresh(&meta, &mut rng, Some(&ada.refresh_token))).unwrap();
    assert_eq!(refreshed.user.roles, ["editor"]);
    assert_eq!(block_on(deps.me(&meta, Some(&refreshed.access_token))).unwrap().roles, ["editor"]);
    let u = block_on(deps.admin_set_role(&meta, &mut rng, t, &ada.user.id, "editor", false)).unwrap();
    assert!(u.roles.is_empty());
    assert_eq!(w.events.kinds().last(), Some(&"role_removed"));
    assert_eq!(
        code(block_on(deps.admin_set_role(&meta, &mut rng, t, &ada.user.id, "bad role!", true))),
        "invalid_role"
    );
}

#[test]
fn an_admin_can_sign_a_user_out_everywhere() {
    let mut rng = TestRandom(9);
    let (w, admin, ada) = setup(&mut rng);
    let ada2 = login_at(&w, &mut rng, 1_400, "ada@example.com", "password-1").unwrap();
    let (deps, meta) = w.at(1_500);
    let r = block_on(deps.admin_revoke_sessions(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id))
        .unwrap();
    assert_eq!(r.revoked, 2);
    assert!(block_on(deps.me(&meta, Some(&ada2.access_token))).is_err());
    assert!(block_on(deps.me(&meta, Some(&admin.access_token))).is_ok());
    assert_eq!(w.events.last_of("session_revoked")["user_id"], ada.user.id.as_str());
    // Again, with nothing left to revoke: 0, and no event.
    let events = w.events.count("session_revoked");
    let r = block_on(deps.admin_revoke_sessions(&meta, &mut rng, &admin_of(&w, &admin.access_token), &ada.user.id))
        .unwrap();
    assert_eq!((r.revoked, w.events.count("session_revoked")), (0, events));
}

#[test]
fn admins_cannot_lock_themselves_out() {
    let mut rng = TestRandom(10);
    let (w, admin, _) = setup(&mut rng);
    let a = admin_of(&w, &admin.access_token);
    let me = admin.user.id.as_str();
    let (deps, meta) = w.at(1_500);
    assert_eq!(code(block_on(deps.admin_set_banned(&meta, &mut rng, &a, me, true))), "self_lockout");
    assert_eq!(code(block_on(deps.admin_delete_user(&meta, &mut rng, &a, me))), "self_lockout");
    assert_eq!(code(block_on(deps.admin_set_role(&meta, &mut rng, &a, me, "admin", false))), "self_lockout");
    assert!(block_on(deps.admin_set_role(&meta, &mut rng, &a, me, "editor", true)).is_ok());
    assert!(block_on(deps.admin_set_banned(&meta, &mut rng, &a, me, false)).is_ok());
    let u = user(&w, "root@example.com");
    assert!(!u.banned);
    assert_eq!(u.roles, ["admin", "editor"]);
}
