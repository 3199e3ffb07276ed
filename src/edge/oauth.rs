//! OAuth / OIDC at the edge: the `/auth/oauth/…` routes, and the
//! [`ProviderNet`] adapter — provider calls through [`outbound`], ID-token
//! signatures through WebCrypto (`js/oauth_glue.js`), discovery documents and
//! JWKS cached in the isolate.

use std::cell::RefCell;
use std::collections::HashMap;

use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::flows::oauth::{AuthorizeRequest, CallbackOutcome, CallbackQuery, ExchangeRequest, Started};
use crate::core::flows::{Deps, Meta};
use crate::core::gateway::credential::set_cookie;
use crate::core::oauth::{JwsAlg, ProviderNet, ProviderRequest, BINDING_COOKIE, STATE_TTL_SECS};
use crate::core::outbound::{HttpReply, SendError};
use crate::core::time::UnixTime;
use crate::edge::d1::D1Store;
use crate::edge::error::EdgeResult;
use crate::edge::http::{self, access_token, auth_cookies, cookie, sign_in_response, JsResult};
use crate::edge::js::verify_jws;
use crate::edge::keyring::EdgeKeys;
use crate::edge::outbound::{self, Outbound, Overflow};
use crate::edge::platform::OsRandom;
use crate::edge::queue::QueueSink;

/// Largest provider reply read (JWKS with certificate chains can be large).
const MAX_PROVIDER_REPLY_BYTES: usize = 256 * 1024;
/// Most documents cached per isolate (two per provider).
const MAX_CACHED_DOCUMENTS: usize = 64;

thread_local! {
    static DOCUMENTS: RefCell<HashMap<String, (UnixTime, String)>> = RefCell::new(HashMap::new());
}

/// `fetch` + WebCrypto + the isolate cache behind [`ProviderNet`].
pub struct EdgeProviderNet;

impl ProviderNet for EdgeProviderNet {
    async fn send(&self, request: &ProviderRequest) -> Result<HttpReply, SendError> {
        let mut headers = request.headers.clone();
        if request.form.is_some() {
            headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
        }
        outbound::exchange(&Outbound {
            method: request.method,
            url: &request.url,
            headers: &headers,
            body: request.form.as_deref(),
            timeout_ms: request.timeout_ms,
            max_bytes: MAX_PROVIDER_REPLY_BYTES,
            overflow: Overflow::Fail,
            via: None,
        })
        .await
    }

    async fn verify(
        &self,
        alg: JwsAlg,
        jwk: &serde_json::Value,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error> {
        let promise = verify_jws(alg.as_str(), &jwk.to_string(), signed, signature).context("verifyJws")?;
        let ok = JsFuture::from(promise).await.context("verifyJws")?;
        Ok(ok.as_bool().unwrap_or(false))
    }

    fn cached(&self, key: &str) -> Option<(UnixTime, String)> {
        DOCUMENTS.with(|d| d.borrow().get(key).cloned())
    }

    fn cache(&self, key: &str, fetched_at: UnixTime, body: &str) {
        DOCUMENTS.with(|d| {
            let mut d = d.borrow_mut();
            if d.len() >= MAX_CACHED_DOCUMENTS && !d.contains_key(key) {
                d.clear();
            }
            d.insert(key.to_string(), (fetched_at, body.to_string()));
        });
    }

    fn report(&self, warning: &str) {
        worker::console_error!("portcullis.oauth {}", serde_json::json!({ "warning": warning }));
    }
}

type EdgeDeps<'a> = Deps<'a, D1Store, QueueSink<'a>, EdgeKeys<'a>>;

fn js(r: JsResult<Response>) -> Result<Response, Error> {
    Ok(r.context("response")?)
}

fn binding_cookie(value: &str, max_age: u64) -> (&'static str, String) {
    set_cookie(BINDING_COOKIE, value, max_age)
}

fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `POST /auth/oauth/exchange`.
pub async fn exchange(req: &Request, deps: &EdgeDeps<'_>, meta: &Meta, cfg: &Config) -> Result<Response, Error> {
    let body: ExchangeRequest = http::read_json(req).await?;
    let signed_in = deps.oauth_exchange(meta, body).await?;
    js(sign_in_response(cfg, 200, &signed_in, meta.now))
}

/// `GET /auth/oauth/{provider}/authorize`.
pub async fn authorize(deps: &EdgeDeps<'_>, meta: &Meta, url: &url::Url, provider: &str) -> Result<Response, Error> {
    let body = AuthorizeRequest { redirect_to: query(url, "redirect_to") };
    let challenge = query(url, "code_challenge");
    let started =
        deps.oauth_authorize(meta, &mut OsRandom, &EdgeProviderNet, provider, body, challenge.as_deref()).await?;
    redirect(&started.authorize_url, &[binding_cookie(&started.binding, STATE_TTL_SECS)])
}

/// `POST /auth/oauth/{provider}/link`.
pub async fn link(
    req: &Request,
    deps: &EdgeDeps<'_>,
    meta: &Meta,
    cfg: &Config,
    url: &url::Url,
    provider: &str,
) -> Result<Response, Error> {
    let bearer = access_token(req, cfg, url)?;
    let body: AuthorizeRequest = http::read_optional_json(req).await?.unwrap_or_default();
    let Started { authorize_url, binding } =
        deps.oauth_link_start(meta, &mut OsRandom, &EdgeProviderNet, bearer.as_deref(), provider, body).await?;
    js(http::json(
        200,
        &serde_json::json!({ "authorize_url": authorize_url }),
        None,
        &[binding_cookie(&binding, STATE_TTL_SECS)],
    ))
}

/// `GET /auth/oauth/{provider}/callback`.
pub async fn callback(
    req: &Request,
    deps: &EdgeDeps<'_>,
    meta: &Meta,
    cfg: &Config,
    url: &url::Url,
    provider: &str,
) -> Result<Response, Error> {
    let q = CallbackQuery {
        code: query(url, "code"),
        state: query(url, "state"),
        error: query(url, "error"),
        iss: query(url, "iss"),
    };
    let binding = cookie(req, BINDING_COOKIE);
    let clear = binding_cookie("", 0);
    match deps.oauth_callback(meta, &mut OsRandom, &EdgeProviderNet, provider, q, binding.as_deref()).await? {
        CallbackOutcome::SignedIn { location, auth } => {
            let mut headers = auth_cookies(cfg, &auth, meta.now);
            headers.push(clear);
            redirect(&location, &headers)
        }
        // No session yet: no cookies but the binding's clearing.
        CallbackOutcome::SecondStep { location } | CallbackOutcome::Linked { location } => {
            redirect(&location, &[clear])
        }
        CallbackOutcome::Failed { location: Some(location), error } => {
            if error.is_server_side() {
                worker::console_error!("portcullis.error oauth callback: {error}");
            }
            redirect(&location, &[clear])
        }
        CallbackOutcome::Failed { location: None, error } => Err(error),
    }
}

/// `DELETE /auth/oauth/{provider}`.
pub async fn unlink(
    req: &Request,
    deps: &EdgeDeps<'_>,
    meta: &Meta,
    cfg: &Config,
    url: &url::Url,
    provider: &str,
) -> Result<Response, Error> {
    let bearer = access_token(req, cfg, url)?;
    deps.oauth_unlink(meta, bearer.as_deref(), provider).await?;
    js(http::empty(204, &[]))
}

fn redirect(location: &str, extra: &[(&'static str, String)]) -> Result<Response, Error> {
    let mut headers: Vec<(&str, String)> = vec![("location", location.to_string())];
    headers.extend(extra.iter().cloned());
    js(http::empty(302, &headers))
}
