//! The gateway: decide at the edge, then forward to the origin.
//!
//! Hot path ([`fast_path`]): a public route, or a token this isolate already
//! verified (with a still-fresh origin assertion), is decided synchronously —
//! policy, cache lookup, role check — and the origin request is handed to JS
//! in one call whose Promise becomes the response: no Rust future, no D1, no
//! KV. Anything else (a fresh token, a refusal, CORS, cookies) takes
//! [`forward`], which verifies through WebCrypto with keys cached in the
//! isolate. The origin's response is returned as is, streamed; redirects are
//! passed back, never followed.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};
use worker::Env;

use crate::core::cache::{TokenCache, DEFAULT_CAPACITY};
use crate::core::config::Config;
use crate::core::error::{Error, TokenError};
use crate::core::policy::{authorize, missing_token, normalise_path, Policy};
use crate::core::ports::KeyRing;
use crate::core::time::UnixTime;
use crate::core::token::{self, Expectations, Parsed, VerifiedToken, ACCESS_TOKEN_TYPE, ASSERTION_TTL_SECS};
use crate::edge::glue;
use crate::edge::http::{self, JsResult};
use crate::edge::keyring::EdgeKeys;
use crate::edge::platform;
use crate::edge::router::{cookie, csrf_check, is_owned, ACCESS_COOKIE};

/// Base URL for requests sent through the `ORIGIN` binding when `ORIGIN_URL`
/// is not set (the binding ignores the host).
const BINDING_BASE_URL: &str = "https://origin.internal";

thread_local! {
    static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::new(DEFAULT_CAPACITY));
    static HAS_BINDING: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() };
    static PROBLEMS_SET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The identity forwarded for an allowed, authenticated request.
struct Identity {
    user_id: String,
    email: String,
    roles: String,
    session_id: String,
    assertion: String,
}

impl Identity {
    fn new(t: &VerifiedToken, assertion: String) -> Self {
        let c = &t.claims;
        Self {
            user_id: c.sub.clone(),
            email: c.email.clone(),
            roles: c.roles.join(","),
            session_id: c.sid.clone(),
            assertion,
        }
    }
}

/// Decides synchronously when nothing needs awaiting; `None` sends the
/// request down the full path ([`crate::edge::router::handle`]).
pub fn fast_path(req: &Request, env: &Env) -> Option<js_sys::Promise> {
    let cfg = crate::edge::config(env).ok()?;
    if !cfg.cors_origins.is_empty() && http::header(req, "origin").is_some() {
        return None;
    }
    let url = url::Url::parse(&req.url()).ok()?;
    let normalised = normalise_path(url.path()).ok()?;
    if is_owned(&normalised) {
        return None;
    }
    let method = req.method();
    let policy = cfg.routes.policy_for(&method, &normalised);
    let identity = if *policy == Policy::Public {
        None
    } else {
        let raw = http::bearer(req)?;
        let now = platform::now();
        let issuer = cfg.issuer_for(&http::request_origin(&url));
        let id = TOKENS.with(|c| {
            let mut c = c.borrow_mut();
            let e = c.get_mut(&raw, now)?;
            let (assertion, _) = e.assertion.as_ref().filter(|(_, exp)| assertion_fresh(*exp, now))?;
            (e.token.claims.iss == issuer && policy.allows(&e.token.claims.roles))
                .then(|| Identity::new(&e.token, assertion.clone()))
        })?;
        Some(id)
    };
    let used_bearer = identity.is_some();
    dispatch(req, env, &cfg, &url, &normalised, identity.as_ref(), used_bearer).ok()
}

fn assertion_fresh(expires: UnixTime, now: UnixTime) -> bool {
    expires.0 - now.0 > (ASSERTION_TTL_SECS as i64) / 2
}

/// Decides and, when allowed, forwards one request to the origin.
pub async fn forward(
    req: Request,
    env: &Env,
    cfg: &Rc<Config>,
    url: url::Url,
    normalised: String,
) -> JsResult<Response> {
    let method = req.method();
    let policy = cfg.routes.policy_for(&method, &normalised);
    let (identity, used_bearer) = if *policy == Policy::Public {
        (None, false)
    } else {
        match check(&req, env, cfg, &url, policy).await {
            Ok((id, bearer)) => (Some(id), bearer),
            Err(e) => return http::problem(&e),
        }
    };
    match dispatch(&req, env, cfg, &url, &normalised, identity.as_ref(), used_bearer) {
        Ok(promise) => Ok(JsFuture::from(promise).await?.unchecked_into()),
        Err(e) => http::problem(&e),
    }
}

