//! The isolate's key ring at the edge: the gateway's key cache
//! ([`crate::core::gateway::key_cache`], which owns the rules: expiry and
//! grace, unknown `kid`s, retirement, own-signature recognition) loaded from
//! D1, signing and verifying natively ([`crate::edge::crypto`]).
//!
//! The gateway's hot path never touches D1: it asks the cache, which answers
//! without I/O or says that it must be (re)loaded first ([`EdgeKeys::refresh`]);
//! from half of `KEY_CACHE_TTL` the keys are reloaded in the background
//! ([`EdgeKeys::background_refresh`], handed to `waitUntil`) while requests
//! keep using the cached ones.
//!
//! The JWKS ([`EdgeKeys::jwks`]) is served from keys read less than
//! [`JWKS_RELOAD_SECS`](crate::core::gateway::key_cache::JWKS_RELOAD_SECS) ago and
//! read again after that or after an invalidation: a burst of JWKS requests
//! costs one D1 read per isolate.
//!
//! The isolate that rotates or retires a key calls [`invalidate`] (through
//! [`KeyRing::keys_changed`], before the event is emitted). Each access token
//! signed with the ring's key is handed to the gateway's token cache
//! ([`Gateway::remember_issued`](crate::core::gateway::Gateway::remember_issued)),
//! already verified.

use std::rc::Rc;

use wasm_bindgen::JsValue;
use worker::Env;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::flows::key_rotation::load_or_create;
use crate::core::gateway::key_cache::{jwks_reload_due, Cached, KeyCacheState};
use crate::core::ports::{KeyRing, Result};
use crate::core::signing_keys::{Jwks, SigningAlg, SigningKey};
use crate::core::time::UnixTime;
use crate::core::token::VerifiedToken;
use crate::edge::crypto::Native;
use crate::edge::d1::D1Store;
use crate::edge::isolate;
use crate::edge::platform::{self, OsRandom};

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
    /// invalidated its keys meanwhile
    /// ([`KeyCache::install`](crate::core::gateway::key_cache::KeyCache::install)); returns which.
    async fn reload(&self) -> Result<bool> {
        let began = isolate::with(|g| g.keys.begin_reload());
        let store = D1Store::new(self.env)?;
        let now = platform::now();
        let (keys, signing) =
            load_or_create(&store, &self.config.kek, self.config.signing_alg, &mut OsRandom, now).await?;
        Ok(isolate::with(|g| g.keys.install(began, now, keys, signing, &self.config)))
    }

    fn is_fresh(&self, now: UnixTime) -> bool {
        isolate::with(|g| g.keys.state(now)) == KeyCacheState::Fresh
    }

    /// Fresh, or due for a background reload: usable without I/O.
    fn is_usable(&self, now: UnixTime) -> bool {
        isolate::with(|g| g.keys.is_usable(now))
    }

    /// When the keys are due for a background reload at `now` and none
    /// started lately
    /// ([`KeyCache::claim_background_reload`](crate::core::gateway::key_cache::KeyCache::claim_background_reload)): the reload,
    /// to hand to `waitUntil`. Requests meanwhile keep using the cached keys.
    pub fn background_refresh(&self, now: UnixTime) -> Option<js_sys::Promise> {
        if !isolate::with(|g| g.keys.claim_background_reload(now)) {
            return None;
        }
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
    /// also reloads once per
    /// [`UNKNOWN_KID_RELOAD_SECS`](crate::core::gateway::key_cache::UNKNOWN_KID_RELOAD_SECS)
    /// for a `kid` not in it.
    pub async fn refresh(&self, unknown_kid: Option<&str>) -> Result<()> {
        let now = platform::now();
        if isolate::with(|g| g.keys.reload_needed(unknown_kid, now)) {
            return self.reload().await.map(drop);
        }
        Ok(())
    }

    /// The published keys, as JWKS: from keys read from D1 less than
    /// [`JWKS_RELOAD_SECS`](crate::core::gateway::key_cache::JWKS_RELOAD_SECS) ago
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
            if !jwks_reload_due(isolate::with(|g| g.keys.loaded_at()), now) {
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
        Ok(isolate::with(|g| g.keys.jwks(now)))
    }

    /// Verifies a signature made with `alg` by `kid` from the cache at
    /// `now`, without I/O
    /// ([`KeyCache::verify`](crate::core::gateway::key_cache::KeyCache::verify), natively).
    pub fn verify_cached(
        &self,
        kid: &str,
        alg: SigningAlg,
        signed: &[u8],
        signature: &[u8],
        now: UnixTime,
    ) -> Result<Cached> {
        isolate::with(|g| g.keys.verify(&Native, kid, alg, signed, signature, now))
    }
}

/// Makes this isolate reload its keys from D1 on their next use — after it
/// rotated or retired one itself — and any reload under way install as
/// stale ([`KeyCache::invalidate`](crate::core::gateway::key_cache::KeyCache::invalidate)).
pub fn invalidate() {
    isolate::with(|g| g.keys.invalidate());
}

impl KeyRing for EdgeKeys<'_> {
    async fn signing_key(&self) -> Result<SigningKey> {
        self.ensure_loaded().await?;
        let key = isolate::with(|g| g.keys.signing_key());
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
        isolate::with(|g| g.remember_issued(raw, kid, token, &self.config, &Native, now));
    }

    fn keys_changed(&self) {
        invalidate();
    }
}
