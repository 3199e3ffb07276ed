//! Rate limits: which endpoints are limited and by which keys (client IP,
//! its IPv6 /48, email, the refresh token's session, the signed-in user),
//! how much (`RATE_LIMITS`), the decision, the daily
//! cap on failed email codes per account (`OTP_MAX_FAILURES_PER_DAY`), and
//! the login back-off schedule for consecutive failures on one account.
//! Counting is the store's ([`crate::core::ports::RateLimitStore`]): one
//! atomic upsert per key, so concurrent requests never lose an update. A
//! key's window opens at its first request and lasts the rule's length (not
//! aligned to the clock, so a burst is never split between two windows).

use std::net::IpAddr;

use serde_json::Value;

use crate::core::time::UnixTime;

/// A rate-limited endpoint of the auth API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /auth/login`.
    Login,
    /// `POST /auth/signup`.
    Signup,
    /// `POST /auth/magic-link`.
    MagicLink,
    /// `POST /auth/otp`.
    Otp,
    /// `POST /auth/otp/verify`.
    OtpVerify,
    /// `POST /auth/password/forgot`.
    PasswordForgot,
    /// Everything under `/auth/oauth/` (authorize, callback, exchange,
    /// link, unlink): per IP only, there is no email to key by.
    Oauth,
    /// Every check of a second factor's code: `POST /auth/mfa/verify`, and
    /// the codes given to `/auth/mfa/totp/confirm`, `DELETE /auth/mfa/totp`
    /// and `/auth/mfa/backup-codes`; the email is the account's.
    MfaVerify,
    /// `POST /auth/refresh`: per session (the presented refresh token's),
    /// counted in the rotation's own write
    /// ([`crate::core::session::RotateRequest::limit`]); per IP if configured.
    Refresh,
    /// `GET /auth/audit` and `GET /auth/admin/audit`: per signed-in caller
    /// (their user id); per IP if configured.
    Audit,
    /// `POST /auth/email/verify/request` (and the hosted account page's
    /// "verify my address"): per client IP and per the signed-in account's
    /// address, the one the link is mailed to.
    EmailVerifyRequest,
}

impl Endpoint {
    /// Every limited endpoint.
    pub const ALL: [Endpoint; 11] = [
        Self::Login,
        Self::Signup,
        Self::MagicLink,
        Self::Otp,
        Self::OtpVerify,
        Self::PasswordForgot,
        Self::Oauth,
        Self::MfaVerify,
        Self::Refresh,
        Self::Audit,
        Self::EmailVerifyRequest,
    ];

    /// The name used in `RATE_LIMITS`, in counter keys and in the
    /// `rate_limit_exceeded` event: the path under `/auth`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Signup => "signup",
            Self::MagicLink => "magic-link",
            Self::Otp => "otp",
            Self::OtpVerify => "otp/verify",
            Self::PasswordForgot => "password/forgot",
            Self::Oauth => "oauth",
            Self::MfaVerify => "mfa/verify",
            Self::Refresh => "refresh",
            Self::Audit => "audit",
            Self::EmailVerifyRequest => "email/verify/request",
        }
    }

    /// The key types `RATE_LIMITS` may set for this endpoint: the client
    /// IP's two everywhere, and what else its requests carry.
    pub fn key_types(self) -> &'static [KeyType] {
        match self {
            Self::Refresh => &[KeyType::Ip, KeyType::Ipv6Net48, KeyType::Session],
            Self::Audit => &[KeyType::Ip, KeyType::Ipv6Net48, KeyType::User],
            _ => &[KeyType::Ip, KeyType::Ipv6Net48, KeyType::Email],
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Login => 0,
            Self::Signup => 1,
            Self::MagicLink => 2,
            Self::Otp => 3,
            Self::OtpVerify => 4,
            Self::PasswordForgot => 5,
            Self::Oauth => 6,
            Self::MfaVerify => 7,
            Self::Refresh => 8,
            Self::Audit => 9,
            Self::EmailVerifyRequest => 10,
        }
    }
}

/// What a counter is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// The client IP (`CF-Connecting-IP`; IPv6 by its /64).
    Ip,
    /// The /48 around an IPv6 client (65,536 /64s: what one site or
    /// customer is commonly given), so one allocation cannot spread its
    /// requests over fresh /64s. IPv4 clients have no such key.
    Ipv6Net48,
    /// The normalised email address in the request.
    Email,
    /// The account (normalised email, whether or not it has an account):
    /// the daily cap on failed codes (email codes, and second factors'
    /// codes, each with a counter of its own).
    Account,
    /// The session of the refresh token presented (`refresh`).
    Session,
    /// The signed-in caller's user id (`audit`).
    User,
}

impl KeyType {
    /// `ip`, `ipv6_48`, `email`, `session` or `user`, as in `RATE_LIMITS`,
    /// and `account`; the event's `key_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Ipv6Net48 => "ipv6_48",
            Self::Email => "email",
            Self::Account => "account",
            Self::Session => "session",
            Self::User => "user",
        }
    }
}

/// At most `limit` requests per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Requests allowed in one window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_secs: u64,
}

impl Rule {
    const fn new(limit: u32, window_secs: u64) -> Self {
        Self { limit, window_secs }
    }

    /// Parses `"10/60"`, `"10/60s"`, `"10/15m"` or `"100/1h"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a limit like \"10/60s\", \"10/15m\" or \"100/1h\" (or \"off\")");
        let (limit, window) = s.trim().split_once('/').ok_or_else(bad)?;
        let limit: u32 = limit.trim().parse().map_err(|_| bad())?;
        let window = window.trim();
        let (digits, unit) = match window.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&window[..i], c),
            _ => (window, 's'),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let window_secs = match unit {
            's' => n,
            'm' => n.saturating_mul(60),
            'h' => n.saturating_mul(3_600),
            'd' => n.saturating_mul(86_400),
            _ => return Err(bad()),
        };
        if limit == 0 || window_secs == 0 || window_secs > 7 * 86_400 {
            return Err(format!("{s:?}: the limit must be at least 1 and the window between 1 s and 7 days"));
        }
        Ok(Self { limit, window_secs })
    }
}

