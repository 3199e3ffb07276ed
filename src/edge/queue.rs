//! The `EVENTS` queue: the producer behind [`EventSink`], and the consumer of
//! `portcullis-events` and its dead-letter queue `portcullis-events-dlq`.
//!
//! Envelopes are sent as plain JSON objects (parsed from our own serde_json
//! text, so `null`s and field names survive exactly), their one-time secrets
//! sealed; the consumer opens them only to deliver. Before delivering, it
//! writes the event's audit entry from the message with its secret masked
//! ([`crate::core::audit`]); a failed write holds up no target. Each message is handled
//! on its own: acked when every target has the event, retried with the
//! backoff core computed when some target does not (`retry_with_options`,
//! never `retry_all`). The platform moves a message to the dead-letter queue
//! after `max_retries` (wrangler.toml); a malformed message is sent there at
//! once through the `DEAD_LETTERS` producer rather than retried, and so is
//! one whose sealed secret does not open after
//! [`delivery::UNOPENED_RETRIES`] retries, and an event an email provider
//! refused for good ([`Verdict::Reject`]). The dead-letter consumer logs and records every message it gets.

use std::rc::Rc;

use wasm_bindgen::JsValue;
use worker::{
    Env, MessageBatch, MessageExt, QueueContentType, QueueRetryOptionsBuilder, RawMessage, RawMessageBuilder,
};

use crate::core::audit::{self, AuditRecord};
use crate::core::config::Config;
use crate::core::delivery::{self, Quarantine, Rejection, Verdict};
use crate::core::events::{self, Envelope, OpenError, Received};
use crate::core::ports::{AuditLog, EventSink, Result};
use crate::core::rate_limit::BACKOFF_MEMORY_SECS;
use crate::core::time::UnixTime;
use crate::edge::config;
use crate::edge::d1::D1Store;
use crate::edge::error::{Dependency::Queue, EdgeError, EdgeResult};
use crate::edge::outbound::FetchCourier;
use crate::edge::platform::{self, OsRandom};

/// Retry delay when the consumer cannot even start (configuration or D1 binding).
const UNAVAILABLE_RETRY_SECS: u32 = 60;
/// Delivery rows older than this are pruned: far beyond any retry schedule.
pub const DELIVERY_RETENTION_SECS: u64 = 14 * 86_400;

/// The queue producer binding, with the event outbox in D1 behind it.
pub struct QueueSink<'a> {
    env: &'a Env,
    cfg: Rc<Config>,
}

impl<'a> QueueSink<'a> {
    /// A sink on the `EVENTS` binding; `cfg` holds the key that seals events' secrets.
    pub fn new(env: &'a Env, cfg: Rc<Config>) -> Self {
        Self { env, cfg }
    }
}

/// Sends envelopes given as JSON text, in one batch.
async fn send(env: &Env, bodies: &[&str]) -> std::result::Result<(), EdgeError> {
    let queue = env.queue("EVENTS")?;
    let messages = bodies
        .iter()
        .map(|text| {
            let body = js_sys::JSON::parse(text).context("event is not JSON")?;
            Ok(RawMessageBuilder::new(body).build_with_content_type(QueueContentType::Json))
        })
        .collect::<std::result::Result<Vec<_>, EdgeError>>()?;
    Ok(queue.send_raw_batch(messages).await?)
}

impl EventSink for QueueSink<'_> {
    /// Sends the events in one batch, their one-time secrets sealed
    /// ([`Envelope::to_sealed_json`]): the queue and, below, the outbox keep
    /// them only sealed. When the queue does not take them the action they
    /// report has already happened, so they go to the outbox in D1, which the
    /// cron trigger drains ([`drain_outbox`]); only when that write fails too
    /// is the request answered 503.
    async fn publish(&self, events: &[Envelope]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let key = events::secrets_key(&self.cfg.kek);
        let rows = events
            .iter()
            .map(|e| Ok((e.id.clone(), e.to_sealed_json(&key, &mut OsRandom)?)))
            .collect::<Result<Vec<(String, String)>>>()?;
        let bodies: Vec<&str> = rows.iter().map(|(_, body)| body.as_str()).collect();
        let Err(cause) = send(self.env, &bodies).await else { return Ok(()) };
        let store = D1Store::new(self.env).map_err(|_| Queue.failed(cause.clone()))?;
        store
            .outbox_put(&rows, platform::now(), cause.cause())
            .await
            .map_err(|e| Queue.failed(format!("{cause}; outbox: {e}")))?;
        worker::console_warn!("portcullis.outbox_queued events={} cause={cause}", rows.len());
        Ok(())
    }
}

