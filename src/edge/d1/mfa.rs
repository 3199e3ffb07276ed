//! [`MfaStore`] on D1: TOTP (`mfa_totp`), backup codes
//! (`mfa_backup_codes`) and the sign-ins waiting for their second step
//! (`mfa_challenges`).

use serde::Deserialize;
use wasm_bindgen::JsValue;

use super::{
    caller_args, changes, epoch, int, int_u, max_age, opt_text, returned, session_is_live, text, time, CountRow,
    D1Store, IdRow,
};
use crate::core::amr::Amr;
use crate::core::ids::UserId;
use crate::core::mfa::{Challenge, FactorsRemoved, FactorsReset, StoredFactors, StoredTotp};
use crate::core::ports::{MfaStore, Result};
use crate::core::session::LiveSession;
use crate::core::time::UnixTime;
use crate::edge::error::{Dependency::D1, EdgeResult};

/// SQL: user `?{uid}` has a second factor on — what
/// [`StoredFactors::required`] says, decided inside the write it conditions.
pub(super) fn mfa_on(uid: u8) -> String {
    format!("EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = ?{uid} AND confirmed_at IS NOT NULL)")
}

const CHALLENGE_COLUMNS: &str = "hash, user_id, user_epoch, provider, amr, identity_provider, identity_subject, \
     passkey_id, attempts, created_at, expires_at";

#[derive(Deserialize)]
struct TotpRow {
    secret: String,
    confirmed_at: Option<i64>,
    last_step: Option<i64>,
    backup_set: Option<String>,
}

#[derive(Deserialize)]
struct ConfirmedRow {
    confirmed_at: Option<i64>,
}

#[derive(Deserialize)]
struct ChallengeRow {
    hash: String,
    user_id: UserId,
    user_epoch: i64,
    provider: String,
    amr: String,
    identity_provider: Option<String>,
    identity_subject: Option<String>,
    passkey_id: Option<String>,
    attempts: i64,
    created_at: i64,
    expires_at: i64,
}

impl From<ChallengeRow> for Challenge {
    fn from(r: ChallengeRow) -> Self {
        Challenge {
            hash: r.hash,
            user_id: r.user_id,
            user_epoch: epoch(r.user_epoch),
            provider: r.provider,
            amr: Amr::from_stored(&r.amr),
            identity: r.identity_provider.zip(r.identity_subject),
            passkey: r.passkey_id,
            attempts: u32::try_from(r.attempts).unwrap_or(u32::MAX),
            created_at: UnixTime(r.created_at),
            expires_at: UnixTime(r.expires_at),
        }
    }
}

/// The tags of backup codes as one bound value, read back with `json_each`.
fn json_list(items: &[String]) -> JsValue {
    text(&serde_json::Value::from(items.to_vec()).to_string())
}

/// The caller's live-session arguments `?1`–`?4`, as [`session_is_live`] reads them.
impl D1Store {
    /// Deletes the sign-ins waiting for a second step that expired before `before`.
    pub async fn purge_mfa_challenges(&self, before: UnixTime) -> Result<()> {
        self.run("DELETE FROM mfa_challenges WHERE expires_at < ?1", &[time(before)]).await?;
        Ok(())
    }

    async fn one_challenge(&self, sql: &str, args: &[JsValue]) -> Result<Option<Challenge>> {
        Ok(self.all::<ChallengeRow>(sql, args).await?.into_iter().next().map(Challenge::from))
    }
}

