//! The audit log: every auth event becomes one entry of D1's `audit_log` —
//! who (the user it concerns, and the administrator who acted), what (its
//! type, its data, its outcome), when, and from where (IP address, user
//! agent) — read back newest first, a page at a time, by administrators
//! (`GET /auth/admin/audit`) and by each user for their own account
//! (`GET /auth/audit`).
//!
//! Premises, and how they hold:
//! - **Writing it never blocks or fails the action.** The request that acts
//!   only publishes its event, as before; the entry is written by the queue
//!   consumer from the queued message ([`AuditRecord::of_message`]),
//!   alongside the message's deliveries. A failed write leaves the
//!   deliveries alone; the message is tried again ([`after_audit`], at most
//!   [`AUDIT_RETRIES`] times, and the targets that already had the event do
//!   not get it again), then the entry is given up with a log line. The
//!   dead-letter consumer writes the entry too, for events that ran out of
//!   retries.
//! - **It cannot fill the database.** D1 holds the users and sessions every
//!   sign-in writes; an event flood must not fill it. The cron trigger
//!   deletes the oldest written entries beyond `AUDIT_MAX_ENTRIES`, before
//!   and regardless of `AUDIT_RETENTION_DAYS` ([`purge`]): a flood costs
//!   history, never sign-ins. An entry stores its client once (not again in
//!   `data`), and the event that could be repeated fastest, `refresh`, is
//!   rate-limited per session.
//! - **Once per event.** The entry's id is the event's: a redelivered,
//!   retried or redriven message writes nothing new.
//! - **No secret is stored.** The message is read with its one-time secret
//!   masked ([`Received::parse_masked`]): this path never opens the seal, and
//!   the entry's `data` leaves the `token` or `code` member out altogether.
//! - **Failures are audited.** Every event type is, each with the outcome
//!   its line of the `events!` table gives ([`Event::outcome`]):
//!   `login_failed` and `rate_limit_exceeded` are `failure`.
//!   An event that names no user but an address (`login_failed`,
//!   `rate_limit_exceeded`, a passwordless sign-up's request) is attributed,
//!   when its entry is written, to the account that has that address then,
//!   if that account was created at or before the event — so its owner sees
//!   attempts on it. (Not to the account that had the address at the event:
//!   if the address moved between the two, the entry follows it.)
//! - **A user sees only their own.** The own view shows the caller's
//!   entries, none from before the account's latest takeover (the earlier
//!   holder's), and no administrator's client for an entry they made.
//!   While the account's address is unverified, it shows no client for an
//!   entry anyone who knows the address can cause ([`BY_ADDRESS_KINDS`]):
//!   the holder of an unverified account may have planted it on someone
//!   else's address ([`crate::core::takeover`]), and those requests are the
//!   address's owner's — where they are, on what device, that they are
//!   active. It is decided as the page is read: once the address is
//!   verified, whoever holds the account has proved they read its mail
//!   (a proof by anyone else took it over, and the view starts there), so
//!   attempts on it are theirs to see, as for any verified account.
//! - **Pages are stable.** Entries are ordered by (`at`, `id`), newest
//!   first; a [`Cursor`] is the last entry's pair, so a walk sees each entry
//!   at most once however many entries arrive meanwhile. Not every entry
//!   arrives newer than the cursor, though: `at` is the event's time and
//!   the entry is written when the consumer gets it — seconds later, or
//!   minutes after retries, or after a queue outage — so a late entry can
//!   land behind a walk or a `since=` poll. Exporters overlap their windows
//!   (docs/auth-api.md).

use serde::Serialize;
use serde_json::Value;

use crate::core::audit_log::{is_id, MAX_ID_LEN};
pub use crate::core::audit_log::{AuditEntry, AuditFilter, AuditRecord, Cursor, Outcome};
use crate::core::body::whole_number;
use crate::core::delivery::{retry_delay_secs, Rejection, Verdict};
use crate::core::error::Error;
use crate::core::events::{Event, Received};
use crate::core::ids::UserId;
use crate::core::ports::AuditLog;
use crate::core::time::UnixTime;

