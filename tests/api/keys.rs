//! Signing-key rotation (by an administrator and by the cron trigger) and
//! retirement at once (by an administrator).

use portcullis::core::error::{Error, TokenError};
use portcullis::core::flows;
use portcullis::core::flows::key_rotation::{retire_now, retirement_window_secs, rotate, scheduled, KeyRetirement};
use portcullis::core::signing_keys::{jwks, KeyStatus, SigningAlg};
use portcullis::core::time::UnixTime;
use portcullis::core::token::{self, Expectations, ACCESS_TOKEN_TYPE};

use crate::support::{block_on, grant, login_at, signup_at, TestRandom, World, ISSUER};

fn verify_at(w: &World, raw: &str, now: i64) -> Result<token::VerifiedToken, Error> {
    w.keys.now.set(UnixTime(now));
    let expect =
        Expectations { issuer: ISSUER, audience: "portcullis", token_type: ACCESS_TOKEN_TYPE, max_lifetime_secs: 900 };
    block_on(flows::verify_token(raw, &w.keys, &expect, UnixTime(now)))
}

fn active_kid(w: &World) -> String {
    w.store.keys.borrow().iter().find(|k| k.status == KeyStatus::Active).unwrap().kid.to_string()
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
    assert_eq!(window, 20 + 60 + 60 + 30, "key cache + access token + assertion + leeway");
    let retired = w.store.keys.borrow().iter().find(|k| k.kid == old_kid).cloned().unwrap();
    assert_eq!((retired.status, retired.publish_until), (KeyStatus::Retired, Some(UnixTime(1_010 + 170))));

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
    assert_eq!(jwks(&keys, UnixTime(1_179)).keys.len(), 2);
    assert_eq!(jwks(&keys, UnixTime(1_180)).keys.len(), 1);
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
        portcullis::core::signing_keys::generate(SigningAlg::EdDsa, &mut rng, &w.config.kek, UnixTime(1_002)).unwrap();
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
        portcullis::core::flows::EmailRequest { email: "a@example.com".into(), locale: None },
    ))
    .unwrap();
    block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(1_600 + 86_399))).unwrap();
    assert_eq!(w.store.email_tokens.borrow().len(), 1);
    block_on(scheduled(&*w.store, &w.events, &w.config, &mut rng, UnixTime(1_600 + 86_401))).unwrap();
    assert!(w.store.email_tokens.borrow().is_empty());
}

/// A fresh admin token at `now` (tokens signed by a retired key stop working).
fn admin_at(w: &World, rng: &mut TestRandom, now: i64) -> portcullis::core::flows::admin::Admin {
    let token = login_at(w, rng, now, "root@example.com", "password-1").unwrap().access_token;
    let (deps, meta) = w.at(now);
    block_on(deps.require_admin(&meta, Some(&token))).unwrap()
}

fn kid_of(raw: &str) -> String {
    use base64::Engine;
    let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.split('.').next().unwrap()).unwrap();
    serde_json::from_slice::<serde_json::Value>(&h).unwrap()["kid"].as_str().unwrap().to_string()
}

fn stored_kids(w: &World) -> Vec<String> {
    w.store.keys.borrow().iter().map(|k| k.kid.to_string()).collect()
}

