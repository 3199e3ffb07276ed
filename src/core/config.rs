//! Typed configuration, built and validated in one place from the Worker's
//! vars and secrets. A missing or bad value is an error naming the setting;
//! the edge then refuses every request rather than run half-configured.

use url::Url;

use crate::core::brand::{self, Brand};
use crate::core::events::Event;
use crate::core::gateway::headers::StrippedHeaders;
use crate::core::gateway::policy::Routes;
use crate::core::mail::EmailSettings;
use crate::core::oauth::OAuthConfig;
use crate::core::passkey::RelyingParty;
use crate::core::password::{HashParams, HashProfile, PasswordPolicy};
use crate::core::rate_limit::RateLimits;
use crate::core::revocation::{
    default_lag_secs, IntrospectionSecret, FAIL_CLOSED_LAGS, MAX_ACCESS_TTL_SECS, MAX_REVOCATION_LAG_SECS,
};
use crate::core::signin_hook::{FailureMode, HookConfig, HOOK_TIMEOUT_MS, MAX_HOOK_TIMEOUT_MS};
use crate::core::signing_keys::Kek;
use crate::core::signing_keys::SigningAlg;
use crate::core::ui::UiConfig;
use crate::core::webhook::WebhookSecret;

/// Default access-token lifetime.
pub const ACCESS_TTL_SECS: u64 = 900;
/// Default refresh-token (session) lifetime.
pub const REFRESH_TTL_SECS: u64 = 2_592_000;
/// Default `SESSION_MAX_AGE`: a session's absolute lifetime from sign-in,
/// whatever its refreshes (90 days, ASVS 3.3).
pub const SESSION_MAX_AGE_SECS: u64 = 90 * 86_400;
/// Default magic-link lifetime.
pub const MAGIC_LINK_TTL_SECS: u64 = 600;
/// Default email-OTP lifetime.
pub const OTP_TTL_SECS: u64 = 600;
/// Default password-reset link lifetime.
pub const PASSWORD_RESET_TTL_SECS: u64 = 3_600;
/// Default email-verification link lifetime.
pub const EMAIL_VERIFICATION_TTL_SECS: u64 = 86_400;
/// Default age at which the scheduled job replaces the active signing key.
pub const ROTATION_INTERVAL_SECS: u64 = 30 * 86_400;
/// Default lifetime of an isolate's cached copy of the signing keys.
pub const KEY_CACHE_TTL_SECS: u64 = 300;
/// Default origin timeout.
pub const ORIGIN_TIMEOUT_MS: u32 = 30_000;
/// Default `WEBHOOK_TIMEOUT_MS`.
pub const WEBHOOK_TIMEOUT_MS: u32 = 10_000;
/// Default `RETRY_BASE_DELAY_SECS`: the first retry of a failed delivery.
pub const RETRY_BASE_DELAY_SECS: u32 = 30;
/// Default `AUDIT_RETENTION_DAYS`: how long the audit log keeps an entry.
pub const AUDIT_RETENTION_DAYS: u32 = 90;
/// Longest `AUDIT_RETENTION_DAYS` accepted (ten years).
pub const MAX_AUDIT_RETENTION_DAYS: u32 = 3_650;
/// Default `AUDIT_MAX_ENTRIES`: the most entries the audit log keeps, about
/// 1 GB of D1 at the entry sizes measured in docs/scaling.md.
pub const AUDIT_MAX_ENTRIES: u32 = 1_000_000;
/// Accepted `AUDIT_MAX_ENTRIES`: from one purge batch to a billion.
pub const AUDIT_MAX_ENTRIES_RANGE: std::ops::RangeInclusive<u32> = 1_000..=1_000_000_000;
/// Default audience.
pub const DEFAULT_AUDIENCE: &str = "portcullis";
/// Default `AUTH_PREFIX`: where the auth API lives.
pub const DEFAULT_AUTH_PREFIX: &str = "/auth";
/// Longest `AUTH_PREFIX` accepted.
pub const MAX_AUTH_PREFIX_LEN: usize = 64;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ISSUER`: fixed issuer URL, or `None` to use the request origin (development).
    pub issuer: Option<String>,
    /// `AUDIENCE`.
    pub audience: String,
    /// `ACCESS_TTL`.
    pub access_ttl_secs: u64,
    /// `REFRESH_TTL`.
    pub refresh_ttl_secs: u64,
    /// `SESSION_MAX_AGE`: a session ends this long after its sign-in, however
    /// often it was refreshed; no refresh or access token outlives that end.
    pub session_max_age_secs: u64,
    /// `MAGIC_LINK_TTL`.
    pub magic_link_ttl_secs: u64,
    /// `OTP_TTL`.
    pub otp_ttl_secs: u64,
    /// `PASSWORD_RESET_TTL`.
    pub password_reset_ttl_secs: u64,
    /// `EMAIL_VERIFICATION_TTL`.
    pub email_verification_ttl_secs: u64,
    /// `ROTATION_INTERVAL`: the cron trigger rotates a signing key this old.
    pub rotation_interval_secs: u64,
    /// `KEY_CACHE_TTL`: how long an isolate trusts its cached key set; also
    /// how long another isolate may still sign with a just-retired key.
    pub key_cache_ttl_secs: u64,
    /// `SIGNING_ALG`: `EdDSA` (default) or `ES256`, the algorithm of signing
    /// keys made from now on (the first key, and each rotation).
    pub signing_alg: SigningAlg,
    /// `AUTH_PREFIX`: the path the auth API is served under (lowercase, e.g.
    /// `/auth` or `/identity/v1`); everything else but `/.well-known` goes to
    /// the gateway.
    pub auth_prefix: String,
    /// `ORIGIN_URL`: the protected origin.
    pub origin_url: Option<Url>,
    /// `ORIGIN_TIMEOUT_MS`: how long the origin may take to send its response
    /// head before a 504; 0 leaves it to the platform's own limits.
    pub origin_timeout_ms: u32,
    /// `ROUTES` and `DEFAULT_POLICY`.
    pub routes: Routes,
    /// The headers never forwarded: the built-in list and `STRIP_HEADERS`.
    pub strip_headers: StrippedHeaders,
    /// `WEBHOOK_URLS`.
    pub webhook_urls: Vec<Url>,
    /// `WEBHOOK_SECRET` (secret): required when `WEBHOOK_URLS` is set.
    pub webhook_secret: Option<WebhookSecret>,
    /// `WEBHOOK_EVENTS`: the event types sent to webhooks; `None` for all.
    pub webhook_events: Option<Vec<&'static str>>,
    /// `WEBHOOK_TIMEOUT_MS`: how long a webhook endpoint may take to answer.
    pub webhook_timeout_ms: u32,
    /// `RETRY_BASE_DELAY_SECS`: delay before the first retry of a failed
    /// delivery; it doubles with every further attempt.
    pub retry_base_delay_secs: u32,
    /// `EMAIL_TRANSPORT`, `EMAIL_FROM`, `EMAIL_API_*`, link base URLs and templates.
    pub email: EmailSettings,
    /// `HOOK_URL` and its settings; `None` when no sign-in hook is configured.
    pub hook: Option<HookConfig>,
    /// `CLAIMS_HEADER`: the origin also gets the access token's extra claims
    /// (the sign-in hook's) as compact JSON in `X-Auth-Claims`; they are in
    /// the signed assertion either way.
    pub claims_header: bool,
    /// `ALLOW_PASSWORDLESS_SIGNUP`.
    pub allow_passwordless_signup: bool,
    /// `COOKIE_MODE`: tokens are also set as `HttpOnly` `__Host-` cookies.
    pub cookie_mode: bool,
    /// `COOKIE_MODE_BODY_TOKENS` (only with `COOKIE_MODE`): sign-in bodies
    /// keep carrying the tokens in cookie mode, where any script on the page
    /// can read them (weaker; see [`Config::tokens_in_body`]).
    pub cookie_mode_body_tokens: bool,
    /// `CORS_ORIGINS`.
    pub cors_origins: Vec<String>,
    /// `KEY_ENCRYPTION_KEY` (secret).
    pub kek: Kek,
    /// `PASSWORD_HASH_PROFILE`, or `ARGON2_MEMORY_KIB`, `ARGON2_ITERATIONS`
    /// and `ARGON2_PARALLELISM` (one or the other): the argon2id costs of
    /// new hashes.
    pub hash_params: HashParams,
    /// `PASSWORD_MIN_LENGTH`, `PASSWORD_MAX_LENGTH`.
    pub password_policy: PasswordPolicy,
    /// `RATE_LIMITS`, `LOGIN_BACKOFF` and `OTP_MAX_FAILURES_PER_DAY`.
    pub rate_limits: RateLimits,
    /// `OAUTH_PROVIDERS`, their `OAUTH_<ID>_CLIENT_SECRET`s and `REDIRECT_ALLOWLIST`.
    pub oauth: OAuthConfig,
    /// `AUDIT_RETENTION_DAYS`: the cron trigger deletes audit log entries
    /// older than this many days.
    pub audit_retention_days: u32,
    /// The hosted pages (`UI_ENABLED`) and the brand (`UI_NAME`,
    /// `UI_LOGO_URL`, `UI_ACCENT`, also in the emails).
    pub ui: UiConfig,
    /// `REVOCATION_LAG`: within this many seconds of a revocation every
    /// isolate's gateway refuses the tokens it affects
    /// ([`crate::core::revocation`]).
    pub revocation_lag_secs: u64,
    /// `INTROSPECTION_SECRET` (secret): what callers of `POST
    /// /auth/introspect` present; `None` leaves introspection disabled.
    pub introspection_secret: Option<IntrospectionSecret>,
    /// `AUDIT_MAX_ENTRIES`: the cron trigger deletes the oldest written
    /// audit log entries beyond this many, whatever their age.
    pub audit_max_entries: u32,
    /// `RP_ID`, `RP_ORIGINS`, `RP_NAME`: the passkeys' relying party;
    /// `None` (no `RP_ID`) leaves the passkey endpoints off (404
    /// `passkeys_disabled`).
    pub relying_party: Option<RelyingParty>,
}

