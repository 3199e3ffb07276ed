//! The core's error enum, and its one mapping to an RFC 9457 problem.
//!
//! Every failure a request can meet ends up as an [`Error`]; [`Error::problem`]
//! is the only place that decides its HTTP status, stable `code`, title and the
//! headers that go with it (`WWW-Authenticate`, `Retry-After`). Causes of 5xx
//! errors are for the log, never for the response body.

use std::fmt;

/// The challenge of a 401 that says nothing of a bearer token (RFC 6750
/// §3.1: no error code when no credentials were sent).
pub const BARE_CHALLENGE: &str = "Bearer realm=\"portcullis\"";

/// Why an access token was refused. Every variant is a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token was presented.
    Missing,
    /// Not a compact JWS, bad base64url or JSON, or over the size cap.
    Malformed,
    /// `alg` is not the one pinned for the key (includes `none`).
    UnsupportedAlgorithm,
    /// `kid` is absent or names no published key.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `typ` is not `at+jwt`.
    WrongType,
    /// `exp` is in the past (or missing).
    Expired,
    /// `nbf` or `iat` is in the future.
    NotYetValid,
    /// `exp − iat` is longer than tokens are issued for (`ACCESS_TTL`), plus
    /// the leeway: minted with a signing key, not issued by us.
    TooLongLived,
    /// `iss` is not ours.
    WrongIssuer,
    /// `aud` does not include ours.
    WrongAudience,
    /// The session behind the token was revoked or has expired.
    SessionRevoked,
    /// The gateway refuses the token: its session was revoked, or it claims
    /// a role its user no longer holds (`crate::core::revocation`).
    Revoked,
}

