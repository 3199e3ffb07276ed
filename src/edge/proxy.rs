//! The gateway: decide at the edge, then forward to the origin.
//!
//! [`decide`] judges a gateway request, synchronously: route policy, token
//! (from the isolate's cache, else verified with the natively imported keys
//! of [`crate::edge::keyring`]), role, and the origin assertion (cached with
//! the token, else signed natively). Only a cold key cache (or one long past
//! its expiry) needs I/O; `decide` then says so and [`forward`] loads the
//! keys from D1 and asks again; a merely expired one is reloaded in the
//! background. So nearly every request — public, cached or fresh token, refusal —
//! is answered by [`fast_path`] within one synchronous call: the origin
//! fetch's Promise, or the refusal. No Rust future, no D1, no KV. The
//! origin's response is returned as is, streamed; redirects are passed back,
//! never followed.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};
use worker::Env;

use crate::core::config::Config;
use crate::core::error::{Error, TokenError};
use crate::core::gateway::cache::{Assertion, TokenCache, DEFAULT_CAPACITY};
use crate::core::gateway::credential;
use crate::core::gateway::key_cache::Cached;
use crate::core::gateway::policy::{auth_api_path, missing_token, normalise_path};
use crate::core::gateway::target::{origin_target, RequestUrl};
use crate::core::time::UnixTime;
use crate::core::token::{self, Expectations, Parsed, VerifiedToken, ACCESS_TOKEN_TYPE, ASSERTION_TTL_SECS};
use crate::edge::crypto::Native;
use crate::edge::error::EdgeResult;
use crate::edge::http::{self, JsResult};
use crate::edge::js as glue; // the edge's JS bindings (src/edge/js/)
use crate::edge::keyring::EdgeKeys;
use crate::edge::platform;

/// Base URL for requests sent through the `ORIGIN` binding when `ORIGIN_URL`
/// is not set (the binding ignores the host).
const BINDING_BASE_URL: &str = "https://origin.internal";

thread_local! {
    /// Verified tokens, each with its identity headers (assertion included)
    /// as the JS array `glue.forward` sends: built once per token.
    static TOKENS: RefCell<TokenCache<js_sys::Array>> = RefCell::new(TokenCache::new(DEFAULT_CAPACITY));
    /// The assertion's `aud`: the origin (config is fixed per isolate).
    static AUDIENCE: std::cell::OnceCell<String> = const { std::cell::OnceCell::new() };
    static HAS_BINDING: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() };
    static PROBLEMS_SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The judgement on one gateway request.
enum Decision {
    /// Forward, with the identity headers (`undefined`: none) and whether
    /// the `Authorization` header is removed (unless the rule says
    /// `forward_authorization`).
    Forward { identity: JsValue, drop_auth: bool },
    /// Answer with this problem.
    Refuse(Error),
    /// The key cache must be loaded from D1 first, then ask again.
    LoadKeys { unknown_kid: Option<String> },
}

/// Answers synchronously unless keys must be loaded or CORS applies; `None`
/// sends the request down the full path ([`crate::edge::router::handle`]).
/// Expired keys are reloaded in the background (`ctx.waitUntil`) meanwhile.
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
    let now = platform::now();
    let decision = decide(req, &cfg, &keys, &url, &normalised, now);
    if let Some(reload) = keys.background_refresh(now) {
        // Cannot fail for a live request; a lost reload is retried by a later one.
        let _ = ctx.wait_until(&reload);
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
        Decision::LoadKeys { .. } => return None,
        Decision::Refuse(e) => refuse(&e).map(JsValue::from),
        Decision::Forward { identity, drop_auth } => {
            match dispatch(req, env, &cfg, &url, &normalised, &identity, drop_auth, vary) {
                Ok(promise) => Ok(promise.into()),
                Err(e) => refuse(&e).map(JsValue::from),
            }
        }
    })
}

