//! How emails leave (`EMAIL_TRANSPORT`), and what a provider's answer means.
//!
//! Each HTTP provider gets the request its documented send API takes, built
//! here: Resend (`POST /emails`, `Authorization: Bearer`, an
//! `Idempotency-Key`), Postmark (`POST /email`, `X-Postmark-Server-Token`)
//! and SendGrid (`POST /v3/mail/send`, `Authorization: Bearer`,
//! `personalizations`). `cloudflare` hands a MIME message ([`super::mime`])
//! to the Worker's `send_email` binding `EMAIL`.
//!
//! A failure is either worth retrying — the provider is throttling or down
//! (408, 425, 429, 5xx), or did not answer in time — or not: the request was
//! refused as it is (a bad key, an unverified sender, a suppressed or invalid
//! recipient: any other 4xx, or a redirect), and sending it again changes
//! nothing. The first is retried with the queue's backoff; the second goes
//! to the dead-letter queue at once.

use url::Url;

/// `EMAIL_TRANSPORT=resend`: default `EMAIL_API_URL`.
pub const RESEND_API_URL: &str = "https://api.resend.com/emails";
/// `EMAIL_TRANSPORT=postmark`: default `EMAIL_API_URL`.
pub const POSTMARK_API_URL: &str = "https://api.postmarkapp.com/email";
/// `EMAIL_TRANSPORT=sendgrid`: default `EMAIL_API_URL`.
pub const SENDGRID_API_URL: &str = "https://api.sendgrid.com/v3/mail/send";
/// Name of the `send_email` binding of `EMAIL_TRANSPORT=cloudflare`.
pub const MAIL_BINDING: &str = "EMAIL";
/// Every `EMAIL_TRANSPORT` value.
pub const TRANSPORT_NAMES: [&str; 5] = ["log", "resend", "postmark", "sendgrid", "cloudflare"];

/// An HTTP email API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Resend (and Resend-compatible APIs).
    Resend,
    /// Postmark.
    Postmark,
    /// Twilio SendGrid.
    Sendgrid,
}

impl Provider {
    /// Its `EMAIL_TRANSPORT` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resend => "resend",
            Self::Postmark => "postmark",
            Self::Sendgrid => "sendgrid",
        }
    }

    /// Its send endpoint.
    pub fn default_url(self) -> &'static str {
        match self {
            Self::Resend => RESEND_API_URL,
            Self::Postmark => POSTMARK_API_URL,
            Self::Sendgrid => SENDGRID_API_URL,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Resend, Self::Postmark, Self::Sendgrid].into_iter().find(|p| p.name() == name)
    }

    /// Whether a non-2xx answer (`status`, and its `body`) is worth
    /// retrying: throttling (429), a timeout (408), too early (425), a
    /// server error (5xx) — and Resend's 409 for a request with the same
    /// idempotency key still in flight. Everything else (other 4xx: bad
    /// key, unverified sender, invalid or suppressed recipient, payload
    /// refused; and redirects, which are not followed) is refused for good.
    pub fn retryable(self, status: u16, body: &str) -> bool {
        match status {
            408 | 425 | 429 | 500..=599 => true,
            409 if self == Self::Resend => body.contains("concurrent_idempotent_requests"),
            _ => false,
        }
    }
}

/// How emails leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `log`: print each email as a `portcullis.email {json}` log line (development).
    Log,
    /// `resend`, `postmark` or `sendgrid`: `POST` to the provider's API.
    Http {
        /// Which API.
        provider: Provider,
        /// `EMAIL_API_URL`, or the provider's endpoint.
        api_url: Url,
        /// `EMAIL_API_KEY` (secret).
        api_key: ApiKey,
    },
    /// `cloudflare`: a MIME message through the `send_email` binding `EMAIL`.
    Cloudflare,
}

impl Transport {
    /// Reads `EMAIL_TRANSPORT`, `EMAIL_API_URL` and `EMAIL_API_KEY`.
    pub(crate) fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, (String, String)> {
        let err = |name: &str, why: String| (name.to_string(), why);
        let name = var("EMAIL_TRANSPORT").unwrap_or_else(|| "log".to_string());
        let transport = match name.as_str() {
            "log" => Self::Log,
            "cloudflare" => Self::Cloudflare,
            other => match Provider::from_name(other) {
                Some(provider) => {
                    let api_url = match var("EMAIL_API_URL") {
                        None => Url::parse(provider.default_url()).map_err(|e| err("EMAIL_API_URL", e.to_string()))?,
                        Some(v) => super::http_url(&v).map_err(|why| err("EMAIL_API_URL", why))?,
                    };
                    let api_key = match var("EMAIL_API_KEY") {
                        Some(k) if !k.chars().any(char::is_control) => ApiKey(k),
                        Some(_) => return Err(err("EMAIL_API_KEY", "must not contain control characters".into())),
                        None => {
                            return Err(err(
                                "EMAIL_API_KEY",
                                format!("missing: set the secret to the {other} API key for EMAIL_TRANSPORT={other}"),
                            ))
                        }
                    };
                    Self::Http { provider, api_url, api_key }
                }
                None => {
                    return Err(err(
                        "EMAIL_TRANSPORT",
                        format!("{other:?} must be one of {}", TRANSPORT_NAMES.join(", ")),
                    ))
                }
            },
        };
        Ok(transport)
    }

