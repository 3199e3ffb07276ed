//! The gateway: decide at the edge, then forward to the origin.
//!
//! Hot path: route policy (pure), token check (isolate cache, else WebCrypto
//! with cached keys — no D1, no KV), header rewrite, and one `fetch` of a
//! request built around the incoming body stream. The origin's response is
//! returned as is, streamed; redirects are passed back, never followed.

use std::cell::RefCell;

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, RequestRedirect, Response};
use worker::{Context, Env};

use crate::core::cache::{TokenCache, DEFAULT_CAPACITY};
use crate::core::config::Config;
use crate::core::error::{Error, TokenError};
use crate::core::policy::{authorize, missing_token, Policy};
use crate::core::ports::KeyRing;
use crate::core::token::{self, Expectations, Parsed, ACCESS_TOKEN_TYPE, ASSERTION_TTL_SECS};
use crate::edge::http::{self, JsResult};
use crate::edge::keyring::EdgeKeys;
use crate::edge::platform;
use crate::edge::router::{cookie, ACCESS_COOKIE, REFRESH_COOKIE};

thread_local! {
    static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::new(DEFAULT_CAPACITY));
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade"];

/// The identity forwarded for an allowed, authenticated request.
struct Identity {
    user_id: String,
    email: String,
    roles: String,
    session_id: String,
    assertion: String,
}

/// Decides and, when allowed, forwards one request to the origin.
pub async fn forward(
    req: Request,
    env: &Env,
    _ctx: &Context,
    cfg: &Config,
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
    let binding = origin_binding(env);
    let origin = match (&cfg.origin_url, &binding) {
        (Some(u), _) => u.clone(),
        (None, Some(_)) => url::Url::parse(BINDING_BASE_URL).map_err(|e| wasm_bindgen::JsValue::from_str(&e.to_string()))?,
        (None, None) => {
            return http::problem(&Error::Misconfigured(
                "ORIGIN_URL: not set and no ORIGIN service binding; the gateway has no origin".into(),
            ))
        }
    };
    let mut target = origin.clone();
    let base = origin.path().trim_end_matches('/');
    target.set_path(&format!("{base}{normalised}"));
    target.set_query(url.query());
    let headers = match rewrite_headers(&req, identity.as_ref(), used_bearer, &url) {
        Ok(h) => h,
        Err(_) => return http::problem(&Error::Internal("header rewrite failed".into())),
    };
    let init = RequestInit::new();
    init.set_method(&method);
    init.set_headers(&headers);
    init.set_redirect(RequestRedirect::Manual);
    if let Some(body) = req.body() {
        init.set_body(&body);
    }
    // The timeout covers the wait for the origin's response head only: once
    // it answers, a long streamed body is never cut off.
    let abort = web_sys::AbortController::new()?;
    init.set_signal(Some(&abort.signal()));
    let outbound = match Request::new_with_str_and_init(target.as_str(), &init) {
        Ok(r) => r,
        Err(e) => {
            return http::problem(&Error::unavailable("origin", format!("building the origin request: {e:?}")));
        }
    };
    let sent = Box::pin(async {
        match &binding {
            Some(fetcher) => fetch_via(fetcher, &outbound).await,
            None => fetch(&outbound).await,
        }
    });
    let timer = worker::Delay::from(std::time::Duration::from_millis(u64::from(cfg.origin_timeout_ms)));
    let outcome = match futures_util::future::select(sent, timer).await {
        futures_util::future::Either::Left((result, _)) => Some(result),
        futures_util::future::Either::Right(((), _)) => None,
    };
    match outcome {
        Some(Ok(resp)) => Ok(resp),
        Some(Err(e)) => {
            worker::console_error!("portcullis.origin_error {:?}", e);
            origin_problem(false)
        }
        None => {
            abort.abort();
            worker::console_error!("portcullis.origin_timeout after {} ms", cfg.origin_timeout_ms);
            origin_problem(true)
        }
    }
}

fn origin_problem(timed_out: bool) -> JsResult<Response> {
    let err = if timed_out {
        Error::Unavailable { dependency: "origin", cause: "timeout".into() }
    } else {
        Error::Unavailable { dependency: "origin", cause: "unreachable".into() }
    };
    let resp = http::problem(&err)?;
    // Same problem shape, but the gateway statuses: 504 on timeout, 502 otherwise.
    let (status, code, title) =
        if timed_out { (504, "origin_timeout", "Gateway timeout") } else { (502, "origin_unreachable", "Bad gateway") };
    let body = serde_json::json!({
        "type": "about:blank", "title": title, "status": status,
        "detail": "the origin did not answer", "code": code,
    });
    let init = web_sys::ResponseInit::new();
    init.set_status(status);
    init.set_headers(&resp.headers());
    Response::new_with_opt_str_and_init(Some(&body.to_string()), &init)
}

/// Base URL for requests sent through the `ORIGIN` binding when `ORIGIN_URL`
/// is not set (the binding ignores the host).
const BINDING_BASE_URL: &str = "https://origin.internal";

thread_local! {
    static HAS_BINDING: std::cell::OnceCell<bool> = const { std::cell::OnceCell::new() };
}

