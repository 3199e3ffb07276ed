//! The runtime's native signatures for the gateway's key cache: Ed25519 and
//! ECDSA P-256 through `js/signatures.js` (`node:crypto`, synchronous), each
//! key imported once ([`SignatureOps`]).

use wasm_bindgen::JsValue;

use crate::core::error::Error;
use crate::core::gateway::key_cache::SignatureOps;
use crate::core::signing_keys::{SigningAlg, SigningKey, StoredKey};
use crate::edge::error::{EdgeError, EdgeResult};
use crate::edge::js::{
    native_private_key, native_public_key, native_sign_ed25519, native_sign_es256, native_verify_ed25519,
    native_verify_es256,
};

/// The runtime's native crypto.
pub struct Native;

impl SignatureOps for Native {
    type PublicKey = JsValue;
    type PrivateKey = JsValue;

    fn import_public(&self, key: &StoredKey) -> Result<JsValue, Error> {
        let (x, y) = key.public_coordinates()?;
        Ok(native_public_key(&x, y.as_deref().unwrap_or("")).context(&format!("key {}: cannot import", key.kid))?)
    }

    fn import_private(&self, key: &SigningKey) -> Result<JsValue, Error> {
        let jwk = key.private_jwk();
        Ok(native_private_key(&jwk.d, &jwk.x, jwk.y.as_deref().unwrap_or(""))
            .context(&format!("key {}: cannot import", key.kid))?)
    }

    fn verify(&self, alg: SigningAlg, key: &JsValue, data: &[u8], signature: &[u8]) -> bool {
        match alg {
            SigningAlg::EdDsa => native_verify_ed25519(key, data, signature),
            // JWS's r‖s, which must be a valid signature encoding, as DER.
            SigningAlg::Es256 => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|sig| native_verify_es256(key, data, sig.to_der().as_bytes())),
        }
    }

    fn sign(&self, alg: SigningAlg, key: &JsValue, data: &[u8]) -> Result<Vec<u8>, Error> {
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
}