/// The limits of one endpoint: per IP, per IPv6 /48, per email, per
/// session and per user (`None`: not limited by that key; which keys an
/// endpoint has is [`Endpoint::key_types`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointLimits {
    /// Per client IP (IPv6: per /64).
    pub ip: Option<Rule>,
    /// Per IPv6 /48, counted alongside the /64's own limit.
    pub ipv6_48: Option<Rule>,
    /// Per email address.
    pub email: Option<Rule>,
    /// Per session (`refresh`).
    pub session: Option<Rule>,
    /// Per signed-in user (`audit`).
    pub user: Option<Rule>,
}

/// Back-off for consecutive failed logins of one account (email): after
/// `free_failures` failures in a row, each further attempt must wait
/// `base_delay_secs` doubled per extra failure, at most `max_delay_secs`,
/// counted in whole seconds from the last failure (so the real wait is up to
/// a second shorter; hence a base of at least 2 s).
/// A success, a password reset or a day without failures starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures that cost nothing.
    pub free_failures: u32,
    /// The first delay.
    pub base_delay_secs: u64,
    /// The cap.
    pub max_delay_secs: u64,
}

/// Default limit of `refresh` per session: ten a minute, where an honest
/// client refreshes about once per `ACCESS_TTL` (15 minutes by default).
pub const REFRESH_PER_SESSION: Rule = Rule::new(10, 60);

/// Default limit of the audit listings per caller: a page a second.
pub const AUDIT_LISTINGS_PER_USER: Rule = Rule::new(60, 60);

/// Failures are forgotten after this long without a new one.
pub const BACKOFF_MEMORY_SECS: u64 = 86_400;

/// An account's back-off record as the store holds it
/// ([`crate::core::ports::RateLimitStore::count_login_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRecord {
    /// Consecutive failures, each attempt counted as one when admitted.
    pub failures: u32,
    /// The last admission (the last failure counted).
    pub last_failed_at: UnixTime,
    /// Admitted attempts whose check has not ended yet: each adds one on
    /// admission and takes it back when it fails; a success deletes the
    /// record. A request that dies between the two leaves its one behind,
    /// which [`Self::may_clear_soon`] stops trusting after
    /// [`LOGIN_IN_FLIGHT_SECS`]; an admission that long after the last one
    /// starts the count over at its own, and a check admitted before that
    /// takes nothing back when it ends.
    pub in_flight: u32,
}

/// How long after the last admission an attempt still counted in flight is
/// believed to be: a check is one argon2 verification and a few D1 writes,
/// well under a second; a request that died in between stops making
/// refused attempts wait this soon.
pub const LOGIN_IN_FLIGHT_SECS: i64 = 3;

/// How long a refused login waits between two tries at admission while
/// attempts are in flight ([`LoginRecord::may_clear_soon`]).
pub const LOGIN_WAIT_STEP_MS: u64 = 200;

/// How many times a refused login waits [`LOGIN_WAIT_STEP_MS`] and tries
/// again before it is answered 429: about two seconds in all.
pub const LOGIN_WAIT_STEPS: u32 = 10;

impl LoginRecord {
    /// Whether a login refused by this record at `now` should wait and try
    /// again: attempts admitted recently (within [`LOGIN_IN_FLIGHT_SECS`])
    /// are still being checked, and the first of them to prove the right
    /// password clears the record. Concurrent logins with the right
    /// password — several tabs or devices — thus all get in, while wrong
    /// guesses gain nothing: whoever waits is admitted, or not, by the same
    /// one-write decision as an attempt arriving then.
    pub fn may_clear_soon(&self, now: UnixTime) -> bool {
        self.in_flight > 0 && now.0.saturating_sub(self.last_failed_at.0) < LOGIN_IN_FLIGHT_SECS
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { free_failures: 5, base_delay_secs: 2, max_delay_secs: 900 }
    }
}

impl Backoff {
    /// Seconds to wait after `failures` consecutive failures (0: none).
    pub fn delay_secs(&self, failures: u32) -> u64 {
        if failures < self.free_failures {
            return 0;
        }
        let doublings = failures - self.free_failures;
        let factor = 1u64.checked_shl(doublings.min(MAX_DOUBLINGS)).unwrap_or(u64::MAX);
        self.base_delay_secs.saturating_mul(factor).min(self.max_delay_secs)
    }

    /// Seconds until an account with `failures`, the last at `last_failed_at`,
    /// may try again at `now` (`None`: it may now).
    pub fn wait(&self, failures: u32, last_failed_at: UnixTime, now: UnixTime) -> Option<u64> {
        let since = now.0.saturating_sub(last_failed_at.0);
        if since >= i64::try_from(BACKOFF_MEMORY_SECS).unwrap_or(i64::MAX) {
            return None;
        }
        let delay = i64::try_from(self.delay_secs(failures)).unwrap_or(i64::MAX);
        (since < delay).then(|| u64::try_from(delay - since).unwrap_or(1).max(1))
    }

    /// [`Self::delay_secs`] as a table, for a store that decides admission
    /// in its own write (D1 builds a SQL `CASE` from it): `(failures,
    /// delay)` for each count from `free_failures` up to the first whose
    /// delay is the one every larger count has, which comes last (`rest`);
    /// fewer than `free_failures` failures wait nothing. Delays are in
    /// whole seconds, as [`Self::wait`] compares them (beyond `i64`, the
    /// largest `i64`). At most [`MAX_DOUBLINGS`] rows: the doubling stops
    /// there.
    pub fn delay_table(&self) -> (Vec<(u32, i64)>, i64) {
        let clamped = |failures: u32| i64::try_from(self.delay_secs(failures)).unwrap_or(i64::MAX);
        let rest = clamped(u32::MAX);
        let mut rows = Vec::new();
        for doublings in 0..MAX_DOUBLINGS {
            let Some(failures) = self.free_failures.checked_add(doublings) else { break };
            let delay = clamped(failures);
            if delay == rest {
                break;
            }
            rows.push((failures, delay));
        }
        (rows, rest)
    }
}