impl TokenError {
    /// A short description for `error_description` and the problem `detail`.
    pub fn description(self) -> &'static str {
        match self {
            Self::Missing => "no access token was presented",
            Self::Malformed => "the access token is malformed",
            Self::UnsupportedAlgorithm => "the token's algorithm is not accepted",
            Self::UnknownKey => "the token's key id is unknown",
            Self::BadSignature => "the token's signature is invalid",
            Self::WrongType => "the token is not an access token",
            Self::Expired => "the access token has expired",
            Self::NotYetValid => "the access token is not valid yet",
            Self::TooLongLived => "the token claims a longer lifetime than access tokens are issued for",
            Self::WrongIssuer => "the token was issued by someone else",
            Self::WrongAudience => "the token is not meant for this audience",
            Self::SessionRevoked => "the session has been revoked",
            Self::Revoked => "the token has been revoked; sign in again or refresh it",
        }
    }
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The body is not JSON of the expected shape.
    InvalidJson(String),
    /// A field is present but its value is not acceptable.
    Validation {
        /// Stable code, e.g. `invalid_email`, `password_too_short`.
        code: &'static str,
        /// What was wrong, for people.
        detail: String,
    },
    /// The request has a body whose content type is not the one the
    /// endpoint reads (`application/json`, or a form for the hosted pages).
    UnsupportedMediaType {
        /// The media type expected.
        expected: &'static str,
    },
    /// A request body in a content coding the API does not decode, e.g.
    /// `Content-Encoding: gzip` (415, RFC 9110 §15.5.16).
    UnsupportedContentEncoding,
    /// A request that cannot be served as sent (400), e.g. a `redirect_to`
    /// off the allowlist (`invalid_redirect`).
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// For people.
        detail: String,
    },
    /// An OAuth endpoint's request (RFC 6749 §5.2, RFC 7009 §2.2.1) is
    /// malformed: a required parameter missing or repeated, not a form
    /// (400 `invalid_request`).
    InvalidRequest(String),
    /// The caller of an endpoint that authenticates its callers with a
    /// secret (introspection) sent no secret or a wrong one (401
    /// `invalid_client`); `presented` says whether it sent one.
    InvalidClient {
        /// Whether a credential was sent.
        presented: bool,
    },
    /// The body is larger than the endpoint accepts.
    PayloadTooLarge {
        /// The limit, in bytes.
        limit_bytes: usize,
    },
    /// Email or password wrong, or the account unknown — deliberately the same.
    InvalidCredentials,
    /// The access token was refused.
    InvalidToken(TokenError),
    /// The refresh token is unknown, rotated, expired or its session revoked.
    InvalidRefreshToken,
    /// A single-use secret (an emailed link token or code, a second factor's
    /// code, an `mfa_token`) is unknown, used, superseded, expired or out of
    /// attempts — deliberately one answer for all of these.
    InvalidEmailSecret {
        /// Stable code: `invalid_link`, `invalid_code` or `invalid_mfa_token`.
        code: &'static str,
        /// For people.
        detail: String,
    },
    /// A well-formed passkey credential that is refused (401): its
    /// challenge, origin, RP ID, signature, counter or credential does not
    /// hold (see [`crate::core::passkey`]). A sign-in's refusal; the
    /// signed-in registration answers the same codes as 400
    /// ([`Error::BadRequest`]).
    PasskeyRefused {
        /// Stable code, e.g. `invalid_challenge`, `invalid_signature`.
        code: &'static str,
        /// For people.
        detail: String,
    },
    /// Authenticated, but not allowed.
    Forbidden {
        /// Stable code, e.g. `account_banned`.
        code: &'static str,
        /// What was refused, for people.
        detail: String,
    },
    /// A valid token whose roles do not allow the request: 403
    /// `insufficient_role`, with RFC 6750's `insufficient_scope` challenge.
    InsufficientRole {
        /// What was refused, for people.
        detail: &'static str,
    },
    /// A valid token whose sign-in is not strong or recent enough for the
    /// route (RFC 9470 step-up): 401 `insufficient_user_authentication`,
    /// with the `WWW-Authenticate` challenge a client acts on.
    InsufficientAuthentication {
        /// A second factor is missing (the route's policy is `mfa`).
        mfa: bool,
        /// The route's `max_age`, when the sign-in is older than it.
        max_age_secs: Option<u64>,
    },
    /// No such resource.
    NotFound,
    /// No such resource, with a stable code naming what was looked for
    /// (404), e.g. `key_not_found`.
    NoSuch {
        /// Stable code.
        code: &'static str,
        /// For people.
        detail: String,
    },
    /// The path exists but not for this method; `allow` lists the methods it
    /// takes (the `Allow` header, RFC 9110 §15.5.6).
    MethodNotAllowed {
        /// E.g. `"POST"` or `"GET, HEAD"`.
        allow: &'static str,
    },
    /// The resource already exists, e.g. `email_taken`.
    Conflict {
        /// Stable code.
        code: &'static str,
        /// For people.
        detail: String,
    },
    /// Too many attempts; try again after the given number of seconds.
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
    /// A platform dependency (D1, KV, Queue, origin) failed: fail closed.
    Unavailable {
        /// Which dependency, for the log.
        dependency: &'static str,
        /// The cause, for the log only.
        cause: String,
    },
    /// The origin could not be reached (502).
    OriginUnreachable,
    /// A GET or HEAD request with a body, which cannot be forwarded (the
    /// runtime's `fetch` sends none): 400 rather than a misleading 502.
    BodyNotForwardable,
    /// The origin sent no response head in time (504).
    OriginTimeout,
    /// The sign-in hook failed and `HOOK_FAILURE_MODE` is `closed`; the cause
    /// is for the log only.
    HookUnavailable(String),
    /// An OAuth / OIDC sign-in failed (see `core::flows::oauth` for the codes).
    OAuth {
        /// HTTP status: 400, 401, 403, 404, 409 or 502.
        status: u16,
        /// Stable code, e.g. `invalid_state`, `provider_unavailable`.
        code: &'static str,
        /// For people; never a provider's internals.
        detail: String,
    },
    /// A setting is missing or invalid: nothing is served until it is fixed.
    Misconfigured(String),
    /// A bug or an impossible state; the cause is for the log only.
    Internal(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable { dependency, cause } => write!(f, "{dependency} unavailable: {cause}"),
            Self::Internal(cause) => write!(f, "internal error: {cause}"),
            Self::HookUnavailable(cause) => write!(f, "sign-in hook unavailable: {cause}"),
            other => write!(f, "{}", other.problem().detail),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for core results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An RFC 9457 problem, ready to be rendered as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (the `code` member).
    pub code: &'static str,
    /// Short summary of the problem type, for people (a hosted page's
    /// heading); the body's `title` is the status phrase ([`status_phrase`]).
    pub title: &'static str,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Value for `WWW-Authenticate`, on 401s and role refusals (403).
    pub www_authenticate: Option<String>,
    /// Value for `Retry-After`, on 429s and 503s.
    pub retry_after_secs: Option<u64>,
    /// Value for `Allow`, on 405s.
    pub allow: Option<&'static str>,
    /// Value for `Accept-Encoding`, on a 415 for a content coding (RFC
    /// 9110 §15.5.16): the codings a body may come in.
    pub accept_encoding: Option<&'static str>,
}

