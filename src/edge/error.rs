//! The edge's error: a failure of the runtime under the edge (a thrown
//! JavaScript value, a workers-rs error), and the one place it becomes a
//! core [`Error`].
//!
//! What a failure means depends on where it happened, so the conversion
//! says which, and there are exactly two answers:
//!
//! - A platform store failed (D1, KV, a Queue, or its binding is missing):
//!   [`Dependency::failed`], or [`EdgeResult::or_unavailable`] on a result,
//!   gives [`Error::Unavailable`] — 503 `service_unavailable` with
//!   `Retry-After`. The request fails closed and may be retried.
//! - Any other runtime call that should not fail (building a response,
//!   WebCrypto): [`EdgeResult::context`] names the call, and `?` turns the
//!   [`EdgeError`] into [`Error::Internal`] — 500 `internal_error`.
//!
//! There is deliberately no `From<JsValue>` or `From<worker::Error>` for
//! core's [`Error`]: a bare `?` on a runtime result cannot pick the status
//! by accident. Either way the cause goes to the log only
//! ([`Error::problem`] never shows it).

use std::fmt;

use wasm_bindgen::JsValue;

use crate::core::error::Error;

/// A runtime failure, as the text of its cause (a JavaScript error's
/// `message`, a workers-rs error's description).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeError(String);

impl EdgeError {
    /// The cause, for the log.
    pub fn cause(&self) -> &str {
        &self.0
    }

    /// The same failure, its cause prefixed with what was being done.
    pub fn context(self, what: &str) -> Self {
        Self(format!("{what}: {}", self.0))
    }
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<JsValue> for EdgeError {
    /// A thrown value's `message` (an `Error`'s), or its debug form.
    fn from(e: JsValue) -> Self {
        let message = js_sys::Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string());
        Self(message.unwrap_or_else(|| format!("{e:?}")))
    }
}

impl From<worker::Error> for EdgeError {
    fn from(e: worker::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<worker::kv::KvError> for EdgeError {
    fn from(e: worker::kv::KvError) -> Self {
        Self(e.to_string())
    }
}

impl From<serde_json::Error> for EdgeError {
    fn from(e: serde_json::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<String> for EdgeError {
    fn from(cause: String) -> Self {
        Self(cause)
    }
}

impl From<&str> for EdgeError {
    fn from(cause: &str) -> Self {
        Self(cause.to_string())
    }
}

impl From<EdgeError> for Error {
    /// A runtime call that should not fail did: 500 `internal_error`.
    fn from(e: EdgeError) -> Self {
        Error::Internal(e.0)
    }
}

/// A platform store the edge depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// The `DB` database.
    D1,
    /// The `TOKENS` namespace.
    Kv,
    /// The `EVENTS` queue (with the outbox behind it).
    Queue,
}

impl Dependency {
    /// The name in the log (`d1 unavailable: …`).
    fn name(self) -> &'static str {
        match self {
            Self::D1 => "d1",
            Self::Kv => "kv",
            Self::Queue => "queue",
        }
    }

    /// This store failed with `cause`: 503 `service_unavailable` with
    /// `Retry-After`.
    pub fn failed(self, cause: impl Into<EdgeError>) -> Error {
        Error::Unavailable { dependency: self.name(), cause: cause.into().0 }
    }
}

/// The two readings of a failed runtime call, on its result.
pub trait EdgeResult<T> {
    /// The failure of `dependency` ([`Dependency::failed`]): a 503.
    fn or_unavailable(self, dependency: Dependency) -> Result<T, Error>;

    /// The failure of the call `what`, an [`EdgeError`] that `?` turns
    /// into a 500.
    fn context(self, what: &str) -> Result<T, EdgeError>;
}

impl<T, E: Into<EdgeError>> EdgeResult<T> for Result<T, E> {
    fn or_unavailable(self, dependency: Dependency) -> Result<T, Error> {
        self.map_err(|e| dependency.failed(e))
    }

    fn context(self, what: &str) -> Result<T, EdgeError> {
        self.map_err(|e| e.into().context(what))
    }
}
