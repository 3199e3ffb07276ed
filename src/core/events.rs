//! Auth events: one typed struct per event type, and the queue envelope
//! `{ "id", "type", "timestamp", "data" }` with AuthFort's names and fields.
//!
//! Adding an event type means adding one line to the `events!` table below,
//! which names its [`Outcome`] too: a line without one does not compile, so
//! every new type is a deliberate `Success` or `Failure` in the audit log.
//!
//! Four events carry a one-time secret ([`secret_field`]): the magic link's
//! token, the email code, the reset and the verification token. Webhooks get
//! them in clear (the envelope as specified), but everywhere an event rests —
//! on the queue, in the D1 outbox, in the dead letters — the secret is
//! sealed ([`Envelope::to_sealed_json`]: AES-256-GCM under a subkey of
//! `KEY_ENCRYPTION_KEY`, bound to the whole envelope, recipient included),
//! and logs show it masked ([`Received::to_redacted_value`]). Only the
//! consumer about to deliver the event opens it ([`Received::open`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::crypto::SealKey;
use crate::core::error::Error;
use crate::core::ids::{self, Random, SessionId, UserId};
use crate::core::signing_keys::{Kek, Kid};
use crate::core::time::UnixTime;

/// Version of the envelope format, carried in every message as `v`.
pub const ENVELOPE_VERSION: u32 = 1;

/// Whether an event records something that happened or an attempt refused:
/// each event type's is given in the `events!` table, and the audit log
/// stores it with every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action happened.
    Success,
    /// The attempt was refused or failed.
    Failure,
}

impl Outcome {
    /// The outcome events of type `kind` record; [`Outcome::Success`] for
    /// a type this build does not know.
    pub fn of(kind: &str) -> Self {
        Event::outcome_of(kind).unwrap_or(Self::Success)
    }

    /// `success` or `failure`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }

    /// Reads [`Outcome::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            _ => None,
        }
    }
}

