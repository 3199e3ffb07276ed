//! The `EVENTS` queue: the producer behind [`EventSink`], and the consumer.
//!
//! Envelopes are sent as plain JSON objects (parsed from our own serde_json
//! text, so `null`s and field names survive exactly). The consumer checks each
//! message against the typed events; a malformed one is logged and acked
//! rather than retried forever.

use wasm_bindgen::JsValue;
use worker::{Env, MessageBatch, MessageExt, QueueContentType, RawMessageBuilder};

use crate::core::error::Error;
use crate::core::events::{Envelope, Received};
use crate::core::ports::{EventSink, Result};

/// The queue producer binding.
pub struct QueueSink<'a> {
    env: &'a Env,
}

impl<'a> QueueSink<'a> {
    /// A sink on the `EVENTS` binding.
    pub fn new(env: &'a Env) -> Self {
        Self { env }
    }
}

impl EventSink for QueueSink<'_> {
    async fn publish(&self, events: &[Envelope]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let queue = self.env.queue("EVENTS").map_err(|e| Error::unavailable("queue", e))?;
        for env in events {
            let body = js_sys::JSON::parse(&env.to_json()).map_err(|e| Error::Internal(format!("event json: {e:?}")))?;
            let msg = RawMessageBuilder::new(body).build_with_content_type(QueueContentType::Json);
            queue.send_raw(msg).await.map_err(|e| Error::unavailable("queue", e))?;
        }
        Ok(())
    }
}

fn body_json(body: &JsValue) -> std::result::Result<serde_json::Value, String> {
    let text = js_sys::JSON::stringify(body).map_err(|_| "body is not JSON-serialisable".to_string())?;
    let text: String = text.into();
    serde_json::from_str(&text).map_err(|e| format!("body is not JSON: {e}"))
}

/// Handles one batch from `portcullis-events` or its dead-letter queue.
pub async fn consume(batch: MessageBatch<JsValue>, _env: Env) {
    let dead_letter = batch.queue().ends_with("-dlq");
    for msg in batch.raw_iter() {
        let body = msg.body();
        let parsed = body_json(&body).and_then(Received::parse);
        match (parsed, dead_letter) {
            (Ok(received), false) => {
                worker::console_log!("portcullis.event {}", received.to_value());
            }
            (Ok(received), true) => {
                worker::console_error!("portcullis.dead_letter {}", received.to_value());
            }
            (Err(why), _) => {
                worker::console_error!("portcullis.malformed_event id={} {why}", msg.id());
            }
        }
        msg.ack();
    }
}
