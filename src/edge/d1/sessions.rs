//! [`SessionStore`] on D1: sessions and the refresh-token family each
//! rotation extends (`sessions`, `refresh_tokens`).

use serde::Deserialize;
use wasm_bindgen::JsValue;

use super::mfa::mfa_on;
use super::rate_limits::{HitRow, SESSION_HIT};
use super::{changes, int, int_u, max_age, opt_text, returned, session_is_live, text, time, CountRow, D1Store};
use crate::core::amr::Amr;
use crate::core::ids::{SessionId, UserId};
use crate::core::ports::{Result, SessionStore};
use crate::core::session::{LiveSession, RotateRequest, Rotation, Session, SignInBasis};
use crate::core::time::UnixTime;
use crate::core::token::ExtraClaims;
use crate::edge::error::{Dependency::D1, EdgeResult};

/// The `sessions` columns [`SessionRow`] reads.
pub(super) const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_used_at, expires_at, revoked_at, ip_address, user_agent, extra_claims, amr";

/// A `sessions` row.
#[derive(Deserialize)]
pub(super) struct SessionRow {
    id: SessionId,
    user_id: UserId,
    created_at: i64,
    last_used_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
    ip_address: Option<String>,
    user_agent: Option<String>,
    extra_claims: Option<String>,
    amr: Option<String>,
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
            amr: r.amr.as_deref().map_or(Amr::NONE, Amr::from_stored),
        }
    }
}

#[derive(Deserialize)]
struct ReuseRow {
    id: SessionId,
    user_id: UserId,
    is_current: i64,
}

/// The `extra_claims` column's value for `claims`: their JSON, or NULL for none.
fn claims_column(claims: &ExtraClaims) -> JsValue {
    if claims.is_empty() {
        JsValue::NULL
    } else {
        text(&serde_json::Value::Object(claims.clone()).to_string())
    }
}

