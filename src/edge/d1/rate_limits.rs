//! [`RateLimitStore`] on D1: fixed-window counters (`rate_limits`) and
//! the login back-off's failures (`login_failures`), counted on admission,
//! with the admitted attempts still in flight.

use serde::Deserialize;

use super::{changes, int, returned, text, time, D1Store};
use crate::core::error::Error;
use crate::core::ports::{RateLimitStore, Result};
use crate::core::rate_limit::{Backoff, Count, Hit, LoginRecord, LOGIN_IN_FLIGHT_SECS};
use crate::core::time::UnixTime;
use crate::edge::error::{Dependency::D1, EdgeResult};

#[derive(Deserialize)]
pub(super) struct HitRow {
    count: i64,
    expires_at: i64,
}

impl HitRow {
    pub(super) fn count(&self) -> Count {
        Count { count: u32::try_from(self.count).unwrap_or(u32::MAX), resets_at: UnixTime(self.expires_at) }
    }
}

// One upsert per key: a missing or ended window opens at `?2`
// (ending at `?3`); otherwise the count goes up by one. SET sees the
// row's old values.
macro_rules! upsert {
    () => {
        "ON CONFLICT (key) DO UPDATE SET \
           count = CASE WHEN rate_limits.expires_at <= ?2 THEN 1 ELSE rate_limits.count + 1 END, \
           window_start = CASE WHEN rate_limits.expires_at <= ?2 THEN ?2 ELSE rate_limits.window_start END, \
           expires_at = CASE WHEN rate_limits.expires_at <= ?2 THEN ?3 ELSE rate_limits.expires_at END \
         RETURNING count, expires_at"
    };
}

/// The hit on a refresh's per-session counter (`?4` || the session id),
/// for the rotation's batch ([`crate::core::session::RotateRequest::limit`]):
/// counted only when the token `?1` is its live session's current one at
/// `?2` (`?5`: `SESSION_MAX_AGE`), the conditions of the rotation itself;
/// `?3` ends a new window.
pub(super) const SESSION_HIT: &str = concat!(
    "INSERT INTO rate_limits (key, window_start, count, expires_at) SELECT ?4 || id, ?2, 1, ?3 FROM sessions \
     WHERE refresh_hash = ?1 AND revoked_at IS NULL AND expires_at > ?2 AND created_at + ?5 > ?2 ",
    upsert!()
);

#[derive(Deserialize)]
struct FailuresRow {
    failures: i64,
    last_failed_at: i64,
    in_flight: i64,
}

