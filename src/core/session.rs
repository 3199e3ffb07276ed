//! Sessions: one per sign-in, each a family of rotating refresh tokens.
//!
//! Rotation rule: every refresh consumes the presented token and issues its
//! successor in one conditional write, so of two racing refreshes exactly one
//! wins and there are never two live successors. A token that was already
//! rotated away is reuse — a stolen copy or a replay — and revokes the whole
//! session (OAuth 2.0 Security BCP, §4.14). There is deliberately no grace
//! window: a client that fires two refreshes with one token at once loses
//! the session, so clients must serialise their refreshes.
//!
//! Lifetime: a session ends `SESSION_MAX_AGE` after it was created (its
//! sign-in), however often it is refreshed. Each refresh token expires
//! `REFRESH_TTL` after it was issued or at that end, whichever is first, and
//! every access token at that end at the latest; past it, the session is
//! dead for refresh and for the auth API.

use serde::Serialize;

use crate::core::amr::Amr;
use crate::core::ids::{SessionId, UserId};
use crate::core::rate_limit::{Count, Rule};
use crate::core::time::UnixTime;
use crate::core::token::ExtraClaims;

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// UUID, the `sid` claim.
    pub id: SessionId,
    /// Owner.
    pub user_id: UserId,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last sign-in or refresh.
    pub last_used_at: UnixTime,
    /// The current refresh token stops working at this time (never after
    /// the session's end, [`Session::ends_at`]).
    pub expires_at: UnixTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixTime>,
    /// Client IP at the last use.
    pub ip_address: Option<String>,
    /// Client user agent at the last use.
    pub user_agent: Option<String>,
    /// Claims the sign-in hook added at sign-in; every access token of the
    /// session carries them, refreshed ones included.
    pub extra_claims: ExtraClaims,
    /// How the user signed in (`amr`); every access token of the session
    /// carries it, with `auth_time` the session's creation (its sign-in).
    pub amr: Amr,
}

impl Session {
    /// The session's absolute end under `SESSION_MAX_AGE` = `max_age_secs`:
    /// that long after its creation, whatever its refreshes.
    pub fn ends_at(&self, max_age_secs: u64) -> UnixTime {
        self.created_at.plus_secs(max_age_secs)
    }

    /// Whether the session can still be used at `now`: not revoked, its
    /// refresh token not expired, and before its end (checked on its own, so
    /// that a shortened `SESSION_MAX_AGE` ends older sessions at once).
    pub fn is_live(&self, now: UnixTime, max_age_secs: u64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now && self.ends_at(max_age_secs) > now
    }

    /// The view listed by `GET /auth/sessions`.
    pub fn view(&self, current_sid: &SessionId) -> SessionView {
        SessionView {
            id: self.id.clone(),
            created_at: self.created_at.rfc3339(),
            last_used_at: self.last_used_at.rfc3339(),
            expires_at: self.expires_at.rfc3339(),
            ip_address: self.ip_address.clone(),
            user_agent: self.user_agent.clone(),
            current: self.id == *current_sid,
        }
    }
}

/// A session as shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    /// Session id.
    pub id: SessionId,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub last_used_at: String,
    /// RFC 3339.
    pub expires_at: String,
    /// Client IP at the last use.
    pub ip_address: Option<String>,
    /// Client user agent at the last use.
    pub user_agent: Option<String>,
    /// Whether this is the session of the request.
    pub current: bool,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: its successor is now the only live one.
    Rotated(Session),
    /// The token was already rotated away: reuse. The session is now revoked
    /// (if it was not already).
    Reused {
        /// The session it belonged to.
        session_id: SessionId,
        /// Its owner.
        user_id: UserId,
    },
    /// The token was current but its session is revoked or expired (its
    /// refresh token, or the session itself at `SESSION_MAX_AGE`).
    Dead,
    /// The token is current and its session live, but the session is over
    /// its [`RotateRequest::limit`]: nothing rotated, the token stays
    /// current (a client that waits can use it).
    Throttled {
        /// The session's counter, this request counted.
        count: Count,
    },
    /// No session ever had this token.
    Unknown,
}

