//! Delivery of queued events: the targets an event goes to (every webhook URL
//! that wants its type, and an email for the four `*_requested` events), one
//! attempt over the targets still owed the event, the retry backoff, and the
//! dead-letter record.
//!
//! A failed attempt is retried with backoff, unless it can never succeed: an
//! email the provider refused as it is (a 4xx other than throttling, see
//! [`crate::core::mail::Provider::retryable`]), or one that cannot be written
//! at all. Such an event goes to the dead-letter queue at once
//! ([`Verdict::Reject`]) — after its other targets have had it — rather than
//! after `max_retries` pointless attempts.
//!
//! Idempotency: each (event id, target) is claimed in the ledger before it is
//! sent and marked delivered after a 2xx, so a redelivered or retried message
//! only goes to the targets that have not had it. A claim is a lease: a
//! consumer that dies mid-send leaves the target to the next attempt once the
//! lease ends. The one gap — the ledger failing between a send and its record
//! — is covered by the event id the receiver sees (`webhook-id`, and Resend's
//! idempotency key; the other email transports have no such key).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::events::{self, OpenError, Received, REDACTED};
use crate::core::ledger::{Claim, DeadLetter};
use crate::core::mail::{Dispatch, OutgoingEmail};
use crate::core::outbound::{excerpt, HttpReply, HttpRequest, SendError};
use crate::core::ports::{Courier, DeliveryLedger};
use crate::core::time::UnixTime;

/// How long one claim on a target lasts: longer than any single send.
pub const LEASE_SECS: u64 = 120;
/// Longest retry delay the Queues platform accepts (12 hours).
pub const MAX_RETRY_DELAY_SECS: u32 = 43_200;
/// Largest raw body kept from a malformed message.
pub const MAX_QUARANTINED_BODY_CHARS: usize = 32 * 1024;
/// `user-agent` of webhook deliveries.
pub const WEBHOOK_USER_AGENT: &str = "Portcullis-Webhooks/1";

/// What to do with the queue message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every target has the event.
    Ack,
    /// Some target does not: retry the message after this many seconds.
    Retry {
        /// Delay before the next attempt.
        delay_secs: u32,
    },
    /// No target is waiting for a retry, but one refused the event for
    /// good: send it to the dead-letter queue now ([`Rejection`]).
    Reject {
        /// The target and why (its one-time secret and any API key scrubbed).
        reason: String,
    },
}

/// Why one attempt at one target failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// It may work later: retried with backoff.
    Retry(String),
    /// It never will as it is: dead-lettered.
    Reject(String),
}

/// One place an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `WEBHOOK_URLS` endpoint.
    Webhook(Url),
    /// The rendered email.
    Email(OutgoingEmail),
    /// An email that cannot be rendered (e.g. an unusable address): every
    /// attempt fails, so it ends in the dead-letter queue, not in silence.
    Unsendable {
        /// Its ledger key.
        key: String,
        /// Why.
        why: String,
    },
}

impl Target {
    /// The ledger key: `webhook:<url>` or `email:<address>`.
    pub fn key(&self) -> String {
        match self {
            Self::Webhook(url) => format!("webhook:{url}"),
            Self::Email(m) => format!("email:{}", m.to),
            Self::Unsendable { key, .. } => key.clone(),
        }
    }

    /// The key as logged: webhook URLs without their query, which may hold credentials.
    pub fn display(&self) -> String {
        match self {
            Self::Webhook(url) => {
                let mut u = url.clone();
                u.set_query(None);
                u.set_fragment(None);
                let _ = u.set_password(None);
                let _ = u.set_username("");
                format!("webhook:{u}")
            }
            other => other.key(),
        }
    }
}

