//! The isolate's key ring: signing keys loaded from D1 once and cached, and
//! imported once into the runtime's native crypto (`js/signatures.js`: Ed25519
//! or ECDSA P-256), which signs and verifies synchronously. The private
//! halves of our published Ed25519 keys recognise their own signatures
//! before any native verification ([`keys::recognisable`]).
//!
//! The gateway's hot path never touches D1: [`EdgeKeys::verify_cached`] and
//! [`EdgeKeys::signer_cached`] answer from the cache without I/O, or say that
//! the cache must be (re)loaded first ([`EdgeKeys::refresh`]). An unknown
//! `kid` triggers at most one reload per [`UNKNOWN_KID_RELOAD_SECS`], whatever
//! tokens arrive; keys only ever come from our own table, never from a URL in
//! a token.
//!
//! Expiry ([`key_cache_state`]): from half of `KEY_CACHE_TTL` the keys are
//! reloaded in the background ([`EdgeKeys::background_refresh`], one reload
//! at a time) while requests keep using the cached ones; so a D1 round trip,
//! or a D1 outage shorter than the rest of `KEY_CACHE_TTL`, never stalls the
//! gateway merely because the keys aged. At `KEY_CACHE_TTL`, keys are
//! reloaded before any use: nothing here counts on keys older than that.
//!
//! Rotation: the isolate that rotates calls [`invalidate`] (through
//! [`KeyRing::keys_changed`], before the event is emitted) and signs with the
//! new key from its next request; every other isolate reloads within
//! `KEY_CACHE_TTL` (and at once on meeting the new `kid`). Retired keys stay
//! published long enough to cover that window (see
//! [`crate::core::flows::keys::retirement_window_secs`]).
//!
//! Retirement at once: a withdrawn key is gone from the next load, and with
//! it everything that relied on it — its imported public key and its
//! own-signature check (both reached only through a published `kid`), and,
//! in the gateway's token cache, every token it signed and every assertion
//! it signed ([`EdgeKeys::vouches`]). If it was the active key, the next load
//! signs with its successor.
//!
//! A reload that began before an [`invalidate`] — and may have read the
//! keys before the change — installs as stale ([`KeySlot`]): it cannot put a
//! retired key back for `KEY_CACHE_TTL`.
//!
//! The JWKS ([`EdgeKeys::jwks`]) is served from keys read less than
//! [`JWKS_RELOAD_SECS`](crate::core::flows::keys::JWKS_RELOAD_SECS) ago and
//! read again after that or after an invalidation: a burst of JWKS requests
//! costs one D1 read per isolate.
//!
//! Each access token signed with the ring's key is handed to the gateway's
//! token cache ([`crate::edge::proxy::remember_issued`]), already verified.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::JsValue;
use worker::Env;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::flows::keys::{jwks_reload_due, key_cache_state, load_or_create, KeyCacheState};
use crate::core::gateway::cache::KeySlot;
use crate::core::keys::{self, jwks, Jwks, SigningAlg, SigningKey, StoredKey};
use crate::core::ports::{KeyRing, Result};
use crate::core::time::UnixTime;
use crate::core::token::VerifiedToken;
use crate::edge::d1::D1Store;
use crate::edge::error::{EdgeError, EdgeResult};
use crate::edge::js::{
    native_private_key, native_public_key, native_sign_ed25519, native_sign_es256, native_verify_ed25519,
    native_verify_es256,
};
use crate::edge::platform::{self, OsRandom};

/// Verifies a JWS signature natively with a key imported for `alg`.
fn native_verify(alg: SigningAlg, key: &JsValue, data: &[u8], signature: &[u8]) -> bool {
    match alg {
        SigningAlg::EdDsa => native_verify_ed25519(key, data, signature),
        // JWS's r‖s, which must be a valid signature encoding, as DER.
        SigningAlg::Es256 => p256::ecdsa::Signature::from_slice(signature)
            .is_ok_and(|sig| native_verify_es256(key, data, sig.to_der().as_bytes())),
    }
}

/// A JWS signature (64 bytes) made natively with a key imported for `alg`.
fn native_sign(alg: SigningAlg, key: &JsValue, data: &[u8]) -> Result<Vec<u8>> {
    let failed = |e: JsValue| Error::from(EdgeError::from(e).context("sign"));
    match alg {
        SigningAlg::EdDsa => native_sign_ed25519(key, data).map(|s| s.to_vec()).map_err(failed),
        SigningAlg::Es256 => {
            let der = native_sign_es256(key, data).map_err(failed)?.to_vec();
            let sig = p256::ecdsa::Signature::from_der(&der)
                .map_err(|e| Error::Internal(format!("sign: the runtime's ECDSA signature: {e}")))?;
            Ok(sig.to_bytes().to_vec())
        }
    }
}