/// Doublings of the back-off's delay after which it stops growing (when
/// its cap has not stopped it before).
pub const MAX_DOUBLINGS: u32 = 40;

/// The window of the daily cap on failed email codes.
pub const OTP_FAILURE_WINDOW_SECS: u64 = 86_400;

/// Default `OTP_MAX_FAILURES_PER_DAY`: four codes' worth of wrong guesses.
pub const OTP_MAX_FAILURES_PER_DAY: u32 = 20;

/// Highest `OTP_MAX_FAILURES_PER_DAY` accepted.
const MAX_OTP_FAILURES_PER_DAY: u32 = 10_000;

/// `RATE_LIMITS`, `LOGIN_BACKOFF` and `OTP_MAX_FAILURES_PER_DAY`: every
/// endpoint's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    limits: [EndpointLimits; 11],
    /// The login back-off; `None` when `LOGIN_BACKOFF` is `off`.
    pub backoff: Option<Backoff>,
    /// Failed `otp/verify` attempts allowed per account per day (window
    /// [`OTP_FAILURE_WINDOW_SECS`]), and as many failed `mfa/verify`
    /// attempts; `None` when `OTP_MAX_FAILURES_PER_DAY` is `off`.
    pub otp_failures: Option<Rule>,
}

impl Default for RateLimits {
    /// Defaults after OWASP's authentication and forgot-password guidance:
    /// a handful of tries per account per window, more per IP (NAT), and a
    /// tighter budget on the endpoints that send email. Asking for an
    /// address's verification link is one of those: it has magic-link's
    /// budget (5 an hour per address, 20 per IP), so a sign-up under someone
    /// else's address can mail them no more often than a magic-link request
    /// for it can. An IPv6 /48 gets
    /// four times an address's budget: one site's many /64s (or a carrier's
    /// subscribers) share it, as many users share one IPv4 address behind
    /// NAT, while one allocation can no longer multiply its budget by
    /// 65,536 by moving between its /64s.
    ///
    /// `refresh` is limited per session, at [`REFRESH_PER_SESSION`]: an
    /// honest client refreshes about once per `ACCESS_TTL`, and every
    /// refresh writes an audit entry. `audit` is limited per caller, at
    /// [`AUDIT_LISTINGS_PER_USER`]. Neither is limited per IP by default:
    /// many honest clients share an address, and each key counted is one
    /// more write per request.
    fn default() -> Self {
        let limits = |ip: Rule, email: Option<Rule>| EndpointLimits {
            ip: Some(ip),
            ipv6_48: Some(Rule::new(ip.limit.saturating_mul(4), ip.window_secs)),
            email,
            ..EndpointLimits::default()
        };
        Self {
            limits: [
                limits(Rule::new(30, 60), Some(Rule::new(10, 60))),      // login
                limits(Rule::new(10, 3_600), Some(Rule::new(5, 3_600))), // signup
                limits(Rule::new(20, 3_600), Some(Rule::new(5, 3_600))), // magic-link
                limits(Rule::new(20, 3_600), Some(Rule::new(5, 3_600))), // otp
                limits(Rule::new(30, 600), Some(Rule::new(10, 600))),    // otp/verify
                limits(Rule::new(20, 3_600), Some(Rule::new(5, 3_600))), // password/forgot
                limits(Rule::new(60, 600), None),                        // oauth: 20 sign-ins
                limits(Rule::new(30, 600), Some(Rule::new(10, 600))),    // mfa/verify
                EndpointLimits { session: Some(REFRESH_PER_SESSION), ..EndpointLimits::default() },
                EndpointLimits { user: Some(AUDIT_LISTINGS_PER_USER), ..EndpointLimits::default() },
                limits(Rule::new(20, 3_600), Some(Rule::new(5, 3_600))), // email/verify/request
            ],
            backoff: Some(Backoff::default()),
            otp_failures: Some(Rule::new(OTP_MAX_FAILURES_PER_DAY, OTP_FAILURE_WINDOW_SECS)),
        }
    }
}

impl RateLimits {
    /// The limits of `endpoint`.
    pub fn of(&self, endpoint: Endpoint) -> EndpointLimits {
        self.limits[endpoint.index()]
    }

