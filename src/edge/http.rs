//! HTTP at the edge: request facts (a runtime request as core's
//! [`RequestView`], the caller's credential and session cookies by core's
//! rules), JSON bodies read under limits, and the rendering of JSON and
//! problem+json responses with security headers. This is the one place a
//! core [`Error`] becomes an HTTP response.

use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, Response};

use crate::edge::js;

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::flows::{AuthResponse, SignIn};
use crate::core::gateway::credential::{self, ACCESS_COOKIE, REFRESH_COOKIE};
use crate::core::gateway::request::RequestView;
use crate::core::time::UnixTime;

/// Largest JSON body any auth endpoint reads.
pub const MAX_JSON_BODY_BYTES: usize = 16 * 1024;

/// A response result at the edge; `Err` only for JS-level failures.
pub type JsResult<T> = Result<T, JsValue>;

/// A header's value, if present.
pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// A runtime request as core's gateway rules read it: the method read once,
/// the query taken from the URL the caller already holds, headers read
/// only when asked for.
pub struct View<'r> {
    req: &'r Request,
    method: String,
    query: Option<&'r str>,
}

impl<'r> View<'r> {
    /// The view of `req`, whose URL has this `query`.
    pub fn new(req: &'r Request, query: Option<&'r str>) -> Self {
        Self { req, method: req.method(), query }
    }
}

impl RequestView for View<'_> {
    fn method(&self) -> &str {
        &self.method
    }
    fn query(&self) -> Option<&str> {
        self.query
    }
    fn has_body(&self) -> bool {
        self.req.body().is_some()
    }
    fn header(&self, name: &str) -> Option<String> {
        header(self.req, name)
    }
}

/// The caller's access token on the auth API: `Authorization: Bearer`, else
/// (cookie mode) the access cookie under the CSRF rule
/// ([`credential::access_token`]).
pub fn access_token(req: &Request, cfg: &Config, url: &url::Url) -> Result<Option<String>, Error> {
    credential::access_token(&View::new(req, url.query()), cfg, &request_origin(url))
}

/// The refresh cookie, under the same rule as the access cookie.
pub fn refresh_cookie(req: &Request, cfg: &Config, url: &url::Url) -> Result<Option<String>, Error> {
    credential::cookie_credential(&View::new(req, url.query()), cfg, &request_origin(url), REFRESH_COOKIE)
}

/// The value of cookie `name`, if sent.
pub fn cookie(req: &Request, name: &str) -> Option<String> {
    credential::cookie_in(&header(req, "cookie")?, name)
}

/// The session cookies of a sign-in in cookie mode (none otherwise), each
/// living as long as the token it carries at `now` (see
/// [`AuthResponse::cookie_max_ages`]). The body then leaves the tokens out
/// (see [`AuthResponse::body`]).
pub fn auth_cookies(cfg: &Config, resp: &AuthResponse, now: UnixTime) -> Vec<(&'static str, String)> {
    if !cfg.cookie_mode {
        return Vec::new();
    }
    let (access_max_age, refresh_max_age) = resp.cookie_max_ages(cfg, now);
    vec![
        credential::set_cookie(ACCESS_COOKIE, &resp.access_token, access_max_age),
        credential::set_cookie(REFRESH_COOKIE, &resp.refresh_token, refresh_max_age),
    ]
}

/// The answer of a sign-in step: the session (its body, and its cookies in
/// cookie mode) with `status`, or 200 with the second step's `mfa_token`
/// and no cookies.
pub fn sign_in_response(cfg: &Config, status: u16, signed_in: &SignIn, now: UnixTime) -> JsResult<Response> {
    match signed_in {
        SignIn::Complete(resp) => json(status, &resp.body(cfg), None, &auth_cookies(cfg, resp, now)),
        SignIn::SecondStep(step) => json(200, &step.body(), None, &[]),
    }
}

/// Set-Cookie headers ending both session cookies (cookie mode; none otherwise).
pub fn clear_cookies(cfg: &Config) -> Vec<(&'static str, String)> {
    if !cfg.cookie_mode {
        return Vec::new();
    }
    vec![credential::set_cookie(ACCESS_COOKIE, "", 0), credential::set_cookie(REFRESH_COOKIE, "", 0)]
}

