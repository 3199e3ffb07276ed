//! [`UserStore`] on D1: the `users` row and its roles.

use super::{changes, int, int_u, opt_text, text, time, D1Store, UserRow, USER_COLUMNS};
use crate::core::ids::UserId;
use crate::core::ports::{Result, UserStore};
use crate::core::time::UnixTime;
use crate::core::users::User;
use crate::edge::error::Dependency::D1;

impl UserStore for D1Store {
    async fn insert_user(&self, u: &User) -> Result<bool> {
        let mut stmts = vec![self.stmt(
            "INSERT INTO users (id, email, name, password_hash, email_verified, avatar_url, phone, banned, created_at, updated_at, locale) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10) ON CONFLICT(email) DO NOTHING",
            &[
                text(u.id.as_str()),
                text(&u.email),
                opt_text(u.name.as_deref()),
                opt_text(u.password_hash.as_deref()),
                int(i64::from(u.email_verified)),
                opt_text(u.avatar_url.as_deref()),
                opt_text(u.phone.as_deref()),
                int(i64::from(u.banned)),
                time(u.created_at),
                opt_text(u.locale.as_deref()),
            ],
        )?];
        for role in &u.roles {
            stmts.push(self.stmt(
                "INSERT INTO user_roles (user_id, role, created_at) SELECT ?1, ?2, ?3 \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?1)",
                &[text(u.id.as_str()), text(role), time(u.created_at)],
            )?);
        }
        let results = self.batch(stmts).await?;
        match results.first() {
            Some(r) => Ok(changes(r)? == 1),
            None => Err(D1.failed("empty batch result")),
        }
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.email = ?1");
        Ok(self.first::<UserRow>(&sql, &[text(email)]).await?.map(User::from))
    }

    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = ?1");
        Ok(self.first::<UserRow>(&sql, &[text(id.as_str())]).await?.map(User::from))
    }

    async fn set_password_hash(&self, user_id: &UserId, hash: &str, user_epoch: u64, now: UnixTime) -> Result<()> {
        self.run(
            "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1 AND auth_epoch = ?4",
            &[text(user_id.as_str()), text(hash), time(now), int_u(user_epoch)],
        )
        .await
        .map(|_| ())
    }
}
