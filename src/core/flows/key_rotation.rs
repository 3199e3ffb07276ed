//! The key ring's use cases: first-use key creation, rotation (by an
//! administrator or the cron trigger), retirement at once (by an
//! administrator: a compromised key), how long a retired key stays
//! published, and discovery metadata. How long an isolate may use the keys
//! it loaded is the gateway's key cache's ([`crate::core::gateway::key_cache`]).

use serde::Serialize;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::events::{self, Envelope};
use crate::core::flows::admin::Admin;
use crate::core::flows::{Deps, Meta};
use crate::core::gateway::key_cache::key_cache_max_age_secs;
use crate::core::ids::Random;
use crate::core::ports::{EmailTokenStore, EventSink, KeyRing, KeyStore, SessionStore, UserStore};
use crate::core::signing_keys::{self, Kek, KeyStatus, Kid, SigningAlg, SigningKey, StoredKey, ALG_EDDSA, ALG_ES256};
use crate::core::time::UnixTime;
use crate::core::token::{ASSERTION_TTL_SECS, LEEWAY_SECS};

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
    let (new, key) = signing_keys::generate(alg, rng, kek, now)?;
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
/// OAuth / OIDC client would then call and find speaking something else —
/// but the two that do speak OAuth are: `revocation_endpoint` (RFC 7009)
/// and, when `INTROSPECTION_SECRET` enables it, `introspection_endpoint`
/// (RFC 7662), under `AUTH_PREFIX`.
pub fn discovery(issuer: &str, config: &Config) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": config.auth_url(issuer, "/revoke"),
        "revocation_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG_EDDSA, ALG_ES256],
        "claims_supported": ["iss", "aud", "sub", "sid", "roles", "email", "email_verified", "iat", "exp", "jti", "amr", "auth_time"],
    });
    if config.introspection_secret.is_some() {
        doc["introspection_endpoint"] = serde_json::Value::String(config.auth_url(issuer, "/introspect"));
        // Bearer with the secret works too; Basic is the registered name.
        doc["introspection_endpoint_auth_methods_supported"] = serde_json::json!(["client_secret_basic"]);
    }
    doc
}

/// A completed key rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRotation {
    /// The key retired (`None` when there was no key yet).
    pub old_kid: Option<Kid>,
    /// The new active key.
    pub new_kid: Kid,
}

/// Expired email tokens are kept this long (for support questions), then purged.
pub const EMAIL_TOKEN_RETENTION_SECS: u64 = 86_400;

/// How long a retired key stays in the JWKS after its retirement: another
/// isolate may keep signing with it until it reloads its keys (at most
/// [`key_cache_max_age_secs`] after loading them); an access token it signed
/// lives `ACCESS_TTL`, a gateway assertion [`ASSERTION_TTL_SECS`] (today
/// capped by its access token's expiry, but the window does not rely on
/// that); verifiers allow [`LEEWAY_SECS`] of clock skew past `exp`.
pub fn retirement_window_secs(config: &Config) -> u64 {
    key_cache_max_age_secs(config)
        .saturating_add(config.access_ttl_secs)
        .saturating_add(ASSERTION_TTL_SECS)
        .saturating_add(LEEWAY_SECS.unsigned_abs())
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
    let (new, _) = signing_keys::generate(alg, rng, kek, now)?;
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

/// A key taken out of publication at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRetirement {
    /// The key retired.
    pub kid: Kid,
    /// The new active key, when the retired key was the active one (`None`
    /// otherwise).
    pub new_kid: Option<Kid>,
}

/// Length of our key ids: the base64url RFC 7638 SHA-256 thumbprint.
pub const KID_LEN: usize = 43;

/// A path segment that can be one of our key ids (43 base64url
/// characters), else 422 `invalid_kid`.
pub fn parse_kid(raw: &str) -> Result<&str, Error> {
    if raw.len() == KID_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(raw)
    } else {
        Err(Error::validation("invalid_kid", format!("kid: a key id is {KID_LEN} characters of base64url")))
    }
}

