//! Outbound `fetch` for the requests core builds: webhook deliveries, email
//! API calls and the sign-in hook. One timeout covers the whole exchange
//! (response head and the capped body); redirects are returned, not followed.

use futures_util::future::{select, Either};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, RequestRedirect, Response};

use crate::core::outbound::{HttpReply, HttpRequest, SendError, MAX_REPLY_BYTES};
use crate::core::ports::{Courier, LocalFuture, SigninGate};

fn js_err(e: wasm_bindgen::JsValue) -> SendError {
    let text = js_sys::Reflect::get(&e, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    SendError::Network(text)
}

async fn exchange(req: &Request) -> Result<HttpReply, SendError> {
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: Response = JsFuture::from(global.fetch_with_request(req)).await.map_err(js_err)?.unchecked_into();
    let status = resp.status();
    let text = match resp.text() {
        Ok(p) => JsFuture::from(p).await.ok().and_then(|t| t.as_string()).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut body = text;
    if body.len() > MAX_REPLY_BYTES {
        let mut cut = MAX_REPLY_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    Ok(HttpReply { status, body })
}

/// `POST`s `request` and waits at most its `timeout_ms` for the full reply.
pub async fn send(request: &HttpRequest) -> Result<HttpReply, SendError> {
    let headers = Headers::new().map_err(js_err)?;
    headers.set("content-type", "application/json").map_err(js_err)?;
    for (name, value) in &request.headers {
        headers.set(name, value).map_err(js_err)?;
    }
    let abort = web_sys::AbortController::new().map_err(js_err)?;
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&wasm_bindgen::JsValue::from_str(&request.body));
    init.set_redirect(RequestRedirect::Manual);
    init.set_signal(Some(&abort.signal()));
    let req = Request::new_with_str_and_init(&request.url, &init).map_err(js_err)?;
    let timer = worker::Delay::from(std::time::Duration::from_millis(u64::from(request.timeout_ms)));
    let outcome = match select(Box::pin(exchange(&req)), timer).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => {
            abort.abort();
            Err(SendError::Timeout)
        }
    };
    outcome
}

/// `fetch` and `console.log` behind [`Courier`], for the queue consumer.
pub struct FetchCourier;

impl Courier for FetchCourier {
    async fn send(&self, request: &HttpRequest) -> Result<HttpReply, SendError> {
        send(request).await
    }

    fn log(&self, marker: &str, value: &serde_json::Value) {
        if marker.ends_with("dead_letter") || marker.ends_with("failed") {
            worker::console_error!("{marker} {value}");
        } else {
            worker::console_log!("{marker} {value}");
        }
    }
}

/// The sign-in hook over `fetch`.
pub struct FetchGate;

impl SigninGate for FetchGate {
    fn send<'a>(&'a self, request: &'a HttpRequest) -> LocalFuture<'a, Result<HttpReply, SendError>> {
        Box::pin(send(request))
    }

    fn report(&self, warning: &str) {
        worker::console_error!("portcullis.hook {}", serde_json::json!({ "warning": warning }));
    }
}
