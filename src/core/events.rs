//! Auth events: one typed struct per event type, and the queue envelope
//! `{ "id", "type", "timestamp", "data" }` with AuthFort's names and fields.
//!
//! Adding an event type means adding one line to the `events!` table below.

use serde::{Deserialize, Serialize};

use crate::core::ids::{self, Random};
use crate::core::time::UnixTime;

/// Version of the envelope format, carried in every message as `v`.
pub const ENVELOPE_VERSION: u32 = 1;

macro_rules! events {
    ($( $variant:ident => $name:literal { $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            #[doc = concat!("Data of the `", $name, "` event.")]
            #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
            pub struct $variant {
                $( $(#[$fattr])* #[allow(missing_docs)] pub $field: $ty, )*
            }

            impl From<$variant> for Event {
                fn from(data: $variant) -> Self {
                    Event::$variant(data)
                }
            }
        )*

        /// Any event; serialises as its `data` object.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(untagged)]
        pub enum Event {
            $( #[doc = concat!("`", $name, "`")] $variant($variant), )*
        }

        impl Event {
            /// The event type name, e.g. `user_created`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Event::$variant(_) => $name, )*
                }
            }

            /// Every event type name.
            pub const KINDS: &'static [&'static str] = &[$($name),*];

            /// Rebuilds an event from its type name and `data` object.
            pub fn from_parts(kind: &str, data: serde_json::Value) -> Result<Self, String> {
                match kind {
                    $( $name => serde_json::from_value::<$variant>(data)
                        .map(Event::$variant)
                        .map_err(|e| format!("{}: {e}", $name)), )*
                    other => Err(format!("unknown event type {other:?}")),
                }
            }
        }
    };
}

events! {
    UserCreated => "user_created" { user_id: String, email: String, name: Option<String>, provider: String }
    UserUpdated => "user_updated" { user_id: String, fields: Vec<String> }
    UserDeleted => "user_deleted" { user_id: String, email: String }
    UserBanned => "user_banned" { user_id: String }
    UserUnbanned => "user_unbanned" { user_id: String }
    Login => "login" { user_id: String, email: String, provider: String, ip_address: Option<String>, user_agent: Option<String> }
    LoginFailed => "login_failed" { email: String, reason: String, ip_address: Option<String>, user_agent: Option<String> }
    Logout => "logout" { user_id: String }
    TokenRefreshed => "token_refreshed" { user_id: String, ip_address: Option<String>, user_agent: Option<String> }
    RoleAdded => "role_added" { user_id: String, role: String }
    RoleRemoved => "role_removed" { user_id: String, role: String }
    SessionRevoked => "session_revoked" { user_id: String, session_id: Option<String>, revoke_all: bool }
    OauthLink => "oauth_link" { user_id: String, email: String, provider: String }
    PasswordResetRequested => "password_reset_requested" { user_id: String, email: String, token: String }
    PasswordReset => "password_reset" { user_id: String }
    PasswordChanged => "password_changed" { user_id: String }
    EmailVerificationRequested => "email_verification_requested" { user_id: String, email: String, token: String }
    EmailVerified => "email_verified" { user_id: String, email: String }
    MagicLinkRequested => "magic_link_requested" { user_id: Option<String>, email: String, token: String }
    MagicLinkLogin => "magic_link_login" { user_id: String, email: String }
    EmailOtpRequested => "email_otp_requested" { user_id: Option<String>, email: String, code: String }
    EmailOtpLogin => "email_otp_login" { user_id: String, email: String }
    KeyRotated => "key_rotated" { old_kid: Option<String>, new_kid: String }
    KeyRetired => "key_retired" { kid: String, new_kid: Option<String> }
    RateLimitExceeded => "rate_limit_exceeded" { endpoint: String, ip_address: Option<String>, email: Option<String>, limit: u32, key_type: String }
}

/// An event as it travels on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// Unique id (UUID); the idempotency key of delivery.
    pub id: String,
    /// Event type name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it happened, RFC 3339.
    pub timestamp: String,
    /// Envelope format version.
    pub v: u32,
    /// The event's fields.
    pub data: Event,
}

