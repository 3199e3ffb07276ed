//! Emailed tokens that outlive their reason: every live token of an account —
//! reset link, magic link, email code, verification link — dies with a
//! password change or reset, a ban, a new address, a deletion and a takeover,
//! and stays dead (an unban or a change back does not revive it); one mailed
//! before the account existed dies with its first change; and a sign-in by
//! link or code that such a change overtakes gets no session.

use portcullis::core::error::Error;
use portcullis::core::flows::admin::{Admin, UpdateUserRequest};
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::password::{ChangeRequest, ResetRequest};
use portcullis::core::flows::{AuthResponse, EmailRequest, TokenRequest};

use portcullis::core::ports::AccountStore;
use portcullis::core::time::UnixTime;

use crate::support::{block_on, grant, login_at, signup_at, Done, MemStore, TestRandom, World};

const ADA: &str = "ada@example.com";

/// The four kinds of emailed token, as mailed to Ada.
struct Mailed {
    reset: String,
    magic_link: String,
    code: String,
    verification: String,
}

struct Setup {
    w: World,
    admin: AuthResponse,
    ada: AuthResponse,
}

fn setup(rng: &mut TestRandom) -> Setup {
    let w = World::new(&[]);
    signup_at(&w, rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let admin = login_at(&w, rng, 1_001, "root@example.com", "password-1").unwrap();
    let ada = signup_at(&w, rng, 1_002, ADA, "password-1");
    Setup { w, admin, ada }
}

fn admin(s: &Setup) -> Admin {
    let (deps, meta) = s.w.at(1_500);
    block_on(deps.require_admin(&meta, Some(&s.admin.access_token))).unwrap()
}

/// Asks for one token of every kind for Ada (the verification link with her session).
fn mail_all(s: &Setup, rng: &mut TestRandom) -> Mailed {
    let (deps, meta) = s.w.at(1_100);
    let ev = |kind: &str, field: &str| s.w.events.last_of(kind)[field].as_str().unwrap().to_string();
    block_on(deps.forgot_password(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    block_on(deps.request_otp(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    block_on(deps.request_email_verification(&meta, rng, Some(&s.ada.access_token))).unwrap();
    Mailed {
        reset: ev("password_reset_requested", "token"),
        magic_link: ev("magic_link_requested", "token"),
        code: ev("email_otp_requested", "code"),
        verification: ev("email_verification_requested", "token"),
    }
}

/// Tries every token but those named in `spent`; returns the kinds that still
/// worked. In an order where a working one does not kill the next: the
/// verification link first, followed by Ada signed in while her session
/// lives (so it verifies without a takeover, and a sign-in does not take
/// over either), the reset last (it moves the epoch).
fn still_working(s: &Setup, rng: &mut TestRandom, m: &Mailed, spent: &[&str]) -> Vec<&'static str> {
    let (deps, meta) = s.w.at(1_200);
    let ada_signed_in = block_on(deps.me(&meta, Some(&s.ada.access_token))).is_ok();
    let holder = ada_signed_in.then_some(s.ada.access_token.as_str());
    let dead = |r: Result<(), Error>, expected: &str| match r {
        Err(e) => {
            assert_eq!(e.problem().code, expected);
            true
        }
        Ok(()) => false,
    };
    let mut working = Vec::new();
    if !spent.contains(&"verification")
        && !dead(
            block_on(deps.verify_email(&meta, rng, TokenRequest { token: m.verification.clone() }, holder)).map(drop),
            "invalid_link",
        )
    {
        working.push("verification");
    }
    if !spent.contains(&"code")
        && !dead(
            block_on(deps.verify_otp(
                &meta,
                rng,
                OtpVerifyRequest { email: ADA.into(), code: m.code.clone(), locale: None },
            ))
            .map(drop),
            "invalid_code",
        )
    {
        working.push("code");
    }
    if !spent.contains(&"magic_link")
        && !dead(
            block_on(deps.verify_magic_link(
                &meta,
                rng,
                MagicLinkVerifyRequest { token: m.magic_link.clone(), locale: None },
            ))
            .map(drop),
            "invalid_link",
        )
    {
        working.push("magic_link");
    }
    if !spent.contains(&"reset")
        && !dead(
            block_on(deps.reset_password(
                &meta,
                rng,
                ResetRequest { token: m.reset.clone(), new_password: "a password from the past".into() },
            ))
            .map(drop),
            "invalid_link",
        )
    {
        working.push("reset");
    }
    working
}

#[test]
fn a_password_change_kills_every_emailed_token() {
    let rng = &mut TestRandom(81);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    block_on(deps.change_password(
        &meta,
        rng,
        Some(&s.ada.access_token),
        ChangeRequest { old_password: "password-1".into(), new_password: "password-2".into() },
    ))
    .unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &[]), Vec::<&str>::new());
}

#[test]
fn a_password_reset_kills_every_other_emailed_token() {
    let rng = &mut TestRandom(82);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    block_on(deps.reset_password(
        &meta,
        rng,
        ResetRequest { token: mailed.reset.clone(), new_password: "password-2".into() },
    ))
    .unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &["reset"]), Vec::<&str>::new());
}

