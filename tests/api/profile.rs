//! `PATCH /auth/me`: a user edits their own name, avatar and language.

use portcullis::core::body::parse_json;
use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::account::ProfileRequest;

use crate::support::{block_on, code, signup_at, user, TestRandom, World};

const ADA: &str = "ada@example.com";

fn edit(w: &World, rng: &mut TestRandom, bearer: &str, body: &str) -> Result<(), Error> {
    let (deps, meta) = w.at(1_500);
    let req: ProfileRequest = parse_json(body.as_bytes())?;
    block_on(deps.edit_profile(&meta, rng, Some(bearer), req))
}

#[test]
fn only_the_fields_given_change_and_user_updated_names_them() {
    let w = World::new(&[]);
    let mut rng = TestRandom(1);
    let ada = signup_at(&w, &mut rng, 1_000, ADA, "password-1");
    w.store.users.borrow_mut()[0].phone = Some("+44 20 7946 0000".into());

    edit(&w, &mut rng, &ada.access_token, r#"{"name": "  Ada Lovelace ", "locale": "fr_ca"}"#).unwrap();
    let u = user(&w, ADA);
    assert_eq!((u.name.as_deref(), u.locale.as_deref()), (Some("Ada Lovelace"), Some("fr-CA")));
    assert_eq!((u.avatar_url, u.phone.as_deref()), (None, Some("+44 20 7946 0000")));
    let event = w.events.last_of("user_updated");
    assert_eq!(event["user_id"], ada.user.id.as_str());
    assert_eq!(event["fields"], serde_json::json!(["name", "locale"]));

    edit(&w, &mut rng, &ada.access_token, r#"{"avatar_url": "https://img.example/ada.png", "name": null}"#).unwrap();
    let u = user(&w, ADA);
    assert_eq!((u.name, u.avatar_url.as_deref()), (None, Some("https://img.example/ada.png")));
    assert_eq!(u.locale.as_deref(), Some("fr-CA"));
    assert_eq!(w.events.last_of("user_updated")["fields"], serde_json::json!(["name", "avatar_url"]));

    // The same values again, or nothing at all: no write, no event.
    let before = w.events.count("user_updated");
    edit(&w, &mut rng, &ada.access_token, r#"{"locale": "fr-CA"}"#).unwrap();
    edit(&w, &mut rng, &ada.access_token, "{}").unwrap();
    assert_eq!(w.events.count("user_updated"), before);

    edit(&w, &mut rng, &ada.access_token, r#"{"locale": "", "avatar_url": null}"#).unwrap();
    let u = user(&w, ADA);
    assert_eq!((u.locale, u.avatar_url), (None, None));
}

#[test]
fn a_bad_field_refuses_the_whole_edit() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    let ada = signup_at(&w, &mut rng, 1_000, ADA, "password-1");
    let cases = [
        (r#"{"name": "Ada", "avatar_url": "javascript:alert(1)"}"#, "invalid_avatar_url"),
        // Fetched by other users' browsers and maybe the origin: public https only.
        (r#"{"avatar_url": "http://img.example/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://169.254.169.254/latest/meta-data"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://[::1]/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://localhost/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://metadata.google.internal/a"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://intranet/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://user:pw@img.example/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://0x7f.1/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://nas.home.arpa/a.png"}"#, "invalid_avatar_url"),
        (r#"{"avatar_url": "https://printer.lan./a.png"}"#, "invalid_avatar_url"),
        (r#"{"name": "Ada", "locale": "not a tag!"}"#, "invalid_locale"),
        (r#"{"locale": "fr", "name": "Ada\u202Eevil"}"#, "invalid_name"),
        (&format!(r#"{{"locale": "fr", "name": "{}"}}"#, "n".repeat(201)), "invalid_name"),
        (r#"{"name": 7}"#, "validation_failed"),
        // The address, phone, roles and verification are not the user's to set here.
        (r#"{"name": "Ada", "email": "eve@example.com"}"#, "validation_failed"),
        (r#"{"phone": "+1 555 0100"}"#, "validation_failed"),
        (r#"{"email_verified": true}"#, "validation_failed"),
        (r#"{"roles": ["admin"]}"#, "validation_failed"),
    ];
    for (body, want) in cases {
        assert_eq!(code(edit(&w, &mut rng, &ada.access_token, body)), want, "{body}");
    }
    let u = user(&w, ADA);
    assert_eq!((u.name, u.locale, u.avatar_url), (None, None, None));
    assert_eq!(w.events.count("user_updated"), 0);
}

#[test]
fn only_a_live_session_of_an_unbanned_account_edits() {
    let w = World::new(&[]);
    let mut rng = TestRandom(3);
    let ada = signup_at(&w, &mut rng, 1_000, ADA, "password-1");
    assert_eq!(code(edit(&w, &mut rng, "garbage", r#"{"name": "Eve"}"#)), "invalid_token");
    let (deps, meta) = w.at(1_500);
    assert_eq!(code(block_on(deps.edit_profile(&meta, &mut rng, None, ProfileRequest::default()))), "missing_token");

    w.store.users.borrow_mut()[0].banned = true;
    assert_eq!(code(edit(&w, &mut rng, &ada.access_token, r#"{"name": "Eve"}"#)), "account_banned");
    w.store.users.borrow_mut()[0].banned = false;

    let (deps, meta) = w.at(1_200);
    block_on(deps.logout(&meta, &mut rng, Some(&ada.access_token), None)).unwrap();
    assert_eq!(
        edit(&w, &mut rng, &ada.access_token, r#"{"name": "Eve"}"#),
        Err(Error::InvalidToken(TokenError::SessionRevoked))
    );
    assert_eq!(user(&w, ADA).name, None);
    assert_eq!(w.events.count("user_updated"), 0);
}

/// What a takeover of Ada's account writes: the owner's name, the address
/// verified, every session revoked.
fn taken_over(w: &World, id: &portcullis::core::ids::UserId) -> Box<dyn FnOnce()> {
    let (store, id) = (w.store.clone(), id.clone());
    Box::new(move || {
        let mut users = store.users.borrow_mut();
        let u = users.iter_mut().find(|u| u.id == id).unwrap();
        (u.name, u.email_verified) = (Some("Owner".into()), true);
        for (s, _) in store.sessions.borrow_mut().iter_mut().filter(|(s, _)| s.user_id == id) {
            s.revoked_at = Some(portcullis::core::time::UnixTime(1_500));
        }
    })
}

#[test]
fn the_answer_is_read_before_the_write_and_a_session_ended_before_it_gets_nothing() {
    let w = World::new(&[]);
    let mut rng = TestRandom(4);
    let ada = signup_at(&w, &mut rng, 1_000, ADA, "password-1");
    let (deps, meta) = w.at(1_500);
    let body = |s: &str| parse_json::<ProfileRequest>(s.as_bytes()).unwrap();
    let edit =
        |rng: &mut TestRandom, s: &str| block_on(deps.edit_profile_view(&meta, rng, Some(&ada.access_token), body(s)));

    // The owner takes the account over right after the edit's write: the
    // edit is done and answered with what it wrote, nothing of the owner's.
    *w.store.after_profile_write.borrow_mut() = Some(taken_over(&w, &ada.user.id));
    let view = edit(&mut rng, r#"{"name": "Ada L"}"#).unwrap();
    assert_eq!(
        (view.user.name.as_deref(), view.user.email_verified, view.user.session_id.as_ref()),
        (Some("Ada L"), false, ada.user.session_id.as_ref())
    );
    assert_eq!(w.events.count("user_updated"), 1);
    assert_eq!(user(&w, ADA).name.as_deref(), Some("Owner"));

    // An edit that changes nothing writes nothing: a takeover while it read
    // the account ends it with 401 (as `GET /auth/me`), not the owner's view.
    let ada = signup_at(&w, &mut rng, 1_000, "ada2@example.com", "password-1");
    let edit =
        |rng: &mut TestRandom, s: &str| block_on(deps.edit_profile_view(&meta, rng, Some(&ada.access_token), body(s)));
    *w.store.after_session_read.borrow_mut() = Some(taken_over(&w, &ada.user.id));
    assert_eq!(code(edit(&mut rng, "{}")), "session_revoked");
    *w.store.after_session_read.borrow_mut() = Some(taken_over(&w, &ada.user.id));
    assert_eq!(code(block_on(deps.me_with_providers(&meta, Some(&ada.access_token)))), "session_revoked");

    // A ban committed after the answer's reads, before the write (as a ban
    // writes it: sessions revoked too): nothing written, no event.
    let bob = signup_at(&w, &mut rng, 1_000, "bob@example.com", "password-1");
    let (store, id) = (w.store.clone(), bob.user.id.clone());
    *w.store.after_factors_read.borrow_mut() = Some(Box::new(move || {
        store.users.borrow_mut().iter_mut().find(|u| u.id == id).unwrap().banned = true;
        for (s, _) in store.sessions.borrow_mut().iter_mut().filter(|(s, _)| s.user_id == id) {
            s.revoked_at = Some(portcullis::core::time::UnixTime(1_500));
        }
    }));
    let refused =
        block_on(deps.edit_profile_view(&meta, &mut rng, Some(&bob.access_token), body(r#"{"name": "Eve"}"#)));
    assert_eq!(code(refused), "session_revoked");
    assert_eq!(user(&w, "bob@example.com").name, None);
    assert_eq!(w.events.count("user_updated"), 1);
}
