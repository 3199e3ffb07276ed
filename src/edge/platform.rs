//! Small platform services: the clock and randomness.

use crate::core::ids::Random;
use crate::core::time::UnixTime;

/// The current time, from `Date.now()`.
pub fn now() -> UnixTime {
    UnixTime::from_millis(js_sys::Date::now())
}

/// The current time in Unix milliseconds, from `Date.now()`.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// `crypto.getRandomValues` through getrandom.
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // getrandom only fails when the platform has no CSPRNG, which workerd
        // always has; zero bytes would be unsafe, so make the failure loud.
        if getrandom::fill(buf).is_err() {
            worker::console_error!("portcullis: crypto.getRandomValues failed");
            buf.iter_mut().for_each(|b| *b = 0);
            std::process::abort();
        }
    }
}