/// Decides, loading keys when needed, and when allowed forwards one request
/// to the origin.
pub async fn forward(
    req: Request,
    env: &Env,
    cfg: &Rc<Config>,
    url: RequestUrl,
    normalised: String,
) -> JsResult<Response> {
    let keys = EdgeKeys::new(env, Rc::clone(cfg));
    let mut decision = decide(&req, cfg, &keys, &url, &normalised, platform::now());
    // At most: a stale cache, then an unknown kid (one throttled reload).
    for _ in 0..2 {
        let Decision::LoadKeys { unknown_kid } = &decision else { break };
        if let Err(e) = keys.refresh(unknown_kid.as_deref()).await {
            return http::problem(&e);
        }
        decision = decide(&req, cfg, &keys, &url, &normalised, platform::now());
    }
    match decision {
        Decision::Forward { identity, drop_auth } => {
            // `Vary` is added by the caller (`router::with_cors`) on this path.
            match dispatch(&req, env, cfg, &url, &normalised, &identity, drop_auth, false) {
                Ok(promise) => Ok(JsFuture::from(promise).await?.unchecked_into()),
                Err(e) => http::problem(&e),
            }
        }
        Decision::Refuse(e) => http::problem(&e),
        // Loaded and still not enough: fail closed.
        Decision::LoadKeys { unknown_kid: Some(_) } => http::problem(&Error::InvalidToken(TokenError::UnknownKey)),
        Decision::LoadKeys { unknown_kid: None } => {
            http::problem(&Error::Internal("the signing key is not available after loading".into()))
        }
    }
}

/// A cached token that the policy allows.
enum Hit {
    /// With its identity headers and a fresh assertion.
    Ready(js_sys::Array),
    /// Its assertion is missing, about to expire, or signed by a key no
    /// longer published.
    Unsigned(VerifiedToken),
}

/// The one judgement of a gateway request at `now`; never does I/O.
fn decide(
    req: &Request,
    cfg: &Config,
    keys: &EdgeKeys<'_>,
    url: &RequestUrl,
    normalised: &str,
    now: UnixTime,
) -> Decision {
    let facts = http::View::new(req, url.query());
    let judged = cfg.routes.judge(&facts, normalised);
    let drop_auth = !judged.forwards_authorization();
    if judged.is_public() {
        return Decision::Forward { identity: JsValue::UNDEFINED, drop_auth };
    }
    let raw = match credential::access_token(&facts, cfg, &url.origin()) {
        Ok(Some(t)) => t,
        Ok(None) => return Decision::Refuse(missing_token()),
        Err(e) => return Decision::Refuse(e),
    };
    let issuer: Cow<'_, str> = match &cfg.issuer {
        Some(fixed) => Cow::Borrowed(fixed),
        None => Cow::Owned(cfg.issuer_for(&url.origin())),
    };

    // A token this isolate verified before: a map lookup, while the keys
    // that signed it (and its assertion) are published.
    let cached = TOKENS.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.get_mut(&raw, now, |kid| keys.vouches(kid, now))?;
        if e.token.claims.iss != *issuer {
            return Some(Err(Error::InvalidToken(TokenError::WrongIssuer)));
        }
        if let Err(refused) = judged.authorize(&e.token.claims.roles) {
            return Some(Err(refused));
        }
        Some(Ok(match e.assertion.as_ref().filter(|a| assertion_fresh(a.expires_at, now)) {
            Some(a) => Hit::Ready(a.value.clone()),
            None => Hit::Unsigned(e.token.clone()),
        }))
    });
    let (verified, fresh) = match cached {
        Some(Err(e)) => return Decision::Refuse(e),
        Some(Ok(Hit::Ready(identity))) => return Decision::Forward { identity: identity.into(), drop_auth },
        Some(Ok(Hit::Unsigned(verified))) => (verified, None),
        None => match verify_fresh(&raw, &issuer, cfg, keys, now) {
            Ok((v, kid)) => (v, Some(kid)),
            Err(d) => return d,
        },
    };
    if let Err(e) = judged.authorize(&verified.claims.roles) {
        // Cached all the same: a repeat of the refused request costs a lookup.
        remember(&raw, fresh.map(|kid| (verified, kid)), None, keys, now);
        return Decision::Refuse(e);
    }
    let signed = sign_assertion(&issuer, cfg, keys, &verified, now);
    let fresh = fresh.map(|kid| (verified, kid));
    match signed {
        Ok(signed) => {
            let identity = signed.value.clone();
            remember(&raw, fresh, Some(signed), keys, now);
            Decision::Forward { identity: identity.into(), drop_auth }
        }
        Err(d) => {
            remember(&raw, fresh, None, keys, now);
            d
        }
    }
}