#[test]
fn a_ban_kills_every_emailed_token_and_an_unban_does_not_revive_them() {
    let rng = &mut TestRandom(83);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    block_on(deps.admin_set_banned(&meta, rng, &admin(&s), &s.ada.user.id, true)).unwrap();
    block_on(deps.admin_set_banned(&meta, rng, &admin(&s), &s.ada.user.id, false)).unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &[]), Vec::<&str>::new());
}

#[test]
fn a_banned_account_cannot_use_a_reset_link_issued_before_the_ban() {
    let rng = &mut TestRandom(84);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    block_on(deps.admin_set_banned(&meta, rng, &admin(&s), &s.ada.user.id, true)).unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &[]), Vec::<&str>::new());
}

#[test]
fn a_new_address_kills_every_emailed_token_and_changing_back_does_not_revive_them() {
    let rng = &mut TestRandom(85);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    let to = |email: &str| UpdateUserRequest { email: Some(Some(email.into())), ..UpdateUserRequest::default() };
    block_on(deps.admin_update_user(&meta, rng, &admin(&s), &s.ada.user.id, to("ada@new.example"))).unwrap();
    block_on(deps.admin_update_user(&meta, rng, &admin(&s), &s.ada.user.id, to(ADA))).unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &[]), Vec::<&str>::new());
}

#[test]
fn a_deletion_kills_every_emailed_token() {
    let rng = &mut TestRandom(86);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    block_on(deps.admin_delete_user(&meta, rng, &admin(&s), &s.ada.user.id)).unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &[]), Vec::<&str>::new());
}

#[test]
fn a_takeover_kills_every_other_emailed_token() {
    let rng = &mut TestRandom(87);
    let s = setup(rng);
    let mailed = mail_all(&s, rng);
    let (deps, meta) = s.w.at(1_150);
    block_on(deps.verify_magic_link(
        &meta,
        rng,
        MagicLinkVerifyRequest { token: mailed.magic_link.clone(), locale: None },
    ))
    .unwrap();
    assert_eq!(still_working(&s, rng, &mailed, &["magic_link"]), Vec::<&str>::new());
}

#[test]
fn tokens_issued_after_the_change_work() {
    let rng = &mut TestRandom(88);
    let s = setup(rng);
    let (deps, meta) = s.w.at(1_050);
    block_on(deps.change_password(
        &meta,
        rng,
        Some(&s.ada.access_token),
        ChangeRequest { old_password: "password-1".into(), new_password: "password-2".into() },
    ))
    .unwrap();
    let mailed = mail_all(&s, rng);
    assert_eq!(still_working(&s, rng, &mailed, &[]), ["verification", "code", "magic_link", "reset"]);
}