/// Least time between two reloads caused by unknown `kid`s.
pub const UNKNOWN_KID_RELOAD_SECS: i64 = 30;
/// Least time between two background reloads (one that did not finish by
/// then is given up as lost).
const BACKGROUND_RELOAD_SECS: i64 = 30;

struct Cache {
    keys: Vec<StoredKey>,
    signing: Option<SigningKey>,
    /// The signing key imported natively, with its kid.
    signing_native: Option<(String, JsValue)>,
    /// Public keys imported natively, by kid.
    imported: HashMap<String, JsValue>,
    /// The published keys whose own signatures are recognised without a
    /// signature operation ([`keys::recognisable`]).
    own: Vec<SigningKey>,
}

thread_local! {
    static CACHE: RefCell<KeySlot<Cache>> = const { RefCell::new(KeySlot::new()) };
    static LAST_MISS_RELOAD: RefCell<UnixTime> = const { RefCell::new(UnixTime(i64::MIN)) };
    static LAST_BACKGROUND_RELOAD: std::cell::Cell<UnixTime> = const { std::cell::Cell::new(UnixTime(i64::MIN)) };
}

/// What the cache alone can say about a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// The key is known: the signature is valid or not.
    Verified(bool),
    /// No published key has this `kid`, and no reload is due.
    UnknownKey,
    /// The cache is cold or past its grace, or the `kid` is unknown and a
    /// reload is due: call [`EdgeKeys::refresh`] and ask again.
    NeedsLoad,
}

/// The key ring of this isolate, reaching D1 only when the cache is cold.
pub struct EdgeKeys<'a> {
    env: &'a Env,
    config: Rc<Config>,
}

impl<'a> EdgeKeys<'a> {
    /// A handle on the isolate's key ring.
    pub fn new(env: &'a Env, config: Rc<Config>) -> Self {
        Self { env, config }
    }

    /// Reads the keys from D1 and installs them: fresh, unless this isolate
    /// invalidated its keys meanwhile ([`KeySlot::install`]); returns which.
    async fn reload(&self) -> Result<bool> {
        let began = CACHE.with(|c| c.borrow().begin_reload());
        let store = D1Store::new(self.env)?;
        let now = platform::now();
        let (keys, signing) =
            load_or_create(&store, &self.config.kek, self.config.signing_alg, &mut OsRandom, now).await?;
        Ok(CACHE.with(|c| {
            c.borrow_mut().install(began, now, |old| {
                let (imported, signing_native, own) =
                    old.map(|old| (old.imported, old.signing_native, old.own)).unwrap_or_default();
                let signing_native = signing_native.filter(|(kid, _)| *kid == signing.kid);
                let own = keys::recognisable(&keys, &signing, own, &self.config.kek, now);
                Cache { keys, signing: Some(signing), signing_native, imported, own }
            })
        }))
    }

    /// What the cached keys may be used for at `now`.
    fn state(&self, now: UnixTime) -> KeyCacheState {
        let loaded_at = CACHE.with(|c| c.borrow().loaded_at());
        loaded_at.map_or(KeyCacheState::Stale, |at| key_cache_state(&self.config, at, now))
    }

    fn is_fresh(&self, now: UnixTime) -> bool {
        self.state(now) == KeyCacheState::Fresh
    }

    /// Fresh, or due for a background reload: usable without I/O.
    fn is_usable(&self, now: UnixTime) -> bool {
        self.state(now) != KeyCacheState::Stale
    }

    /// When the keys are due for a background reload at `now` and none
    /// started in the last [`BACKGROUND_RELOAD_SECS`]: the reload, to hand to
    /// `waitUntil`. Requests meanwhile keep using the cached keys.
    pub fn background_refresh(&self, now: UnixTime) -> Option<js_sys::Promise> {
        if self.state(now) != KeyCacheState::Refresh {
            return None;
        }
        let last = LAST_BACKGROUND_RELOAD.with(std::cell::Cell::get);
        if now.0.saturating_sub(last.0) < BACKGROUND_RELOAD_SECS {
            return None;
        }
        LAST_BACKGROUND_RELOAD.with(|t| t.set(now));
        let env = self.env.clone();
        let config = Rc::clone(&self.config);
        Some(wasm_bindgen_futures::future_to_promise(async move {
            if let Err(e) = EdgeKeys::new(&env, config).reload().await {
                worker::console_error!("portcullis.error background key reload: {e}");
            }
            Ok(JsValue::UNDEFINED)
        }))
    }

