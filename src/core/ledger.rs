//! The delivery ledger's records, as its port ([`crate::core::ports::DeliveryLedger`])
//! and the delivery rules ([`crate::core::delivery`]) both speak of them: a
//! claim on one (event, target), a target still owed its event, a dead letter.

use serde::Serialize;

use crate::core::time::UnixTime;

/// What the ledger says about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This consumer may send; `attempt` counts from 1.
    Mine {
        /// Which attempt this is.
        attempt: u32,
    },
    /// The target already has the event.
    Delivered,
    /// Another consumer holds the claim until then.
    Busy {
        /// End of the other claim.
        until: UnixTime,
    },
}

/// A target that never got its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetState {
    /// Target key (`webhook:<url>` or `email:<address>`).
    pub target: String,
    /// Attempts made.
    pub attempts: u32,
    /// What went wrong last.
    pub last_error: Option<String>,
}

/// A message that will not be delivered, as recorded for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The event id, or `msg:<queue message id>` for a malformed message.
    pub id: String,
    /// The event type, when known.
    pub event_type: Option<String>,
    /// `retries_exhausted`, `rejected: …` (a target refused it for good),
    /// `malformed: …`, or `unopened: …` (an envelope
    /// whose sealed secret did not open with this `KEY_ENCRYPTION_KEY`,
    /// even after [`UNOPENED_RETRIES`](crate::core::delivery::UNOPENED_RETRIES) retries).
    pub reason: String,
    /// The message body (the envelope JSON, or the raw malformed body).
    pub body: String,
    /// The targets still owed the event.
    pub failed: Vec<TargetState>,
    /// When it was recorded.
    pub dead_at: UnixTime,
}