/// Every target of `event`, in configuration order, without duplicates.
pub fn targets(config: &Config, event: &Received) -> Vec<Target> {
    let kind = event.event.kind();
    let mut out: Vec<Target> = Vec::new();
    let wanted = config.webhook_events.as_ref().is_none_or(|kinds| kinds.contains(&kind));
    if wanted {
        for url in &config.webhook_urls {
            let t = Target::Webhook(url.clone());
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    match config.email.render(&event.event) {
        Ok(Some(m)) => out.push(Target::Email(m)),
        Ok(None) => {}
        Err(why) => {
            let to = event.to_value()["data"]["email"].as_str().unwrap_or("").to_string();
            out.push(Target::Unsendable { key: format!("email:{to}"), why });
        }
    }
    out
}

/// Delay before retry number `attempt` (1-based): the base, doubled per
/// further attempt, capped at [`MAX_RETRY_DELAY_SECS`].
pub fn retry_delay_secs(base_secs: u32, attempt: u32) -> u32 {
    let factor = 1u64 << attempt.saturating_sub(1).min(20);
    u32::try_from(u64::from(base_secs).saturating_mul(factor)).unwrap_or(u32::MAX).min(MAX_RETRY_DELAY_SECS)
}

/// The signed webhook request for `event`, whose body is exactly `body`.
pub fn webhook_request(config: &Config, url: &Url, event: &Received, body: &str, now: UnixTime) -> Option<HttpRequest> {
    let secret = config.webhook_secret.as_ref()?;
    let mut headers = secret.headers(&event.id, now, body);
    headers.push(("user-agent".into(), WEBHOOK_USER_AGENT.into()));
    Some(HttpRequest { url: url.to_string(), headers, body: body.to_string(), timeout_ms: config.webhook_timeout_ms })
}

/// `why` (a failure's text, which may quote what a receiver echoed back)
/// without the event's one-time secret or the email API key: it goes to the
/// log and to D1.
fn scrub(config: &Config, why: &str, event: &Received) -> String {
    let why = config.email.scrub(why);
    match event.event.secret() {
        Some(secret) if !secret.is_empty() && why.contains(secret) => why.replace(secret, REDACTED),
        _ => why,
    }
}

/// One delivery attempt of `event` to every target still owed it.
///
/// Logs `portcullis.event` (its one-time secret masked) on the first attempt, then one
/// `portcullis.delivered` or `portcullis.delivery_failed` line per target
/// tried. `Err` only when the ledger fails (the message is then retried).
pub async fn deliver<L: DeliveryLedger, C: Courier>(
    config: &Config,
    ledger: &L,
    courier: &C,
    event: &Received,
    now: UnixTime,
) -> Result<Verdict, Error> {
    let targets = targets(config, event);
    let kind = event.event.kind();
    if targets.is_empty() {
        courier.log("portcullis.event", &event.to_redacted_value());
        return Ok(Verdict::Ack);
    }
    let body = event.to_value().to_string();
    let mut announced = false;
    let mut rejected: Option<String> = None;
    let mut retry_in: Option<u32> = None;
    let mut later = |secs: u32| retry_in = Some(retry_in.map_or(secs, |r| r.max(secs)));
    for target in &targets {
        let key = target.key();
        let attempt = match ledger.claim(&event.id, kind, &key, now, now.plus_secs(LEASE_SECS)).await? {
            Claim::Delivered => continue,
            Claim::Busy { until } => {
                later(u32::try_from(until.0.saturating_sub(now.0)).unwrap_or(1).clamp(1, MAX_RETRY_DELAY_SECS));
                continue;
            }
            Claim::Mine { attempt } => attempt,
        };
        if attempt == 1 && !announced {
            courier.log("portcullis.event", &event.to_redacted_value());
            announced = true;
        }
        let result = send(config, courier, target, event, &body, now).await.map_err(|f| match f {
            Failure::Retry(why) => Failure::Retry(scrub(config, &why, event)),
            Failure::Reject(why) => Failure::Reject(scrub(config, &why, event)),
        });
        let error = match &result {
            Ok(()) => None,
            Err(Failure::Retry(why) | Failure::Reject(why)) => Some(why.as_str()),
        };
        ledger.settle(&event.id, &key, now, error).await?;
        let mut line =
            serde_json::json!({"id": event.id, "type": kind, "target": target.display(), "attempt": attempt});
        match result {
            Ok(()) => courier.log("portcullis.delivered", &line),
            Err(Failure::Retry(why)) => {
                let delay = retry_delay_secs(config.retry_base_delay_secs, attempt);
                line["error"] = why.into();
                line["retry_in_secs"] = delay.into();
                courier.log("portcullis.delivery_failed", &line);
                later(delay);
            }
            Err(Failure::Reject(why)) => {
                rejected.get_or_insert_with(|| format!("{}: {why}", target.display()));
                line["error"] = why.into();
                line["rejected"] = true.into();
                courier.log("portcullis.delivery_failed", &line);
            }
        }
    }
    Ok(match (retry_in, rejected) {
        (Some(delay_secs), _) => Verdict::Retry { delay_secs },
        (None, Some(reason)) => Verdict::Reject { reason },
        (None, None) => Verdict::Ack,
    })
}

async fn send<C: Courier>(
    config: &Config,
    courier: &C,
    target: &Target,
    event: &Received,
    body: &str,
    now: UnixTime,
) -> Result<(), Failure> {
    let email = match target {
        // The address cannot be written to: no attempt will change that.
        Target::Unsendable { why, .. } => return Err(Failure::Reject(why.clone())),
        Target::Webhook(url) => {
            let request = webhook_request(config, url, event, body, now)
                .ok_or_else(|| Failure::Retry("WEBHOOK_SECRET is not set".to_string()))?;
            // Webhook receivers are the operator's own: every failure is retried.
            return match courier.send(&request).await {
                Ok(reply) if reply.is_success() => Ok(()),
                Ok(reply) => Err(Failure::Retry(reply_error(config, &reply, event))),
                Err(e) => Err(Failure::Retry(send_error(&e, &request))),
            };
        }
        Target::Email(m) => m,
    };
    match config.email.dispatch(email, &event.id, now) {
        Dispatch::Log => {
            courier.log("portcullis.email", &email.log_value(&event.id));
            Ok(())
        }
        Dispatch::Http(request) => match courier.send(&request).await {
            Ok(reply) if reply.is_success() => Ok(()),
            Ok(reply) if config.email.retryable(&reply) => Err(Failure::Retry(reply_error(config, &reply, event))),
            Ok(reply) => Err(Failure::Reject(reply_error(config, &reply, event))),
            Err(e) => Err(Failure::Retry(send_error(&e, &request))),
        },
        Dispatch::Binding(message) => match courier.send_mime(&message).await {
            Ok(()) => Ok(()),
            // Capped and on one line, like a provider's answer.
            Err(e) if e.retryable() => Err(Failure::Retry(excerpt(&e.to_string(), 300))),
            Err(e) => Err(Failure::Reject(excerpt(&e.to_string(), 300))),
        },
    }
}

/// A non-2xx reply as recorded: its status and the start of its body.
fn reply_error(config: &Config, reply: &HttpReply, event: &Received) -> String {
    // Scrubbed whole before it is cut: a cut through an echoed secret
    // would leave a prefix no later scrub recognises.
    format!("HTTP {}: {}", reply.status, excerpt(&scrub(config, &reply.body, event), 200))
}

fn send_error(e: &SendError, request: &HttpRequest) -> String {
    match e {
        SendError::Timeout => format!("no answer within {} ms", request.timeout_ms),
        other => other.to_string(),
    }
}

/// How an event that a target refused for good travels to the dead-letter
/// queue: the message as the queue carried it (its secret still sealed, so
/// it can be sent again once the cause is fixed), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The details.
    pub rejected: Rejected,
}

/// The details of a [`Rejection`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The target and why it refused the event.
    pub reason: String,
    /// The queue message's body, as received.
    pub event: Value,
}

