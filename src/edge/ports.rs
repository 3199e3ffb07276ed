//! The platform adapters behind core's ports for one request or background
//! task ([`Ports`]: D1, the event queue, the key ring, the sign-in hook's
//! fetch), and the email work an admitted request finishes after its answer
//! ([`send_in_background`]). The auth API's routes and the hosted pages both
//! serve through them.

use std::rc::Rc;

use worker::{Context, Env};

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::flows::{Deps, Meta, Recipient};
use crate::edge::d1::D1Store;
use crate::edge::keyring::EdgeKeys;
use crate::edge::outbound::FetchHook;
use crate::edge::platform::{OsRandom, Timer};
use crate::edge::queue::QueueSink;

/// The platform adapters behind the flows' ports, for one request or task.
pub struct Ports<'e> {
    store: D1Store,
    events: QueueSink<'e>,
    /// The key ring (the JWKS is served from it).
    pub keys: EdgeKeys<'e>,
    hook: FetchHook,
}

impl<'e> Ports<'e> {
    /// The adapters of `env` under `cfg`.
    pub fn new(env: &'e Env, cfg: &Rc<Config>) -> Result<Self, Error> {
        Ok(Self {
            store: D1Store::new(env)?,
            events: QueueSink::new(env, Rc::clone(cfg)),
            keys: EdgeKeys::new(env, Rc::clone(cfg)),
            hook: FetchHook::new(env),
        })
    }

    /// The same, with a store whose reads after the first may come from a
    /// D1 read replica ([`D1Store::with_replica_reads`]).
    pub fn with_replica_reads(env: &'e Env, cfg: &Rc<Config>) -> Result<Self, Error> {
        Ok(Self { store: D1Store::with_replica_reads(env)?, ..Self::new(env, cfg)? })
    }

    /// The flows' dependencies over these adapters.
    pub fn deps<'a>(&'a self, cfg: &'a Config) -> Deps<'a, D1Store, QueueSink<'e>, EdgeKeys<'e>> {
        Deps {
            store: &self.store,
            events: &self.events,
            keys: &self.keys,
            config: cfg,
            hook: &self.hook,
            pause: &Timer,
        }
    }
}

/// How long an admitted email request's background work waits before it
/// starts (see [`send_in_background`]).
const BACKGROUND_START_MS: u64 = 10;

/// What an admitted email request sends, if its address can sign in.
#[derive(Debug, Clone, Copy)]
pub enum Mailing {
    /// A magic link.
    MagicLink,
    /// An email code.
    Otp,
    /// A password-reset link.
    PasswordReset,
}

/// Finishes an admitted magic-link, code or reset request after the answer
/// (`ctx.waitUntil`): looking the address up, issuing the token and
/// announcing it happen only for addresses with an account, so doing them
/// first would tell anyone timing the answer which addresses have one. A
/// failure here reaches the log, not the client (who was told "if this
/// address can sign in"); nothing is half-written: the KV hint comes before
/// the D1 row, and an event the queue refuses waits in the outbox.
pub fn send_in_background(ctx: &Context, env: &Env, cfg: &Rc<Config>, meta: Meta, what: Mailing, to: Recipient) {
    let env = env.clone();
    let cfg = Rc::clone(cfg);
    ctx.wait_until(async move {
        let result = async {
            // Let the answer leave first: work started at once would share the
            // isolate's thread with sending it, and show in its timing.
            worker::Delay::from(std::time::Duration::from_millis(BACKGROUND_START_MS)).await;
            let ports = Ports::new(&env, &cfg)?;
            let deps = ports.deps(&cfg);
            let rng = &mut OsRandom;
            match what {
                Mailing::MagicLink => deps.send_magic_link(&meta, rng, &to).await,
                Mailing::Otp => deps.send_otp(&meta, rng, &to).await,
                Mailing::PasswordReset => deps.send_password_reset(&meta, rng, &to).await,
            }
        }
        .await;
        if let Err(e) = result {
            worker::console_error!("portcullis.error sending an email token in the background: {e}");
        }
    });
}
