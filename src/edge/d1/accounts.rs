//! [`AccountStore`] on D1: account changes that move the epoch or revoke
//! sessions (verification, address proof and takeover, passwords, bans),
//! and the admin listing.

use serde::Deserialize;

use super::{
    caller_args, changes, epoch, int, int_u, max_age, opt_text, returned, session_is_live, text, time, CountRow,
    D1Store, IdRow, UserRow, USER_COLUMNS,
};
use crate::core::ids::{SessionId, UserId};
use crate::core::ports::{AccountStore, Result, UserStore};
use crate::core::session::LiveSession;
use crate::core::takeover::{AddressProof, ProfileBefore, Proven, TAKEOVER_REVOKE_REASON};
use crate::core::time::UnixTime;
use crate::core::users::{ProfileEdit, ProfileUpdate, User, UserPage};
use crate::edge::error::{Dependency::D1, EdgeResult};

/// Users matching an optional `LIKE` pattern `?1` on email or name.
const USER_FILTER: &str = "(?1 IS NULL OR u.email LIKE ?1 ESCAPE '\\' OR u.name LIKE ?1 ESCAPE '\\')";

/// The account is at the proven address and unverified: a takeover.
const UNVERIFIED: &str = "EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2 AND email_verified = 0)";
/// The proof's identity (`?3`, `?4`) is linked to the account.
const LINKED: &str = "EXISTS (SELECT 1 FROM oauth_accounts WHERE provider = ?3 AND subject = ?4 AND user_id = ?1)";
/// Nothing stops the proof's identity (`?3`, `?4`) from being linked to the
/// account once the takeover's deletions are done: it is no other account's,
/// and the account keeps no other identity of that provider (one whose
/// provider verified this address `?2`). The same before and after those
/// deletions, which remove neither kind.
const LINK_UNBLOCKED: &str = "NOT EXISTS (SELECT 1 FROM oauth_accounts o \
     WHERE (o.provider = ?3 AND o.subject = ?4 AND o.user_id <> ?1) \
        OR (o.user_id = ?1 AND o.provider = ?3 AND o.subject <> ?4 AND o.email_verified = 1 AND o.email IS ?2))";

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
    name: Option<String>,
    avatar_url: Option<String>,
    phone: Option<String>,
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
struct ConfirmedRow {
    confirmed_at: Option<i64>,
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

impl AccountStore for D1Store {
    async fn set_email_verified(&self, holder: &LiveSession<'_>, email: &str) -> Result<Option<bool>> {
        let args = [
            text(holder.user_id.as_str()),
            text(holder.session_id.as_str()),
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
            return Err(D1.failed("short batch result"));
        };
        let live = check.results::<CountRow>().or_unavailable(D1)?.first().is_some_and(|r| r.total != 0);
        Ok(live.then_some(changes(set)? == 1))
    }