impl SessionStore for D1Store {
    async fn create_session(&self, s: &Session, refresh_hash: &str, basis: &SignInBasis<'_>) -> Result<bool> {
        // Only while the account is as the sign-in relied on (its epoch, the
        // identity or passkey it came through, no second factor turned on
        // for a one-factor sign-in); the token row only if the session went in.
        let (provider, subject) = basis.identity.unzip();
        let insert_session = self.stmt(
            &format!(
                "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at, ip_address, user_agent, extra_claims, amr) \
                 SELECT ?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?12 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND auth_epoch = ?9 AND banned = 0) \
                 AND (?10 IS NULL OR EXISTS (SELECT 1 FROM oauth_accounts WHERE provider = ?10 AND subject = ?11 AND user_id = ?2)) \
                 AND (?14 IS NULL OR EXISTS (SELECT 1 FROM passkeys WHERE id = ?14 AND user_id = ?2)) \
                 AND (?13 = 1 OR NOT {})",
                mfa_on(2)
            ),
            &[
                text(s.id.as_str()),
                text(s.user_id.as_str()),
                text(refresh_hash),
                time(s.created_at),
                time(s.expires_at),
                opt_text(s.ip_address.as_deref()),
                opt_text(s.user_agent.as_deref()),
                claims_column(&s.extra_claims),
                int_u(basis.user_epoch),
                opt_text(provider),
                opt_text(subject),
                text(&s.amr.to_stored()),
                int(i64::from(basis.second_factor)),
                opt_text(basis.passkey),
            ],
        )?;
        let insert_token = self.stmt(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at) SELECT ?1, ?2, ?3 \
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?2)",
            &[text(refresh_hash), text(s.id.as_str()), time(s.created_at)],
        )?;
        let results = self.batch(vec![insert_session, insert_token]).await?;
        match results.first() {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(D1.failed("empty batch result")),
        }
    }

    async fn rotate_refresh(&self, r: &RotateRequest<'_>) -> Result<Rotation> {
        let max_age_secs = int(i64::try_from(r.max_age_secs).unwrap_or(i64::MAX));
        let mut swap_args = vec![
            text(r.old_hash),
            text(r.new_hash),
            time(r.now),
            time(r.expires_at),
            opt_text(r.ip_address),
            opt_text(r.user_agent),
            max_age_secs.clone(),
            // HOOK_ON_REFRESH: the hook's claims replace the session's.
            claims_column(r.extra_claims.unwrap_or(&ExtraClaims::new())),
            int(i64::from(r.extra_claims.is_some())),
        ];
        // With a limit, the session's counter is hit first, in the same
        // batch (a transaction), and the swap happens only if it is within
        // the limit: a refused refresh rotates nothing.
        let mut stmts = Vec::with_capacity(3);
        let within = match &r.limit {
            Some(l) => {
                let window_end = time(r.now.plus_secs(l.rule.window_secs));
                let hit_args = [text(r.old_hash), time(r.now), window_end, text(l.key_prefix), max_age_secs];
                stmts.push(self.stmt(SESSION_HIT, &hit_args)?);
                swap_args.extend([text(l.key_prefix), int(i64::from(l.rule.limit))]);
                " AND (SELECT count FROM rate_limits WHERE key = ?10 || sessions.id) <= ?11"
            }
            None => "",
        };
        stmts.push(self.stmt(
            &format!(
                "UPDATE sessions SET refresh_hash = ?2, last_used_at = ?3, expires_at = MIN(?4, created_at + ?7), \
                 ip_address = ?5, user_agent = ?6, extra_claims = CASE WHEN ?9 THEN ?8 ELSE extra_claims END \
                 WHERE refresh_hash = ?1 AND revoked_at IS NULL AND expires_at > ?3 AND created_at + ?7 > ?3{within} \
                 RETURNING {SESSION_COLUMNS}"
            ),
            &swap_args,
        )?);
        stmts.push(self.stmt(
            "INSERT INTO refresh_tokens (hash, session_id, issued_at) \
             SELECT ?1, id, ?2 FROM sessions WHERE refresh_hash = ?1",
            &[text(r.new_hash), time(r.now)],
        )?);
        let results = self.batch(stmts).await?;
        let (counted, swapped) = match (r.limit.is_some(), results.as_slice()) {
            (true, [hit, swap, _]) => (hit.results::<HitRow>().or_unavailable(D1)?.into_iter().next(), swap),
            (false, [swap, _]) => (None, swap),
            _ => return Err(D1.failed("short batch result")),
        };
        if let Some(row) = swapped.results::<SessionRow>().or_unavailable(D1)?.into_iter().next() {
            return Ok(Rotation::Rotated(row.into()));
        }
        // Counted but not swapped: the token is current and its session
        // live (the hit's conditions are the swap's), so over the limit.
        if let Some(hit) = counted {
            return Ok(Rotation::Throttled { count: hit.count() });
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

    async fn session_by_id(&self, id: &SessionId) -> Result<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
        Ok(self.first::<SessionRow>(&sql, &[text(id.as_str())]).await?.map(Session::from))
    }

    async fn session_by_refresh(&self, refresh_hash: &str) -> Result<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE refresh_hash = ?1");
        Ok(self.first::<SessionRow>(&sql, &[text(refresh_hash)]).await?.map(Session::from))
    }

    async fn session_by_issued_refresh(&self, refresh_hash: &str) -> Result<Option<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = ?1)"
        );
        Ok(self.first::<SessionRow>(&sql, &[text(refresh_hash)]).await?.map(Session::from))
    }

    async fn revoke_session(&self, id: &SessionId, now: UnixTime, reason: &str) -> Result<bool> {
        let n = self
            .run_returning(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 WHERE id = ?1 AND revoked_at IS NULL RETURNING id",
                &[text(id.as_str()), time(now), text(reason)],
            )
            .await?;
        Ok(n > 0)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> Result<u64> {
        let n = self
            .run_returning(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND (?4 IS NULL OR id <> ?4) RETURNING id",
                &[text(user_id.as_str()), time(now), text(reason), opt_text(except.map(SessionId::as_str))],
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
            text(caller.user_id.as_str()),
            text(caller.session_id.as_str()),
            time(caller.now),
            max_age(caller.max_age_secs),
            text(reason),
        ];
        let revoke = self.stmt(
            &format!(
                "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?5 \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND id <> ?2 AND {} RETURNING id",
                session_is_live(2, 1, 3, 4)
            ),
            &args,
        )?;
        let live = self.stmt(&format!("SELECT {} AS total", session_is_live(2, 1, 3, 4)), &args[..4])?;
        let results = self.batch(vec![revoke, live]).await?;
        let (Some(revoked), Some(live)) = (results.first(), results.get(1)) else {
            return Err(D1.failed("short batch result"));
        };
        let live = live.results::<CountRow>().or_unavailable(D1)?.first().is_some_and(|r| r.total != 0);
        Ok(live.then_some(returned(revoked)? as u64))
    }

    async fn list_sessions(&self, user_id: &UserId, now: UnixTime) -> Result<Vec<Session>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
             ORDER BY created_at DESC, id LIMIT 100"
        );
        Ok(self
            .all::<SessionRow>(&sql, &[text(user_id.as_str()), time(now)])
            .await?
            .into_iter()
            .map(Session::from)
            .collect())
    }
}
