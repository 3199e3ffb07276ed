//! The wasm32 edge: the Worker's entry points and the platform adapters.
//!
//! `fetch` serves the auth API and the gateway, `queue` records auth events
//! in the audit log, delivers them (webhooks, emails) and records dead
//! letters, `scheduled` runs periodic upkeep (signing-key rotation once the
//! key is `ROTATION_INTERVAL` old, purging long-expired email tokens, OAuth
//! sign-in states, revocations no token outlives, delivery records and audit
//! log entries). Requests and responses stay raw `web_sys` objects end to end,
//! so the gateway's hot path crosses the JS boundary as few times as possible.

mod crypto;
mod d1;
mod error;
mod http;
mod isolate;
mod js;
mod keyring;
mod kv;
mod oauth;
mod outbound;
mod passkeys;
mod platform;
mod ports;
mod proxy;
mod queue;
mod revocations;
mod router;
mod ui;

use std::rc::Rc;

use worker::{event, Context, Env, ScheduleContext, ScheduledEvent};

use crate::core::config::{Config, ConfigError};
use crate::core::error::Error;
use crate::core::flows::key_rotation::{self, KeyRotation};
use crate::core::mail::{Transport, MAIL_BINDING};

thread_local! {
    /// The configuration, parsed once per isolate (vars cannot change without
    /// a new isolate).
    static CONFIG: std::cell::OnceCell<Result<Rc<Config>, ConfigError>> = const { std::cell::OnceCell::new() };
}

/// The isolate's configuration, or the error naming the bad setting. Its
/// first parse in an isolate (a request, a queue batch or a cron run) is the
/// Worker's start-up: a fixed `ISSUER` is checked against the `log` email
/// transport there ([`warn_log_transport`]).
fn config(env: &Env) -> Result<Rc<Config>, ConfigError> {
    CONFIG.with(|cell| {
        cell.get_or_init(|| {
            let parsed = Config::from_lookup(|name| {
                env.var(name).map(|v| v.to_string()).ok().or_else(|| env.secret(name).map(|v| v.to_string()).ok())
            })
            .map(Rc::new)
            .and_then(|cfg| require_mail_binding(env, cfg));
            if let Ok(cfg) = &parsed {
                if let Some(issuer) = &cfg.issuer {
                    warn_log_transport(cfg, "issuer", issuer);
                }
            }
            parsed
        })
        .clone()
    })
}

/// `cfg`, unless its email transport is `cloudflare` and the Worker has no
/// `send_email` binding to send through: a setting that cannot work, refused
/// like any bad value.
fn require_mail_binding(env: &Env, cfg: Rc<Config>) -> Result<Rc<Config>, ConfigError> {
    if cfg.email.transport == Transport::Cloudflare && env.send_email(MAIL_BINDING).is_err() {
        return Err(ConfigError(format!(
            "EMAIL_TRANSPORT: cloudflare sends through the send_email binding {MAIL_BINDING}, which this Worker \
             does not have: add [[send_email]] name = \"{MAIL_BINDING}\" to its wrangler configuration"
        )));
    }
    Ok(cfg)
}