impl Envelope {
    /// Wraps `event` with a fresh id and the time `now`.
    pub fn new(event: impl Into<Event>, rng: &mut impl Random, now: UnixTime) -> Self {
        let data = event.into();
        Self { id: ids::uuid(rng), kind: data.kind(), timestamp: now.rfc3339(), v: ENVELOPE_VERSION, data }
    }

    /// The JSON text of the envelope.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings, bools and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An envelope read back from the queue, with its data checked against the
/// declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Event id.
    pub id: String,
    /// RFC 3339 timestamp as sent.
    pub timestamp: String,
    /// Envelope format version as sent.
    pub v: u32,
    /// The typed event.
    pub event: Event,
}

#[derive(Deserialize)]
struct RawEnvelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: String,
    #[serde(default = "default_version")]
    v: u32,
    data: serde_json::Value,
}

fn default_version() -> u32 {
    ENVELOPE_VERSION
}

impl Received {
    /// Parses a queue message body; an error means the message is malformed
    /// and must be dead-lettered rather than retried.
    pub fn parse(body: serde_json::Value) -> Result<Self, String> {
        let raw: RawEnvelope = serde_json::from_value(body).map_err(|e| format!("envelope: {e}"))?;
        if raw.id.is_empty() {
            return Err("envelope: empty id".into());
        }
        let event = Event::from_parts(&raw.kind, raw.data)?;
        Ok(Self { id: raw.id, timestamp: raw.timestamp, v: raw.v, event })
    }

    /// Back to the envelope's JSON value (what webhooks receive).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "type": self.event.kind(),
            "timestamp": self.timestamp,
            "v": self.v,
            "data": self.event,
        })
    }

    /// The envelope with its one-time secrets (`token`, `code`) masked, for
    /// logs that outlive the secrets' purpose.
    pub fn to_redacted_value(&self) -> serde_json::Value {
        let mut v = self.to_value();
        if let Some(data) = v.get_mut("data").and_then(serde_json::Value::as_object_mut) {
            for key in ["token", "code"] {
                if let Some(secret) = data.get_mut(key) {
                    *secret = serde_json::Value::String("[redacted]".into());
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    #[test]
    fn envelope_has_the_spec_shape() {
        let env = Envelope::new(
            UserCreated { user_id: "u1".into(), email: "a@b.co".into(), name: None, provider: "email".into() },
            &mut SeqRandom(1),
            UnixTime(0),
        );
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        assert_eq!(v["type"], "user_created");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(
            v["data"],
            serde_json::json!({"user_id": "u1", "email": "a@b.co", "name": null, "provider": "email"})
        );
        assert_eq!(v["id"].as_str().unwrap().len(), 36);
    }

    #[test]
    fn received_round_trips_and_rejects_wrong_shapes() {
        let env = Envelope::new(Logout { user_id: "u".into() }, &mut SeqRandom(2), UnixTime(5));
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        let r = Received::parse(v.clone()).unwrap();
        assert_eq!(r.event, Event::Logout(Logout { user_id: "u".into() }));
        assert_eq!(r.to_value()["data"], v["data"]);
        assert!(
            Received::parse(serde_json::json!({"id": "x", "type": "logout", "timestamp": "t", "data": {}})).is_err()
        );
        assert!(Received::parse(serde_json::json!({"id": "x", "type": "nope", "timestamp": "t", "data": {}})).is_err());
        assert!(Received::parse(serde_json::json!("string")).is_err());
    }

    #[test]
    fn redaction_masks_tokens_and_codes_only() {
        let env = Envelope::new(
            MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: "s3cret".into() },
            &mut SeqRandom(3),
            UnixTime(5),
        );
        let r = Received::parse(serde_json::from_str(&env.to_json()).unwrap()).unwrap();
        assert_eq!(r.v, ENVELOPE_VERSION);
        let red = r.to_redacted_value();
        assert_eq!(red["data"]["token"], "[redacted]");
        assert_eq!(red["data"]["email"], "a@b.co");
        assert!(!red.to_string().contains("s3cret"));
        assert!(r.to_value().to_string().contains("s3cret"));
    }

    #[test]
    fn every_kind_is_unique() {
        let mut kinds = Event::KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Event::KINDS.len());
    }
}
