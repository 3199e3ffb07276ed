//! [`DeliveryLedger`] on D1: per-target delivery claims (`event_deliveries`)
//! and recorded dead letters (`dead_letters`).

use serde::Deserialize;

use super::{opt_text, text, time, D1Store};
use crate::core::ledger::{Claim, DeadLetter, TargetState};
use crate::core::ports::{DeliveryLedger, Result};
use crate::core::time::UnixTime;
use crate::edge::error::{Dependency::D1, EdgeResult};

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
            None => Err(D1.failed("event_deliveries: claim neither taken nor held")),
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
        let failed = serde_json::to_string(&l.failed).context("dead letter json")?;
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
}