impl MfaStore for D1Store {
    async fn mfa_factors(&self, user_id: &UserId) -> Result<StoredFactors> {
        // One batch, one snapshot: the TOTP, the codes and the passkeys agree.
        let id = [text(user_id.as_str())];
        let totp =
            self.stmt("SELECT secret, confirmed_at, last_step, backup_set FROM mfa_totp WHERE user_id = ?1", &id)?;
        let codes = self.stmt("SELECT COUNT(*) AS total FROM mfa_backup_codes WHERE user_id = ?1", &id)?;
        let passkeys = self.stmt("SELECT COUNT(*) AS total FROM passkeys WHERE user_id = ?1", &id)?;
        let results = self.batch(vec![totp, codes, passkeys]).await?;
        let [totp, codes, passkeys] = results.as_slice() else {
            return Err(D1.failed("short batch result"));
        };
        let totp = totp.results::<TotpRow>().or_unavailable(D1)?.into_iter().next().map(|r| StoredTotp {
            sealed: r.secret,
            confirmed: r.confirmed_at.is_some(),
            last_step: r.last_step.and_then(|s| u64::try_from(s).ok()),
            backup_set: r.backup_set,
        });
        let backup_codes = codes.results::<CountRow>().or_unavailable(D1)?.first().map_or(0, |r| r.total);
        let passkeys = passkeys.results::<CountRow>().or_unavailable(D1)?.first().map_or(0, |r| r.total);
        Ok(StoredFactors {
            totp,
            backup_codes: u32::try_from(backup_codes).unwrap_or(0),
            passkeys: u32::try_from(passkeys).unwrap_or(0),
        })
    }

    async fn enroll_totp(&self, caller: &LiveSession<'_>, sealed: &str) -> Result<Option<bool>> {
        let live = session_is_live(2, 1, 3, 4);
        let [uid, sid, now, age] = caller_args(caller);
        // An enrolment replaces an enrolment, never a TOTP that is on.
        let put = self.stmt(
            &format!(
                "INSERT INTO mfa_totp (user_id, secret, created_at) SELECT ?1, ?5, ?3 WHERE {live} \
                 ON CONFLICT(user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at, \
                 last_step = NULL WHERE mfa_totp.confirmed_at IS NULL"
            ),
            &[uid.clone(), sid.clone(), now.clone(), age.clone(), text(sealed)],
        )?;
        let check = self.stmt(&format!("SELECT {live} AS total"), &[uid, sid, now, age])?;
        let results = self.batch(vec![put, check]).await?;
        let (Some(put), Some(check)) = (results.first(), results.get(1)) else {
            return Err(D1.failed("short batch result"));
        };
        let live = check.results::<CountRow>().or_unavailable(D1)?.first().is_some_and(|r| r.total != 0);
        Ok(live.then_some(changes(put)? == 1))
    }

    async fn confirm_totp(
        &self,
        caller: &LiveSession<'_>,
        sealed: &str,
        step: u64,
        backup_hashes: &[String],
        backup_set: &str,
        reason: &str,
    ) -> Result<Option<u64>> {
        // Every statement is conditioned on the enrolment as it stands before
        // the last one, which alone changes it: all happen, or none.
        let live = session_is_live(2, 1, 3, 4);
        let pending = "EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = ?1 AND confirmed_at IS NULL AND secret = ?5)";
        let [uid, sid, now, age] = caller_args(caller);
        let args =
            [uid, sid, now, age, text(sealed), json_list(backup_hashes), text(reason), int_u(step), text(backup_set)];
        let stmts = vec![
            self.stmt(
                &format!("DELETE FROM mfa_backup_codes WHERE user_id = ?1 AND {pending} AND {live}"),
                &args[..5],
            )?,
            self.stmt(
                &format!(
                    "INSERT INTO mfa_backup_codes (user_id, hash, created_at) \
                     SELECT ?1, value, ?3 FROM json_each(?6) WHERE {pending} AND {live}"
                ),
                &args[..6],
            )?,
            // The sessions signed in with one factor end.
            self.stmt(
                &format!(
                    "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?7 \
                     WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL AND {pending} AND {live} RETURNING id"
                ),
                &args[..7],
            )?,
            self.stmt(
                &format!(
                    "UPDATE mfa_totp SET confirmed_at = ?3, last_step = ?8, backup_set = ?9 \
                     WHERE user_id = ?1 AND confirmed_at IS NULL AND secret = ?5 AND {live}"
                ),
                &args,
            )?,
        ];
        let results = self.batch(stmts).await?;
        let (Some(revoked), Some(confirmed)) = (results.get(2), results.get(3)) else {
            return Err(D1.failed("short batch result"));
        };
        Ok((changes(confirmed)? == 1).then_some(returned(revoked)? as u64))
    }