thread_local! {
    /// Whether this isolate has printed the `log` transport warning.
    static TRANSPORT_WARNED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Whether this isolate has checked a request's origin against it.
    static ORIGIN_CHECKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Once per isolate: says loudly, on `console.error`, that the `log` email
/// transport serves a deployment (`url`, its `seen_as`, is not a loopback
/// URL), so every emailed secret lands in the log. Called at the
/// configuration's first parse with `ISSUER`, and at the first auth API
/// request with the request's origin ([`check_request_origin`]).
fn warn_log_transport(cfg: &Config, seen_as: &str, url: &str) {
    if TRANSPORT_WARNED.with(std::cell::Cell::get) {
        return;
    }
    if let Some(warning) = cfg.email.log_transport_warning(seen_as, url) {
        TRANSPORT_WARNED.with(|w| w.set(true));
        let bar = "!".repeat(72);
        worker::console_error!("portcullis.warning {bar}\nportcullis.warning {warning}\nportcullis.warning {bar}");
    }
}

/// At the isolate's first auth API request, its origin against the `log`
/// transport: without `ISSUER` it is the deployment's issuer; with a
/// loopback `ISSUER`, a request arriving at another origin shows the Worker
/// is reachable from elsewhere all the same.
fn check_request_origin(cfg: &Config, origin: &str) {
    if ORIGIN_CHECKED.with(|c| c.replace(true)) {
        return;
    }
    let seen_as = if cfg.issuer.is_none() { "issuer" } else { "request origin" };
    warn_log_transport(cfg, seen_as, origin);
}

#[event(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The fetch entry point. Exported by hand rather than with
/// `#[event(fetch)]` so that the gateway answers synchronously whenever it
/// can: the origin fetch's Promise or a refusal, without spinning up a Rust
/// future. Returns a Response or a Promise of one (the runtime takes both).
#[allow(unsafe_code)] // wasm-bindgen's generated export shim
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn fetch(
    req: web_sys::Request,
    env: Env,
    ctx: worker::worker_sys::Context,
) -> Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue> {
    if let Some(answer) = proxy::fast_path(&req, &env, &ctx) {
        return answer;
    }
    Ok(wasm_bindgen_futures::future_to_promise(async move {
        router::handle(req, env, Context::new(ctx))
            .await
            .map(wasm_bindgen::JsValue::from)
            .map_err(|e| wasm_bindgen::JsValue::from_str(&e.to_string()))
    })
    .into())
}

/// The queue entry point. Exported by hand rather than with
/// `#[event(queue)]`, whose `MessageBatch` hides each message's `attempts`:
/// the consumer needs it to stop retrying a message whose seal does not open.
#[allow(unsafe_code)] // wasm-bindgen's generated export shim
#[wasm_bindgen::prelude::wasm_bindgen(js_name = queue)]
pub async fn consume(
    batch: worker::worker_sys::MessageBatch,
    env: Env,
    _ctx: worker::worker_sys::Context,
) -> Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue> {
    queue::consume(batch, env).await;
    Ok(wasm_bindgen::JsValue::UNDEFINED)
}

/// The every-minute trigger that only drains the outbox and purges the
/// audit log; the other (`*/15 * * * *`) also rotates keys and prunes.
const OUTBOX_CRON: &str = "* * * * *";

#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    worker::console_log!("portcullis.scheduled cron={}", event.cron());
    // Every run (each minute): events the queue refused at the time.
    queue::drain_outbox(&env).await;
    // Every run too: the audit log's cap must hold however fast entries come.
    queue::purge_audit(&env).await;
    if event.cron() == OUTBOX_CRON {
        return;
    }
    match upkeep(&env).await {
        Ok(Some(r)) => {
            worker::console_log!("portcullis.key_rotated old={} new={}", r.old_kid.as_deref().unwrap_or("-"), r.new_kid)
        }
        Ok(None) => {}
        Err(e) => worker::console_error!("portcullis.error scheduled: {e}"),
    }
    queue::prune(&env).await;
}

async fn upkeep(env: &Env) -> Result<Option<KeyRotation>, Error> {
    let cfg = config(env).map_err(|e| Error::Misconfigured(e.0))?;
    let store = d1::D1Store::new(env)?;
    let events = queue::QueueSink::new(env, Rc::clone(&cfg));
    let rotation = key_rotation::scheduled(&store, &events, &cfg, &mut platform::OsRandom, platform::now()).await;
    // A rotation whose event could not be published still happened.
    if !matches!(rotation, Ok(None)) {
        keyring::invalidate();
    }
    let rotation = rotation?;
    // Expired OAuth states are dead weight, not a danger: a failed purge waits for the next run.
    if let Err(e) = store.purge_oauth(platform::now()).await {
        worker::console_error!("portcullis.error purging OAuth states: {e}");
    }
    // So are expired `mfa_token`s (every use checks the expiry itself).
    if let Err(e) = store.purge_mfa_challenges(platform::now()).await {
        worker::console_error!("portcullis.error purging MFA challenges: {e}");
    }
    // And expired passkey ceremony challenges (every use checks the expiry itself).
    if let Err(e) = store.purge_passkey_challenges(platform::now()).await {
        worker::console_error!("portcullis.error purging passkey challenges: {e}");
    }
    // Revocations no token can outlive any more: likewise.
    let outlived = platform::now().minus_secs(crate::core::revocation::retention_secs(cfg.access_ttl_secs));
    match crate::core::ports::RevocationStore::purge_revocations(&store, outlived).await {
        Ok(n) => worker::console_log!("portcullis.prune revocations={n}"),
        Err(e) => worker::console_error!("portcullis.error purging revocations: {e}"),
    }
    Ok(rotation)
}