#[test]
fn retiring_a_retired_key_takes_it_out_of_the_jwks_at_once_and_its_tokens_are_refused() {
    let w = World::new(&[]);
    let mut rng = TestRandom(11);
    signup_at(&w, &mut rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let user = signup_at(&w, &mut rng, 1_000, "user@example.com", "password-1");
    let k1 = kid_of(&user.access_token);

    // A rotation: k1 stays published for its tokens.
    let admin = admin_at(&w, &mut rng, 1_010);
    let (deps, meta) = w.at(1_010);
    let k2 = block_on(deps.admin_rotate_keys(&meta, &mut rng, &admin)).unwrap().new_kid;
    assert!(verify_at(&w, &user.access_token, 1_020).is_ok());
    assert_eq!(jwks(&w.store.keys.borrow(), UnixTime(1_020)).keys.len(), 2);

    let admin = admin_at(&w, &mut rng, 1_020);
    let (deps, meta) = w.at(1_020);
    let r = block_on(deps.admin_retire_key(&meta, &mut rng, &admin, &k1)).unwrap();
    assert_eq!(r, KeyRetirement { kid: k1.as_str().into(), new_kid: None });
    assert_eq!(serde_json::to_value(&r).unwrap(), serde_json::json!({"kid": k1, "new_kid": null}));
    assert_eq!(w.events.last_of("key_retired"), serde_json::json!({"kid": k1, "new_kid": null}));
    assert_eq!(w.events.count("key_rotated"), 1, "no rotation: only the one before");

    // Out of the JWKS and the table at once (its sealed private half with it);
    // the active key is untouched.
    assert_eq!(stored_kids(&w), [k2.as_str()]);
    assert_eq!(active_kid(&w), k2);
    let published: Vec<String> =
        jwks(&w.store.keys.borrow(), UnixTime(1_020)).keys.into_iter().map(|k| k.kid.into()).collect();
    assert_eq!(published, [k2.as_str()]);
    // Its tokens are refused, though not expired: by verification and by the auth API.
    assert_eq!(verify_at(&w, &user.access_token, 1_020).unwrap_err(), Error::InvalidToken(TokenError::UnknownKey));
    let (deps, meta) = w.at(1_020);
    assert_eq!(
        block_on(deps.me(&meta, Some(&user.access_token))).unwrap_err(),
        Error::InvalidToken(TokenError::UnknownKey)
    );
    // Once out, it is not found again; nothing more is written or sent.
    let again = block_on(deps.admin_retire_key(&meta, &mut rng, &admin, &k1)).unwrap_err();
    assert_eq!(again.problem().status, 404);
    assert_eq!(again.problem().code, "key_not_found");
    assert_eq!(w.events.count("key_retired"), 1);
}

#[test]
fn retiring_the_active_key_rotates_to_a_fresh_key_first_so_signing_never_stops() {
    for alg in ["EdDSA", "ES256"] {
        let w = World::new(&[("SIGNING_ALG", alg)]);
        let mut rng = TestRandom(12);
        signup_at(&w, &mut rng, 1_000, "root@example.com", "password-1");
        grant(&w, "root@example.com", "admin");
        let user = signup_at(&w, &mut rng, 1_000, "user@example.com", "password-1");
        let k1 = active_kid(&w);
        assert_eq!(kid_of(&user.access_token), k1);

        let admin = admin_at(&w, &mut rng, 1_010);
        let (deps, meta) = w.at(1_010);
        let r = block_on(deps.admin_retire_key(&meta, &mut rng, &admin, &k1)).unwrap();
        let k2 = r.new_kid.clone().expect("a new active key");
        assert_eq!(r.kid, k1);
        assert_ne!(k2, k1);
        assert_eq!(w.events.last_of("key_retired"), serde_json::json!({"kid": k1, "new_kid": k2}), "{alg}");
        assert_eq!(w.events.count("key_rotated"), 0, "{alg}: one event says it all");

        // The old key is gone at once; the new one is active, published, and signs.
        assert_eq!(stored_kids(&w), [k2.as_str()], "{alg}");
        assert_eq!(active_kid(&w), k2);
        let set = jwks(&w.store.keys.borrow(), UnixTime(1_010));
        assert_eq!((set.keys.len(), set.keys[0].kid.as_str(), set.keys[0].alg.as_str()), (1, k2.as_str(), alg));
        assert_eq!(verify_at(&w, &user.access_token, 1_010).unwrap_err(), Error::InvalidToken(TokenError::UnknownKey));
        let (deps, meta) = w.at(1_010);
        assert_eq!(
            block_on(deps.require_admin(&meta, Some(&user.access_token))).unwrap_err(),
            Error::InvalidToken(TokenError::UnknownKey)
        );
        let fresh = login_at(&w, &mut rng, 1_011, "user@example.com", "password-1").unwrap();
        assert_eq!(kid_of(&fresh.access_token), k2);
        assert_eq!(verify_at(&w, &fresh.access_token, 1_011).unwrap().claims.email, "user@example.com");
    }
}

#[test]
fn the_key_ring_is_told_of_a_retirement_or_rotation_before_the_event_even_when_the_queue_fails() {
    let w = World::new(&[]);
    let mut rng = TestRandom(14);
    signup_at(&w, &mut rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let admin = admin_at(&w, &mut rng, 1_001);
    let k1 = active_kid(&w);
    // The queue (and the outbox behind it) refuses the event: the request
    // fails, but the key is retired in D1, so this isolate must stop counting
    // on it now rather than within KEY_CACHE_TTL.
    w.events.fail.set(true);
    let (deps, meta) = w.at(1_001);
    let e = block_on(deps.admin_retire_key(&meta, &mut rng, &admin, &k1)).unwrap_err();
    assert_eq!(e.problem().status, 503);
    assert!(!stored_kids(&w).contains(&k1), "the retirement was written");
    assert_eq!(w.keys.changed.get(), 1, "and the key ring told of it");
    let e = block_on(deps.admin_rotate_keys(&meta, &mut rng, &admin)).unwrap_err();
    assert_eq!(e.problem().status, 503);
    assert_eq!(w.keys.changed.get(), 2);
    // Refused before any write: nothing changed, nothing to tell.
    w.events.fail.set(false);
    let unknown = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    assert!(block_on(deps.admin_retire_key(&meta, &mut rng, &admin, unknown)).is_err());
    assert_eq!(w.keys.changed.get(), 2);
}

#[test]
fn unknown_and_malformed_kids_are_refused_and_nothing_changes() {
    let w = World::new(&[]);
    let mut rng = TestRandom(13);
    signup_at(&w, &mut rng, 1_000, "root@example.com", "password-1");
    grant(&w, "root@example.com", "admin");
    let before = w.store.keys.borrow().clone();
    let admin = admin_at(&w, &mut rng, 1_001);
    let (deps, meta) = w.at(1_001);
    let unknown = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    let e = block_on(deps.admin_retire_key(&meta, &mut rng, &admin, unknown)).unwrap_err();
    assert_eq!((e.problem().status, e.problem().code), (404, "key_not_found"));
    for bad in ["x", "rotate", &"A".repeat(44), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4=", "../../etc/passwd"] {
        let e = block_on(deps.admin_retire_key(&meta, &mut rng, &admin, bad)).unwrap_err();
        assert_eq!((e.problem().status, e.problem().code), (422, "invalid_kid"), "{bad}");
    }
    assert_eq!(*w.store.keys.borrow(), before);
    assert_eq!(w.events.count("key_retired"), 0);
    // Whoever is not an administrator never gets that far: the flow takes an
    // `Admin`, which only require_admin makes.
    let user = signup_at(&w, &mut rng, 1_002, "user@example.com", "password-1");
    let (deps, meta) = w.at(1_002);
    let e = block_on(deps.require_admin(&meta, Some(&user.access_token))).unwrap_err();
    assert_eq!((e.problem().status, e.problem().code), (403, "insufficient_role"));
}

/// A key store on which, the first time a key is rotated, another rotation
/// of the same key wins the race.
struct RotatedMeanwhile<'a> {
    inner: &'a crate::support::MemStore,
    raced: std::cell::Cell<bool>,
}

impl portcullis::core::ports::KeyStore for RotatedMeanwhile<'_> {
    async fn load_keys(&self) -> portcullis::core::ports::Result<Vec<portcullis::core::signing_keys::StoredKey>> {
        self.inner.load_keys().await
    }
    async fn insert_first_key(
        &self,
        key: &portcullis::core::signing_keys::StoredKey,
    ) -> portcullis::core::ports::Result<bool> {
        self.inner.insert_first_key(key).await
    }
    async fn rotate_key(
        &self,
        old_kid: &portcullis::core::signing_keys::Kid,
        new: &portcullis::core::signing_keys::StoredKey,
        now: UnixTime,
        publish_until: UnixTime,
    ) -> portcullis::core::ports::Result<bool> {
        if !self.raced.replace(true) {
            let kek = portcullis::core::signing_keys::Kek::from_bytes([7; 32]);
            let (other, _) =
                portcullis::core::signing_keys::generate(SigningAlg::EdDsa, &mut TestRandom(77), &kek, now).unwrap();
            assert!(self.inner.rotate_key(old_kid, &other, now, now.plus_secs(600)).await?);
        }
        self.inner.rotate_key(old_kid, new, now, publish_until).await
    }
    async fn withdraw_key(
        &self,
        kid: &portcullis::core::signing_keys::Kid,
        now: UnixTime,
    ) -> portcullis::core::ports::Result<bool> {
        self.inner.withdraw_key(kid, now).await
    }
}

#[test]
fn a_retirement_that_loses_a_race_to_a_rotation_withdraws_the_key_the_rotation_retired() {
    use portcullis::core::ports::KeyStore;
    let w = World::new(&[]);
    let mut rng = TestRandom(14);
    signup_at(&w, &mut rng, 1_000, "a@example.com", "password-1");
    let k1 = active_kid(&w);
    let store = RotatedMeanwhile { inner: &w.store, raced: std::cell::Cell::new(false) };
    let r = block_on(retire_now(&store, &w.config.kek, SigningAlg::EdDsa, &mut rng, &k1, UnixTime(1_001))).unwrap();
    // The racing rotation made k1 a retired key; the retry withdrew it.
    assert_eq!(r, KeyRetirement { kid: k1.as_str().into(), new_kid: None });
    let keys = block_on(w.store.load_keys()).unwrap();
    assert!(keys.iter().all(|k| k.kid != k1));
    assert_eq!(keys.iter().filter(|k| k.status == KeyStatus::Active).count(), 1);
}
