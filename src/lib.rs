//! Portcullis: an authentication gateway that runs as a Cloudflare Worker.
//!
//! It serves an auth API under `/auth` (signup, login, rotating refresh tokens,
//! sessions, magic links, email codes, password reset and change, email
//! verification, a second factor (TOTP with backup codes), an admin API),
//! publishes its signing keys at
//! `/.well-known/jwks.json` (rotated by an administrator or a cron trigger), checks every
//! other request at the edge and proxies the allowed ones to the origin, and puts
//! every auth event on a Queue whose consumer (this same crate) delivers them.
//!
//! # Layout
//!
//! - [`core`]: pure logic — config, errors, emails, passwords, tokens, keys,
//!   sessions, events and their delivery (signed webhooks, email templates,
//!   retries, dead letters), the audit log, the sign-in hook, the gateway's whole
//!   decision ([`core::gateway`]) and the use-case flows. It never imports
//!   `worker`, reads no clock and draws no randomness of its own: time and
//!   randomness are passed in, storage is reached through the small traits in
//!   [`core::ports`]. `cargo test` runs it natively.
//! - `edge` (wasm32 only): the `fetch`, `queue` and `scheduled` entry points,
//!   HTTP parsing and rendering, and the D1 / KV / Queue / WebCrypto / `fetch`
//!   adapters that implement the ports.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod edge;
