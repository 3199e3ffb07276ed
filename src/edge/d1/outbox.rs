//! The event outbox on D1 (`event_outbox`): events the queue did not take,
//! kept sealed until the cron trigger re-sends them.

use serde::Deserialize;

use super::{int, text, time, D1Store};
use crate::core::ports::Result;
use crate::core::time::UnixTime;

/// An event waiting in the outbox.
#[derive(Debug, Deserialize)]
pub struct OutboxRow {
    /// The event id.
    pub id: String,
    /// The envelope, as JSON text.
    pub body: String,
}

impl D1Store {
    /// Keeps events the queue did not take, as (id, JSON text) pairs, in one
    /// write; an id already waiting is left as it is.
    pub async fn outbox_put(&self, events: &[(String, String)], now: UnixTime, error: &str) -> Result<()> {
        let stmts = events
            .iter()
            .map(|(id, body)| {
                self.stmt(
                    "INSERT INTO event_outbox (id, body, created_at, attempts, last_error) VALUES (?1, ?2, ?3, 0, ?4) \
                     ON CONFLICT (id) DO NOTHING",
                    &[text(id), text(body), time(now), text(error)],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch(stmts).await?;
        Ok(())
    }

    /// The oldest `limit` events waiting in the outbox.
    pub async fn outbox_pending(&self, limit: u32) -> Result<Vec<OutboxRow>> {
        self.all("SELECT id, body FROM event_outbox ORDER BY created_at, id LIMIT ?1", &[int(i64::from(limit))]).await
    }

    /// Removes an event the queue took.
    pub async fn outbox_done(&self, id: &str) -> Result<()> {
        self.run("DELETE FROM event_outbox WHERE id = ?1", &[text(id)]).await?;
        Ok(())
    }

    /// Records a failed re-send.
    pub async fn outbox_failed(&self, id: &str, error: &str) -> Result<()> {
        self.run(
            "UPDATE event_outbox SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            &[text(id), text(error)],
        )
        .await?;
        Ok(())
    }
}
