//! Revocation at the gateway: what each isolate holds in memory so that a
//! revoked session, or a role taken away, stops passing the gateway within
//! `REVOCATION_LAG` — without a D1 or KV read on the request path.
//!
//! # What is recorded
//!
//! D1 records every revocation as it happens, in the same statement
//! (triggers of `migrations/0008_revocations.sql`), as a row of an
//! append-only log whose sequence number only grows ([`Revocation`]):
//!
//! - a **session** revoked — logout, revoking one, the others or all
//!   sessions, a ban, a password change or reset, a takeover, refresh-token
//!   reuse, a user deleted with their sessions: every access token of that
//!   session (`sid`) is refused;
//! - a user's **roles** changed: the row holds the roles the user has after
//!   the change, and a token of that user (`sub`) claiming any other role
//!   is refused. It was issued before the change; refreshing gives a token
//!   with the current roles, which passes.
//!
//! Roles are compared, not issue times: a "not before" instant compared
//! with `iat` (whole seconds, from another isolate's clock) would either let
//! a token issued in the removal's second keep the removed role, or refuse
//! the fresh token its refresh returns; and a refresh that read the roles
//! just before the removal committed signs a token *after* it. A role set
//! has neither problem: whatever its `iat`, a token claiming a role the user
//! no longer holds is stale.
//!
//! A role set is only as new as the copy, though: a token minted after a
//! grant the copy has not read yet claims a role the copy's set lacks. So a
//! token refused for a role alone, by a copy whose read began before the
//! token may have been minted ([`MINTED_MARGIN_MS`] after its `iat`), is
//! checked once more against a new read before the refusal stands
//! ([`crate::core::gateway::revocations::RevocationCopy::role_refusal`]):
//! only a token newer than the copy costs that read, and the answer is still
//! the role set's — never more lenient than the newest copy.
//!
//! A row matters while a token issued before it can still be valid:
//! [`retention_secs`] after it — the longest access-token life, the
//! verification leeway on both `iat` and `exp`, and [`IN_FLIGHT_MARGIN_SECS`]
//! for a request that read the session before the revocation and signs after
//! it. Older rows are skipped by readers and purged by the scheduled upkeep.
//!
//! # What an isolate holds
//!
//! A [`RevocationSet`] (revoked session ids, and the current roles of users
//! whose roles changed), built from the log and kept up to date by reading
//! only the rows after the last one it has seen
//! ([`read`](crate::core::gateway::revocations::read)). Its check,
//! [`RevocationSet::refuses`], is a hash lookup or two, no allocation.
//!
//! [`Revocations`] adds when the set was read, which decides what a request
//! may do with it ([`Readiness`], for `REVOCATION_LAG` = `L`):
//!
//! - read less than `L/2` ago: used as is;
//! - read `L/2` to `L` ago: used, and read again in the background (at most
//!   one read at a time per isolate);
//! - read `L` to `3·L` ago: read again before it is used — unless a read
//!   failed within the last lag (D1 cannot be read): then used, and read in
//!   the background ([`crate::core::gateway::revocations`]);
//! - never read, or read `3·L` or more ago ([`FAIL_CLOSED_LAGS`]): a request
//!   that needs it waits for a read; if the read fails, authenticated
//!   requests are refused with 503.
//!
//! So nothing an isolate uses is older than `L` while D1 can be read — a
//! revocation committed at `t` is refused everywhere by `t + L` — and while
//! it cannot, a revocation may pass for up to `3·L`, never longer.
//!
//! A set is "read at" the instant its read *began*: it holds at least every
//! revocation committed before then.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::ids::{SessionId, UserId};
use crate::core::session::Session;
use crate::core::time::UnixTime;
use crate::core::token::LEEWAY_SECS;
use crate::core::users::Role;