impl Rejection {
    /// Wraps a message's `body` refused for `reason` ([`Verdict::Reject`]).
    pub fn new(body: Value, reason: &str) -> Self {
        Self { rejected: Rejected { reason: reason.to_string(), event: body } }
    }

    /// The message body inside `body`, if `body` is a `Rejection`.
    pub fn event_in(body: &Value) -> Option<&Value> {
        let rejected = body.get("rejected")?;
        rejected.get("reason")?.as_str()?;
        rejected.get("event")
    }
}

/// How a malformed message travels to the dead-letter queue: wrapped, so the
/// dead-letter consumer knows why it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The details.
    pub quarantined: Quarantined,
}

/// The details of a [`Quarantine`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The queue's id of the original message.
    pub message_id: String,
    /// Why it could not be handled.
    pub reason: String,
    /// Its body as JSON text (capped).
    pub body: String,
    /// Whether it was a well-formed envelope whose sealed secret did not
    /// open, rather than a malformed message.
    #[serde(default)]
    pub unopened: bool,
}

impl Quarantine {
    /// Wraps a malformed message's body.
    pub fn new(message_id: &str, reason: &str, body: &str) -> Self {
        Self {
            quarantined: Quarantined {
                message_id: message_id.to_string(),
                reason: reason.to_string(),
                body: body.chars().take(MAX_QUARANTINED_BODY_CHARS).collect(),
                unopened: false,
            },
        }
    }
}