    async fn ensure_loaded(&self) -> Result<()> {
        if self.is_fresh(platform::now()) {
            return Ok(());
        }
        self.reload().await.map(drop)
    }

    /// Loads the keys if the cache is cold or expired; with `unknown_kid`,
    /// also reloads once per [`UNKNOWN_KID_RELOAD_SECS`] for a `kid` not in it.
    pub async fn refresh(&self, unknown_kid: Option<&str>) -> Result<()> {
        let now = platform::now();
        let unknown = unknown_kid.is_some_and(|kid| {
            CACHE.with(|c| c.borrow().get().is_some_and(|c| published(&c.keys, kid, now).is_none()))
        });
        let due_for_kid = unknown && reload_due(now, true);
        if !self.is_fresh(now) || due_for_kid {
            return self.reload().await.map(drop);
        }
        Ok(())
    }

    /// The published keys, as JWKS: from keys read from D1 less than
    /// [`JWKS_RELOAD_SECS`](crate::core::flows::keys::JWKS_RELOAD_SECS) ago
    /// (and not invalidated since), else read again — which reloads this
    /// isolate's keys. So requests in a burst share one D1 read, and a key
    /// this isolate retired leaves at once. If D1 cannot be read, keys the
    /// gateway may still use (loaded less than `KEY_CACHE_TTL` ago) answer;
    /// past that, or after an invalidation, the error does (503).
    pub async fn jwks(&self) -> Result<Jwks> {
        // Twice at most: a reload that an invalidation overtook installs as
        // stale, and is read again.
        for _ in 0..2 {
            let now = platform::now();
            if !jwks_reload_due(CACHE.with(|c| c.borrow().loaded_at()), now) {
                break;
            }
            match self.reload().await {
                Ok(_) => {}
                Err(e) if self.is_usable(platform::now()) => {
                    worker::console_error!("portcullis.error JWKS from cached keys, D1 unreadable: {e}");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let now = platform::now();
        if !self.is_usable(now) {
            return Err(Error::unavailable("keys", "the signing keys could not be read"));
        }
        Ok(CACHE.with(|c| c.borrow().get().map(|c| jwks(&c.keys, now)).unwrap_or(Jwks { keys: Vec::new() })))
    }

    /// Verifies a signature made with `alg` by `kid` from the cache at
    /// `now`, without I/O; a key of another algorithm refuses it. A
    /// signature that one of our published Ed25519 keys made (the active
    /// one, or a retired one whose tokens are still live) is recognised
    /// without a signature operation ([`SigningKey::made`]: two hashes and a
    /// multiply-add, against a native verify's 55–70 µs here). Anything
    /// else, and any signature not recognised, is verified natively.
    pub fn verify_cached(
        &self,
        kid: &str,
        alg: SigningAlg,
        signed: &[u8],
        signature: &[u8],
        now: UnixTime,
    ) -> Result<Cached> {
        if !self.is_usable(now) {
            return Ok(Cached::NeedsLoad);
        }
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let missing = || Ok(if reload_due(now, false) { Cached::NeedsLoad } else { Cached::UnknownKey });
            let Some(c) = c.get_mut() else { return missing() };
            // Imported keys stay valid only while the key is published.
            let Some(stored) = published(&c.keys, kid, now) else { return missing() };
            if stored.signing_alg()? != alg {
                return Ok(Cached::Verified(false));
            }
            if c.own.iter().any(|k| k.kid == kid && k.made(signed, signature)) {
                return Ok(Cached::Verified(true));
            }
            let key = match c.imported.get(kid) {
                Some(k) => k.clone(),
                None => {
                    let (x, y) = stored.public_coordinates()?;
                    let k = native_public_key(&x, y.as_deref().unwrap_or(""))
                        .context(&format!("key {kid}: cannot import"))?;
                    c.imported.insert(kid.to_string(), k.clone());
                    k
                }
            };
            Ok(Cached::Verified(native_verify(alg, &key, signed, signature)))
        })
    }

    /// Whether `kid` is published by the cached keys at `now`, and those
    /// keys may still be used: what the gateway's token cache serves a
    /// cached token, or keeps its assertion, on. Without I/O; false when the
    /// keys must be reloaded first.
    pub fn vouches(&self, kid: &str, now: UnixTime) -> bool {
        CACHE.with(|c| {
            let slot = c.borrow();
            slot.loaded_at().is_some_and(|at| key_cache_state(&self.config, at, now) != KeyCacheState::Stale)
                && slot.get().is_some_and(|c| published(&c.keys, kid, now).is_some())
        })
    }

    /// The active signing key, imported natively, without I/O; `None` when
    /// the cache must be loaded first.
    pub fn signer_cached(&self, now: UnixTime) -> Result<Option<Signer>> {
        if !self.is_usable(now) {
            return Ok(None);
        }
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let Some(c) = c.get_mut() else { return Ok(None) };
            let Some((kid, alg)) = c.signing.as_ref().map(|s| (s.kid.clone(), s.alg())) else { return Ok(None) };
            Ok(native_signing_key(&c.signing, &mut c.signing_native)?.map(|key| Signer { kid, alg, key }))
        })
    }
}

