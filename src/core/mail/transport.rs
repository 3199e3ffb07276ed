//! How emails leave (`EMAIL_TRANSPORT`), and what a provider's answer means.
//!
//! Each HTTP provider gets the request its documented send API takes, built
//! here: Resend (`POST /emails`, `Authorization: Bearer`, an
//! `Idempotency-Key`), Postmark (`POST /email`, `X-Postmark-Server-Token`)
//! and SendGrid (`POST /v3/mail/send`, `Authorization: Bearer`,
//! `personalizations`). `cloudflare` hands a MIME message ([`super::mime`])
//! to the Worker's `send_email` binding `EMAIL`.
//!
//! A failure is sent to the dead-letter queue at once only when the
//! provider refused THIS message — its recipient (invalid, suppressed,
//! inactive) or its payload (malformed, too large) — so that sending it again
//! changes nothing. Everything else gets the queue's backoff (bounded by
//! `max_retries`): throttling or an outage (408, 425, 429, 5xx), no answer in
//! time, and refusals of the ACCOUNT rather than the message (a bad or
//! rotated key: 401/403; Postmark's "not allowed to send", "account pending"
//! or "may not send"; an unknown error code; a redirect or 404 from a wrong
//! `EMAIL_API_URL`), which an operator can fix while sign-in links, whose
//! tokens expire in minutes, are still worth delivering.

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
    /// retrying: anything but a refusal of this message's recipient or
    /// payload, which is, per provider:
    /// - Resend: 400 and 422 (validation errors), 409
    ///   `invalid_idempotent_request` (the key reused for another payload),
    ///   and the 403 of a test-mode account sending to an address other than
    ///   its own;
    /// - Postmark: 422 with `ErrorCode` 300 (invalid email request), 402
    ///   (invalid JSON), 403 (incompatible JSON) or 406 (inactive recipient);
    /// - SendGrid: 400 (bad request) and 413 (payload too large).
    ///
    /// A bad or rotated key (401, 403), an account that may not send
    /// (Postmark 405, 412, 413), an unknown error code, a redirect (not
    /// followed) or a 404 is retried with the backoff: it is the account or
    /// the configuration that is wrong, not the message.
    pub fn retryable(self, status: u16, body: &str) -> bool {
        !self.refuses_message(status, body)
    }

    fn refuses_message(self, status: u16, body: &str) -> bool {
        match (self, status) {
            (Self::Resend, 400 | 422) | (Self::Sendgrid, 400 | 413) => true,
            (Self::Resend, 409) => body.contains("invalid_idempotent_request"),
            (Self::Resend, 403) => body.to_ascii_lowercase().contains("your own email address"),
            (Self::Postmark, 422) => {
                matches!(postmark_error_code(body), Some(300 | 402 | 403 | 406))
            }
            _ => false,
        }
    }
}

/// The `ErrorCode` of a Postmark error body (`{"ErrorCode": 406, "Message": …}`).
fn postmark_error_code(body: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?.get("ErrorCode")?.as_u64()
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
                        // The value is not echoed: the reason reaches the public 503
                        // detail, and the URL may carry a credential.
                        Some(v) => http_url(&v).map_err(|_| {
                            err("EMAIL_API_URL", "must be an http(s) URL (the value is not shown)".into())
                        })?,
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

/// `v` as an http(s) URL with a host (a provider's API base, a link base).
pub(crate) fn http_url(v: &str) -> Result<Url, String> {
    let u = Url::parse(v).map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{v:?} must be an http(s) URL"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_timeouts_and_server_errors_are_retried() {
        for p in [Provider::Resend, Provider::Postmark, Provider::Sendgrid] {
            for status in [408, 425, 429, 500, 502, 503, 504] {
                assert!(p.retryable(status, "{}"), "{} {status}", p.name());
            }
        }
        let busy = r#"{"statusCode":409,"name":"concurrent_idempotent_requests","message":"…"}"#;
        let reused = r#"{"statusCode":409,"name":"invalid_idempotent_request","message":"…"}"#;
        assert!(Provider::Resend.retryable(409, busy));
        assert!(!Provider::Resend.retryable(409, reused));
    }

    #[test]
    fn account_refusals_are_retried_message_refusals_are_not() {
        // A bad or rotated key, a wrong URL: the account, not the message.
        for p in [Provider::Resend, Provider::Postmark, Provider::Sendgrid] {
            for status in [301, 401, 403, 404] {
                assert!(
                    p.retryable(status, r#"{"message":"API key is invalid","ErrorCode":10}"#),
                    "{} {status}",
                    p.name()
                );
            }
        }
        // The message itself: payload or recipient.
        for status in [400, 422] {
            assert!(!Provider::Resend.retryable(status, r#"{"name":"validation_error"}"#), "resend {status}");
        }
        for status in [400, 413] {
            assert!(!Provider::Sendgrid.retryable(status, r#"{"errors":[]}"#), "sendgrid {status}");
        }
        let test_mode = r#"{"statusCode":403,"name":"validation_error","message":"You can only send testing emails to your own email address (me@acme.example)."}"#;
        assert!(!Provider::Resend.retryable(403, test_mode));
    }

    #[test]
    fn postmark_422_is_classified_on_its_error_code() {
        let body = |code: u32| format!(r#"{{"ErrorCode":{code},"Message":"…"}}"#);
        // 300 invalid request, 402 invalid JSON, 403 incompatible JSON, 406 inactive recipient.
        for code in [300, 402, 403, 406] {
            assert!(!Provider::Postmark.retryable(422, &body(code)), "ErrorCode {code}");
        }
        // 405 not allowed to send, 412 account pending, 413 account may not
        // send, 400/401 sender signature missing or unconfirmed, unknown codes.
        for code in [405, 412, 413, 400, 401, 10, 9999] {
            assert!(Provider::Postmark.retryable(422, &body(code)), "ErrorCode {code}");
        }
        assert!(Provider::Postmark.retryable(422, "not json"));
        assert!(Provider::Postmark.retryable(422, r#"{"ErrorCode":"406"}"#));
        // The ErrorCode decides, not the status: 406 outside a 422 is the account.
        assert!(Provider::Postmark.retryable(401, &body(406)));
    }

    #[test]
    fn a_bad_email_api_url_is_not_echoed() {
        for v in ["ftp://user:key_s3cret@mail.example/x", "not a url key_s3cret"] {
            let vars = |k: &str| match k {
                "EMAIL_TRANSPORT" => Some("resend".to_string()),
                "EMAIL_API_URL" => Some(v.to_string()),
                "EMAIL_API_KEY" => Some("k".to_string()),
                _ => None,
            };
            let (name, why) = Transport::from_lookup(&vars).unwrap_err();
            assert_eq!(name, "EMAIL_API_URL");
            assert!(!why.contains("s3cret") && why.contains("http(s) URL"), "{why}");
        }
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
