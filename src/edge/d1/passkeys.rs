//! [`PasskeyStore`] on D1: passkeys (`passkeys`) and the challenges of
//! ceremonies in flight (`passkey_challenges`).

use serde::Deserialize;
use wasm_bindgen::JsValue;

use super::{caller_args, changes, int, opt_text, returned, session_is_live, text, time, CountRow, D1Store};
use crate::core::ids::UserId;
use crate::core::passkey::{Ceremony, Passkey, PasskeyAdded, PasskeyChallenge};
use crate::core::ports::{PasskeyStore, Result};
use crate::core::session::LiveSession;
use crate::core::time::UnixTime;
use crate::edge::error::{Dependency::D1, EdgeResult};

const PASSKEY_COLUMNS: &str = "id, user_id, credential_id, public_key, alg, sign_count, backup_eligible, backed_up, \
     transports, aaguid, name, created_at, last_used_at";
const CHALLENGE_COLUMNS: &str = "id, ceremony, challenge, user_id, name, allowed_credentials, expires_at";

#[derive(Deserialize)]
struct PasskeyRow {
    id: String,
    user_id: UserId,
    credential_id: String,
    public_key: String,
    alg: i64,
    sign_count: i64,
    backup_eligible: i64,
    backed_up: i64,
    transports: String,
    aaguid: String,
    name: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<PasskeyRow> for Passkey {
    fn from(r: PasskeyRow) -> Self {
        Passkey {
            id: r.id,
            user_id: r.user_id,
            credential_id: r.credential_id,
            public_key: r.public_key,
            alg: r.alg,
            sign_count: u32::try_from(r.sign_count).unwrap_or(u32::MAX),
            backup_eligible: r.backup_eligible != 0,
            backed_up: r.backed_up != 0,
            transports: r.transports.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
            aaguid: r.aaguid,
            name: r.name,
            created_at: UnixTime(r.created_at),
            last_used_at: r.last_used_at.map(UnixTime),
        }
    }
}

#[derive(Deserialize)]
struct ChallengeRow {
    id: String,
    ceremony: String,
    challenge: String,
    user_id: Option<UserId>,
    name: Option<String>,
    allowed_credentials: Option<String>,
    expires_at: i64,
}

impl From<ChallengeRow> for PasskeyChallenge {
    fn from(r: ChallengeRow) -> Self {
        PasskeyChallenge {
            id: r.id,
            ceremony: if r.ceremony == Ceremony::Create.as_str() { Ceremony::Create } else { Ceremony::Get },
            challenge: r.challenge,
            user_id: r.user_id,
            name: r.name,
            // Space-separated (base64url has no space); NULL: discoverable.
            allowed: r.allowed_credentials.map(|ids| ids.split(' ').map(str::to_string).collect()),
            expires_at: UnixTime(r.expires_at),
        }
    }
}

#[derive(Deserialize)]
struct AddCheckRow {
    live: i64,
    duplicate: i64,
}

/// The caller's live-session arguments `?1`–`?4`, as [`session_is_live`] reads them.
fn flag(b: bool) -> JsValue {
    int(i64::from(b))
}

impl D1Store {
    /// Deletes the ceremony challenges that expired before `before`.
    pub async fn purge_passkey_challenges(&self, before: UnixTime) -> Result<()> {
        self.run("DELETE FROM passkey_challenges WHERE expires_at < ?1", &[time(before)]).await?;
        Ok(())
    }

    async fn one_passkey_challenge(&self, sql: &str, args: &[JsValue]) -> Result<Option<PasskeyChallenge>> {
        Ok(self.all::<ChallengeRow>(sql, args).await?.into_iter().next().map(PasskeyChallenge::from))
    }