/// Page size when `limit` is not given.
pub const DEFAULT_AUDIT_PAGE: u32 = 50;
/// Largest page size: a larger `limit` is read as this (as
/// `GET /auth/admin/users` caps its own).
pub const MAX_AUDIT_PAGE: u32 = 200;
/// How many times a message is tried again for its audit entry alone. It
/// must not exceed the event queue's `max_retries` (wrangler.toml, which
/// says so beside it; a native test reads that file): an audit failure must
/// never send an event every target had to the dead-letter queue.
pub const AUDIT_RETRIES: u32 = 3;
/// Rows the cron trigger deletes per statement: small, since D1 runs one
/// statement at a time and sign-ins wait behind each.
pub const PURGE_BATCH: u32 = 1_000;
/// Statements per cron run (each minute) at most, the cap's and the
/// retention's together: up to 10,000 entries a minute. A backlog is worked
/// off over several runs.
pub const MAX_PURGE_BATCHES: u32 = 10;
/// The stable code of every refused query.
const INVALID_QUERY: &str = "invalid_query";
/// Members of an event's `data` never written to the audit log: the
/// one-time secrets.
const SECRET_MEMBERS: [&str; 2] = ["token", "code"];
/// Members of an event's `data` that name the client, kept as the entry's
/// own `ip_address` and `user_agent` rather than in its `data`.
const CLIENT_MEMBERS: [&str; 2] = ["ip_address", "user_agent"];
/// Event types anyone who knows an account's address can cause, without a
/// session of the account, its password, passkey or linked identity, or a
/// proof of the address: a failed sign-in, a refusal by a rate limit, and
/// the requests for a reset link, magic link or email code. Every other type
/// is caused by the account's holder (their sign-up, sessions and
/// credentials), by an administrator (whose client the own view never
/// shows), or by a proof of the address (which verifies it).
pub const BY_ADDRESS_KINDS: [&str; 5] =
    ["login_failed", "rate_limit_exceeded", "password_reset_requested", "magic_link_requested", "email_otp_requested"];

/// Whether anyone who knows the address may have caused an entry of type
/// `kind`: one of [`BY_ADDRESS_KINDS`], or a type this build does not know
/// (an entry of another build's), which is taken as one.
pub fn caused_by_address(kind: &str) -> bool {
    BY_ADDRESS_KINDS.contains(&kind) || Event::outcome_of(kind).is_none()
}

// The record is defined beside its port's other records (`audit_log`); how
// one is made from a queued event is this module's rule.
impl AuditRecord {
    /// The entry of a queued message's body, if it is an event or a
    /// [`Rejection`] wrapping one (as the dead-letter queue carries an event
    /// a target refused; its entry is written there when no earlier attempt
    /// could); else the message is malformed and has nothing to audit. The
    /// body is read with its secret masked, sealed or not, and never opened.
    /// `received_at` stands in for an unreadable timestamp.
    pub fn of_message(body: &Value, received_at: UnixTime) -> Option<Self> {
        let body = Rejection::event_in(body).unwrap_or(body);
        Received::parse_masked(body.clone()).ok().map(|event| Self::of(&event, received_at))
    }

    /// The entry of `event` (read with [`Received::parse_masked`]).
    pub fn of(event: &Received, received_at: UnixTime) -> Self {
        let kind = event.event.kind();
        let mut data = serde_json::to_value(&event.event).unwrap_or_default();
        if let Some(members) = data.as_object_mut() {
            for secret in SECRET_MEMBERS {
                members.remove(secret);
            }
        }
        let member = |data: &Value, name: &str| data.get(name).and_then(Value::as_str).map(str::to_string);
        let user_id = member(&data, "user_id").map(UserId::new);
        let subject_email = if user_id.is_none() { member(&data, "email") } else { None };
        let ctx = &event.ctx;
        let ip_address = ctx.ip_address.clone().or_else(|| member(&data, CLIENT_MEMBERS[0]));
        let user_agent = ctx.user_agent.clone().or_else(|| member(&data, CLIENT_MEMBERS[1]));
        // The client is the entry's own members: a copy in `data` (`login`,
        // `login_failed`, `token_refreshed`, `rate_limit_exceeded`) would
        // double what a long user agent costs. Only a copy goes.
        if let Some(members) = data.as_object_mut() {
            for (name, column) in CLIENT_MEMBERS.iter().zip([&ip_address, &user_agent]) {
                if members.get(*name).is_some_and(|v| v.is_null() || v.as_str() == column.as_deref()) {
                    members.remove(*name);
                }
            }
        }
        Self {
            id: event.id.clone(),
            kind,
            user_id,
            subject_email,
            actor_id: ctx.actor_id.clone(),
            ip_address,
            user_agent,
            outcome: event.event.outcome(),
            at: parse_rfc3339(&event.timestamp).unwrap_or(received_at),
            data: data.to_string(),
        }
    }
}