fn key_not_found() -> Error {
    Error::NoSuch { code: "key_not_found", detail: "no published signing key has this kid".into() }
}

/// Attempts at a retirement that keeps losing races to rotations.
const RETIRE_ATTEMPTS: usize = 3;

/// Takes the published key `kid` out of publication at `now`, with its row
/// (and sealed private half): it leaves this isolate's JWKS at once, every
/// other isolate's within [`JWKS_RELOAD_SECS`](crate::core::gateway::key_cache::JWKS_RELOAD_SECS), and every isolate
/// stops accepting what it signed once its keys are reloaded (at most
/// [`key_cache_max_age_secs`]). The active key is first replaced by a new
/// one, in the same write, so signing never stops. A write that lost a race
/// (a rotation retired the key meanwhile, or another retirement withdrew
/// it) is retried on what the store holds then. Unknown, or no longer
/// published: 404 `key_not_found`.
pub async fn retire_now(
    store: &impl KeyStore,
    kek: &Kek,
    alg: SigningAlg,
    rng: &mut impl Random,
    kid: &str,
    now: UnixTime,
) -> Result<KeyRetirement, Error> {
    for _ in 0..RETIRE_ATTEMPTS {
        let stored = store.load_keys().await?;
        let key = stored.iter().find(|k| k.kid == kid && k.is_published(now)).ok_or_else(key_not_found)?;
        let retired = match key.status {
            KeyStatus::Active => {
                let (new, _) = signing_keys::generate(alg, rng, kek, now)?;
                // Published until now: no longer; the store's prune of
                // unpublished keys deletes it in the same write.
                store.rotate_key(&key.kid, &new, now, now).await?.then_some(Some(new.kid))
            }
            KeyStatus::Retired => store.withdraw_key(&key.kid, now).await?.then_some(None),
        };
        if let Some(new_kid) = retired {
            return Ok(KeyRetirement { kid: key.kid.clone(), new_kid });
        }
    }
    Err(Error::Conflict {
        code: "rotation_conflict",
        detail: "key rotations kept happening at the same time; retry".into(),
    })
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
        admin: &Admin,
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
        // This caller signs with the new key from now on, whatever the queue does.
        self.keys.keys_changed();
        self.emit_as(
            meta,
            rng,
            admin,
            vec![events::KeyRotated { old_kid: rotation.old_kid.clone(), new_kid: rotation.new_kid.clone() }.into()],
        )
        .await?;
        Ok(rotation)
    }

    /// `POST /auth/admin/keys/{kid}/retire`: an administrator takes a key
    /// out of publication at once — one that leaked, say ([`retire_now`]).
    /// Emits `key_retired` (not `key_rotated`, also when the active key was
    /// replaced: `new_kid` says so). A malformed `kid` is a 422
    /// `invalid_kid`, one no published key has a 404 `key_not_found`.
    pub async fn admin_retire_key(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        kid: &str,
    ) -> Result<KeyRetirement, Error> {
        let kid = parse_kid(kid)?;
        let retirement = retire_now(self.store, &self.config.kek, self.config.signing_alg, rng, kid, meta.now).await?;
        // Stop counting on the key here before anything else can fail.
        self.keys.keys_changed();
        self.emit_as(
            meta,
            rng,
            admin,
            vec![events::KeyRetired { kid: retirement.kid.clone(), new_kid: retirement.new_kid.clone() }.into()],
        )
        .await?;
        Ok(retirement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_thumbprint_shaped_kids_are_looked_up() {
        assert!(parse_kid("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k").is_ok());
        for bad in [
            "",
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4",
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4kk",
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4=",
            "kPrK+qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygr.4k",
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrSé",
            "' OR 1=1 --",
        ] {
            assert!(matches!(parse_kid(bad), Err(Error::Validation { code: "invalid_kid", .. })), "{bad}");
        }
    }
}