    /// Whether the batch's `SELECT … AS total` check said the session is live.
    fn caller_was_live(check: &worker::D1Result) -> Result<bool> {
        Ok(check.results::<CountRow>().or_unavailable(D1)?.first().is_some_and(|r| r.total != 0))
    }
}

impl PasskeyStore for D1Store {
    async fn put_passkey_challenge(&self, c: &PasskeyChallenge) -> Result<()> {
        let now = time(c.expires_at.minus_secs(crate::core::passkey::CHALLENGE_TTL_SECS));
        // A user's earlier registration challenges go too: one open
        // registration per user (sign-in challenges have no user).
        let superseded = self.stmt(
            "DELETE FROM passkey_challenges WHERE user_id IS ?1 AND (expires_at <= ?2 OR ceremony = 'register')",
            &[opt_text(c.user_id.as_ref().map(UserId::as_str)), now],
        )?;
        let insert = self.stmt(
            &format!("INSERT INTO passkey_challenges ({CHALLENGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            &[
                text(&c.id),
                text(c.ceremony.as_str()),
                text(&c.challenge),
                opt_text(c.user_id.as_ref().map(UserId::as_str)),
                opt_text(c.name.as_deref()),
                opt_text(c.allowed.as_ref().map(|ids| ids.join(" ")).as_deref()),
                time(c.expires_at),
            ],
        )?;
        self.batch(vec![superseded, insert]).await?;
        Ok(())
    }

    async fn take_registration_challenge(
        &self,
        user_id: &UserId,
        challenge: &str,
        now: UnixTime,
    ) -> Result<Option<PasskeyChallenge>> {
        self.one_passkey_challenge(
            &format!(
                "DELETE FROM passkey_challenges WHERE ceremony = 'register' AND user_id = ?1 AND challenge = ?2 \
                 AND expires_at > ?3 RETURNING {CHALLENGE_COLUMNS}"
            ),
            &[text(user_id.as_str()), text(challenge), time(now)],
        )
        .await
    }

    async fn take_login_challenge(&self, id: &str, now: UnixTime) -> Result<Option<PasskeyChallenge>> {
        self.one_passkey_challenge(
            &format!(
                "DELETE FROM passkey_challenges WHERE id = ?1 AND ceremony = 'login' AND expires_at > ?2 \
                 RETURNING {CHALLENGE_COLUMNS}"
            ),
            &[text(id), time(now)],
        )
        .await
    }

    async fn passkeys(&self, user_id: &UserId) -> Result<Vec<Passkey>> {
        let rows = self
            .all::<PasskeyRow>(
                &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ?1 ORDER BY created_at, id"),
                &[text(user_id.as_str())],
            )
            .await?;
        Ok(rows.into_iter().map(Passkey::from).collect())
    }

    async fn passkey_by_credential(&self, credential_id: &str) -> Result<Option<Passkey>> {
        let row = self
            .first::<PasskeyRow>(
                &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1"),
                &[text(credential_id)],
            )
            .await?;
        Ok(row.map(Passkey::from))
    }

    async fn add_passkey(&self, caller: &LiveSession<'_>, k: &Passkey, max: u32) -> Result<Option<PasskeyAdded>> {
        let live = session_is_live(2, 1, 3, 4);
        let [uid, sid, now, age] = caller_args(caller);
        let args = [
            uid,
            sid,
            now,
            age,
            text(&k.id),
            text(&k.credential_id),
            text(&k.public_key),
            int(k.alg),
            int(i64::from(k.sign_count)),
            flag(k.backup_eligible),
            flag(k.backed_up),
            text(&k.transports.join(",")),
            text(&k.aaguid),
            text(&k.name),
            int(i64::from(max)),
        ];
        // A credential id held anywhere, or a full account, stops the insert.
        let insert = self.stmt(
            &format!(
                "INSERT INTO passkeys ({PASSKEY_COLUMNS}) \
                 SELECT ?5, ?1, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?3, NULL \
                 WHERE {live} AND (SELECT COUNT(*) FROM passkeys WHERE user_id = ?1) < ?15 \
                 ON CONFLICT DO NOTHING"
            ),
            &args,
        )?;
        let check = self.stmt(
            &format!(
                "SELECT {live} AS live, \
                 EXISTS (SELECT 1 FROM passkeys WHERE credential_id = ?6 AND id <> ?5) AS duplicate"
            ),
            &args[..6],
        )?;
        let results = self.batch(vec![insert, check]).await?;
        let (Some(insert), Some(check)) = (results.first(), results.get(1)) else {
            return Err(D1.failed("short batch result"));
        };
        if changes(insert)? == 1 {
            return Ok(Some(PasskeyAdded::Added));
        }
        let Some(c) = check.results::<AddCheckRow>().or_unavailable(D1)?.into_iter().next() else {
            return Err(D1.failed("empty check"));
        };
        Ok(match (c.live != 0, c.duplicate != 0) {
            (false, _) => None,
            (true, true) => Some(PasskeyAdded::Duplicate),
            (true, false) => Some(PasskeyAdded::TooMany),
        })
    }