    async fn use_totp_step(&self, user_id: &UserId, sealed: &str, step: u64) -> Result<bool> {
        let n = self
            .run(
                "UPDATE mfa_totp SET last_step = ?3 WHERE user_id = ?1 AND secret = ?2 AND confirmed_at IS NOT NULL \
                 AND (last_step IS NULL OR last_step < ?3)",
                &[text(user_id.as_str()), text(sealed), int_u(step)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn use_backup_code(&self, user_id: &UserId, hash: &str) -> Result<bool> {
        let n = self
            .run("DELETE FROM mfa_backup_codes WHERE user_id = ?1 AND hash = ?2", &[text(user_id.as_str()), text(hash)])
            .await?;
        Ok(n == 1)
    }

    async fn replace_backup_codes(
        &self,
        caller: &LiveSession<'_>,
        read_set: Option<&str>,
        new_set: &str,
        hashes: &[String],
    ) -> Result<Option<bool>> {
        let live = session_is_live(2, 1, 3, 4);
        // Every statement is conditioned on the set as it stands before the
        // last one, which alone changes it: all happen, or none.
        let current =
            "EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = ?1 AND confirmed_at IS NOT NULL AND backup_set IS ?5)";
        let [uid, sid, now, age] = caller_args(caller);
        let args = [uid, sid, now, age, opt_text(read_set), json_list(hashes), text(new_set)];
        let stmts = vec![
            self.stmt(
                &format!("DELETE FROM mfa_backup_codes WHERE user_id = ?1 AND {current} AND {live}"),
                &args[..5],
            )?,
            self.stmt(
                &format!(
                    "INSERT INTO mfa_backup_codes (user_id, hash, created_at) \
                     SELECT ?1, value, ?3 FROM json_each(?6) WHERE {current} AND {live}"
                ),
                &args[..6],
            )?,
            self.stmt(
                &format!(
                    "UPDATE mfa_totp SET backup_set = ?7 \
                     WHERE user_id = ?1 AND confirmed_at IS NOT NULL AND backup_set IS ?5 AND {live}"
                ),
                &args,
            )?,
            self.stmt(&format!("SELECT {live} AS total"), &args[..4])?,
        ];
        let results = self.batch(stmts).await?;
        let (Some(replaced), Some(check)) = (results.get(2), results.get(3)) else {
            return Err(D1.failed("short batch result"));
        };
        let live = check.results::<CountRow>().or_unavailable(D1)?.first().is_some_and(|r| r.total != 0);
        Ok(live.then_some(changes(replaced)? > 0))
    }

    async fn remove_factors(&self, caller: &LiveSession<'_>, reason: &str) -> Result<Option<FactorsRemoved>> {
        let (live, on) = (session_is_live(2, 1, 3, 4), mfa_on(1));
        let args = [
            text(caller.user_id.as_str()),
            text(caller.session_id.as_str()),
            time(caller.now),
            max_age(caller.max_age_secs),
            text(reason),
        ];
        let stmts = vec![
            // Decided on the TOTP before the delete below: on, then its sessions end.
            self.stmt(
                &format!(
                    "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?5 WHERE user_id = ?1 AND revoked_at IS NULL \
                     AND id <> ?2 AND {on} AND {live} RETURNING id"
                ),
                &args,
            )?,
            self.stmt(&format!("DELETE FROM mfa_backup_codes WHERE user_id = ?1 AND {live}"), &args[..4])?,
            self.stmt(
                &format!("DELETE FROM mfa_totp WHERE user_id = ?1 AND {live} RETURNING confirmed_at"),
                &args[..4],
            )?,
            self.stmt(&format!("SELECT {live} AS total"), &args[..4])?,
        ];
        let results = self.batch(stmts).await?;
        let [revoked, _, removed, check] = results.as_slice() else {
            return Err(D1.failed("short batch result"));
        };
        if check.results::<CountRow>().or_unavailable(D1)?.first().is_none_or(|r| r.total == 0) {
            return Ok(None);
        }
        let totp = removed.results::<ConfirmedRow>().or_unavailable(D1)?.iter().any(|r| r.confirmed_at.is_some());
        Ok(Some(FactorsRemoved { totp, revoked_sessions: returned(revoked)? as u64 }))
    }

    async fn reset_factors(&self, user_id: &UserId, now: UnixTime, reason: &str) -> Result<FactorsReset> {
        let on = mfa_on(1);
        let args = [text(user_id.as_str()), time(now), text(reason)];
        let stmts = vec![
            // Decided on the factors before the deletes below.
            self.stmt(
                &format!(
                    "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 WHERE user_id = ?1 AND revoked_at IS NULL \
                     AND ({on} OR EXISTS (SELECT 1 FROM passkeys WHERE user_id = ?1)) RETURNING id"
                ),
                &args,
            )?,
            self.stmt("DELETE FROM mfa_backup_codes WHERE user_id = ?1", &args[..1])?,
            self.stmt("DELETE FROM mfa_totp WHERE user_id = ?1 RETURNING confirmed_at", &args[..1])?,
            self.stmt("DELETE FROM passkeys WHERE user_id = ?1 RETURNING id", &args[..1])?,
        ];
        let results = self.batch(stmts).await?;
        let [revoked, _, removed, passkeys] = results.as_slice() else {
            return Err(D1.failed("short batch result"));
        };
        let totp = removed.results::<ConfirmedRow>().or_unavailable(D1)?.iter().any(|r| r.confirmed_at.is_some());
        let passkeys = passkeys.results::<IdRow>().or_unavailable(D1)?.into_iter().map(|r| r.id).collect();
        Ok(FactorsReset { totp, passkeys, revoked_sessions: returned(revoked)? as u64 })
    }

    async fn put_mfa_challenge(&self, c: &Challenge) -> Result<()> {
        let (provider, subject) = c.identity.as_ref().map(|(p, s)| (p.as_str(), s.as_str())).unzip();
        let expired = self.stmt(
            "DELETE FROM mfa_challenges WHERE user_id = ?1 AND expires_at <= ?2",
            &[text(c.user_id.as_str()), time(c.created_at)],
        )?;
        let insert = self.stmt(
            &format!(
                "INSERT INTO mfa_challenges ({CHALLENGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ),
            &[
                text(&c.hash),
                text(c.user_id.as_str()),
                int_u(c.user_epoch),
                text(&c.provider),
                text(&c.amr.to_stored()),
                opt_text(provider),
                opt_text(subject),
                opt_text(c.passkey.as_deref()),
                int(i64::from(c.attempts)),
                time(c.created_at),
                time(c.expires_at),
            ],
        )?;
        self.batch(vec![expired, insert]).await?;
        Ok(())
    }

    async fn count_mfa_attempt(&self, hash: &str, now: UnixTime, max_attempts: u32) -> Result<Option<Challenge>> {
        self.one_challenge(
            &format!(
                "UPDATE mfa_challenges SET attempts = attempts + 1 \
                 WHERE hash = ?1 AND expires_at > ?2 AND attempts < ?3 RETURNING {CHALLENGE_COLUMNS}"
            ),
            &[text(hash), time(now), int(i64::from(max_attempts))],
        )
        .await
    }

    async fn take_mfa_challenge(&self, hash: &str, now: UnixTime) -> Result<Option<Challenge>> {
        self.one_challenge(
            &format!("DELETE FROM mfa_challenges WHERE hash = ?1 AND expires_at > ?2 RETURNING {CHALLENGE_COLUMNS}"),
            &[text(hash), time(now)],
        )
        .await
    }
}