/// The signing key imported natively, once per key (kept in `native` with its kid).
fn native_signing_key(signing: &Option<SigningKey>, native: &mut Option<(String, JsValue)>) -> Result<Option<JsValue>> {
    let Some(signing) = signing else { return Ok(None) };
    if let Some((_, key)) = native {
        return Ok(Some(key.clone()));
    }
    let key = import_private(signing)?;
    *native = Some((signing.kid.clone(), key.clone()));
    Ok(Some(key))
}

/// The active signing key, ready to sign synchronously.
pub struct Signer {
    kid: String,
    alg: SigningAlg,
    key: JsValue,
}

impl Signer {
    /// The key's `kid`, for the header of what it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's algorithm, for the header of what it signs.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The JWS signature over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>> {
        native_sign(self.alg, &self.key, data)
    }
}

/// The key `kid` if it is published at `now`.
fn published<'k>(keys: &'k [StoredKey], kid: &str, now: UnixTime) -> Option<&'k StoredKey> {
    keys.iter().find(|s| s.kid == kid && s.is_published(now))
}

/// Whether a reload for an unknown `kid` may happen now; `claim` records it.
fn reload_due(now: UnixTime, claim: bool) -> bool {
    LAST_MISS_RELOAD.with(|t| {
        let mut t = t.borrow_mut();
        let due = now.0.saturating_sub(t.0) >= UNKNOWN_KID_RELOAD_SECS;
        if due && claim {
            *t = now;
        }
        due
    })
}

fn import_private(key: &SigningKey) -> Result<JsValue> {
    let jwk = key.private_jwk();
    Ok(native_private_key(&jwk.d, &jwk.x, jwk.y.as_deref().unwrap_or(""))
        .context(&format!("key {}: cannot import", key.kid))?)
}

/// Makes this isolate reload its keys from D1 on their next use — after it
/// rotated or retired one itself — and any reload under way install as
/// stale ([`KeySlot::invalidate`]). Imported keys are kept (they stay valid
/// for as long as their key is published).
pub fn invalidate() {
    CACHE.with(|c| c.borrow_mut().invalidate());
}

impl KeyRing for EdgeKeys<'_> {
    async fn signing_key(&self) -> Result<SigningKey> {
        self.ensure_loaded().await?;
        let key = CACHE.with(|c| c.borrow().get().and_then(|c| c.signing.clone()));
        key.ok_or_else(|| Error::Internal("no signing key after load".into()))
    }

    async fn verify(&self, kid: &str, alg: SigningAlg, signed: &[u8], signature: &[u8]) -> Result<Option<bool>> {
        for _ in 0..2 {
            match self.verify_cached(kid, alg, signed, signature, platform::now())? {
                Cached::Verified(ok) => return Ok(Some(ok)),
                Cached::UnknownKey => return Ok(None),
                Cached::NeedsLoad => self.refresh(Some(kid)).await?,
            }
        }
        // Loaded and still asking for a load: treat the kid as unknown.
        Ok(None)
    }

    fn issued(&self, raw: &str, kid: &str, token: VerifiedToken, now: UnixTime) {
        crate::edge::proxy::remember_issued(raw, kid, token, &self.config, self, now);
    }

    fn keys_changed(&self) {
        invalidate();
    }
}
