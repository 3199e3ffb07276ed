//! [`RevocationStore`] on D1: the `revocations` log. Its rows are written by
//! the triggers of `migrations/0008_revocations.sql`, inside the statements
//! of the other ports that revoke sessions or change roles; this file only
//! reads and purges them, and reads a session with its user's roles for the
//! `fresh` check.

use serde::Deserialize;

use super::sessions::{SessionRow, SESSION_COLUMNS};
use super::{int, int_u, text, time, D1Store};
use crate::core::ids::{SessionId, UserId};
use crate::core::ports::{Result, RevocationStore};
use crate::core::revocation::{Revocation, RevocationPage, Revoked, Standing};
use crate::core::time::UnixTime;
use crate::core::users::Role;
use crate::edge::error::{Dependency::D1, EdgeResult};

#[derive(Deserialize)]
struct RevocationRow {
    seq: i64,
    kind: String,
    subject: String,
    roles: Option<String>,
    at: i64,
}

#[derive(Deserialize)]
struct LastRow {
    last_seq: Option<i64>,
}

#[derive(Deserialize)]
struct RolesRow {
    held_roles: Option<String>,
}

/// Roles as `group_concat` joins them (none: `NULL`).
fn role_list(joined: Option<String>) -> Vec<Role> {
    joined.unwrap_or_default().split(',').filter(|r| !r.is_empty()).map(Role::stored).collect()
}

fn seq(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl RevocationStore for D1Store {
    async fn revocations_after(&self, after: u64, live_after: UnixTime, limit: u32) -> Result<RevocationPage> {
        let rows = self.stmt(
            "SELECT seq, kind, subject, roles, at FROM revocations WHERE seq > ?1 AND at > ?2 ORDER BY seq LIMIT ?3",
            &[int_u(after), time(live_after), int(i64::from(limit))],
        )?;
        let last = self.stmt("SELECT MAX(seq) AS last_seq FROM revocations", &[])?;
        // One batch, one snapshot: the rows and the last sequence number agree.
        let results = self.batch(vec![rows, last]).await?;
        let (Some(rows), Some(last)) = (results.first(), results.get(1)) else {
            return Err(D1.failed("short batch result"));
        };
        let last_seq = last.results::<LastRow>().or_unavailable(D1)?.first().and_then(|r| r.last_seq).map_or(0, seq);
        let rows = rows
            .results::<RevocationRow>()
            .or_unavailable(D1)?
            .into_iter()
            .filter_map(|r| {
                let what = match r.kind.as_str() {
                    "session" => Revoked::Session(SessionId::new(r.subject)),
                    "roles" => Revoked::Roles { user_id: UserId::new(r.subject), roles: role_list(r.roles) },
                    // The table's CHECK allows no other kind.
                    _ => return None,
                };
                Some(Revocation { seq: seq(r.seq), at: UnixTime(r.at), what })
            })
            .collect();
        Ok(RevocationPage { rows, last_seq })
    }

    async fn session_standing(&self, sid: &SessionId) -> Result<Option<Standing>> {
        let session =
            self.stmt(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"), &[text(sid.as_str())])?;
        let roles = self.stmt(
            "SELECT group_concat(role, ',') AS held_roles FROM user_roles \
             WHERE user_id = (SELECT user_id FROM sessions WHERE id = ?1)",
            &[text(sid.as_str())],
        )?;
        // One batch, one snapshot: the roles are those of the session's user then.
        let results = self.batch(vec![session, roles]).await?;
        let (Some(session), Some(roles)) = (results.first(), results.get(1)) else {
            return Err(D1.failed("short batch result"));
        };
        let Some(session) = session.results::<SessionRow>().or_unavailable(D1)?.into_iter().next() else {
            return Ok(None);
        };
        let held = roles.results::<RolesRow>().or_unavailable(D1)?.into_iter().next().and_then(|r| r.held_roles);
        Ok(Some(Standing { session: session.into(), roles: role_list(held) }))
    }

    async fn purge_revocations(&self, before: UnixTime) -> Result<u64> {
        let n = self.run("DELETE FROM revocations WHERE at <= ?1", &[time(before)]).await?;
        Ok(n as u64)
    }
}