    async fn use_passkey(&self, id: &str, sign_count: u32, backed_up: bool, now: UnixTime) -> Result<bool> {
        // `core::passkey::counter_ok`, decided in the write.
        let n = self
            .run(
                "UPDATE passkeys SET sign_count = ?2, backed_up = ?3, last_used_at = ?4 \
                 WHERE id = ?1 AND ((sign_count = 0 AND ?2 = 0) OR sign_count < ?2)",
                &[text(id), int(i64::from(sign_count)), flag(backed_up), time(now)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn rename_passkey(&self, caller: &LiveSession<'_>, id: &str, name: &str) -> Result<Option<bool>> {
        let live = session_is_live(2, 1, 3, 4);
        let [uid, sid, now, age] = caller_args(caller);
        let args = [uid, sid, now, age, text(id), text(name)];
        let rename =
            self.stmt(&format!("UPDATE passkeys SET name = ?6 WHERE id = ?5 AND user_id = ?1 AND {live}"), &args)?;
        let check = self.stmt(&format!("SELECT {live} AS total"), &args[..4])?;
        let results = self.batch(vec![rename, check]).await?;
        let (Some(rename), Some(check)) = (results.first(), results.get(1)) else {
            return Err(D1.failed("short batch result"));
        };
        Ok(Self::caller_was_live(check)?.then_some(changes(rename)? == 1))
    }

    async fn remove_passkey(&self, caller: &LiveSession<'_>, id: &str, reason: &str) -> Result<Option<Option<u64>>> {
        let live = session_is_live(2, 1, 3, 4);
        let [uid, sid, now, age] = caller_args(caller);
        let args = [uid, sid, now, age, text(id), text(reason)];
        let mine = "EXISTS (SELECT 1 FROM passkeys WHERE id = ?5 AND user_id = ?1)";
        // Decided on the passkey before the delete below: the other sessions
        // end with it (a change of factors, as turning TOTP off).
        let revoke = self.stmt(
            &format!(
                "UPDATE sessions SET revoked_at = ?3, revoke_reason = ?6 \
                 WHERE user_id = ?1 AND id <> ?2 AND revoked_at IS NULL AND {mine} AND {live} RETURNING id"
            ),
            &args,
        )?;
        let delete =
            self.stmt(&format!("DELETE FROM passkeys WHERE id = ?5 AND user_id = ?1 AND {live}"), &args[..5])?;
        let check = self.stmt(&format!("SELECT {live} AS total"), &args[..4])?;
        let results = self.batch(vec![revoke, delete, check]).await?;
        let [revoked, deleted, check] = results.as_slice() else {
            return Err(D1.failed("short batch result"));
        };
        if !Self::caller_was_live(check)? {
            return Ok(None);
        }
        if changes(deleted)? == 0 {
            return Ok(Some(None));
        }
        Ok(Some(Some(returned(revoked)? as u64)))
    }
}