/// A magic link and a code mailed while the address had no account (under
/// passwordless sign-up) carry no account and epoch 0. They are held to the
/// account made for the address afterwards: they die with its first
/// change, here a password change (and a ban and unban would do the same).
#[test]
fn tokens_mailed_before_the_account_existed_die_with_its_first_change() {
    let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true")]);
    let rng = &mut TestRandom(89);
    let (deps, meta) = w.at(1_000);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let link = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.request_otp(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let code = w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string();
    assert!(w.store.email_tokens.borrow().iter().all(|(t, _)| t.user_id.is_none() && t.user_epoch == 0));

    // Ada makes a password account, verifies it, then changes her password.
    let s = signup_at(&w, rng, 1_010, ADA, "ada's first password");
    let (deps, meta) = w.at(1_020);
    block_on(deps.request_email_verification(&meta, rng, Some(&s.access_token))).unwrap();
    let v = w.events.last_of("email_verification_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.verify_email(&meta, rng, TokenRequest { token: v }, Some(&s.access_token))).unwrap();
    block_on(deps.change_password(
        &meta,
        rng,
        Some(&s.access_token),
        ChangeRequest { old_password: "ada's first password".into(), new_password: "ada's second password".into() },
    ))
    .unwrap();

    let (deps, meta) = w.at(1_100);
    let sessions = w.store.sessions.borrow().len();
    assert_eq!(
        block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token: link, locale: None }))
            .unwrap_err()
            .problem()
            .code,
        "invalid_link"
    );
    assert_eq!(
        block_on(deps.verify_otp(&meta, rng, OtpVerifyRequest { email: ADA.into(), code, locale: None }))
            .unwrap_err()
            .problem()
            .code,
        "invalid_code"
    );
    assert_eq!(w.store.sessions.borrow().len(), sessions, "no session");
}

/// A link or code mailed before the account existed is held to the account
/// that has the address: once none has it — the account deleted, or moved
/// to another address — it must not stand again (it would sign a fresh
/// account up, or whoever takes the address next in).
#[test]
fn tokens_mailed_before_the_account_existed_die_with_its_deletion_or_new_address() {
    for moved in [false, true] {
        let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true"), ("MAGIC_LINK_TTL", "3600"), ("OTP_TTL", "3600")]);
        let rng = &mut TestRandom(91);
        let (deps, meta) = w.at(1_000);
        block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
        let link = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
        block_on(deps.request_otp(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
        let code = w.events.last_of("email_otp_requested")["code"].as_str().unwrap().to_string();
        let ada = signup_at(&w, rng, 1_010, ADA, "ada's first password");
        signup_at(&w, rng, 1_011, "root@example.com", "root's password!");
        grant(&w, "root@example.com", "admin");
        let root = login_at(&w, rng, 1_012, "root@example.com", "root's password!").unwrap();
        let (deps, meta) = w.at(1_020);
        let admin = block_on(deps.require_admin(&meta, Some(&root.access_token))).unwrap();
        if moved {
            let to = UpdateUserRequest { email: Some(Some("ada@new.example".into())), ..UpdateUserRequest::default() };
            block_on(deps.admin_update_user(&meta, rng, &admin, &ada.user.id, to)).unwrap();
        } else {
            block_on(deps.admin_delete_user(&meta, rng, &admin, &ada.user.id)).unwrap();
        }
        let (deps, meta) = w.at(1_100);
        let users = w.store.users.borrow().len();
        let r =
            block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token: link, locale: None })).done();
        assert_eq!(r.map(|a| a.user.id).unwrap_err().problem().code, "invalid_link", "moved: {moved}");
        let r =
            block_on(deps.verify_otp(&meta, rng, OtpVerifyRequest { email: ADA.into(), code, locale: None })).done();
        assert_eq!(r.map(|a| a.user.id).unwrap_err().problem().code, "invalid_code", "moved: {moved}");
        assert_eq!(w.store.users.borrow().len(), users, "no account signed up: moved: {moved}");
    }
}

