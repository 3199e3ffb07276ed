//! The isolate's signing keys as the gateway uses them: loaded from the key
//! store once and cached, each public key imported once into the runtime's
//! native crypto (the [`SignatureOps`] port), the private halves of our
//! published Ed25519 keys kept to recognise their own signatures before any
//! native verification ([`keys::recognisable`]).
//!
//! Everything here answers without I/O: [`KeyCache::verify`] and
//! [`KeyCache::signer`] answer from the cache, or say that it must be
//! (re)loaded first ([`Cached::NeedsLoad`]); the caller loads
//! ([`KeyCache::begin_reload`], then [`KeyCache::install`]) and asks again.
//! An unknown `kid` triggers at most one reload per
//! [`UNKNOWN_KID_RELOAD_SECS`], whatever tokens arrive; keys only ever come
//! from our own store, never from a URL in a token.
//!
//! Expiry ([`key_cache_state`]): from half of `KEY_CACHE_TTL` the keys are
//! reloaded in the background ([`KeyCache::claim_background_reload`], one
//! reload per [`BACKGROUND_RELOAD_SECS`]) while requests keep using the
//! cached ones — the grace that keeps a D1 round trip, or a D1 outage
//! shorter than the rest of `KEY_CACHE_TTL`, off the gateway's path. At
//! `KEY_CACHE_TTL`, keys are reloaded before any use: nothing here counts on
//! keys older than that.
//!
//! Rotation: the isolate that rotates calls [`KeyCache::invalidate`] (through
//! the key ring's `keys_changed`, before the event is emitted) and signs with
//! the new key from its next request; every other isolate reloads within
//! `KEY_CACHE_TTL` (and at once on meeting the new `kid`). Retired keys stay
//! published long enough to cover that window (see
//! [`crate::core::flows::key_rotation::retirement_window_secs`]).
//!
//! Retirement at once: a withdrawn key is gone from the next load, and with
//! it everything that relied on it — its imported public key and its
//! own-signature check (both reached only through a published `kid`), and,
//! in the gateway's token cache, every token it signed and every assertion
//! it signed ([`KeyCache::vouches`]). If it was the active key, the next
//! load signs with its successor.
//!
//! A reload that began before an invalidation — and may have read the keys
//! before the change — installs as stale ([`KeySlot`]): it cannot put a
//! retired key back for `KEY_CACHE_TTL`.

use std::collections::HashMap;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::gateway::cache::{Generation, KeySlot};
use crate::core::signing_keys::{self, jwks, Jwks, Kid, SigningAlg, SigningKey, StoredKey};
use crate::core::time::UnixTime;

/// Least time between two reloads caused by unknown `kid`s.
pub const UNKNOWN_KID_RELOAD_SECS: i64 = 30;
/// Least time between two background reloads (one that did not finish by
/// then is given up as lost).
pub const BACKGROUND_RELOAD_SECS: i64 = 30;

/// How long `/.well-known/jwks.json` is answered from the keys an isolate
/// loaded before it reads them from D1 again: a burst of JWKS requests costs
/// one D1 read (and one unseal of the active key) per isolate per this many
/// seconds, not one each. A key retired elsewhere leaves this isolate's JWKS
/// within it; the isolate that retires a key invalidates its keys, so its
/// JWKS drops the key at once.
pub const JWKS_RELOAD_SECS: i64 = 5;

/// The longest an isolate uses the keys it loaded: `KEY_CACHE_TTL`. This is
/// the bound on how long a key retired at once (or its tokens, cached or
/// not) can still count anywhere, and on how long the gateway verifies with
/// cached keys while D1 is unreachable; past it, keys are reloaded before
/// any use.
pub fn key_cache_max_age_secs(config: &Config) -> u64 {
    config.key_cache_ttl_secs
}

/// From what age an isolate reloads its keys in the background while it
/// goes on using them: half of `KEY_CACHE_TTL` (rounded up). A busy isolate
/// so reloads before its keys reach [`key_cache_max_age_secs`], and its
/// gateway never waits for D1 merely because the keys aged.
pub fn key_cache_refresh_secs(config: &Config) -> u64 {
    config.key_cache_ttl_secs.div_ceil(2)
}

/// What an isolate may do with keys it loaded at `loaded_at`, at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCacheState {
    /// Use them.
    Fresh,
    /// Use them, and reload them in the background.
    Refresh,
    /// Reload them before any use (also: never loaded, or invalidated).
    Stale,
}

/// The state of keys loaded at `loaded_at`, at `now`: fresh until
/// [`key_cache_refresh_secs`], stale from [`key_cache_max_age_secs`].
pub fn key_cache_state(config: &Config, loaded_at: UnixTime, now: UnixTime) -> KeyCacheState {
    state_for_ttl(config.key_cache_ttl_secs, loaded_at, now)
}

