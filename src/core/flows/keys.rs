//! The key ring's use cases: first-use key creation, rotation (by an
//! administrator or the cron trigger) and discovery metadata.

use serde::Serialize;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::events::{self, Envelope};
use crate::core::flows::admin::Admin;
use crate::core::flows::{Deps, Meta};
use crate::core::ids::Random;
use crate::core::keys::{self, Kek, KeyStatus, SigningAlg, SigningKey, StoredKey};
use crate::core::ports::{EmailTokenStore, EventSink, KeyRing, KeyStore, SessionStore, UserStore};
use crate::core::time::UnixTime;
use crate::core::token::{ALG_EDDSA, ALG_ES256, ASSERTION_TTL_SECS, LEEWAY_SECS};

/// Loads the stored keys and the active signing key, creating that key on
/// first use. Racing creators are settled by the store's one-active-key
/// constraint: the loser reloads and uses the winner's key.
pub async fn load_or_create(
    store: &impl KeyStore,
    kek: &Kek,
    alg: SigningAlg,
    rng: &mut impl Random,
    now: UnixTime,
) -> Result<(Vec<StoredKey>, SigningKey), Error> {
    let stored = store.load_keys().await?;
    if let Some(active) = stored.iter().find(|k| k.status == KeyStatus::Active) {
        let key = active.unseal(kek)?;
        return Ok((stored, key));
    }
    let (new, key) = keys::generate(alg, rng, kek, now)?;
    if store.insert_first_key(&new).await? {
        let mut all = stored;
        all.push(new);
        return Ok((all, key));
    }
    let stored = store.load_keys().await?;
    let active = stored
        .iter()
        .find(|k| k.status == KeyStatus::Active)
        .ok_or_else(|| Error::Internal("no active signing key after insert conflict".into()))?;
    let key = active.unseal(kek)?;
    Ok((stored, key))
}

/// `/.well-known/openid-configuration` for `issuer`: where the keys are and
/// what the tokens are. Only what holds: Portcullis is not an OAuth
/// authorization server (no authorize or token endpoint speaking OAuth, no
/// ID tokens), so no endpoint or response type is advertised that a generic
/// OAuth / OIDC client would then call and find speaking something else.
pub fn discovery(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG_EDDSA, ALG_ES256],
        "claims_supported": ["iss", "aud", "sub", "sid", "roles", "email", "email_verified", "iat", "exp", "jti"],
    })
}

/// A completed key rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRotation {
    /// The key retired (`None` when there was no key yet).
    pub old_kid: Option<String>,
    /// The new active key.
    pub new_kid: String,
}

/// Expired email tokens are kept this long (for support questions), then purged.
pub const EMAIL_TOKEN_RETENTION_SECS: u64 = 86_400;

/// How long a retired key stays in the JWKS after its retirement: another
/// isolate may keep signing with it until its key cache expires
/// (`KEY_CACHE_TTL`, plus as much again while it refreshes in the background
/// or cannot reach D1: [`key_cache_grace_secs`]); an access token it signed
/// lives `ACCESS_TTL`, a gateway assertion [`ASSERTION_TTL_SECS`] (today
/// capped by its access token's expiry, but the window does not rely on
/// that); verifiers allow [`LEEWAY_SECS`] of clock skew past `exp`.
pub fn retirement_window_secs(config: &Config) -> u64 {
    key_cache_grace_secs(config)
        .saturating_add(config.access_ttl_secs)
        .saturating_add(ASSERTION_TTL_SECS)
        .saturating_add(LEEWAY_SECS.unsigned_abs())
}

/// How long an isolate may keep using the keys it loaded: `KEY_CACHE_TTL`
/// fresh, then as long again while a background reload runs (or D1 is
/// unreachable), so the gateway's hot path never waits for D1 when the cache
/// merely expired. Past that, the keys must be reloaded before any use.
pub fn key_cache_grace_secs(config: &Config) -> u64 {
    config.key_cache_ttl_secs.saturating_mul(2)
}

/// Whether the active key is at least `interval_secs` old. With no key yet,
/// nothing is due: the first key is made on first use.
pub fn rotation_due(keys: &[StoredKey], now: UnixTime, interval_secs: u64) -> bool {
    keys.iter().find(|k| k.status == KeyStatus::Active).is_some_and(|k| k.created_at.plus_secs(interval_secs) <= now)
}

/// Replaces the active signing key with a new one; the old one stays
/// published for [`retirement_window_secs`]. `Ok(None)` when a concurrent
/// rotation won (the store allows one active key and retires a key only
/// while it is still the active one).
pub async fn rotate(
    store: &impl KeyStore,
    kek: &Kek,
    alg: SigningAlg,
    rng: &mut impl Random,
    now: UnixTime,
    window_secs: u64,
) -> Result<Option<KeyRotation>, Error> {
    let stored = store.load_keys().await?;
    let (new, _) = keys::generate(alg, rng, kek, now)?;
    let new_kid = new.kid.clone();
    let rotated = match stored.iter().find(|k| k.status == KeyStatus::Active) {
        None => store.insert_first_key(&new).await?.then_some(None),
        Some(active) => store
            .rotate_key(&active.kid, &new, now, now.plus_secs(window_secs))
            .await?
            .then(|| Some(active.kid.clone())),
    };
    Ok(rotated.map(|old_kid| KeyRotation { old_kid, new_kid }))
}

/// The cron trigger's upkeep: purges long-expired email tokens and rotates
/// the signing key once it is `ROTATION_INTERVAL` old, emitting `key_rotated`.
pub async fn scheduled<S, E>(
    store: &S,
    events: &E,
    config: &Config,
    rng: &mut impl Random,
    now: UnixTime,
) -> Result<Option<KeyRotation>, Error>
where
    S: KeyStore + EmailTokenStore,
    E: EventSink,
{
    let cutoff = UnixTime(now.0.saturating_sub(i64::try_from(EMAIL_TOKEN_RETENTION_SECS).unwrap_or(i64::MAX)));
    store.purge_email_tokens(cutoff).await?;
    if !rotation_due(&store.load_keys().await?, now, config.rotation_interval_secs) {
        return Ok(None);
    }
    let rotation = rotate(store, &config.kek, config.signing_alg, rng, now, retirement_window_secs(config)).await?;
    if let Some(r) = &rotation {
        let event = events::KeyRotated { old_kid: r.old_kid.clone(), new_kid: r.new_kid.clone() };
        events.publish(&[Envelope::new(event, rng, now)]).await?;
    }
    Ok(rotation)
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + KeyStore,
    E: EventSink,
    K: KeyRing,
{
    /// `POST /auth/admin/keys/rotate`: an administrator rotates the signing
    /// key now. Emits `key_rotated`; a lost race with another rotation is a
    /// 409 `rotation_conflict`.
    pub async fn admin_rotate_keys(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        _admin: &Admin,
    ) -> Result<KeyRotation, Error> {
        let rotation = rotate(
            self.store,
            &self.config.kek,
            self.config.signing_alg,
            rng,
            meta.now,
            retirement_window_secs(self.config),
        )
        .await?
        .ok_or_else(|| Error::Conflict {
            code: "rotation_conflict",
            detail: "another key rotation happened at the same time; the key has been rotated".into(),
        })?;
        self.emit(
            meta,
            rng,
            vec![events::KeyRotated { old_kid: rotation.old_kid.clone(), new_kid: rotation.new_kid.clone() }.into()],
        )
        .await?;
        Ok(rotation)
    }
}
