//! The audit log's records, as its port ([`crate::core::ports::AuditLog`])
//! and the audit rules ([`crate::core::audit`]) both speak of them: an entry
//! to write ([`AuditRecord`], made from a queued event by
//! [`AuditRecord::of_message`]), an entry read back ([`AuditEntry`]), which
//! entries to read ([`AuditFilter`]) and a position among them
//! ([`Cursor`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

pub use crate::core::events::Outcome;
use crate::core::ids::UserId;
use crate::core::time::UnixTime;

/// Longest cursor decoded.
const MAX_CURSOR_CHARS: usize = 128;
/// Longest id in a filter or a cursor (ours are 36-character UUIDs).
pub const MAX_ID_LEN: usize = 64;

/// An entry as the queue consumer writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// The event id.
    pub id: String,
    /// The event type.
    pub kind: &'static str,
    /// The user the event concerns, as it names them.
    pub user_id: Option<UserId>,
    /// When the event names no user: the address it names. The entry is
    /// attributed to the account that has it when the entry is written, if
    /// that account was created at or before [`AuditRecord::at`].
    pub subject_email: Option<String>,
    /// The administrator who acted, for admin API actions.
    pub actor_id: Option<UserId>,
    /// The client's IP address.
    pub ip_address: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// Success or failure.
    pub outcome: Outcome,
    /// When the event happened.
    pub at: UnixTime,
    /// The event's `data` as JSON text, without its one-time secret, and
    /// without the `ip_address` and `user_agent` members that copy
    /// [`AuditRecord::ip_address`] and [`AuditRecord::user_agent`].
    pub data: String,
}

/// An entry as stored, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// The event id.
    pub id: String,
    /// The event type.
    pub kind: String,
    /// The user it concerns.
    pub user_id: Option<UserId>,
    /// The administrator who acted.
    pub actor_id: Option<UserId>,
    /// Success or failure.
    pub outcome: Outcome,
    /// The client's IP address.
    pub ip_address: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// When the event happened.
    pub at: UnixTime,
    /// The event's data, without its one-time secret.
    pub data: Value,
}

/// A position in the log: the last entry of a page, from which the next
/// page goes on (older entries only). Opaque to clients: base64url of
/// `{at}:{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The entry's time.
    pub at: UnixTime,
    /// The entry's id.
    pub id: String,
}

impl Cursor {
    /// The cursor after `entry`.
    pub fn after(entry: &AuditEntry) -> Self {
        Self { at: entry.at, id: entry.id.clone() }
    }

    /// The opaque text clients send back.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.at.0, self.id))
    }

    /// Reads [`Cursor::encode`] back; `None` for anything it did not make.
    pub fn decode(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > MAX_CURSOR_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let plain = String::from_utf8(bytes).ok()?;
        let (at, id) = plain.split_once(':')?;
        let canonical = at.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !at.is_empty();
        let at: i64 = at.parse().ok().filter(|_| canonical)?;
        is_id(id).then(|| Self { at: UnixTime(at), id: id.to_string() })
    }
}

/// Which entries to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this user's.
    pub user_id: Option<UserId>,
    /// Only this type's.
    pub kind: Option<&'static str>,
    /// Only at or after this time.
    pub since: Option<UnixTime>,
    /// Only before this time.
    pub until: Option<UnixTime>,
    /// Only after this position (older than it).
    pub after: Option<Cursor>,
}

/// Whether `s` can be an id of ours (a user's, an event's): 1 to
/// [`MAX_ID_LEN`] of A-Z a-z 0-9 `-`.
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}
