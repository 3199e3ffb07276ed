//! The gateway: everything that decides whether a request outside the auth
//! API reaches the origin, and as what. The decision ([`Gateway::decide`])
//! is one synchronous call without I/O, reading the request through a small
//! trait ([`RequestView`]) and signing and verifying through another
//! ([`SignatureOps`]), so that it is written once, here, and tested
//! natively (`tests/api/gateway.rs`), while the edge only carries bytes:
//! it builds the view over the runtime's request, loads keys or reads the
//! revocation log when the decision asks, runs a `fresh` rule's session
//! check through the `RevocationStore` port, and forwards what the decision
//! allowed.
//!
//! - [`decision`]: the judgement ([`Decision`]) and what the isolate keeps
//!   for it ([`Gateway`]).
//! - [`request`]: the request as the decision reads it ([`request::RequestView`]).
//! - [`target`]: the request URL as the runtime hands it, and the URL forwarded to.
//! - [`policy`]: the `ROUTES` rules, path normalisation and the readings of origins.
//! - [`credential`]: the caller's credential (bearer or cookie) and the CSRF rule.
//! - [`headers`]: the headers never forwarded (`STRIPPED`, `STRIP_HEADERS`).
//! - [`key_cache`]: the isolate's signing keys: loads, expiry and grace,
//!   own-signature recognition, verification and signing through the
//!   platform's [`key_cache::SignatureOps`].
//! - [`revocations`]: the isolate's copy of the revocation set — when a
//!   request uses it, reads it first or fails closed, its background reads
//!   — the log read through its port, and the `fresh` rule's check.
//! - [`cache`]: the per-isolate cache of verified access tokens, and the
//!   generation of the isolate's key set.

pub mod cache;
pub mod credential;
pub mod decision;
pub mod headers;
pub mod key_cache;
pub mod policy;
pub mod request;
pub mod revocations;
pub mod target;

pub use decision::{Decision, Gateway};
pub use headers::IdentityHeaders;
pub use key_cache::SignatureOps;
pub use request::RequestView;
pub use revocations::FreshSession;
