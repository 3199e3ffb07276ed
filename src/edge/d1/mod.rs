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

use serde::de::DeserializeOwned;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env};

use crate::core::delivery::{Claim, DeadLetter, TargetState};
use crate::core::email_token::{EmailToken, TokenKind};
use crate::core::error::Error;
use crate::core::keys::{KeyStatus, StoredKey};
use crate::core::oauth::{LinkedIdentity, OAuthState, OAuthStore, StateTake, Unlink};
use crate::core::ports::{
    AccountStore, DeliveryLedger, EmailTokenStore, KeyStore, RateLimitStore, Result, SessionStore, UserStore,
};
use crate::core::rate_limit::{Count, Hit};
use crate::core::session::{LiveSession, RotateRequest, Rotation, Session, SignInBasis};
use crate::core::takeover::{AddressProof, Proven, TAKEOVER_REVOKE_REASON};
use crate::core::time::UnixTime;
use crate::core::token::ExtraClaims;
use crate::core::users::{ProfileUpdate, User, UserPage};
use crate::edge::kv::{is_hinted, TokenHints};

const USER_COLUMNS: &str = "u.id, u.email, u.name, u.password_hash, u.email_verified, u.avatar_url, u.phone, \
     u.banned, u.created_at, u.auth_epoch, \
     (SELECT group_concat(r.role, ',') FROM user_roles r WHERE r.user_id = u.id) AS roles";
const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, ip_address, user_agent, extra_claims";
const EMAIL_TOKEN_COLUMNS: &str = "hash, kind, email, user_id, user_epoch, code_hash, created_at, expires_at, attempts";
/// An emailed token is usable only while the account it was issued for
/// still has the epoch it was issued under (a deleted account has none). A
/// token issued while its address had no account (no `user_id`, epoch 0) is
/// held to the account that has the address now, if any: usable until that
/// account's epoch first moves.
const TOKEN_EPOCH_STANDS: &str = "(user_epoch = CASE WHEN user_id IS NULL \
     THEN COALESCE((SELECT u.auth_epoch FROM users u WHERE u.email = email_tokens.email), 0) \
     ELSE (SELECT u.auth_epoch FROM users u WHERE u.id = email_tokens.user_id) END)";

/// SQL: the session `?{sid}` of user `?{uid}` is live at `?{now}` under
/// `SESSION_MAX_AGE` `?{max_age}` — what [`crate::core::session::Session::is_live`]
/// says, decided inside the write it conditions ([`LiveSession`]).
fn session_is_live(sid: u8, uid: u8, now: u8, max_age: u8) -> String {
    format!(
        "EXISTS (SELECT 1 FROM sessions WHERE id = ?{sid} AND user_id = ?{uid} AND revoked_at IS NULL \
         AND expires_at > ?{now} AND created_at + ?{max_age} > ?{now})"
    )
}

/// `SESSION_MAX_AGE` as bound.
fn max_age(secs: u64) -> JsValue {
    int(i64::try_from(secs).unwrap_or(i64::MAX))
}
/// Users matching an optional `LIKE` pattern `?1` on email or name.
const USER_FILTER: &str = "(?1 IS NULL OR u.email LIKE ?1 ESCAPE '\\' OR u.name LIKE ?1 ESCAPE '\\')";

/// D1 (with the `TOKENS` KV hints) behind [`UserStore`], [`SessionStore`],
/// [`AccountStore`], [`EmailTokenStore`], [`KeyStore`], [`RateLimitStore`]
/// and [`DeliveryLedger`], and the event outbox.
pub struct D1Store {
    db: D1Database,
    hints: TokenHints,
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::unavailable("d1", e)
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
    id: String,
    email: String,
    name: Option<String>,
    password_hash: Option<String>,
    email_verified: i64,
    avatar_url: Option<String>,
    phone: Option<String>,
    banned: i64,
    created_at: i64,
    auth_epoch: i64,
    roles: Option<String>,
}

/// An epoch as stored (never negative: it starts at 0 and only grows).
fn epoch(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        let mut roles: Vec<String> =
            r.roles.unwrap_or_default().split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
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
        }
    }
}