/// Reads the body as JSON of type `T`: `application/json`, at most
/// [`MAX_JSON_BODY_BYTES`]. Syntax errors are 400 `invalid_json`; missing,
/// unknown or mistyped fields are 422 `validation_failed`.
pub async fn read_json<T: DeserializeOwned>(req: &Request) -> Result<T, Error> {
    let bytes = read_body(req).await?;
    if bytes.is_empty() {
        return Err(Error::InvalidJson("the request body is empty; expected a JSON object".into()));
    }
    crate::core::body::parse_json(&bytes)
}

/// Like [`read_json`], but an empty body (with any or no content type) is
/// `None`.
pub async fn read_optional_json<T: DeserializeOwned>(req: &Request) -> Result<Option<T>, Error> {
    let declared = header(req, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if declared == Some(0) || (declared.is_none() && req.body().is_none()) {
        return Ok(None);
    }
    // Of unknown length (chunked), only reading tells whether it is empty,
    // which it may be under any content type.
    let bytes = if declared.is_none() {
        let bytes = read_raw(req).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            require_json(req)?;
        }
        bytes
    } else {
        read_body(req).await?
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    crate::core::body::parse_json(&bytes).map(Some)
}

/// The media type of the hosted pages' forms.
const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

/// Reads the body as a hosted page's form: `application/x-www-form-urlencoded`,
/// at most [`MAX_JSON_BODY_BYTES`] (415 and 413 otherwise).
pub async fn read_form(req: &Request) -> Result<crate::core::ui::forms::Form, Error> {
    let ct = header(req, "content-type").unwrap_or_default();
    if !ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(FORM_MEDIA_TYPE) {
        return Err(Error::UnsupportedMediaType { expected: FORM_MEDIA_TYPE });
    }
    require_identity_coding(req)?;
    if let Some(len) = header(req, "content-length") {
        if len.trim().parse::<u64>().map_or(true, |n| n > MAX_JSON_BODY_BYTES as u64) {
            return Err(Error::PayloadTooLarge { limit_bytes: MAX_JSON_BODY_BYTES });
        }
    }
    Ok(crate::core::ui::forms::Form::parse(&read_raw(req).await?))
}

/// The body of an OAuth endpoint (RFC 7009, RFC 7662): an
/// `application/x-www-form-urlencoded` form of at most
/// [`MAX_JSON_BODY_BYTES`]; another content type is 400 `invalid_request`.
pub async fn read_oauth_form(req: &Request) -> Result<Vec<u8>, Error> {
    let ct = header(req, "content-type").unwrap_or_default();
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(Error::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
    }
    require_identity_coding(req)?;
    if let Some(len) = header(req, "content-length") {
        match len.trim().parse::<u64>() {
            Ok(n) if n <= MAX_JSON_BODY_BYTES as u64 => {}
            Ok(_) => return Err(Error::PayloadTooLarge { limit_bytes: MAX_JSON_BODY_BYTES }),
            Err(_) => return Err(Error::InvalidRequest("bad Content-Length".into())),
        }
    }
    if req.body().is_none() {
        return Ok(Vec::new());
    }
    read_raw(req).await
}

/// Refuses a body in a content coding (`Content-Encoding: gzip`, …): the
/// API reads bodies as sent (415 `unsupported_content_encoding`).
fn require_identity_coding(req: &Request) -> Result<(), Error> {
    match header(req, "content-encoding") {
        Some(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("identity") => {
            Err(Error::UnsupportedContentEncoding)
        }
        _ => Ok(()),
    }
}

/// Refuses a body whose content type is not `application/json`, or that
/// comes in a content coding.
fn require_json(req: &Request) -> Result<(), Error> {
    let ct = header(req, "content-type").unwrap_or_default();
    let media = ct.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Error::UnsupportedMediaType { expected: "application/json" });
    }
    require_identity_coding(req)
}

async fn read_body(req: &Request) -> Result<Vec<u8>, Error> {
    require_json(req)?;
    let too_large = Error::PayloadTooLarge { limit_bytes: MAX_JSON_BODY_BYTES };
    if let Some(len) = header(req, "content-length") {
        match len.trim().parse::<u64>() {
            Ok(n) if n <= MAX_JSON_BODY_BYTES as u64 => {}
            Ok(_) => return Err(too_large),
            Err(_) => return Err(Error::InvalidJson("bad Content-Length".into())),
        }
    }
    read_raw(req).await
}

