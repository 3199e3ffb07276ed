//! The gateway at the edge: core decides, this carries bytes.
//!
//! The judgement of a gateway request is core's
//! ([`Gateway::decide`](crate::core::gateway::Gateway::decide): route
//! policy, credential, revocation, token, role, step-up, assertion), run on
//! the isolate's state ([`crate::edge::isolate`]) over a view of the
//! runtime's request, with native signatures. Only what the isolate does
//! not hold needs I/O: a cold key cache (or one past `KEY_CACHE_TTL`), a
//! revocation set never read or a lag old; the decision then says so and
//! [`forward`] loads the keys from D1 or reads the revocation log
//! ([`crate::edge::revocations`]) and asks again. Keys and revocations due
//! for a reload are read in the background. A rule saying `"fresh": true`
//! has [`forward`] read the token's session from D1 (core's check, through
//! the `RevocationStore` port) before forwarding. So nearly every request —
//! public, cached or fresh token, refusal — is answered by [`fast_path`]
//! within one synchronous call: the origin fetch's Promise, or the refusal.
//! No Rust future, no D1, no KV. The origin's response is returned as is,
//! streamed; redirects are passed back, never followed.

use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};
use worker::Env;

use crate::core::config::Config;
use crate::core::error::{Error, TokenError};
use crate::core::gateway::credential::OWN_COOKIES;
use crate::core::gateway::headers::{HOP_BY_HOP, IDENTITY_HEADERS, NEVER_CONNECTION_NAMED};
use crate::core::gateway::policy::{auth_api_path, normalise_path};
use crate::core::gateway::target::{origin_target, RequestUrl, BINDING_BASE_URL};
use crate::core::gateway::Decision;
use crate::core::time::UnixTime;
use crate::edge::crypto::Native;
use crate::edge::d1::D1Store;
use crate::edge::error::EdgeResult;
use crate::edge::http::{self, JsResult};
use crate::edge::isolate;
use crate::edge::js as glue; // the edge's JS bindings (src/edge/js/)
use crate::edge::keyring::EdgeKeys;
use crate::edge::platform;
use crate::edge::revocations;

thread_local! {
    static HAS_BINDING: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() };
    static PROBLEMS_SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Answers synchronously unless keys must be loaded, the revocation set
/// read, a `fresh` rule's session checked, or CORS applies; `None` sends the
/// request down the full path ([`crate::edge::router::handle`]). Keys and
/// revocations due for a read are read in the background (`ctx.waitUntil`)
/// meanwhile.
pub fn fast_path(req: &Request, env: &Env, ctx: &worker::worker_sys::Context) -> Option<JsResult<JsValue>> {
    let cfg = crate::edge::config(env).ok()?;
    // With CORS configured, a request from a browser origin takes the full
    // path (preflights, grants); every other answer still needs `Vary: Origin`.
    let vary = !cfg.cors_origins.is_empty();
    if vary && http::header(req, "origin").is_some() {
        return None;
    }
    // Read, not parsed again; anything unusual takes the full path.
    let url = RequestUrl::new(req.url())?;
    let normalised = normalise_path(url.path()).ok()?;
    if auth_api_path(&normalised, &cfg.auth_prefix).is_some() {
        return None;
    }
    let keys = EdgeKeys::new(env, Rc::clone(&cfg));
    let now_ms = platform::now_ms();
    let decision = decide(req, &cfg, &url, &normalised, now_ms, true);
    // Neither can fail for a live request; a lost read is retried by a later one.
    if let Some(reload) = keys.background_refresh(UnixTime::from_millis(now_ms as f64)) {
        let _ = ctx.wait_until(&reload);
    }
    if let Some(read) = revocations::background_read(env, &cfg, now_ms) {
        let _ = ctx.wait_until(&read);
    }
    let refuse = |e: &Error| {
        let resp = http::problem(e)?;
        if vary {
            http::add_cors(resp, None)
        } else {
            Ok(resp)
        }
    };
    Some(match decision {
        Decision::LoadKeys { .. }
        | Decision::LoadRevocations
        | Decision::RecheckRevocations
        | Decision::Forward { fresh: Some(_), .. } => return None,
        Decision::Refuse(e) => refuse(&e).map(JsValue::from),
        Decision::Forward { identity, drop_auth, fresh: None } => {
            let identity = identity.map_or(JsValue::UNDEFINED, JsValue::from);
            match dispatch(req, env, &cfg, &url, &normalised, &identity, drop_auth, vary) {
                Ok(promise) => Ok(promise.into()),
                Err(e) => refuse(&e).map(JsValue::from),
            }
        }
    })
}