/// Events re-sent per cron run at most.
const OUTBOX_BATCH: u32 = 100;

/// Re-sends the events waiting in the outbox, oldest first; stops at the
/// first the queue still refuses.
pub async fn drain_outbox(env: &Env) {
    let store = match D1Store::new(env) {
        Ok(s) => s,
        Err(e) => return worker::console_error!("portcullis.error outbox: {e}"),
    };
    let pending = match store.outbox_pending(OUTBOX_BATCH).await {
        Ok(p) => p,
        Err(e) => return worker::console_error!("portcullis.error outbox: {e}"),
    };
    let mut sent = 0usize;
    for row in &pending {
        // Sent as kept: secrets sealed.
        let result = send(env, &[row.body.as_str()]).await;
        match result {
            Ok(()) => {
                sent += 1;
                if let Err(e) = store.outbox_done(&row.id).await {
                    // Sent twice at worst: delivery is idempotent by event id.
                    worker::console_error!("portcullis.error outbox: {e}");
                }
            }
            Err(cause) => {
                if let Err(e) = store.outbox_failed(&row.id, cause.cause()).await {
                    worker::console_error!("portcullis.error outbox: {e}");
                }
                worker::console_warn!("portcullis.outbox_retry_failed id={} cause={cause}", row.id);
                break;
            }
        }
    }
    if !pending.is_empty() {
        worker::console_log!("portcullis.outbox_drained sent={sent} waiting={}", pending.len() - sent);
    }
}

fn body_json(body: &JsValue) -> std::result::Result<serde_json::Value, String> {
    let text = js_sys::JSON::stringify(body).map_err(|_| "body is not JSON-serialisable".to_string())?;
    let text: String = text.into();
    serde_json::from_str(&text).map_err(|e| format!("body is not JSON: {e}"))
}

fn retry_in(msg: &RawMessage, secs: u32) {
    msg.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(secs).build());
}

/// The messages of `batch`, each with the platform's count of its
/// deliveries (`attempts`, from 1), which workers-rs's `RawMessage` does not
/// expose.
fn messages(batch: &worker::worker_sys::MessageBatch) -> Vec<(RawMessage, u32)> {
    let Ok(all) = batch.messages() else { return Vec::new() };
    all.iter()
        .map(|m| {
            let attempts = js_sys::Reflect::get(&m, &JsValue::from_str("attempts"))
                .ok()
                .and_then(|a| a.as_f64())
                .filter(|a| a.is_finite() && *a >= 1.0)
                .map_or(1, |a| a.min(f64::from(u32::MAX)) as u32);
            (RawMessage::from(worker::worker_sys::Message::from(m)), attempts)
        })
        .collect()
}

/// Handles one batch from `portcullis-events` or its dead-letter queue.
pub async fn consume(batch: worker::worker_sys::MessageBatch, env: Env) {
    let dead_letter_queue = batch.queue().map(String::from).unwrap_or_default().ends_with("-dlq");
    let cfg = config(&env);
    if let Err(e) = &cfg {
        worker::console_error!("portcullis.error consumer misconfigured: {}", e.0);
    }
    let store = match D1Store::new(&env) {
        Ok(s) => s,
        Err(e) => {
            worker::console_error!("portcullis.error {e}");
            MessageBatch::<JsValue>::from(batch).retry_all_with_options(
                &QueueRetryOptionsBuilder::new().with_delay_seconds(UNAVAILABLE_RETRY_SECS).build(),
            );
            return;
        }
    };
    let courier = FetchCourier::new(&env);
    // Messages are independent: handle them concurrently, so one slow
    // endpoint does not hold up the rest of the batch.
    let (cfg, store, env, courier) = (&cfg, &store, &env, &courier);
    let work = messages(&batch).into_iter().map(|(msg, attempts)| async move {
        if dead_letter_queue {
            bury(&msg, store, courier).await;
        } else {
            match cfg {
                Ok(cfg) => handle(&msg, attempts, cfg.clone(), store, courier, env).await,
                // Nothing is delivered half-configured; the message waits
                // (and, if it waits too long, is dead-lettered and recorded).
                Err(_) => retry_in(&msg, UNAVAILABLE_RETRY_SECS),
            }
        }
    });
    futures_util::future::join_all(work).await;
}

