//! Transactional emails: the four `*_requested` events become emails. This
//! module owns their settings (`EMAIL_*`, the link base URLs), the templates
//! with `{link}`, `{code}` and `{email}` placeholders, rendering, and the
//! request sent to an HTTP email API. Sending is the edge's job.

use url::{Host, Url};

use crate::core::email::Email;
use crate::core::events::Event;
use crate::core::outbound::HttpRequest;

/// Default `EMAIL_FROM`.
pub const DEFAULT_FROM: &str = "Portcullis <no-reply@portcullis.invalid>";
/// Default `EMAIL_API_URL` (Resend's send endpoint).
pub const RESEND_API_URL: &str = "https://api.resend.com/emails";
/// How long an email API may take to answer.
pub const EMAIL_API_TIMEOUT_MS: u32 = 10_000;
/// Longest subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest body template accepted, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;

/// The emails Portcullis sends, one per `*_requested` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailKind {
    /// `magic_link_requested`: a sign-in link.
    MagicLink,
    /// `email_otp_requested`: a sign-in code.
    EmailOtp,
    /// `password_reset_requested`: a password-reset link.
    PasswordReset,
    /// `email_verification_requested`: an address-confirmation link.
    EmailVerification,
}

impl EmailKind {
    /// Every kind.
    pub const ALL: [EmailKind; 4] = [Self::MagicLink, Self::EmailOtp, Self::PasswordReset, Self::EmailVerification];

    /// The suffix of its `EMAIL_SUBJECT_*` / `EMAIL_BODY_*` settings.
    pub fn setting_suffix(self) -> &'static str {
        match self {
            Self::MagicLink => "MAGIC_LINK",
            Self::EmailOtp => "EMAIL_OTP",
            Self::PasswordReset => "PASSWORD_RESET",
            Self::EmailVerification => "EMAIL_VERIFICATION",
        }
    }

    /// The setting holding the base URL of its link, if it carries a link.
    pub fn link_setting(self) -> Option<&'static str> {
        match self {
            Self::MagicLink => Some("MAGIC_LINK_URL"),
            Self::EmailOtp => None,
            Self::PasswordReset => Some("PASSWORD_RESET_URL"),
            Self::EmailVerification => Some("EMAIL_VERIFY_URL"),
        }
    }

    /// The event type it is sent for.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::MagicLink => "magic_link_requested",
            Self::EmailOtp => "email_otp_requested",
            Self::PasswordReset => "password_reset_requested",
            Self::EmailVerification => "email_verification_requested",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::MagicLink => 0,
            Self::EmailOtp => 1,
            Self::PasswordReset => 2,
            Self::EmailVerification => 3,
        }
    }

    /// The placeholder the body must contain: without it the email is useless.
    fn required(self) -> Placeholder {
        match self.link_setting() {
            Some(_) => Placeholder::Link,
            None => Placeholder::Code,
        }
    }

    fn default_subject(self) -> &'static str {
        match self {
            Self::MagicLink => "Your sign-in link",
            Self::EmailOtp => "Your sign-in code: {code}",
            Self::PasswordReset => "Reset your password",
            Self::EmailVerification => "Confirm your email address",
        }
    }

    fn default_body(self) -> &'static str {
        match self {
            Self::MagicLink => {
                "Hello,\n\nOpen this link to sign in as {email}:\n\n{link}\n\n\
                 The link works once and expires soon. If you did not ask for it, you can ignore this email.\n"
            }
            Self::EmailOtp => {
                "Hello,\n\nYour sign-in code for {email} is:\n\n    {code}\n\n\
                 It works once and expires soon. If you did not ask for it, you can ignore this email.\n"
            }
            Self::PasswordReset => {
                "Hello,\n\nSomeone asked to reset the password of {email}. To choose a new one, open:\n\n{link}\n\n\
                 The link works once and expires soon. If it was not you, ignore this email: your password stays as it is.\n"
            }
            Self::EmailVerification => {
                "Hello,\n\nPlease confirm that {email} is your address by opening:\n\n{link}\n\n\
                 Opened where you are signed in to this account, it keeps your password and sessions as they \
                 are. Opened anywhere else, it makes the account yours afresh: any password set on it is removed \
                 and every session signed out, so that nobody who set the account up before you keeps a way in; \
                 you then sign in with a sign-in link or code, or choose a new password with a password reset. \
                 If you did not sign up yourself, opening it makes the account yours; or ignore this email.\n"
            }
        }
    }
}

