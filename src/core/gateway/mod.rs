//! The gateway: everything that decides whether a request outside the auth
//! API reaches the origin, and as what.
//!
//! - [`request`]: the request as the decision reads it ([`request::RequestView`]).
//! - [`target`]: the request URL as the runtime hands it, and the URL forwarded to.
//! - [`policy`]: the `ROUTES` rules, path normalisation and the readings of origins.
//! - [`credential`]: the caller's credential (bearer or cookie) and the CSRF rule.
//! - [`headers`]: the headers never forwarded (`STRIPPED`, `STRIP_HEADERS`).
//! - [`key_cache`]: the isolate's signing keys: loads, expiry and grace,
//!   own-signature recognition, verification and signing through the
//!   platform's [`key_cache::SignatureOps`].
//! - [`cache`]: the per-isolate cache of verified access tokens, and the
//!   generation of the isolate's key set.

pub mod cache;
pub mod credential;
pub mod headers;
pub mod key_cache;
pub mod policy;
pub mod request;
pub mod target;
