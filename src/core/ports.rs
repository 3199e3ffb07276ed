//! Ports: the small traits through which core reaches storage, the event
//! queue and the key ring. The edge implements them with D1, Queues and
//! WebCrypto; the native tests with in-memory fakes.
//!
//! Every method returns core's [`Error`]: adapters map their failures to
//! [`Error::Unavailable`], so a broken dependency fails closed.
#![allow(async_fn_in_trait)] // Send is not needed: a Worker isolate is single-threaded.

use crate::core::error::Error;
use crate::core::events::Envelope;
use crate::core::keys::{SigningKey, StoredKey};
use crate::core::session::{RotateRequest, Rotation, Session};
use crate::core::time::UnixTime;
use crate::core::users::User;

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

/// User accounts.
pub trait UserStore {
    /// Inserts `user` (and its roles). `Ok(false)` when the email is taken.
    async fn insert_user(&self, user: &User) -> Result<bool>;
    /// The user with this normalised email.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// The user with this id.
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    /// Replaces the password hash.
    async fn set_password_hash(&self, user_id: &str, hash: &str, now: UnixTime) -> Result<()>;
}

/// Sessions and their refresh tokens.
pub trait SessionStore {
    /// Stores a new session whose current refresh token hashes to `refresh_hash`.
    async fn create_session(&self, session: &Session, refresh_hash: &str) -> Result<()>;
    /// Atomically swaps the current refresh token for its successor; see [`Rotation`].
    async fn rotate_refresh(&self, req: &RotateRequest<'_>) -> Result<Rotation>;
    /// The session with this id.
    async fn session_by_id(&self, id: &str) -> Result<Option<Session>>;
    /// The session whose current refresh token hashes to `refresh_hash`.
    async fn session_by_refresh(&self, refresh_hash: &str) -> Result<Option<Session>>;
    /// Revokes one session; `Ok(false)` if it was already revoked or unknown.
    async fn revoke_session(&self, id: &str, now: UnixTime, reason: &str) -> Result<bool>;
    /// Revokes every live session of `user_id` but `except`; returns how many.
    async fn revoke_user_sessions(&self, user_id: &str, except: Option<&str>, now: UnixTime, reason: &str)
        -> Result<u64>;
    /// The user's live sessions, newest first.
    async fn list_sessions(&self, user_id: &str, now: UnixTime) -> Result<Vec<Session>>;
}

/// Signing keys at rest.
pub trait KeyStore {
    /// Every stored key.
    async fn load_keys(&self) -> Result<Vec<StoredKey>>;
    /// Inserts `key` as the active key unless one exists; `Ok(false)` if one did.
    async fn insert_first_key(&self, key: &StoredKey) -> Result<bool>;
}

/// The key ring as request handlers see it: signing and verification.
pub trait KeyRing {
    /// The active signing key, created on first use.
    async fn signing_key(&self) -> Result<SigningKey>;
    /// Verifies an Ed25519 signature by key `kid` over `signed`.
    /// `Ok(None)` when no published key has that `kid`.
    async fn verify(&self, kid: &str, signed: &[u8], signature: &[u8]) -> Result<Option<bool>>;
}

/// The event queue.
pub trait EventSink {
    /// Publishes the envelopes, in order.
    async fn publish(&self, events: &[Envelope]) -> Result<()>;
}