/// Default `REVOCATION_LAG`, in seconds.
pub const REVOCATION_LAG_SECS: u64 = 10;
/// Longest `REVOCATION_LAG` accepted, in seconds.
pub const MAX_REVOCATION_LAG_SECS: u64 = 600;
/// A set read this many lags ago (or more) is not used: requests wait for a
/// read, and fail closed if it fails.
pub const FAIL_CLOSED_LAGS: i64 = 3;
/// Room for a request that checked a session before its revocation and
/// signs a token after it (a refresh racing a logout), in seconds.
pub const IN_FLIGHT_MARGIN_SECS: u64 = 300;
/// How long after a token's `iat` it may have been minted, in
/// milliseconds, as this isolate's clock reads it: the rest of the `iat`
/// second, and a minting isolate's clock up to four seconds behind this
/// one's. A copy whose read began later holds every grant the token's
/// roles came from.
pub const MINTED_MARGIN_MS: i64 = 5_000;
/// Rows asked for per read of the log.
pub const PAGE_ROWS: u32 = 5_000;
/// The log records a revoked session only if it was used (signed in or
/// refreshed: the only times an access token is minted) less than this
/// many seconds before (`migrations/0014_revocation_live_sessions.sql`): a
/// session idle for longer carries no access token that could still pass.
/// So revoking long-idle sessions (every session of an old account) fills
/// neither the log nor the isolates' sets.
pub const LOGGED_SESSION_IDLE_SECS: u64 = 86_400;
/// Longest `ACCESS_TTL` accepted, in seconds: a token's [`retention_secs`]
/// must fit in [`LOGGED_SESSION_IDLE_SECS`].
pub const MAX_ACCESS_TTL_SECS: u64 = 82_800;
const _: () =
    assert!(MAX_ACCESS_TTL_SECS + 2 * LEEWAY_SECS.unsigned_abs() + IN_FLIGHT_MARGIN_SECS <= LOGGED_SESSION_IDLE_SECS);

/// The `REVOCATION_LAG` used when none is set: [`REVOCATION_LAG_SECS`], or
/// a third of `ACCESS_TTL` when that is shorter (at least a second).
pub fn default_lag_secs(access_ttl_secs: u64) -> u64 {
    REVOCATION_LAG_SECS.min(access_ttl_secs / FAIL_CLOSED_LAGS.unsigned_abs()).max(1)
}

/// How long a revocation matters after it was recorded, in seconds, with
/// `ACCESS_TTL` = `access_ttl_secs`: no access token issued before it (or by
/// a request in flight at the time) is valid after that. Verification
/// accepts a token up to [`LEEWAY_SECS`] past its `exp`, and an `exp` up to
/// `ACCESS_TTL` + [`LEEWAY_SECS`] after its `iat`.
pub fn retention_secs(access_ttl_secs: u64) -> u64 {
    access_ttl_secs.saturating_add(2 * LEEWAY_SECS.unsigned_abs()).saturating_add(IN_FLIGHT_MARGIN_SECS)
}

/// Shortest `INTROSPECTION_SECRET` accepted, in characters.
pub const MIN_INTROSPECTION_SECRET_CHARS: usize = 32;

/// `INTROSPECTION_SECRET`: what callers of `POST /auth/introspect` present
/// as a bearer token. Only its SHA-256 is kept, and a presented secret is
/// hashed and compared with it in constant time, so neither its bytes nor
/// its length show in the timing. Its `Debug` prints nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionSecret([u8; 32]);

impl std::fmt::Debug for IntrospectionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntrospectionSecret(..)")
    }
}

impl IntrospectionSecret {
    /// At least [`MIN_INTROSPECTION_SECRET_CHARS`] printable ASCII
    /// characters, no spaces (it travels in an `Authorization` header).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() < MIN_INTROSPECTION_SECRET_CHARS || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "must be at least {MIN_INTROSPECTION_SECRET_CHARS} printable ASCII characters without spaces \
                 (e.g. openssl rand -base64 32)"
            ));
        }
        Ok(Self(Sha256::digest(raw.as_bytes()).into()))
    }

    /// Whether `presented` is the secret, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// What a revocation took away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// This session (`sid`): every access token it carries.
    Session(SessionId),
    /// The roles of this user changed: `roles` is what they hold now.
    Roles {
        /// The user (`sub`).
        user_id: UserId,
        /// The user's roles after the change.
        roles: Vec<Role>,
    },
}

