//! The `TOKENS` KV namespace: a hint per live link token (magic link,
//! password reset, email verification), stored under the token's hash with
//! `expirationTtl`, checked before D1 is asked to consume the token.
//!
//! KV is eventually consistent and has no compare-and-swap, so it never
//! decides whether a token can be used — D1's conditional update does. KV
//! only lets the Worker turn away tokens that do not exist or have expired
//! without a database write. That is safe because every key is the hash of a
//! fresh random token: no location can have cached a miss for it before it
//! was written. Codes are not hinted: they are looked up by email (a key that
//! is rewritten, so a cached value could be stale), and every attempt at a
//! code must be counted in D1 anyway.

use serde::{Deserialize, Serialize};
use worker::kv::KvStore;

use crate::core::emailed_secret::TokenKind;
use crate::core::error::Error;
use crate::core::time::UnixTime;
use crate::edge::error::{Dependency::Kv, EdgeResult};

/// KV's smallest `expirationTtl`; shorter lifetimes are enforced by the
/// stored expiry.
pub const KV_MIN_TTL_SECS: u64 = 60;

/// What KV holds for a link token.
#[derive(Debug, Serialize, Deserialize)]
struct Hint {
    expires_at: i64,
}

fn key(kind: TokenKind, hash: &str) -> String {
    format!("email-token:{}:{hash}", kind.as_str())
}

/// The hints of link tokens.
pub struct TokenHints {
    kv: Option<KvStore>,
}

impl TokenHints {
    /// Hints on `kv` (the `TOKENS` binding; `None` if it is missing, which
    /// fails every token operation closed).
    pub fn new(kv: Option<KvStore>) -> Self {
        Self { kv }
    }

    fn kv(&self) -> Result<&KvStore, Error> {
        self.kv.as_ref().ok_or_else(|| Kv.failed("the TOKENS KV binding is missing"))
    }

    /// Records a live token until `expires_at`.
    pub async fn put(&self, kind: TokenKind, hash: &str, now: UnixTime, expires_at: UnixTime) -> Result<(), Error> {
        let ttl = u64::try_from(expires_at.0.saturating_sub(now.0)).unwrap_or(0).max(KV_MIN_TTL_SECS);
        let value = serde_json::to_string(&Hint { expires_at: expires_at.0 }).or_unavailable(Kv)?;
        self.kv()?
            .put(&key(kind, hash), value)
            .or_unavailable(Kv)?
            .expiration_ttl(ttl)
            .execute()
            .await
            .or_unavailable(Kv)
    }

    /// Whether a token may be live at `now`: `false` means it certainly is not.
    pub async fn may_be_live(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<bool, Error> {
        let hint = self.kv()?.get(&key(kind, hash)).json::<Hint>().await.or_unavailable(Kv)?;
        Ok(hint.is_some_and(|h| h.expires_at > now.0))
    }

    /// Forgets a used token (best effort: D1 already refuses it).
    pub async fn forget(&self, kind: TokenKind, hash: &str) {
        if let Ok(kv) = self.kv() {
            if let Err(e) = kv.delete(&key(kind, hash)).await {
                worker::console_warn!("portcullis.kv_delete_failed {e}");
            }
        }
    }
}

/// Whether tokens of `kind` are hinted in KV.
pub fn is_hinted(kind: TokenKind) -> bool {
    kind != TokenKind::EmailOtp
}