/// A request for a page: `user_id`, `type`, `since`, `until`, `cursor`,
/// `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Which entries.
    pub filter: AuditFilter,
    /// At most this many, 1 to [`MAX_AUDIT_PAGE`] (a larger `limit` is
    /// capped).
    pub limit: u32,
}

/// Who reads: which parameters a query may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// An administrator, over every user (`user_id` filters).
    Admin,
    /// A user, over their own account (no `user_id`).
    Own,
}

fn invalid(detail: impl Into<String>) -> Error {
    Error::validation(INVALID_QUERY, detail)
}

/// An RFC 3339 instant as Unix seconds (fractions dropped).
fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| UnixTime(t.timestamp()))
}

/// `since` / `until`: RFC 3339, or whole Unix seconds.
fn instant(name: &str, v: &str) -> Result<UnixTime, Error> {
    let unix = !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit());
    let parsed = if unix { v.parse().ok().map(UnixTime) } else { parse_rfc3339(v) };
    parsed.ok_or_else(|| invalid(format!("{name}: an RFC 3339 time (e.g. 2026-11-23T11:33:56Z) or whole Unix seconds")))
}

impl AuditQuery {
    /// Parses a raw query string for `reader`. Unknown or repeated
    /// parameters, an unknown `type`, a malformed time, id or cursor, a
    /// `since` after `until` and a `limit` that is not a whole number from 1
    /// (digits only) are 422 `invalid_query`; a `limit` above
    /// [`MAX_AUDIT_PAGE`] is capped.
    pub fn parse(raw: Option<&str>, reader: Reader) -> Result<Self, Error> {
        let mut q = Self { filter: AuditFilter::default(), limit: DEFAULT_AUDIT_PAGE };
        let mut seen: Vec<String> = Vec::new();
        let expected = match reader {
            Reader::Admin => "user_id, type, since, until, cursor, limit",
            Reader::Own => "type, since, until, cursor, limit",
        };
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.iter().any(|s| *s == k) {
                return Err(invalid(format!("{k}: given more than once")));
            }
            seen.push(k.to_string());
            let f = &mut q.filter;
            match (k.as_ref(), reader) {
                ("user_id", Reader::Admin) => {
                    if !is_id(&v) {
                        return Err(invalid(format!("user_id: 1 to {MAX_ID_LEN} of A-Z a-z 0-9 -")));
                    }
                    f.user_id = Some(UserId::new(v.as_ref()));
                }
                ("type", _) => {
                    f.kind = Some(Event::KINDS.iter().copied().find(|k| *k == v).ok_or_else(|| {
                        invalid("type: an event type (see docs/events.md), e.g. login or login_failed")
                    })?)
                }
                ("since", _) => f.since = Some(instant("since", &v)?),
                ("until", _) => f.until = Some(instant("until", &v)?),
                ("cursor", _) => {
                    f.after = Some(Cursor::decode(&v).ok_or_else(|| {
                        invalid("cursor: not a cursor this endpoint returned (pass next_cursor as it is)")
                    })?)
                }
                ("limit", _) => match whole_number(&v) {
                    Some(n) if n >= 1 => q.limit = n.min(MAX_AUDIT_PAGE),
                    _ => {
                        return Err(invalid(format!(
                            "limit: a whole number from 1 (at most {MAX_AUDIT_PAGE} are read)"
                        )))
                    }
                },
                (other, _) => return Err(invalid(format!("{other}: unknown parameter (expected {expected})"))),
            }
        }
        if let (Some(since), Some(until)) = (q.filter.since, q.filter.until) {
            if since > until {
                return Err(invalid("since: after until"));
            }
        }
        Ok(q)
    }
}

/// One entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryView {
    /// The event id.
    pub id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The user it concerns.
    pub user_id: Option<UserId>,
    /// The administrator who acted (admin view only, and only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<UserId>,
    /// `success` or `failure`.
    pub outcome: Outcome,
    /// The client's IP address (`None` in a user's own view of an
    /// administrator's action, and, while the account's address is
    /// unverified, of an entry [`caused_by_address`]).
    pub ip_address: Option<String>,
    /// The client's user agent (likewise).
    pub user_agent: Option<String>,
    /// When, RFC 3339.
    pub at: String,
    /// The event's data, without its one-time secret and without the
    /// client (`ip_address`, `user_agent`: the entry's own members).
    pub data: Value,
}

