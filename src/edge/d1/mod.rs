//! The D1 adapter: every SQL statement of the project, behind the core ports.
//!
//! Statements use `?N` placeholders only. Row structs mirror the tables and
//! are converted to domain types here. Writes that must be atomic go through
//! `db.batch`, which D1 runs as one transaction; single-use consumption is
//! decided by a conditional statement's changed-row count.
//!
//! The store also holds the `TOKENS` KV namespace: link tokens are hinted
//! there (see [`crate::edge::kv`]) so unknown or expired ones are refused
//! before any D1 write; the decision itself is always D1's.
//!
//! # Layout
//!
//! This file holds [`D1Store`], its statement helpers, the value and row
//! conversions and the SQL fragments more than one port uses. Each port has
//! a file of its own, with its statements and row structs:
//! [`users`] ([`UserStore`](crate::core::ports::UserStore)),
//! [`sessions`] ([`SessionStore`](crate::core::ports::SessionStore)),
//! [`accounts`] ([`AccountStore`](crate::core::ports::AccountStore)),
//! [`email_tokens`] ([`EmailTokenStore`](crate::core::ports::EmailTokenStore)),
//! [`keys`] ([`KeyStore`](crate::core::ports::KeyStore)),
//! [`mfa`] ([`MfaStore`](crate::core::ports::MfaStore)),
//! [`passkeys`] ([`PasskeyStore`](crate::core::ports::PasskeyStore)),
//! [`rate_limits`] ([`RateLimitStore`](crate::core::ports::RateLimitStore)),
//! [`revocations`] ([`RevocationStore`](crate::core::ports::RevocationStore)),
//! [`oauth`] ([`OAuthStore`](crate::core::oauth::OAuthStore)),
//! [`deliveries`] ([`DeliveryLedger`](crate::core::ports::DeliveryLedger)),
//! [`audit`] ([`AuditLog`](crate::core::ports::AuditLog))
//! and [`outbox`] (events the queue did not take).

mod accounts;
mod audit;
mod deliveries;
mod email_tokens;
mod keys;
mod mfa;
mod oauth;
mod outbox;
mod passkeys;
mod rate_limits;
mod revocations;
mod sessions;
mod users;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1DatabaseSession, D1PreparedStatement, D1SessionConstraint, Env};

use crate::core::ids::UserId;
use crate::core::ports::Result;
use crate::core::time::UnixTime;
use crate::core::users::{Role, User};
use crate::edge::error::{Dependency::D1, EdgeResult};
use crate::edge::kv::TokenHints;

const USER_COLUMNS: &str = "u.id, u.email, u.name, u.password_hash, u.email_verified, u.avatar_url, u.phone, \
     u.banned, u.created_at, u.auth_epoch, u.locale, \
     (SELECT group_concat(r.role, ',') FROM user_roles r WHERE r.user_id = u.id) AS roles";

/// SQL: the session `?{sid}` of user `?{uid}` is live at `?{now}` under
/// `SESSION_MAX_AGE` `?{max_age}` — what [`crate::core::session::Session::is_live`]
/// says, decided inside the write it conditions
/// ([`LiveSession`](crate::core::session::LiveSession)).
fn session_is_live(sid: u8, uid: u8, now: u8, max_age: u8) -> String {
    format!(
        "EXISTS (SELECT 1 FROM sessions WHERE id = ?{sid} AND user_id = ?{uid} AND revoked_at IS NULL \
         AND expires_at > ?{now} AND created_at + ?{max_age} > ?{now})"
    )
}

/// A caller's session as the binds `?1` (user), `?2` (session), `?3` (now)
/// and `?4` (`SESSION_MAX_AGE`) of [`session_is_live`]`(2, 1, 3, 4)`.
fn caller_args(c: &crate::core::session::LiveSession<'_>) -> [JsValue; 4] {
    [text(c.user_id.as_str()), text(c.session_id.as_str()), time(c.now), max_age(c.max_age_secs)]
}