/// What fills a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    Link,
    Code,
    Email,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Placeholder),
}

/// A parsed template: text with `{link}`, `{code}` or `{email}` slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `raw` for an email of `kind`. A `{name}` made of lowercase
    /// letters and `_` must be a placeholder the kind knows; other braces are
    /// text. A literal `\n` (as typed on a command line) is a line break.
    fn parse(raw: &str, kind: EmailKind) -> Result<Self, String> {
        let raw = raw.replace("\\n", "\n");
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = raw.as_str();
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                let slot = match &after[..name_len] {
                    "link" if kind.link_setting().is_some() => Placeholder::Link,
                    "code" if kind == EmailKind::EmailOtp => Placeholder::Code,
                    "email" => Placeholder::Email,
                    other => {
                        let known = if kind == EmailKind::EmailOtp { "{code}, {email}" } else { "{link}, {email}" };
                        return Err(format!("unknown placeholder {{{other}}}; this email knows {known}"));
                    }
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Slot(slot));
                rest = &after[name_len + 1..];
            } else {
                text.push('{');
                rest = after;
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self(pieces))
    }

    fn has(&self, p: Placeholder) -> bool {
        self.0.contains(&Piece::Slot(p))
    }

    fn render(&self, link: &str, code: &str, email: &str) -> String {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Text(t) => t.as_str(),
                Piece::Slot(Placeholder::Link) => link,
                Piece::Slot(Placeholder::Code) => code,
                Piece::Slot(Placeholder::Email) => email,
            })
            .collect()
    }
}

/// How emails leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `log`: print each email as a `portcullis.email {json}` log line (development).
    Log,
    /// `resend`: `POST` JSON to a Resend-compatible API.
    Resend {
        /// `EMAIL_API_URL`.
        api_url: Url,
        /// `EMAIL_API_KEY` (secret).
        api_key: ApiKey,
    },
}

/// An email API key; its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// The validated email settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// `EMAIL_TRANSPORT` and what it needs.
    pub transport: Transport,
    /// `EMAIL_FROM`.
    pub from: String,
    links: [Option<Url>; 4],
    subjects: [Template; 4],
    bodies: [Template; 4],
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// Which email.
    pub kind: EmailKind,
    /// Recipient (normalised).
    pub to: String,
    /// Sender.
    pub from: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// The link the email hands over (the three link emails; the bare token
    /// when its base URL is not set), or `None`.
    pub link: Option<String>,
    /// The code it hands over (the code email), or `None`.
    pub code: Option<String>,
}

impl EmailSettings {
    /// The warning a deployment must not miss, or `None`. With the `log`
    /// transport no email is sent: each one — its sign-in link, code, reset
    /// or verification link — is printed to the log, which is what a
    /// developer wants and what a deployment must not do. `url` is where the
    /// deployment is reached, named in the warning as `seen_as`: its issuer
    /// (`ISSUER`, or the request's origin without it), or a request's origin;
    /// a loopback one (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`) is a
    /// developer's machine, anything else (also an unparsable one) is not.
    pub fn log_transport_warning(&self, seen_as: &str, url: &str) -> Option<String> {
        if self.transport != Transport::Log || is_loopback_url(url) {
            return None;
        }
        Some(format!(
            "EMAIL_TRANSPORT is `log` on a deployment whose {seen_as} {url} is not a loopback URL: no email is \
             sent, and every magic link, sign-in code, password-reset and verification link is printed to this \
             log instead, where whoever reads it can use them. Set EMAIL_TRANSPORT=resend (with EMAIL_API_KEY, \
             EMAIL_FROM and the link URLs) before real users sign in."
        ))
    }