/// Decides, loading keys or reading revocations when needed, and when
/// allowed (and a `fresh` rule's session check passes) forwards one request
/// to the origin.
pub async fn forward(
    req: Request,
    env: &Env,
    ctx: &worker::Context,
    cfg: &Rc<Config>,
    url: RequestUrl,
    normalised: String,
) -> JsResult<Response> {
    let keys = EdgeKeys::new(env, Rc::clone(cfg));
    let (arrival_ms, mut recheck_roles) = (platform::now_ms(), true);
    let mut decision = decide(&req, cfg, &url, &normalised, arrival_ms, recheck_roles);
    // At most: the revocation set, a stale key cache, an unknown kid (one
    // throttled reload), then a role refusal checked against a new read.
    for _ in 0..4 {
        let loaded = match &decision {
            Decision::LoadKeys { unknown_kid } => keys.refresh(unknown_kid.as_deref()).await,
            Decision::LoadRevocations => revocations::ensure_read(env, ctx, cfg).await,
            Decision::RecheckRevocations => {
                recheck_roles = false;
                revocations::recheck_read(env, ctx, cfg, arrival_ms).await
            }
            _ => break,
        };
        if let Err(e) = loaded {
            return http::problem(&e);
        }
        decision = decide(&req, cfg, &url, &normalised, platform::now_ms(), recheck_roles);
    }
    if let Some(read) = revocations::background_read(env, cfg, platform::now_ms()) {
        ctx.wait_until(async move {
            let _ = JsFuture::from(read).await;
        });
    }
    match decision {
        Decision::Forward { identity, drop_auth, fresh } => {
            if let Some(fresh) = fresh {
                let checked = match D1Store::new(env) {
                    Ok(store) => fresh.check(&store, platform::now(), cfg.session_max_age_secs).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = checked {
                    return http::problem(&e);
                }
            }
            let identity = identity.map_or(JsValue::UNDEFINED, JsValue::from);
            // `Vary` is added by the caller (`router::with_cors`) on this path.
            match dispatch(&req, env, cfg, &url, &normalised, &identity, drop_auth, false) {
                Ok(promise) => Ok(JsFuture::from(promise).await?.unchecked_into()),
                Err(e) => http::problem(&e),
            }
        }
        Decision::Refuse(e) => http::problem(&e),
        // Read and still not usable: fail closed.
        Decision::LoadRevocations | Decision::RecheckRevocations => {
            http::problem(&Error::unavailable("revocations", "the revocation set is not usable after reading"))
        }
        // Loaded and still not enough: fail closed.
        Decision::LoadKeys { unknown_kid: Some(_) } => http::problem(&Error::InvalidToken(TokenError::UnknownKey)),
        Decision::LoadKeys { unknown_kid: None } => {
            http::problem(&Error::Internal("the signing key is not available after loading".into()))
        }
    }
}

/// The one judgement of a gateway request at `now_ms` (Unix milliseconds;
/// core's [`Gateway::decide`](crate::core::gateway::Gateway::decide), on
/// the isolate's state); never does I/O.
fn decide(
    req: &Request,
    cfg: &Config,
    url: &RequestUrl,
    normalised: &str,
    now_ms: i64,
    recheck_roles: bool,
) -> Decision<js_sys::Array> {
    let view = http::View::new(req, url.query());
    isolate::with(|g| g.decide(&view, url, normalised, cfg, &Native, now_ms, recheck_roles))
}

/// Hands the request to the origin (one JS call); the Promise resolves to the
/// origin's response or a 502 / 504 problem, with `Vary: Origin` if `vary`.
#[allow(clippy::too_many_arguments)]
fn dispatch(
    req: &Request,
    env: &Env,
    cfg: &Config,
    url: &RequestUrl,
    normalised: &str,
    identity: &JsValue,
    drop_auth: bool,
    vary: bool,
) -> Result<js_sys::Promise, Error> {
    if !PROBLEMS_SET.with(std::cell::Cell::get) {
        glue::set_origin_problems(
            &Error::OriginUnreachable.problem().body(),
            &Error::OriginTimeout.problem().body(),
            &Error::BodyNotForwardable.problem().body(),
        );
        glue::set_forward_rules(
            cfg.strip_headers.js_pattern(),
            &HOP_BY_HOP.join("\n"),
            &NEVER_CONNECTION_NAMED.join("\n"),
            &OWN_COOKIES.join("\n"),
            &IDENTITY_HEADERS.join("\n"),
        );
        PROBLEMS_SET.with(|s| s.set(true));
    }
    let binding = origin_binding(env);
    let target = match (&cfg.origin_url, &binding) {
        (Some(u), _) => origin_target(&u[..url::Position::AfterPath], normalised, url.query()),
        (None, Some(_)) => origin_target(BINDING_BASE_URL, normalised, url.query()),
        (None, None) => {
            return Err(Error::Misconfigured(
                "ORIGIN_URL: not set and no ORIGIN service binding; the gateway has no origin".into(),
            ))
        }
    };
    Ok(glue::forward(
        req,
        &target,
        identity,
        drop_auth,
        cfg.origin_timeout_ms,
        &binding.unwrap_or(JsValue::UNDEFINED),
        vary,
    )
    .context("forward")?)
}

/// The `ORIGIN` service binding, if configured (looked up once per isolate).
fn origin_binding(env: &Env) -> Option<JsValue> {
    let present = HAS_BINDING.with(|b| *b.get_or_init(|| env.service("ORIGIN").is_ok()));
    if !present {
        return None;
    }
    env.service("ORIGIN").ok().map(|f| f.into_rpc::<JsValue>())
}
