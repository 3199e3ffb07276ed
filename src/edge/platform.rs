//! Small platform services: the clock, waiting and randomness.

use crate::core::ids::Random;
use crate::core::ports::{LocalFuture, Pause};
use crate::core::time::UnixTime;

/// The current time, from `Date.now()`.
pub fn now() -> UnixTime {
    UnixTime::from_millis(js_sys::Date::now())
}

/// The current time in Unix milliseconds, from `Date.now()`.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// [`Pause`] on the runtime's timers (`setTimeout`), reading the clock
/// ([`now`]) when the wait ends.
pub struct Timer;

impl Pause for Timer {
    fn pause(&self, ms: u64) -> LocalFuture<'_, UnixTime> {
        Box::pin(async move {
            worker::Delay::from(std::time::Duration::from_millis(ms)).await;
            now()
        })
    }
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