async fn handle(msg: &RawMessage, attempts: u32, cfg: Rc<Config>, store: &D1Store, courier: &FetchCourier, env: &Env) {
    let body = body_json(&msg.body());
    // The audit entry first, from the message with its secret masked; its
    // failure holds up no delivery (see `after_audit` below).
    let audited = match &body {
        Ok(value) => audit(store, value, &msg.id(), attempts).await,
        Err(_) => true,
    };
    let key = events::secrets_key(&cfg.kek);
    let opened = match &body {
        Ok(value) => Received::open(value.clone(), &key),
        Err(why) => Err(OpenError::Malformed(why.clone())),
    };
    let event = match opened {
        Ok(e) => e,
        Err(error) => {
            // A seal that does not open may be an isolate on another
            // KEY_ENCRYPTION_KEY during a change: tried again before it is quarantined.
            if let Some(delay) = delivery::retry_unopened(&cfg, &error, attempts) {
                worker::console_warn!(
                    "portcullis.unopened_event id={} attempt={attempts} retry_in_secs={delay} {error}",
                    msg.id()
                );
                return retry_in(msg, delay);
            }
            return quarantine(msg, delivery::quarantine(&msg.id(), &error, attempts, body.ok()), env).await;
        }
    };
    let delivered = delivery::deliver(&cfg, store, courier, &event, platform::now()).await;
    match delivered.map(|v| audit::after_audit(v, audited, attempts, cfg.retry_base_delay_secs)) {
        Ok(Verdict::Ack) => msg.ack(),
        Ok(Verdict::Retry { delay_secs }) => retry_in(msg, delay_secs),
        Ok(Verdict::Reject { reason }) => match body {
            // The message as it came, its secret still sealed.
            Ok(value) => reject(msg, Rejection::new(value, &reason), env).await,
            Err(_) => retry_in(msg, cfg.retry_base_delay_secs),
        },
        Err(e) => {
            worker::console_error!("portcullis.delivery_error id={} {e}", event.id);
            retry_in(msg, cfg.retry_base_delay_secs);
        }
    }
}

/// Sends a message that cannot be opened straight to the dead-letter queue
/// (its body and reason already masked by core), then acks it.
async fn quarantine(msg: &RawMessage, wrapped: Quarantine, env: &Env) {
    let kind = if wrapped.quarantined.unopened { "unopened" } else { "malformed" };
    worker::console_error!("portcullis.{kind}_event id={} {}", msg.id(), wrapped.quarantined.reason);
    to_dead_letters(msg, &wrapped, env).await;
}

/// Sends an event a target refused for good to the dead-letter queue (its
/// reason already scrubbed by core), then acks it.
async fn reject(msg: &RawMessage, wrapped: Rejection, env: &Env) {
    worker::console_error!("portcullis.rejected_event id={} {}", msg.id(), wrapped.rejected.reason);
    to_dead_letters(msg, &wrapped, env).await;
}

async fn to_dead_letters(msg: &RawMessage, wrapped: &impl serde::Serialize, env: &Env) {
    let sent = async {
        let text = serde_json::to_string(wrapped)?;
        let body = js_sys::JSON::parse(&text)?;
        let queue = env.queue("DEAD_LETTERS")?;
        queue.send_raw(RawMessageBuilder::new(body).build_with_content_type(QueueContentType::Json)).await?;
        Ok::<_, EdgeError>(())
    };
    match sent.await {
        Ok(()) => msg.ack(),
        Err(e) => {
            // Retried as is: after max_retries the platform dead-letters it anyway.
            worker::console_error!("portcullis.error sending {} to the dead-letter queue failed: {e}", msg.id());
            retry_in(msg, UNAVAILABLE_RETRY_SECS);
        }
    }
}