/// Caches what [`decide`] learnt, with one write: a fresh token with the
/// `kid` that signed it (and its assertion, if one was signed), or a new
/// assertion for a cached token.
fn remember(
    raw: &str,
    fresh: Option<(VerifiedToken, String)>,
    assertion: Option<Assertion<js_sys::Array>>,
    keys: &EdgeKeys<'_>,
    now: UnixTime,
) {
    TOKENS.with(|c| {
        let mut c = c.borrow_mut();
        match (fresh, assertion) {
            (Some((token, kid)), assertion) => c.insert(raw, token, &kid, now).assertion = assertion,
            (None, Some(a)) => {
                if let Some(e) = c.get_mut(raw, now, |kid| keys.vouches(kid, now)) {
                    e.assertion = Some(a);
                }
            }
            (None, None) => {}
        }
    });
}

/// Caches an access token this isolate has just signed (login, refresh,
/// link, code, OAuth), with its assertion for the origin, as if the gateway
/// had verified it: its first request through the gateway costs a lookup,
/// not a signature check (if the assertion cannot be signed now, the first
/// forward signs it) — for as long as its key `kid` is published.
pub fn remember_issued(raw: &str, kid: &str, token: VerifiedToken, cfg: &Config, keys: &EdgeKeys<'_>, now: UnixTime) {
    let signed = sign_assertion(&token.claims.iss, cfg, keys, &token, now).ok();
    remember(raw, Some((token, kid.to_string())), signed, keys, now);
}

/// Verifies a token the cache does not hold; with the `kid` that signed it
/// (the caller caches both).
fn verify_fresh(
    raw: &str,
    issuer: &str,
    cfg: &Config,
    keys: &EdgeKeys<'_>,
    now: UnixTime,
) -> Result<(VerifiedToken, String), Decision> {
    let refuse = |e: TokenError| Decision::Refuse(Error::InvalidToken(e));
    let parsed = Parsed::new(raw, ACCESS_TOKEN_TYPE).map_err(refuse)?;
    match keys.verify_cached(parsed.kid(), parsed.alg(), parsed.signed_data(), parsed.signature(), now) {
        Err(e) => return Err(Decision::Refuse(e)),
        Ok(Cached::NeedsLoad) => return Err(Decision::LoadKeys { unknown_kid: Some(parsed.kid().to_string()) }),
        Ok(Cached::UnknownKey) => return Err(refuse(TokenError::UnknownKey)),
        Ok(Cached::Verified(false)) => return Err(refuse(TokenError::BadSignature)),
        Ok(Cached::Verified(true)) => {}
    }
    let expect = Expectations {
        issuer,
        audience: &cfg.audience,
        token_type: ACCESS_TOKEN_TYPE,
        max_lifetime_secs: cfg.access_ttl_secs,
    };
    let verified = parsed.validated_claims(&expect, now).map_err(refuse)?;
    Ok((verified, parsed.kid().to_string()))
}

/// Signs the origin assertion for a verified token with the active key;
/// returns the identity headers (assertion included), when the assertion
/// expires and the `kid` that signed it.
fn sign_assertion(
    issuer: &str,
    cfg: &Config,
    keys: &EdgeKeys<'_>,
    verified: &VerifiedToken,
    now: UnixTime,
) -> Result<Assertion<js_sys::Array>, Decision> {
    let signer = match keys.signer_cached(now) {
        Ok(Some(s)) => s,
        Ok(None) => return Err(Decision::LoadKeys { unknown_kid: None }),
        Err(e) => return Err(Decision::Refuse(e)),
    };
    let audience = AUDIENCE.with(|a| {
        a.get_or_init(|| {
            cfg.origin_url.as_ref().map_or_else(|| BINDING_BASE_URL.to_string(), |o| o.origin().ascii_serialization())
        })
        .clone()
    });
    let (input, exp) = token::assertion_signing_input(issuer, &audience, verified, now, signer.kid(), signer.alg());
    let sig = signer.sign(&Native, input.as_bytes()).map_err(Decision::Refuse)?;
    let c = &verified.claims;
    let identity = js_sys::Array::of5(
        &c.sub.as_str().into(),
        &c.email.as_str().into(),
        &c.roles.join(",").into(),
        &c.sid.as_str().into(),
        &token::compact(&input, &sig).into(),
    );
    Ok(Assertion { value: identity, expires_at: exp, kid: signer.kid().to_string() })
}

fn assertion_fresh(expires: UnixTime, now: UnixTime) -> bool {
    expires.0 - now.0 > (ASSERTION_TTL_SECS as i64) / 2
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
        glue::set_stripped_headers(cfg.strip_headers.js_pattern());
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