#[derive(Deserialize)]
struct SessionRow {
    id: String,
    user_id: String,
    created_at: i64,
    last_used_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    extra_claims: Option<String>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.id,
            user_id: r.user_id,
            created_at: UnixTime(r.created_at),
            last_used_at: UnixTime(r.last_used_at),
            expires_at: UnixTime(r.expires_at),
            revoked_at: r.revoked_at.map(UnixTime),
            ip_address: r.ip_address,
            user_agent: r.user_agent,
            // Written by us from a JSON object; anything else reads as none.
            extra_claims: r
                .extra_claims
                .and_then(|text| serde_json::from_str::<ExtraClaims>(&text).ok())
                .unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct ReuseRow {
    id: String,
    user_id: String,
    is_current: i64,
}

#[derive(Deserialize)]
struct KeyRow {
    kid: String,
    alg: String,
    public_key: String,
    private_enc: String,
    status: String,
    created_at: i64,
    retired_at: Option<i64>,
    publish_until: Option<i64>,
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = Error;
    fn try_from(r: KeyRow) -> std::result::Result<Self, Error> {
        let status = match r.status.as_str() {
            "active" => KeyStatus::Active,
            "retired" => KeyStatus::Retired,
            other => return Err(Error::Internal(format!("signing key {}: unknown status {other}", r.kid))),
        };
        Ok(StoredKey {
            kid: r.kid,
            alg: r.alg,
            public_key: r.public_key,
            private_enc: r.private_enc,
            status,
            created_at: UnixTime(r.created_at),
            retired_at: r.retired_at.map(UnixTime),
            publish_until: r.publish_until.map(UnixTime),
        })
    }
}

#[derive(Deserialize)]
struct EmailTokenRow {
    hash: String,
    kind: String,
    email: String,
    user_id: Option<String>,
    user_epoch: i64,
    code_hash: Option<String>,
    created_at: i64,
    expires_at: i64,
    attempts: i64,
}

impl TryFrom<EmailTokenRow> for EmailToken {
    type Error = Error;
    fn try_from(r: EmailTokenRow) -> std::result::Result<Self, Error> {
        let kind = TokenKind::parse(&r.kind)
            .ok_or_else(|| Error::Internal(format!("email token: unknown kind {}", r.kind)))?;
        Ok(EmailToken {
            hash: r.hash,
            kind,
            email: r.email,
            user_id: r.user_id,
            user_epoch: epoch(r.user_epoch),
            code_hash: r.code_hash,
            created_at: UnixTime(r.created_at),
            expires_at: UnixTime(r.expires_at),
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
        })
    }
}

/// The account is at the proven address and unverified: a takeover.
const UNVERIFIED: &str = "EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2 AND email_verified = 0)";
/// The proof's identity (`?3`, `?4`) is linked to the account.
const LINKED: &str = "EXISTS (SELECT 1 FROM oauth_accounts WHERE provider = ?3 AND subject = ?4 AND user_id = ?1)";

fn revoke_reason(p: &AddressProof<'_>) -> &'static str {
    if p.new_password.is_some() {
        "password_reset"
    } else {
        TAKEOVER_REVOKE_REASON
    }
}

#[derive(Deserialize)]
struct ProofBeforeRow {
    email_verified: i64,
    had_password: i64,
}

#[derive(Deserialize)]
struct ProofAfterRow {
    auth_epoch: i64,
    linked: i64,
}

#[derive(Deserialize)]
struct ProviderRow {
    provider: String,
}

#[derive(Deserialize)]
struct CountRow {
    total: i64,
}

/// `%text%` for `LIKE ... ESCAPE '\'`, the wildcards in `text` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

impl D1Store {
    /// The `DB` binding, with the `TOKENS` KV namespace.
    pub fn new(env: &Env) -> Result<Self> {
        Ok(Self { db: env.d1("DB").map_err(unavailable)?, hints: TokenHints::new(env.kv("TOKENS").ok()) })
    }

    fn first_token(rows: Vec<EmailTokenRow>) -> Result<Option<EmailToken>> {
        rows.into_iter().next().map(EmailToken::try_from).transpose()
    }

    fn stmt(&self, sql: &str, args: &[JsValue]) -> Result<D1PreparedStatement> {
        self.db.prepare(sql).bind(args).map_err(unavailable)
    }

    async fn first<T: DeserializeOwned>(&self, sql: &str, args: &[JsValue]) -> Result<Option<T>> {
        self.stmt(sql, args)?.first::<T>(None).await.map_err(unavailable)
    }

    async fn all<T: DeserializeOwned>(&self, sql: &str, args: &[JsValue]) -> Result<Vec<T>> {
        let res = self.stmt(sql, args)?.all().await.map_err(unavailable)?;
        res.results::<T>().map_err(unavailable)
    }

    /// Runs a statement; returns the number of rows it changed.
    async fn run(&self, sql: &str, args: &[JsValue]) -> Result<usize> {
        let res = self.stmt(sql, args)?.run().await.map_err(unavailable)?;
        Ok(res.meta().map_err(unavailable)?.and_then(|m| m.changes).unwrap_or(0))
    }

    async fn batch(&self, stmts: Vec<D1PreparedStatement>) -> Result<Vec<worker::D1Result>> {
        self.db.batch(stmts).await.map_err(unavailable)
    }
}

fn changes(res: &worker::D1Result) -> Result<usize> {
    Ok(res.meta().map_err(unavailable)?.and_then(|m| m.changes).unwrap_or(0))
}

impl UserStore for D1Store {
    async fn insert_user(&self, u: &User) -> Result<bool> {
        let mut stmts = vec![self.stmt(
            "INSERT INTO users (id, email, name, password_hash, email_verified, avatar_url, phone, banned, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) ON CONFLICT(email) DO NOTHING",
            &[
                text(&u.id),
                text(&u.email),
                opt_text(u.name.as_deref()),
                opt_text(u.password_hash.as_deref()),
                int(i64::from(u.email_verified)),
                opt_text(u.avatar_url.as_deref()),
                opt_text(u.phone.as_deref()),
                int(i64::from(u.banned)),
                time(u.created_at),
            ],
        )?];
        for role in &u.roles {
            stmts.push(self.stmt(
                "INSERT INTO user_roles (user_id, role, created_at) SELECT ?1, ?2, ?3 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)",
                &[text(&u.id), text(role), time(u.created_at)],
            )?);
        }
        let results = self.batch(stmts).await?;
        match results.first() {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(unavailable("empty batch result")),
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?1");
        Ok(self.first::<UserRow>(&sql, &[text(email)]).await?.map(User::from))
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
        Ok(self.first::<UserRow>(&sql, &[text(id)]).await?.map(User::from))
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str, user_epoch: u64, now: UnixTime) -> Result<()> {
        self.run(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1 AND auth_epoch = ?4",
            &[text(user_id), text(hash), time(now), int_u(user_epoch)],
        )
        .await
        .map(|_| ())
    }
}

impl SessionStore for D1Store {
    async fn create_session(&self, s: &Session, refresh_hash: &str, basis: &SignInBasis<'_>) -> Result<bool> {
        // Only while the account is as the sign-in relied on (its epoch, the
        // identity it came through); the token row only if the session went in.
        let (provider, subject) = basis.identity.unzip();
        let insert_session = self.stmt(
            "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at, ip_address, user_agent, extra_claims) \
             SELECT ?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8 \
             WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND auth_epoch = ?9 AND banned = 0) \
             AND (?10 IS NULL OR EXISTS (SELECT 1 FROM oauth_accounts WHERE provider = ?10 AND subject = ?11 AND user_id = ?2))",
            &[
                text(&s.id),
                text(&s.user_id),
                text(refresh_hash),
                time(s.created_at),
                time(s.expires_at),
                opt_text(s.ip_address.as_deref()),
                opt_text(s.user_agent.as_deref()),
                if s.extra_claims.is_empty() {
                    JsValue::NULL
                } else {
                    text(&serde_json::Value::Object(s.extra_claims.clone()).to_string())
                },
                int_u(basis.user_epoch),
                opt_text(provider),
                opt_text(subject),
            ],
        )?;
        let insert_token = self.stmt(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at) SELECT ?1, ?2, ?3 \
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?2)",
            &[text(refresh_hash), text(&s.id), time(s.created_at)],
        )?;
        let results = self.batch(vec![insert_session, insert_token]).await?;
        match results.first() {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(unavailable("empty batch result")),
        }
    }

    async fn rotate_refresh(&self, r: &RotateRequest<'_>) -> Result<Rotation> {
        let swap = self.stmt(
            &format!(
                "UPDATE sessions SET refresh_hash = ?2, last_used_at = ?3, expires_at = MIN(?4, created_at + ?7), \
                 ip_address = ?5, user_agent = ?6 \
                 WHERE refresh_hash = ?1 AND revoked_at IS NULL AND expires_at > ?3 AND created_at + ?7 > ?3 \
                 RETURNING {SESSION_COLUMNS}"
            ),
            &[
                text(r.old_hash),
                text(r.new_hash),
                time(r.now),
                time(r.expires_at),
                opt_text(r.ip_address),
                opt_text(r.user_agent),
                int(i64::try_from(r.max_age_secs).unwrap_or(i64::MAX)),
            ],
        )?;
        let record = self.stmt(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at) \
             SELECT ?1, id, ?2 FROM sessions WHERE refresh_hash = ?1",
            &[text(r.new_hash), time(r.now)],
        )?;
        let results = self.batch(vec![swap, record]).await?;
        let rotated = match results.first() {
            Some(res) => res.results::<SessionRow>().map_err(unavailable)?,
            None => return Err(unavailable("empty batch result")),
        };
        if let Some(row) = rotated.into_iter().next() {
            return Ok(Rotation::Rotated(row.into()));
        }
        // Not current: unknown, dead, or an older token of the family (reuse).
        let owner = self
            .first::<ReuseRow>(
                "SELECT s.id, s.user_id, (s.refresh_hash = ?1) AS is_current \
                 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.hash = ?1",
                &[text(r.old_hash)],
            )
            .await?;
        match owner {
            None => Ok(Rotation::Unknown),
            Some(o) if o.is_current != 0 => Ok(Rotation::Dead),
            Some(o) => {
                if self.revoke_session(&o.id, r.now, "refresh_token_reuse").await? {
                    Ok(Rotation::Reused { session_id: o.id, user_id: o.user_id })
                } else {
                    Ok(Rotation::Dead)
                }
            }
        }
    }