/// `SESSION_MAX_AGE` as bound.
fn max_age(secs: u64) -> JsValue {
    int(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// D1 (with the `TOKENS` KV hints) behind every storage port (see the
/// module's layout), and the event outbox.
pub struct D1Store {
    db: Db,
    hints: TokenHints,
}

/// Where the store's statements go: the primary database, or a D1 session
/// (the Sessions API) whose reads after the first may be served by a read
/// replica at least as recent as that first read. Writes always reach the
/// primary.
enum Db {
    Primary(D1Database),
    Session(D1DatabaseSession),
}

impl Db {
    fn prepare(&self, sql: &str) -> D1PreparedStatement {
        match self {
            Self::Primary(db) => db.prepare(sql),
            Self::Session(s) => s.prepare(sql),
        }
    }

    async fn batch(&self, stmts: Vec<D1PreparedStatement>) -> worker::Result<Vec<worker::D1Result>> {
        match self {
            Self::Primary(db) => db.batch(stmts).await,
            Self::Session(s) => s.batch(stmts).await,
        }
    }
}

fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn opt_text(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

fn int(n: i64) -> JsValue {
    JsValue::from_f64(n as f64)
}

fn time(t: UnixTime) -> JsValue {
    int(t.0)
}

fn int_u(n: u64) -> JsValue {
    JsValue::from_f64(n as f64)
}

#[derive(Deserialize)]
struct UserRow {
    id: UserId,
    email: String,
    name: Option<String>,
    password_hash: Option<String>,
    email_verified: i64,
    avatar_url: Option<String>,
    phone: Option<String>,
    banned: i64,
    created_at: i64,
    auth_epoch: i64,
    locale: Option<String>,
    roles: Option<String>,
}

/// An epoch as stored (never negative: it starts at 0 and only grows).
fn epoch(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        let mut roles: Vec<Role> =
            r.roles.unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(Role::stored).collect();
        roles.sort_unstable();
        User {
            id: r.id,
            email: r.email,
            name: r.name,
            password_hash: r.password_hash,
            email_verified: r.email_verified != 0,
            avatar_url: r.avatar_url,
            phone: r.phone,
            banned: r.banned != 0,
            roles,
            created_at: UnixTime(r.created_at),
            auth_epoch: epoch(r.auth_epoch),
            locale: r.locale,
        }
    }
}

#[derive(Deserialize)]
struct CountRow {
    total: i64,
}

/// A row of `RETURNING id`.
#[derive(Deserialize)]
struct IdRow {
    id: String,
}

impl D1Store {
    /// The `DB` binding, with the `TOKENS` KV namespace.
    pub fn new(env: &Env) -> Result<Self> {
        Ok(Self { db: Db::Primary(env.d1("DB").or_unavailable(D1)?), hints: TokenHints::new(env.kv("TOKENS").ok()) })
    }

    /// The same, for a read-only request that may read from a replica: a D1
    /// session whose first statement goes to the primary (the caller's own
    /// session and roles are read as of now) and whose later reads may be
    /// served by a replica at least that recent (docs/scaling.md).
    pub fn with_replica_reads(env: &Env) -> Result<Self> {
        let db = env.d1("DB").or_unavailable(D1)?;
        let session = db.with_session_constraint(D1SessionConstraint::FirstPrimary).or_unavailable(D1)?;
        Ok(Self { db: Db::Session(session), hints: TokenHints::new(env.kv("TOKENS").ok()) })
    }

    fn stmt(&self, sql: &str, args: &[JsValue]) -> Result<D1PreparedStatement> {
        self.db.prepare(sql).bind(args).or_unavailable(D1)
    }

    async fn first<T: DeserializeOwned>(&self, sql: &str, args: &[JsValue]) -> Result<Option<T>> {
        self.stmt(sql, args)?.first::<T>(None).await.or_unavailable(D1)
    }

    async fn all<T: DeserializeOwned>(&self, sql: &str, args: &[JsValue]) -> Result<Vec<T>> {
        let res = self.stmt(sql, args)?.all().await.or_unavailable(D1)?;
        res.results::<T>().or_unavailable(D1)
    }

    /// Runs a statement with `RETURNING`; returns how many rows it changed
    /// itself ([`returned`]).
    async fn run_returning(&self, sql: &str, args: &[JsValue]) -> Result<usize> {
        let res = self.stmt(sql, args)?.all().await.or_unavailable(D1)?;
        returned(&res)
    }

    /// Runs a statement; returns the number of rows it changed.
    async fn run(&self, sql: &str, args: &[JsValue]) -> Result<usize> {
        let res = self.stmt(sql, args)?.run().await.or_unavailable(D1)?;
        Ok(res.meta().or_unavailable(D1)?.and_then(|m| m.changes).unwrap_or(0))
    }

    async fn batch(&self, stmts: Vec<D1PreparedStatement>) -> Result<Vec<worker::D1Result>> {
        self.db.batch(stmts).await.or_unavailable(D1)
    }
}

fn changes(res: &worker::D1Result) -> Result<usize> {
    Ok(res.meta().or_unavailable(D1)?.and_then(|m| m.changes).unwrap_or(0))
}

/// A `RETURNING` row, whose content does not matter: only how many came back.
#[derive(Deserialize)]
struct Affected {}

/// How many rows a statement with `RETURNING` changed itself. D1's
/// [`changes`] also counts the rows its triggers wrote (the revocation log,
/// `migrations/0008_revocations.sql`), so a write to `sessions` or
/// `user_roles` is counted by the rows it returns instead.
fn returned(res: &worker::D1Result) -> Result<usize> {
    Ok(res.results::<Affected>().or_unavailable(D1)?.len())
}