/// Retries a message whose sealed secret does not open gets before it is
/// quarantined: as many as the queue's `max_retries` (wrangler.toml, 3), so
/// with `RETRY_BASE_DELAY_SECS` at 30 it is tried again after 30, 60 and
/// 120 s — time, while a new `KEY_ENCRYPTION_KEY` rolls out, for an isolate
/// that still has the previous one (or already has the new one) to take it.
pub const UNOPENED_RETRIES: u32 = 3;

/// Seconds until a message that could not be opened on its `attempt` (the
/// queue's count, from 1) is tried again; `None` when it goes to the
/// dead-letter queue now: a malformed one at once, one whose seal does not
/// open after [`UNOPENED_RETRIES`] retries with the usual backoff.
pub fn retry_unopened(config: &Config, error: &OpenError, attempt: u32) -> Option<u32> {
    match error {
        OpenError::Unopened(_) if attempt <= UNOPENED_RETRIES => {
            Some(retry_delay_secs(config.retry_base_delay_secs, attempt))
        }
        _ => None,
    }
}

/// The wrapper that takes a message that cannot be opened (`error`, on its
/// `attempts`-th try) to the dead-letter queue, with its body (`None`: not
/// JSON) — a secret it carries in clear masked ([`events::mask_clear_secret`]),
/// a sealed one kept — and a reason that quotes none of it.
pub fn quarantine(message_id: &str, error: &OpenError, attempts: u32, body: Option<Value>) -> Quarantine {
    let (text, secrets) = match body {
        Some(mut value) => {
            let secrets = events::mask_clear_secret(&mut value);
            (value.to_string(), secrets)
        }
        None => (String::new(), Vec::new()),
    };
    let why = match error {
        OpenError::Unopened(why) => format!("{why}; tried {attempts} times"),
        OpenError::Malformed(why) => why.clone(),
    };
    let mut q = Quarantine::new(message_id, &events::scrub(&why, &secrets), &text);
    q.quarantined.unopened = matches!(error, OpenError::Unopened(_));
    q
}

/// A quarantined body as it may be stored and logged: JSON with any secret
/// in clear masked; text that is not JSON (cut at the cap, or from
/// elsewhere) withheld when it may hold one. With the masked values.
fn masked_quarantined_body(text: &str) -> (String, Vec<String>) {
    match serde_json::from_str::<Value>(text) {
        Ok(mut value) => {
            let secrets = events::mask_clear_secret(&mut value);
            (value.to_string(), secrets)
        }
        Err(_) => {
            let lower = text.to_ascii_lowercase();
            if lower.contains("token") || lower.contains("code") {
                (
                    format!("[withheld: {} characters, not JSON, that may hold a secret]", text.chars().count()),
                    Vec::new(),
                )
            } else {
                (text.to_string(), Vec::new())
            }
        }
    }
}

