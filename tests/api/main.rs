//! Native integration tests: core's flows wired to in-memory ports and a
//! fixed clock (see `support`).

mod account;
mod support;
mod tokens;