macro_rules! events {
    ($( $variant:ident => $name:literal, $outcome:ident { $( $(#[$fattr:meta])* $field:ident : $ty:ty ),* $(,)? } )*) => {
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

            /// Whether this event records an action or a refused attempt.
            pub fn outcome(&self) -> Outcome {
                match self {
                    $( Event::$variant(_) => Outcome::$outcome, )*
                }
            }

            /// The outcome of events of type `kind`, if it is one.
            pub fn outcome_of(kind: &str) -> Option<Outcome> {
                match kind {
                    $( $name => Some(Outcome::$outcome), )*
                    _ => None,
                }
            }

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
    UserCreated => "user_created", Success { user_id: UserId, email: String, name: Option<String>, provider: String }
    UserUpdated => "user_updated", Success { user_id: UserId, fields: Vec<String> }
    UserDeleted => "user_deleted", Success { user_id: UserId, email: String }
    UserBanned => "user_banned", Success { user_id: UserId }
    UserUnbanned => "user_unbanned", Success { user_id: UserId }
    Login => "login", Success { user_id: UserId, email: String, provider: String, ip_address: Option<String>, user_agent: Option<String> }
    LoginFailed => "login_failed", Failure { email: String, reason: String, ip_address: Option<String>, user_agent: Option<String> }
    Logout => "logout", Success { user_id: UserId }
    TokenRefreshed => "token_refreshed", Success { user_id: UserId, ip_address: Option<String>, user_agent: Option<String> }
    RoleAdded => "role_added", Success { user_id: UserId, role: String }
    RoleRemoved => "role_removed", Success { user_id: UserId, role: String }
    SessionRevoked => "session_revoked", Success { user_id: UserId, session_id: Option<SessionId>, revoke_all: bool }
    OauthLink => "oauth_link", Success { user_id: UserId, email: String, provider: String }
    PasswordResetRequested => "password_reset_requested", Success { user_id: UserId, email: String, token: String, #[serde(default)] locale: Option<String> }
    PasswordReset => "password_reset", Success { user_id: UserId }
    PasswordChanged => "password_changed", Success { user_id: UserId }
    EmailVerificationRequested => "email_verification_requested", Success { user_id: UserId, email: String, token: String, #[serde(default)] locale: Option<String> }
    EmailVerified => "email_verified", Success { user_id: UserId, email: String }
    MagicLinkRequested => "magic_link_requested", Success { user_id: Option<UserId>, email: String, token: String, #[serde(default)] locale: Option<String> }
    MagicLinkLogin => "magic_link_login", Success { user_id: UserId, email: String }
    EmailOtpRequested => "email_otp_requested", Success { user_id: Option<UserId>, email: String, code: String, #[serde(default)] locale: Option<String> }
    EmailOtpLogin => "email_otp_login", Success { user_id: UserId, email: String }
    KeyRotated => "key_rotated", Success { old_kid: Option<Kid>, new_kid: Kid }
    KeyRetired => "key_retired", Success { kid: Kid, new_kid: Option<Kid> }
    RateLimitExceeded => "rate_limit_exceeded", Failure { endpoint: String, ip_address: Option<String>, email: Option<String>, limit: u32, key_type: String }
    MfaEnabled => "mfa_enabled", Success { user_id: UserId, method: String }
    MfaDisabled => "mfa_disabled", Success { user_id: UserId, method: String }
    MfaFailed => "mfa_failed", Failure { user_id: UserId, method: String, ip_address: Option<String> }
    PasskeyAdded => "passkey_added", Success { user_id: UserId, passkey_id: String }
    PasskeyRemoved => "passkey_removed", Success { user_id: UserId, passkey_id: String }
}

/// The field holding the one-time secret of events of type `kind` (`token`
/// or `code`), for the four that carry one.
pub fn secret_field(kind: &str) -> Option<&'static str> {
    match kind {
        "magic_link_requested" | "password_reset_requested" | "email_verification_requested" => Some("token"),
        "email_otp_requested" => Some("code"),
        _ => None,
    }
}

impl Event {
    /// The one-time secret this event carries (the value of its
    /// [`secret_field`]), if any.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Event::MagicLinkRequested(e) => Some(&e.token),
            Event::PasswordResetRequested(e) => Some(&e.token),
            Event::EmailVerificationRequested(e) => Some(&e.token),
            Event::EmailOtpRequested(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// What logs and stored rows show instead of a one-time secret.
pub const REDACTED: &str = "[redacted]";
/// Member name of a sealed secret on the queue and in D1: `{"sealed": "…"}`.
pub const SEALED_MEMBER: &str = "sealed";
/// Label of the `KEY_ENCRYPTION_KEY` subkey that seals events' secrets.
const SECRETS_KEY_LABEL: &str = "portcullis.event-secrets";

/// The key sealing events' one-time secrets: a subkey of the KEK, so the
/// KEK itself seals nothing but signing keys.
pub fn secrets_key(kek: &Kek) -> SealKey {
    SealKey::new(kek.derive(SECRETS_KEY_LABEL))
}

/// Members of the envelope a sealed secret is bound to: all of them.
const ENVELOPE_MEMBERS: [&str; 5] = ["id", "type", "timestamp", "v", "data"];
/// Domain of the associated data, naming its form.
const SEALING_AAD_LABEL: &[u8] = b"portcullis.event-secret.v2\0";

/// Associated data of the secret sealed in `body` (an envelope's JSON) as
/// its `field`: the whole envelope — `id`, `type`, `timestamp`, `v` and every
/// member of `data` — in [`canonical`] form, with the secret's slot emptied.
/// So a sealed secret opens only in the very envelope it was sealed in:
/// copied into another event, or left in place while the recipient (`email`),
/// the user, the type or anything else is changed, it does not open.
fn sealing_aad(body: &Value, field: &str) -> Vec<u8> {
    let mut envelope = serde_json::Map::new();
    for member in ENVELOPE_MEMBERS {
        if let Some(v) = body.get(member) {
            envelope.insert(member.to_string(), v.clone());
        }
    }
    if let Some(slot) = envelope.get_mut("data").and_then(|d| d.get_mut(field)) {
        *slot = Value::String(String::new());
    }
    let mut aad = SEALING_AAD_LABEL.to_vec();
    let mut text = String::new();
    canonical(&Value::Object(envelope), &mut text);
    aad.extend_from_slice(text.as_bytes());
    aad
}

/// `value` as compact JSON with every object's members sorted by name, so
/// the same envelope gives the same bytes whoever serialised it and in
/// whatever member order it travelled (serde_json escapes the strings).
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The field of the one-time secret an envelope's JSON declares by its
/// `type`, if any.
fn declared_secret_field(body: &Value) -> Option<&'static str> {
    secret_field(body.get("type")?.as_str()?)
}

/// The sealed text of a `{"sealed": "…"}` value.
fn sealed_text(slot: &Value) -> Option<&str> {
    match slot {
        Value::Object(m) if m.len() == 1 => m.get(SEALED_MEMBER)?.as_str(),
        _ => None,
    }
}

/// Masks what may be a one-time secret left in clear in a message's JSON —
/// `data.token` or `data.code` of any type, also of a malformed message,
/// whatever its JSON type — keeping a sealed one (`{"sealed": …}`): the form
/// stored dead letters and quarantined bodies take. Returns the masked
/// values as text, so that error messages quoting them can be scrubbed too.
pub fn mask_clear_secret(body: &mut Value) -> Vec<String> {
    let mut masked = Vec::new();
    if let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) {
        for field in ["token", "code"] {
            if let Some(slot) = data.get_mut(field) {
                if sealed_text(slot).is_none() && slot.as_str() != Some(REDACTED) {
                    masked.push(slot.as_str().map_or_else(|| slot.to_string(), str::to_string));
                    *slot = Value::String(REDACTED.into());
                }
            }
        }
    }
    masked
}

/// `text` with every one of `secrets` (as [`mask_clear_secret`] returned
/// them) replaced by [`REDACTED`].
pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_string(), |t, s| t.replace(s.as_str(), REDACTED))
}

/// Why a queued message cannot be opened for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Not an envelope of a known type with its exact fields, or its secret
    /// was masked when it was stored: it can never be delivered.
    Malformed(String),
    /// Its sealed secret does not open with this key: sealed under another
    /// `KEY_ENCRYPTION_KEY` (an isolate still on the previous one, during a
    /// change), or the envelope was altered after sealing.
    Unopened(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) | Self::Unopened(why) => f.write_str(why),
        }
    }
}

/// Facts about the request behind an event that are not part of its
/// documented `data`: who made it, from where, with what client. They travel
/// beside the envelope on the queue (member `ctx`, see
/// [`Envelope::to_sealed_json`]) for the audit log (`core::audit`), and are
/// never sent to webhooks. Every member is optional: an event of the cron
/// trigger has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventContext {
    /// The client's IP address (`CF-Connecting-IP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The administrator who acted, for actions taken through the admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<UserId>,
}

impl EventContext {
    /// Whether no member is set (then the envelope carries no `ctx`).
    pub fn is_empty(&self) -> bool {
        self.ip_address.is_none() && self.user_agent.is_none() && self.actor_id.is_none()
    }
}

/// Member of the queued envelope holding its [`EventContext`].
pub const CONTEXT_MEMBER: &str = "ctx";

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
    /// The request's facts, queued beside the envelope (not in
    /// [`Envelope::to_json`], the envelope as documented).
    #[serde(skip)]
    pub ctx: EventContext,
}

impl Envelope {
    /// Wraps `event` with a fresh id and the time `now`, without context.
    pub fn new(event: impl Into<Event>, rng: &mut impl Random, now: UnixTime) -> Self {
        let data = event.into();
        Self {
            id: ids::uuid(rng),
            kind: data.kind(),
            timestamp: now.rfc3339(),
            v: ENVELOPE_VERSION,
            data,
            ctx: EventContext::default(),
        }
    }

    /// The envelope with `ctx` as its request's facts.
    pub fn with_context(mut self, ctx: EventContext) -> Self {
        self.ctx = ctx;
        self
    }

    /// The JSON text of the envelope, secrets in clear (what webhooks get).
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings, bools and numbers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON text of the envelope as the queue carries it and D1 keeps it
    /// (outbox, dead letters): its one-time secret, if any, replaced by
    /// `{"sealed": base64url(nonce || AES-256-GCM(secret))}` under `key`
    /// (see [`secrets_key`]), bound to the whole envelope (id, type,
    /// timestamp, version and every other data member, see `sealing_aad`);
    /// and its [`EventContext`], if any, as the member `ctx` — outside what
    /// the seal binds, as it decides nothing about delivery.
    pub fn to_sealed_json(&self, key: &SealKey, rng: &mut impl Random) -> Result<String, Error> {
        let mut body = serde_json::to_value(self).map_err(|e| Error::Internal(format!("event json: {e}")))?;
        if let Some(field) = secret_field(self.kind) {
            if let Some(clear) = self.data.secret() {
                let sealed = key.seal(&sealing_aad(&body, field), clear.as_bytes(), rng)?;
                if let Some(slot) = body.get_mut("data").and_then(|d| d.get_mut(field)) {
                    *slot = serde_json::json!({ SEALED_MEMBER: sealed });
                }
            }
        }
        if !self.ctx.is_empty() {
            let ctx = serde_json::to_value(&self.ctx).map_err(|e| Error::Internal(format!("event context: {e}")))?;
            if let Some(members) = body.as_object_mut() {
                members.insert(CONTEXT_MEMBER.into(), ctx);
            }
        }
        Ok(body.to_string())
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
    /// The request's facts queued beside it (empty for a message without
    /// `ctx`, or with one that is not an [`EventContext`]: they only feed
    /// the audit log, so they never make a message undeliverable).
    pub ctx: EventContext,
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
    #[serde(default)]
    ctx: Option<serde_json::Value>,
}

fn default_version() -> u32 {
    ENVELOPE_VERSION
}

impl Received {
    /// Parses a queue message body whose secret is sealed ([`Envelope::to_sealed_json`]),
    /// opening it with `key`.
    ///
    /// A secret in clear (a message queued by the version before secrets
    /// were sealed) is taken as it is — accepted for the messages in flight
    /// across that upgrade only, and to be refused from the next release.
    /// A secret reading [`REDACTED`] (a dead letter masked when it was
    /// stored, sent to the queue again) is malformed: a mail must never carry
    /// it. [`OpenError::Unopened`] when the seal does not open (another
    /// `KEY_ENCRYPTION_KEY`, or an envelope changed after sealing).
    pub fn open(mut body: Value, key: &SealKey) -> Result<Self, OpenError> {
        if let Some(field) = declared_secret_field(&body) {
            let kind = body.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
            let opened = match body.get("data").and_then(|d| d.get(field)) {
                Some(slot) if slot.as_str() == Some(REDACTED) => {
                    return Err(OpenError::Malformed(format!(
                        "{kind}: the {field} was masked when the message was stored; it cannot be delivered"
                    )))
                }
                Some(slot) => match sealed_text(slot) {
                    Some(sealed) => Some(
                        key.open(&sealing_aad(&body, field), sealed)
                            .and_then(|bytes| String::from_utf8(bytes).ok())
                            .ok_or_else(|| {
                                OpenError::Unopened(format!(
                                    "{kind}: the sealed {field} does not open with this KEY_ENCRYPTION_KEY \
                                     (sealed under another one, or the message was altered)"
                                ))
                            })?,
                    ),
                    None => None,
                },
                None => None,
            };
            if let (Some(clear), Some(slot)) = (opened, body.get_mut("data").and_then(|d| d.get_mut(field))) {
                *slot = Value::String(clear);
            }
        }
        Self::parse(body).map_err(OpenError::Malformed)
    }

    /// Parses a queue message body without opening it: its secret, sealed or
    /// not, reads [`REDACTED`]. For records and logs that never need it.
    pub fn parse_masked(mut body: Value) -> Result<Self, String> {
        if let Some(data) = body.get_mut("data").and_then(Value::as_object_mut) {
            for field in ["token", "code"] {
                if let Some(slot) = data.get_mut(field) {
                    *slot = Value::String(REDACTED.into());
                }
            }
        }
        Self::parse(body)
    }

    /// Parses an envelope with its secret in clear (as webhooks get it); an
    /// error means the message is malformed and must be dead-lettered rather
    /// than retried.
    pub fn parse(body: serde_json::Value) -> Result<Self, String> {
        let raw: RawEnvelope = serde_json::from_value(body).map_err(|e| format!("envelope: {e}"))?;
        if raw.id.is_empty() {
            return Err("envelope: empty id".into());
        }
        let event = Event::from_parts(&raw.kind, raw.data)?;
        let ctx = raw.ctx.and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
        Ok(Self { id: raw.id, timestamp: raw.timestamp, v: raw.v, event, ctx })
    }

    /// Back to the envelope's JSON value (what webhooks receive): without
    /// its [`EventContext`].
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
                    *secret = serde_json::Value::String(REDACTED.into());
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
            MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: "s3cret".into(), locale: None },
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

    fn secret_events() -> Vec<(Event, &'static str, &'static str)> {
        vec![
            (
                MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: "tok-magic".into(), locale: None }
                    .into(),
                "token",
                "tok-magic",
            ),
            (
                EmailOtpRequested {
                    user_id: Some("u".into()),
                    email: "a@b.co".into(),
                    code: "042917".into(),
                    locale: None,
                }
                .into(),
                "code",
                "042917",
            ),
            (
                PasswordResetRequested {
                    user_id: "u".into(),
                    email: "a@b.co".into(),
                    token: "tok-reset".into(),
                    locale: None,
                }
                .into(),
                "token",
                "tok-reset",
            ),
            (
                EmailVerificationRequested {
                    user_id: "u".into(),
                    email: "a@b.co".into(),
                    token: "tok-verify".into(),
                    locale: None,
                }
                .into(),
                "token",
                "tok-verify",
            ),
        ]
    }

    fn sealing_key() -> SealKey {
        secrets_key(&Kek::from_bytes([5; 32]))
    }

    #[test]
    fn exactly_the_four_requested_events_carry_a_secret() {
        for (event, field, secret) in secret_events() {
            assert_eq!(secret_field(event.kind()), Some(field));
            assert_eq!(event.secret(), Some(secret));
            assert_eq!(serde_json::to_value(&event).unwrap()[field], secret);
        }
        let with_secret: Vec<_> = Event::KINDS.iter().filter(|k| secret_field(k).is_some()).collect();
        assert_eq!(with_secret.len(), 4);
        assert_eq!(Event::from(Logout { user_id: "u".into() }).secret(), None);
    }

    #[test]
    fn sealed_envelopes_hide_the_secret_and_open_back_to_the_same_event() {
        let key = sealing_key();
        for (i, (event, field, secret)) in secret_events().into_iter().enumerate() {
            let env = Envelope::new(event, &mut SeqRandom(10 + i as u64), UnixTime(5));
            let sealed = env.to_sealed_json(&key, &mut SeqRandom(20 + i as u64)).unwrap();
            assert!(!sealed.contains(secret), "{sealed}");
            let value: Value = serde_json::from_str(&sealed).unwrap();
            assert!(value["data"][field][SEALED_MEMBER].is_string(), "{sealed}");
            assert_eq!(value["data"]["email"], "a@b.co", "the rest stays readable");
            let clear = Received::parse(serde_json::from_str(&env.to_json()).unwrap()).unwrap();
            assert_eq!(Received::open(value.clone(), &key).unwrap(), clear);
            // Nothing reads a sealed secret without opening it.
            assert!(Received::parse(value.clone()).is_err());
            let masked = Received::parse_masked(value.clone()).unwrap();
            assert_eq!(masked.event.secret(), Some(REDACTED));
            assert_eq!(masked.id, env.id);
            // Another key does not open it.
            let other = secrets_key(&Kek::from_bytes([6; 32]));
            let err = Received::open(value, &other).unwrap_err();
            assert!(matches!(&err, OpenError::Unopened(why) if why.contains("does not open")), "{err:?}");
        }
    }

    #[test]
    fn a_sealed_secret_opens_only_in_its_own_event() {
        let key = sealing_key();
        let make = |seed, token: &str| {
            let env = Envelope::new(
                MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: token.into(), locale: None },
                &mut SeqRandom(seed),
                UnixTime(5),
            );
            serde_json::from_str::<Value>(&env.to_sealed_json(&key, &mut SeqRandom(seed + 100)).unwrap()).unwrap()
        };
        let (mine, mut theirs) = (make(1, "mine"), make(2, "theirs"));
        theirs["data"]["token"] = mine["data"]["token"].clone();
        assert!(Received::open(theirs, &key).is_err(), "bound to the event id");
        let mut relabelled = mine.clone();
        relabelled["type"] = "password_reset_requested".into();
        relabelled["data"]["user_id"] = "u".into();
        assert!(Received::open(relabelled, &key).is_err(), "bound to the type");
        assert_eq!(Received::open(mine, &key).unwrap().event.secret(), Some("mine"));
    }

    #[test]
    fn a_sealed_secret_is_bound_to_every_member_of_its_envelope() {
        let key = sealing_key();
        let env = Envelope::new(
            PasswordResetRequested {
                user_id: "u1".into(),
                email: "victim@corp.example".into(),
                token: "tok".into(),
                locale: None,
            },
            &mut SeqRandom(30),
            UnixTime(5),
        );
        let sealed: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut SeqRandom(31)).unwrap()).unwrap();
        type Edit = (&'static str, fn(&mut Value));
        let edits: [Edit; 8] = [
            ("the recipient", |v| v["data"]["email"] = "attacker@evil.example".into()),
            ("the user", |v| v["data"]["user_id"] = "u2".into()),
            ("the timestamp", |v| v["timestamp"] = "2030-01-01T00:00:00Z".into()),
            ("the version", |v| v["v"] = 2.into()),
            ("the id", |v| v["id"] = "00000000-0000-4000-8000-000000000000".into()),
            ("a data member added", |v| v["data"]["extra"] = "x".into()),
            ("a data member removed", |v| {
                v["data"].as_object_mut().unwrap().remove("user_id");
            }),
            ("an envelope member removed", |v| {
                v.as_object_mut().unwrap().remove("v");
            }),
        ];
        for (what, edit) in edits {
            let mut changed = sealed.clone();
            edit(&mut changed);
            assert!(matches!(Received::open(changed, &key), Err(OpenError::Unopened(_))), "{what}");
        }
        // The canonical form does not depend on member order or spacing.
        let data = sealed["data"].as_object().unwrap();
        let reordered = format!(
            r#"{{ "data": {{ "token": {}, "locale": {}, "email": {}, "user_id": {} }}, "v": 1, "timestamp": {}, "type": {}, "id": {} }}"#,
            data["token"],
            data["locale"],
            data["email"],
            data["user_id"],
            sealed["timestamp"],
            sealed["type"],
            sealed["id"]
        );
        let opened = Received::open(serde_json::from_str(&reordered).unwrap(), &key).unwrap();
        assert_eq!(opened.event.secret(), Some("tok"));
        assert_eq!(Received::open(sealed, &key).unwrap().event.secret(), Some("tok"));
    }

    #[test]
    fn a_masked_secret_is_never_taken_for_one() {
        let key = sealing_key();
        let env = Envelope::new(
            MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: REDACTED.into(), locale: None },
            &mut SeqRandom(32),
            UnixTime(5),
        );
        let masked: Value = serde_json::from_str(&env.to_json()).unwrap();
        assert!(matches!(Received::open(masked, &key), Err(OpenError::Malformed(why)) if why.contains("masked")));
    }

    #[test]
    fn events_without_a_secret_are_queued_as_they_are_and_clear_secrets_still_open() {
        let key = sealing_key();
        let env = Envelope::new(Logout { user_id: "u".into() }, &mut SeqRandom(3), UnixTime(5));
        let sealed: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut SeqRandom(4)).unwrap()).unwrap();
        assert_eq!(sealed, serde_json::from_str::<Value>(&env.to_json()).unwrap());
        // A message queued before secrets were sealed is still delivered.
        let old = Envelope::new(
            MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: "old".into(), locale: None },
            &mut SeqRandom(5),
            UnixTime(5),
        );
        let opened = Received::open(serde_json::from_str(&old.to_json()).unwrap(), &key).unwrap();
        assert_eq!(opened.event.secret(), Some("old"));
    }

    #[test]
    fn stored_forms_mask_a_clear_secret_and_keep_a_sealed_one() {
        let key = sealing_key();
        let env = Envelope::new(
            EmailOtpRequested { user_id: None, email: "a@b.co".into(), code: "123456".into(), locale: None },
            &mut SeqRandom(6),
            UnixTime(5),
        );
        let mut clear: Value = serde_json::from_str(&env.to_json()).unwrap();
        mask_clear_secret(&mut clear);
        assert_eq!(clear["data"]["code"], REDACTED);
        let sealed: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut SeqRandom(7)).unwrap()).unwrap();
        let mut kept = sealed.clone();
        mask_clear_secret(&mut kept);
        assert_eq!(kept, sealed);
        let mut other = serde_json::json!({"type": "email_otp_requested", "data": "x"});
        assert!(mask_clear_secret(&mut other).is_empty());
        assert_eq!(other, serde_json::json!({"type": "email_otp_requested", "data": "x"}));
        // Malformed messages too: no id, an unknown type, a secret of the wrong JSON type.
        let mut odd = serde_json::json!({"type": "magic_link_requestd", "data": {"token": "t0k", "code": 804211}});
        assert_eq!(mask_clear_secret(&mut odd), ["t0k", "804211"]);
        assert_eq!(odd["data"], serde_json::json!({"token": REDACTED, "code": REDACTED}));
        assert_eq!(
            scrub("invalid type: integer `804211`, near t0k", &["t0k".into(), "804211".into()]),
            "invalid type: integer `[redacted]`, near [redacted]"
        );
    }

    #[test]
    fn the_context_travels_beside_the_envelope_and_never_reaches_webhooks() {
        let key = sealing_key();
        let ctx = EventContext {
            ip_address: Some("192.0.2.1".into()),
            user_agent: Some("Mozilla/5.0".into()),
            actor_id: Some("admin-1".into()),
        };
        let env = Envelope::new(
            MagicLinkRequested { user_id: None, email: "a@b.co".into(), token: "tok".into(), locale: None },
            &mut SeqRandom(40),
            UnixTime(5),
        )
        .with_context(ctx.clone());
        assert!(!env.to_json().contains("ctx"), "the documented envelope has no ctx");
        let sealed: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut SeqRandom(41)).unwrap()).unwrap();
        assert_eq!(
            sealed[CONTEXT_MEMBER],
            serde_json::json!({"ip_address": "192.0.2.1", "user_agent": "Mozilla/5.0", "actor_id": "admin-1"})
        );
        let opened = Received::open(sealed.clone(), &key).unwrap();
        assert_eq!((opened.ctx.clone(), opened.event.secret()), (ctx, Some("tok")));
        assert!(opened.to_value().get(CONTEXT_MEMBER).is_none(), "webhooks do not get it");
        assert!(opened.to_redacted_value().get(CONTEXT_MEMBER).is_none());
        // A context that is not one never makes an event undeliverable.
        let mut odd = sealed;
        odd[CONTEXT_MEMBER] = "x".into();
        assert_eq!(Received::open(odd, &key).unwrap().ctx, EventContext::default());
        let bare = Envelope::new(Logout { user_id: "u".into() }, &mut SeqRandom(42), UnixTime(5));
        assert!(!bare.to_sealed_json(&key, &mut SeqRandom(43)).unwrap().contains(CONTEXT_MEMBER));
    }

    #[test]
    fn every_kind_is_unique() {
        let mut kinds = Event::KINDS.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), Event::KINDS.len());
    }
}
