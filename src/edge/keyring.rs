//! The isolate's key ring: signing keys loaded from D1 once and cached, public
//! keys imported into WebCrypto once and verified natively there.
//!
//! The gateway's hot path never touches D1: a known `kid` is answered from the
//! cache. An unknown `kid` triggers at most one reload per
//! [`UNKNOWN_KID_RELOAD_SECS`], whatever tokens arrive; keys only ever come
//! from our own table, never from a URL in a token.
//!
//! Rotation: the isolate that rotates calls [`invalidate`] and signs with the
//! new key from its next request; every other isolate reloads within
//! `KEY_CACHE_TTL` (and at once on meeting the new `kid`). Retired keys stay
//! published long enough to cover that window (see
//! [`crate::core::flows::keys::retirement_window_secs`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::CryptoKey;
use worker::Env;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::flows::keys::load_or_create;
use crate::core::keys::{jwks, Jwks, SigningKey, StoredKey};
use crate::core::ports::{KeyRing, Result};
use crate::core::time::UnixTime;
use crate::edge::d1::D1Store;
use crate::edge::platform::{self, OsRandom};

/// Least time between two reloads caused by unknown `kid`s.
pub const UNKNOWN_KID_RELOAD_SECS: i64 = 30;

struct Cache {
    loaded_at: UnixTime,
    keys: Vec<StoredKey>,
    signing: Option<SigningKey>,
    /// The signing key imported into WebCrypto, with its kid.
    signing_crypto: Option<(String, CryptoKey)>,
    imported: HashMap<String, CryptoKey>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
    static LAST_MISS_RELOAD: RefCell<UnixTime> = const { RefCell::new(UnixTime(i64::MIN)) };
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

    async fn reload(&self) -> Result<()> {
        let store = D1Store::new(self.env)?;
        let now = platform::now();
        let (keys, signing) = load_or_create(&store, &self.config.kek, &mut OsRandom, now).await?;
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let (imported, signing_crypto) = c.take().map(|old| (old.imported, old.signing_crypto)).unwrap_or_default();
            let signing_crypto = signing_crypto.filter(|(kid, _)| *kid == signing.kid);
            *c = Some(Cache { loaded_at: now, keys, signing: Some(signing), signing_crypto, imported });
        });
        Ok(())
    }

    fn is_fresh(&self, now: UnixTime) -> bool {
        let ttl = i64::try_from(self.config.key_cache_ttl_secs).unwrap_or(i64::MAX);
        CACHE.with(|c| c.borrow().as_ref().is_some_and(|c| now.0.saturating_sub(c.loaded_at.0) < ttl))
    }

    async fn ensure_loaded(&self) -> Result<()> {
        if self.is_fresh(platform::now()) {
            return Ok(());
        }
        self.reload().await
    }

    /// The published keys, as JWKS.
    pub async fn jwks(&self) -> Result<Jwks> {
        self.ensure_loaded().await?;
        let now = platform::now();
        Ok(CACHE.with(|c| c.borrow().as_ref().map(|c| jwks(&c.keys, now)).unwrap_or(Jwks { keys: Vec::new() })))
    }

    /// The imported WebCrypto key for a published `kid`, importing it once.
    async fn crypto_key(&self, kid: &str) -> Result<Option<CryptoKey>> {
        let now = platform::now();
        let lookup = CACHE.with(|c| {
            let c = c.borrow();
            let c = c.as_ref()?;
            if let Some(k) = c.imported.get(kid) {
                // Imported keys stay valid only while the key is published.
                let published = c.keys.iter().any(|s| s.kid == kid && s.is_published(now));
                return Some(published.then(|| Ok(k.clone())));
            }
            let stored = c.keys.iter().find(|s| s.kid == kid && s.is_published(now))?;
            Some(Some(Err(stored.public_bytes())))
        });
        match lookup {
            None => Ok(None),
            Some(None) => Ok(None),
            Some(Some(Ok(key))) => Ok(Some(key)),
            Some(Some(Err(bytes))) => {
                let key = import_ed25519(&bytes?).await?;
                CACHE.with(|c| {
                    if let Some(c) = c.borrow_mut().as_mut() {
                        c.imported.insert(kid.to_string(), key.clone());
                    }
                });
                Ok(Some(key))
            }
        }
    }
}

