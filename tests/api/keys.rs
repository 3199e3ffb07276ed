//! Signing-key rotation: by an administrator and by the cron trigger.

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows::keys::{retirement_window_secs, rotate, scheduled};
use portcullis::core::keys::{jwks, KeyStatus, SigningAlg};
use portcullis::core::time::UnixTime;
use portcullis::core::token::{self, Expectations, ACCESS_TOKEN_TYPE};

use crate::support::{block_on, grant, login_at, signup_at, TestRandom, World, ISSUER};

fn verify_at(w: &World, raw: &str, now: i64) -> Result<token::VerifiedToken, Error> {
    w.keys.now.set(UnixTime(now));
    let expect = Expectations { issuer: ISSUER, audience: "portcullis", token_type: ACCESS_TOKEN_TYPE };
    block_on(token::verify(raw, &w.keys, &expect, UnixTime(now)))
}

fn active_kid(w: &World) -> String {
    w.store.keys.borrow().iter().find(|k| k.status == KeyStatus::Active).unwrap().kid.clone()
}

#[test]
fn rotation_retires_the_old_key_until_its_last_token_expires() {
    let w = World::new(&[("ACCESS_TTL", "60"), ("KEY_CACHE_TTL", "20")]);
    let mut rng = TestRandom(1);
    signup_at(&w, &mut rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let admin = login_at(&w, &mut rng, 1_000, "root@example.com", "password-1").unwrap();
    let old_kid = active_kid(&w);

    let (deps, meta) = w.at(1_010);
    let a = block_on(deps.require_admin(&meta, Some(&admin.access_token))).unwrap();
    let r = block_on(deps.admin_rotate_keys(&meta, &mut rng, &a)).unwrap();
    assert_eq!(r.old_kid.as_deref(), Some(old_kid.as_str()));
    assert_ne!(r.new_kid, old_kid);
    assert_eq!(active_kid(&w), r.new_kid);
    assert_eq!(w.events.last_of("key_rotated"), serde_json::json!({"old_kid": old_kid, "new_kid": r.new_kid}));
    let window = retirement_window_secs(&w.config);
    assert_eq!(window, 2 * 20 + 60 + 60 + 30, "key cache (fresh, then its grace) + access token + assertion + leeway");
    let retired = w.store.keys.borrow().iter().find(|k| k.kid == old_kid).cloned().unwrap();
    assert_eq!((retired.status, retired.publish_until), (KeyStatus::Retired, Some(UnixTime(1_010 + 190))));

    // New tokens are signed by the new key; the old token still verifies...
    let fresh = login_at(&w, &mut rng, 1_011, "root@example.com", "password-1").unwrap();
    assert!(fresh.access_token.contains('.'));
    assert_eq!(verify_at(&w, &fresh.access_token, 1_012).unwrap().claims.email, "root@example.com");
    assert!(verify_at(&w, &admin.access_token, 1_012).is_ok());
    // ...until it expires (exp 1_060 plus 30 s leeway), and not after.
    assert!(verify_at(&w, &admin.access_token, 1_089).is_ok());
    assert_eq!(verify_at(&w, &admin.access_token, 1_090).unwrap_err(), Error::InvalidToken(TokenError::Expired));
    // The JWKS keeps the old key exactly as long as the window.
    let keys = w.store.keys.borrow().clone();
    assert_eq!(jwks(&keys, UnixTime(1_199)).keys.len(), 2);
    assert_eq!(jwks(&keys, UnixTime(1_200)).keys.len(), 1);
}

#[test]
fn a_rotation_that_lost_a_race_writes_nothing() {
    let w = World::new(&[]);
    let mut rng = TestRandom(2);
    signup_at(&w, &mut rng, 1_000, "a@example.com", "password-1");
    let store = &*w.store;
    let first =
        block_on(rotate(store, &w.config.kek, SigningAlg::EdDsa, &mut rng, UnixTime(1_001), 100)).unwrap().unwrap();
    // A second rotator that still believes the first key is active.
    let stale = first.old_kid.clone().unwrap();
    let (new, _) =
        portcullis::core::keys::generate(SigningAlg::EdDsa, &mut rng, &w.config.kek, UnixTime(1_002)).unwrap();
    use portcullis::core::ports::KeyStore;
    assert!(!block_on(store.rotate_key(&stale, &new, UnixTime(1_002), UnixTime(1_102))).unwrap());
    let keys = store.keys.borrow();
    assert_eq!(keys.iter().filter(|k| k.status == KeyStatus::Active).count(), 1);
    assert!(keys.iter().all(|k| k.kid != new.kid));
}

#[test]
fn the_cron_rotates_only_once_the_key_is_rotation_interval_old() {
    let w = World::new(&[("ROTATION_INTERVAL", "3600")]);
    let mut rng = TestRandom(3);
    assert_eq!(
        block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(1_000))).unwrap(),
        None,
        "no key yet"
    );
    signup_at(&w, &mut rng, 1_000, "a@example.com", "password-1");
    let first = active_kid(&w);
    assert_eq!(block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(4_599))).unwrap(), None);
    let r = block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(4_600))).unwrap().unwrap();
    assert_eq!(r.old_kid.as_deref(), Some(first.as_str()));
    assert_eq!(w.events.last_of("key_rotated")["new_kid"], r.new_kid.as_str());
    assert_eq!(block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(4_601))).unwrap(), None);
    // Retired keys no longer published are deleted by the next rotation.
    block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(4_600 + 3_600))).unwrap().unwrap();
    assert!(w.store.keys.borrow().iter().all(|k| k.kid != first));
    assert_eq!(w.events.count("key_rotated"), 2);
}

#[test]
fn the_cron_purges_long_expired_email_tokens() {
    let w = World::new(&[]);
    let mut rng = TestRandom(4);
    signup_at(&w, &mut rng, 1_000, "a@example.com", "password-1");
    let (deps, meta) = w.at(1_000);
    block_on(deps.request_magic_link(
        &meta,
        &mut rng,
        portcullis::core::flows::EmailRequest { email: "a@example.com".into() },
    ))
    .unwrap();
    block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(1_600 + 86_399))).unwrap();
    assert_eq!(w.store.email_tokens.borrow().len(), 1);
    block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(1_600 + 86_401))).unwrap();
    assert!(w.store.email_tokens.borrow().is_empty());
}
