//! The per-isolate cache of verified access tokens — and of those the
//! isolate issued itself — so a token seen before costs a map lookup instead
//! of a signature check.
//!
//! Bounded: at most `capacity` entries; when full, expired entries are swept,
//! and if that freed less than a quarter, about half of the rest is evicted
//! (in the map's order, which its random hashing keys make arbitrary): the
//! cheap, safe choice — a miss only costs one verification — without the
//! cliff of dropping every token at once in an isolate busier than the cap.
//! An entry is never served past its token's `exp` (plus the verification
//! leeway).
//!
//! Nor once its key is withdrawn: an entry remembers the `kid` that signed
//! its token, and its assertion the `kid` that signed that, and a lookup
//! serves it only while the caller's current key set publishes the former
//! (else it is a miss, and verifying the token again refuses it) and keeps
//! the assertion only while it publishes the latter (else the caller signs
//! a new one). So a key retired at once stops counting, cached or not, as
//! soon as the isolate's key set no longer has it; and that set is never
//! used older than `KEY_CACHE_TTL` ([`crate::core::gateway::key_cache::key_cache_state`]).
//!
//! That key set itself is kept in a [`KeySlot`]: when it was loaded, and a
//! generation that an invalidation (a rotation or retirement by this isolate)
//! moves, so a reload that began before the invalidation — and may have read
//! the keys before the write — cannot install them as fresh.

use std::collections::HashMap;

use crate::core::time::UnixTime;
use crate::core::token::{VerifiedToken, LEEWAY_SECS};

/// Default number of cached tokens per isolate.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A verified token, the key that signed it and, once made, what is
/// forwarded with it: the signed assertion for the origin (`A`: the edge
/// keeps it with the identity headers ready to send).
#[derive(Debug, Clone)]
pub struct Entry<A> {
    /// The verified token.
    pub token: VerifiedToken,
    /// The `kid` of the key that signed the token.
    pub kid: String,
    /// The forwarded assertion.
    pub assertion: Option<Assertion<A>>,
}

/// An assertion signed for a cached token.
#[derive(Debug, Clone)]
pub struct Assertion<A> {
    /// The assertion (at the edge: with the identity headers).
    pub value: A,
    /// When it expires.
    pub expires_at: UnixTime,
    /// The `kid` of the key that signed it.
    pub kid: String,
}

/// Verified tokens keyed by their compact form.
#[derive(Debug)]
pub struct TokenCache<A = String> {
    map: HashMap<String, Entry<A>>,
    capacity: usize,
}