/// The `ORIGIN` service binding, if configured (looked up once per isolate).
fn origin_binding(env: &Env) -> Option<wasm_bindgen::JsValue> {
    let present = HAS_BINDING.with(|b| *b.get_or_init(|| env.service("ORIGIN").is_ok()));
    if !present {
        return None;
    }
    env.service("ORIGIN").ok().map(|f| f.into_rpc::<wasm_bindgen::JsValue>())
}

async fn fetch_via(fetcher: &wasm_bindgen::JsValue, req: &Request) -> JsResult<Response> {
    let f: js_sys::Function = js_sys::Reflect::get(fetcher, &"fetch".into())?.unchecked_into();
    let promise: js_sys::Promise = f.call1(fetcher, req)?.unchecked_into();
    Ok(JsFuture::from(promise).await?.unchecked_into())
}

async fn fetch(req: &Request) -> JsResult<Response> {
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp = JsFuture::from(global.fetch_with_request(req)).await?;
    Ok(resp.unchecked_into())
}

/// Verifies the caller and applies `policy`. Returns the identity and whether
/// the token came from the `Authorization` header.
async fn check(
    req: &Request,
    env: &Env,
    cfg: &Config,
    url: &url::Url,
    policy: &Policy,
) -> Result<(Identity, bool), Error> {
    let (raw, from_header) = match http::bearer(req) {
        Some(t) => (t, true),
        None => match cfg.cookie_mode.then(|| cookie(req, ACCESS_COOKIE)).flatten() {
            Some(t) => {
                crate::edge::router::csrf_check(req, cfg, url)?;
                (t, false)
            }
            None => return Err(missing_token()),
        },
    };
    let now = platform::now();
    let issuer = cfg.issuer_for(&http::request_origin(url));
    let audience = cfg
        .origin_url
        .as_ref()
        .map_or_else(|| BINDING_BASE_URL.to_string(), |o| o.origin().ascii_serialization());

    // Fast path: a token this isolate verified before.
    let cached = TOKENS.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.get_mut(&raw, now)?;
        if e.token.claims.iss != issuer {
            return None;
        }
        let assertion = e.assertion.as_ref().filter(|(_, exp)| exp.0 - now.0 > (ASSERTION_TTL_SECS as i64) / 2).map(|(a, _)| a.clone());
        Some((e.token.clone(), assertion))
    });
    let keys = EdgeKeys::new(env, crate::edge::config(env).map_err(|e| Error::Misconfigured(e.0))?);
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
            let key = keys.signing_key().await?;
            let (a, exp) = token::issue_assertion(&issuer, &audience, &verified, now, &key)?;
            TOKENS.with(|c| {
                if let Some(e) = c.borrow_mut().get_mut(&raw, now) {
                    e.assertion = Some((a.clone(), exp));
                }
            });
            a
        }
    };
    let c = verified.claims;
    Ok((
        Identity { user_id: c.sub, email: c.email, roles: c.roles.join(","), session_id: c.sid, assertion },
        from_header,
    ))
}

/// The headers sent to the origin: the client's, minus hop-by-hop headers,
/// headers named by `Connection`, every `X-Auth-*` and the gateway's own
/// credentials; plus the identity headers when authenticated.
fn rewrite_headers(req: &Request, id: Option<&Identity>, used_bearer: bool, url: &url::Url) -> JsResult<Headers> {
    let incoming = req.headers();
    let out = Headers::new_with_headers(&incoming)?;
    let mut drop: Vec<String> = Vec::new();
    if let Ok(Some(conn)) = incoming.get("connection") {
        drop.extend(conn.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()));
    }
    drop.extend(HOP_BY_HOP.iter().map(|s| s.to_string()));
    // Header names are few; one pass over the keys finds every x-auth-*.
    let keys = js_sys::try_iter(&out.keys())?.into_iter().flatten();
    for k in keys {
        if let Some(name) = k.ok().and_then(|v| v.as_string()) {
            if name.to_ascii_lowercase().starts_with("x-auth-") {
                drop.push(name);
            }
        }
    }
    for name in &drop {
        out.delete(name)?;
    }
    if used_bearer {
        out.delete("authorization")?;
    }
    if let Ok(Some(cookies)) = incoming.get("cookie") {
        let kept: Vec<&str> = cookies
            .split(';')
            .map(str::trim)
            .filter(|c| {
                let name = c.split('=').next().unwrap_or("");
                name != ACCESS_COOKIE && name != REFRESH_COOKIE
            })
            .collect();
        if kept.len() != cookies.split(';').count() {
            if kept.is_empty() {
                out.delete("cookie")?;
            } else {
                out.set("cookie", &kept.join("; "))?;
            }
        }
    }
    out.set("x-forwarded-host", url.host_str().unwrap_or(""))?;
    out.set("x-forwarded-proto", url.scheme())?;
    if let Some(id) = id {
        out.set("x-auth-user-id", &id.user_id)?;
        out.set("x-auth-email", &id.email)?;
        out.set("x-auth-roles", &id.roles)?;
        out.set("x-auth-session-id", &id.session_id)?;
        out.set("x-auth-assertion", &id.assertion)?;
    }
    Ok(out)
}
