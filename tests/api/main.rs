//! Native integration tests: core's flows wired to in-memory ports and a
//! fixed clock (see `support`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may panic

mod account;
mod admin;
mod audit;
mod delivery;
mod email_verification;
mod gateway;
mod keys;
mod layout;
mod locale;
mod magic_link;
mod mfa;
mod oauth;
mod otp;
mod passkeys;
mod passwords;
mod profile;
mod rate_limits;
mod revocation;
mod signin_hook;
mod support;
mod takeover;
mod token_epoch;
mod tokens;