/// A page, as both endpoints answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<EntryView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Who a page is read for: what [`page`] shows of each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// An administrator: every entry as it was written.
    Admin,
    /// The account's own user; `address_verified`: whether the account's
    /// address is verified as the page is read.
    Own {
        /// Whether the account's address is verified now.
        address_verified: bool,
    },
}

impl Viewer {
    /// Whether `e`'s client (IP address, user agent) is shown: always to an
    /// administrator; in the own view, not for an administrator's action
    /// (that client is the administrator's), nor, while the address is
    /// unverified, for an entry [`caused_by_address`] (that client may be
    /// the address's owner, not the account's holder).
    fn shows_client_of(self, e: &AuditEntry) -> bool {
        match self {
            Self::Admin => true,
            Self::Own { address_verified } => e.actor_id.is_none() && (address_verified || !caused_by_address(&e.kind)),
        }
    }
}

/// Reads the page `q` asks for from `log`, for `viewer`. A user's own view
/// leaves out who acted, and the IP address and user agent of an entry
/// whose client is not theirs to see: an administrator's, and while the
/// address is unverified that of an entry [`caused_by_address`].
pub async fn page(log: &impl AuditLog, q: &AuditQuery, viewer: Viewer) -> Result<AuditPage, Error> {
    let limit = q.limit.clamp(1, MAX_AUDIT_PAGE);
    // One more than asked for says whether there is a next page.
    let mut entries = log.audit_entries(&q.filter, limit + 1).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor = if more { entries.last().map(|e| Cursor::after(e).encode()) } else { None };
    let admin = viewer == Viewer::Admin;
    let entries = entries
        .into_iter()
        .map(|e| {
            let shown = viewer.shows_client_of(&e);
            let mut data = e.data;
            // A copy of the client kept in `data` (one that differed from
            // the request's) goes with it.
            if let Some(members) = data.as_object_mut().filter(|_| !shown) {
                for name in CLIENT_MEMBERS {
                    members.remove(name);
                }
            }
            EntryView {
                id: e.id,
                kind: e.kind,
                user_id: e.user_id,
                outcome: e.outcome,
                ip_address: e.ip_address.filter(|_| shown),
                user_agent: e.user_agent.filter(|_| shown),
                actor_id: if admin { e.actor_id } else { None },
                at: e.at.rfc3339(),
                data,
            }
        })
        .collect();
    Ok(AuditPage { entries, next_cursor })
}

/// What becomes of a message after its deliveries (`delivered`) when its
/// audit entry was, or was not, `written` on its `attempt` (from 1): a
/// message every target has but whose entry failed is tried again with the
/// delivery backoff, [`AUDIT_RETRIES`] times; after that it is acked, the
/// entry given up. A message retried anyway keeps its delay.
pub fn after_audit(delivered: Verdict, written: bool, attempt: u32, base_delay_secs: u32) -> Verdict {
    match delivered {
        Verdict::Ack if !written && attempt <= AUDIT_RETRIES => {
            Verdict::Retry { delay_secs: retry_delay_secs(base_delay_secs, attempt) }
        }
        other => other,
    }
}

/// What one [`purge`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Entries beyond `AUDIT_MAX_ENTRIES`.
    pub over_cap: u64,
    /// Entries older than `AUDIT_RETENTION_DAYS`.
    pub expired: u64,
}

