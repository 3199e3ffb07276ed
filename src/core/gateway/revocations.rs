//! Revocation at the gateway: the isolate's copy of the revocation set
//! ([`crate::core::revocation`]) and when a request may use it, reads it
//! first, or is refused; the reading of the log through the
//! [`RevocationStore`] port; and the `"fresh": true` rule's check of the
//! token's session.
//!
//! The decision ([`crate::core::gateway::Gateway::decide`]) asks the copy
//! before it judges a token ([`RevocationCopy::before_use`]), for
//! `REVOCATION_LAG` = `L` and the set's [`Readiness`]:
//!
//! - usable (read less than `L` ago): the token is checked against it, a
//!   hash lookup or two, and from `L/2` a read starts in the background
//!   ([`RevocationCopy::begin_background_read`]);
//! - a lag old or more ([`Readiness::Stale`]): the request waits for a read
//!   (the one under way, or a new one) — unless a read that began after the
//!   copy's failed or was lost: then D1 cannot be read, the copy serves
//!   until it is three lags old (the documented outage bound), no request
//!   waits on D1 meanwhile, and reads are tried in the background;
//! - never read, or three lags old ([`Readiness::Read`]): the request waits
//!   for a read, and is refused with 503 when none can be had (one failed
//!   less than [`RETRY_MS`] ago, none under way).
//!
//! Reads start at most every half lag (every second once one failed), one
//! at a time per isolate; one that has not finished after a lag is taken as
//! lost ([`lost_at_ms`]): no request waits for it longer, and another may
//! start. The reads themselves are I/O: the edge makes
//! them when the decision or [`RevocationCopy::begin_background_read`] says
//! so, and hands the result to [`RevocationCopy::end_read`].

use crate::core::error::{Error, TokenError};
use crate::core::ids::{SessionId, UserId};
use crate::core::ports::RevocationStore;
use crate::core::revocation::{stands, LogRead, Readiness, RevocationSet, Revocations, MINTED_MARGIN_MS, PAGE_ROWS};
use crate::core::time::UnixTime;
use crate::core::users::Role;

/// Longest wait before a failed read is tried again, in milliseconds.
pub const RETRY_MS: i64 = 1_000;

/// What a request must do before it checks a token against the copy
/// ([`RevocationCopy::before_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeUse {
    /// Check it as it is.
    Use,
    /// Wait for a read (the one under way, or a new one), then ask again.
    Read,
    /// Refuse: the copy may not be used and no read can be had now (503).
    FailClosed,
}

/// What a refusal by the copy is worth ([`RevocationCopy::role_refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleRefusal {
    /// The refusal stands.
    Stands,
    /// The copy may lack a grant: read, then ask again without a recheck.
    Recheck,
    /// The copy may lack a grant and D1 cannot be read now: 503.
    Unknowable,
}

/// The isolate's revocation set, when it was read, and its reads: the one
/// under way and when the last began.
#[derive(Debug, Default)]
pub struct RevocationCopy {
    revocations: Revocations,
    /// When the read under way began (Unix milliseconds), if one is.
    reading_since_ms: Option<i64>,
    /// When the last read began, failed or not (Unix milliseconds).
    last_start_ms: Option<i64>,
    /// When the last read that failed began (Unix milliseconds).
    last_failed_ms: Option<i64>,
}

