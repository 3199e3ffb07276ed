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

use std::collections::HashMap;

use crate::core::time::UnixTime;
use crate::core::token::{VerifiedToken, LEEWAY_SECS};

/// Default number of cached tokens per isolate.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A verified token and, once made, what is forwarded with it: the signed
/// assertion for the origin (`A`: the edge keeps it with the identity headers
/// ready to send), and when that expires.
#[derive(Debug, Clone)]
pub struct Entry<A> {
    /// The verified token.
    pub token: VerifiedToken,
    /// The forwarded assertion, and when it expires.
    pub assertion: Option<(A, UnixTime)>,
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

    /// The entry for `raw` if cached and its token is still valid at `now`
    /// (one hash of the token: this runs on every gateway request). An
    /// expired entry is never returned; it stays until a sweep drops it.
    pub fn get_mut(&mut self, raw: &str, now: UnixTime) -> Option<&mut Entry<A>> {
        self.map.get_mut(raw).filter(|e| now.0 < e.token.expires_at.0.saturating_add(LEEWAY_SECS))
    }

    /// Caches a freshly verified token (replacing any entry for `raw`).
    pub fn insert(&mut self, raw: &str, token: VerifiedToken, now: UnixTime) -> &mut Entry<A> {
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
        let fresh = Entry { token, assertion: None };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::token::AccessClaims;

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
            },
            issued_at: UnixTime(0),
            expires_at: UnixTime(exp),
        }
    }

    #[test]
    fn entries_expire_with_their_token() {
        let mut c: TokenCache = TokenCache::new(10);
        c.insert("t", vt(100), UnixTime(0));
        assert!(c.get_mut("t", UnixTime(50)).is_some());
        assert!(c.get_mut("t", UnixTime(100 + LEEWAY_SECS)).is_none());
        // Re-verifying the token replaces the expired entry rather than adding one.
        c.insert("t", vt(200), UnixTime(150));
        assert_eq!(c.len(), 1);
        assert!(c.get_mut("t", UnixTime(150)).is_some());
    }

    #[test]
    fn a_full_cache_of_live_tokens_evicts_about_half_not_everything() {
        let mut c: TokenCache = TokenCache::new(1_000);
        for i in 0..1_000 {
            c.insert(&format!("t{i}"), vt(10_000), UnixTime(0));
        }
        assert_eq!(c.len(), 1_000);
        c.insert("new", vt(10_000), UnixTime(1));
        assert_eq!(c.len(), 501);
        assert!(c.get_mut("new", UnixTime(1)).is_some());
        let still = (0..1_000).filter(|i| c.get_mut(&format!("t{i}"), UnixTime(1)).is_some()).count();
        assert_eq!(still, 500);
    }

    #[test]
    fn expired_tokens_go_first() {
        let mut c: TokenCache = TokenCache::new(100);
        for i in 0..50 {
            c.insert(&format!("old{i}"), vt(10), UnixTime(0));
        }
        for i in 0..50 {
            c.insert(&format!("live{i}"), vt(10_000), UnixTime(0));
        }
        c.insert("new", vt(10_000), UnixTime(20));
        assert_eq!(c.len(), 51, "the expired half was enough room");
        assert!((0..50).all(|i| c.get_mut(&format!("live{i}"), UnixTime(20)).is_some()));
    }

    #[test]
    fn capacity_is_bounded() {
        let mut c: TokenCache = TokenCache::new(3);
        for i in 0..10 {
            c.insert(&format!("t{i}"), vt(1_000), UnixTime(0));
            assert!(c.len() <= 3);
        }
        c.insert("old", vt(5), UnixTime(0));
        c.insert("x", vt(1_000), UnixTime(10));
        assert!(c.get_mut("old", UnixTime(5 + LEEWAY_SECS)).is_none());
        assert!(c.get_mut("x", UnixTime(5 + LEEWAY_SECS)).is_some());
    }
}