/// Handles one message of the dead-letter queue: logs
/// `portcullis.dead_letter {json}` first (so even a failing ledger leaves a
/// trace), then records it. Duplicates are recorded once.
///
/// An event is recorded as the queue carried it, its one-time secret still
/// sealed: sent to the queue again as it is, it is delivered like any other
/// message for as long as `KEY_ENCRYPTION_KEY` is the same. A secret that
/// came in clear (queued by a version that did not seal) is masked instead.
/// The log line shows the event with its secret masked. Its reason is
/// `retries_exhausted`, or `rejected: <target>: <why>` for an event a
/// target refused for good ([`Rejection`], stored unwrapped).
pub async fn dead_letter<L: DeliveryLedger, C: Courier>(
    ledger: &L,
    courier: &C,
    message_id: &str,
    body: Result<serde_json::Value, String>,
    now: UnixTime,
) -> Result<DeadLetter, Error> {
    let mut logged_event = None;
    // A rejected event travels wrapped; its letter is the event's own.
    let (body, reason) = match body.as_ref().map(|v| serde_json::from_value::<Rejection>(v.clone())) {
        Ok(Ok(Rejection { rejected })) => (Ok(rejected.event), Some(rejected.reason)),
        _ => (body, None),
    };
    let letter = match body {
        Ok(value) => match Received::parse_masked(value.clone()) {
            Ok(event) => {
                let mut stored = value;
                let secrets = events::mask_clear_secret(&mut stored);
                let letter = DeadLetter {
                    id: event.id.clone(),
                    event_type: Some(event.event.kind().to_string()),
                    reason: match reason {
                        // Scrubbed again: a wrapper made elsewhere may quote a secret in clear.
                        Some(why) => format!("rejected: {}", events::scrub(&why, &secrets)),
                        None => "retries_exhausted".into(),
                    },
                    body: stored.to_string(),
                    failed: ledger.undelivered(&event.id).await?,
                    dead_at: now,
                };
                logged_event = Some(event.to_redacted_value());
                letter
            }
            Err(why) => match serde_json::from_value::<Quarantine>(value.clone()) {
                Ok(Quarantine { quarantined: q }) => {
                    // Masked again here: a wrapper made elsewhere (or by an
                    // older version) may carry a secret in clear.
                    let (body, secrets) = masked_quarantined_body(&q.body);
                    let kind = if q.unopened { "unopened" } else { "malformed" };
                    DeadLetter {
                        id: format!("msg:{}", q.message_id),
                        event_type: None,
                        reason: format!("{kind}: {}", events::scrub(&q.reason, &secrets)),
                        body,
                        failed: Vec::new(),
                        dead_at: now,
                    }
                }
                Err(_) => unreadable(message_id, &why, &masked_text(value), now),
            },
        },
        Err(why) => unreadable(message_id, &why, "", now),
    };
    let mut line = serde_json::json!({
        "id": letter.id,
        "type": letter.event_type,
        "reason": letter.reason,
        "failed": letter.failed,
    });
    match logged_event {
        Some(event) => line["event"] = event,
        None => line["body"] = excerpt(&letter.body, 2_000).into(),
    }
    courier.log("portcullis.dead_letter", &line);
    ledger.record_dead_letter(&letter).await?;
    Ok(letter)
}

/// The JSON text of a message that is not a valid envelope, with a secret
/// it carries in clear masked (see [`events::mask_clear_secret`]).
fn masked_text(mut value: serde_json::Value) -> String {
    events::mask_clear_secret(&mut value);
    value.to_string()
}

fn unreadable(message_id: &str, why: &str, body: &str, now: UnixTime) -> DeadLetter {
    DeadLetter {
        id: format!("msg:{message_id}"),
        event_type: None,
        reason: format!("malformed: {why}"),
        body: body.chars().take(MAX_QUARANTINED_BODY_CHARS).collect(),
        failed: Vec::new(),
        dead_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_and_is_capped() {
        assert_eq!((1..=5).map(|a| retry_delay_secs(30, a)).collect::<Vec<_>>(), vec![30, 60, 120, 240, 480]);
        assert_eq!(retry_delay_secs(1, 0), 1);
        assert_eq!(retry_delay_secs(3_600, 10), MAX_RETRY_DELAY_SECS);
        assert_eq!(retry_delay_secs(u32::MAX, 99), MAX_RETRY_DELAY_SECS);
    }

    #[test]
    fn logged_webhook_targets_hide_credentials() {
        let t = Target::Webhook(Url::parse("https://user:pw@hooks.example/in?token=abc").unwrap());
        assert_eq!(t.key(), "webhook:https://user:pw@hooks.example/in?token=abc");
        assert_eq!(t.display(), "webhook:https://hooks.example/in");
    }

    #[test]
    fn quarantine_round_trips_and_caps_the_body() {
        let q = Quarantine::new("m1", "envelope: missing field `id`", &"x".repeat(MAX_QUARANTINED_BODY_CHARS + 10));
        let back: Quarantine = serde_json::from_value(serde_json::to_value(&q).unwrap()).unwrap();
        assert_eq!(back.quarantined.body.len(), MAX_QUARANTINED_BODY_CHARS);
        assert_eq!(back.quarantined.message_id, "m1");
    }
}
