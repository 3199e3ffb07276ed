//! The pure core: every auth decision, with no platform access.

pub mod body;
pub mod cache;
pub mod config;
pub mod cors;
pub mod delivery;
pub mod email;
pub mod email_token;
pub mod error;
pub mod events;
pub mod flows;
pub mod gate;
pub mod ids;
pub mod keys;
pub mod mail;
pub mod oauth;
pub mod outbound;
pub mod password;
pub mod policy;
pub mod ports;
pub mod rate_limit;
pub mod session;
pub mod target;
pub mod time;
pub mod token;
pub mod users;
pub mod webhook;