impl EdgeKeys<'_> {
    /// Signs `data` with the active key through WebCrypto (native code: far
    /// cheaper than Ed25519 in wasm). Returns the key's kid and the signature.
    pub async fn sign(&self, data: &[u8]) -> Result<(String, Vec<u8>)> {
        self.ensure_loaded().await?;
        let cached = CACHE.with(|c| c.borrow().as_ref().and_then(|c| c.signing_crypto.clone()));
        let (kid, key) = match cached {
            Some(pair) => pair,
            None => {
                let signing = self.signing_key().await?;
                let key = import_ed25519_private(&signing).await?;
                CACHE.with(|c| {
                    if let Some(c) = c.borrow_mut().as_mut() {
                        c.signing_crypto = Some((signing.kid.clone(), key.clone()));
                    }
                });
                (signing.kid, key)
            }
        };
        let subtle = platform::subtle().ok_or_else(|| Error::Internal("crypto.subtle is unavailable".into()))?;
        let promise = subtle
            .sign_with_str_and_u8_array("Ed25519", &key, data)
            .map_err(|e| Error::Internal(format!("sign: {e:?}")))?;
        let sig = JsFuture::from(promise).await.map_err(|e| Error::Internal(format!("sign: {e:?}")))?;
        Ok((kid, js_sys::Uint8Array::new(&sig).to_vec()))
    }
}

async fn import_ed25519_private(key: &SigningKey) -> Result<CryptoKey> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let subtle = platform::subtle().ok_or_else(|| Error::Internal("crypto.subtle is unavailable".into()))?;
    let jwk = js_sys::Object::new();
    let set = |k: &str, v: &str| js_sys::Reflect::set(&jwk, &k.into(), &v.into()).map(|_| ());
    let seed = key.secret().seed();
    let public = key.public_key();
    set("kty", "OKP")
        .and_then(|()| set("crv", "Ed25519"))
        .and_then(|()| set("d", &URL_SAFE_NO_PAD.encode(seed.as_ref())))
        .and_then(|()| set("x", &URL_SAFE_NO_PAD.encode(public.as_ref())))
        .map_err(|e| Error::Internal(format!("jwk: {e:?}")))?;
    let usages = js_sys::Array::of1(&"sign".into());
    let promise = subtle
        .import_key_with_str("jwk", &jwk, "Ed25519", false, &usages)
        .map_err(|e| Error::Internal(format!("importKey: {e:?}")))?;
    let key = JsFuture::from(promise).await.map_err(|e| Error::Internal(format!("importKey: {e:?}")))?;
    Ok(key.unchecked_into::<CryptoKey>())
}

/// Makes this isolate reload its keys from D1 on their next use — after it
/// rotated them itself. Imported WebCrypto keys are kept (they stay valid for
/// as long as their key is published).
pub fn invalidate() {
    CACHE.with(|c| {
        if let Some(c) = c.borrow_mut().as_mut() {
            c.loaded_at = UnixTime(i64::MIN);
        }
    });
}

async fn import_ed25519(raw: &[u8]) -> Result<CryptoKey> {
    let subtle = platform::subtle().ok_or_else(|| Error::Internal("crypto.subtle is unavailable".into()))?;
    let data = js_sys::Uint8Array::from(raw);
    let usages = js_sys::Array::of1(&"verify".into());
    let promise = subtle
        .import_key_with_str("raw", &data, "Ed25519", false, &usages)
        .map_err(|e| Error::Internal(format!("importKey: {e:?}")))?;
    let key = JsFuture::from(promise).await.map_err(|e| Error::Internal(format!("importKey: {e:?}")))?;
    Ok(key.unchecked_into::<CryptoKey>())
}

/// Verifies an Ed25519 signature with WebCrypto (native code in workerd).
pub async fn webcrypto_verify(key: &CryptoKey, signed: &[u8], signature: &[u8]) -> Result<bool> {
    let subtle = platform::subtle().ok_or_else(|| Error::Internal("crypto.subtle is unavailable".into()))?;
    let promise = subtle
        .verify_with_str_and_u8_array_and_u8_array("Ed25519", key, signature, signed)
        .map_err(|e| Error::Internal(format!("verify: {e:?}")))?;
    let ok = JsFuture::from(promise).await.map_err(|e| Error::Internal(format!("verify: {e:?}")))?;
    Ok(ok.as_bool().unwrap_or(false))
}

impl KeyRing for EdgeKeys<'_> {
    async fn signing_key(&self) -> Result<SigningKey> {
        self.ensure_loaded().await?;
        let key = CACHE.with(|c| c.borrow().as_ref().and_then(|c| c.signing.clone()));
        key.ok_or_else(|| Error::Internal("no signing key after load".into()))
    }

    async fn verify(&self, kid: &str, signed: &[u8], signature: &[u8]) -> Result<Option<bool>> {
        self.ensure_loaded().await?;
        let mut key = self.crypto_key(kid).await?;
        if key.is_none() {
            let now = platform::now();
            let may_reload = LAST_MISS_RELOAD.with(|t| {
                let mut t = t.borrow_mut();
                let due = now.0.saturating_sub(t.0) >= UNKNOWN_KID_RELOAD_SECS;
                if due {
                    *t = now;
                }
                due
            });
            if may_reload {
                self.reload().await?;
                key = self.crypto_key(kid).await?;
            }
        }
        match key {
            None => Ok(None),
            Some(k) => webcrypto_verify(&k, signed, signature).await.map(Some),
        }
    }
}