    /// The defaults, overridden by `RATE_LIMITS` (a JSON object such as
    /// `{"login": {"ip": "30/1m", "ipv6_48": "120/1m", "email": "10/1m"}, "signup": {"email": "off"}}`;
    /// each endpoint takes the keys of [`Endpoint::key_types`])
    /// and `LOGIN_BACKOFF` (`off`, or `free/base/max` in seconds, e.g. `5/2/900`).
    /// Errors name the setting.
    pub fn parse(rate_limits: Option<&str>, login_backoff: Option<&str>) -> Result<Self, String> {
        let mut out = Self::default();
        if let Some(text) = rate_limits.map(str::trim).filter(|s| !s.is_empty()) {
            let err = |why: String| format!("RATE_LIMITS: {why}");
            let value: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
            let Value::Object(map) = value else {
                return Err(err("must be a JSON object keyed by endpoint".into()));
            };
            for (name, keys) in map {
                let endpoint = Endpoint::ALL.into_iter().find(|e| e.name() == name).ok_or_else(|| {
                    let known: Vec<&str> = Endpoint::ALL.iter().map(|e| e.name()).collect();
                    err(format!("{name:?} is not a limited endpoint (one of {})", known.join(", ")))
                })?;
                let Value::Object(keys) = keys else {
                    return Err(err(format!(
                        "{name}: must be an object like {{\"ip\": \"30/1m\", \"email\": \"10/1m\"}}"
                    )));
                };
                let slot = &mut out.limits[endpoint.index()];
                for (key, rule) in keys {
                    let rule = match rule {
                        Value::String(s) if s.trim() == "off" => None,
                        Value::String(s) => Some(Rule::parse(&s).map_err(|e| err(format!("{name}.{key}: {e}")))?),
                        other => return Err(err(format!("{name}.{key}: {other} must be a string like \"10/1m\""))),
                    };
                    let allowed = endpoint.key_types();
                    let key_type = allowed.iter().find(|k| k.as_str() == key.as_str()).ok_or_else(|| {
                        let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
                        err(format!("{name}: {key:?} is not a key type of it ({})", names.join(", ")))
                    })?;
                    match key_type {
                        KeyType::Ip => slot.ip = rule,
                        KeyType::Ipv6Net48 => slot.ipv6_48 = rule,
                        KeyType::Email => slot.email = rule,
                        KeyType::Session => slot.session = rule,
                        KeyType::User => slot.user = rule,
                        KeyType::Account => {}
                    }
                }
            }
        }
        if let Some(text) = login_backoff.map(str::trim).filter(|s| !s.is_empty()) {
            out.backoff = if text == "off" {
                None
            } else {
                let bad = || format!("LOGIN_BACKOFF: {text:?} must be off or free/base/max seconds, e.g. 5/2/900");
                let parts: Vec<u64> =
                    text.split('/').map(|p| p.trim().parse::<u64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
                match parts.as_slice() {
                    [free, base, max] if *free <= 1_000 && *base >= 1 && max >= base && *max <= 86_400 => {
                        Some(Backoff { free_failures: *free as u32, base_delay_secs: *base, max_delay_secs: *max })
                    }
                    _ => return Err(bad()),
                }
            };
        }
        Ok(out)
    }

    /// These limits with the daily cap on failed email codes set from
    /// `OTP_MAX_FAILURES_PER_DAY`: a whole number from 1 to 10000, or `off`;
    /// unset, the default ([`OTP_MAX_FAILURES_PER_DAY`]). Errors name the setting.
    pub fn with_otp_failure_cap(mut self, value: Option<&str>) -> Result<Self, String> {
        let Some(text) = value.map(str::trim).filter(|s| !s.is_empty()) else { return Ok(self) };
        self.otp_failures = if text == "off" {
            None
        } else {
            match text.parse::<u32>() {
                Ok(n) if (1..=MAX_OTP_FAILURES_PER_DAY).contains(&n) => Some(Rule::new(n, OTP_FAILURE_WINDOW_SECS)),
                _ => {
                    return Err(format!(
                        "OTP_MAX_FAILURES_PER_DAY: {text:?} must be a whole number from 1 to {MAX_OTP_FAILURES_PER_DAY}, or off"
                    ))
                }
            }
        };
        Ok(self)
    }
}

/// The client address, an IPv4-mapped IPv6 address as the IPv4 one it is.
fn client_ip(ip: Option<&str>) -> Option<IpAddr> {
    match ip.map(str::trim).and_then(|s| s.parse::<IpAddr>().ok())? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// The counter key of a client IP: the address itself, IPv6 by its /64
/// (one subscriber's allocation); `unknown` when there is none or it does
/// not parse — such requests share one bucket rather than go unlimited.
pub fn ip_key(ip: Option<&str>) -> String {
    match client_ip(ip) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".to_string(),
    }
}

/// The counter key of the /48 around an IPv6 client (`2001:db8:1::/48`);
/// `None` for IPv4 (also IPv4-mapped) clients and for a missing or
/// unparsable IP, whose requests the `unknown` bucket of [`ip_key`] holds.
pub fn ipv6_48_key(ip: Option<&str>) -> Option<String> {
    match client_ip(ip)? {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
        IpAddr::V4(_) => None,
    }
}

/// The start of the key of `endpoint`'s counters by `key_type`
/// (`refresh:session:`): the key is it and the value counted.
pub fn key_prefix(endpoint: Endpoint, key_type: KeyType) -> String {
    format!("{}:{}:", endpoint.name(), key_type.as_str())
}

/// The counter of `endpoint`'s limit per session or per user for
/// `subject` (a session id, a user id), with its rule, if it has one.
pub fn subject_hit(
    limits: &RateLimits,
    endpoint: Endpoint,
    key_type: KeyType,
    subject: &str,
) -> Option<(Hit, Rule, KeyType)> {
    let l = limits.of(endpoint);
    let rule = match key_type {
        KeyType::Session => l.session,
        KeyType::User => l.user,
        _ => None,
    }?;
    let key = format!("{}{subject}", key_prefix(endpoint, key_type));
    Some((Hit::always(key, rule.window_secs), rule, key_type))
}

/// One counter to bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// `<endpoint>:<key type>:<value>`.
    pub key: String,
    /// The length of a window opened by this request.
    pub window_secs: u64,
    /// Counted only if an earlier counter of the same request admits it
    /// (`None`: always counted).
    pub within: Option<Within>,
}

impl Hit {
    /// A counter bumped by every request.
    pub fn always(key: String, window_secs: u64) -> Self {
        Self { key, window_secs, within: None }
    }
}

/// The condition of a [`Hit`] counted only for requests another counter
/// admits: the hit number `hit` of the same call (an earlier one), once
/// counted, must be at most `limit`. So an IPv6 /48 is charged only for the
/// requests its /64 lets through, and one /64 adds at most its own budget to
/// the /48 however much it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Within {
    /// Index of the earlier hit in the same call.
    pub hit: usize,
    /// The most that hit's count may be.
    pub limit: u32,
}

