//! Passkey assertion signatures through the runtime's native crypto
//! (`js/signatures.js`: `node:crypto`, the same BoringSSL as WebCrypto, and
//! synchronous): the edge's [`PasskeyVerifier`].
//!
//! The key is imported from its JWK members for each sign-in (one import
//! per ceremony; nothing is cached). An ES256 signature arrives DER-encoded,
//! the form `node:crypto` takes: it is parsed strictly first (`ecdsa`'s
//! `der`), so only a well-formed `r`, `s` pair reaches the runtime.

use crate::core::passkey::{Alg, PublicKey};
use crate::core::ports::{PasskeyVerifier, Result};
use crate::edge::error::EdgeError;
use crate::edge::js::{native_public_key, native_verify_ed25519, native_verify_es256};

/// Verifies passkey signatures natively.
pub struct NativePasskeys;

impl PasskeyVerifier for NativePasskeys {
    fn accepts_key(&self, key: &PublicKey) -> bool {
        let (x, y) = key.jwk_members();
        native_public_key(&x, &y).is_ok()
    }

    async fn verify_passkey(&self, key: &PublicKey, signed: &[u8], signature: &[u8]) -> Result<bool> {
        let (x, y) = key.jwk_members();
        let native = native_public_key(&x, &y).map_err(|e| EdgeError::from(e).context("passkey key import"))?;
        Ok(match key.alg {
            Alg::EdDsa => signature.len() == 64 && native_verify_ed25519(&native, signed, signature),
            Alg::Es256 => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| native_verify_es256(&native, signed, sig.to_der().as_bytes())),
        })
    }
}
