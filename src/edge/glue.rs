//! Bindings to `glue.js`: response construction and the origin request, each
//! one boundary crossing (see that file for why they are JavaScript).
#![allow(unsafe_code)] // wasm-bindgen's generated extern shims

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use web_sys::{Request, Response};

#[wasm_bindgen(module = "/src/edge/glue.js")]
extern "C" {
    /// A gateway-written response with the security headers.
    #[wasm_bindgen(catch)]
    pub fn respond(
        status: u16,
        body: Option<&str>,
        content_type: Option<&str>,
        cache: Option<&str>,
        extra: Option<&str>,
    ) -> Result<Response, JsValue>;

    /// The request body read chunk by chunk: a Promise of its bytes
    /// (`Uint8Array`), or of `null` once more than `limit` bytes arrived (the
    /// rest is cancelled unread).
    #[wasm_bindgen(catch, js_name = readCapped)]
    pub fn read_capped(request: &Request, limit: u32) -> Result<js_sys::Promise, JsValue>;

    /// `resp` with `Vary: Origin` and, for a granted origin, the CORS headers.
    #[wasm_bindgen(catch, js_name = withCors)]
    pub fn with_cors(
        resp: &Response,
        allow_origin: Option<&str>,
        credentials: bool,
        exposed: &str,
    ) -> Result<Response, JsValue>;

    /// Stores the rendered 502 / 504 problem bodies for `forward`.
    #[wasm_bindgen(js_name = setOriginProblems)]
    pub fn set_origin_problems(unreachable: &str, timeout: &str, get_body: &str);

    /// Stores the pattern of header names `forward` removes
    /// (`core::headers::StrippedHeaders::js_pattern`).
    #[wasm_bindgen(js_name = setStrippedHeaders)]
    pub fn set_stripped_headers(pattern: &str);

    /// Sends the request to the origin; resolves to its Response, or a 502 /
    /// 504 problem. `identity` is `[user id, email, roles, session id,
    /// assertion]`, or `undefined` for none; `vary` adds `Vary: Origin`.
    #[wasm_bindgen(catch)]
    pub fn forward(
        request: &Request,
        target: &str,
        identity: &JsValue,
        drop_auth: bool,
        timeout_ms: u32,
        fetcher: &JsValue,
        vary: bool,
    ) -> Result<js_sys::Promise, JsValue>;
}