/// Until the account made afterwards first changes, such a token proves the
/// address like any other: it signs the owner in, taking an account someone
/// planted meanwhile over.
#[test]
fn a_token_mailed_before_the_account_existed_takes_over_the_account_planted_since() {
    let w = World::new(&[("ALLOW_PASSWORDLESS_SIGNUP", "true")]);
    let rng = &mut TestRandom(90);
    let (deps, meta) = w.at(1_000);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let link = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let planted = signup_at(&w, rng, 1_010, ADA, "the planter's password");
    let (deps, meta) = w.at(1_020);
    let owner = block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token: link, locale: None }))
        .done()
        .unwrap();
    assert_eq!(owner.user.id, planted.user.id);
    assert!(login_at(&w, rng, 1_021, ADA, "the planter's password").is_err());
}

/// Runs `change` once, right after the next emailed token is consumed.
fn after_consumption(w: &World, change: impl FnOnce(&MemStore) + 'static) {
    let store = w.store.clone();
    *w.store.after_token_consumed.borrow_mut() = Some(Box::new(move || change(&store)));
}

/// A password change that lands between the consumption of a magic link or
/// code and the session it opens wins: the sign-in, which started under the
/// old password, gets 409 `account_changed` and no session.
#[test]
fn a_link_or_code_sign_in_racing_a_password_change_gets_no_session() {
    for kind in ["magic_link", "code"] {
        let rng = &mut TestRandom(91);
        let s = setup(rng);
        let m = mail_all(&s, rng);
        // Verified: so the sign-in takes nothing over.
        s.w.store.users.borrow_mut().iter_mut().for_each(|u| u.email_verified = true);
        let (user_id, keep) = (s.ada.user.id.clone(), s.ada.user.session_id.clone());
        after_consumption(&s.w, move |store| {
            let epoch = store.users.borrow().iter().find(|u| u.id == user_id).unwrap().auth_epoch;
            let changed =
                block_on(store.set_password(&user_id, "a new hash", keep.as_ref(), epoch, UnixTime(1_150), "changed"));
            assert_eq!(changed.unwrap(), Some(0));
        });
        let (deps, meta) = s.w.at(1_150);
        let sessions = s.w.store.sessions.borrow().len();
        let refused = match kind {
            "magic_link" => block_on(deps.verify_magic_link(
                &meta,
                rng,
                MagicLinkVerifyRequest { token: m.magic_link, locale: None },
            )),
            _ => block_on(deps.verify_otp(
                &meta,
                rng,
                OtpVerifyRequest { email: ADA.into(), code: m.code, locale: None },
            )),
        };
        assert_eq!(refused.unwrap_err().problem().code, "account_changed", "{kind}");
        assert_eq!(s.w.store.sessions.borrow().len(), sessions, "{kind}: no session was written");
        assert_eq!(s.w.events.last_of("login_failed")["reason"], "account_changed", "{kind}");
    }
}

/// Unless the sign-in took the account over itself: then the session
/// belongs to the account as that takeover left it, whatever the planter
/// changed before it.
#[test]
fn a_link_sign_in_that_takes_the_account_over_keeps_its_session_across_a_racing_change() {
    let rng = &mut TestRandom(92);
    let s = setup(rng);
    let m = mail_all(&s, rng);
    let (user_id, keep) = (s.ada.user.id.clone(), s.ada.user.session_id.clone());
    after_consumption(&s.w, move |store| {
        let epoch = store.users.borrow().iter().find(|u| u.id == user_id).unwrap().auth_epoch;
        block_on(store.set_password(&user_id, "the planter's new hash", keep.as_ref(), epoch, UnixTime(1_150), "x"))
            .unwrap()
            .unwrap();
    });
    let (deps, meta) = s.w.at(1_150);
    let owner =
        block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token: m.magic_link, locale: None }))
            .done()
            .unwrap();
    assert_eq!(owner.user.id, s.ada.user.id);
    assert!(block_on(deps.me(&meta, Some(&owner.access_token))).is_ok());
    assert!(s.w.store.users.borrow().iter().find(|u| u.email == ADA).unwrap().password_hash.is_none());
}