/// `RP_ID`, `RP_ORIGINS` and `RP_NAME`: `RP_ID` a lowercase domain name (or
/// `localhost`), never an IP address; `RP_ORIGINS` comma-separated http(s) origins whose hosts are
/// `RP_ID` or below it (default `https://<RP_ID>`); `RP_NAME` the name the
/// browser shows (default `UI_NAME`, else `RP_ID`). The two others without
/// `RP_ID` are an error.
fn relying_party(
    id: Option<String>,
    origins: Option<String>,
    name: Option<String>,
    ui_name: Option<&str>,
) -> Result<Option<RelyingParty>, ConfigError> {
    let err = |name: &str, why: String| ConfigError(format!("{name}: {why}"));
    let Some(id) = id else {
        for (set, var) in [(origins.is_some(), "RP_ORIGINS"), (name.is_some(), "RP_NAME")] {
            if set {
                return Err(err(var, "set, but RP_ID is not: passkeys need RP_ID".into()));
            }
        }
        return Ok(None);
    };
    // WebAuthn scopes credentials to a domain: an IP address is not a valid
    // RP ID, and browsers refuse it. Parsed as a URL host would be (so
    // `1.2.3` and `0x7f.1` are addresses too).
    let ip = id.parse::<std::net::IpAddr>().is_ok()
        || matches!(url::Host::parse(&id), Ok(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
    if ip {
        return Err(err(
            "RP_ID",
            format!("{id:?} is an IP address: WebAuthn needs a domain name (use localhost for local testing)"),
        ));
    }
    let domain_ok = id.len() <= 253
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..")
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !domain_ok {
        return Err(err("RP_ID", format!("{id:?} must be a lowercase domain name such as example.com")));
    }
    let origins = origins.unwrap_or_else(|| format!("https://{id}"));
    let mut list = Vec::new();
    for o in origins.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let u = Url::parse(o).map_err(|e| err("RP_ORIGINS", format!("{o:?} is not a URL: {e}")))?;
        let host = u.host_str().unwrap_or_default();
        if !matches!(u.scheme(), "http" | "https") || host.is_empty() {
            return Err(err("RP_ORIGINS", format!("{o:?} must be an http(s) origin")));
        }
        if u.scheme() == "http" && host != "localhost" && !host.ends_with(".localhost") {
            return Err(err(
                "RP_ORIGINS",
                format!("{o:?}: http is allowed for localhost only (WebAuthn needs a secure context)"),
            ));
        }
        if !RelyingParty::covers_host(&id, host) {
            return Err(err("RP_ORIGINS", format!("{o:?} is not on RP_ID {id:?} or below it")));
        }
        list.push(u.origin().ascii_serialization());
    }
    if list.is_empty() {
        return Err(err("RP_ORIGINS", "no origin given".into()));
    }
    let name = match name {
        Some(n) if n.chars().count() <= brand::MAX_NAME_CHARS && !n.chars().any(char::is_control) => n,
        Some(_) => {
            return Err(err(
                "RP_NAME",
                format!("at most {} characters, without control characters", brand::MAX_NAME_CHARS),
            ))
        }
        None => ui_name.unwrap_or(&id).to_string(),
    };
    Ok(Some(RelyingParty::new(id, list, name)))
}

/// A configuration problem, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Builds the configuration from `get(name)`, which returns a var's or
    /// secret's value if it is set.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let err = |name: &str, why: String| ConfigError(format!("{name}: {why}"));

        let secs = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n > 0 && n <= 10 * 365 * 86_400 => Ok(n),
                    _ => Err(err(name, format!("{v:?} is not a positive number of seconds"))),
                },
            }
        };
        let boolean = |name: &str| -> Result<bool, ConfigError> {
            match var(name).as_deref() {
                None | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(v) => Err(err(name, format!("{v:?} must be true or false"))),
            }
        };
        let number = |name: &str, default: u32| -> Result<u32, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v.parse::<u32>().map_err(|_| err(name, format!("{v:?} is not a whole number"))),
            }
        };
        let http_url = |name: &str, v: &str| -> Result<Url, ConfigError> {
            let u = Url::parse(v).map_err(|e| err(name, format!("{v:?} is not a URL: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(err(name, format!("{v:?} must be an http(s) URL")));
            }
            Ok(u)
        };

        let issuer = match var("ISSUER") {
            None => None,
            Some(v) => Some(http_url("ISSUER", &v)?.as_str().trim_end_matches('/').to_string()),
        };
        let auth_prefix = match var("AUTH_PREFIX") {
            None => DEFAULT_AUTH_PREFIX.to_string(),
            Some(v) => auth_prefix(&v).map_err(|why| err("AUTH_PREFIX", why))?,
        };
        let origin_url = match var("ORIGIN_URL") {
            None => None,
            Some(v) => Some(http_url("ORIGIN_URL", &v)?),
        };
        let webhook_urls = match var("WEBHOOK_URLS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| http_url("WEBHOOK_URLS", s))
                .collect::<Result<_, _>>()?,
        };
        let cors_origins = match var("CORS_ORIGINS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s == "*" {
                        return Ok(s.to_string());
                    }
                    let u = http_url("CORS_ORIGINS", s)?;
                    // `url` takes `*` as a host's character: such an entry
                    // would parse and never match an Origin.
                    if u.host_str().is_some_and(|h| h.contains('*')) {
                        return Err(err(
                            "CORS_ORIGINS",
                            format!("{s:?}: a wildcard in a host is not supported; list each origin, or `*` alone"),
                        ));
                    }
                    Ok(u.origin().ascii_serialization())
                })
                .collect::<Result<_, ConfigError>>()?,
        };
        let routes = Routes::parse(get("ROUTES").as_deref(), get("DEFAULT_POLICY").as_deref()).map_err(ConfigError)?;
        let strip_headers =
            StrippedHeaders::parse(var("STRIP_HEADERS").as_deref()).map_err(|e| err("STRIP_HEADERS", e))?;
        let kek = match var("KEY_ENCRYPTION_KEY") {
            None => {
                return Err(err(
                    "KEY_ENCRYPTION_KEY",
                    "missing: set the secret (base64 of 32 random bytes; `npm start` writes one to .dev.vars)".into(),
                ))
            }
            Some(v) => Kek::parse(&v).map_err(|e| err("KEY_ENCRYPTION_KEY", e))?,
        };
        const ARGON2_VARS: [&str; 3] = ["ARGON2_MEMORY_KIB", "ARGON2_ITERATIONS", "ARGON2_PARALLELISM"];
        let hash_params = match var("PASSWORD_HASH_PROFILE") {
            Some(p) => {
                if let Some(set) = ARGON2_VARS.iter().find(|n| var(n).is_some()) {
                    return Err(err(
                        "PASSWORD_HASH_PROFILE",
                        format!("set together with {set}: choose a profile or give the argon2 costs, not both"),
                    ));
                }
                HashProfile::parse(&p).map_err(|e| err("PASSWORD_HASH_PROFILE", e))?.params()
            }
            None => HashParams {
                memory_kib: number("ARGON2_MEMORY_KIB", HashParams::default().memory_kib)?,
                iterations: number("ARGON2_ITERATIONS", HashParams::default().iterations)?,
                parallelism: number("ARGON2_PARALLELISM", HashParams::default().parallelism)?,
            },
        };
        hash_params.validate().map_err(|e| err(&ARGON2_VARS.join("/"), e))?;
        let password_policy = PasswordPolicy {
            min_chars: number("PASSWORD_MIN_LENGTH", PasswordPolicy::default().min_chars as u32)? as usize,
            max_chars: number("PASSWORD_MAX_LENGTH", PasswordPolicy::default().max_chars as u32)? as usize,
        };
        if password_policy.min_chars == 0
            || password_policy.max_chars > 1024
            || password_policy.min_chars > password_policy.max_chars
        {
            return Err(err(
                "PASSWORD_MIN_LENGTH/PASSWORD_MAX_LENGTH",
                "need 1 <= PASSWORD_MIN_LENGTH <= PASSWORD_MAX_LENGTH <= 1024".into(),
            ));
        }
        let rate_limits = RateLimits::parse(var("RATE_LIMITS").as_deref(), var("LOGIN_BACKOFF").as_deref())
            .and_then(|l| l.with_otp_failure_cap(var("OTP_MAX_FAILURES_PER_DAY").as_deref()))
            .map_err(ConfigError)?;
        let webhook_secret = match var("WEBHOOK_SECRET") {
            None if !webhook_urls.is_empty() => {
                return Err(err(
                    "WEBHOOK_SECRET",
                    "missing: WEBHOOK_URLS is set, so deliveries must be signed (whsec_ + base64)".into(),
                ))
            }
            None => None,
            Some(v) => Some(WebhookSecret::parse(&v).map_err(|e| err("WEBHOOK_SECRET", e))?),
        };
        let webhook_events = match var("WEBHOOK_EVENTS") {
            None => None,
            Some(v) if v == "*" => None,
            Some(v) => Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        Event::KINDS
                            .iter()
                            .copied()
                            .find(|k| *k == s)
                            .ok_or_else(|| err("WEBHOOK_EVENTS", format!("{s:?} is not an event type")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let millis = |name: &str, default: u32, max: u32| -> Result<u32, ConfigError> {
            match number(name, default)? {
                n if (1..=max).contains(&n) => Ok(n),
                n => Err(err(name, format!("{n} must be between 1 and {max} milliseconds"))),
            }
        };
        let webhook_timeout_ms = millis("WEBHOOK_TIMEOUT_MS", WEBHOOK_TIMEOUT_MS, 30_000)?;
        let retry_base_delay_secs = match number("RETRY_BASE_DELAY_SECS", RETRY_BASE_DELAY_SECS)? {
            n if (1..=3_600).contains(&n) => n,
            n => return Err(err("RETRY_BASE_DELAY_SECS", format!("{n} must be between 1 and 3600 seconds"))),
        };
        let audit_retention_days = match number("AUDIT_RETENTION_DAYS", AUDIT_RETENTION_DAYS)? {
            n if (1..=MAX_AUDIT_RETENTION_DAYS).contains(&n) => n,
            n => {
                return Err(err(
                    "AUDIT_RETENTION_DAYS",
                    format!("{n} must be between 1 and {MAX_AUDIT_RETENTION_DAYS} days"),
                ))
            }
        };
        let audit_max_entries = match number("AUDIT_MAX_ENTRIES", AUDIT_MAX_ENTRIES)? {
            n if AUDIT_MAX_ENTRIES_RANGE.contains(&n) => n,
            n => {
                let (lo, hi) = (AUDIT_MAX_ENTRIES_RANGE.start(), AUDIT_MAX_ENTRIES_RANGE.end());
                return Err(err("AUDIT_MAX_ENTRIES", format!("{n} must be between {lo} and {hi}")));
            }
        };
        // UI_NAME, UI_LOGO_URL, UI_ACCENT: read once, for the emails and the pages.
        let brand = Brand::from_lookup(&var).map_err(|(name, why)| err(&name, why))?;
        let email = EmailSettings::from_lookup(&var, brand.clone()).map_err(|(name, why)| err(&name, why))?;
        let hook = match var("HOOK_URL") {
            None => None,
            Some(v) => {
                let url = http_url("HOOK_URL", &v)?;
                let secret = match (var("HOOK_SECRET"), &webhook_secret) {
                    (Some(s), _) => WebhookSecret::parse(&s).map_err(|e| err("HOOK_SECRET", e))?,
                    (None, Some(s)) => s.clone(),
                    (None, None) => return Err(err(
                        "HOOK_SECRET",
                        "missing: HOOK_URL is set, so its requests must be signed (set HOOK_SECRET or WEBHOOK_SECRET)"
                            .into(),
                    )),
                };
                let failure_mode = match var("HOOK_FAILURE_MODE") {
                    None => FailureMode::Closed,
                    Some(m) => FailureMode::parse(&m).map_err(|e| err("HOOK_FAILURE_MODE", e))?,
                };
                let timeout_ms = millis("HOOK_TIMEOUT_MS", HOOK_TIMEOUT_MS, MAX_HOOK_TIMEOUT_MS)?;
                let on_refresh = boolean("HOOK_ON_REFRESH")?;
                Some(HookConfig { url, secret, timeout_ms, failure_mode, on_refresh })
            }
        };
        let ui_enabled = !matches!(var("UI_ENABLED").as_deref(), Some("false") | Some("0"));
        let oauth = OAuthConfig::parse(
            var("OAUTH_PROVIDERS").as_deref(),
            var("REDIRECT_ALLOWLIST").as_deref(),
            ui_enabled,
            var,
        )
        .map_err(|(name, why)| err(&name, why))?;
        let ui = UiConfig::parse(var, brand, &oauth.redirect_allowlist).map_err(|(name, why)| err(&name, why))?;
        for name in ["HOOK_SECRET", "HOOK_FAILURE_MODE", "HOOK_TIMEOUT_MS", "HOOK_ON_REFRESH"] {
            if hook.is_none() && var(name).is_some() {
                return Err(err(name, "set, but HOOK_URL is not: there is no hook to apply it to".into()));
            }
        }
        let access_ttl_secs = match secs("ACCESS_TTL", ACCESS_TTL_SECS)? {
            n if n <= MAX_ACCESS_TTL_SECS => n,
            n => return Err(err("ACCESS_TTL", format!("{n} is more than {MAX_ACCESS_TTL_SECS} seconds (23 hours)"))),
        };
        // Fail closed must come before the tokens expire anyway: three lags
        // within ACCESS_TTL.
        let max_lag = MAX_REVOCATION_LAG_SECS.min(access_ttl_secs / FAIL_CLOSED_LAGS.unsigned_abs());
        let revocation_lag_secs = match secs("REVOCATION_LAG", default_lag_secs(access_ttl_secs))? {
            n if var("REVOCATION_LAG").is_none() || n <= max_lag => n,
            n => {
                return Err(err(
                    "REVOCATION_LAG",
                    format!(
                    "{n} is more than {max_lag} seconds: at most {MAX_REVOCATION_LAG_SECS}, and three lags must fit \
                         in ACCESS_TTL ({access_ttl_secs} s)"
                ),
                ))
            }
        };
        let introspection_secret = match var("INTROSPECTION_SECRET") {
            None => None,
            Some(v) => Some(IntrospectionSecret::parse(&v).map_err(|e| err("INTROSPECTION_SECRET", e))?),
        };
        let cookie_mode = boolean("COOKIE_MODE")?;
        let cookie_mode_body_tokens = boolean("COOKIE_MODE_BODY_TOKENS")?;
        if !cookie_mode && var("COOKIE_MODE_BODY_TOKENS").is_some() {
            return Err(err(
                "COOKIE_MODE_BODY_TOKENS",
                "set, but COOKIE_MODE is not true: without cookie mode the tokens travel in the bodies anyway".into(),
            ));
        }

        let relying_party = relying_party(
            var("RP_ID"),
            var("RP_ORIGINS"),
            var("RP_NAME"),
            ui.brand.named.then_some(ui.brand.name.as_str()),
        )?;

        Ok(Self {
            issuer,
            audience: var("AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into()),
            access_ttl_secs,
            refresh_ttl_secs: secs("REFRESH_TTL", REFRESH_TTL_SECS)?,
            session_max_age_secs: secs("SESSION_MAX_AGE", SESSION_MAX_AGE_SECS)?,
            magic_link_ttl_secs: secs("MAGIC_LINK_TTL", MAGIC_LINK_TTL_SECS)?,
            otp_ttl_secs: secs("OTP_TTL", OTP_TTL_SECS)?,
            password_reset_ttl_secs: secs("PASSWORD_RESET_TTL", PASSWORD_RESET_TTL_SECS)?,
            email_verification_ttl_secs: secs("EMAIL_VERIFICATION_TTL", EMAIL_VERIFICATION_TTL_SECS)?,
            rotation_interval_secs: secs("ROTATION_INTERVAL", ROTATION_INTERVAL_SECS)?,
            key_cache_ttl_secs: secs("KEY_CACHE_TTL", KEY_CACHE_TTL_SECS)?,
            signing_alg: match var("SIGNING_ALG") {
                None => SigningAlg::default(),
                Some(v) => SigningAlg::from_name(v.trim())
                    .ok_or_else(|| err("SIGNING_ALG", format!("must be `EdDSA` or `ES256`, not `{v}`")))?,
            },
            auth_prefix,
            origin_url,
            origin_timeout_ms: number("ORIGIN_TIMEOUT_MS", ORIGIN_TIMEOUT_MS)?,
            routes,
            strip_headers,
            webhook_urls,
            webhook_secret,
            webhook_events,
            webhook_timeout_ms,
            retry_base_delay_secs,
            email,
            hook,
            claims_header: boolean("CLAIMS_HEADER")?,
            allow_passwordless_signup: boolean("ALLOW_PASSWORDLESS_SIGNUP")?,
            cookie_mode,
            cookie_mode_body_tokens,
            cors_origins,
            kek,
            hash_params,
            password_policy,
            rate_limits,
            oauth,
            audit_retention_days,
            ui,
            revocation_lag_secs,
            introspection_secret,
            audit_max_entries,
            relying_party,
        })
    }

    /// Whether sign-in bodies (AuthResponse) carry `access_token` and
    /// `refresh_token`. In cookie mode they do not: the tokens travel only in
    /// `HttpOnly` cookies, out of reach of any script on the page (an XSS, or
    /// a page on a `CORS_ORIGINS` origin), and the body carries the user and
    /// the expiry. `COOKIE_MODE_BODY_TOKENS=true` puts them back, for clients
    /// that need both, at the price of that protection.
    pub fn tokens_in_body(&self) -> bool {
        !self.cookie_mode || self.cookie_mode_body_tokens
    }

    /// The public URL of the auth API path `api_path` (e.g. `/oauth/x/callback`)
    /// for `issuer`, under `AUTH_PREFIX`.
    pub fn auth_url(&self, issuer: &str, api_path: &str) -> String {
        format!("{issuer}{}{api_path}", self.auth_prefix)
    }

    /// The issuer for a request arriving at `request_origin` (e.g.
    /// `http://127.0.0.1:8787`): `ISSUER` if set, else that origin.
    pub fn issuer_for(&self, request_origin: &str) -> String {
        self.issuer.clone().unwrap_or_else(|| request_origin.trim_end_matches('/').to_string())
    }
}

/// Checks an `AUTH_PREFIX`: `/` and one or more lowercase segments of
/// letters, digits, `-`, `_` and `.` (no dot segments, no trailing slash), not
/// `/.well-known` or below it (those paths are the API's already).
fn auth_prefix(v: &str) -> Result<String, String> {
    let shape = "must look like /auth or /identity/v1: lowercase letters, digits, '-', '_' or '.' in segments after a leading '/'";
    if v.len() > MAX_AUTH_PREFIX_LEN {
        return Err(format!("longer than {MAX_AUTH_PREFIX_LEN} characters"));
    }
    let rest = v.strip_prefix('/').ok_or_else(|| shape.to_string())?;
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
    };
    if !rest.split('/').all(segment_ok) {
        return Err(shape.to_string());
    }
    if rest == ".well-known" || rest.starts_with(".well-known/") {
        return Err("must not be /.well-known or below it".into());
    }
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let mut m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        m.entry("KEY_ENCRYPTION_KEY".into()).or_insert_with(|| crate::core::signing_keys::b64(&[7; 32]));
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = Config::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.audience, "portcullis");
        assert_eq!(
            (c.access_ttl_secs, c.refresh_ttl_secs, c.magic_link_ttl_secs, c.otp_ttl_secs),
            (900, 2_592_000, 600, 600)
        );
        assert!(!c.cookie_mode && !c.allow_passwordless_signup);
        assert!(!c.cookie_mode_body_tokens && c.tokens_in_body());
        assert_eq!(
            (c.password_reset_ttl_secs, c.email_verification_ttl_secs, c.rotation_interval_secs, c.key_cache_ttl_secs),
            (3_600, 86_400, 2_592_000, 300)
        );
        assert_eq!(c.session_max_age_secs, 7_776_000);
        assert_eq!((c.revocation_lag_secs, c.introspection_secret.is_none()), (10, true));
        assert_eq!(c.rate_limits.otp_failures.map(|r| (r.limit, r.window_secs)), Some((20, 86_400)));
        assert_eq!(c.email.transport, crate::core::mail::Transport::Log);
        assert_eq!((c.webhook_secret.is_none(), c.webhook_events.is_none(), c.hook.is_none()), (true, true, true));
        assert_eq!((c.webhook_timeout_ms, c.retry_base_delay_secs), (10_000, 30));
        assert_eq!(c.issuer_for("http://127.0.0.1:8787/"), "http://127.0.0.1:8787");
        assert_eq!(c.auth_prefix, "/auth");
        assert_eq!((c.audit_retention_days, c.audit_max_entries), (90, 1_000_000));
        assert_eq!(c.auth_url("https://gw.example", "/oauth/x/callback"), "https://gw.example/auth/oauth/x/callback");
    }

    fn rp(pairs: &[(&str, &str)]) -> Result<Option<RelyingParty>, ConfigError> {
        Config::from_lookup(lookup(pairs)).map(|c| c.relying_party)
    }

    fn rp_error(pairs: &[(&str, &str)]) -> String {
        rp(pairs).unwrap_err().0
    }

    #[test]
    fn the_relying_party_is_a_domain_with_secure_origins_under_it() {
        assert_eq!(rp(&[]).unwrap(), None);
        let r = rp(&[("RP_ID", "example.com")]).unwrap().unwrap();
        assert_eq!((r.id.as_str(), r.origins.clone()), ("example.com", vec!["https://example.com".to_string()]));
        let r = rp(&[("RP_ID", "example.com"), ("RP_ORIGINS", "https://app.example.com, https://example.com:8443")])
            .unwrap()
            .unwrap();
        assert_eq!(r.origins, ["https://app.example.com", "https://example.com:8443"]);
        let r = rp(&[("RP_ID", "localhost"), ("RP_ORIGINS", "http://localhost:8787")]).unwrap().unwrap();
        assert_eq!(r.origins, ["http://localhost:8787"]);
        // http off localhost.
        let e = rp_error(&[("RP_ID", "example.com"), ("RP_ORIGINS", "http://example.com")]);
        assert!(e.starts_with("RP_ORIGINS:") && e.contains("localhost only"), "{e}");
        // An origin not on RP_ID or below it (a suffix is not a parent domain).
        for o in ["https://evil.com", "https://notexample.com", "https://example.com.evil.com"] {
            let e = rp_error(&[("RP_ID", "example.com"), ("RP_ORIGINS", o)]);
            assert!(e.starts_with("RP_ORIGINS:") && e.contains("not on RP_ID"), "{o}: {e}");
        }
        // RP_ORIGINS or RP_NAME without RP_ID.
        for var in ["RP_ORIGINS", "RP_NAME"] {
            let e = rp_error(&[(var, "https://example.com")]);
            assert!(e.starts_with(&format!("{var}:")) && e.contains("RP_ID is not"), "{e}");
        }
        // IP literals, in every spelling a URL host accepts.
        for ip in ["127.0.0.1", "192.168.1.10", "1.2.3", "0x7f.1", "::1", "2001:db8::1"] {
            let e = rp_error(&[("RP_ID", ip)]);
            assert!(e.starts_with("RP_ID:") && e.contains("IP address"), "{ip}: {e}");
        }
        assert!(rp_error(&[("RP_ID", "Example.COM")]).starts_with("RP_ID:"));
    }

    #[test]
    fn the_auth_prefix_is_a_plain_lowercase_path() {
        for ok in ["/identity", "/api/auth/v1", "/a-b_c.d"] {
            assert_eq!(Config::from_lookup(lookup(&[("AUTH_PREFIX", ok)])).unwrap().auth_prefix, ok);
        }
        for bad in [
            "auth",
            "/",
            "/auth/",
            "//auth",
            "/Auth",
            "/a/../b",
            "/./a",
            "/.well-known",
            "/.well-known/x",
            "/a b",
            "/a%2f",
        ] {
            let e = Config::from_lookup(lookup(&[("AUTH_PREFIX", bad)])).unwrap_err();
            assert!(e.0.starts_with("AUTH_PREFIX"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_revocation_lag_fits_three_times_in_the_access_token_life() {
        let cfg = |vars: &[(&str, &str)]| Config::from_lookup(lookup(vars));
        let lag = |vars: &[(&str, &str)]| cfg(vars).unwrap().revocation_lag_secs;
        assert_eq!(lag(&[]), 10);
        assert_eq!(lag(&[("ACCESS_TTL", "60"), ("REVOCATION_LAG", "20")]), 20);
        // Unset, it follows a short ACCESS_TTL down (at least a second).
        assert_eq!(lag(&[("ACCESS_TTL", "12")]), 4);
        assert_eq!(lag(&[("ACCESS_TTL", "1")]), 1);
        // Set, a lag whose three-fold outlives the tokens is refused.
        for (ttl, bad) in [("60", "21"), ("900", "301"), ("82800", "601")] {
            let e = cfg(&[("ACCESS_TTL", ttl), ("REVOCATION_LAG", bad)]).unwrap_err();
            assert!(e.0.starts_with("REVOCATION_LAG"), "{ttl}/{bad}: {e}");
        }
        // Access tokens live at most 23 hours: the log records sessions used
        // in the last day (core::revocation::LOGGED_SESSION_IDLE_SECS).
        assert_eq!(cfg(&[("ACCESS_TTL", "82800")]).unwrap().access_ttl_secs, 82_800);
        assert!(cfg(&[("ACCESS_TTL", "82801")]).unwrap_err().0.starts_with("ACCESS_TTL"));
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (k, v) in [
            ("ACCESS_TTL", "soon"),
            ("ACCESS_TTL", "0"),
            ("ROTATION_INTERVAL", "-5"),
            ("KEY_CACHE_TTL", "0"),
            ("PASSWORD_RESET_TTL", "1h"),
            ("SESSION_MAX_AGE", "90d"),
            ("SESSION_MAX_AGE", "0"),
            ("OTP_MAX_FAILURES_PER_DAY", "0"),
            ("ISSUER", "not a url"),
            ("ORIGIN_URL", "ftp://x"),
            ("COOKIE_MODE", "yes"),
            ("ROUTES", "[1]"),
            ("DEFAULT_POLICY", "open"),
            ("STRIP_HEADERS", "x-ok, not a header"),
            ("KEY_ENCRYPTION_KEY", "c2hvcnQ="),
            ("ARGON2_MEMORY_KIB", "1"),
            ("WEBHOOK_URLS", "http://ok.example, nope"),
            ("CORS_ORIGINS", "https://app.example, https://*.example.org"),
            ("CORS_ORIGINS", "https://app.example, not an origin"),
            ("WEBHOOK_SECRET", "c2VjcmV0LXdpdGhvdXQtcHJlZml4LTEyMzQ1Njc4"),
            ("WEBHOOK_EVENTS", "login, logn"),
            ("WEBHOOK_TIMEOUT_MS", "0"),
            ("RETRY_BASE_DELAY_SECS", "0"),
            ("AUDIT_RETENTION_DAYS", "0"),
            ("AUDIT_RETENTION_DAYS", "3651"),
            ("AUDIT_RETENTION_DAYS", "90d"),
            ("AUDIT_MAX_ENTRIES", "999"),
            ("AUDIT_MAX_ENTRIES", "1000000001"),
            ("AUDIT_MAX_ENTRIES", "1e6"),
            ("AUDIT_MAX_ENTRIES", "off"),
            ("EMAIL_TRANSPORT", "carrier-pigeon"),
            ("EMAIL_FROM", "nobody"),
            ("HOOK_URL", "ftp://hooks.example"),
            ("HOOK_FAILURE_MODE", "open"),
            ("UI_NAME", "line\nbreak"),
            ("REVOCATION_LAG", "0"),
            ("REVOCATION_LAG", "601"),
            ("REVOCATION_LAG", "10s"),
            ("INTROSPECTION_SECRET", "too-short"),
        ] {
            let e = Config::from_lookup(lookup(&[(k, v)])).unwrap_err();
            let head = k.split('_').next().unwrap();
            assert!(e.0.contains(head), "{k}={v}: {e}");
        }
    }

    #[test]
    fn password_hash_profile_chooses_the_argon2_costs() {
        let costs = |pairs: &[(&str, &str)]| {
            let p = Config::from_lookup(lookup(pairs)).unwrap().hash_params;
            (p.memory_kib, p.iterations, p.parallelism)
        };
        assert_eq!(costs(&[]), (19_456, 2, 1));
        assert_eq!(costs(&[("PASSWORD_HASH_PROFILE", "default")]), (19_456, 2, 1));
        assert_eq!(costs(&[("PASSWORD_HASH_PROFILE", "light")]), (7_168, 5, 1));
        assert_eq!(costs(&[("ARGON2_MEMORY_KIB", "12288"), ("ARGON2_ITERATIONS", "3")]), (12_288, 3, 1));
        let e = Config::from_lookup(lookup(&[("PASSWORD_HASH_PROFILE", "fast")])).unwrap_err();
        assert!(e.0.starts_with("PASSWORD_HASH_PROFILE: \"fast\" is not a profile"), "{e}");
        let e =
            Config::from_lookup(lookup(&[("PASSWORD_HASH_PROFILE", "light"), ("ARGON2_ITERATIONS", "3")])).unwrap_err();
        assert!(e.0.starts_with("PASSWORD_HASH_PROFILE: set together with ARGON2_ITERATIONS"), "{e}");
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn webhooks_need_a_standard_webhooks_secret() {
        let e = Config::from_lookup(lookup(&[("WEBHOOK_URLS", "https://hooks.example/a")])).unwrap_err();
        assert!(e.0.starts_with("WEBHOOK_SECRET: missing"), "{e}");
        let c = Config::from_lookup(lookup(&[
            ("WEBHOOK_URLS", "https://hooks.example/a, http://127.0.0.1:9000/b"),
            ("WEBHOOK_SECRET", SECRET),
            ("WEBHOOK_EVENTS", "login, user_created"),
        ]))
        .unwrap();
        assert_eq!(c.webhook_urls.len(), 2);
        assert_eq!(c.webhook_events, Some(vec!["login", "user_created"]));
    }

    #[test]
    fn the_hook_is_validated_and_fails_closed_by_default() {
        let e = Config::from_lookup(lookup(&[("HOOK_URL", "https://hooks.example/signin")])).unwrap_err();
        assert!(e.0.starts_with("HOOK_SECRET"), "{e}");
        let c =
            Config::from_lookup(lookup(&[("HOOK_URL", "https://hooks.example/signin"), ("WEBHOOK_SECRET", SECRET)]))
                .unwrap();
        let hook = c.hook.unwrap();
        assert_eq!((hook.failure_mode, hook.timeout_ms, hook.on_refresh), (FailureMode::Closed, 2_000, false));
        let c = Config::from_lookup(lookup(&[
            ("HOOK_URL", "https://hooks.example/signin"),
            ("HOOK_SECRET", SECRET),
            ("HOOK_FAILURE_MODE", "open"),
            ("HOOK_TIMEOUT_MS", "250"),
            ("HOOK_ON_REFRESH", "true"),
        ]))
        .unwrap();
        let hook = c.hook.unwrap();
        assert_eq!((hook.failure_mode, hook.timeout_ms, hook.on_refresh), (FailureMode::Open, 250, true));
        let e = Config::from_lookup(lookup(&[("HOOK_ON_REFRESH", "true")])).unwrap_err();
        assert!(e.0.starts_with("HOOK_ON_REFRESH: set, but HOOK_URL is not"), "{e}");
        for (k, v) in [
            ("HOOK_FAILURE_MODE", "sometimes"),
            ("HOOK_TIMEOUT_MS", "60000"),
            ("HOOK_SECRET", "whsec_!"),
            ("HOOK_ON_REFRESH", "yes"),
        ] {
            let e =
                Config::from_lookup(lookup(&[("HOOK_URL", "https://h.example"), ("WEBHOOK_SECRET", SECRET), (k, v)]))
                    .unwrap_err();
            assert!(e.0.starts_with(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn cookie_mode_keeps_tokens_out_of_bodies_unless_told_otherwise() {
        let c = Config::from_lookup(lookup(&[("COOKIE_MODE", "true")])).unwrap();
        assert!(c.cookie_mode && !c.tokens_in_body());
        let c = Config::from_lookup(lookup(&[("COOKIE_MODE", "true"), ("COOKIE_MODE_BODY_TOKENS", "false")])).unwrap();
        assert!(!c.tokens_in_body());
        let c = Config::from_lookup(lookup(&[("COOKIE_MODE", "true"), ("COOKIE_MODE_BODY_TOKENS", "true")])).unwrap();
        assert!(c.tokens_in_body());
        for (mode, v) in [("true", "yes"), ("true", "on"), ("false", "true"), ("false", "false")] {
            let e = Config::from_lookup(lookup(&[("COOKIE_MODE", mode), ("COOKIE_MODE_BODY_TOKENS", v)])).unwrap_err();
            assert!(e.0.starts_with("COOKIE_MODE_BODY_TOKENS: "), "COOKIE_MODE={mode} BODY_TOKENS={v}: {e}");
        }
    }

    #[test]
    fn missing_kek_is_an_error() {
        let e = Config::from_lookup(|_| None).unwrap_err();
        assert!(e.0.starts_with("KEY_ENCRYPTION_KEY"));
    }

    #[test]
    fn lists_are_parsed() {
        let c = Config::from_lookup(lookup(&[
            ("CORS_ORIGINS", "https://app.example, http://localhost:3000/"),
            ("ISSUER", "https://auth.example/"),
        ]))
        .unwrap();
        assert_eq!(c.cors_origins, vec!["https://app.example", "http://localhost:3000"]);
        assert_eq!(c.issuer.as_deref(), Some("https://auth.example"));
    }
}
