//! Standard Webhooks signing (<https://www.standardwebhooks.com>): the secret
//! format `whsec_<base64>`, the signed content `{id}.{timestamp}.{body}` and the
//! `webhook-id` / `webhook-timestamp` / `webhook-signature` headers. Outgoing
//! webhooks and the sign-in hook are both signed this way, so any Standard
//! Webhooks library verifies them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::core::crypto::MacKey;
use crate::core::time::UnixTime;

/// Prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest key accepted, in bytes (the specification's minimum).
pub const MIN_SECRET_BYTES: usize = 24;
/// Longest key accepted, in bytes (the specification's maximum).
pub const MAX_SECRET_BYTES: usize = 64;
/// Header carrying the message id (our event id).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the signing time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying `v1,<base64 signature>`.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// A signing key; its `Debug` prints nothing of it.
#[derive(Clone)]
pub struct WebhookSecret {
    /// The key's bytes, kept only to compare two secrets.
    raw: Vec<u8>,
    key: MacKey,
}

impl PartialEq for WebhookSecret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.raw.ct_eq(&other.raw))
    }
}

impl Eq for WebhookSecret {}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_` followed by the standard base64 of 24 to 64 random bytes.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let b64 = raw
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("must start with {SECRET_PREFIX} (a Standard Webhooks secret)"))?;
        let key = STANDARD.decode(b64).map_err(|_| format!("the part after {SECRET_PREFIX} is not base64"))?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(format!(
                "the key is {} bytes; it must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes",
                key.len()
            ));
        }
        let mac = MacKey::new(&key).map_err(|e| e.to_string())?;
        Ok(Self { raw: key, key: mac })
    }

    /// `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    pub fn sign(&self, id: &str, timestamp: UnixTime, body: &str) -> String {
        let ts = timestamp.0.to_string();
        let tag = self.key.tag(&[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]);
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// Whether `header` (space-separated `v1,<sig>` entries) holds a valid
    /// signature of the message; compared in constant time.
    pub fn verify(&self, id: &str, timestamp: UnixTime, body: &str, header: &str) -> bool {
        let ts = timestamp.0.to_string();
        let signed: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()];
        header
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .any(|sig| STANDARD.decode(sig).is_ok_and(|bytes| self.key.verify(&signed, &bytes)))
    }

    /// The three Standard Webhooks headers for a message.
    pub fn headers(&self, id: &str, timestamp: UnixTime, body: &str) -> Vec<(String, String)> {
        vec![
            (HEADER_ID.to_string(), id.to_string()),
            (HEADER_TIMESTAMP.to_string(), timestamp.0.to_string()),
            (HEADER_SIGNATURE.to_string(), self.sign(id, timestamp, body)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: UnixTime = UnixTime(1_614_265_330);
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_its_own_signatures_and_nothing_else() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert!(secret.verify(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE));
        assert!(secret.verify(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &format!("v1,AAAA {SPEC_SIGNATURE}")));
        assert!(!secret.verify(SPEC_ID, SPEC_TIMESTAMP, r#"{"test": 2432232315}"#, SPEC_SIGNATURE));
        assert!(!secret.verify("msg_other", SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE));
        assert!(!secret.verify(SPEC_ID, UnixTime(1_614_265_331), SPEC_BODY, SPEC_SIGNATURE));
        assert!(!secret.verify(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        assert!(!secret.verify(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, "v1,not base64!"));
    }

    #[test]
    fn headers_carry_id_timestamp_and_signature() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        let h = secret.headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(
            h,
            vec![
                ("webhook-id".to_string(), SPEC_ID.to_string()),
                ("webhook-timestamp".to_string(), "1614265330".to_string()),
                ("webhook-signature".to_string(), SPEC_SIGNATURE.to_string()),
            ]
        );
    }

    #[test]
    fn bad_secrets_are_refused_and_never_printed() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        assert!(WebhookSecret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 65]))).is_err());
        let s = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(format!("{s:?}"), "WebhookSecret(..)");
    }
}