/// One row of the revocation log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Its place in the log: later rows have larger numbers.
    pub seq: u64,
    /// When it was recorded.
    pub at: UnixTime,
    /// What it revoked.
    pub what: Revoked,
}

/// One read of the log: the rows after a sequence number, in order, that
/// still matter at the time of the read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationPage {
    /// The rows, by increasing `seq`, at most the number asked for.
    pub rows: Vec<Revocation>,
    /// The largest `seq` in the log when it was read (0 when empty): rows up
    /// to it that are not in `rows` no longer matter, unless `rows` is full
    /// (then the next page starts after its last row).
    pub last_seq: u64,
}

/// The revocations an isolate knows of.
#[derive(Debug, Default)]
pub struct RevocationSet {
    /// Revoked session ids, with when they were revoked.
    sessions: HashMap<SessionId, UnixTime>,
    /// Users whose roles changed: their current roles, and since when.
    roles: HashMap<UserId, (Box<[Role]>, UnixTime)>,
    /// The last log row applied.
    cursor: u64,
}

impl RevocationSet {
    /// An empty set that has seen no row.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `seq` of the last row applied: the next read starts after it.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// How many sessions and users it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.sessions.len(), self.roles.len())
    }

    /// Whether an access token of session `sid`, user `sub`, claiming
    /// `roles`, is refused: its session was revoked, or it claims a role the
    /// user no longer holds. Hash lookups, no allocation: this runs on
    /// every authenticated gateway request.
    pub fn refuses(&self, sid: &SessionId, sub: &UserId, roles: &[Role]) -> bool {
        if self.sessions.contains_key(sid) {
            return true;
        }
        if roles.is_empty() || self.roles.is_empty() {
            return false;
        }
        self.roles.get(sub).is_some_and(|(held, _)| roles.iter().any(|r| !held.contains(r)))
    }

    /// Whether session `sid` is revoked (a token of it is refused whatever
    /// its roles).
    pub fn revokes_session(&self, sid: &SessionId) -> bool {
        self.sessions.contains_key(sid)
    }

    /// Applies rows read from the log, in order, skipping those already
    /// applied (two reads may overlap), and drops what no longer matters at
    /// `now` (`retention_secs` after it was recorded).
    pub fn apply(&mut self, rows: Vec<Revocation>, last_seq: u64, now: UnixTime, retention_secs: u64) {
        for row in rows {
            if row.seq <= self.cursor {
                continue;
            }
            self.cursor = row.seq;
            match row.what {
                Revoked::Session(sid) => {
                    self.sessions.insert(sid, row.at);
                }
                Revoked::Roles { user_id, roles } => {
                    self.roles.insert(user_id, (roles.into_boxed_slice(), row.at));
                }
            }
        }
        self.cursor = self.cursor.max(last_seq);
        let live = |at: &UnixTime| at.plus_secs(retention_secs) > now;
        self.sessions.retain(|_, at| live(at));
        self.roles.retain(|_, (_, at)| live(at));
    }
}

/// One read of the log ([`read`](crate::core::gateway::revocations::read)):
/// the rows to apply, in order, and the log's last `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// The rows added since the cursor that still matter.
    pub rows: Vec<Revocation>,
    /// The log's last `seq` when it was read.
    pub last_seq: u64,
    /// The log's last `seq` was behind the cursor — the log was restored
    /// from a backup, recreated, or emptied by the upkeep — so it was read
    /// from its start, and the set must be rebuilt from these rows alone.
    pub from_start: bool,
}

/// What a request may do with an isolate's set ([`Revocations::readiness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Recent enough: use it.
    Fresh,
    /// Use it, and read the log again in the background.
    Refresh,
    /// A lag old or more: read the log before answering; if that read
    /// fails, the set may still be used until it is [`FAIL_CLOSED_LAGS`]
    /// lags old (a D1 outage), never otherwise.
    Stale,
    /// Never read, or too old to be used: read the log before answering,
    /// and fail closed if that read fails.
    Read,
}