/// Hands the request to the origin (one JS call); the Promise resolves to the
/// origin's response or a 502 / 504 problem.
fn dispatch(
    req: &Request,
    env: &Env,
    cfg: &Config,
    url: &url::Url,
    normalised: &str,
    id: Option<&Identity>,
    used_bearer: bool,
) -> Result<js_sys::Promise, Error> {
    if !PROBLEMS_SET.with(std::cell::Cell::get) {
        glue::set_origin_problems(
            &Error::OriginUnreachable.problem().body().to_string(),
            &Error::OriginTimeout.problem().body().to_string(),
        );
        PROBLEMS_SET.with(|s| s.set(true));
    }
    let binding = origin_binding(env);
    let mut target = match (&cfg.origin_url, &binding) {
        (Some(u), _) => u.clone(),
        (None, Some(_)) => url::Url::parse(BINDING_BASE_URL).map_err(|e| Error::Internal(e.to_string()))?,
        (None, None) => {
            return Err(Error::Misconfigured(
                "ORIGIN_URL: not set and no ORIGIN service binding; the gateway has no origin".into(),
            ))
        }
    };
    let base = target.path().trim_end_matches('/').to_string();
    target.set_path(&format!("{base}{normalised}"));
    target.set_query(url.query());
    glue::forward(
        req,
        target.as_str(),
        id.map(|i| i.user_id.as_str()),
        id.map(|i| i.email.as_str()),
        id.map(|i| i.roles.as_str()),
        id.map(|i| i.session_id.as_str()),
        id.map(|i| i.assertion.as_str()),
        used_bearer,
        cfg.origin_timeout_ms,
        &binding.unwrap_or(JsValue::UNDEFINED),
    )
    .map_err(|e| Error::Internal(format!("forward: {e:?}")))
}

/// The `ORIGIN` service binding, if configured (looked up once per isolate).
fn origin_binding(env: &Env) -> Option<JsValue> {
    let present = HAS_BINDING.with(|b| *b.get_or_init(|| env.service("ORIGIN").is_ok()));
    if !present {
        return None;
    }
    env.service("ORIGIN").ok().map(|f| f.into_rpc::<JsValue>())
}

/// Verifies the caller and applies `policy`. Returns the identity and whether
/// the token came from the `Authorization` header.
async fn check(
    req: &Request,
    env: &Env,
    cfg: &Rc<Config>,
    url: &url::Url,
    policy: &Policy,
) -> Result<(Identity, bool), Error> {
    let (raw, from_header) = match http::bearer(req) {
        Some(t) => (t, true),
        None => match cfg.cookie_mode.then(|| cookie(req, ACCESS_COOKIE)).flatten() {
            Some(t) => {
                csrf_check(req, cfg, url)?;
                (t, false)
            }
            None => return Err(missing_token()),
        },
    };
    let now = platform::now();
    let issuer = cfg.issuer_for(&http::request_origin(url));
    let audience =
        cfg.origin_url.as_ref().map_or_else(|| BINDING_BASE_URL.to_string(), |o| o.origin().ascii_serialization());

    // A token this isolate verified before.
    let cached = TOKENS.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.get_mut(&raw, now)?;
        if e.token.claims.iss != issuer {
            return None;
        }
        let assertion = e.assertion.as_ref().filter(|(_, exp)| assertion_fresh(*exp, now)).map(|(a, _)| a.clone());
        Some((e.token.clone(), assertion))
    });
    let keys = EdgeKeys::new(env, Rc::clone(cfg));
    let (verified, assertion) = match cached {
        Some(hit) => hit,
        None => {
            let expect = Expectations { issuer: &issuer, audience: &cfg.audience, token_type: ACCESS_TOKEN_TYPE };
            let parsed = Parsed::new(&raw, ACCESS_TOKEN_TYPE).map_err(Error::InvalidToken)?;
            match keys.verify(parsed.kid(), parsed.signed_data(), parsed.signature()).await? {
                None => return Err(Error::InvalidToken(TokenError::UnknownKey)),
                Some(false) => return Err(Error::InvalidToken(TokenError::BadSignature)),
                Some(true) => {}
            }
            let v = parsed.validated_claims(&expect, now).map_err(Error::InvalidToken)?;
            TOKENS.with(|c| c.borrow_mut().insert(&raw, v.clone(), now));
            (v, None)
        }
    };
    authorize(policy, &verified.claims.roles)?;
    let assertion = match assertion {
        Some(a) => a,
        None => {
            let kid = keys.signing_key().await?.kid;
            let (input, exp) = token::assertion_signing_input(&issuer, &audience, &verified, now, &kid);
            let (signed_by, sig) = keys.sign(input.as_bytes()).await?;
            if signed_by != kid {
                return Err(Error::Internal("signing key changed while signing".into()));
            }
            let a = token::compact(&input, &sig);
            TOKENS.with(|c| {
                if let Some(e) = c.borrow_mut().get_mut(&raw, now) {
                    e.assertion = Some((a.clone(), exp));
                }
            });
            a
        }
    };
    Ok((Identity::new(&verified, assertion), from_header))
}