/// The details a rotation writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest<'a> {
    /// Hash of the presented token.
    pub old_hash: &'a str,
    /// Hash of the successor.
    pub new_hash: &'a str,
    /// Now.
    pub now: UnixTime,
    /// New expiry of the refresh token (`REFRESH_TTL` from now); the store
    /// caps it at the session's end.
    pub expires_at: UnixTime,
    /// `SESSION_MAX_AGE`: a session created this long ago or more does not
    /// rotate (the rotation reports [`Rotation::Dead`]).
    pub max_age_secs: u64,
    /// Client IP.
    pub ip_address: Option<&'a str>,
    /// Client user agent.
    pub user_agent: Option<&'a str>,
    /// The session's extra claims from now on, replacing what it had, when
    /// the sign-in hook was asked again (`HOOK_ON_REFRESH`); `None` keeps them.
    pub extra_claims: Option<&'a ExtraClaims>,
    /// Rotations allowed per session (`RATE_LIMITS` `refresh.session`):
    /// each request with a current token of a live session counts, in the
    /// same write as the rotation, which happens only within the limit.
    pub limit: Option<RotationLimit<'a>>,
}

/// A limit on rotations per session, counted in the rotation's own write on
/// the rate-limit counter `key_prefix` + the session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationLimit<'a> {
    /// The counter's key without the session id (`refresh:session:`).
    pub key_prefix: &'a str,
    /// How many per window.
    pub rule: Rule,
}

/// The signed-in caller of a request, as a write made on their behalf
/// checks them: the write happens only while this session is live (as
/// [`Session::is_live`] says: not revoked, its refresh token unexpired,
/// before its end) and belongs to `user_id`, decided in that same write. A
/// request that authenticated just before its session was revoked — by a
/// takeover of the account ([`crate::core::takeover`]), a ban, a logout or a
/// revocation elsewhere — then changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession<'a> {
    /// The session's user.
    pub user_id: &'a UserId,
    /// The session (`sid`).
    pub session_id: &'a SessionId,
    /// Now.
    pub now: UnixTime,
    /// `SESSION_MAX_AGE`.
    pub max_age_secs: u64,
}

/// What a sign-in relied on when it decided to sign the user in: its
/// session is written only while all of it still holds, decided in the
/// write that creates the session, so a sign-in racing a change of the
/// account ends without a session rather than with one the change should
/// have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInBasis<'a> {
    /// The account epoch the sign-in was decided under: the one it read
    /// with the password it checked, the one an emailed token was issued
    /// under, or the one a takeover made in this sign-in.
    pub user_epoch: u64,
    /// The provider identity `(provider, subject)` the user signed in
    /// through: it must still be linked to the account (a takeover or an
    /// unlink may have removed it since it was read).
    pub identity: Option<(&'a str, &'a str)>,
    /// The passkey (its id) the user signed in with: it must still be the
    /// account's (its removal, or an administrator's reset of the factors,
    /// may have happened since the sign-in used it).
    pub passkey: Option<&'a str>,
    /// Whether the sign-in proved a second factor. One that did not gets its
    /// session only while the account has no second factor on (one turned
    /// on after the sign-in read the account must not be skipped).
    pub second_factor: bool,
}

impl SignInBasis<'_> {
    /// A sign-in decided on the account at `user_epoch` with one factor, not
    /// through a provider.
    pub fn epoch(user_epoch: u64) -> Self {
        Self { user_epoch, identity: None, passkey: None, second_factor: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(created_at: i64, expires_at: i64) -> Session {
        Session {
            id: "s".into(),
            user_id: "u".into(),
            created_at: UnixTime(created_at),
            last_used_at: UnixTime(created_at),
            expires_at: UnixTime(expires_at),
            revoked_at: None,
            ip_address: None,
            user_agent: None,
            extra_claims: ExtraClaims::new(),
            amr: Amr::PWD,
        }
    }

    #[test]
    fn a_session_is_live_until_its_refresh_token_expires_or_it_reaches_its_max_age() {
        let s = session(1_000, 5_000);
        assert_eq!(s.ends_at(3_000), UnixTime(4_000));
        assert!(s.is_live(UnixTime(3_999), 3_000));
        assert!(!s.is_live(UnixTime(4_000), 3_000), "the end, before the refresh token's expiry");
        assert!(s.is_live(UnixTime(4_999), 10_000));
        assert!(!s.is_live(UnixTime(5_000), 10_000), "the refresh token's expiry, before the end");
        let revoked = Session { revoked_at: Some(UnixTime(1_500)), ..s };
        assert!(!revoked.is_live(UnixTime(2_000), 10_000));
    }
}