/// A counter after a hit: requests in its window, and when the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Requests counted in the current window, this one included.
    pub count: u32,
    /// End of the current window.
    pub resets_at: UnixTime,
}

/// The counters a request to `endpoint` bumps, with their rules, in the
/// order [`decide`] looks at them: IP, IPv6 /48 (counted only when the IP's
/// own counter admits the request, see [`Within`]), email, and for
/// `otp/verify` and `mfa/verify` the account's daily cap on failed codes
/// (counted on every attempt, and given back by the flow for an attempt that
/// did not fail, see [`Charge`]).
pub fn hits(
    limits: &RateLimits,
    endpoint: Endpoint,
    ip: Option<&str>,
    email: Option<&str>,
) -> Vec<(Hit, Rule, KeyType)> {
    let l = limits.of(endpoint);
    let mut out = Vec::with_capacity(4);
    let mut push = |rule: Option<Rule>, key_type: KeyType, value: &str, within: Option<Within>| {
        if let Some(rule) = rule {
            let key = format!("{}{value}", key_prefix(endpoint, key_type));
            out.push((Hit { key, window_secs: rule.window_secs, within }, rule, key_type));
        }
    };
    push(l.ip, KeyType::Ip, &ip_key(ip), None);
    if let Some(net) = ipv6_48_key(ip) {
        // The IP's counter, when there is one, is hit 0.
        let within = l.ip.map(|ip_rule| Within { hit: 0, limit: ip_rule.limit });
        push(l.ipv6_48, KeyType::Ipv6Net48, &net, within);
    }
    if let Some(email) = email {
        push(l.email, KeyType::Email, email, None);
        if matches!(endpoint, Endpoint::OtpVerify | Endpoint::MfaVerify) {
            push(limits.otp_failures, KeyType::Account, email, None);
        }
    }
    out
}

/// One request counted on a counter, to be given back if the request turns
/// out not to be what the counter limits (an email code that proved right,
/// or one that was not even a code: neither is a failed guess).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The counter.
    pub key: String,
    /// The end of the window the request was counted in: a later window
    /// owes it nothing.
    pub resets_at: UnixTime,
    /// The counter's limit: once a window has gone over it, it stays over
    /// (the refusal was reported, and is reported once per window).
    pub limit: u32,
}

/// The counter that marks the first login refused during one back-off
/// (the one after the failure at `last_failed_at`): its first hit emits
/// `rate_limit_exceeded`, later ones in the same back-off do not.
pub fn backoff_hit(email: &str, last_failed_at: UnixTime, wait_secs: u64) -> Hit {
    Hit::always(format!("{}:backoff:{email}:{}", Endpoint::Login.name(), last_failed_at.0), wait_secs.max(1))
}

/// A refusal: one or more counters over their limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Seconds until the last of the windows over their limits ends: an
    /// earlier retry would still meet one of them.
    pub retry_after_secs: u64,
    /// The counters this request is the first over the limit of, in their
    /// current window, with their limits: each reports `rate_limit_exceeded`
    /// (once per key and window, whether or not another key was already over
    /// its own limit, so a /48 filling up behind its busiest /64 is reported).
    pub tripped: Vec<(KeyType, u32)>,
}

