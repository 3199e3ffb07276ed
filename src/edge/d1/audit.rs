//! [`AuditLog`] on D1: the `audit_log` table (migrations 0009, 0011), and
//! the `users.taken_over_at` a user's own view starts from.

use serde::Deserialize;
use wasm_bindgen::JsValue;

use super::{int, opt_text, text, time, D1Store};
use crate::core::audit::{AuditEntry, AuditFilter, AuditRecord, Outcome};
use crate::core::ids::UserId;
use crate::core::ports::{AuditLog, Result};
use crate::core::time::UnixTime;

#[derive(Deserialize)]
struct AuditRow {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    user_id: Option<UserId>,
    actor_id: Option<UserId>,
    outcome: String,
    ip_address: Option<String>,
    user_agent: Option<String>,
    at: i64,
    data: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            outcome: Outcome::parse(&r.outcome).unwrap_or_else(|| Outcome::of(&r.kind)),
            id: r.id,
            kind: r.kind,
            user_id: r.user_id,
            actor_id: r.actor_id,
            ip_address: r.ip_address,
            user_agent: r.user_agent,
            at: UnixTime(r.at),
            data: serde_json::from_str(&r.data).unwrap_or_default(),
        }
    }
}

impl AuditLog for D1Store {
    async fn record_audit(&self, r: &AuditRecord) -> Result<bool> {
        // The user is the event's, else the account that has its address
        // now, at the write, if it was created by the event's time (not one
        // made with it since). An address that moved between the event and
        // this write is attributed to its holder now.
        let n = self
            .run(
                "INSERT INTO audit_log (id, type, user_id, actor_id, outcome, ip_address, user_agent, at, data) \
                 VALUES (?1, ?2, COALESCE(?3, (SELECT id FROM users WHERE email = ?4 AND created_at <= ?9)), \
                 ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (id) DO NOTHING",
                &[
                    text(&r.id),
                    text(r.kind),
                    opt_text(r.user_id.as_ref().map(UserId::as_str)),
                    opt_text(r.subject_email.as_deref()),
                    opt_text(r.actor_id.as_ref().map(UserId::as_str)),
                    text(r.outcome.as_str()),
                    opt_text(r.ip_address.as_deref()),
                    opt_text(r.user_agent.as_deref()),
                    time(r.at),
                    text(&r.data),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn audit_entries(&self, f: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>> {
        // Only the conditions given, so that each query can use its index
        // (user_id, at, id), (type, at, id) or (at, id). Values are bound:
        // the text added is fixed but for the placeholders' numbers.
        let mut sql = String::from(
            "SELECT id, type, user_id, actor_id, outcome, ip_address, user_agent, at, data FROM audit_log WHERE 1 = 1",
        );
        let mut args: Vec<JsValue> = Vec::new();
        let mut arg = |value: JsValue| {
            args.push(value);
            args.len()
        };
        if let Some(user_id) = &f.user_id {
            sql.push_str(&format!(" AND user_id = ?{}", arg(text(user_id.as_str()))));
        }
        if let Some(kind) = f.kind {
            sql.push_str(&format!(" AND type = ?{}", arg(text(kind))));
        }
        if let Some(since) = f.since {
            sql.push_str(&format!(" AND at >= ?{}", arg(time(since))));
        }
        if let Some(until) = f.until {
            sql.push_str(&format!(" AND at < ?{}", arg(time(until))));
        }
        if let Some(c) = &f.after {
            let (at, id) = (arg(time(c.at)), arg(text(&c.id)));
            sql.push_str(&format!(" AND (at < ?{at} OR (at = ?{at} AND id < ?{id}))"));
        }
        sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT ?{}", arg(int(i64::from(limit)))));
        Ok(self.all::<AuditRow>(&sql, &args).await?.into_iter().map(AuditEntry::from).collect())
    }

    async fn purge_audit(&self, before: UnixTime, limit: u32) -> Result<u64> {
        let n = self
            .run(
                "DELETE FROM audit_log WHERE id IN \
                 (SELECT id FROM audit_log WHERE at < ?1 ORDER BY at LIMIT ?2)",
                &[time(before), int(i64::from(limit))],
            )
            .await?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn purge_audit_beyond(&self, keep: u64, limit: u32) -> Result<u64> {
        // `rowid` grows with each insert (one more than the largest), so the
        // newest `keep` written are those above MAX(rowid) - keep: two
        // lookups at the ends of the table's b-tree, no count of its rows.
        let n = self
            .run(
                "DELETE FROM audit_log WHERE rowid IN \
                 (SELECT rowid FROM audit_log WHERE rowid <= (SELECT MAX(rowid) FROM audit_log) - ?1 \
                  ORDER BY rowid LIMIT ?2)",
                &[int(i64::try_from(keep).unwrap_or(i64::MAX)), int(i64::from(limit))],
            )
            .await?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn taken_over_at(&self, user_id: &UserId) -> Result<Option<UnixTime>> {
        let row = self
            .first::<TakenOverRow>("SELECT taken_over_at FROM users WHERE id = ?1", &[text(user_id.as_str())])
            .await?;
        Ok(row.and_then(|r| r.taken_over_at).map(UnixTime))
    }
}

#[derive(Deserialize)]
struct TakenOverRow {
    taken_over_at: Option<i64>,
}