/// An isolate's [`RevocationSet`] and when it was last read.
#[derive(Debug, Default)]
pub struct Revocations {
    set: RevocationSet,
    /// When the last successful read began, in Unix milliseconds.
    read_at_ms: Option<i64>,
}

impl Revocations {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the set may be used for at `now_ms` under `REVOCATION_LAG` =
    /// `lag_secs` (module docs).
    pub fn readiness(&self, now_ms: i64, lag_secs: u64) -> Readiness {
        let Some(read_at) = self.read_at_ms else { return Readiness::Read };
        let lag_ms = i64::try_from(lag_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let age = now_ms.saturating_sub(read_at);
        if age >= lag_ms.saturating_mul(FAIL_CLOSED_LAGS) {
            Readiness::Read
        } else if age >= lag_ms {
            Readiness::Stale
        } else if age >= lag_ms / 2 {
            Readiness::Refresh
        } else {
            Readiness::Fresh
        }
    }

    /// The set, whatever its age.
    pub fn set(&self) -> &RevocationSet {
        &self.set
    }

    /// When the last successful read began (Unix milliseconds).
    pub fn read_at_ms(&self) -> Option<i64> {
        self.read_at_ms
    }

    /// Installs a read that began at `began_ms` ([`read`](crate::core::gateway::revocations::read) after
    /// [`RevocationSet::cursor`]): its rows are applied (to an empty set
    /// when the log was read from its start), and the set counts as read
    /// then — unless a read that began later was installed already.
    pub fn install(&mut self, began_ms: i64, read: LogRead, now: UnixTime, retention_secs: u64) {
        if read.from_start {
            self.set = RevocationSet::new();
        }
        self.set.apply(read.rows, read.last_seq, now, retention_secs);
        self.read_at_ms = Some(self.read_at_ms.map_or(began_ms, |at| at.max(began_ms)));
    }
}

/// A session as the `fresh` check reads it: the session and the roles its
/// user holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The session.
    pub session: Session,
    /// The user's roles now.
    pub roles: Vec<Role>,
}