impl Problem {
    fn new(status: u16, code: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            www_authenticate: None,
            retry_after_secs: None,
            allow: None,
            accept_encoding: None,
        }
    }

    /// The body: a JSON object with `type`, `title`, `status`, `detail` and
    /// `code` (RFC 9457 members first), written straight from the fields.
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            title: &'static str,
            status: u16,
            detail: &'a str,
            code: &'static str,
        }
        // With `type` "about:blank", RFC 9457 §4.2.1 wants the status
        // phrase as `title`; `code` and `detail` say what happened.
        let title = status_phrase(self.status);
        let body = Body { kind: "about:blank", title, status: self.status, detail: &self.detail, code: self.code };
        // A struct of strings and an integer always serialises.
        serde_json::to_string(&body).unwrap_or_default()
    }
}

/// The reason phrase RFC 9110 gives `status`, for every status a problem
/// has; "Error" for any other.
pub fn status_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl Error {
    /// Shorthand for a [`Error::Validation`].
    pub fn validation(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Validation { code, detail: detail.into() }
    }

    /// Shorthand for a [`Error::Forbidden`].
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Forbidden { code, detail: detail.into() }
    }

    /// A link token that cannot be used (`invalid_link`, 401).
    pub fn invalid_link() -> Self {
        Self::InvalidEmailSecret {
            code: "invalid_link",
            detail: "the link is invalid, already used, superseded by a newer one, or expired".into(),
        }
    }

    /// A one-time code that cannot be used (`invalid_code`, 401).
    pub fn invalid_code() -> Self {
        Self::InvalidEmailSecret {
            code: "invalid_code",
            detail: "the code is wrong, already used, superseded by a newer one, expired or out of attempts".into(),
        }
    }

    /// The account changed (a new password, a ban, a new address, a
    /// takeover) while a request that read it was in flight: its write was
    /// refused (`account_changed`, 409). Trying again reads the account anew.
    pub fn account_changed() -> Self {
        Self::Conflict {
            code: "account_changed",
            detail: "the account changed while this request was in flight; start again".into(),
        }
    }

    /// Shorthand for a [`Error::Unavailable`].
    pub fn unavailable(dependency: &'static str, cause: impl fmt::Display) -> Self {
        Self::Unavailable { dependency, cause: cause.to_string() }
    }

    /// Whether the cause should be logged: the response says nothing about it.
    pub fn is_server_side(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Internal(_) | Self::Misconfigured(_) | Self::HookUnavailable(_))
    }

    /// The one mapping from an error to what the client sees. Every 401
    /// names its scheme (RFC 9110 §15.5.2); one that is not about a bearer
    /// credential (a wrong code, link or refresh token) with no error.
    pub fn problem(&self) -> Problem {
        let mut p = self.problem_of();
        if p.status == 401 && p.www_authenticate.is_none() {
            p.www_authenticate = Some(BARE_CHALLENGE.into());
        }
        p
    }

    fn problem_of(&self) -> Problem {
        match self {
            Self::InvalidJson(detail) => Problem::new(400, "invalid_json", "Malformed request body", detail.clone()),
            Self::InvalidRequest(detail) => Problem::new(400, "invalid_request", "Invalid request", detail.clone()),
            Self::InvalidClient { presented } => {
                let mut p = Problem::new(
                    401,
                    "invalid_client",
                    "Client authentication failed",
                    "this endpoint needs the introspection secret: Authorization: Bearer <secret>, or Basic with it as \
                     the password",
                );
                p.www_authenticate = Some(if *presented {
                    "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"the secret is not the introspection secret\", Basic realm=\"portcullis\"".to_string()
                } else {
                    "Bearer realm=\"portcullis\", Basic realm=\"portcullis\"".to_string()
                });
                p
            }
            Self::Validation { code, detail } => Problem::new(422, code, "Validation failed", detail.clone()),
            Self::UnsupportedMediaType { expected } => Problem::new(
                415,
                "unsupported_media_type",
                "Unsupported media type",
                format!("the request body must be {expected}"),
            ),
            Self::UnsupportedContentEncoding => {
                let mut p = Problem::new(
                    415,
                    "unsupported_content_encoding",
                    "Unsupported media type",
                    "the request body must not be compressed: send it without a Content-Encoding",
                );
                p.accept_encoding = Some("identity");
                p
            }
            Self::BadRequest { code, detail } => Problem::new(400, code, "Bad request", detail.clone()),
            Self::PayloadTooLarge { limit_bytes } => Problem::new(
                413,
                "payload_too_large",
                "Payload too large",
                format!("the request body must not exceed {limit_bytes} bytes"),
            ),
            Self::InvalidCredentials => {
                Problem::new(401, "invalid_credentials", "Invalid credentials", "invalid email or password")
            }
            Self::InvalidToken(reason) => {
                let (code, title) = match reason {
                    TokenError::Missing => ("missing_token", "Authentication required"),
                    TokenError::Expired => ("token_expired", "Token expired"),
                    TokenError::SessionRevoked => ("session_revoked", "Session revoked"),
                    TokenError::Revoked => ("token_revoked", "Token revoked"),
                    _ => ("invalid_token", "Invalid token"),
                };
                let mut p = Problem::new(401, code, title, reason.description());
                p.www_authenticate = Some(match reason {
                    // RFC 6750 §3.1: no error code when no credentials were sent.
                    TokenError::Missing => BARE_CHALLENGE.to_string(),
                    other => format!(
                        "Bearer realm=\"portcullis\", error=\"invalid_token\", error_description=\"{}\"",
                        other.description()
                    ),
                });
                p
            }
            Self::InvalidRefreshToken => Problem::new(
                401,
                "invalid_refresh_token",
                "Invalid refresh token",
                "the refresh token is invalid, expired or revoked",
            ),
            Self::InvalidEmailSecret { code, detail } => Problem::new(401, code, "Invalid or expired", detail.clone()),
            Self::PasskeyRefused { code, detail } => Problem::new(401, code, "Passkey refused", detail.clone()),
            Self::Forbidden { code, detail } => Problem::new(403, code, "Forbidden", detail.clone()),
            Self::InsufficientRole { detail } => {
                let mut p = Problem::new(403, "insufficient_role", "Forbidden", *detail);
                // RFC 6750 §3.1: a valid token without the privileges needed.
                p.www_authenticate = Some(format!(
                    "Bearer realm=\"portcullis\", error=\"insufficient_scope\", error_description=\"{detail}\""
                ));
                p
            }
            Self::InsufficientAuthentication { mfa, max_age_secs } => {
                let seconds = |n: &u64| if *n == 1 { "1 second".to_string() } else { format!("{n} seconds") };
                let detail = match (mfa, max_age_secs) {
                    (true, Some(n)) => {
                        format!("this route needs a sign-in with a second factor within the last {}", seconds(n))
                    }
                    (true, None) => "this route needs a sign-in with a second factor".to_string(),
                    (false, Some(n)) => format!("this route needs a sign-in within the last {}", seconds(n)),
                    (false, None) => "this route needs a stronger sign-in".to_string(),
                };
                // RFC 9470 §3: the error, and `max_age` when the sign-in is too old.
                let mut challenge = format!(
                    "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", error_description=\"{detail}\""
                );
                if let Some(n) = max_age_secs {
                    challenge.push_str(&format!(", max_age=\"{n}\""));
                }
                let mut p = Problem::new(401, "insufficient_user_authentication", "Stronger sign-in required", detail);
                p.www_authenticate = Some(challenge);
                p
            }
            Self::NotFound => Problem::new(404, "not_found", "Not found", "no such resource"),
            Self::NoSuch { code, detail } => Problem::new(404, code, "Not found", detail.clone()),
            Self::MethodNotAllowed { allow } => {
                let mut p = Problem::new(
                    405,
                    "method_not_allowed",
                    "Method not allowed",
                    format!("this method is not allowed on this path; it takes {allow}"),
                );
                p.allow = Some(allow);
                p
            }
            Self::Conflict { code, detail } => Problem::new(409, code, "Conflict", detail.clone()),
            Self::RateLimited { retry_after_secs } => {
                let mut p = Problem::new(429, "rate_limited", "Too many requests", "too many attempts; retry later");
                p.retry_after_secs = Some(*retry_after_secs);
                p
            }
            Self::Unavailable { .. } => {
                let mut p = Problem::new(
                    503,
                    "service_unavailable",
                    "Service unavailable",
                    "a backing service is unavailable; retry later",
                );
                p.retry_after_secs = Some(5);
                p
            }
            Self::OriginUnreachable => {
                Problem::new(502, "origin_unreachable", "Bad gateway", "the origin could not be reached")
            }
            Self::BodyNotForwardable => Problem::new(
                400,
                "body_not_allowed",
                "Bad request",
                "a GET or HEAD request cannot carry a body through the gateway",
            ),
            Self::OriginTimeout => {
                Problem::new(504, "origin_timeout", "Gateway timeout", "the origin did not answer in time")
            }
            Self::HookUnavailable(_) => {
                let mut p = Problem::new(
                    503,
                    "hook_unavailable",
                    "Sign-in hook unavailable",
                    "the sign-in could not be approved right now; retry later",
                );
                p.retry_after_secs = Some(5);
                p
            }
            Self::OAuth { status, code, detail } => {
                let title = match status {
                    502 => "Bad gateway",
                    401 => "Sign-in refused",
                    403 => "Forbidden",
                    404 => "Not found",
                    409 => "Conflict",
                    _ => "Bad request",
                };
                Problem::new(*status, code, title, detail.clone())
            }
            Self::Misconfigured(detail) => {
                Problem::new(503, "misconfigured", "Gateway misconfigured", format!("configuration error: {detail}"))
            }
            Self::Internal(_) => Problem::new(500, "internal_error", "Internal error", "an unexpected error occurred"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_token_maps_to_401_with_bearer_challenge() {
        let p = Error::InvalidToken(TokenError::Expired).problem();
        assert_eq!(p.status, 401);
        assert_eq!(p.code, "token_expired");
        assert!(p.www_authenticate.unwrap().contains("error=\"invalid_token\""));
    }

    #[test]
    fn a_revoked_token_is_a_401_token_revoked_with_an_invalid_token_challenge() {
        let p = Error::InvalidToken(TokenError::Revoked).problem();
        assert_eq!((p.status, p.code), (401, "token_revoked"));
        assert!(p.www_authenticate.unwrap().contains("error=\"invalid_token\""));
    }

    /// RFC 9457 §4.2.1: with `type` "about:blank", the title is the status
    /// phrase — for every status a problem is made with.
    #[test]
    fn the_title_is_the_status_phrase() {
        for status in [400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 502, 503, 504] {
            assert_ne!(status_phrase(status), "Error", "{status}");
        }
        let body: serde_json::Value = serde_json::from_str(&Error::InvalidCredentials.problem().body()).unwrap();
        assert_eq!(body["title"], "Unauthorized");
        assert_eq!(body["type"], "about:blank");
        let body: serde_json::Value =
            serde_json::from_str(&Error::PayloadTooLarge { limit_bytes: 1 }.problem().body()).unwrap();
        assert_eq!(body["title"], "Content Too Large");
        let p = Error::UnsupportedContentEncoding.problem();
        assert_eq!((p.status, p.accept_encoding), (415, Some("identity")), "RFC 9110 §15.5.16");
    }

    #[test]
    fn every_401_names_its_scheme() {
        let errors = [
            Error::InvalidRefreshToken,
            Error::invalid_link(),
            Error::invalid_code(),
            Error::InvalidCredentials,
            Error::InvalidToken(TokenError::Missing),
            Error::OAuth { status: 401, code: "oauth_refused", detail: "x".into() },
            Error::PasskeyRefused { code: "invalid_signature", detail: "x".into() },
        ];
        for e in errors {
            let p = e.problem();
            assert_eq!(p.status, 401);
            assert!(p.www_authenticate.as_deref().is_some_and(|c| c.starts_with("Bearer realm=")), "{}", p.code);
        }
        assert_eq!(Error::InvalidRefreshToken.problem().www_authenticate.as_deref(), Some(BARE_CHALLENGE));
        assert_eq!(Error::NotFound.problem().www_authenticate, None);
    }

    #[test]
    fn server_side_errors_hide_their_cause() {
        let p = Error::unavailable("d1", "SQLITE_BUSY at /secret/path").problem();
        assert_eq!(p.status, 503);
        assert!(!p.detail.contains("SQLITE"));
        let p = Error::Internal("stack".into()).problem();
        assert!(!p.detail.contains("stack"));
    }

    #[test]
    fn step_up_refusals_carry_rfc_9470_challenges() {
        let p = Error::InsufficientAuthentication { mfa: true, max_age_secs: None }.problem();
        assert_eq!((p.status, p.code), (401, "insufficient_user_authentication"));
        assert_eq!(
            p.www_authenticate.as_deref(),
            Some(
                "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", \
                 error_description=\"this route needs a sign-in with a second factor\""
            )
        );
        let p = Error::InsufficientAuthentication { mfa: false, max_age_secs: Some(300) }.problem();
        assert_eq!(
            p.www_authenticate.as_deref(),
            Some(
                "Bearer realm=\"portcullis\", error=\"insufficient_user_authentication\", \
                 error_description=\"this route needs a sign-in within the last 300 seconds\", max_age=\"300\""
            )
        );
        assert!(Error::InsufficientAuthentication { mfa: true, max_age_secs: Some(60) }
            .problem()
            .detail
            .contains("second factor within the last 60 seconds"));
        assert!(Error::InsufficientAuthentication { mfa: false, max_age_secs: Some(1) }
            .problem()
            .detail
            .ends_with("within the last 1 second"));
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let p = Error::RateLimited { retry_after_secs: 42 }.problem();
        assert_eq!((p.status, p.retry_after_secs), (429, Some(42)));
    }
}
