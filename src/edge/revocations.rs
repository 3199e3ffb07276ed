//! The isolate's revocation set ([`crate::core::revocation`]): held in
//! memory, checked synchronously by the gateway's decision, kept up to date
//! from D1's revocation log.
//!
//! - [`refuses`] and [`must_read`] are what the hot path calls: a
//!   thread-local borrow, an age comparison and a hash lookup or two. No
//!   I/O, no allocation.
//! - [`background_read`]: from half of `REVOCATION_LAG`, the log's new rows
//!   are read in the background (the request hands the read to `waitUntil`
//!   and is answered from the set it has). One read at a time per isolate,
//!   and reads start at most every half lag (every second once one failed);
//!   one that has not finished after a lag is taken as lost and another may
//!   start.
//! - [`ensure_read`]: an isolate that has never read the log, or whose set
//!   is [`FAIL_CLOSED_LAGS`](crate::core::revocation::FAIL_CLOSED_LAGS) lags
//!   old, reads it before answering an authenticated request; requests that
//!   need it meanwhile wait for that same read — at most until it counts as
//!   lost, a lag after it began. If it fails or is lost, they are refused
//!   with 503 (or, for a copy less than three lags old, answered from it).

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::Env;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::revocation::{read, retention_secs, Readiness, Revocations};
use crate::edge::d1::D1Store;
use crate::edge::{js, platform};

thread_local! {
    static SET: RefCell<Revocations> = RefCell::new(Revocations::new());
    /// The read under way: its promise, awaited by every request that must
    /// wait for a read, and when it began (Unix milliseconds).
    static READING: RefCell<Option<(js_sys::Promise, i64)>> = const { RefCell::new(None) };
    /// When the last read began, failed or not (Unix milliseconds).
    static LAST_START: std::cell::Cell<i64> = const { std::cell::Cell::new(i64::MIN) };
}

/// Least time between the starts of two reads: half the lag (the cadence of
/// a healthy isolate), at most [`RETRY_MS`] — so a failing D1 is asked again
/// about once a second, not once per request.
fn min_interval_ms(cfg: &Config) -> i64 {
    lag_ms(cfg).saturating_div(2).min(RETRY_MS)
}

/// Longest wait before a failed read is tried again, in milliseconds.
const RETRY_MS: i64 = 1_000;

fn lag_ms(cfg: &Config) -> i64 {
    i64::try_from(cfg.revocation_lag_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Whether a new read may start at `now_ms` ([`min_interval_ms`]).
fn may_start(cfg: &Config, now_ms: i64) -> bool {
    now_ms.saturating_sub(LAST_START.with(std::cell::Cell::get)) >= min_interval_ms(cfg)
}

/// Whether the set must be read before it is used at `now_ms`: never read,
/// or too old (then [`ensure_read`]).
pub fn must_read(cfg: &Config, now_ms: i64) -> bool {
    match SET.with(|s| s.borrow().readiness(now_ms, cfg.revocation_lag_secs)) {
        Readiness::Read => true,
        // A lag old: read first — unless a read just failed (then the copy
        // serves until it is three lags old, the documented outage bound).
        Readiness::Stale => read_under_way(cfg, now_ms).is_some() || may_start(cfg, now_ms),
        Readiness::Fresh | Readiness::Refresh => false,
    }
}

/// Whether a token of session `sid`, user `sub`, claiming `roles`, is
/// revoked by the set as it is (see [`must_read`] first).
pub fn refuses(sid: &str, sub: &str, roles: &[String]) -> bool {
    SET.with(|s| s.borrow().set().refuses(sid, sub, roles))
}

/// The read under way and when it began, if that was less than a lag
/// before `now_ms`.
fn read_under_way(cfg: &Config, now_ms: i64) -> Option<(js_sys::Promise, i64)> {
    let lag_ms = lag_ms(cfg);
    READING.with(|r| r.borrow().as_ref().filter(|(_, began)| now_ms.saturating_sub(*began) < lag_ms).cloned())
}

/// Starts a read of the log's new rows; it installs them when it ends (or
/// logs why not) and resolves either way. With when it began.
fn start_read(env: &Env, cfg: &Rc<Config>) -> (js_sys::Promise, i64) {
    let began = platform::now_ms();
    LAST_START.with(|t| t.set(began));
    let cursor = SET.with(|s| s.borrow().set().cursor());
    let retention = retention_secs(cfg.access_ttl_secs);
    let env = env.clone();
    let promise = wasm_bindgen_futures::future_to_promise(async move {
        let read = async {
            let store = D1Store::new(&env)?;
            read(&store, cursor, platform::now(), retention).await
        };
        match read.await {
            Ok(log) => {
                SET.with(|s| s.borrow_mut().install(began, log, platform::now(), retention));
            }
            Err(e) => worker::console_error!("portcullis.error reading the revocation log: {e}"),
        }
        READING.with(|r| {
            let mut r = r.borrow_mut();
            if r.as_ref().is_some_and(|(_, at)| *at == began) {
                *r = None;
            }
        });
        Ok(JsValue::UNDEFINED)
    });
    READING.with(|r| *r.borrow_mut() = Some((promise.clone(), began)));
    (promise, began)
}

/// When the set is due for a background read at `now_ms` and none is under
/// way: that read, to hand to `waitUntil`.
pub fn background_read(env: &Env, cfg: &Rc<Config>, now_ms: i64) -> Option<js_sys::Promise> {
    let due = SET.with(|s| s.borrow().readiness(now_ms, cfg.revocation_lag_secs) == Readiness::Refresh);
    if !due || read_under_way(cfg, now_ms).is_some() || !may_start(cfg, now_ms) {
        return None;
    }
    Some(start_read(env, cfg).0)
}

/// Makes the set usable: if it must be read ([`must_read`]), waits for the
/// read under way or starts one — unless one began less than
/// [`min_interval_ms`] ago and failed. 503 when the set is still unusable.
pub async fn ensure_read(env: &Env, cfg: &Rc<Config>) -> Result<(), Error> {
    let now_ms = platform::now_ms();
    if !must_read(cfg, now_ms) {
        return Ok(());
    }
    let unreadable = || Error::unavailable("revocations", "the revocation log could not be read");
    let (promise, began) = match read_under_way(cfg, now_ms) {
        Some(under_way) => under_way,
        None if may_start(cfg, now_ms) => start_read(env, cfg),
        None => return Err(unreadable()),
    };
    // A request waits for the read at most until it counts as lost (a lag
    // after it began): a D1 that hangs gives 503s, not requests held open.
    let wait_ms = began.saturating_add(lag_ms(cfg)).saturating_sub(now_ms).clamp(0, i64::from(u32::MAX));
    let wait = js::settles_within(&promise, u32::try_from(wait_ms).unwrap_or(u32::MAX));
    // The read resolves whether or not it succeeded; what it installed decides.
    let _ = JsFuture::from(wait).await;
    let after = platform::now_ms();
    match SET.with(|s| s.borrow().readiness(after, cfg.revocation_lag_secs)) {
        Readiness::Read => Err(unreadable()),
        // Read, or the read failed while the copy is within the outage bound.
        Readiness::Stale | Readiness::Fresh | Readiness::Refresh => Ok(()),
    }
}