    /// Its `EMAIL_TRANSPORT` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Http { provider, .. } => provider.name(),
            Self::Cloudflare => "cloudflare",
        }
    }
}

/// An email API key; its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub(crate) String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// Why the `send_email` binding did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingError {
    /// No answer within the message's timeout.
    Timeout,
    /// The Worker has no `send_email` binding `EMAIL`.
    Missing,
    /// It threw: the error's `code` (Email Service codes such as
    /// `E_SENDER_NOT_VERIFIED`), if it had one, and its message.
    Refused {
        /// `error.code`.
        code: Option<String>,
        /// `error.message`.
        message: String,
    },
}

/// Email Service error codes that mean the message will never be taken as
/// it is (the Workers API's error table): payload, sender, recipient.
const REFUSED_FOR_GOOD: [&str; 9] = [
    "E_VALIDATION_ERROR",
    "E_FIELD_MISSING",
    "E_TOO_MANY_RECIPIENTS",
    "E_SENDER_NOT_VERIFIED",
    "E_RECIPIENT_NOT_ALLOWED",
    "E_RECIPIENT_SUPPRESSED",
    "E_SENDER_DOMAIN_NOT_AVAILABLE",
    "E_CONTENT_TOO_LARGE",
    "E_TOO_MANY_ATTACHMENTS",
];

/// What the binding's errors without a code say when the message itself is
/// refused: the local runtime's (`wrangler dev`) and the older Email
/// Routing binding's.
const REFUSED_MESSAGES: [&str; 6] =
    ["not allowed", "not verified", "could not parse email", "invalid message-id", "does not match", "invalid headers"];

impl BindingError {
    /// Whether sending again may work: a timeout, throttling, a daily
    /// limit, an internal or delivery error, an unknown one; and a missing
    /// binding (a deployment to fix, like any configuration). The message
    /// refused as it is (the codes of [`REFUSED_FOR_GOOD`], every
    /// `E_HEADER*` code, or a code-less error saying so) is not.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Timeout | Self::Missing => true,
            Self::Refused { code: Some(code), .. } => {
                !(REFUSED_FOR_GOOD.contains(&code.as_str()) || code.starts_with("E_HEADER"))
            }
            Self::Refused { code: None, message } => {
                let m = message.to_ascii_lowercase();
                !REFUSED_MESSAGES.iter().any(|r| m.contains(r))
            }
        }
    }
}

impl std::fmt::Display for BindingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("the send_email binding did not answer in time"),
            Self::Missing => write!(f, "the Worker has no send_email binding {MAIL_BINDING}"),
            Self::Refused { code: Some(code), message } => write!(f, "send_email refused it: {code}: {message}"),
            Self::Refused { code: None, message } => write!(f, "send_email refused it: {message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_timeouts_and_server_errors_are_retried_refusals_are_not() {
        for p in [Provider::Resend, Provider::Postmark, Provider::Sendgrid] {
            for status in [408, 425, 429, 500, 502, 503, 504] {
                assert!(p.retryable(status, "{}"), "{} {status}", p.name());
            }
            for status in [301, 400, 401, 403, 404, 413, 422] {
                assert!(!p.retryable(status, "{}"), "{} {status}", p.name());
            }
        }
        let busy = r#"{"statusCode":409,"name":"concurrent_idempotent_requests","message":"…"}"#;
        let reused = r#"{"statusCode":409,"name":"invalid_idempotent_request","message":"…"}"#;
        assert!(Provider::Resend.retryable(409, busy));
        assert!(!Provider::Resend.retryable(409, reused));
        assert!(!Provider::Postmark.retryable(409, busy));
    }

    #[test]
    fn binding_errors_are_classified_by_code_then_by_message() {
        let refused = |code: Option<&str>, message: &str| BindingError::Refused {
            code: code.map(str::to_string),
            message: message.to_string(),
        };
        for code in ["E_SENDER_NOT_VERIFIED", "E_RECIPIENT_SUPPRESSED", "E_VALIDATION_ERROR", "E_HEADER_NOT_ALLOWED"] {
            assert!(!refused(Some(code), "x").retryable(), "{code}");
        }
        for code in
            ["E_RATE_LIMIT_EXCEEDED", "E_DAILY_LIMIT_EXCEEDED", "E_INTERNAL_SERVER_ERROR", "E_DELIVERY_FAILED", "E_NEW"]
        {
            assert!(refused(Some(code), "x").retryable(), "{code}");
        }
        // wrangler dev's local binding: no codes.
        assert!(!refused(None, "email to ada@example.com not allowed").retryable());
        assert!(!refused(None, "From: header does not match mail from").retryable());
        assert!(refused(None, "Network connection lost.").retryable());
        assert!(BindingError::Timeout.retryable() && BindingError::Missing.retryable());
    }
}