/// The body's bytes, up to [`MAX_JSON_BODY_BYTES`]: read chunk by chunk and
/// refused (413) as soon as it is longer, the rest left unread — also for a
/// body without a `Content-Length` (chunked), whose length only reading tells.
async fn read_raw(req: &Request) -> Result<Vec<u8>, Error> {
    let unreadable = || Error::InvalidJson("the request body cannot be read".into());
    let promise = js::read_capped(req, MAX_JSON_BODY_BYTES as u32).map_err(|_| unreadable())?;
    let bytes = JsFuture::from(promise).await.map_err(|_| unreadable())?;
    if bytes.is_null() {
        return Err(Error::PayloadTooLarge { limit_bytes: MAX_JSON_BODY_BYTES });
    }
    Ok(js_sys::Uint8Array::new(&bytes).to_vec())
}

fn extra_headers(extra: &[(&str, String)]) -> Option<String> {
    if extra.is_empty() {
        return None;
    }
    let mut s = String::new();
    for (k, v) in extra {
        // Header values cannot hold newlines; drop any rather than split wrongly.
        let v: String = v.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(k);
        s.push('\n');
        s.push_str(&v);
    }
    Some(s)
}

/// A JSON response. `cache` is a `Cache-Control` value, or `None` for `no-store`.
pub fn json<T: Serialize>(status: u16, body: &T, cache: Option<&str>, extra: &[(&str, String)]) -> JsResult<Response> {
    let text = serde_json::to_string(body).map_err(|e| JsValue::from_str(&e.to_string()))?;
    js::respond(status, Some(&text), Some("application/json"), cache, extra_headers(extra).as_deref())
}

/// A hosted page: HTML, `no-store`, with `extra` headers (its CSP, cookies).
pub fn html(status: u16, body: &str, extra: &[(&str, String)]) -> JsResult<Response> {
    js::respond(status, Some(body), Some("text/html; charset=utf-8"), None, extra_headers(extra).as_deref())
}

/// A static script (the hosted pages' own), cached as `cache` says.
pub fn script(body: &str, cache: &str) -> JsResult<Response> {
    js::respond(200, Some(body), Some("text/javascript; charset=utf-8"), Some(cache), None)
}

/// An empty response (e.g. 204).
pub fn empty(status: u16, extra: &[(&str, String)]) -> JsResult<Response> {
    js::respond(status, None, None, None, extra_headers(extra).as_deref())
}

/// The problem+json response for `err`; server-side causes go to the log.
pub fn problem(err: &Error) -> JsResult<Response> {
    if err.is_server_side() {
        worker::console_error!("portcullis.error {err}");
    }
    problem_body(&err.problem())
}

/// Renders a [`Problem`](crate::core::error::Problem).
pub fn problem_body(p: &crate::core::error::Problem) -> JsResult<Response> {
    let mut extra: Vec<(&str, String)> = Vec::new();
    if let Some(v) = &p.www_authenticate {
        extra.push(("www-authenticate", v.clone()));
    }
    if let Some(secs) = p.retry_after_secs {
        extra.push(("retry-after", secs.to_string()));
    }
    if let Some(methods) = p.allow {
        extra.push(("allow", methods.to_string()));
    }
    if let Some(codings) = p.accept_encoding {
        extra.push(("accept-encoding", codings.to_string()));
    }
    js::respond(p.status, Some(&p.body()), Some("application/problem+json"), None, extra_headers(&extra).as_deref())
}

/// Copies `resp` (which may have immutable headers, e.g. the origin's) with
/// `Vary: Origin` and the CORS headers for `grant`, if any: with CORS
/// configured, every response varies by `Origin`. The body stream is passed
/// through.
pub fn add_cors(resp: Response, grant: Option<&crate::core::cors::Grant>) -> JsResult<Response> {
    match grant {
        Some(g) => js::with_cors(&resp, Some(g.allow_origin()), g.credentials(), crate::core::cors::EXPOSED_HEADERS),
        None => js::with_cors(&resp, None, false, ""),
    }
}

/// The request's origin (`scheme://host[:port]`), from its URL.
pub fn request_origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}
