//! The gateway: decide at the edge, then forward to the origin.
//!
//! Hot path: route policy (pure), token check (isolate cache, else WebCrypto
//! with cached keys — no D1, no KV), header rewrite, and one `fetch` of a
//! request built around the incoming body stream. The origin's response is
//! returned as is, streamed; redirects are passed back, never followed.

use std::cell::RefCell;

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};
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
use crate::edge::router::{cookie, ACCESS_COOKIE};
use crate::edge::glue;

thread_local! {
    static TOKENS: RefCell<TokenCache> = RefCell::new(TokenCache::new(DEFAULT_CAPACITY));
}

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
    let mut target = origin;
    let base = target.path().trim_end_matches('/').to_string();
    target.set_path(&format!("{base}{normalised}"));
    target.set_query(url.query());
    let fetcher = binding.unwrap_or(wasm_bindgen::JsValue::UNDEFINED);
    let id = identity.as_ref();
    let promise = glue::forward(
        &req,
        target.as_str(),
        &url[url::Position::BeforeHost..url::Position::AfterPort],
        url.scheme(),
        id.map(|i| i.user_id.as_str()),
        id.map(|i| i.email.as_str()),
        id.map(|i| i.roles.as_str()),
        id.map(|i| i.session_id.as_str()),
        id.map(|i| i.assertion.as_str()),
        used_bearer,
        cfg.origin_timeout_ms,
        &fetcher,
    )?;
    let outcome = JsFuture::from(promise).await?;
    match outcome.as_string() {
        None => Ok(outcome.unchecked_into()),
        Some(tag) if tag == "timeout" => {
            worker::console_error!("portcullis.origin_timeout after {} ms", cfg.origin_timeout_ms);
            origin_problem(true)
        }
        Some(tag) => {
            worker::console_error!("portcullis.origin_{tag}");
            origin_problem(false)
        }
    }
}

fn origin_problem(timed_out: bool) -> JsResult<Response> {
    let err = if timed_out { Error::OriginTimeout } else { Error::OriginUnreachable };
    http::problem(&err)
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
    let c = verified.claims;
    Ok((
        Identity { user_id: c.sub, email: c.email, roles: c.roles.join(","), session_id: c.sid, assertion },
        from_header,
    ))
}