/// [`key_cache_state`] for a `KEY_CACHE_TTL` of `ttl_secs`.
fn state_for_ttl(ttl_secs: u64, loaded_at: UnixTime, now: UnixTime) -> KeyCacheState {
    let age = now.0.saturating_sub(loaded_at.0);
    let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
    if age < secs(ttl_secs.div_ceil(2)) {
        KeyCacheState::Fresh
    } else if age < secs(ttl_secs) {
        KeyCacheState::Refresh
    } else {
        KeyCacheState::Stale
    }
}

/// Whether the JWKS must be read from D1 again at `now`, for keys loaded at
/// `loaded_at` (`None`: never, or invalidated since).
pub fn jwks_reload_due(loaded_at: Option<UnixTime>, now: UnixTime) -> bool {
    loaded_at.is_none_or(|at| !(0..JWKS_RELOAD_SECS).contains(&now.0.saturating_sub(at.0)))
}

/// The signature operations the key cache hands to the platform: at the edge
/// the runtime's native Ed25519 and P-256 (synchronous), natively in tests
/// pure Rust. Keys are imported once and kept in the cache.
pub trait SignatureOps {
    /// A public key, imported.
    type PublicKey: Clone;
    /// A private key, imported.
    type PrivateKey: Clone;
    /// Imports a published key's public half.
    fn import_public(&self, key: &StoredKey) -> Result<Self::PublicKey, Error>;
    /// Imports the active key's private half.
    fn import_private(&self, key: &SigningKey) -> Result<Self::PrivateKey, Error>;
    /// Whether `signature` (JWS form) over `data` is valid for `key`, of `alg`.
    fn verify(&self, alg: SigningAlg, key: &Self::PublicKey, data: &[u8], signature: &[u8]) -> bool;
    /// The JWS signature over `data` (64 bytes) by `key`, of `alg`.
    fn sign(&self, alg: SigningAlg, key: &Self::PrivateKey, data: &[u8]) -> Result<Vec<u8>, Error>;
}

/// What the cache alone can say about a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// The key is known: the signature is valid or not.
    Verified(bool),
    /// No published key has this `kid`, and no reload is due.
    UnknownKey,
    /// The cache is cold or past its grace, or the `kid` is unknown and a
    /// reload is due: load the keys and ask again.
    NeedsLoad,
}

/// One load of the keys, with what was derived from it.
struct Loaded<O: SignatureOps> {
    keys: Vec<StoredKey>,
    signing: Option<SigningKey>,
    /// The signing key imported, with its kid.
    signing_imported: Option<(Kid, O::PrivateKey)>,
    /// Public keys imported, by kid.
    imported: HashMap<String, O::PublicKey>,
    /// The published keys whose own signatures are recognised without a
    /// signature operation ([`keys::recognisable`]).
    own: Vec<SigningKey>,
}

/// The isolate's keys: the last load, when it happened and how long it may
/// be used (`KEY_CACHE_TTL`, taken from the configuration at each install),
/// and when the last reloads for an unknown `kid` and in the background
/// began.
pub struct KeyCache<O: SignatureOps> {
    slot: KeySlot<Loaded<O>>,
    ttl_secs: u64,
    last_miss_reload: UnixTime,
    last_background_reload: UnixTime,
}

impl<O: SignatureOps> Default for KeyCache<O> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: SignatureOps> KeyCache<O> {
    /// An empty cache: its first use asks for a load.
    pub const fn new() -> Self {
        Self {
            slot: KeySlot::new(),
            ttl_secs: 0,
            last_miss_reload: UnixTime(i64::MIN),
            last_background_reload: UnixTime(i64::MIN),
        }
    }

    /// The generation a reload starting now installs under: take it before
    /// reading the keys.
    pub fn begin_reload(&self) -> Generation {
        self.slot.begin_reload()
    }

    /// Installs the keys a reload begun at `began` read at `now` — `keys`
    /// and the active `signing` key — keeping what was imported or unsealed
    /// from the last load and still applies; `config` gives the key-encryption
    /// key and `KEY_CACHE_TTL`. Fresh unless [`Self::invalidate`] was called
    /// since the reload began; returns which.
    pub fn install(
        &mut self,
        began: Generation,
        now: UnixTime,
        keys: Vec<StoredKey>,
        signing: SigningKey,
        config: &Config,
    ) -> bool {
        self.ttl_secs = config.key_cache_ttl_secs;
        let kek = &config.kek;
        self.slot.install(began, now, |old| {
            let (imported, signing_imported, own) =
                old.map(|old| (old.imported, old.signing_imported, old.own)).unwrap_or_default();
            let signing_imported = signing_imported.filter(|(kid, _)| *kid == signing.kid);
            let own = signing_keys::recognisable(&keys, &signing, own, kek, now);
            Loaded { keys, signing: Some(signing), signing_imported, imported, own }
        })
    }

