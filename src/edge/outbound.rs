//! Outbound `fetch` for the requests core builds: webhook deliveries, email
//! API calls, the sign-in hook and OAuth provider calls, all through one
//! JavaScript helper (`js/outbound.js`); and the MIME messages of the
//! `cloudflare` email transport, through the `send_email` binding
//! (`js/mail.js`). One timeout covers the whole exchange
//! (response head and the capped body); redirects are returned, not followed.

use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

use crate::core::mail::{BindingError, MimeEmail, MAIL_BINDING};
use crate::core::outbound::{HttpReply, HttpRequest, SendError, MAX_REPLY_BYTES};
use crate::core::ports::{Courier, LocalFuture, SigninHook};
use crate::edge::error::EdgeError;
use crate::edge::js;

/// What to do with a reply body larger than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Keep the first bytes (the body is only logged or parsed if small).
    Truncate,
    /// Fail the exchange as a network error.
    Fail,
}

/// One outbound exchange.
pub struct Outbound<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// Absolute http(s) URL.
    pub url: &'a str,
    /// Header names and values; a value holding a newline is dropped.
    pub headers: &'a [(String, String)],
    /// Request body (its content type is among `headers`).
    pub body: Option<&'a str>,
    /// Give up after this long, body included.
    pub timeout_ms: u32,
    /// Largest reply body read.
    pub max_bytes: usize,
    /// A larger reply: cut or fail.
    pub overflow: Overflow,
    /// A service binding to send through instead of the network.
    pub via: Option<&'a JsValue>,
}

/// Sends `out` and waits for the reply, at most `out.timeout_ms`.
pub async fn exchange(out: &Outbound<'_>) -> Result<HttpReply, SendError> {
    let mut headers = String::new();
    for (k, v) in out.headers {
        if k.contains('\n') || v.contains('\n') {
            continue;
        }
        headers.push_str(k);
        headers.push('\n');
        headers.push_str(v);
        headers.push('\n');
    }
    let max = u32::try_from(out.max_bytes).unwrap_or(u32::MAX);
    let promise = js::send_outbound(
        out.method,
        out.url,
        &headers,
        out.body,
        out.timeout_ms,
        max,
        out.overflow == Overflow::Truncate,
        out.via.unwrap_or(&JsValue::UNDEFINED),
    )
    .map_err(|e| SendError::Network(EdgeError::from(e).to_string()))?;
    let reply = JsFuture::from(promise).await.map_err(|e| match EdgeError::from(e).cause() {
        "timed out" => SendError::Timeout,
        other => SendError::Network(other.to_string()),
    })?;
    let status = js_sys::Reflect::get(&reply, &"status".into()).ok().and_then(|s| s.as_f64()).unwrap_or(0.0) as u16;
    let body = js_sys::Reflect::get(&reply, &"body".into()).ok().and_then(|b| b.as_string()).unwrap_or_default();
    Ok(HttpReply { status, body })
}

/// `POST`s a request core built (JSON body), through `via` if given, and
/// waits at most its `timeout_ms` for the full reply, cut at
/// [`MAX_REPLY_BYTES`].
pub async fn send(request: &HttpRequest, via: Option<&JsValue>) -> Result<HttpReply, SendError> {
    let mut headers = Vec::with_capacity(request.headers.len() + 1);
    headers.push(("content-type".to_string(), "application/json".to_string()));
    headers.extend(request.headers.iter().cloned());
    exchange(&Outbound {
        method: "POST",
        url: &request.url,
        headers: &headers,
        body: Some(&request.body),
        timeout_ms: request.timeout_ms,
        max_bytes: MAX_REPLY_BYTES,
        overflow: Overflow::Truncate,
        via,
    })
    .await
}

/// `fetch`, the `send_email` binding and `console.log` behind [`Courier`],
/// for the queue consumer.
#[derive(Default)]
pub struct FetchCourier {
    /// The `send_email` binding `EMAIL`, if the Worker has one.
    mail: Option<JsValue>,
}

impl FetchCourier {
    /// The courier for this Worker's bindings.
    pub fn new(env: &worker::Env) -> Self {
        Self { mail: env.send_email(MAIL_BINDING).ok().map(JsValue::from) }
    }
}

impl Courier for FetchCourier {
    async fn send(&self, request: &HttpRequest) -> Result<HttpReply, SendError> {
        send(request, None).await
    }

    async fn send_mime(&self, message: &MimeEmail) -> Result<(), BindingError> {
        let Some(binding) = &self.mail else { return Err(BindingError::Missing) };
        let promise = js::send_mime(binding, &message.from, &message.to, &message.raw, message.timeout_ms);
        let outcome = JsFuture::from(promise)
            .await
            .map_err(|e| BindingError::Refused { code: None, message: EdgeError::from(e).cause().to_string() })?;
        if outcome.is_null() || outcome.is_undefined() {
            return Ok(());
        }
        let field = |name: &str| js_sys::Reflect::get(&outcome, &JsValue::from_str(name)).ok();
        if field("timedOut").and_then(|t| t.as_bool()) == Some(true) {
            return Err(BindingError::Timeout);
        }
        Err(BindingError::Refused {
            code: field("code").and_then(|c| c.as_string()),
            message: field("message").and_then(|m| m.as_string()).unwrap_or_default(),
        })
    }

    fn log(&self, marker: &str, value: &serde_json::Value) {
        if marker.ends_with("dead_letter") || marker.ends_with("failed") {
            worker::console_error!("{marker} {value}");
        } else {
            worker::console_log!("{marker} {value}");
        }
    }
}

/// The sign-in hook over `fetch`: to `HOOK_URL`, or through the `HOOK`
/// service binding when there is one.
pub struct FetchHook {
    binding: Option<JsValue>,
}

impl FetchHook {
    /// The gate for this Worker's bindings.
    pub fn new(env: &worker::Env) -> Self {
        Self { binding: env.service("HOOK").ok().map(|f| f.into_rpc::<JsValue>()) }
    }
}

impl SigninHook for FetchHook {
    fn send<'a>(&'a self, request: &'a HttpRequest) -> LocalFuture<'a, Result<HttpReply, SendError>> {
        Box::pin(send(request, self.binding.as_ref()))
    }

    fn report(&self, warning: &str) {
        worker::console_error!("portcullis.hook {}", serde_json::json!({ "warning": warning }));
    }
}
