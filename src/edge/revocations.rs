//! The reads of the isolate's revocation set: core's
//! [`RevocationCopy`](crate::core::gateway::revocations::RevocationCopy),
//! held with the gateway's state ([`crate::edge::isolate`]), says when a read
//! is due and what a request may do meanwhile; this reads D1's revocation
//! log when it says so and hands what it read back.
//!
//! - [`background_read`]: from half of `REVOCATION_LAG`, the log's new rows
//!   are read in the background (the request hands the read to `waitUntil`
//!   and is answered from the set it has).
//! - [`ensure_read`]: when the decision asks for a read first (never read,
//!   or a lag old), the request waits for the read under way or starts one;
//!   requests that need it meanwhile wait for that same read — at most until
//!   it counts as lost, a lag after it began. If the set is still unusable
//!   after it, they are refused with 503.
//! - [`recheck_read`]: a token refused for a role by a copy older than the
//!   token waits for a read that began after the request arrived.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::Env;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::gateway::revocations::{lost_at_ms, read, unreadable, BeforeUse};
use crate::core::revocation::retention_secs;
use crate::edge::d1::D1Store;
use crate::edge::{isolate, js, platform};

thread_local! {
    /// The read under way: its promise, awaited by every request that must
    /// wait for a read, and when it began (Unix milliseconds, as core's copy
    /// knows it).
    static READING: RefCell<Option<(js_sys::Promise, i64)>> = const { RefCell::new(None) };
}

/// Starts the read that core's copy began at `began` after `cursor`; it
/// hands what it read to the copy when it ends (or logs why not) and
/// resolves either way.
fn start_read(env: &Env, cfg: &Rc<Config>, began: i64, cursor: u64) -> js_sys::Promise {
    let retention = retention_secs(cfg.access_ttl_secs);
    let env = env.clone();
    let promise = wasm_bindgen_futures::future_to_promise(async move {
        let read = async {
            let store = D1Store::new(&env)?;
            read(&store, cursor, platform::now(), retention).await
        };
        let log = match read.await {
            Ok(log) => Some(log),
            Err(e) => {
                worker::console_error!("portcullis.error reading the revocation log: {e}");
                None
            }
        };
        isolate::with(|g| g.revocations.end_read(began, log, platform::now(), retention));
        READING.with(|r| {
            let mut r = r.borrow_mut();
            if r.as_ref().is_some_and(|(_, at)| *at == began) {
                *r = None;
            }
        });
        Ok(JsValue::UNDEFINED)
    });
    READING.with(|r| *r.borrow_mut() = Some((promise.clone(), began)));
    promise
}

/// When the set is due for a background read at `now_ms` and none is under
/// way: that read, to hand to `waitUntil`.
pub fn background_read(env: &Env, cfg: &Rc<Config>, now_ms: i64) -> Option<js_sys::Promise> {
    let cursor = isolate::with(|g| g.revocations.begin_background_read(now_ms, cfg.revocation_lag_secs))?;
    Some(start_read(env, cfg, now_ms, cursor))
}

/// Makes the set usable when the decision asked for a read: waits for the
/// read under way or starts one ([`BeforeUse::Read`]), at most until that
/// read counts as lost. 503 when no read can be had, or the set is still
/// unusable after it.
pub async fn ensure_read(env: &Env, ctx: &worker::Context, cfg: &Rc<Config>) -> Result<(), Error> {
    let now_ms = platform::now_ms();
    let lag = cfg.revocation_lag_secs;
    match isolate::with(|g| g.revocations.before_use(now_ms, lag)) {
        BeforeUse::Use => return Ok(()),
        BeforeUse::FailClosed => return Err(unreadable()),
        BeforeUse::Read => {}
    }
    join_or_start_read(env, ctx, cfg, now_ms, None).await;
    usable_after_read(cfg)
}

/// Reads the set again for a role refusal by a copy older than the token
/// (`Decision::RecheckRevocations`): makes sure the copy was read by a read
/// that began at or after `arrival_ms` — the request's arrival, after the
/// token was minted, so such a read holds every grant the token's roles
/// came from. None is needed if one was installed meanwhile; else the read
/// under way if it began then, or a new one — the second only once a read
/// under way that began earlier has succeeded (one that failed, or is still
/// running when it counts as lost, says D1 cannot be read: no new read is
/// started over it) — waiting a lag at most in all. 503 when no such read
/// could be had (the refusal cannot be told from a grant the copy lacks).
pub async fn recheck_read(env: &Env, ctx: &worker::Context, cfg: &Rc<Config>, arrival_ms: i64) -> Result<(), Error> {
    let deadline = lost_at_ms(arrival_ms, cfg.revocation_lag_secs);
    for _ in 0..2 {
        let now_ms = platform::now_ms();
        if isolate::with(|g| g.revocations.read_since(arrival_ms)) || now_ms >= deadline {
            break;
        }
        let began = join_or_start_read(env, ctx, cfg, now_ms, Some(deadline)).await;
        if !isolate::with(|g| g.revocations.read_since(began)) {
            // The read waited for failed or is lost: D1 cannot be read.
            break;
        }
    }
    if !isolate::with(|g| g.revocations.read_since(arrival_ms)) {
        return Err(unreadable());
    }
    usable_after_read(cfg)
}

/// Waits for the read under way at `now_ms`, or starts one and waits for
/// it, at most until it counts as lost (a D1 that hangs gives 503s, not
/// requests held open) or until `deadline_ms`, if sooner; when that read
/// began.
async fn join_or_start_read(
    env: &Env,
    ctx: &worker::Context,
    cfg: &Rc<Config>,
    now_ms: i64,
    deadline_ms: Option<i64>,
) -> i64 {
    let lag = cfg.revocation_lag_secs;
    let under_way = isolate::with(|g| g.revocations.read_under_way(now_ms, lag));
    let waiting = under_way.and_then(|began| {
        READING.with(|r| r.borrow().as_ref().filter(|(_, at)| *at == began).map(|(p, _)| (p.clone(), began)))
    });
    let (promise, began) = match waiting {
        Some(under_way) => under_way,
        None => {
            let cursor = isolate::with(|g| g.revocations.begin_read(now_ms));
            let read = start_read(env, cfg, now_ms, cursor);
            // Kept alive past this request's answer (a 503 after the wait):
            // the requests after it use what it reads.
            let kept = read.clone();
            ctx.wait_until(async move {
                let _ = JsFuture::from(kept).await;
            });
            (read, now_ms)
        }
    };
    let until = deadline_ms.map_or(lost_at_ms(began, lag), |d| d.min(lost_at_ms(began, lag)));
    let wait_ms = until.saturating_sub(now_ms).clamp(0, i64::from(u32::MAX));
    let wait = js::settles_within(&promise, u32::try_from(wait_ms).unwrap_or(u32::MAX));
    // The read resolves whether or not it succeeded; what it installed decides.
    let _ = JsFuture::from(wait).await;
    began
}

/// 503 when the set is still unusable after a read.
fn usable_after_read(cfg: &Config) -> Result<(), Error> {
    if isolate::with(|g| g.revocations.unusable(platform::now_ms(), cfg.revocation_lag_secs)) {
        return Err(unreadable());
    }
    Ok(())
}