impl RateLimitStore for D1Store {
    async fn hit(&self, hits: &[Hit], now: UnixTime) -> Result<Vec<Option<Count>>> {
        // One upsert per key, in one batch (a transaction, run in order). A
        // conditional hit inserts through a SELECT whose WHERE reads the
        // earlier counter as this batch left it: refused, it writes nothing
        // and returns no row.
        const HIT: &str = concat!(
            "INSERT INTO rate_limits (key, window_start, count, expires_at) VALUES (?1, ?2, 1, ?3) ",
            upsert!()
        );
        const HIT_WITHIN: &str = concat!(
            "INSERT INTO rate_limits (key, window_start, count, expires_at) SELECT ?1, ?2, 1, ?3 \
             WHERE (SELECT count FROM rate_limits WHERE key = ?4) <= ?5 ",
            upsert!()
        );
        let stmts = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let args = [text(&h.key), time(now), time(now.plus_secs(h.window_secs))];
                match h.within {
                    None => self.stmt(HIT, &args),
                    Some(w) => {
                        let earlier = hits.get(w.hit).filter(|_| w.hit < i).ok_or_else(|| {
                            Error::Internal(format!("rate limit hit {i} is conditioned on hit {}", w.hit))
                        })?;
                        let [key, start, end] = args;
                        self.stmt(HIT_WITHIN, &[key, start, end, text(&earlier.key), int(i64::from(w.limit))])
                    }
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let results = self.batch(stmts).await?;
        results
            .iter()
            .zip(hits)
            .map(|(r, h)| {
                let rows = r.results::<HitRow>().or_unavailable(D1)?;
                match (rows.first(), h.within) {
                    (Some(row), _) => Ok(Some(row.count())),
                    (None, Some(_)) => Ok(None),
                    (None, None) => Err(D1.failed("rate limit upsert returned no row")),
                }
            })
            .collect()
    }

    async fn unhit(&self, key: &str, resets_at: UnixTime, limit: u32) -> Result<()> {
        self.run(
            "UPDATE rate_limits SET count = count - 1 WHERE key = ?1 AND expires_at = ?2 AND count > 0 AND count <= ?3",
            &[text(key), time(resets_at), int(i64::from(limit))],
        )
        .await?;
        Ok(())
    }

    async fn count_login_attempt(
        &self,
        email: &str,
        backoff: &Backoff,
        now: UnixTime,
        forget_before: UnixTime,
    ) -> Result<Option<LoginRecord>> {
        // One batch (a transaction): the upsert counts the attempt, as a
        // failure and as in flight, only when the record as it stands admits
        // it — forgotten (then it starts over at one of each), within the
        // free failures, or its delay over — and returns a row only then
        // (marks of attempts admitted LOGIN_IN_FLIGHT_SECS or more before
        // are stale: a request that died never took its back, and the
        // admission starts them over at one); the
        // read gives the record that refused it otherwise. The delay is
        // `Backoff::delay_secs` as a CASE over the failures, from its table.
        // (A CASE needs a WHEN: a schedule whose first delay is its cap is that delay.)
        let (rows, rest) = backoff.delay_table();
        let delay = if rows.is_empty() {
            rest.to_string()
        } else {
            let whens: String = rows.iter().map(|(failures, secs)| format!(" WHEN {failures} THEN {secs}")).collect();
            format!("CASE login_failures.failures{whens} ELSE {rest} END")
        };
        let count = format!(
            "INSERT INTO login_failures (email, failures, last_failed_at, in_flight) VALUES (?1, 1, ?2, 1) \
             ON CONFLICT (email) DO UPDATE SET \
               failures = CASE WHEN login_failures.last_failed_at <= ?3 THEN 1 ELSE login_failures.failures + 1 END, \
               in_flight = CASE WHEN login_failures.last_failed_at <= ?3 \
                 OR ?2 - login_failures.last_failed_at >= {stale} THEN 1 ELSE login_failures.in_flight + 1 END, \
               last_failed_at = MAX(login_failures.last_failed_at, ?2) \
             WHERE login_failures.last_failed_at <= ?3 OR login_failures.failures < ?4 \
               OR ?2 - login_failures.last_failed_at >= {delay} \
             RETURNING failures",
            stale = LOGIN_IN_FLIGHT_SECS,
        );
        let free = int(i64::from(backoff.free_failures));
        let stmts = vec![
            self.stmt(&count, &[text(email), time(now), time(forget_before), free])?,
            self.stmt(
                "SELECT failures, last_failed_at, in_flight FROM login_failures WHERE email = ?1",
                &[text(email)],
            )?,
        ];
        let results = self.batch(stmts).await?;
        let [counted, record] = results.as_slice() else {
            return Err(D1.failed("login attempt batch returned the wrong number of results"));
        };
        if returned(counted)? > 0 {
            return Ok(None);
        }
        let rows = record.results::<FailuresRow>().or_unavailable(D1)?;
        let r = rows.first().ok_or_else(|| D1.failed("a refused login attempt has no record"))?;
        Ok(Some(LoginRecord {
            failures: u32::try_from(r.failures).unwrap_or(u32::MAX),
            last_failed_at: UnixTime(r.last_failed_at),
            in_flight: u32::try_from(r.in_flight).unwrap_or(0),
        }))
    }

    async fn settle_login_attempt(&self, email: &str, admitted_at: UnixTime) -> Result<()> {
        let sql = format!(
            "UPDATE login_failures SET in_flight = in_flight - 1 \
             WHERE email = ?1 AND in_flight > 0 AND last_failed_at - ?2 < {LOGIN_IN_FLIGHT_SECS}"
        );
        self.run(&sql, &[text(email), time(admitted_at)]).await?;
        Ok(())
    }

    async fn clear_login_failures(&self, email: &str) -> Result<()> {
        self.run("DELETE FROM login_failures WHERE email = ?1", &[text(email)]).await?;
        Ok(())
    }
}

impl D1Store {
    /// Deletes rate-limit counters whose window ended before `now` and
    /// login failures last counted before `forget_before`; returns how many.
    pub async fn prune_rate_limits(&self, now: UnixTime, forget_before: UnixTime) -> Result<usize> {
        let counters = self.stmt("DELETE FROM rate_limits WHERE expires_at < ?1", &[time(now)])?;
        let failures = self.stmt("DELETE FROM login_failures WHERE last_failed_at < ?1", &[time(forget_before)])?;
        let results = self.batch(vec![counters, failures]).await?;
        results.iter().map(changes).sum()
    }
}