    /// Reads the `EMAIL_*` and link settings from `var` (trimmed, non-empty
    /// values). Errors name the setting.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, (String, String)> {
        let err = |name: &str, why: String| (name.to_string(), why);
        let from = match var("EMAIL_FROM") {
            None => DEFAULT_FROM.to_string(),
            Some(v) => parse_from(&v).map_err(|why| err("EMAIL_FROM", why))?,
        };
        let transport = match var("EMAIL_TRANSPORT").as_deref().unwrap_or("log") {
            "log" => Transport::Log,
            "resend" => {
                let api_url = match var("EMAIL_API_URL") {
                    None => Url::parse(RESEND_API_URL).map_err(|e| err("EMAIL_API_URL", e.to_string()))?,
                    Some(v) => http_url(&v).map_err(|why| err("EMAIL_API_URL", why))?,
                };
                let api_key = match var("EMAIL_API_KEY") {
                    Some(k) if !k.chars().any(char::is_control) => ApiKey(k),
                    Some(_) => return Err(err("EMAIL_API_KEY", "must not contain control characters".into())),
                    None => {
                        return Err(err("EMAIL_API_KEY", "missing: set the secret for EMAIL_TRANSPORT=resend".into()))
                    }
                };
                if var("EMAIL_FROM").is_none() {
                    return Err(err(
                        "EMAIL_FROM",
                        "missing: an HTTP email transport needs a sender the API accepts".into(),
                    ));
                }
                Transport::Resend { api_url, api_key }
            }
            other => return Err(err("EMAIL_TRANSPORT", format!("{other:?} must be log or resend"))),
        };
        let mut links: [Option<Url>; 4] = Default::default();
        let mut subjects: Vec<Template> = Vec::with_capacity(4);
        let mut bodies: Vec<Template> = Vec::with_capacity(4);
        for kind in EmailKind::ALL {
            if let Some(name) = kind.link_setting() {
                links[kind.index()] = match var(name) {
                    Some(v) => Some(http_url(&v).map_err(|why| err(name, why))?),
                    None if transport != Transport::Log => {
                        return Err(err(
                            name,
                            "missing: the page users open from the email (the token is appended as ?token=)".into(),
                        ))
                    }
                    None => None,
                };
            }
            let subject_name = format!("EMAIL_SUBJECT_{}", kind.setting_suffix());
            let subject_raw = var(&subject_name).unwrap_or_else(|| kind.default_subject().to_string());
            if subject_raw.chars().count() > MAX_SUBJECT_CHARS || subject_raw.contains(['\r', '\n']) {
                return Err(err(&subject_name, format!("must be one line of at most {MAX_SUBJECT_CHARS} characters")));
            }
            let subject = Template::parse(&subject_raw, kind).map_err(|why| err(&subject_name, why))?;
            if subject.has(Placeholder::Link) {
                return Err(err(&subject_name, "{link} belongs in the body".into()));
            }
            let body_name = format!("EMAIL_BODY_{}", kind.setting_suffix());
            let body_raw = var(&body_name).unwrap_or_else(|| kind.default_body().to_string());
            if body_raw.chars().count() > MAX_BODY_CHARS {
                return Err(err(&body_name, format!("at most {MAX_BODY_CHARS} characters")));
            }
            let body = Template::parse(&body_raw, kind).map_err(|why| err(&body_name, why))?;
            if !body.has(kind.required()) {
                let p = if kind.required() == Placeholder::Link { "{link}" } else { "{code}" };
                return Err(err(&body_name, format!("must contain {p}")));
            }
            subjects.push(subject);
            bodies.push(body);
        }
        let (Ok(subjects), Ok(bodies)) = (subjects.try_into(), bodies.try_into()) else {
            return Err(err("EMAIL_BODY_*", "internal: template count".into()));
        };
        Ok(Self { transport, from, links, subjects, bodies })
    }

    /// The email `event` becomes, if any. `Err` when the event's address is
    /// unusable (the delivery then fails and ends in the dead-letter queue).
    pub fn render(&self, event: &Event) -> Result<Option<OutgoingEmail>, String> {
        let (kind, to, secret) = match event {
            Event::MagicLinkRequested(e) => (EmailKind::MagicLink, &e.email, &e.token),
            Event::EmailOtpRequested(e) => (EmailKind::EmailOtp, &e.email, &e.code),
            Event::PasswordResetRequested(e) => (EmailKind::PasswordReset, &e.email, &e.token),
            Event::EmailVerificationRequested(e) => (EmailKind::EmailVerification, &e.email, &e.token),
            _ => return Ok(None),
        };
        let to = Email::parse(to).map_err(|e| e.to_string())?;
        let i = kind.index();
        let link = match (&self.links[i], kind.link_setting()) {
            (_, None) => String::new(),
            (Some(base), Some(_)) => link_with_token(base, secret),
            // Only the log transport may run without a base URL: show the bare token.
            (None, Some(_)) => secret.clone(),
        };
        let code = if kind == EmailKind::EmailOtp { secret.as_str() } else { "" };
        Ok(Some(OutgoingEmail {
            kind,
            to: to.as_str().to_string(),
            from: self.from.clone(),
            subject: self.subjects[i].render(&link, code, to.as_str()),
            text: self.bodies[i].render(&link, code, to.as_str()),
            link: kind.link_setting().map(|_| link.clone()),
            code: (kind == EmailKind::EmailOtp).then(|| code.to_string()),
        }))
    }

    /// The API call that sends `email` through an HTTP transport (`None` for
    /// `log`). `idempotency_key` (the event id) lets the API drop a repeat.
    pub fn api_request(&self, email: &OutgoingEmail, idempotency_key: &str) -> Option<HttpRequest> {
        match &self.transport {
            Transport::Log => None,
            Transport::Resend { api_url, api_key } => Some(HttpRequest {
                url: api_url.as_str().to_string(),
                headers: vec![
                    ("authorization".into(), format!("Bearer {}", api_key.0)),
                    ("idempotency-key".into(), format!("{idempotency_key}/{}", email.kind.event_type())),
                ],
                body: serde_json::json!({
                    "from": email.from,
                    "to": [email.to],
                    "subject": email.subject,
                    "text": email.text,
                })
                .to_string(),
                timeout_ms: EMAIL_API_TIMEOUT_MS,
            }),
        }
    }
}

