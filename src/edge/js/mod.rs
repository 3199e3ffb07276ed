//! The edge's JavaScript, bound here and nowhere else: every
//! `#[wasm_bindgen(module = …)]` import of the files in this folder.
//!
//! These functions are JavaScript because each does in one wasm→JS call
//! what would take many from Rust: building a Response or the origin
//! Request through `web_sys` crosses the boundary once per header, per
//! `RequestInit` field and per timer, an outbound exchange or a WebCrypto
//! check once per step and Promise. The signatures use `node:crypto`, which
//! only JavaScript reaches and which answers synchronously. Every decision
//! is made in Rust; the JavaScript only moves bytes and calls the runtime.
//!
//! - `glue.js`: responses with the security headers, CORS, capped body
//!   reads, and the gateway's origin request (`forward`).
//! - `outbound.js`: every outbound request core builds (webhooks, email
//!   API, the sign-in hook, OAuth providers), with one timeout and a cap.
//! - `mail.js`: the `cloudflare` email transport: a MIME message core
//!   built, through the `send_email` binding, with one timeout.
//! - `oauth_glue.js`: OAuth / OIDC ID-token signatures through WebCrypto.
//! - `signatures.js`: Ed25519 and ECDSA P-256 through `node:crypto`,
//!   synchronous, for the key ring.
//! - `timer.js`: a bound on how long a request waits for a promise.
#![allow(unsafe_code)] // wasm-bindgen's generated extern shims

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use web_sys::{Request, Response};

#[wasm_bindgen(module = "/src/edge/js/glue.js")]
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

    /// Stores what `forward` removes and adds: the pattern of stripped
    /// names (`core::gateway::headers::StrippedHeaders::js_pattern`), then
    /// newline-separated lists: hop-by-hop names, names `Connection` may not
    /// remove, our cookies, the identity headers.
    #[wasm_bindgen(js_name = setForwardRules)]
    pub fn set_forward_rules(
        stripped: &str,
        hop_by_hop: &str,
        never_connection_named: &str,
        own_cookies: &str,
        identity: &str,
    );

    /// Sends the request to the origin; resolves to its Response, or a 502 /
    /// 504 problem. `identity` is `[user id, email, roles, session id,
    /// assertion]` (and, with `CLAIMS_HEADER`, the `X-Auth-Claims` value),
    /// or `undefined` for none; `vary` adds `Vary: Origin`.
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

#[wasm_bindgen(module = "/src/edge/js/outbound.js")]
extern "C" {
    /// Sends one request; resolves to `{status, body}` (the body read as text,
    /// at most `max_bytes`: cut there when `truncate`, else a rejection).
    /// Rejects with the message `timed out` when no complete answer came in
    /// `timeout_ms`. `headers` is `name\nvalue\n…`; `fetcher` is a service
    /// binding to send through, or `undefined` for the network.
    #[wasm_bindgen(catch, js_name = send)]
    #[allow(clippy::too_many_arguments)]
    pub fn send_outbound(
        method: &str,
        url: &str,
        headers: &str,
        body: Option<&str>,
        timeout_ms: u32,
        max_bytes: u32,
        truncate: bool,
        fetcher: &JsValue,
    ) -> Result<js_sys::Promise, JsValue>;
}

#[wasm_bindgen(module = "/src/edge/js/mail.js")]
extern "C" {
    /// Sends `raw` from `from` to `to` through the `send_email` binding;
    /// resolves to `null` once it took the message, or to `{code, message,
    /// timedOut}` when it did not (never rejects).
    #[wasm_bindgen(js_name = sendMime)]
    pub fn send_mime(binding: &JsValue, from: &str, to: &str, raw: &str, timeout_ms: u32) -> js_sys::Promise;
}

#[wasm_bindgen(module = "/src/edge/js/oauth_glue.js")]
extern "C" {
    /// Verifies a JWS signature with a provider's public JWK through
    /// WebCrypto; resolves to false for a bad signature or an unusable key.
    #[wasm_bindgen(catch, js_name = verifyJws)]
    pub fn verify_jws(alg: &str, jwk: &str, signed: &[u8], signature: &[u8]) -> Result<js_sys::Promise, JsValue>;
}

#[wasm_bindgen(module = "/src/edge/js/signatures.js")]
extern "C" {
    /// A native public key from its JWK members (`y` empty for Ed25519).
    #[wasm_bindgen(catch, js_name = publicKey)]
    pub fn native_public_key(x: &str, y: &str) -> Result<JsValue, JsValue>;
    /// A passkey's native public key from its JWK (JSON text).
    #[wasm_bindgen(catch, js_name = passkeyKey)]
    pub fn native_passkey_key(jwk: &str) -> Result<JsValue, JsValue>;
    /// Verifies an RSASSA-PKCS1-v1_5 / SHA-256 signature synchronously; false for any malformed input.
    #[wasm_bindgen(js_name = verifyRs256)]
    pub fn native_verify_rs256(key: &JsValue, data: &[u8], signature: &[u8]) -> bool;
    /// A native private key from its JWK members (`y` empty for Ed25519).
    #[wasm_bindgen(catch, js_name = privateKey)]
    pub fn native_private_key(d: &str, x: &str, y: &str) -> Result<JsValue, JsValue>;
    /// Verifies an Ed25519 signature synchronously; false for any malformed input.
    #[wasm_bindgen(js_name = verifyEd25519)]
    pub fn native_verify_ed25519(key: &JsValue, data: &[u8], signature: &[u8]) -> bool;
    /// Verifies a DER ECDSA P-256 signature synchronously; false for any malformed input.
    #[wasm_bindgen(js_name = verifyEs256)]
    pub fn native_verify_es256(key: &JsValue, data: &[u8], der: &[u8]) -> bool;
    /// Signs with Ed25519 synchronously.
    #[wasm_bindgen(catch, js_name = signEd25519)]
    pub fn native_sign_ed25519(key: &JsValue, data: &[u8]) -> Result<js_sys::Uint8Array, JsValue>;
    /// Signs with ECDSA P-256 synchronously (DER).
    #[wasm_bindgen(catch, js_name = signEs256)]
    pub fn native_sign_es256(key: &JsValue, data: &[u8]) -> Result<js_sys::Uint8Array, JsValue>;
}

#[wasm_bindgen(module = "/src/edge/js/timer.js")]
extern "C" {
    /// A Promise of whether `promise` settles (either way) within `ms`
    /// milliseconds; `promise` keeps running after a `false`.
    #[wasm_bindgen(js_name = settlesWithin)]
    pub fn settles_within(promise: &js_sys::Promise, ms: u32) -> js_sys::Promise;
}