/// Writes the audit entry of a message's body (an event; anything else has
/// none), unless it is there already. `false` when the write failed: logged
/// as `portcullis.audit_failed` with the message's `attempts` (0 from the
/// dead-letter consumer), for the caller to try the message again.
async fn audit(store: &D1Store, body: &serde_json::Value, message_id: &str, attempts: u32) -> bool {
    let Some(record) = AuditRecord::of_message(body, platform::now()) else { return true };
    match store.record_audit(&record).await {
        Ok(_) => true,
        Err(e) => {
            worker::console_error!(
                "portcullis.audit_failed id={} message={message_id} attempt={attempts} {e}",
                record.id
            );
            false
        }
    }
}

/// Logs and records one dead letter (its secret stays sealed; no
/// configuration needed), then writes its audit entry if no earlier attempt
/// could (a rejected event's too: `AuditRecord::of_message` reads the event
/// inside its `Rejection` wrapper). The dead letter first: it is what must
/// not be lost (a failure to record it retries the message, audit entry and
/// all); an audit failure here is logged (`portcullis.audit_failed`,
/// `attempt=0`) and given up.
async fn bury(msg: &RawMessage, store: &D1Store, courier: &FetchCourier) {
    let body = body_json(&msg.body());
    let value = body.as_ref().ok().cloned();
    match delivery::dead_letter(store, courier, &msg.id(), body, platform::now()).await {
        Ok(_) => {
            if let Some(value) = &value {
                audit(store, value, &msg.id(), 0).await;
            }
            msg.ack();
        }
        Err(e) => {
            worker::console_error!("portcullis.error recording dead letter {}: {e}", msg.id());
            retry_in(msg, UNAVAILABLE_RETRY_SECS);
        }
    }
}

/// Upkeep of the audit log, on every cron run (each minute): deletes the
/// oldest written entries beyond `AUDIT_MAX_ENTRIES`, then those older than
/// `AUDIT_RETENTION_DAYS`, a few small batches at a time ([`audit::purge`]).
pub async fn purge_audit(env: &Env) {
    let cfg = match config(env) {
        Ok(cfg) => cfg,
        Err(e) => return worker::console_error!("portcullis.error prune audit_log: {}", e.0),
    };
    let store = match D1Store::new(env) {
        Ok(s) => s,
        Err(e) => return worker::console_error!("portcullis.error prune audit_log: {e}"),
    };
    match audit::purge(&store, platform::now(), cfg.audit_retention_days, cfg.audit_max_entries).await {
        Ok(purged) => {
            if purged.over_cap > 0 {
                worker::console_warn!(
                    "portcullis.audit_cap_reached deleted={} max_entries={}",
                    purged.over_cap,
                    cfg.audit_max_entries
                );
            }
            worker::console_log!(
                "portcullis.prune audit_log={} audit_log_over_cap={}",
                purged.expired,
                purged.over_cap
            );
        }
        Err(e) => worker::console_error!("portcullis.error prune audit_log: {e}"),
    }
}

/// Periodic upkeep: forgets delivery rows no retry can need any more and
/// ended rate-limit windows.
pub async fn prune(env: &Env) {
    let cutoff = UnixTime(platform::now().0.saturating_sub(DELIVERY_RETENTION_SECS as i64));
    let now = platform::now();
    match D1Store::new(env) {
        Ok(store) => {
            match store.prune_deliveries(cutoff).await {
                Ok(n) => worker::console_log!("portcullis.prune event_deliveries={n}"),
                Err(e) => worker::console_error!("portcullis.error prune: {e}"),
            }
            match store.prune_rate_limits(now, now.minus_secs(BACKOFF_MEMORY_SECS)).await {
                Ok(n) => worker::console_log!("portcullis.prune rate_limits={n}"),
                Err(e) => worker::console_error!("portcullis.error prune: {e}"),
            }
        }
        Err(e) => worker::console_error!("portcullis.error prune: {e}"),
    }
}