impl OutgoingEmail {
    /// The JSON of the `portcullis.email` log line of the `log` transport:
    /// the email, and its `link` or `code` on their own (what a developer
    /// clicks or types, and what the end-to-end tests read).
    pub fn log_value(&self, event_id: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event_id": event_id,
            "type": self.kind.event_type(),
            "to": self.to,
            "from": self.from,
            "subject": self.subject,
            "text": self.text,
        });
        if let Some(link) = &self.link {
            v["link"] = link.as_str().into();
        }
        if let Some(code) = &self.code {
            v["code"] = code.as_str().into();
        }
        v
    }
}

/// Whether `url` names this machine: `localhost` or a `*.localhost` name
/// (RFC 6761), 127.0.0.0/8 or `[::1]`.
fn is_loopback_url(url: &str) -> bool {
    match Url::parse(url).ok().as_ref().and_then(Url::host) {
        Some(Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `base` with `token` appended as the `token` query parameter.
pub fn link_with_token(base: &Url, token: &str) -> String {
    let mut url = base.clone();
    url.query_pairs_mut().append_pair("token", token);
    url.to_string()
}

fn http_url(v: &str) -> Result<Url, String> {
    let u = Url::parse(v).map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{v:?} must be an http(s) URL"));
    }
    Ok(u)
}

/// `addr@example.com` or `Name <addr@example.com>`, one line.
fn parse_from(v: &str) -> Result<String, String> {
    if v.chars().any(char::is_control) || v.chars().count() > 320 {
        return Err("must be one line: addr@example.com or Name <addr@example.com>".into());
    }
    let addr = match (v.rfind('<'), v.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        (None, None) => v,
        _ => return Err("must be addr@example.com or Name <addr@example.com>".into()),
    };
    Email::parse(addr).map_err(|e| e.to_string())?;
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<EmailSettings, (String, String)> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        EmailSettings::from_lookup(&move |k: &str| m.get(k).cloned())
    }

    fn magic(email: &str, token: &str) -> Event {
        events::MagicLinkRequested { user_id: Some("u1".into()), email: email.into(), token: token.into() }.into()
    }

    #[test]
    fn magic_link_email_carries_a_clickable_link_with_the_token() {
        let s = settings(&[("MAGIC_LINK_URL", "https://app.example/auth/magic")]).unwrap();
        let m = s.render(&magic("ada@example.com", "tok_123-_x")).unwrap().unwrap();
        assert_eq!(m.kind, EmailKind::MagicLink);
        assert_eq!(m.to, "ada@example.com");
        assert_eq!(m.from, DEFAULT_FROM);
        assert_eq!(m.subject, "Your sign-in link");
        assert!(m.text.contains("\nhttps://app.example/auth/magic?token=tok_123-_x\n"), "{}", m.text);
        assert!(m.text.contains("sign in as ada@example.com"));
    }

    #[test]
    fn link_bases_keep_their_own_query() {
        let base = Url::parse("https://app.example/verify?lang=en").unwrap();
        assert_eq!(link_with_token(&base, "abc"), "https://app.example/verify?lang=en&token=abc");
    }

    #[test]
    fn otp_email_carries_the_code_in_subject_and_body() {
        let s = settings(&[]).unwrap();
        let e: Event =
            events::EmailOtpRequested { user_id: None, email: "b@example.com".into(), code: "042917".into() }.into();
        let m = s.render(&e).unwrap().unwrap();
        assert_eq!(m.subject, "Your sign-in code: 042917");
        assert!(m.text.contains("    042917\n"));
    }

    #[test]
    fn reset_and_verification_emails_use_their_own_link_bases() {
        let s = settings(&[
            ("PASSWORD_RESET_URL", "https://app.example/reset"),
            ("EMAIL_VERIFY_URL", "https://app.example/verify"),
        ])
        .unwrap();
        let reset: Event =
            events::PasswordResetRequested { user_id: "u".into(), email: "c@example.com".into(), token: "r1".into() }
                .into();
        let verify: Event = events::EmailVerificationRequested {
            user_id: "u".into(),
            email: "c@example.com".into(),
            token: "v1".into(),
        }
        .into();
        let r = s.render(&reset).unwrap().unwrap();
        let v = s.render(&verify).unwrap().unwrap();
        assert_eq!((r.subject.as_str(), v.subject.as_str()), ("Reset your password", "Confirm your email address"));
        assert!(r.text.contains("https://app.example/reset?token=r1"));
        assert!(v.text.contains("https://app.example/verify?token=v1"));
    }

    #[test]
    fn other_events_are_not_emails() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.render(&events::Logout { user_id: "u".into() }.into()).unwrap(), None);
    }

    #[test]
    fn templates_are_configurable_with_placeholders() {
        let s = settings(&[
            ("MAGIC_LINK_URL", "https://app.example/m"),
            ("EMAIL_SUBJECT_MAGIC_LINK", "Sign in to Acme, {email}"),
            ("EMAIL_BODY_MAGIC_LINK", "Click {link}\\nThanks {not a placeholder}"),
            ("EMAIL_FROM", "Acme <auth@acme.example>"),
        ])
        .unwrap();
        let m = s.render(&magic("d@example.com", "t")).unwrap().unwrap();
        assert_eq!(m.subject, "Sign in to Acme, d@example.com");
        assert_eq!(m.text, "Click https://app.example/m?token=t\nThanks {not a placeholder}");
        assert_eq!(m.from, "Acme <auth@acme.example>");
    }

    #[test]
    fn bad_templates_name_the_setting() {
        for (k, v) in [
            ("EMAIL_BODY_MAGIC_LINK", "no link here"),
            ("EMAIL_BODY_EMAIL_OTP", "no code, only {email}"),
            ("EMAIL_BODY_PASSWORD_RESET", "{link} and {code}"),
            ("EMAIL_SUBJECT_EMAIL_OTP", "Code {cod}"),
            ("EMAIL_SUBJECT_MAGIC_LINK", "two\nlines"),
            ("EMAIL_SUBJECT_EMAIL_VERIFICATION", "{link}"),
            ("EMAIL_FROM", "not an address"),
            ("EMAIL_FROM", "Acme <a@b.example"),
            ("EMAIL_TRANSPORT", "smtp"),
            ("MAGIC_LINK_URL", "javascript:alert(1)"),
        ] {
            let (name, why) = settings(&[(k, v)]).unwrap_err();
            assert_eq!(name, k, "{k}={v}: {why}");
        }
    }

    #[test]
    fn the_resend_transport_needs_a_key_a_sender_and_link_bases() {
        let full = [
            ("EMAIL_TRANSPORT", "resend"),
            ("EMAIL_API_KEY", "re_123"),
            ("EMAIL_FROM", "auth@acme.example"),
            ("MAGIC_LINK_URL", "https://acme.example/m"),
            ("PASSWORD_RESET_URL", "https://acme.example/r"),
            ("EMAIL_VERIFY_URL", "https://acme.example/v"),
        ];
        assert!(settings(&full).is_ok());
        for missing in ["EMAIL_API_KEY", "EMAIL_FROM", "MAGIC_LINK_URL", "PASSWORD_RESET_URL", "EMAIL_VERIFY_URL"] {
            let pairs: Vec<_> = full.iter().copied().filter(|(k, _)| *k != missing).collect();
            assert_eq!(settings(&pairs).unwrap_err().0, missing);
        }
    }

    #[test]
    fn resend_requests_are_authorised_idempotent_json() {
        let s = settings(&[
            ("EMAIL_TRANSPORT", "resend"),
            ("EMAIL_API_KEY", "re_secret"),
            ("EMAIL_API_URL", "http://127.0.0.1:9/emails"),
            ("EMAIL_FROM", "auth@acme.example"),
            ("MAGIC_LINK_URL", "https://acme.example/m"),
            ("PASSWORD_RESET_URL", "https://acme.example/r"),
            ("EMAIL_VERIFY_URL", "https://acme.example/v"),
        ])
        .unwrap();
        assert!(!format!("{:?}", s.transport).contains("re_secret"));
        let m = s.render(&magic("e@example.com", "tk")).unwrap().unwrap();
        let req = s.api_request(&m, "evt-1").unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/emails");
        assert_eq!(req.header("authorization"), Some("Bearer re_secret"));
        assert_eq!(req.header("idempotency-key"), Some("evt-1/magic_link_requested"));
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["from"], "auth@acme.example");
        assert_eq!(body["to"], serde_json::json!(["e@example.com"]));
        assert_eq!(body["subject"], "Your sign-in link");
        assert!(body["text"].as_str().unwrap().contains("https://acme.example/m?token=tk"));
        assert_eq!(settings(&[]).unwrap().api_request(&m, "evt-1"), None);
    }

    #[test]
    fn without_a_base_url_the_log_transport_shows_the_bare_token() {
        let m = settings(&[]).unwrap().render(&magic("f@example.com", "bare")).unwrap().unwrap();
        assert!(m.text.contains("\nbare\n"));
        let log = m.log_value("evt");
        assert_eq!(log["to"], "f@example.com");
        assert_eq!(log["type"], "magic_link_requested");
        assert_eq!(log["link"], "bare");
    }

    #[test]
    fn the_printed_email_names_its_link_or_code() {
        let s = settings(&[("MAGIC_LINK_URL", "https://app.example/m")]).unwrap();
        let link = s.render(&magic("g@example.com", "tk")).unwrap().unwrap().log_value("evt-1");
        assert_eq!(link["event_id"], "evt-1");
        assert_eq!(link["link"], "https://app.example/m?token=tk");
        assert!(link.get("code").is_none());
        let e: Event =
            events::EmailOtpRequested { user_id: None, email: "g@example.com".into(), code: "123456".into() }.into();
        let code = s.render(&e).unwrap().unwrap().log_value("evt-2");
        assert_eq!(code["code"], "123456");
        assert!(code.get("link").is_none());
    }

    #[test]
    fn the_log_transport_is_flagged_for_an_issuer_that_is_not_loopback() {
        let log = settings(&[]).unwrap();
        for issuer in ["https://auth.example.com", "http://192.168.1.20:8787", "http://[2001:db8::1]", "not a url"] {
            let w = log.log_transport_warning("issuer", issuer).unwrap_or_else(|| panic!("{issuer}"));
            assert!(w.contains("EMAIL_TRANSPORT") && w.contains(issuer), "{w}");
        }
        for issuer in [
            "http://127.0.0.1:8787",
            "http://127.9.9.9",
            "http://localhost:8787",
            "http://LOCALHOST",
            "http://app.localhost",
            "http://[::1]:8787",
        ] {
            assert_eq!(log.log_transport_warning("issuer", issuer), None, "{issuer}");
        }
        let resend = settings(&[
            ("EMAIL_TRANSPORT", "resend"),
            ("EMAIL_API_KEY", "re_1"),
            ("EMAIL_FROM", "auth@acme.example"),
            ("MAGIC_LINK_URL", "https://acme.example/m"),
            ("PASSWORD_RESET_URL", "https://acme.example/r"),
            ("EMAIL_VERIFY_URL", "https://acme.example/v"),
        ])
        .unwrap();
        assert_eq!(resend.log_transport_warning("issuer", "https://auth.example.com"), None);
    }

    #[test]
    fn unusable_addresses_are_errors_not_emails() {
        assert!(settings(&[]).unwrap().render(&magic("not an address", "t")).is_err());
    }
}