/// Decides from the counts the store returned (in the order of `hits`;
/// `None` for a counter not counted, whose condition refused it).
pub fn decide(hits: &[(Hit, Rule, KeyType)], counts: &[Option<Count>], now: UnixTime) -> Option<Exceeded> {
    let over: Vec<(&Rule, &KeyType, &Count)> = hits
        .iter()
        .zip(counts)
        .filter_map(|((_, r, k), c)| c.as_ref().filter(|c| c.count > r.limit).map(|c| (r, k, c)))
        .collect();
    let resets_at = over.iter().map(|(_, _, c)| c.resets_at).max()?;
    Some(Exceeded {
        retry_after_secs: u64::try_from(resets_at.0.saturating_sub(now.0)).unwrap_or(1).max(1),
        tripped: over
            .iter()
            .filter(|(rule, _, c)| c.count == rule.limit.saturating_add(1))
            .map(|(rule, key_type, _)| (**key_type, rule.limit))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_units() {
        assert_eq!(Rule::parse("10/60").unwrap(), Rule::new(10, 60));
        assert_eq!(Rule::parse("10/60s").unwrap(), Rule::new(10, 60));
        assert_eq!(Rule::parse(" 5 / 15m ").unwrap(), Rule::new(5, 900));
        assert_eq!(Rule::parse("100/1h").unwrap(), Rule::new(100, 3_600));
        for bad in ["", "10", "0/60", "10/0", "x/60", "10/5y", "10/8d", "-1/60", "10/-5"] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_overrides_defaults_and_names_the_setting() {
        let l = RateLimits::parse(Some(r#"{"login": {"ip": "3/1m", "email": "off"}}"#), None).unwrap();
        assert_eq!(l.of(Endpoint::Login).ip, Some(Rule::new(3, 60)));
        assert_eq!(l.of(Endpoint::Login).email, None);
        assert_eq!(l.of(Endpoint::Signup), RateLimits::default().of(Endpoint::Signup));
        // Asking for a verification link has magic-link's budget, and is configured alike.
        let d = RateLimits::default();
        assert_eq!(d.of(Endpoint::EmailVerifyRequest), d.of(Endpoint::MagicLink));
        let l = RateLimits::parse(Some(r#"{"email/verify/request": {"email": "2/1m", "ip": "off"}}"#), None).unwrap();
        assert_eq!(l.of(Endpoint::EmailVerifyRequest).email, Some(Rule::new(2, 60)));
        assert_eq!(l.of(Endpoint::EmailVerifyRequest).ip, None);
        assert_eq!(
            hits(&d, Endpoint::EmailVerifyRequest, Some("203.0.113.7"), Some("a@b.example"))[1].0,
            Hit::always("email/verify/request:email:a@b.example".into(), 3_600)
        );
        for bad in [
            r#"[]"#,
            r#"{"logn": {}}"#,
            r#"{"login": {"ipp": "1/1"}}"#,
            r#"{"login": {"ip": 5}}"#,
            r#"{"login": {"ipv6_64": "1/1"}}"#,
            r#"{"otp/verify": {"account": "1/1d"}}"#,
            "{",
        ] {
            let e = RateLimits::parse(Some(bad), None).unwrap_err();
            assert!(e.starts_with("RATE_LIMITS"), "{e}");
        }
        assert_eq!(RateLimits::parse(None, Some("off")).unwrap().backoff, None);
        assert_eq!(
            RateLimits::parse(None, Some("3/2/60")).unwrap().backoff,
            Some(Backoff { free_failures: 3, base_delay_secs: 2, max_delay_secs: 60 })
        );
        assert!(RateLimits::parse(None, Some("3/2")).unwrap_err().starts_with("LOGIN_BACKOFF"));
    }

    #[test]
    fn default_login_limit_follows_owasp() {
        let d = RateLimits::default();
        assert_eq!(d.of(Endpoint::Login).email, Some(Rule::new(10, 60)));
        for e in Endpoint::ALL {
            let signed_in = [Endpoint::Refresh, Endpoint::Audit].contains(&e);
            assert_eq!(d.of(e).ip.is_some(), !signed_in, "{}", e.name());
            assert_eq!(d.of(e).email.is_some(), !signed_in && e != Endpoint::Oauth, "{}", e.name());
        }
    }

    #[test]
    fn refresh_is_limited_per_session_and_the_audit_listings_per_caller() {
        let d = RateLimits::default();
        assert_eq!(d.of(Endpoint::Refresh), EndpointLimits { session: Some(Rule::new(10, 60)), ..Default::default() });
        assert_eq!(d.of(Endpoint::Audit), EndpointLimits { user: Some(Rule::new(60, 60)), ..Default::default() });
        // Nothing per IP by default: no counter, no write.
        assert!(hits(&d, Endpoint::Refresh, Some("203.0.113.7"), None).is_empty());
        assert_eq!(key_prefix(Endpoint::Refresh, KeyType::Session), "refresh:session:");
        assert_eq!(
            subject_hit(&d, Endpoint::Audit, KeyType::User, "u-1"),
            Some((Hit::always("audit:user:u-1".into(), 60), Rule::new(60, 60), KeyType::User))
        );
        assert_eq!(subject_hit(&d, Endpoint::Audit, KeyType::Session, "s-1"), None);
        let l = RateLimits::parse(
            Some(r#"{"refresh": {"session": "off", "ip": "100/1m"}, "audit": {"user": "5/10s"}}"#),
            None,
        )
        .unwrap();
        assert_eq!((l.of(Endpoint::Refresh).session, l.of(Endpoint::Refresh).ip), (None, Some(Rule::new(100, 60))));
        assert_eq!(l.of(Endpoint::Audit).user, Some(Rule::new(5, 10)));
        // Each endpoint takes only the keys its requests have.
        for bad in [
            r#"{"refresh": {"email": "1/1m"}}"#,
            r#"{"refresh": {"user": "1/1m"}}"#,
            r#"{"audit": {"session": "1/1m"}}"#,
            r#"{"login": {"session": "1/1m"}}"#,
            r#"{"signup": {"user": "1/1m"}}"#,
            r#"{"otp/verify": {"account": "1/1d"}}"#,
        ] {
            let e = RateLimits::parse(Some(bad), None).unwrap_err();
            assert!(e.starts_with("RATE_LIMITS") && e.contains("is not a key type of it"), "{bad}: {e}");
        }
    }

    #[test]
    fn ip_keys_group_ipv6_by_64_and_never_exempt_a_missing_ip() {
        assert_eq!(ip_key(Some("203.0.113.7")), "203.0.113.7");
        assert_eq!(ip_key(Some("2001:db8:1:2:aaaa::1")), ip_key(Some("2001:db8:1:2:bbbb::9")));
        assert_ne!(ip_key(Some("2001:db8:1:2::1")), ip_key(Some("2001:db8:1:3::1")));
        assert_eq!(ip_key(Some("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(ip_key(None), "unknown");
        assert_eq!(ip_key(Some("not an ip")), "unknown");
    }

    #[test]
    fn decide_reports_the_first_request_over_the_limit_once() {
        let now = UnixTime(1_000_000_030);
        let h = hits(&RateLimits::default(), Endpoint::Login, Some("1.2.3.4"), Some("a@b.example"));
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].0, Hit::always("login:email:a@b.example".into(), 60));
        let c = |count| Some(Count { count, resets_at: UnixTime(now.0 + 30) });
        assert_eq!(decide(&h, &[c(1), c(10)], now), None);
        let e = decide(&h, &[c(2), c(11)], now).unwrap();
        assert_eq!((e.tripped, e.retry_after_secs), (vec![(KeyType::Email, 10)], 30));
        assert_eq!(decide(&h, &[c(3), c(12)], now).unwrap().tripped, vec![]);
        assert_eq!(decide(&h, &[c(31), c(1)], now).unwrap().tripped, vec![(KeyType::Ip, 30)]);
        // A window that ends this second still asks for one second.
        let late = Some(Count { count: 99, resets_at: now });
        assert_eq!(decide(&h, &[late, c(1)], now).unwrap().retry_after_secs, 1);
    }

    #[test]
    fn a_key_tripping_while_another_is_over_is_reported_and_the_longest_window_decides_the_wait() {
        let now = UnixTime(1_000_000_000);
        let h = hits(&RateLimits::default(), Endpoint::Login, Some("2001:db8:1:2::1"), Some("a@b.example"));
        let kinds: Vec<KeyType> = h.iter().map(|(_, _, k)| *k).collect();
        assert_eq!(kinds, [KeyType::Ip, KeyType::Ipv6Net48, KeyType::Email]);
        let at = |count, secs| Some(Count { count, resets_at: UnixTime(now.0 + secs) });
        // The email has been over its 10 for a while; this request, which its
        // /64 admits, takes the /48 over its 120.
        let e = decide(&h, &[at(5, 10), at(121, 50), at(15, 60)], now).unwrap();
        assert_eq!(e.tripped, vec![(KeyType::Ipv6Net48, 120)]);
        assert_eq!(e.retry_after_secs, 60);
        // Several at once: all reported.
        let e = decide(&h, &[at(30, 10), at(121, 50), at(11, 60)], now).unwrap();
        assert_eq!(e.tripped, vec![(KeyType::Ipv6Net48, 120), (KeyType::Email, 10)]);
        assert_eq!(e.retry_after_secs, 60);
        // A /64 over its limit: the /48 was not counted, and does not decide.
        let e = decide(&h, &[at(31, 10), None, at(1, 60)], now).unwrap();
        assert_eq!((e.tripped, e.retry_after_secs), (vec![(KeyType::Ip, 30)], 10));
    }

    #[test]
    fn ipv6_clients_are_also_counted_by_their_48_with_a_higher_limit() {
        let d = RateLimits::default();
        for e in Endpoint::ALL.into_iter().filter(|e| d.of(*e).ip.is_some()) {
            let (ip, net) = (d.of(e).ip.unwrap(), d.of(e).ipv6_48.unwrap());
            assert_eq!((net.limit, net.window_secs), (ip.limit * 4, ip.window_secs), "{}", e.name());
        }
        let h = hits(&d, Endpoint::MagicLink, Some("2001:db8:abcd:12::1"), None);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0.key, "magic-link:ip:2001:db8:abcd:12::/64");
        assert_eq!(
            h[1].0,
            Hit {
                key: "magic-link:ipv6_48:2001:db8:abcd::/48".into(),
                window_secs: 3_600,
                // Charged only for requests the /64 (hit 0, 20 an hour) admits.
                within: Some(Within { hit: 0, limit: 20 }),
            }
        );
        assert_eq!(h[1].1, Rule::new(80, 3_600));
        // IPv4 (also mapped), a missing and a bad address have no /48 key.
        for ip in [Some("203.0.113.7"), Some("::ffff:203.0.113.7"), None, Some("nope")] {
            assert!(hits(&d, Endpoint::MagicLink, ip, None).iter().all(|(_, _, k)| *k == KeyType::Ip), "{ip:?}");
        }
        let l = RateLimits::parse(Some(r#"{"otp": {"ipv6_48": "7/1m"}, "login": {"ipv6_48": "off"}}"#), None).unwrap();
        assert_eq!(l.of(Endpoint::Otp).ipv6_48, Some(Rule::new(7, 60)));
        assert_eq!(l.of(Endpoint::Otp).ip, d.of(Endpoint::Otp).ip);
        assert_eq!(l.of(Endpoint::Login).ipv6_48, None);
        assert!(hits(&l, Endpoint::Login, Some("2001:db8::1"), None).iter().all(|(_, _, k)| *k == KeyType::Ip));
        // Without a per-IP rule nothing admits first: the /48 counts every request.
        let l = RateLimits::parse(Some(r#"{"otp": {"ip": "off"}}"#), None).unwrap();
        let h = hits(&l, Endpoint::Otp, Some("2001:db8::1"), None);
        assert_eq!((h.len(), h[0].2, h[0].0.within), (1, KeyType::Ipv6Net48, None));
    }

    #[test]
    fn ipv6_48_keys_cover_65536_64s_and_nothing_outside() {
        assert_eq!(ipv6_48_key(Some("2001:db8:1:0::1")).as_deref(), Some("2001:db8:1::/48"));
        assert_eq!(ipv6_48_key(Some("2001:db8:1:ffff:1:2:3:4")), ipv6_48_key(Some(" 2001:0db8:0001:0000:: ")));
        assert_ne!(ipv6_48_key(Some("2001:db8:1::1")), ipv6_48_key(Some("2001:db8:2::1")));
        assert_ne!(ip_key(Some("2001:db8:1:1::1")), ip_key(Some("2001:db8:1:2::1")));
        assert_eq!(ipv6_48_key(Some("203.0.113.7")), None);
        assert_eq!(ipv6_48_key(Some("::ffff:203.0.113.7")), None);
        assert_eq!(ipv6_48_key(None), None);
    }

    #[test]
    fn otp_verify_counts_the_accounts_daily_failures_and_the_cap_is_configurable() {
        let d = RateLimits::default();
        assert_eq!(d.otp_failures, Some(Rule::new(20, 86_400)));
        let h = hits(&d, Endpoint::OtpVerify, Some("203.0.113.7"), Some("a@b.example"));
        assert_eq!(
            h[2],
            (Hit::always("otp/verify:account:a@b.example".into(), 86_400), Rule::new(20, 86_400), KeyType::Account)
        );
        // Only code verification has the account cap: email codes and
        // second factors, on counters of their own.
        for e in Endpoint::ALL.into_iter().filter(|e| !matches!(e, Endpoint::OtpVerify | Endpoint::MfaVerify)) {
            assert!(hits(&d, e, None, Some("a@b.example")).iter().all(|(_, _, k)| *k != KeyType::Account));
        }
        let h = hits(&d, Endpoint::MfaVerify, Some("203.0.113.7"), Some("a@b.example"));
        assert_eq!(
            h[2],
            (Hit::always("mfa/verify:account:a@b.example".into(), 86_400), Rule::new(20, 86_400), KeyType::Account)
        );
        assert_eq!(d.clone().with_otp_failure_cap(Some("5")).unwrap().otp_failures, Some(Rule::new(5, 86_400)));
        assert_eq!(d.clone().with_otp_failure_cap(None).unwrap(), d);
        let off = d.clone().with_otp_failure_cap(Some("off")).unwrap();
        assert!(hits(&off, Endpoint::OtpVerify, None, Some("a@b.example"))
            .iter()
            .all(|(_, _, k)| *k != KeyType::Account));
        for bad in ["0", "-1", "20/1d", "many", "10001"] {
            let e = d.clone().with_otp_failure_cap(Some(bad)).unwrap_err();
            assert!(e.starts_with("OTP_MAX_FAILURES_PER_DAY"), "{bad}: {e}");
        }
    }

    #[test]
    fn backoff_doubles_after_the_free_failures_and_is_capped() {
        let b = Backoff::default();
        assert_eq!((0..5).map(|n| b.delay_secs(n)).collect::<Vec<_>>(), vec![0; 5]);
        assert_eq!((5..9).map(|n| b.delay_secs(n)).collect::<Vec<_>>(), vec![2, 4, 8, 16]);
        assert_eq!(b.delay_secs(20), 900);
        assert_eq!(b.delay_secs(u32::MAX), 900);
        // Well before NIST's 100: after 15 failures every try waits 15 minutes.
        assert_eq!(b.delay_secs(15), 900);
        let t = UnixTime(1_000_000_000);
        assert_eq!(b.wait(7, t, UnixTime(t.0 + 1)), Some(7));
        assert_eq!(b.wait(7, t, UnixTime(t.0 + 8)), None);
        assert_eq!(b.wait(4, t, t), None);
        assert_eq!(b.wait(30, t, UnixTime(t.0 + 86_400)), None);
    }

    /// Looks `failures` up in [`Backoff::delay_table`] as the SQL `CASE`
    /// built from it does (`failures < free` admits, as its own clause).
    fn table_delay(b: &Backoff, failures: u32) -> i64 {
        if failures < b.free_failures {
            return 0;
        }
        let (rows, rest) = b.delay_table();
        rows.iter().find(|(n, _)| *n == failures).map_or(rest, |(_, d)| *d)
    }

    #[test]
    fn the_delay_table_is_delay_secs_for_every_count() {
        let backoffs = [
            Backoff::default(),
            Backoff { free_failures: 0, base_delay_secs: 1, max_delay_secs: 1 },
            Backoff { free_failures: 2, base_delay_secs: 10, max_delay_secs: 60 },
            Backoff { free_failures: 3, base_delay_secs: 7, max_delay_secs: 100 },
            Backoff { free_failures: 1_000, base_delay_secs: 1, max_delay_secs: 86_400 },
            // Outside what LOGIN_BACKOFF accepts: the table still holds.
            Backoff { free_failures: 0, base_delay_secs: 0, max_delay_secs: 0 },
            Backoff { free_failures: 1, base_delay_secs: 3, max_delay_secs: u64::MAX },
            Backoff { free_failures: 2, base_delay_secs: u64::MAX / 2, max_delay_secs: u64::MAX },
            Backoff { free_failures: u32::MAX - 3, base_delay_secs: 2, max_delay_secs: 900 },
        ];
        for b in backoffs {
            let (rows, rest) = b.delay_table();
            assert!(rows.len() <= MAX_DOUBLINGS as usize, "{b:?}");
            let counts = (0..b.free_failures.saturating_add(200).min(5_000))
                .chain(b.free_failures.saturating_sub(5)..=b.free_failures.saturating_add(100))
                .chain([u32::MAX - 1, u32::MAX]);
            for n in counts {
                let want = i64::try_from(b.delay_secs(n)).unwrap_or(i64::MAX);
                assert_eq!(table_delay(&b, n), want, "{b:?} at {n}");
            }
            // The rows are what `wait` would refuse with: one second short of
            // a row's delay refuses, the delay itself admits.
            let t = UnixTime(1_000_000_000);
            for (n, d) in rows.iter().copied().filter(|(_, d)| (1..86_400).contains(d)) {
                assert_eq!(b.wait(n, t, UnixTime(t.0 + d - 1)), Some(1), "{b:?} at {n}");
                assert_eq!(b.wait(n, t, UnixTime(t.0 + d)), None, "{b:?} at {n}");
            }
            assert!(rest >= rows.last().map_or(0, |(_, d)| *d));
        }
        // The defaults: 2, 4, … 512, then 900 for 14 failures and more.
        let (rows, rest) = Backoff::default().delay_table();
        assert_eq!(rows, (0..9).map(|i| (5 + i, 2i64 << i)).collect::<Vec<_>>());
        assert_eq!(rest, 900);
    }

    #[test]
    fn a_refused_login_waits_only_for_attempts_admitted_in_the_last_seconds() {
        let t = UnixTime(1_000_000_000);
        let record = |in_flight| LoginRecord { failures: 5, last_failed_at: t, in_flight };
        // Checks in flight, admitted up to LOGIN_IN_FLIGHT_SECS ago: one may clear it.
        for since in 0..LOGIN_IN_FLIGHT_SECS {
            assert!(record(1).may_clear_soon(UnixTime(t.0 + since)), "{since} s after");
        }
        // Older marks are those of requests that died: not waited for.
        assert!(!record(1).may_clear_soon(UnixTime(t.0 + LOGIN_IN_FLIGHT_SECS)));
        assert!(!record(4).may_clear_soon(UnixTime(t.0 + 3_600)));
        // Nothing in flight: nothing to wait for, however recent.
        assert!(!record(0).may_clear_soon(t));
        // A last admission stamped by a clock ahead of this one is recent.
        assert!(record(1).may_clear_soon(UnixTime(t.0 - 5)));
    }
}