/// Deletes, in batches of [`PURGE_BATCH`] and at most [`MAX_PURGE_BATCHES`]
/// statements per call: first the oldest written entries beyond the newest
/// `max_entries` (`AUDIT_MAX_ENTRIES`), then those older than
/// `retention_days` (`AUDIT_RETENTION_DAYS`) at `now`.
///
/// The cap comes first, and regardless of age: a flood of events (refreshes
/// from many sessions, failed sign-ins from many addresses) must never fill
/// the D1 database the sign-ins write to, so it pushes the oldest entries
/// out instead — losing history is the lesser harm.
pub async fn purge(log: &impl AuditLog, now: UnixTime, retention_days: u32, max_entries: u32) -> Result<Purged, Error> {
    let before = now.minus_secs(u64::from(retention_days) * 86_400);
    let mut out = Purged::default();
    let mut batches = 0;
    while batches < MAX_PURGE_BATCHES {
        batches += 1;
        let n = log.purge_audit_beyond(u64::from(max_entries), PURGE_BATCH).await?;
        out.over_cap += n;
        if n < u64::from(PURGE_BATCH) {
            break;
        }
    }
    while batches < MAX_PURGE_BATCHES {
        batches += 1;
        let n = log.purge_audit(before, PURGE_BATCH).await?;
        out.expired += n;
        if n < u64::from(PURGE_BATCH) {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::{Envelope, EventContext};
    use crate::core::ids::test_support::SeqRandom;
    use crate::core::signing_keys::Kek;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    #[test]
    fn failures_are_the_refused_attempts() {
        for kind in Event::KINDS {
            let expected = if ["login_failed", "rate_limit_exceeded", "mfa_failed"].contains(kind) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(Outcome::of(kind), expected, "{kind}");
            assert_eq!(Event::outcome_of(kind), Some(expected), "{kind}");
            assert_eq!(Outcome::parse(Outcome::of(kind).as_str()), Some(expected));
        }
        assert_eq!(Event::outcome_of("mfa_enroled"), None);
        assert_eq!(Outcome::of("a_type_of_a_later_build"), Outcome::Success);
    }

    #[test]
    fn the_entry_comes_from_the_sealed_message_without_opening_it() {
        let key = crate::core::events::secrets_key(&Kek::from_bytes([3; 32]));
        let env = Envelope::new(
            crate::core::events::MagicLinkRequested {
                user_id: None,
                email: "a@b.co".into(),
                token: "s3cret".into(),
                locale: None,
            },
            &mut SeqRandom(1),
            UnixTime(1_795_433_636),
        )
        .with_context(EventContext {
            ip_address: Some("198.51.100.4".into()),
            user_agent: Some("Firefox".into()),
            actor_id: None,
        });
        let body: Value = serde_json::from_str(&env.to_sealed_json(&key, &mut SeqRandom(2)).unwrap()).unwrap();
        let r = AuditRecord::of_message(&body, UnixTime(0)).unwrap();
        assert_eq!(r.id, env.id);
        assert_eq!((r.kind, r.outcome, r.at), ("magic_link_requested", Outcome::Success, UnixTime(1_795_433_636)));
        assert_eq!((r.user_id, r.subject_email.as_deref()), (None, Some("a@b.co")));
        assert_eq!((r.ip_address.as_deref(), r.user_agent.as_deref()), (Some("198.51.100.4"), Some("Firefox")));
        let data: Value = serde_json::from_str(&r.data).unwrap();
        assert_eq!(data, serde_json::json!({"user_id": null, "email": "a@b.co", "locale": null}));
        assert!(!r.data.contains("sealed") && !r.data.contains("s3cret"));
        assert!(AuditRecord::of_message(&serde_json::json!({"type": "login"}), UnixTime(0)).is_none());
        // A rejected event reaches the dead-letter consumer wrapped: the same entry.
        let wrapped = serde_json::to_value(Rejection::new(body.clone(), "email:a@b.co: HTTP 422: …")).unwrap();
        assert_eq!(AuditRecord::of_message(&wrapped, UnixTime(0)), AuditRecord::of_message(&body, UnixTime(0)));
        assert!(AuditRecord::of_message(&wrapped, UnixTime(0)).is_some());
        let not_an_event = serde_json::json!({"rejected": {"reason": "x", "event": {"type": "login"}}});
        assert!(AuditRecord::of_message(&not_an_event, UnixTime(0)).is_none());
    }

    #[test]
    fn every_event_type_is_placed_as_caused_by_the_holder_or_by_anyone_with_the_address() {
        // A new type fails here until it is placed on one side or the other.
        let by_holder = [
            "user_created",
            "user_updated",
            "user_deleted",
            "user_banned",
            "user_unbanned",
            "login",
            "logout",
            "token_refreshed",
            "role_added",
            "role_removed",
            "session_revoked",
            "oauth_link",
            "password_reset",
            "password_changed",
            "email_verification_requested",
            "email_verified",
            "magic_link_login",
            "email_otp_login",
            "key_rotated",
            "key_retired",
            "mfa_enabled",
            "mfa_disabled",
            "mfa_failed",
            "passkey_added",
            "passkey_removed",
        ];
        for kind in Event::KINDS {
            assert_eq!(caused_by_address(kind), !by_holder.contains(kind), "{kind}");
        }
        assert_eq!(by_holder.len() + BY_ADDRESS_KINDS.len(), Event::KINDS.len());
        assert!(caused_by_address("a_type_of_a_later_build"), "unknown: taken as anyone's");
    }

    #[test]
    fn a_cursor_reads_back_only_what_it_wrote() {
        let c = Cursor { at: UnixTime(1_795_433_636), id: "0f8b2c1e-4d3a-4b6e-9a1f-2c3d4e5f6a7b".into() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c.clone()));
        let early = Cursor { at: UnixTime(-5), id: "x".into() };
        assert_eq!(Cursor::decode(&early.encode()), Some(early));
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "!!".into(),
            enc("123"),
            enc(":id"),
            enc("+12:id"),
            enc("12:"),
            enc("12:a b"),
            enc("x:id"),
            enc(&format!("1:{}", "a".repeat(65))),
            "A".repeat(200),
            format!("{}=", c.encode()),
        ] {
            assert_eq!(Cursor::decode(&bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_are_checked_for_their_reader() {
        let q = AuditQuery::parse(
            Some("user_id=u-1&type=login_failed&since=2026-11-23T11:33:56Z&until=1795433700&limit=200"),
            Reader::Admin,
        )
        .unwrap();
        assert_eq!(q.filter.user_id.as_deref(), Some("u-1"));
        assert_eq!(q.filter.kind, Some("login_failed"));
        assert_eq!(
            (q.filter.since, q.filter.until, q.limit),
            (Some(UnixTime(1_795_433_636)), Some(UnixTime(1_795_433_700)), 200)
        );
        assert_eq!(AuditQuery::parse(None, Reader::Own).unwrap().limit, DEFAULT_AUDIT_PAGE);
        // Above the largest page, the largest page (as the users listing does).
        assert_eq!(AuditQuery::parse(Some("limit=201"), Reader::Own).unwrap().limit, MAX_AUDIT_PAGE);
        assert_eq!(AuditQuery::parse(Some("limit=4294967295"), Reader::Admin).unwrap().limit, MAX_AUDIT_PAGE);
        let since = AuditQuery::parse(Some("since=2026-11-23T12:33:56%2B01:00"), Reader::Own).unwrap();
        assert_eq!(since.filter.since, Some(UnixTime(1_795_433_636)));
        for (raw, reader) in [
            ("user_id=u-1", Reader::Own),
            ("user_id=a%20b", Reader::Admin),
            ("type=logn", Reader::Admin),
            ("since=yesterday", Reader::Admin),
            ("until=2026-13-01T00:00:00Z", Reader::Admin),
            ("since=-5", Reader::Admin),
            ("since=20&until=10", Reader::Admin),
            ("cursor=abc", Reader::Admin),
            ("limit=0", Reader::Admin),
            ("limit=%2B5", Reader::Own),
            ("limit=+5", Reader::Own),
            ("limit=-1", Reader::Own),
            ("limit=ten", Reader::Own),
            ("limit=1&limit=2", Reader::Own),
            ("offset=5", Reader::Admin),
        ] {
            let e = AuditQuery::parse(Some(raw), reader).unwrap_err().problem();
            assert_eq!((e.status, e.code), (422, "invalid_query"), "{raw}");
        }
    }

    #[test]
    fn an_audit_failure_retries_a_delivered_message_a_bounded_number_of_times() {
        assert_eq!(after_audit(Verdict::Ack, true, 1, 30), Verdict::Ack);
        assert_eq!(after_audit(Verdict::Ack, false, 1, 30), Verdict::Retry { delay_secs: 30 });
        assert_eq!(after_audit(Verdict::Ack, false, AUDIT_RETRIES, 30), Verdict::Retry { delay_secs: 120 });
        assert_eq!(after_audit(Verdict::Ack, false, AUDIT_RETRIES + 1, 30), Verdict::Ack);
        assert_eq!(after_audit(Verdict::Retry { delay_secs: 7 }, false, 1, 30), Verdict::Retry { delay_secs: 7 });
    }
}
