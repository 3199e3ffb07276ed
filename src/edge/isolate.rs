//! What this isolate keeps between requests for the gateway: core's
//! [`Gateway`] — the signing keys, imported natively, the copy of the
//! revocation set, and the verified (or issued) tokens, each with its
//! identity headers as the JS array `glue.forward` sends, built once per
//! token — in one thread-local.

use std::cell::RefCell;

use crate::core::gateway::cache::DEFAULT_CAPACITY;
use crate::core::gateway::{Gateway, IdentityHeaders};
use crate::edge::crypto::Native;

/// The gateway's state in this isolate.
pub type State = Gateway<Native, js_sys::Array>;

thread_local! {
    static STATE: RefCell<State> = RefCell::new(Gateway::new(DEFAULT_CAPACITY));
}

/// Runs `f` on the isolate's gateway state. Not re-entrant: `f` must not
/// call back into here (nothing it reaches does: the runtime calls it makes
/// are synchronous and call no Rust).
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// The identity headers as `glue.forward` takes them: `[user id, email,
/// roles, session id, assertion]`, then the `X-Auth-Claims` value if any.
impl IdentityHeaders for js_sys::Array {
    fn new(values: [&str; 5], claims: Option<&str>) -> Self {
        let [sub, email, roles, sid, assertion] = values;
        let identity = js_sys::Array::of5(&sub.into(), &email.into(), &roles.into(), &sid.into(), &assertion.into());
        if let Some(claims) = claims {
            identity.push(&claims.into());
        }
        identity
    }
}