/// `REVOCATION_LAG` in milliseconds.
fn lag_ms(lag_secs: u64) -> i64 {
    i64::try_from(lag_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// When a read that began at `began_ms` counts as lost (a lag later), in
/// Unix milliseconds: no request waits for it longer, and another may start.
pub fn lost_at_ms(began_ms: i64, lag_secs: u64) -> i64 {
    began_ms.saturating_add(lag_ms(lag_secs))
}

/// The 503 of a request that needs the copy when it cannot be read.
pub fn unreadable() -> Error {
    Error::unavailable("revocations", "the revocation log could not be read")
}

impl RevocationCopy {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The set, whatever its age.
    pub fn set(&self) -> &RevocationSet {
        self.revocations.set()
    }

    /// What the set may be used for at `now_ms` under `REVOCATION_LAG` =
    /// `lag_secs`.
    pub fn readiness(&self, now_ms: i64, lag_secs: u64) -> Readiness {
        self.revocations.readiness(now_ms, lag_secs)
    }

    /// When the read under way began, if it began less than a lag before
    /// `now_ms` (an older one is taken as lost: [`lost_at_ms`]).
    pub fn read_under_way(&self, now_ms: i64, lag_secs: u64) -> Option<i64> {
        self.reading_since_ms.filter(|began| now_ms < lost_at_ms(*began, lag_secs))
    }

    /// Whether a new read may start at `now_ms`: the last began at least
    /// half a lag ago, or [`RETRY_MS`] if that is less.
    fn may_start(&self, now_ms: i64, lag_secs: u64) -> bool {
        let interval = lag_ms(lag_secs).saturating_div(2).min(RETRY_MS);
        self.last_start_ms.is_none_or(|last| now_ms.saturating_sub(last) >= interval)
    }

    /// Whether D1 cannot be read now, by recent evidence: a read that began
    /// after the copy's own read failed less than a lag before `now_ms`, or
    /// was lost less than a lag before. Older evidence does not count: an
    /// isolate idle since a passing failure reads again before use.
    fn failed_since_read(&self, now_ms: i64, lag_secs: u64) -> bool {
        let lag = lag_ms(lag_secs);
        let failed = self.last_failed_ms.filter(|began| now_ms.saturating_sub(*began) < lag);
        let lost = self.reading_since_ms.filter(|began| {
            let lost_at = lost_at_ms(*began, lag_secs);
            now_ms >= lost_at && now_ms.saturating_sub(lost_at) < lag
        });
        let read_at = self.revocations.read_at_ms();
        failed.into_iter().chain(lost).any(|began| read_at.is_none_or(|at| began > at))
    }

    /// What a request that checks a token at `now_ms` must do first (module
    /// docs).
    pub fn before_use(&self, now_ms: i64, lag_secs: u64) -> BeforeUse {
        let can_read = || self.can_read(now_ms, lag_secs);
        match self.readiness(now_ms, lag_secs) {
            Readiness::Fresh | Readiness::Refresh => BeforeUse::Use,
            // A read failed (or was lost) since the copy was read: it serves
            // until FAIL_CLOSED_LAGS, and reads are tried in the background —
            // no request waits for D1 again until then.
            Readiness::Stale if self.failed_since_read(now_ms, lag_secs) || !can_read() => BeforeUse::Use,
            Readiness::Stale => BeforeUse::Read,
            Readiness::Read if can_read() => BeforeUse::Read,
            Readiness::Read => BeforeUse::FailClosed,
        }
    }

    /// Whether a token of session `sid`, user `sub`, claiming `roles` is
    /// revoked by the set as it is (ask [`RevocationCopy::before_use`] first).
    pub fn refuses(&self, sid: &SessionId, sub: &UserId, roles: &[Role]) -> bool {
        self.set().refuses(sid, sub, roles)
    }

    /// What the copy's refusal of a token of session `sid` issued at
    /// `iat` is worth at `now_ms` (module docs of
    /// [`crate::core::revocation`]). It [`RoleRefusal::Stands`] when the
    /// session is revoked, or the copy's read began after the token may
    /// have been minted ([`MINTED_MARGIN_MS`] after `iat`). Otherwise a role
    /// granted just before the mint may be missing from the copy: a read
    /// that began after the request arrived answers for certain
    /// ([`RoleRefusal::Recheck`], the edge's `recheck_read`) — unless a
    /// read failed or was lost since the copy's, when no request waits on
    /// D1 and the answer is 503 ([`RoleRefusal::Unknowable`]).
    pub fn role_refusal(&self, sid: &SessionId, iat: UnixTime, now_ms: i64, lag_secs: u64) -> RoleRefusal {
        let minted_by = iat.0.saturating_mul(1000).saturating_add(MINTED_MARGIN_MS);
        if self.set().revokes_session(sid) || self.revocations.read_at_ms().is_some_and(|at| at >= minted_by) {
            RoleRefusal::Stands
        } else if self.failed_since_read(now_ms, lag_secs) {
            RoleRefusal::Unknowable
        } else {
            RoleRefusal::Recheck
        }
    }

    /// Whether the copy was read by a read that began at or after
    /// `arrival_ms` (what a role recheck waits for).
    pub fn read_since(&self, arrival_ms: i64) -> bool {
        self.revocations.read_at_ms().is_some_and(|read_at| read_at >= arrival_ms)
    }

    /// Whether a read can be had at `now_ms`: one is under way, or one may
    /// start.
    fn can_read(&self, now_ms: i64, lag_secs: u64) -> bool {
        self.read_under_way(now_ms, lag_secs).is_some() || self.may_start(now_ms, lag_secs)
    }

    /// Starts a read at `now_ms` (the caller reads the log after the
    /// returned cursor, then calls [`RevocationCopy::end_read`] with
    /// `now_ms` as `began_ms`).
    pub fn begin_read(&mut self, now_ms: i64) -> u64 {
        self.last_start_ms = Some(now_ms);
        self.reading_since_ms = Some(now_ms);
        self.set().cursor()
    }

    /// Starts a background read if one is due at `now_ms`: the set is past
    /// half a lag ([`Readiness::Refresh`]), or a lag old while reads fail,
    /// no read is under way and one may start. The cursor to read after, if
    /// so.
    pub fn begin_background_read(&mut self, now_ms: i64, lag_secs: u64) -> Option<u64> {
        let due = match self.readiness(now_ms, lag_secs) {
            Readiness::Refresh => true,
            // Served while reads fail: tried again in the background.
            Readiness::Stale => self.failed_since_read(now_ms, lag_secs),
            Readiness::Fresh | Readiness::Read => false,
        };
        let due = due && self.read_under_way(now_ms, lag_secs).is_none() && self.may_start(now_ms, lag_secs);
        due.then(|| self.begin_read(now_ms))
    }

    /// Ends the read begun at `began_ms`: with what it read when it
    /// succeeded (then the set counts as read at `began_ms`; a log read from
    /// its start replaces it), `None` when it failed. Rows that no longer
    /// matter at `now` are dropped (`retention_secs`).
    pub fn end_read(&mut self, began_ms: i64, read: Option<LogRead>, now: UnixTime, retention_secs: u64) {
        match read {
            Some(read) => self.revocations.install(began_ms, read, now, retention_secs),
            None => self.last_failed_ms = Some(self.last_failed_ms.map_or(began_ms, |f| f.max(began_ms))),
        }
        if self.reading_since_ms == Some(began_ms) {
            self.reading_since_ms = None;
        }
    }

    /// Whether the copy is still unusable at `now_ms` after a read: never
    /// read, or [`FAIL_CLOSED_LAGS`](crate::core::revocation::FAIL_CLOSED_LAGS)
    /// lags old.
    pub fn unusable(&self, now_ms: i64, lag_secs: u64) -> bool {
        self.readiness(now_ms, lag_secs) == Readiness::Read
    }
}

/// Reads the log after `cursor`, page by page, keeping the rows that still
/// matter at `now`: every row added since, in order, with the log's last
/// `seq`. A log whose last `seq` is behind `cursor` is read from its start
/// ([`LogRead::from_start`]): rows it gets again would otherwise hide
/// behind the cursor.
pub async fn read<S: RevocationStore>(
    store: &S,
    cursor: u64,
    now: UnixTime,
    retention_secs: u64,
) -> Result<LogRead, Error> {
    let live_after = now.minus_secs(retention_secs);
    let mut read = LogRead::default();
    let mut after = cursor;
    loop {
        let page = store.revocations_after(after, live_after, PAGE_ROWS).await?;
        if page.last_seq < after && !read.from_start {
            read.from_start = true;
            after = 0;
            continue;
        }
        let full = page.rows.len() >= PAGE_ROWS as usize;
        let last = page.rows.last().map(|r| r.seq);
        read.rows.extend(page.rows);
        match last {
            Some(seq) if full && seq > after => after = seq,
            _ => {
                read.last_seq = page.last_seq.max(last.unwrap_or(0));
                return Ok(read);
            }
        }
    }
}

/// What a `"fresh": true` rule's check reads: the token's session, user and
/// the roles it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshSession {
    /// The session (`sid`).
    pub sid: SessionId,
    /// The user (`sub`).
    pub sub: UserId,
    /// The roles the token claims.
    pub roles: Vec<Role>,
}

impl FreshSession {
    /// The check of a token with these claims.
    pub fn of(claims: &crate::core::token::AccessClaims) -> Self {
        Self { sid: claims.sid.clone(), sub: claims.sub.clone(), roles: claims.roles.clone() }
    }

    /// Runs the check ([`check_fresh`]) against `store` at `now` under
    /// `SESSION_MAX_AGE` = `max_age_secs`.
    pub async fn check<S: RevocationStore>(&self, store: &S, now: UnixTime, max_age_secs: u64) -> Result<(), Error> {
        check_fresh(store, &self.sid, &self.sub, &self.roles, now, max_age_secs).await
    }
}

/// The `"fresh": true` check of a route rule: the token's session, read from
/// D1 now. `Ok` if it stands ([`stands`]), else 401 `token_revoked`; a store
/// that cannot be read fails closed (503).
pub async fn check_fresh<S: RevocationStore>(
    store: &S,
    sid: &SessionId,
    sub: &UserId,
    roles: &[Role],
    now: UnixTime,
    max_age_secs: u64,
) -> Result<(), Error> {
    let standing = store.session_standing(sid).await?;
    if stands(standing.as_ref(), sub, roles, now, max_age_secs) {
        Ok(())
    } else {
        Err(Error::InvalidToken(TokenError::Revoked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::revocation::{Revocation, RevocationPage, Revoked, Standing};

    const RETAIN: u64 = 1_000;

    fn session_row(seq: u64, at: i64, sid: &str) -> Revocation {
        Revocation { seq, at: UnixTime(at), what: Revoked::Session(sid.into()) }
    }

    struct Log(Vec<Revocation>);

    impl RevocationStore for Log {
        async fn revocations_after(
            &self,
            after: u64,
            live_after: UnixTime,
            limit: u32,
        ) -> Result<RevocationPage, Error> {
            let rows = self.0.iter().filter(|r| r.seq > after && r.at > live_after).take(limit as usize).cloned();
            Ok(RevocationPage { rows: rows.collect(), last_seq: self.0.last().map_or(0, |r| r.seq) })
        }
        async fn session_standing(&self, _sid: &SessionId) -> Result<Option<Standing>, Error> {
            Ok(None)
        }
        async fn purge_revocations(&self, _before: UnixTime) -> Result<u64, Error> {
            Ok(0)
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn a_read_takes_every_page_after_the_cursor_and_skips_what_expired() {
        let n = PAGE_ROWS as u64 * 2 + 7;
        let mut log: Vec<Revocation> = (1..=n).map(|i| session_row(i, 5_000, &format!("s{i}"))).collect();
        log.insert(0, session_row(0, 10, "old"));
        log.push(session_row(n + 1, 10, "expired but last"));
        let store = Log(log);
        let all = block_on(read(&store, 0, UnixTime(5_000), RETAIN)).unwrap();
        assert_eq!(all.rows.len() as u64, n);
        assert_eq!(all.last_seq, n + 1, "the cursor moves past the expired last row");
        assert!(!all.from_start);
        let tail = block_on(read(&store, n - 3, UnixTime(5_000), RETAIN)).unwrap();
        assert_eq!(tail.rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![n - 2, n - 1, n]);
        assert!(!tail.from_start);
    }

    #[test]
    fn a_log_behind_the_cursor_is_read_from_its_start_and_replaces_the_set() {
        // An isolate read up to seq 90; the log was then restored from a
        // backup holding seq 1..=3, and a new revocation took seq 4.
        let mut held = Revocations::new();
        let before: Vec<Revocation> = (1..=90).map(|i| session_row(i, 5_000, &format!("old{i}"))).collect();
        held.install(1, LogRead { rows: before, last_seq: 90, from_start: false }, UnixTime(5_000), RETAIN);
        let store = Log(vec![
            session_row(1, 5_000, "old1"),
            session_row(2, 5_000, "old2"),
            session_row(3, 5_000, "old3"),
            session_row(4, 5_001, "revoked after the restore"),
        ]);
        let log = block_on(read(&store, held.set().cursor(), UnixTime(5_001), RETAIN)).unwrap();
        assert!(log.from_start);
        assert_eq!(log.rows.len(), 4);
        held.install(2, log, UnixTime(5_001), RETAIN);
        assert!(
            held.set().refuses(&"revoked after the restore".into(), &"u".into(), &[]),
            "not hidden behind the old cursor"
        );
        assert!(!held.set().refuses(&"old50".into(), &"u".into(), &[]), "the set is what the log holds now");
        assert_eq!(held.set().cursor(), 4);
        // An emptied log (every row purged) is no different: nothing is lost.
        let empty = block_on(read(&Log(vec![]), 4, UnixTime(5_002), RETAIN)).unwrap();
        assert_eq!(empty, LogRead { rows: vec![], last_seq: 0, from_start: true });
    }

    #[test]
    fn reads_start_once_at_a_time_and_a_read_older_than_a_lag_counts_as_lost() {
        let mut copy = RevocationCopy::new();
        assert_eq!(copy.before_use(0, 10), BeforeUse::Read, "never read");
        assert_eq!(copy.begin_read(0), 0);
        assert_eq!(copy.read_under_way(9_999, 10), Some(0));
        assert_eq!(copy.before_use(9_999, 10), BeforeUse::Read, "wait for the read under way");
        assert_eq!(copy.read_under_way(10_000, 10), None, "a lag later it is taken as lost");
        // Another read began; the lost one ending late leaves it under way.
        copy.begin_read(10_000);
        copy.end_read(
            0,
            Some(LogRead { rows: vec![session_row(1, 0, "s1")], last_seq: 1, from_start: false }),
            UnixTime(10),
            RETAIN,
        );
        assert_eq!(copy.read_under_way(10_001, 10), Some(10_000));
        assert!(copy.refuses(&"s1".into(), &"u".into(), &[]));
        copy.end_read(10_000, None, UnixTime(10), RETAIN);
        assert_eq!(copy.read_under_way(10_001, 10), None);
    }

    #[test]
    fn background_reads_start_from_half_the_lag_and_wait_a_second_after_a_failure() {
        let mut copy = RevocationCopy::new();
        copy.begin_read(0);
        copy.end_read(0, Some(LogRead::default()), UnixTime(0), RETAIN);
        assert_eq!(copy.begin_background_read(4_999, 10), None, "fresh");
        assert_eq!(copy.begin_background_read(5_000, 10), Some(0));
        assert_eq!(copy.begin_background_read(5_500, 10), None, "one at a time");
        copy.end_read(5_000, None, UnixTime(5), RETAIN);
        assert_eq!(copy.begin_background_read(5_999, 10), None, "within a second of the failed one");
        assert_eq!(copy.before_use(5_999, 10), BeforeUse::Use);
        assert_eq!(copy.begin_background_read(6_000, 10), Some(0));
    }
}