    async fn prove_address(&self, p: &AddressProof<'_>) -> Result<Option<Proven>> {
        // One transaction, in this order, every statement conditioned on the
        // state the earlier ones leave: the takeover's deletions and
        // revocations are decided on the users row, which only the last
        // write changes, so all of them see the account as it was. With an
        // identity to link, the takeover happens only if it ends up linked:
        // the earlier holder's second factors and identities go only if the
        // link will then succeed (the identity is no other account's, and the
        // account keeps no other identity of that provider), the rest only
        // if it did.
        let (who, now, new_password) =
            ([text(p.user_id.as_str()), text(p.email)], time(p.now), opt_text(p.new_password));
        // The prover's profile replaces the earlier holder's (`core::takeover`).
        let profile = [opt_text(p.profile.name), opt_text(p.profile.avatar_url), opt_text(p.profile.locale)];
        let before = self.stmt(
            "SELECT email_verified, password_hash IS NOT NULL AS had_password, name, avatar_url, phone \
             FROM users WHERE id = ?1 AND email = ?2",
            &who,
        )?;
        let mut stmts = vec![before];
        match p.link {
            None => {
                // The earlier holder's second factors and passkeys go (`core::takeover`).
                stmts.push(self.stmt(
                    &format!("DELETE FROM mfa_totp WHERE user_id = ?1 AND {UNVERIFIED} RETURNING confirmed_at"),
                    &who,
                )?);
                stmts.push(
                    self.stmt(&format!("DELETE FROM mfa_backup_codes WHERE user_id = ?1 AND {UNVERIFIED}"), &who)?,
                );
                stmts.push(
                    self.stmt(&format!("DELETE FROM passkeys WHERE user_id = ?1 AND {UNVERIFIED} RETURNING id"), &who)?,
                );
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
                         AND ({UNVERIFIED} OR (?4 IS NOT NULL AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND email = ?2))) \
                         RETURNING id"
                    ),
                    &[who[0].clone(), who[1].clone(), now.clone(), new_password.clone(), text(revoke_reason(p))],
                )?);
                stmts.push(self.stmt(
                    // Every SET expression reads the row as it was: `email_verified = 0`
                    // is "this write takes the account over".
                    "UPDATE users SET password_hash = CASE WHEN ?4 IS NOT NULL THEN ?4 WHEN email_verified = 0 THEN NULL \
                     ELSE password_hash END, \
                     name = CASE WHEN email_verified = 0 THEN ?5 ELSE name END, \
                     avatar_url = CASE WHEN email_verified = 0 THEN ?6 ELSE avatar_url END, \
                     phone = CASE WHEN email_verified = 0 THEN NULL ELSE phone END, \
                     locale = CASE WHEN email_verified = 0 THEN ?7 ELSE locale END, \
                     email_verified = 1, auth_epoch = auth_epoch + 1, updated_at = ?3, \
                     taken_over_at = CASE WHEN email_verified = 0 THEN ?3 ELSE taken_over_at END \
                     WHERE id = ?1 AND email = ?2 AND (email_verified = 0 OR ?4 IS NOT NULL)",
                    &[who[0].clone(), who[1].clone(), now.clone(), new_password, profile[0].clone(), profile[1].clone(), profile[2].clone()],
                )?);
                stmts.push(self.stmt("SELECT auth_epoch, 0 AS linked FROM users WHERE id = ?1 AND email = ?2", &who)?);
            }
            Some(i) => {
                let ident = [who[0].clone(), who[1].clone(), text(&i.provider), text(&i.subject)];
                // The earlier holder's second factors go, if the takeover will happen.
                stmts.push(self.stmt(
                    &format!(
                        "DELETE FROM mfa_totp WHERE user_id = ?1 AND {UNVERIFIED} AND {LINK_UNBLOCKED} \
                         RETURNING confirmed_at"
                    ),
                    &ident,
                )?);
                stmts.push(self.stmt(
                    &format!("DELETE FROM mfa_backup_codes WHERE user_id = ?1 AND {UNVERIFIED} AND {LINK_UNBLOCKED}"),
                    &ident,
                )?);
                stmts.push(self.stmt(
                    &format!(
                        "DELETE FROM passkeys WHERE user_id = ?1 AND {UNVERIFIED} AND {LINK_UNBLOCKED} RETURNING id"
                    ),
                    &ident,
                )?);
                stmts.push(self.stmt(
                    &format!(
                        "DELETE FROM oauth_accounts WHERE user_id = ?1 AND NOT (email_verified = 1 AND email IS ?2) \
                         AND {UNVERIFIED} AND {LINK_UNBLOCKED} RETURNING provider"
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
                         AND {UNVERIFIED} AND {LINKED} RETURNING id"
                    ),
                    &[ident[0].clone(), ident[1].clone(), ident[2].clone(), ident[3].clone(), now.clone(), text(revoke_reason(p))],
                )?);
                stmts.push(self.stmt(
                    &format!(
                        "UPDATE users SET password_hash = NULL, email_verified = 1, auth_epoch = auth_epoch + 1, updated_at = ?5, \
                         taken_over_at = ?5, name = ?6, avatar_url = ?7, phone = NULL, locale = ?8 \
                         WHERE id = ?1 AND email = ?2 AND email_verified = 0 AND {LINKED}"
                    ),
                    &[
                        ident[0].clone(),
                        ident[1].clone(),
                        ident[2].clone(),
                        ident[3].clone(),
                        now,
                        profile[0].clone(),
                        profile[1].clone(),
                        profile[2].clone(),
                    ],
                )?);
                stmts.push(self.stmt(
                    &format!("SELECT auth_epoch, {LINKED} AS linked FROM users WHERE id = ?1 AND email = ?2"),
                    &ident,
                )?);
            }
        }
        let results = self.batch(stmts).await?;
        let [before, mfa, _codes, passkeys, dropped, .., update, after] = results.as_slice() else {
            return Err(D1.failed("short batch result"));
        };
        let Some(before) = before.results::<ProofBeforeRow>().or_unavailable(D1)?.into_iter().next() else {
            return Ok(None);
        };
        let Some(after) = after.results::<ProofAfterRow>().or_unavailable(D1)?.into_iter().next() else {
            return Ok(None);
        };
        // The revocation is the statement before the users update.
        let revoked = match results.len().checked_sub(3).and_then(|i| results.get(i)) {
            Some(r) => returned(r)? as u64,
            None => return Err(D1.failed("short batch result")),
        };
        let took_over = before.email_verified == 0 && changes(update)? == 1;
        Ok(Some(Proven {
            took_over,
            password_cleared: took_over && before.had_password != 0 && p.new_password.is_none(),
            revoked_sessions: revoked,
            dropped_providers: dropped
                .results::<ProviderRow>()
                .or_unavailable(D1)?
                .into_iter()
                .map(|r| r.provider)
                .collect(),
            linked: after.linked != 0,
            mfa_removed: mfa.results::<ConfirmedRow>().or_unavailable(D1)?.iter().any(|r| r.confirmed_at.is_some()),
            removed_passkeys: passkeys.results::<IdRow>().or_unavailable(D1)?.into_iter().map(|r| r.id).collect(),
            profile_fields: if took_over {
                ProfileBefore { name: before.name, avatar_url: before.avatar_url, phone: before.phone }
                    .changed_by(&p.profile)
            } else {
                Vec::new()
            },
            auth_epoch: epoch(after.auth_epoch),
        }))
    }

    async fn set_password(
        &self,
        user_id: &UserId,
        hash: &str,
        keep: Option<&SessionId>,
        user_epoch: u64,
        now: UnixTime,
        reason: &str,
    ) -> Result<Option<u64>> {
        // Revoke first, on the epoch the update then checks and moves: both
        // statements see the same users row, so they happen together or not.
        let revoke = self.stmt(
            "UPDATE sessions SET revoked_at = ?2, revoke_reason = ?3 \
             WHERE user_id = ?1 AND revoked_at IS NULL AND (?4 IS NULL OR id <> ?4) \
             AND EXISTS (SELECT 1 FROM users WHERE id = ?1 AND auth_epoch = ?5) RETURNING id",
            &[
                text(user_id.as_str()),
                time(now),
                text(reason),
                opt_text(keep.map(SessionId::as_str)),
                int_u(user_epoch),
            ],
        )?;
        let set = self.stmt(
            "UPDATE users SET password_hash = ?2, updated_at = ?3, auth_epoch = auth_epoch + 1 \
             WHERE id = ?1 AND auth_epoch = ?4",
            &[text(user_id.as_str()), text(hash), time(now), int_u(user_epoch)],
        )?;
        let results = self.batch(vec![revoke, set]).await?;
        match (results.first(), results.get(1)) {
            (Some(revoked), Some(set)) if changes(set)? == 1 => Ok(Some(returned(revoked)? as u64)),
            (Some(_), Some(_)) => Ok(None),
            _ => Err(D1.failed("short batch result")),
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
            return Err(D1.failed("short batch result"));
        };
        let users = page.results::<UserRow>().or_unavailable(D1)?.into_iter().map(User::from).collect();
        let total = count.results::<CountRow>().or_unavailable(D1)?.first().map_or(0, |r| r.total);
        Ok(UserPage { users, total: u64::try_from(total).unwrap_or(0) })
    }

    async fn update_profile(&self, u: &User, fields: &[String], now: UnixTime) -> Result<ProfileUpdate> {
        let writes = |name: &str| int(i64::from(fields.iter().any(|f| f == name)));
        // A new address also takes, in the same write, the links and codes
        // mailed to the old one before the account existed (no `user_id`):
        // they are held to whichever account has that address, and with none
        // they would stand again (`TOKEN_EPOCH_STANDS`).
        let orphans = self.stmt(
            "DELETE FROM email_tokens WHERE ?3 AND user_id IS NULL AND email <> ?2 \
             AND email = (SELECT email FROM users WHERE id = ?1) \
             AND NOT EXISTS (SELECT 1 FROM users o WHERE o.email = ?2 AND o.id <> ?1)",
            &[text(u.id.as_str()), text(&u.email), writes("email")],
        )?;
        // Only the columns the edit changes are written (`?9`…`?14`): a
        // concurrent edit of another one — the user's own name or language —
        // stands. A new address always writes the verification flag too.
        let update = self.stmt(
            "UPDATE users SET email = CASE WHEN ?9 THEN ?2 ELSE email END, \
             name = CASE WHEN ?10 THEN ?3 ELSE name END, \
             avatar_url = CASE WHEN ?11 THEN ?4 ELSE avatar_url END, \
             phone = CASE WHEN ?12 THEN ?5 ELSE phone END, \
             email_verified = CASE WHEN ?9 OR ?13 THEN ?6 ELSE email_verified END, \
             locale = CASE WHEN ?14 THEN ?8 ELSE locale END, updated_at = ?7, \
             auth_epoch = CASE WHEN ?9 AND email <> ?2 THEN auth_epoch + 1 ELSE auth_epoch END \
             WHERE id = ?1 AND (NOT ?9 OR NOT EXISTS (SELECT 1 FROM users o WHERE o.email = ?2 AND o.id <> ?1))",
            &[
                text(u.id.as_str()),
                text(&u.email),
                opt_text(u.name.as_deref()),
                opt_text(u.avatar_url.as_deref()),
                opt_text(u.phone.as_deref()),
                int(i64::from(u.email_verified)),
                time(now),
                opt_text(u.locale.as_deref()),
                writes("email"),
                writes("name"),
                writes("avatar_url"),
                writes("phone"),
                writes("email_verified"),
                writes("locale"),
            ],
        )?;
        let results = self.batch(vec![orphans, update]).await?;
        let n = match results.get(1) {
            Some(r) => changes(r)?,
            None => return Err(D1.failed("short batch result")),
        };
        if n == 1 {
            return Ok(ProfileUpdate::Updated);
        }
        Ok(match self.user_by_id(&u.id).await? {
            Some(_) => ProfileUpdate::EmailTaken,
            None => ProfileUpdate::NotFound,
        })
    }

    async fn edit_own_profile(&self, caller: &LiveSession<'_>, edit: &ProfileEdit) -> Result<bool> {
        let live = session_is_live(2, 1, 3, 4);
        let [uid, sid, now, age] = caller_args(caller);
        // Each column is written only when the edit gives it (`?5`, `?7`,
        // `?9`): an administrator's concurrent edit of another one stands.
        let given = |field: &Option<Option<String>>| int(i64::from(field.is_some()));
        let value = |field: &Option<Option<String>>| opt_text(field.as_ref().and_then(|v| v.as_deref()));
        let args = [
            uid,
            sid,
            now,
            age,
            given(&edit.name),
            value(&edit.name),
            given(&edit.avatar_url),
            value(&edit.avatar_url),
            given(&edit.locale),
            value(&edit.locale),
        ];
        let n = self
            .run(
                &format!(
                    "UPDATE users SET name = CASE WHEN ?5 THEN ?6 ELSE name END, \
                     avatar_url = CASE WHEN ?7 THEN ?8 ELSE avatar_url END, \
                     locale = CASE WHEN ?9 THEN ?10 ELSE locale END, updated_at = ?3 \
                     WHERE id = ?1 AND banned = 0 AND {live}"
                ),
                &args,
            )
            .await?;
        Ok(n == 1)
    }

    async fn delete_user(&self, user_id: &UserId) -> Result<bool> {
        // Roles, sessions (and their refresh tokens), emailed tokens, linked
        // OAuth identities and pending OAuth links go with the user: ON DELETE CASCADE, which D1 enforces. D1 counts the
        // cascaded rows in `changes` too, so any count means it was there.
        // In the same write go the links and codes mailed to the address
        // before the account existed (no `user_id`): held to whichever
        // account has the address, with none they would stand again.
        let id = [text(user_id.as_str())];
        let orphans = self.stmt(
            "DELETE FROM email_tokens WHERE user_id IS NULL AND email = (SELECT email FROM users WHERE id = ?1)",
            &id,
        )?;
        let results = self.batch(vec![orphans, self.stmt("DELETE FROM users WHERE id = ?1", &id)?]).await?;
        match results.get(1) {
            Some(r) => Ok(changes(r)? > 0),
            None => Err(D1.failed("short batch result")),
        }
    }

    async fn set_banned(&self, user_id: &UserId, banned: bool, now: UnixTime) -> Result<bool> {
        let mut stmts = vec![self.stmt(
            "UPDATE users SET banned = ?2, updated_at = ?3, \
             auth_epoch = CASE WHEN ?2 = 1 THEN auth_epoch + 1 ELSE auth_epoch END WHERE id = ?1 AND banned <> ?2",
            &[text(user_id.as_str()), int(i64::from(banned)), time(now)],
        )?];
        if banned {
            stmts.push(self.stmt(
                "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'banned' WHERE user_id = ?1 AND revoked_at IS NULL",
                &[text(user_id.as_str()), time(now)],
            )?);
        }
        let results = self.batch(stmts).await?;
        match results.first() {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(D1.failed("empty batch result")),
        }
    }

    async fn add_role(&self, user_id: &UserId, role: &str, now: UnixTime) -> Result<bool> {
        let n = self
            .run_returning(
                "INSERT OR IGNORE INTO user_roles (user_id, role, created_at) SELECT ?1, ?2, ?3 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1) RETURNING role",
                &[text(user_id.as_str()), text(role), time(now)],
            )
            .await?;
        Ok(n == 1)
    }

    async fn remove_role(&self, user_id: &UserId, role: &str) -> Result<bool> {
        let n = self
            .run_returning(
                "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2 RETURNING role",
                &[text(user_id.as_str()), text(role)],
            )
            .await?;
        Ok(n == 1)
    }
}