impl<A> TokenCache<A> {
    /// An empty cache holding at most `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), capacity: capacity.max(1) }
    }

    /// The entry for `raw` if cached, its token still valid at `now`, and
    /// its key `published` (the caller's current key set: false also when
    /// that set is too old to be used); its assertion is dropped unless its
    /// key is `published` too. One hash of the token, and a look at the key
    /// set: this runs on every gateway request. An entry not returned stays
    /// until a sweep drops it or the token is cached again.
    pub fn get_mut(&mut self, raw: &str, now: UnixTime, published: impl Fn(&str) -> bool) -> Option<&mut Entry<A>> {
        let e = self.map.get_mut(raw)?;
        if now.0 >= e.token.expires_at.0.saturating_add(LEEWAY_SECS) || !published(&e.kid) {
            return None;
        }
        if e.assertion.as_ref().is_some_and(|a| !published(&a.kid)) {
            e.assertion = None;
        }
        Some(e)
    }

    /// Caches a freshly verified token, signed by `kid` (replacing any entry
    /// for `raw`).
    pub fn insert(&mut self, raw: &str, token: VerifiedToken, kid: &str, now: UnixTime) -> &mut Entry<A> {
        if self.map.len() >= self.capacity {
            self.map.retain(|_, e| now.0 < e.token.expires_at.0);
            if self.map.len() >= self.capacity - self.capacity / 4 {
                let mut keep = false;
                self.map.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
        }
        let fresh = Entry { token, kid: kid.to_string(), assertion: None };
        match self.map.entry(raw.to_string()) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                o.insert(fresh);
                o.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(v) => v.insert(fresh),
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The generation a reload began under ([`KeySlot::begin_reload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

/// The isolate's loaded key set (`T`: at the edge, the keys with their
/// natively imported forms), when it was loaded, and its generation.
#[derive(Debug)]
pub struct KeySlot<T> {
    value: Option<T>,
    /// `None`: never loaded, or invalidated since.
    loaded_at: Option<UnixTime>,
    generation: u64,
}

impl<T> KeySlot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        Self { value: None, loaded_at: None, generation: 0 }
    }

    /// The generation a reload starting now installs under: read before the
    /// keys are.
    pub fn begin_reload(&self) -> Generation {
        Generation(self.generation)
    }

    /// Installs what a reload begun at `began` read, at `now`, built by
    /// `make` from the value it replaces. Fresh (loaded at `now`) unless
    /// [`KeySlot::invalidate`] was called since the reload began: then the
    /// keys it read may predate the change, and they are installed as never
    /// loaded, so their next use reloads them. Returns whether fresh.
    pub fn install(&mut self, began: Generation, now: UnixTime, make: impl FnOnce(Option<T>) -> T) -> bool {
        self.value = Some(make(self.value.take()));
        let fresh = began.0 == self.generation;
        self.loaded_at = fresh.then_some(now);
        fresh
    }

    /// The stored keys changed: what is loaded, and what any reload under
    /// way read, must be read again before use.
    pub fn invalidate(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.loaded_at = None;
    }

    /// When the value was loaded; `None` if never, or invalidated since.
    pub fn loaded_at(&self) -> Option<UnixTime> {
        self.loaded_at
    }

    /// The value, however old.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// The value, however old, to update what is derived from it.
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.value.as_mut()
    }
}

impl<T> Default for KeySlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::token::AccessClaims;

    /// A key set that publishes every key.
    fn any(_: &str) -> bool {
        true
    }

    fn vt(exp: i64) -> VerifiedToken {
        VerifiedToken {
            claims: AccessClaims {
                iss: "i".into(),
                aud: vec!["a".into()],
                sub: "u".into(),
                sid: "s".into(),
                roles: vec![],
                email: "e@x.io".into(),
                email_verified: false,
                jti: "j".into(),
                amr: crate::core::amr::Amr::NONE,
                auth_time: None,
            },
            extra: Default::default(),
            issued_at: UnixTime(0),
            expires_at: UnixTime(exp),
        }
    }

    #[test]
    fn entries_expire_with_their_token() {
        let mut c: TokenCache = TokenCache::new(10);
        c.insert("t", vt(100), "k", UnixTime(0));
        assert!(c.get_mut("t", UnixTime(50), any).is_some());
        assert!(c.get_mut("t", UnixTime(100 + LEEWAY_SECS), any).is_none());
        // Re-verifying the token replaces the expired entry rather than adding one.
        c.insert("t", vt(200), "k", UnixTime(150));
        assert_eq!(c.len(), 1);
        assert!(c.get_mut("t", UnixTime(150), any).is_some());
    }

    #[test]
    fn a_full_cache_of_live_tokens_evicts_about_half_not_everything() {
        let mut c: TokenCache = TokenCache::new(1_000);
        for i in 0..1_000 {
            c.insert(&format!("t{i}"), vt(10_000), "k", UnixTime(0));
        }
        assert_eq!(c.len(), 1_000);
        c.insert("new", vt(10_000), "k", UnixTime(1));
        assert_eq!(c.len(), 501);
        assert!(c.get_mut("new", UnixTime(1), any).is_some());
        let still = (0..1_000).filter(|i| c.get_mut(&format!("t{i}"), UnixTime(1), any).is_some()).count();
        assert_eq!(still, 500);
    }

    #[test]
    fn expired_tokens_go_first() {
        let mut c: TokenCache = TokenCache::new(100);
        for i in 0..50 {
            c.insert(&format!("old{i}"), vt(10), "k", UnixTime(0));
        }
        for i in 0..50 {
            c.insert(&format!("live{i}"), vt(10_000), "k", UnixTime(0));
        }
        c.insert("new", vt(10_000), "k", UnixTime(20));
        assert_eq!(c.len(), 51, "the expired half was enough room");
        assert!((0..50).all(|i| c.get_mut(&format!("live{i}"), UnixTime(20), any).is_some()));
    }

    #[test]
    fn capacity_is_bounded() {
        let mut c: TokenCache = TokenCache::new(3);
        for i in 0..10 {
            c.insert(&format!("t{i}"), vt(1_000), "k", UnixTime(0));
            assert!(c.len() <= 3);
        }
        c.insert("old", vt(5), "k", UnixTime(0));
        c.insert("x", vt(1_000), "k", UnixTime(10));
        assert!(c.get_mut("old", UnixTime(5 + LEEWAY_SECS), any).is_none());
        assert!(c.get_mut("x", UnixTime(5 + LEEWAY_SECS), any).is_some());
    }

    #[test]
    fn an_entry_is_served_only_while_its_key_is_published() {
        let mut c: TokenCache<&str> = TokenCache::new(10);
        c.insert("t", vt(1_000), "k1", UnixTime(0));
        assert!(c.get_mut("t", UnixTime(10), |kid| kid == "k1").is_some());
        // k1 withdrawn (retired at once): a miss, whatever the token's exp;
        // verifying it again is what refuses it.
        assert!(c.get_mut("t", UnixTime(11), |kid| kid == "k2").is_none());
        assert!(c.get_mut("t", UnixTime(12), |_| false).is_none(), "a key set too old to use publishes nothing");
        // Cached again once verified (by a key published again: nothing here assumes kids are never reused).
        c.insert("t", vt(1_000), "k2", UnixTime(13));
        assert!(c.get_mut("t", UnixTime(13), |kid| kid == "k2").is_some());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn an_assertion_is_kept_only_while_its_signing_key_is_published() {
        let mut c: TokenCache<&str> = TokenCache::new(10);
        let e = c.insert("t", vt(1_000), "old", UnixTime(0));
        e.assertion = Some(Assertion { value: "signed by active", expires_at: UnixTime(60), kid: "active".into() });
        // A rotation: both keys still published, the assertion still good.
        let published = |kid: &str| kid == "old" || kid == "active";
        let e = c.get_mut("t", UnixTime(1), published).unwrap();
        assert_eq!(e.assertion.as_ref().map(|a| a.value), Some("signed by active"));
        // The key that signed the assertion is retired at once; the token's is not:
        // the token is still served, the assertion must be signed anew.
        let e = c.get_mut("t", UnixTime(2), |kid| kid == "old" || kid == "next").unwrap();
        assert!(e.assertion.is_none());
        e.assertion = Some(Assertion { value: "signed by next", expires_at: UnixTime(62), kid: "next".into() });
        let e = c.get_mut("t", UnixTime(3), |kid| kid == "old" || kid == "next").unwrap();
        assert_eq!(e.assertion.as_ref().map(|a| a.value), Some("signed by next"));
    }

    #[test]
    fn a_key_set_is_fresh_from_its_install_until_an_invalidation() {
        let mut slot: KeySlot<&str> = KeySlot::new();
        assert_eq!((slot.get(), slot.loaded_at()), (None, None));
        let began = slot.begin_reload();
        assert!(slot.install(began, UnixTime(10), |old| {
            assert!(old.is_none());
            "k1"
        }));
        assert_eq!((slot.get(), slot.loaded_at()), (Some(&"k1"), Some(UnixTime(10))));
        slot.invalidate();
        assert_eq!((slot.get(), slot.loaded_at()), (Some(&"k1"), None), "kept, but to be read again");
        let began = slot.begin_reload();
        assert!(slot.install(began, UnixTime(11), |old| {
            assert_eq!(old, Some("k1"), "the old value is handed over (its imported keys are reused)");
            "k2"
        }));
        assert_eq!(slot.loaded_at(), Some(UnixTime(11)));
    }

    #[test]
    fn a_reload_begun_before_an_invalidation_installs_as_stale() {
        // An isolate reloads (a JWKS request, say) and reads the keys; meanwhile
        // it retires one (the write, then `invalidate`); the reload ends after.
        let mut slot: KeySlot<&str> = KeySlot::new();
        let began = slot.begin_reload();
        assert!(slot.install(began, UnixTime(10), |_| "k1 k2"));
        let reading = slot.begin_reload();
        slot.invalidate();
        assert!(!slot.install(reading, UnixTime(12), |_| "k1 k2, read before the retirement"));
        assert_eq!(slot.loaded_at(), None, "its next use reloads it");
        // A reload begun after the invalidation is fresh again.
        let after = slot.begin_reload();
        assert!(slot.install(after, UnixTime(13), |_| "k2"));
        assert_eq!((slot.get(), slot.loaded_at()), (Some(&"k2"), Some(UnixTime(13))));
        // Two reloads under way across two invalidations: both stale.
        let (a, b) = (slot.begin_reload(), slot.begin_reload());
        slot.invalidate();
        assert!(!slot.install(a, UnixTime(14), |_| "a"));
        slot.invalidate();
        assert!(!slot.install(b, UnixTime(15), |_| "b"));
        assert_eq!(slot.loaded_at(), None);
    }
}
