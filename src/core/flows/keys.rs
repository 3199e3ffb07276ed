//! The key ring's use cases: first-use key creation and discovery metadata.

use crate::core::error::Error;
use crate::core::ids::Random;
use crate::core::keys::{self, Kek, KeyStatus, SigningKey, StoredKey};
use crate::core::ports::KeyStore;
use crate::core::time::UnixTime;
use crate::core::token::ALG_EDDSA;

/// Loads the stored keys and the active signing key, creating that key on
/// first use. Racing creators are settled by the store's one-active-key
/// constraint: the loser reloads and uses the winner's key.
pub async fn load_or_create(
    store: &impl KeyStore,
    kek: &Kek,
    rng: &mut impl Random,
    now: UnixTime,
) -> Result<(Vec<StoredKey>, SigningKey), Error> {
    let stored = store.load_keys().await?;
    if let Some(active) = stored.iter().find(|k| k.status == KeyStatus::Active) {
        let key = active.unseal(kek)?;
        return Ok((stored, key));
    }
    let (new, key) = keys::generate(rng, kek, now)?;
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

/// `/.well-known/openid-configuration` for `issuer`.
pub fn discovery(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/auth/login"),
        "userinfo_endpoint": format!("{issuer}/auth/me"),
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALG_EDDSA],
        "token_endpoint_auth_signing_alg_values_supported": [ALG_EDDSA],
        "claims_supported": ["iss", "aud", "sub", "sid", "roles", "email", "email_verified", "iat", "exp", "jti"],
    })
}