    async fn session_by_id(&self, id: &str) -> Result<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
        Ok(self.first::<SessionRow>(&sql, &[text(id)]).await?.map(Session::from))
    }

    async fn session_by_refresh(&self, refresh_hash: &str) -> Result<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE refresh_hash = ?1");
        Ok(self.first::<SessionRow>(&sql, &[text(refresh_hash)]).await?.map(Session::from))
    }

    async fn revoke_session(&self, id: &str, now: UnixTime, reason: &str) -> Result<bool> {
        let n = self
            .run(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 WHERE id = ?1 AND revoked_at IS NULL",
                &[text(id), time(now), text(reason)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: UnixTime,
        reason: &str,
    ) -> Result<u64> {
        let n = self
            .run(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND (?4 IS NULL OR id <> ?4)",
                &[text(user_id), time(now), text(reason), opt_text(except)],
            )
            .await?;
        Ok(n as u64)
    }

    async fn revoke_other_sessions(&self, caller: &LiveSession<'_>, reason: &str) -> Result<Option<u64>> {
        // The caller's own row is never updated here, so whether it is live
        // reads the same for every row the statement looks at; the second
        // statement, in the same transaction, tells a caller with nothing
        // else to revoke from one whose session ended.
        let args = [
            text(caller.user_id),
            text(caller.session_id),
            time(caller.now),
            max_age(caller.max_age_secs),
            text(reason),
        ];
        let revoke = self.stmt(
            &format!(
                "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?5 \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND id <> ?2 AND {}",
                session_is_live(2, 1, 3, 4)
            ),
            &args,
        )?;
        let live = self.stmt(&format!("SELECT {} AS total", session_is_live(2, 1, 3, 4)), &args[..4])?;
        let results = self.batch(vec![revoke, live]).await?;
        let (Some(revoked), Some(live)) = (results.first(), results.get(1)) else {
            return Err(unavailable("short batch result"));
        };
        let live = live.results::<CountRow>().map_err(unavailable)?.first().is_some_and(|r| r.total != 0);
        Ok(live.then_some(changes(revoked)? as u64))
    }

    async fn list_sessions(&self, user_id: &str, now: UnixTime) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
             ORDER BY created_at DESC, id LIMIT 100"
        );
        Ok(self.all::<SessionRow>(&sql, &[text(user_id), time(now)]).await?.into_iter().map(Session::from).collect())
    }
}

impl KeyStore for D1Store {
    async fn load_keys(&self) -> Result<Vec<StoredKey>> {
        self.all::<KeyRow>(
            "SELECT kid, alg, public_key, private_enc, status, created_at, retired_at, publish_until \
             FROM signing_keys ORDER BY created_at DESC",
            &[],
        )
        .await?
        .into_iter()
        .map(StoredKey::try_from)
        .collect()
    }

