//! [`OAuthStore`] on D1: sign-in states, exchange codes and linked
//! identities (`oauth_states`, `oauth_exchange_codes`, `oauth_accounts`).

use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::D1PreparedStatement;

use super::{changes, epoch, int, int_u, max_age, opt_text, session_is_live, text, time, CountRow, D1Store};
use crate::core::error::Error;
use crate::core::ids::{SessionId, UserId};
use crate::core::oauth::{CodeChallenge, LinkedIdentity, OAuthState, OAuthStore, StateTake, Unlink};
use crate::core::ports::Result;
use crate::core::session::LiveSession;
use crate::core::time::UnixTime;
use crate::core::users::User;
use crate::edge::error::{Dependency::D1, EdgeResult};

#[derive(Deserialize)]
struct OAuthStateRow {
    hash: String,
    provider: String,
    code_verifier: String,
    nonce: String,
    redirect_to: String,
    link_user_id: Option<UserId>,
    link_epoch: i64,
    link_session_id: Option<String>,
    binding_hash: String,
    code_challenge: Option<String>,
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
    user_id: UserId,
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
    fn insert_identity(&self, i: &LinkedIdentity) -> Result<D1PreparedStatement> {
        // OR IGNORE: a taken (provider, subject) or (user, provider) writes nothing.
        self.stmt(
            "INSERT OR IGNORE INTO oauth_accounts (provider, subject, user_id, email, email_verified, linked_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?3)",
            &[
                text(&i.provider),
                text(&i.subject),
                text(i.user_id.as_str()),
                opt_text(i.email.as_deref()),
                int(i64::from(i.email_verified)),
                time(i.linked_at),
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

/// The columns of a sign-in or link state, in the order of [`state_args`].
const STATE_COLUMNS: &str = "hash, provider, code_verifier, nonce, redirect_to, link_user_id, link_epoch, \
                             binding_hash, created_at, expires_at, code_challenge, link_session_id";
/// Their placeholders, `?1` to `?12`.
const STATE_VALUES: &str = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12";

/// `st` bound in the order of [`STATE_COLUMNS`].
fn state_args(st: &OAuthState) -> Vec<JsValue> {
    vec![
        text(&st.hash),
        text(&st.provider),
        text(&st.code_verifier),
        text(&st.nonce),
        text(&st.redirect_to),
        opt_text(st.link_user_id.as_ref().map(UserId::as_str)),
        int_u(st.link_epoch),
        text(&st.binding_hash),
        time(st.created_at),
        time(st.expires_at),
        opt_text(st.code_challenge.as_ref().map(CodeChallenge::as_str)),
        opt_text(st.link_session_id.as_ref().map(SessionId::as_str)),
    ]
}

impl OAuthStore for D1Store {
    async fn put_oauth_state(&self, st: &OAuthState) -> Result<()> {
        self.run(&format!("INSERT INTO oauth_states ({STATE_COLUMNS}) VALUES ({STATE_VALUES})"), &state_args(st))
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
                     link_session_id, binding_hash, code_challenge, created_at, expires_at",
                    &[text(hash), text(binding_hash), time(now)],
                )
                .await?;
            if let Some(r) = rows.into_iter().next() {
                // Only parsed challenges are stored; one that no longer parses
                // fails closed (its code would otherwise be unbound).
                let code_challenge =
                    match r.code_challenge.as_deref() {
                        None => None,
                        Some(c) => Some(CodeChallenge::parse(c).ok_or_else(|| {
                            Error::Internal("oauth_states: a stored code_challenge is malformed".into())
                        })?),
                    };
                return Ok(StateTake::Taken(Box::new(OAuthState {
                    hash: r.hash,
                    provider: r.provider,
                    code_verifier: r.code_verifier,
                    nonce: r.nonce,
                    redirect_to: r.redirect_to,
                    link_user_id: r.link_user_id,
                    link_epoch: epoch(r.link_epoch),
                    link_session_id: r.link_session_id.map(SessionId::new),
                    binding_hash: r.binding_hash,
                    code_challenge,
                    created_at: UnixTime(r.created_at),
                    expires_at: UnixTime(r.expires_at),
                })));
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
        let mut args = state_args(st);
        args.extend([
            text(caller.user_id.as_str()),
            text(caller.session_id.as_str()),
            time(caller.now),
            max_age(caller.max_age_secs),
        ]);
        let n = self
            .run(
                &format!(
                    "INSERT INTO oauth_states ({STATE_COLUMNS}) SELECT {STATE_VALUES} WHERE ?6 = ?13 AND ?12 = ?14 \
                     AND {} AND EXISTS (SELECT 1 FROM users WHERE id = ?6 AND auth_epoch = ?7 AND banned = 0)",
                    session_is_live(14, 6, 15, 16)
                ),
                &args,
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

    async fn identities_of(&self, user_id: &UserId) -> Result<Vec<LinkedIdentity>> {
        let sql =
            format!("SELECT {IDENTITY_COLUMNS} FROM oauth_accounts WHERE user_id = ?1 ORDER BY linked_at, provider");
        Ok(self
            .all::<IdentityRow>(&sql, &[text(user_id.as_str())])
            .await?
            .into_iter()
            .map(LinkedIdentity::from)
            .collect())
    }

    async fn link_identity(&self, identity: &LinkedIdentity, user_epoch: u64, by: &LiveSession<'_>) -> Result<bool> {
        // As `insert_identity`, at the account's epoch `?7`, and only while
        // the session that started the link is live (`?8`…`?10`), decided
        // in the same write.
        let res = self
            .stmt(
                &format!(
                    "INSERT OR IGNORE INTO oauth_accounts (provider, subject, user_id, email, email_verified, linked_at) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?3 AND auth_epoch = ?7) \
                     AND ?3 = ?11 AND {}",
                    session_is_live(8, 3, 9, 10)
                ),
                &[
                    text(&identity.provider),
                    text(&identity.subject),
                    text(identity.user_id.as_str()),
                    opt_text(identity.email.as_deref()),
                    int(i64::from(identity.email_verified)),
                    time(identity.linked_at),
                    int_u(user_epoch),
                    text(by.session_id.as_str()),
                    time(by.now),
                    max_age(by.max_age_secs),
                    text(by.user_id.as_str()),
                ],
            )?
            .run()
            .await
            .or_unavailable(D1)?;
        Ok(changes(&res)? == 1)
    }

    async fn create_oauth_user(&self, u: &User, identity: &LinkedIdentity) -> Result<bool> {
        let insert_user = self.stmt(
            "INSERT INTO users (id, email, name, password_hash, email_verified, avatar_url, phone, banned, created_at, updated_at, locale) \
             VALUES (?1, ?2, ?3, NULL, ?4, ?5, NULL, 0, ?6, ?6, ?7) ON CONFLICT(email) DO NOTHING",
            &[
                text(u.id.as_str()),
                text(&u.email),
                opt_text(u.name.as_deref()),
                int(i64::from(u.email_verified)),
                opt_text(u.avatar_url.as_deref()),
                time(u.created_at),
                opt_text(u.locale.as_deref()),
            ],
        )?;
        // If the identity was linked by a racing request, the new user goes
        // again in the same transaction: no account without its identity.
        let undo = self.stmt(
            "DELETE FROM users WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM oauth_accounts WHERE user_id = ?1)",
            &[text(u.id.as_str())],
        )?;
        let results = self.batch(vec![insert_user, self.insert_identity(identity)?, undo]).await?;
        match results.get(1) {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(D1.failed("short batch result")),
        }
    }

    async fn unlink_identity(&self, caller: &LiveSession<'_>, provider: &str) -> Result<Unlink> {
        let live = session_is_live(3, 1, 4, 5);
        let args = [
            text(caller.user_id.as_str()),
            text(provider),
            text(caller.session_id.as_str()),
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
            return Err(D1.failed("short batch result"));
        };
        if changes(unlink)? > 0 {
            return Ok(Unlink::Done);
        }
        let Some(why) = why.results::<UnlinkWhyRow>().or_unavailable(D1)?.into_iter().next() else {
            return Err(D1.failed("unlink: no answer"));
        };
        Ok(match (why.live != 0, why.linked != 0) {
            (false, _) => Unlink::SessionEnded,
            (true, true) => Unlink::LastMethod,
            (true, false) => Unlink::NotLinked,
        })
    }
}