    /// The stored keys changed (a rotation or retirement by this isolate):
    /// what is loaded, and what any reload under way read, is read again
    /// before use. Imported keys are kept (they stay valid for as long as
    /// their key is published).
    pub fn invalidate(&mut self) {
        self.slot.invalidate();
    }

    /// When the keys were loaded; `None` if never, or invalidated since.
    pub fn loaded_at(&self) -> Option<UnixTime> {
        self.slot.loaded_at()
    }

    /// What the cached keys may be used for at `now`.
    pub fn state(&self, now: UnixTime) -> KeyCacheState {
        self.slot.loaded_at().map_or(KeyCacheState::Stale, |at| state_for_ttl(self.ttl_secs, at, now))
    }

    /// Fresh, or due for a background reload: usable without I/O.
    pub fn is_usable(&self, now: UnixTime) -> bool {
        self.state(now) != KeyCacheState::Stale
    }

    /// Whether a background reload should start at `now`: the keys are due
    /// for one and none started in the last [`BACKGROUND_RELOAD_SECS`]. A
    /// `true` counts as the start.
    pub fn claim_background_reload(&mut self, now: UnixTime) -> bool {
        if self.state(now) != KeyCacheState::Refresh {
            return false;
        }
        if now.0.saturating_sub(self.last_background_reload.0) < BACKGROUND_RELOAD_SECS {
            return false;
        }
        self.last_background_reload = now;
        true
    }

    /// Whether the keys must be reloaded before use at `now`: not fresh, or
    /// `unknown_kid` is given, the loaded keys do not publish it and no
    /// reload for an unknown kid happened in the last
    /// [`UNKNOWN_KID_RELOAD_SECS`] (a `true` for that reason counts as one).
    pub fn reload_needed(&mut self, unknown_kid: Option<&str>, now: UnixTime) -> bool {
        let unknown =
            unknown_kid.is_some_and(|kid| self.slot.get().is_some_and(|c| published(&c.keys, kid, now).is_none()));
        let due_for_kid = unknown && self.miss_reload_due(now, true);
        self.state(now) != KeyCacheState::Fresh || due_for_kid
    }

    /// Whether a reload for an unknown `kid` may happen now; `claim` records it.
    fn miss_reload_due(&mut self, now: UnixTime, claim: bool) -> bool {
        let due = now.0.saturating_sub(self.last_miss_reload.0) >= UNKNOWN_KID_RELOAD_SECS;
        if due && claim {
            self.last_miss_reload = now;
        }
        due
    }

    /// Verifies a signature made with `alg` by `kid` at `now`, without I/O;
    /// a key of another algorithm refuses it. A signature that one of our
    /// published Ed25519 keys made (the active one, or a retired one whose
    /// tokens are still live) is recognised without a signature operation
    /// ([`SigningKey::made`]: two hashes and a multiply-add, against a
    /// native verify's 55–70 µs at the edge). Anything else, and any
    /// signature not recognised, is verified through `ops`.
    pub fn verify(
        &mut self,
        ops: &O,
        kid: &str,
        alg: SigningAlg,
        signed: &[u8],
        signature: &[u8],
        now: UnixTime,
    ) -> Result<Cached, Error> {
        if !self.is_usable(now) {
            return Ok(Cached::NeedsLoad);
        }
        let missing = if self.miss_reload_due(now, false) { Cached::NeedsLoad } else { Cached::UnknownKey };
        let Some(c) = self.slot.get_mut() else { return Ok(missing) };
        // Imported keys stay valid only while the key is published.
        let Some(stored) = published(&c.keys, kid, now) else { return Ok(missing) };
        if stored.signing_alg()? != alg {
            return Ok(Cached::Verified(false));
        }
        if c.own.iter().any(|k| k.kid == kid && k.made(signed, signature)) {
            return Ok(Cached::Verified(true));
        }
        let key = match c.imported.get(kid) {
            Some(k) => k.clone(),
            None => {
                let k = ops.import_public(stored)?;
                c.imported.insert(kid.to_string(), k.clone());
                k
            }
        };
        Ok(Cached::Verified(ops.verify(alg, &key, signed, signature)))
    }

    /// Whether `kid` is published by the cached keys at `now`, and those
    /// keys may still be used: what the gateway's token cache serves a
    /// cached token, or keeps its assertion, on. Without I/O; false when the
    /// keys must be reloaded first.
    pub fn vouches(&self, kid: &str, now: UnixTime) -> bool {
        self.is_usable(now) && self.slot.get().is_some_and(|c| published(&c.keys, kid, now).is_some())
    }