    async fn insert_first_key(&self, k: &StoredKey) -> Result<bool> {
        let n = self
            .run(
                "INSERT INTO signing_keys (kid, alg, public_key, private_enc, status, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'active', ?5) ON CONFLICT DO NOTHING",
                &[text(&k.kid), text(&k.alg), text(&k.public_key), text(&k.private_enc), time(k.created_at)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn rotate_key(&self, old_kid: &str, k: &StoredKey, now: UnixTime, publish_until: UnixTime) -> Result<bool> {
        // One transaction: the old key is retired only if it is still the
        // active one, and the new key goes in only if no key is active after
        // that — so a rotation that lost a race writes nothing, and the
        // one-active-key index is never even tested.
        let retire = self.stmt(
            "UPDATE signing_keys SET status = 'retired', retired_at = ?2, publish_until = ?3 \
             WHERE kid = ?1 AND status = 'active'",
            &[text(old_kid), time(now), time(publish_until)],
        )?;
        let insert = self.stmt(
            "INSERT INTO signing_keys (kid, alg, public_key, private_enc, status, created_at) \
             SELECT ?1, ?2, ?3, ?4, 'active', ?5 \
             WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE status = 'active')",
            &[text(&k.kid), text(&k.alg), text(&k.public_key), text(&k.private_enc), time(k.created_at)],
        )?;
        let prune =
            self.stmt("DELETE FROM signing_keys WHERE status = 'retired' AND publish_until <= ?1", &[time(now)])?;
        let results = self.batch(vec![retire, insert, prune]).await?;
        match results.get(1) {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(unavailable("short batch result")),
        }
    }

    async fn withdraw_key(&self, kid: &str, now: UnixTime) -> Result<bool> {
        let n = self
            .run(
                "DELETE FROM signing_keys WHERE kid = ?1 AND status = 'retired' AND publish_until > ?2",
                &[text(kid), time(now)],
            )
            .await?;
        Ok(n == 1)
    }
}

impl AccountStore for D1Store {
    async fn set_email_verified(&self, holder: &LiveSession<'_>, email: &str) -> Result<Option<bool>> {
        let args = [
            text(holder.user_id),
            text(holder.session_id),
            time(holder.now),
            max_age(holder.max_age_secs),
            text(email),
        ];
        let live = session_is_live(2, 1, 3, 4);
        let set = self.stmt(
            &format!(
                "UPDATE users SET email_verified = 1, updated_at = ?3 \
                 WHERE id = ?1 AND email = ?5 AND email_verified = 0 AND {live}"
            ),
            &args,
        )?;
        // In the same transaction: was it the session that stopped it?
        let check = self.stmt(&format!("SELECT {live} AS total"), &args[..4])?;
        let results = self.batch(vec![set, check]).await?;
        let (Some(set), Some(check)) = (results.first(), results.get(1)) else {
            return Err(unavailable("short batch result"));
        };
        let live = check.results::<CountRow>().map_err(unavailable)?.first().is_some_and(|r| r.total != 0);
        Ok(live.then_some(changes(set)? == 1))
    }

    async fn prove_address(&self, p: &AddressProof<'_>) -> Result<Option<Proven>> {
        // One transaction, in this order, every statement conditioned on the
        // state the earlier ones leave: the takeover's deletions and
        // revocations are decided on the users row, which only the last
        // write changes, so all of them see the account as it was. With an
        // identity to link, the takeover happens only if it ends up linked:
        // the earlier holder's identities go only if the link will then
        // succeed (the identity is no other account's, and the account keeps
        // no other identity of that provider), the rest only if it did.
        let (who, now, new_password) = ([text(p.user_id), text(p.email)], time(p.now), opt_text(p.new_password));
        let before = self.stmt(
            "SELECT email_verified, password_hash IS NOT NULL AS had_password FROM users WHERE id = ?1 AND email = ?2",
            &who,
        )?;
        let mut stmts = vec![before];
        match p.link {
            None => {
                stmts.push(self.stmt(
                    &format!(
                        "DELETE FROM oauth_accounts WHERE user_id = ?1 AND NOT (email_verified = 1 AND email IS ?2) \
                         AND {UNVERIFIED} RETURNING provider"
                    ),
                    &who,
                )?);
                stmts.push(self.stmt(
                    &format!(
                        "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?5 WHERE user_id = ?1 AND revoked_at IS NULL \
                         AND ({UNVERIFIED} OR (?4 IS NOT NULL AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2)))"
                    ),
                    &[who[0].clone(), who[1].clone(), now.clone(), new_password.clone(), text(revoke_reason(p))],
                )?);
                stmts.push(self.stmt(
                    "UPDATE users SET password_hash = CASE WHEN ?4 IS NOT NULL THEN ?4 WHEN email_verified = 0 THEN NULL \
                     ELSE password_hash END, email_verified = 1, auth_epoch = auth_epoch + 1, updated_at = ?3 \
                     WHERE id = ?1 AND email = ?2 AND (email_verified = 0 OR ?4 IS NOT NULL)",
                    &[who[0].clone(), who[1].clone(), now.clone(), new_password],
                )?);
                stmts.push(self.stmt("SELECT auth_epoch, 0 AS linked FROM users WHERE id = ?1 AND email = ?2", &who)?);
            }
            Some(i) => {
                let ident = [who[0].clone(), who[1].clone(), text(&i.provider), text(&i.subject)];
                stmts.push(self.stmt(
                    &format!(
                        "DELETE FROM oauth_accounts WHERE user_id = ?1 AND NOT (email_verified = 1 AND email IS ?2) \
                         AND {UNVERIFIED} AND NOT EXISTS (SELECT 1 FROM oauth_accounts o \
                           WHERE (o.provider = ?3 AND o.subject = ?4 AND o.user_id <> ?1) \
                              OR (o.user_id = ?1 AND o.provider = ?3 AND o.subject <> ?4 \
                                  AND o.email_verified = 1 AND o.email IS ?2)) \
                         RETURNING provider"
                    ),
                    &ident,
                )?);
                stmts.push(self.stmt(
                    "INSERT OR IGNORE INTO oauth_accounts (provider, subject, user_id, email, email_verified, linked_at) \
                     SELECT ?3, ?4, ?1, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2)",
                    &[
                        who[0].clone(),
                        who[1].clone(),
                        text(&i.provider),
                        text(&i.subject),
                        opt_text(i.email.as_deref()),
                        int(i64::from(i.email_verified)),
                        time(i.linked_at),
                    ],
                )?);
                stmts.push(self.stmt(
                    &format!(
                        "UPDATE sessions SET revoked_at = ?5, revoke_reason = ?6 WHERE user_id = ?1 AND revoked_at IS NULL \
                         AND {UNVERIFIED} AND {LINKED}"
                    ),
                    &[ident[0].clone(), ident[1].clone(), ident[2].clone(), ident[3].clone(), now.clone(), text(revoke_reason(p))],
                )?);
                stmts.push(self.stmt(
                    &format!(
                        "UPDATE users SET password_hash = NULL, email_verified = 1, auth_epoch = auth_epoch + 1, updated_at = ?5 \
                         WHERE id = ?1 AND email = ?2 AND email_verified = 0 AND {LINKED}"
                    ),
                    &[ident[0].clone(), ident[1].clone(), ident[2].clone(), ident[3].clone(), now],
                )?);
                stmts.push(self.stmt(
                    &format!("SELECT auth_epoch, {LINKED} AS linked FROM users WHERE id = ?1 AND email = ?2"),
                    &ident,
                )?);
            }
        }
        let results = self.batch(stmts).await?;
        let [before, dropped, .., update, after] = results.as_slice() else {
            return Err(unavailable("short batch result"));
        };
        let Some(before) = before.results::<ProofBeforeRow>().map_err(unavailable)?.into_iter().next() else {
            return Ok(None);
        };
        let Some(after) = after.results::<ProofAfterRow>().map_err(unavailable)?.into_iter().next() else {
            return Ok(None);
        };
        // The revocation is the statement before the users update.
        let revoked = match results.len().checked_sub(3).and_then(|i| results.get(i)) {
            Some(r) => changes(r)? as u64,
            None => return Err(unavailable("short batch result")),
        };
        let took_over = before.email_verified == 0 && changes(update)? == 1;
        Ok(Some(Proven {
            took_over,
            password_cleared: took_over && before.had_password != 0 && p.new_password.is_none(),
            revoked_sessions: revoked,
            dropped_providers: dropped
                .results::<ProviderRow>()
                .map_err(unavailable)?
                .into_iter()
                .map(|r| r.provider)
                .collect(),
            linked: after.linked != 0,
            auth_epoch: epoch(after.auth_epoch),
        }))
    }

    async fn set_password(
        &self,
        user_id: &str,
        hash: &str,
        keep: Option<&str>,
        user_epoch: u64,
        now: UnixTime,
        reason: &str,
    ) -> Result<Option<u64>> {
        // Revoke first, on the epoch the update then checks and moves: both
        // statements see the same users row, so they happen together or not.
        let revoke = self.stmt(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
             WHERE user_id = ?1 AND revoked_at IS NULL AND (?4 IS NULL OR id <> ?4) \
             AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND auth_epoch = ?5)",
            &[text(user_id), time(now), text(reason), opt_text(keep), int_u(user_epoch)],
        )?;
        let set = self.stmt(
            "UPDATE users SET password_hash = ?2, updated_at = ?3, auth_epoch = auth_epoch + 1 \
             WHERE id = ?1 AND auth_epoch = ?4",
            &[text(user_id), text(hash), time(now), int_u(user_epoch)],
        )?;
        let results = self.batch(vec![revoke, set]).await?;
        match (results.first(), results.get(1)) {
            (Some(revoked), Some(set)) if changes(set)? == 1 => Ok(Some(changes(revoked)? as u64)),
            (Some(_), Some(_)) => Ok(None),
            _ => Err(unavailable("short batch result")),
        }
    }

    async fn list_users(&self, query: Option<&str>, limit: u32, offset: u32) -> Result<UserPage> {
        let pattern = query.map(contains_pattern);
        let page = self.stmt(
            &format!(
                "SELECT {USER_COLUMNS} FROM users u WHERE {USER_FILTER} \
                 ORDER BY u.created_at DESC, u.id LIMIT ?2 OFFSET ?3"
            ),
            &[opt_text(pattern.as_deref()), int(i64::from(limit)), int(i64::from(offset))],
        )?;
        let count = self.stmt(
            &format!("SELECT COUNT(*) AS total FROM users u WHERE {USER_FILTER}"),
            &[opt_text(pattern.as_deref())],
        )?;
        // One batch, one snapshot: the page and the total agree.
        let results = self.batch(vec![page, count]).await?;
        let (Some(page), Some(count)) = (results.first(), results.get(1)) else {
            return Err(unavailable("short batch result"));
        };
        let users = page.results::<UserRow>().map_err(unavailable)?.into_iter().map(User::from).collect();
        let total = count.results::<CountRow>().map_err(unavailable)?.first().map_or(0, |r| r.total);
        Ok(UserPage { users, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn update_profile(&self, u: &User, now: UnixTime) -> Result<ProfileUpdate> {
        // A new address also takes, in the same write, the links and codes
        // mailed to the old one before the account existed (no `user_id`):
        // they are held to whichever account has that address, and with none
        // they would stand again (`TOKEN_EPOCH_STANDS`).
        let orphans = self.stmt(
            "DELETE FROM email_tokens WHERE user_id IS NULL AND email <> ?2 \
             AND email = (SELECT email FROM users WHERE id = ?1) \
             AND NOT EXISTS (SELECT 1 FROM users o WHERE o.email = ?2 AND o.id <> ?1)",
            &[text(&u.id), text(&u.email)],
        )?;
        let update = self.stmt(
            "UPDATE users SET email = ?2, name = ?3, avatar_url = ?4, phone = ?5, email_verified = ?6, updated_at = ?7, \
             auth_epoch = CASE WHEN email <> ?2 THEN auth_epoch + 1 ELSE auth_epoch END \
             WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM users o WHERE o.email = ?2 AND o.id <> ?1)",
            &[
                text(&u.id),
                text(&u.email),
                opt_text(u.name.as_deref()),
                opt_text(u.avatar_url.as_deref()),
                opt_text(u.phone.as_deref()),
                int(i64::from(u.email_verified)),
                time(now),
            ],
        )?;
        let results = self.batch(vec![orphans, update]).await?;
        let n = match results.get(1) {
            Some(r) => changes(r)?,
            None => return Err(unavailable("short batch result")),
        };
        if n == 1 {
            return Ok(ProfileUpdate::Updated);
        }
        Ok(match self.user_by_id(&u.id).await? {
            Some(_) => ProfileUpdate::EmailTaken,
            None => ProfileUpdate::NotFound,
        })
    }

    async fn delete_user(&self, user_id: &str) -> Result<bool> {
        // Roles, sessions (and their refresh tokens), emailed tokens, linked
        // OAuth identities and pending OAuth links go with the user: ON DELETE CASCADE, which D1 enforces. D1 counts the
        // cascaded rows in `changes` too, so any count means it was there.
        // In the same write go the links and codes mailed to the address
        // before the account existed (no `user_id`): held to whichever
        // account has the address, with none they would stand again.
        let id = [text(user_id)];
        let orphans = self.stmt(
            "DELETE FROM email_tokens WHERE user_id IS NULL AND email = (SELECT email FROM users WHERE id = ?1)",
            &id,
        )?;
        let results = self.batch(vec![orphans, self.stmt("DELETE FROM users WHERE id = ?1", &id)?]).await?;
        match results.get(1) {
            Some(r) => Ok(changes(r)? > 0),
            None => Err(unavailable("short batch result")),
        }
    }

    async fn set_banned(&self, user_id: &str, banned: bool, now: UnixTime) -> Result<bool> {
        let mut stmts = vec![self.stmt(
            "UPDATE users SET banned = ?2, updated_at = ?3, \
             auth_epoch = CASE WHEN ?2 = 1 THEN auth_epoch + 1 ELSE auth_epoch END WHERE id = ?1 AND banned <> ?2",
            &[text(user_id), int(i64::from(banned)), time(now)],
        )?];
        if banned {
            stmts.push(self.stmt(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'banned' WHERE user_id = ?1 AND revoked_at IS NULL",
                &[text(user_id), time(now)],
            )?);
        }
        let results = self.batch(stmts).await?;
        match results.first() {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(unavailable("empty batch result")),
        }
    }

    async fn add_role(&self, user_id: &str, role: &str, now: UnixTime) -> Result<bool> {
        let n = self
            .run(
                "INSERT OR IGNORE INTO user_roles (user_id, role, created_at) SELECT ?1, ?2, ?3 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)",
                &[text(user_id), text(role), time(now)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn remove_role(&self, user_id: &str, role: &str) -> Result<bool> {
        let n =
            self.run("DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2", &[text(user_id), text(role)]).await?;
        Ok(n == 1)
    }
}

impl EmailTokenStore for D1Store {
    async fn issue_email_token(&self, t: &EmailToken) -> Result<()> {
        // The hint first: if KV fails nothing is written and the previous
        // token stays live; a hint whose D1 write then fails names no token.
        if is_hinted(t.kind) {
            self.hints.put(t.kind, &t.hash, t.created_at, t.expires_at).await?;
        }
        let supersede = self.stmt(
            "UPDATE email_tokens SET consumed_at = ?3 WHERE kind = ?1 AND email = ?2 AND consumed_at IS NULL",
            &[text(t.kind.as_str()), text(&t.email), time(t.created_at)],
        )?;
        let insert = self.stmt(
            "INSERT INTO email_tokens (hash, kind, email, user_id, user_epoch, code_hash, created_at, expires_at, attempts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0)",
            &[
                text(&t.hash),
                text(t.kind.as_str()),
                text(&t.email),
                opt_text(t.user_id.as_deref()),
                int_u(t.user_epoch),
                opt_text(t.code_hash.as_deref()),
                time(t.created_at),
                time(t.expires_at),
            ],
        )?;
        self.batch(vec![supersede, insert]).await?;
        Ok(())
    }

    async fn consume_email_token(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<Option<EmailToken>> {
        if is_hinted(kind) && !self.hints.may_be_live(kind, hash, now).await? {
            return Ok(None);
        }
        let rows = self
            .all::<EmailTokenRow>(
                &format!(
                    "UPDATE email_tokens SET consumed_at = ?3 \
                     WHERE hash = ?1 AND kind = ?2 AND consumed_at IS NULL AND expires_at > ?3 AND {TOKEN_EPOCH_STANDS} \
                     RETURNING {EMAIL_TOKEN_COLUMNS}"
                ),
                &[text(hash), text(kind.as_str()), time(now)],
            )
            .await?;
        let token = Self::first_token(rows)?;
        if token.is_some() && is_hinted(kind) {
            self.hints.forget(kind, hash).await;
        }
        Ok(token)
    }

    async fn count_code_attempt(&self, email: &str, now: UnixTime, max_attempts: u32) -> Result<Option<EmailToken>> {
        let rows = self
            .all::<EmailTokenRow>(
                &format!(
                    "UPDATE email_tokens SET attempts = attempts + 1 \
                     WHERE kind = ?1 AND email = ?2 AND consumed_at IS NULL AND expires_at > ?3 AND attempts < ?4 \
                     AND {TOKEN_EPOCH_STANDS} RETURNING {EMAIL_TOKEN_COLUMNS}"
                ),
                &[text(TokenKind::EmailOtp.as_str()), text(email), time(now), int(i64::from(max_attempts))],
            )
            .await?;
        Self::first_token(rows)
    }

    async fn purge_email_tokens(&self, before: UnixTime) -> Result<u64> {
        Ok(self.run("DELETE FROM email_tokens WHERE expires_at < ?1", &[time(before)]).await? as u64)
    }
}

#[derive(Deserialize)]
struct HitRow {
    count: i64,
    expires_at: i64,
}

#[derive(Deserialize)]
struct FailuresRow {
    failures: i64,
    last_failed_at: i64,
}

impl RateLimitStore for D1Store {
    async fn hit(&self, hits: &[Hit], now: UnixTime) -> Result<Vec<Option<Count>>> {
        // One upsert per key, in one batch (a transaction, run in order): a
        // missing or ended window opens at `now`; otherwise the count goes up
        // by one. SET sees the row's old values. A conditional hit inserts
        // through a SELECT whose WHERE reads the earlier counter as this
        // batch left it: refused, it writes nothing and returns no row.
        macro_rules! upsert {
            () => {
                "ON CONFLICT (key) DO UPDATE SET \
                   count = CASE WHEN rate_limits.expires_at <= ?2 THEN 1 ELSE rate_limits.count + 1 END, \
                   window_start = CASE WHEN rate_limits.expires_at <= ?2 THEN ?2 ELSE rate_limits.window_start END, \
                   expires_at = CASE WHEN rate_limits.expires_at <= ?2 THEN ?3 ELSE rate_limits.expires_at END \
                 RETURNING count, expires_at"
            };
        }
        const HIT: &str = concat!(
            "INSERT INTO rate_limits (key, window_start, count, expires_at) VALUES (?1, ?2, 1, ?3) ",
            upsert!()
        );
        const HIT_WITHIN: &str = concat!(
            "INSERT INTO rate_limits (key, window_start, count, expires_at) SELECT ?1, ?2, 1, ?3 \
             WHERE (SELECT count FROM rate_limits WHERE key = ?4) <= ?5 ",
            upsert!()
        );
        let stmts = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let args = [text(&h.key), time(now), time(now.plus_secs(h.window_secs))];
                match h.within {
                    None => self.stmt(HIT, &args),
                    Some(w) => {
                        let earlier = hits.get(w.hit).filter(|_| w.hit < i).ok_or_else(|| {
                            Error::Internal(format!("rate limit hit {i} is conditioned on hit {}", w.hit))
                        })?;
                        let [key, start, end] = args;
                        self.stmt(HIT_WITHIN, &[key, start, end, text(&earlier.key), int(i64::from(w.limit))])
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let results = self.batch(stmts).await?;
        results
            .iter()
            .zip(hits)
            .map(|(r, h)| {
                let rows = r.results::<HitRow>().map_err(unavailable)?;
                match (rows.first(), h.within) {
                    (Some(row), _) => Ok(Some(Count {
                        count: u32::try_from(row.count).unwrap_or(u32::MAX),
                        resets_at: UnixTime(row.expires_at),
                    })),
                    (None, Some(_)) => Ok(None),
                    (None, None) => Err(unavailable("rate limit upsert returned no row")),
                }
            })
            .collect()
    }

    async fn unhit(&self, key: &str, resets_at: UnixTime, limit: u32) -> Result<()> {
        self.run(
            "UPDATE rate_limits SET count = count - 1 WHERE key = ?1 AND expires_at = ?2 AND count > 0 AND count <= ?3",
            &[text(key), time(resets_at), int(i64::from(limit))],
        )
        .await?;
        Ok(())
    }

    async fn login_failures(&self, email: &str) -> Result<Option<(u32, UnixTime)>> {
        let row = self
            .first::<FailuresRow>(
                "SELECT failures, last_failed_at FROM login_failures WHERE email = ?1",
                &[text(email)],
            )
            .await?;
        Ok(row.map(|r| (u32::try_from(r.failures).unwrap_or(u32::MAX), UnixTime(r.last_failed_at))))
    }

    async fn record_login_failure(&self, email: &str, now: UnixTime, forget_before: UnixTime) -> Result<()> {
        self.run(
            "INSERT INTO login_failures (email, failures, last_failed_at) VALUES (?1, 1, ?2) \
             ON CONFLICT (email) DO UPDATE SET \
               failures = CASE WHEN login_failures.last_failed_at < ?3 THEN 1 ELSE login_failures.failures + 1 END, \
               last_failed_at = MAX(login_failures.last_failed_at, ?2)",
            &[text(email), time(now), time(forget_before)],
        )
        .await?;
        Ok(())
    }

    async fn clear_login_failures(&self, email: &str) -> Result<()> {
        self.run("DELETE FROM login_failures WHERE email = ?1", &[text(email)]).await?;
        Ok(())
    }
}

/// An event waiting in the outbox.
#[derive(Debug, Deserialize)]
pub struct OutboxRow {
    /// The event id.
    pub id: String,
    /// The envelope, as JSON text.
    pub body: String,
}

#[derive(Deserialize)]
struct OAuthStateRow {
    hash: String,
    provider: String,
    code_verifier: String,
    nonce: String,
    redirect_to: String,
    link_user_id: Option<String>,
    link_epoch: i64,
    binding_hash: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(Deserialize)]
struct UnlinkWhyRow {
    live: i64,
    linked: i64,
}

#[derive(Deserialize)]
struct SealedRow {
    sealed: String,
    expires_at: i64,
}

#[derive(Deserialize)]
struct IdentityRow {
    provider: String,
    subject: String,
    user_id: String,
    email: Option<String>,
    email_verified: i64,
    linked_at: i64,
}

impl From<IdentityRow> for LinkedIdentity {
    fn from(r: IdentityRow) -> Self {
        LinkedIdentity {
            provider: r.provider,
            subject: r.subject,
            user_id: r.user_id,
            email: r.email,
            email_verified: r.email_verified != 0,
            linked_at: UnixTime(r.linked_at),
        }
    }
}

const IDENTITY_COLUMNS: &str = "provider, subject, user_id, email, email_verified, linked_at";

impl D1Store {
    /// Links `i` to its user if that user's epoch is `user_epoch` (any, if `None`).
    fn insert_identity(&self, i: &LinkedIdentity, user_epoch: Option<u64>) -> Result<D1PreparedStatement> {
        // OR IGNORE: a taken (provider, subject) or (user, provider) writes nothing.
        self.stmt(
            "INSERT OR IGNORE INTO oauth_accounts (provider, subject, user_id, email, email_verified, linked_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?3 AND (?7 IS NULL OR auth_epoch = ?7))",
            &[
                text(&i.provider),
                text(&i.subject),
                text(&i.user_id),
                opt_text(i.email.as_deref()),
                int(i64::from(i.email_verified)),
                time(i.linked_at),
                user_epoch.map_or(JsValue::NULL, int_u),
            ],
        )
    }

    /// Deletes sign-in states and exchange codes that expired before `before`.
    pub async fn purge_oauth(&self, before: UnixTime) -> Result<()> {
        self.batch(vec![
            self.stmt("DELETE FROM oauth_states WHERE expires_at < ?1", &[time(before)])?,
            self.stmt("DELETE FROM oauth_exchange_codes WHERE expires_at < ?1", &[time(before)])?,
        ])
        .await?;
        Ok(())
    }
}

impl OAuthStore for D1Store {
    async fn put_oauth_state(&self, st: &OAuthState) -> Result<()> {
        self.run(
            "INSERT INTO oauth_states (hash, provider, code_verifier, nonce, redirect_to, link_user_id, link_epoch, \
             binding_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?10, ?7, ?8, ?9)",
            &[
                text(&st.hash),
                text(&st.provider),
                text(&st.code_verifier),
                text(&st.nonce),
                text(&st.redirect_to),
                opt_text(st.link_user_id.as_deref()),
                text(&st.binding_hash),
                time(st.created_at),
                time(st.expires_at),
                int_u(st.link_epoch),
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_oauth_state(&self, hash: &str, binding_hash: Option<&str>, now: UnixTime) -> Result<StateTake> {
        // One statement decides: only the right binding deletes, so racing
        // callbacks with it get the row exactly once, and any other callback
        // leaves it alone. The comparison is on SHA-256 hashes of 256-bit
        // random cookies: how long it takes says nothing usable about a cookie.
        if let Some(binding_hash) = binding_hash {
            let rows = self
                .all::<OAuthStateRow>(
                    "DELETE FROM oauth_states WHERE hash = ?1 AND binding_hash = ?2 AND expires_at > ?3 \
                     RETURNING hash, provider, code_verifier, nonce, redirect_to, link_user_id, link_epoch, \
                     binding_hash, created_at, expires_at",
                    &[text(hash), text(binding_hash), time(now)],
                )
                .await?;
            if let Some(r) = rows.into_iter().next() {
                return Ok(StateTake::Taken(OAuthState {
                    hash: r.hash,
                    provider: r.provider,
                    code_verifier: r.code_verifier,
                    nonce: r.nonce,
                    redirect_to: r.redirect_to,
                    link_user_id: r.link_user_id,
                    link_epoch: epoch(r.link_epoch),
                    binding_hash: r.binding_hash,
                    created_at: UnixTime(r.created_at),
                    expires_at: UnixTime(r.expires_at),
                }));
            }
        }
        // Nothing taken: only why is left to tell (the login_failed reason).
        let live = self
            .first::<CountRow>(
                "SELECT COUNT(*) AS total FROM oauth_states WHERE hash = ?1 AND expires_at > ?2",
                &[text(hash), time(now)],
            )
            .await?
            .is_some_and(|r| r.total > 0);
        Ok(if live { StateTake::OtherBrowser } else { StateTake::Unknown })
    }

    async fn put_link_state(&self, st: &OAuthState, caller: &LiveSession<'_>) -> Result<bool> {
        // Written only while the caller's session is live and the account is
        // as the flow read it: a takeover in between revokes the one and
        // moves the other.
        let n = self
            .run(
                &format!(
                    "INSERT INTO oauth_states (hash, provider, code_verifier, nonce, redirect_to, link_user_id, link_epoch, \
                     binding_hash, created_at, expires_at) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?10, ?7, ?8, ?9 \
                     WHERE ?6 = ?11 AND {} \
                     AND EXISTS (SELECT 1 FROM users WHERE id = ?6 AND auth_epoch = ?10 AND banned = 0)",
                    session_is_live(12, 6, 13, 14)
                ),
                &[
                    text(&st.hash),
                    text(&st.provider),
                    text(&st.code_verifier),
                    text(&st.nonce),
                    text(&st.redirect_to),
                    opt_text(st.link_user_id.as_deref()),
                    text(&st.binding_hash),
                    time(st.created_at),
                    time(st.expires_at),
                    int_u(st.link_epoch),
                    text(caller.user_id),
                    text(caller.session_id),
                    time(caller.now),
                    max_age(caller.max_age_secs),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn put_exchange(&self, hash: &str, sealed: &str, expires_at: UnixTime) -> Result<()> {
        self.run(
            "INSERT INTO oauth_exchange_codes (hash, sealed, expires_at) VALUES (?1, ?2, ?3)",
            &[text(hash), text(sealed), time(expires_at)],
        )
        .await?;
        Ok(())
    }

    async fn take_exchange(&self, hash: &str, now: UnixTime) -> Result<Option<String>> {
        let rows = self
            .all::<SealedRow>(
                "DELETE FROM oauth_exchange_codes WHERE hash = ?1 RETURNING sealed, expires_at",
                &[text(hash)],
            )
            .await?;
        Ok(rows.into_iter().next().filter(|r| r.expires_at > now.0).map(|r| r.sealed))
    }

    async fn identity(&self, provider: &str, subject: &str) -> Result<Option<LinkedIdentity>> {
        let sql = format!("SELECT {IDENTITY_COLUMNS} FROM oauth_accounts WHERE provider = ?1 AND subject = ?2");
        Ok(self.first::<IdentityRow>(&sql, &[text(provider), text(subject)]).await?.map(LinkedIdentity::from))
    }

    async fn identities_of(&self, user_id: &str) -> Result<Vec<LinkedIdentity>> {
        let sql =
            format!("SELECT {IDENTITY_COLUMNS} FROM oauth_accounts WHERE user_id = ?1 ORDER BY linked_at, provider");
        Ok(self.all::<IdentityRow>(&sql, &[text(user_id)]).await?.into_iter().map(LinkedIdentity::from).collect())
    }

    async fn link_identity(&self, identity: &LinkedIdentity, user_epoch: u64) -> Result<bool> {
        let res = self.insert_identity(identity, Some(user_epoch))?.run().await.map_err(unavailable)?;
        Ok(changes(&res)? == 1)
    }

    async fn create_oauth_user(&self, u: &User, identity: &LinkedIdentity) -> Result<bool> {
        let insert_user = self.stmt(
            "INSERT INTO users (id, email, name, password_hash, email_verified, avatar_url, phone, banned, created_at, updated_at) \
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, NULL, 0, ?6, ?6) ON CONFLICT(email) DO NOTHING",
            &[
                text(&u.id),
                text(&u.email),
                opt_text(u.name.as_deref()),
                int(i64::from(u.email_verified)),
                opt_text(u.avatar_url.as_deref()),
                time(u.created_at),
            ],
        )?;
        // If the identity was linked by a racing request, the new user goes
        // again in the same transaction: no account without its identity.
        let undo = self.stmt(
            "DELETE FROM users WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM oauth_accounts WHERE user_id = ?1)",
            &[text(&u.id)],
        )?;
        let results = self.batch(vec![insert_user, self.insert_identity(identity, None)?, undo]).await?;
        match results.get(1) {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(unavailable("short batch result")),
        }
    }

    async fn unlink_identity(&self, caller: &LiveSession<'_>, provider: &str) -> Result<Unlink> {
        let live = session_is_live(3, 1, 4, 5);
        let args = [
            text(caller.user_id),
            text(provider),
            text(caller.session_id),
            time(caller.now),
            max_age(caller.max_age_secs),
        ];
        let unlink = self.stmt(
            &format!(
                "DELETE FROM oauth_accounts WHERE user_id = ?1 AND provider = ?2 AND {live} \
                 AND (EXISTS (SELECT 1 FROM users WHERE id = ?1 AND password_hash IS NOT NULL) \
                      OR EXISTS (SELECT 1 FROM oauth_accounts o WHERE o.user_id = ?1 AND o.provider <> ?2))"
            ),
            &args,
        )?;
        // In the same transaction, why nothing went, if nothing did.
        let why = self.stmt(
            &format!(
                "SELECT {live} AS live, EXISTS (SELECT 1 FROM oauth_accounts WHERE user_id = ?1 AND provider = ?2) AS linked"
            ),
            &args,
        )?;
        let results = self.batch(vec![unlink, why]).await?;
        let (Some(unlink), Some(why)) = (results.first(), results.get(1)) else {
            return Err(unavailable("short batch result"));
        };
        if changes(unlink)? > 0 {
            return Ok(Unlink::Done);
        }
        let Some(why) = why.results::<UnlinkWhyRow>().map_err(unavailable)?.into_iter().next() else {
            return Err(unavailable("unlink: no answer"));
        };
        Ok(match (why.live != 0, why.linked != 0) {
            (false, _) => Unlink::SessionEnded,
            (true, true) => Unlink::LastMethod,
            (true, false) => Unlink::NotLinked,
        })
    }
}

#[derive(Deserialize)]
struct AttemptRow {
    attempts: i64,
}

#[derive(Deserialize)]
struct DeliveryStateRow {
    delivered_at: Option<i64>,
    claimed_until: Option<i64>,
}

#[derive(Deserialize)]
struct PendingRow {
    target: String,
    attempts: i64,
    last_error: Option<String>,
}

impl DeliveryLedger for D1Store {
    async fn claim(
        &self,
        event_id: &str,
        event_type: &str,
        target: &str,
        now: UnixTime,
        lease_until: UnixTime,
    ) -> Result<Claim> {
        // One statement decides: a new row, or an undelivered row whose lease
        // has ended, is ours (attempts + 1); otherwise nothing is returned.
        let mine = self
            .first::<AttemptRow>(
                "INSERT INTO event_deliveries (event_id, target, event_type, attempts, first_attempt_at, last_attempt_at, claimed_until) \
                 VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5) \
                 ON CONFLICT (event_id, target) DO UPDATE SET attempts = attempts + 1, last_attempt_at = ?4, claimed_until = ?5 \
                 WHERE delivered_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ?4) \
                 RETURNING attempts",
                &[text(event_id), text(target), text(event_type), time(now), time(lease_until)],
            )
            .await?;
        if let Some(row) = mine {
            return Ok(Claim::Mine { attempt: u32::try_from(row.attempts).unwrap_or(u32::MAX) });
        }
        let state = self
            .first::<DeliveryStateRow>(
                "SELECT delivered_at, claimed_until FROM event_deliveries WHERE event_id = ?1 AND target = ?2",
                &[text(event_id), text(target)],
            )
            .await?;
        match state {
            Some(DeliveryStateRow { delivered_at: Some(_), .. }) => Ok(Claim::Delivered),
            Some(DeliveryStateRow { claimed_until: Some(until), .. }) => Ok(Claim::Busy { until: UnixTime(until) }),
            // The other claim ended between the two statements: try again soon.
            Some(_) => Ok(Claim::Busy { until: now.plus_secs(1) }),
            None => Err(unavailable("event_deliveries: claim neither taken nor held")),
        }
    }

    async fn settle(&self, event_id: &str, target: &str, now: UnixTime, error: Option<&str>) -> Result<()> {
        match error {
            None => self
                .run(
                    "UPDATE event_deliveries SET delivered_at = ?3, claimed_until = NULL, last_error = NULL \
                     WHERE event_id = ?1 AND target = ?2",
                    &[text(event_id), text(target), time(now)],
                )
                .await
                .map(|_| ()),
            Some(why) => self
                .run(
                    "UPDATE event_deliveries SET claimed_until = NULL, last_error = ?3 WHERE event_id = ?1 AND target = ?2",
                    &[text(event_id), text(target), text(why)],
                )
                .await
                .map(|_| ()),
        }
    }

    async fn undelivered(&self, event_id: &str) -> Result<Vec<TargetState>> {
        Ok(self
            .all::<PendingRow>(
                "SELECT target, attempts, last_error FROM event_deliveries \
                 WHERE event_id = ?1 AND delivered_at IS NULL ORDER BY target",
                &[text(event_id)],
            )
            .await?
            .into_iter()
            .map(|r| TargetState {
                target: r.target,
                attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
                last_error: r.last_error,
            })
            .collect())
    }

    async fn record_dead_letter(&self, l: &DeadLetter) -> Result<bool> {
        let failed = serde_json::to_string(&l.failed).map_err(|e| Error::Internal(format!("dead letter json: {e}")))?;
        let n = self
            .run(
                "INSERT INTO dead_letters (id, event_type, reason, body, failed, dead_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO NOTHING",
                &[text(&l.id), opt_text(l.event_type.as_deref()), text(&l.reason), text(&l.body), text(&failed), time(l.dead_at)],
            )
            .await?;
        Ok(n == 1)
    }
}

impl D1Store {
    /// Deletes delivery rows no retry can need any more (last touched before
    /// `before`); returns how many.
    pub async fn prune_deliveries(&self, before: UnixTime) -> Result<usize> {
        self.run("DELETE FROM event_deliveries WHERE last_attempt_at < ?1", &[time(before)]).await
    }

    /// Deletes rate-limit counters whose window ended before `now` and
    /// login failures last counted before `forget_before`; returns how many.
    pub async fn prune_rate_limits(&self, now: UnixTime, forget_before: UnixTime) -> Result<usize> {
        let counters = self.stmt("DELETE FROM rate_limits WHERE expires_at < ?1", &[time(now)])?;
        let failures = self.stmt("DELETE FROM login_failures WHERE last_failed_at < ?1", &[time(forget_before)])?;
        let results = self.batch(vec![counters, failures]).await?;
        results.iter().map(changes).sum()
    }

    /// Keeps events the queue did not take, as (id, JSON text) pairs, in one
    /// write; an id already waiting is left as it is.
    pub async fn outbox_put(&self, events: &[(String, String)], now: UnixTime, error: &str) -> Result<()> {
        let stmts = events
            .iter()
            .map(|(id, body)| {
                self.stmt(
                    "INSERT INTO event_outbox (id, body, created_at, attempts, last_error) VALUES (?1, ?2, ?3, 0, ?4) \
                     ON CONFLICT (id) DO NOTHING",
                    &[text(id), text(body), time(now), text(error)],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch(stmts).await?;
        Ok(())
    }

    /// The oldest `limit` events waiting in the outbox.
    pub async fn outbox_pending(&self, limit: u32) -> Result<Vec<OutboxRow>> {
        self.all("SELECT id, body FROM event_outbox ORDER BY created_at, id LIMIT ?1", &[int(i64::from(limit))]).await
    }

    /// Removes an event the queue took.
    pub async fn outbox_done(&self, id: &str) -> Result<()> {
        self.run("DELETE FROM event_outbox WHERE id = ?1", &[text(id)]).await?;
        Ok(())
    }

    /// Records a failed re-send.
    pub async fn outbox_failed(&self, id: &str, error: &str) -> Result<()> {
        self.run(
            "UPDATE event_outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            &[text(id), text(error)],
        )
        .await?;
        Ok(())
    }
}