/// Whether a token of session `sid`, user `sub`, claiming `roles` still
/// stands by its session as stored (`standing`, `None` if there is no such
/// session) at `now` under `SESSION_MAX_AGE` = `max_age_secs`: the session
/// is the user's and live, and the user holds every role claimed.
pub fn stands(standing: Option<&Standing>, sub: &UserId, roles: &[Role], now: UnixTime, max_age_secs: u64) -> bool {
    standing.is_some_and(|s| {
        s.session.user_id == *sub && s.session.is_live(now, max_age_secs) && roles.iter().all(|r| s.roles.contains(r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::token::ExtraClaims;

    const RETAIN: u64 = 1_000;

    fn session_row(seq: u64, at: i64, sid: &str) -> Revocation {
        Revocation { seq, at: UnixTime(at), what: Revoked::Session(sid.into()) }
    }

    fn roles_row(seq: u64, at: i64, user: &str, roles: &[&str]) -> Revocation {
        let roles = roles.iter().map(|r| Role::from(*r)).collect();
        Revocation { seq, at: UnixTime(at), what: Revoked::Roles { user_id: user.into(), roles } }
    }

    fn roles(r: &[&str]) -> Vec<Role> {
        r.iter().map(|s| Role::from(*s)).collect()
    }

    #[test]
    fn the_introspection_secret_is_checked_whole_and_never_printed() {
        let raw = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let secret = IntrospectionSecret::parse(raw).unwrap();
        assert!(secret.matches(raw));
        assert!(!secret.matches(&raw[..raw.len() - 1]));
        assert!(!secret.matches(""));
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        for bad in ["short", "with a space in it that is long enough", &"é".repeat(20)] {
            assert!(IntrospectionSecret::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_revoked_session_refuses_its_tokens_and_no_other() {
        let mut set = RevocationSet::new();
        assert!(!set.refuses(&"s1".into(), &"u1".into(), &[]));
        set.apply(vec![session_row(1, 100, "s1")], 1, UnixTime(100), RETAIN);
        assert!(set.refuses(&"s1".into(), &"u1".into(), &[]));
        assert!(set.refuses(&"s1".into(), &"u1".into(), &roles(&["admin"])));
        assert!(!set.refuses(&"s2".into(), &"u1".into(), &[]), "another session of the same user");
        assert_eq!(set.cursor(), 1);
    }

    #[test]
    fn a_role_change_refuses_tokens_claiming_a_role_the_user_lost() {
        let mut set = RevocationSet::new();
        set.apply(vec![roles_row(1, 100, "u1", &["billing"])], 1, UnixTime(100), RETAIN);
        assert!(
            set.refuses(&"s1".into(), &"u1".into(), &roles(&["admin", "billing"])),
            "issued before admin was removed"
        );
        assert!(!set.refuses(&"s1".into(), &"u1".into(), &roles(&["billing"])), "issued after: the current roles");
        assert!(!set.refuses(&"s1".into(), &"u1".into(), &[]), "a token without roles claims nothing lost");
        assert!(!set.refuses(&"s9".into(), &"u2".into(), &roles(&["admin"])), "another user");
        // All roles removed (or the user deleted): any role claimed is refused.
        set.apply(vec![roles_row(2, 101, "u1", &[])], 2, UnixTime(101), RETAIN);
        assert!(set.refuses(&"s1".into(), &"u1".into(), &roles(&["billing"])));
        // Granted back: tokens claiming it stand again, whenever issued.
        set.apply(vec![roles_row(3, 102, "u1", &["admin", "billing"])], 3, UnixTime(102), RETAIN);
        assert!(!set.refuses(&"s1".into(), &"u1".into(), &roles(&["admin", "billing"])));
    }

    #[test]
    fn rows_apply_in_order_once_and_overlapping_reads_change_nothing() {
        let mut set = RevocationSet::new();
        let first = vec![roles_row(1, 100, "u1", &["a"]), roles_row(2, 100, "u1", &["a", "b"])];
        set.apply(first.clone(), 2, UnixTime(100), RETAIN);
        assert!(!set.refuses(&"s".into(), &"u1".into(), &roles(&["b"])), "the later row wins");
        // A second read that began before the first finished returns the same rows.
        set.apply(first, 2, UnixTime(100), RETAIN);
        assert!(!set.refuses(&"s".into(), &"u1".into(), &roles(&["b"])));
        // A read whose rows are all old news changes nothing either.
        set.apply(vec![roles_row(1, 100, "u1", &["a"])], 2, UnixTime(100), RETAIN);
        assert!(!set.refuses(&"s".into(), &"u1".into(), &roles(&["b"])), "row 1 again must not undo row 2");
        assert_eq!(set.cursor(), 2);
    }

    #[test]
    fn the_cursor_moves_past_rows_that_no_longer_matter() {
        let mut set = RevocationSet::new();
        set.apply(vec![], 40, UnixTime(100), RETAIN);
        assert_eq!(set.cursor(), 40, "expired rows 1..=40 are not read again");
        set.apply(vec![session_row(41, 100, "s")], 41, UnixTime(100), RETAIN);
        assert_eq!(set.cursor(), 41);
    }

    #[test]
    fn entries_are_dropped_once_no_token_they_refuse_can_be_valid() {
        let mut set = RevocationSet::new();
        set.apply(vec![session_row(1, 100, "s1"), roles_row(2, 100, "u1", &[])], 2, UnixTime(100), RETAIN);
        set.apply(vec![], 2, UnixTime(100 + RETAIN as i64 - 1), RETAIN);
        assert_eq!(set.len(), (1, 1));
        set.apply(vec![], 2, UnixTime(100 + RETAIN as i64), RETAIN);
        assert_eq!(set.len(), (0, 0));
        assert!(!set.refuses(&"s1".into(), &"u1".into(), &roles(&["x"])));
    }

    #[test]
    fn retention_outlives_every_token_issued_before_the_revocation() {
        // A token issued at the revocation (or by a request in flight then)
        // with the longest lifetime verification accepts, checked at the
        // last instant verification still accepts it.
        let ttl = 900;
        let issued = 1_000 + IN_FLIGHT_MARGIN_SECS as i64;
        let exp = issued + ttl + LEEWAY_SECS;
        let last_accepted = exp + LEEWAY_SECS - 1;
        assert!(1_000 + retention_secs(ttl as u64) as i64 > last_accepted);
    }

    #[test]
    fn readiness_follows_the_lag() {
        let mut r = Revocations::new();
        assert_eq!(r.readiness(0, 10), Readiness::Read, "never read");
        r.install(1_000, LogRead::default(), UnixTime(1), RETAIN);
        assert_eq!(r.readiness(1_000, 10), Readiness::Fresh);
        assert_eq!(r.readiness(5_999, 10), Readiness::Fresh);
        assert_eq!(r.readiness(6_000, 10), Readiness::Refresh, "from half the lag");
        assert_eq!(r.readiness(10_999, 10), Readiness::Refresh);
        // An idle isolate: a copy a lag old is read again before it is used,
        // so a revocation reaches it within the lag however rarely it is asked.
        assert_eq!(r.readiness(11_000, 10), Readiness::Stale, "a lag old: read before use");
        assert_eq!(r.readiness(30_999, 10), Readiness::Stale);
        assert_eq!(r.readiness(31_000, 10), Readiness::Read, "three lags: read before use, fail closed");
        // A read that began earlier than the installed one does not make it look older.
        r.install(20_000, LogRead::default(), UnixTime(20), RETAIN);
        r.install(15_000, LogRead::default(), UnixTime(20), RETAIN);
        assert_eq!(r.read_at_ms(), Some(20_000));
    }

    fn standing(user: &str, revoked: Option<i64>, held: &[&str]) -> Standing {
        Standing {
            session: Session {
                id: "s".into(),
                user_id: user.into(),
                created_at: UnixTime(0),
                last_used_at: UnixTime(0),
                expires_at: UnixTime(1_000),
                revoked_at: revoked.map(UnixTime),
                ip_address: None,
                user_agent: None,
                extra_claims: ExtraClaims::new(),
                amr: crate::core::amr::Amr::PWD,
            },
            roles: roles(held),
        }
    }

    #[test]
    fn a_fresh_check_needs_a_live_session_of_the_user_holding_every_role_claimed() {
        let now = UnixTime(10);
        assert!(stands(Some(&standing("u", None, &["admin"])), &"u".into(), &roles(&["admin"]), now, 10_000));
        assert!(stands(Some(&standing("u", None, &["admin"])), &"u".into(), &[], now, 10_000));
        assert!(!stands(None, &"u".into(), &[], now, 10_000), "no such session");
        assert!(!stands(Some(&standing("u", Some(5), &[])), &"u".into(), &[], now, 10_000), "revoked");
        assert!(!stands(Some(&standing("v", None, &[])), &"u".into(), &[], now, 10_000), "another user's session");
        assert!(!stands(Some(&standing("u", None, &[])), &"u".into(), &roles(&["admin"]), now, 10_000), "role removed");
        assert!(!stands(Some(&standing("u", None, &[])), &"u".into(), &[], UnixTime(1_000), 10_000), "expired");
        assert!(!stands(Some(&standing("u", None, &[])), &"u".into(), &[], now, 10), "past SESSION_MAX_AGE");
    }

    #[test]
    fn the_migration_logs_sessions_used_within_the_idle_bound() {
        let sql = include_str!("../../migrations/0014_revocation_live_sessions.sql");
        let bound = format!("OLD.last_used_at > unixepoch() - {LOGGED_SESSION_IDLE_SECS}");
        assert_eq!(sql.matches(&bound).count(), 2, "both session triggers use LOGGED_SESSION_IDLE_SECS");
    }
}
