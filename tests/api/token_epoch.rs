//! Emailed tokens that outlive their reason: every live token of an account —
//! reset link, magic link, email code, verification link — dies with a
//! password change or reset, a ban, a new address, a deletion and a takeover,
//! and stays dead (an unban or a change back does not revive it).

use portcullis::core::error::Error;
use portcullis::core::flows::admin::{Admin, UpdateUserRequest};
use portcullis::core::flows::otp::OtpVerifyRequest;
use portcullis::core::flows::password::{ChangeRequest, ResetRequest};
use portcullis::core::flows::{AuthResponse, EmailRequest, TokenRequest};

use crate::support::{block_on, grant, login_at, signup_at, TestRandom, World};

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
    block_on(deps.forgot_password(&meta, rng, EmailRequest { email: ADA.into() })).unwrap();
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into() })).unwrap();
    block_on(deps.request_otp(&meta, rng, EmailRequest { email: ADA.into() })).unwrap();
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
/// verification link first (it verifies, so a sign-in does not take over),
/// the reset last (it moves the epoch).
fn still_working(s: &Setup, rng: &mut TestRandom, m: &Mailed, spent: &[&str]) -> Vec<&'static str> {
    let (deps, meta) = s.w.at(1_200);
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
            block_on(deps.verify_email(&meta, rng, TokenRequest { token: m.verification.clone() })).map(drop),
            "invalid_link",
        )
    {
        working.push("verification");
    }
    if !spent.contains(&"code")
        && !dead(
            block_on(deps.verify_otp(&meta, rng, OtpVerifyRequest { email: ADA.into(), code: m.code.clone() }))
                .map(drop),
            "invalid_code",
        )
    {
        working.push("code");
    }
    if !spent.contains(&"magic_link")
        && !dead(
            block_on(deps.verify_magic_link(&meta, rng, TokenRequest { token: m.magic_link.clone() })).map(drop),
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
    block_on(deps.verify_magic_link(&meta, rng, TokenRequest { token: mailed.magic_link.clone() })).unwrap();
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
