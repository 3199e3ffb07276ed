//! Passkey assertion signatures through the runtime's native crypto
//! (`js/signatures.js`: `node:crypto`, the same BoringSSL as WebCrypto, and
//! synchronous): the edge's [`PasskeyVerifier`].
//!
//! The key is imported from its JWK for each sign-in (one import
//! per ceremony; nothing is cached). An ES256 signature arrives DER-encoded,
//! the form `node:crypto` takes: it is parsed strictly first (`ecdsa`'s
//! `der`), so only a well-formed `r`, `s` pair reaches the runtime.

use crate::core::passkey::PublicKey;
use crate::core::ports::{PasskeyVerifier, Result};
use crate::edge::error::EdgeError;
use crate::edge::js::{native_passkey_key, native_verify_ed25519, native_verify_es256, native_verify_rs256};

/// Verifies passkey signatures natively.
pub struct NativePasskeys;

impl PasskeyVerifier for NativePasskeys {
    fn accepts_key(&self, key: &PublicKey) -> bool {
        native_passkey_key(&key.jwk()).is_ok()
    }

    async fn verify_passkey(&self, key: &PublicKey, signed: &[u8], signature: &[u8]) -> Result<bool> {
        let native = native_passkey_key(&key.jwk()).map_err(|e| EdgeError::from(e).context("passkey key import"))?;
        Ok(match key {
            PublicKey::Ed25519(_) => signature.len() == 64 && native_verify_ed25519(&native, signed, signature),
            PublicKey::P256 { .. } => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| native_verify_es256(&native, signed, sig.to_der().as_bytes())),
            // PKCS #1 v1.5: a signature is exactly as long as the modulus.
            PublicKey::Rsa { n, .. } => signature.len() == n.len() && native_verify_rs256(&native, signed, signature),
        })
    }
}
