//! [`EmailTokenStore`] on D1: emailed link tokens and codes (`email_tokens`),
//! link tokens hinted in KV first.

use serde::Deserialize;

use super::{epoch, int, int_u, opt_text, text, time, D1Store};
use crate::core::emailed_secret::{EmailToken, TokenKind};
use crate::core::error::Error;
use crate::core::ids::UserId;
use crate::core::ports::{EmailTokenStore, Result};
use crate::core::time::UnixTime;
use crate::edge::kv::is_hinted;

const EMAIL_TOKEN_COLUMNS: &str = "hash, kind, email, user_id, user_epoch, code_hash, created_at, expires_at, attempts";
/// An emailed token is usable only while the account it was issued for
/// still has the epoch it was issued under (a deleted account has none). A
/// token issued while its address had no account (no `user_id`, epoch 0) is
/// held to the account that has the address now, if any: usable until that
/// account's epoch first moves.
const TOKEN_EPOCH_STANDS: &str = "(user_epoch = CASE WHEN user_id IS NULL \
     THEN COALESCE((SELECT u.auth_epoch FROM users u WHERE u.email = email_tokens.email), 0) \
     ELSE (SELECT u.auth_epoch FROM users u WHERE u.id = email_tokens.user_id) END)";

#[derive(Deserialize)]
struct EmailTokenRow {
    hash: String,
    kind: String,
    email: String,
    user_id: Option<UserId>,
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

impl D1Store {
    fn first_token(rows: Vec<EmailTokenRow>) -> Result<Option<EmailToken>> {
        rows.into_iter().next().map(EmailToken::try_from).transpose()
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
                opt_text(t.user_id.as_ref().map(UserId::as_str)),
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

    async fn peek_email_token(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<Option<EmailToken>> {
        if is_hinted(kind) && !self.hints.may_be_live(kind, hash, now).await? {
            return Ok(None);
        }
        let rows = self
            .all::<EmailTokenRow>(
                &format!(
                    "SELECT {EMAIL_TOKEN_COLUMNS} FROM email_tokens \
                     WHERE hash = ?1 AND kind = ?2 AND consumed_at IS NULL AND expires_at > ?3 AND {TOKEN_EPOCH_STANDS}"
                ),
                &[text(hash), text(kind.as_str()), time(now)],
            )
            .await?;
        Self::first_token(rows)
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