    /// The active signing key, imported, without I/O; `None` when the keys
    /// must be loaded first.
    pub fn signer(&mut self, ops: &O, now: UnixTime) -> Result<Option<Signer<O::PrivateKey>>, Error> {
        if !self.is_usable(now) {
            return Ok(None);
        }
        let Some(c) = self.slot.get_mut() else { return Ok(None) };
        let Some(signing) = &c.signing else { return Ok(None) };
        let (kid, alg) = (signing.kid.clone(), signing.alg());
        let key = match &c.signing_imported {
            Some((_, key)) => key.clone(),
            None => {
                let key = ops.import_private(signing)?;
                c.signing_imported = Some((signing.kid.clone(), key.clone()));
                key
            }
        };
        Ok(Some(Signer { kid, alg, key }))
    }

    /// The active signing key as last loaded, however old.
    pub fn signing_key(&self) -> Option<SigningKey> {
        self.slot.get().and_then(|c| c.signing.clone())
    }

    /// The keys as last loaded, however old, as JWKS at `now` (empty if
    /// never loaded).
    pub fn jwks(&self, now: UnixTime) -> Jwks {
        self.slot.get().map(|c| jwks(&c.keys, now)).unwrap_or(Jwks { keys: Vec::new() })
    }
}

/// The active signing key, imported (`K`), ready to sign synchronously.
pub struct Signer<K> {
    kid: Kid,
    alg: SigningAlg,
    key: K,
}

impl<K> Signer<K> {
    /// The key's `kid`, for the header of what it signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's algorithm, for the header of what it signs.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The JWS signature over `data`.
    pub fn sign<O: SignatureOps<PrivateKey = K>>(&self, ops: &O, data: &[u8]) -> Result<Vec<u8>, Error> {
        ops.sign(self.alg, &self.key, data)
    }
}

/// The key `kid` if it is published at `now`.
fn published<'k>(keys: &'k [StoredKey], kid: &str, now: UnixTime) -> Option<&'k StoredKey> {
    keys.iter().find(|s| s.kid == kid && s.is_published(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ttl: &str) -> Config {
        let ttl = ttl.to_string();
        Config::from_lookup(move |name| match name {
            "KEY_ENCRYPTION_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
            "KEY_CACHE_TTL" => Some(ttl.clone()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn the_jwks_is_read_again_at_most_every_few_seconds_and_at_once_after_an_invalidation() {
        let at = UnixTime(1_000);
        assert!(!jwks_reload_due(Some(at), at));
        assert!(!jwks_reload_due(Some(at), UnixTime(1_000 + JWKS_RELOAD_SECS - 1)));
        assert!(jwks_reload_due(Some(at), UnixTime(1_000 + JWKS_RELOAD_SECS)));
        assert!(jwks_reload_due(Some(at), UnixTime(999)), "a clock gone back proves nothing");
        assert!(jwks_reload_due(None, at), "never loaded, or invalidated");
    }

    #[test]
    fn loaded_keys_are_reloaded_in_the_background_from_half_of_key_cache_ttl_and_never_used_past_it() {
        let c = config("300");
        let at = |age: i64| key_cache_state(&c, UnixTime(1_000), UnixTime(1_000 + age));
        assert_eq!(at(0), KeyCacheState::Fresh);
        assert_eq!(at(149), KeyCacheState::Fresh);
        assert_eq!(at(150), KeyCacheState::Refresh);
        assert_eq!(at(299), KeyCacheState::Refresh);
        // A key retired at once elsewhere counts here for at most KEY_CACHE_TTL.
        assert_eq!(at(300), KeyCacheState::Stale);
        assert_eq!(key_cache_state(&c, UnixTime(i64::MIN), UnixTime(1_000)), KeyCacheState::Stale, "invalidated");
        // An odd or tiny TTL: the refresh starts at the rounded-up half, before the end.
        let c = config("1");
        assert_eq!(key_cache_state(&c, UnixTime(0), UnixTime(0)), KeyCacheState::Fresh);
        assert_eq!(key_cache_state(&c, UnixTime(0), UnixTime(1)), KeyCacheState::Stale);
        let c = config("5");
        assert_eq!(key_cache_state(&c, UnixTime(0), UnixTime(2)), KeyCacheState::Fresh);
        assert_eq!(key_cache_state(&c, UnixTime(0), UnixTime(3)), KeyCacheState::Refresh);
        assert_eq!(key_cache_state(&c, UnixTime(0), UnixTime(5)), KeyCacheState::Stale);
    }
}
