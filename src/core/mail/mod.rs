//! Transactional emails: the four `*_requested` events become emails. This
//! module owns their settings (`EMAIL_*`, the link base URLs, the brand),
//! the templates and their languages, rendering both parts (plain text and
//! HTML, every value escaped in the HTML), and what each transport is handed:
//! an HTTP provider's request or a MIME message. Sending is the edge's job.
//!
//! # Languages
//!
//! `EMAIL_LOCALES` lists the languages emails are written in, the first
//! being the default (`en,fr,de`: all built in). An event carries the
//! recipient's `locale` when it is known — asked for in the request, or
//! stored on the account at sign-up — and the email is written in that
//! language, or in the one with the same language subtag (`fr-CA` reads
//! `fr`), else in the default one.
//!
//! # Templates
//!
//! Each email of each language is a subject, a plain-text body and,
//! optionally, an HTML body, with the placeholders `{link}` (the three link
//! emails), `{code}` (the code email), `{email}` and `{brand}` (`UI_NAME`).
//! `EMAIL_SUBJECT_<KIND>_<LOCALE>`, `EMAIL_BODY_<KIND>_<LOCALE>` and
//! `EMAIL_HTML_<KIND>_<LOCALE>` override one language's (`<LOCALE>`: the tag
//! in capitals, `-` as `_`: `FR`, `PT_BR`); without the suffix they override
//! the default language's. A language that is not built in needs every
//! subject and body. Without an HTML body the HTML part is the text body's
//! paragraphs in the brand's layout ([`html::layout`]).

mod catalog;
pub mod html;
mod kind;
pub mod mime;
pub mod template;
pub mod transport;

use url::{Host, Url};

use crate::core::email_address::Email;
use crate::core::events::Event;
use crate::core::locale::Locale;
use crate::core::outbound::{HttpReply, HttpRequest};
use crate::core::time::UnixTime;

pub use crate::core::brand::Brand;
pub use kind::EmailKind;
pub use mime::MimeEmail;
use template::{Slot, Template, Values};
use transport::http_url;
pub use transport::{ApiKey, BindingError, Provider, Transport, MAIL_BINDING};

/// Default `EMAIL_FROM`.
pub const DEFAULT_FROM: &str = "Portcullis <no-reply@portcullis.invalid>";
/// Default `EMAIL_LOCALES`: the built-in languages, English the default.
pub const DEFAULT_LOCALES: &str = "en,fr,de";
/// Most languages in `EMAIL_LOCALES`.
pub const MAX_LOCALES: usize = 20;
/// Default `EMAIL_TIMEOUT_MS`: how long an email API (or the `send_email`
/// binding) may take to answer.
pub const EMAIL_TIMEOUT_MS: u32 = 10_000;
/// Largest `EMAIL_TIMEOUT_MS`.
pub const MAX_EMAIL_TIMEOUT_MS: u32 = 30_000;
/// Longest subject accepted, in characters.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Longest plain-text body template accepted, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;
/// Longest HTML body template accepted, in characters.
pub const MAX_HTML_CHARS: usize = 50_000;

/// One email in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Texts {
    subject: Template,
    text: Template,
    /// `None`: the text body in the brand's layout.
    html: Option<Template>,
}

/// The emails of one language, in [`EmailKind::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Language {
    locale: Locale,
    texts: Vec<Texts>,
}

/// `EMAIL_FROM`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sender {
    /// The display name, unquoted, if any.
    name: Option<String>,
    /// The address, as configured.
    address: String,
}

/// The validated email settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    /// `EMAIL_TRANSPORT` and what it needs.
    pub transport: Transport,
    /// `EMAIL_FROM`, as configured.
    pub from: String,
    /// `EMAIL_TIMEOUT_MS`.
    pub timeout_ms: u32,
    sender: Sender,
    links: [Option<Url>; 4],
    brand: Brand,
    /// `EMAIL_LOCALES`; the first is the default.
    languages: Vec<Language>,
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
    /// The language it is written in (a tag of `EMAIL_LOCALES`).
    pub locale: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body: a whole document.
    pub html: String,
    /// The link the email hands over (the three link emails; the bare token
    /// when its base URL is not set), or `None`.
    pub link: Option<String>,
    /// The code it hands over (the code email), or `None`.
    pub code: Option<String>,
}

/// What a transport is handed for one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// `log`: print it.
    Log,
    /// An HTTP provider: send this request.
    Http(HttpRequest),
    /// `cloudflare`: hand this message to the `send_email` binding.
    Binding(MimeEmail),
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
             log instead, where whoever reads it can use them. Set EMAIL_TRANSPORT to cloudflare, resend, \
             postmark or sendgrid (with EMAIL_FROM, the link URLs and, for an API, EMAIL_API_KEY) before real \
             users sign in."
        ))
    }

    /// Reads the `EMAIL_*` and link settings from `var`, with the `brand`
    /// (trimmed, non-empty values). Errors name the setting.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>, brand: Brand) -> Result<Self, (String, String)> {
        let err = |name: &str, why: String| (name.to_string(), why);
        let from = var("EMAIL_FROM").unwrap_or_else(|| DEFAULT_FROM.to_string());
        let sender = parse_from(&from).map_err(|why| err("EMAIL_FROM", why))?;
        let transport = Transport::from_lookup(var)?;
        if transport != Transport::Log && var("EMAIL_FROM").is_none() {
            return Err(err("EMAIL_FROM", "missing: a transport that sends needs a sender it accepts".into()));
        }
        let timeout_ms = match var("EMAIL_TIMEOUT_MS") {
            None => EMAIL_TIMEOUT_MS,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_EMAIL_TIMEOUT_MS).contains(&n) => n,
                _ => {
                    return Err(err(
                        "EMAIL_TIMEOUT_MS",
                        format!("{v:?} must be between 1 and {MAX_EMAIL_TIMEOUT_MS} milliseconds"),
                    ))
                }
            },
        };
        let mut links: [Option<Url>; 4] = Default::default();
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
        }
        let languages = languages(var)?;
        Ok(Self { transport, from, timeout_ms, sender, links, brand, languages })
    }

    /// The language for `locale`: the one with that tag, else the first
    /// with its language subtag, else the default (`None` only for settings
    /// without languages, which [`Self::from_lookup`] never makes).
    fn language(&self, locale: Option<&str>) -> Option<&Language> {
        let wanted = locale.and_then(|l| Locale::parse(l).ok());
        let found = wanted.and_then(|w| {
            self.languages
                .iter()
                .find(|l| l.locale == w)
                .or_else(|| self.languages.iter().find(|l| l.locale.language() == w.language()))
        });
        found.or(self.languages.first())
    }

    /// The email `event` becomes, if any, in the recipient's language.
    /// `Err` when the event's address is unusable (the delivery then fails
    /// and ends in the dead-letter queue).
    pub fn render(&self, event: &Event) -> Result<Option<OutgoingEmail>, String> {
        let (kind, to, secret, locale) = match event {
            Event::MagicLinkRequested(e) => (EmailKind::MagicLink, &e.email, &e.token, &e.locale),
            Event::EmailOtpRequested(e) => (EmailKind::EmailOtp, &e.email, &e.code, &e.locale),
            Event::PasswordResetRequested(e) => (EmailKind::PasswordReset, &e.email, &e.token, &e.locale),
            Event::EmailVerificationRequested(e) => (EmailKind::EmailVerification, &e.email, &e.token, &e.locale),
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
        let language = self.language(locale.as_deref()).ok_or("EMAIL_LOCALES: no language")?;
        let texts = &language.texts[i];
        let accent = self.brand.accent.hex();
        let values = Values { link: &link, code, email: to.as_str(), brand: &self.brand.name, accent: &accent };
        let subject = texts.subject.render_text(&values);
        let html = match &texts.html {
            Some(html) => html.render_html(&values),
            None => html::layout(&self.brand, language.locale.as_str(), &subject, &texts.text.text_as_html(&values)),
        };
        Ok(Some(OutgoingEmail {
            kind,
            to: to.as_str().to_string(),
            from: self.from.clone(),
            locale: language.locale.to_string(),
            subject,
            text: texts.text.render_text(&values),
            html,
            link: kind.link_setting().map(|_| link.clone()),
            code: (kind == EmailKind::EmailOtp).then(|| code.to_string()),
        }))
    }

    /// What the transport is handed for `email`, the email of event
    /// `event_id` sent at `now`: the provider's request (`idempotency_key`
    /// is `event_id`), or the MIME message for the binding.
    pub fn dispatch(&self, email: &OutgoingEmail, event_id: &str, now: UnixTime) -> Dispatch {
        match &self.transport {
            Transport::Log => Dispatch::Log,
            Transport::Http { provider, api_url, api_key } => {
                Dispatch::Http(self.api_request(*provider, api_url, api_key, email, event_id))
            }
            Transport::Cloudflare => Dispatch::Binding(MimeEmail {
                from: self.sender.address.clone(),
                to: email.to.clone(),
                raw: mime::message(&mime::Parts {
                    from_name: self.sender.name.as_deref(),
                    from_addr: &self.sender.address,
                    to: &email.to,
                    subject: &email.subject,
                    text: &email.text,
                    html: &email.html,
                    id: &format!("{event_id}.{}", email.kind.event_type()),
                    date: now,
                }),
                timeout_ms: self.timeout_ms,
            }),
        }
    }

    /// Whether the HTTP provider's non-2xx `reply` is worth retrying
    /// ([`Provider::retryable`]).
    pub fn retryable(&self, reply: &HttpReply) -> bool {
        match &self.transport {
            Transport::Http { provider, .. } => provider.retryable(reply.status, &reply.body),
            _ => true,
        }
    }

    /// `text` (a provider's answer, for the log) without the API key, in
    /// case the provider echoed it.
    pub fn scrub(&self, text: &str) -> String {
        match &self.transport {
            Transport::Http { api_key, .. } if !api_key.0.is_empty() && text.contains(&api_key.0) => {
                text.replace(&api_key.0, crate::core::events::REDACTED)
            }
            _ => text.to_string(),
        }
    }

    fn api_request(
        &self,
        provider: Provider,
        url: &Url,
        key: &ApiKey,
        email: &OutgoingEmail,
        event_id: &str,
    ) -> HttpRequest {
        let kind = email.kind.event_type();
        let (headers, body) = match provider {
            // https://resend.com/docs/api-reference/emails/send-email
            Provider::Resend => (
                vec![
                    ("authorization".into(), format!("Bearer {}", key.0)),
                    ("idempotency-key".into(), format!("{event_id}/{kind}")),
                ],
                serde_json::json!({
                    "from": email.from,
                    "to": [email.to],
                    "subject": email.subject,
                    "text": email.text,
                    "html": email.html,
                    "tags": [{"name": "type", "value": kind}],
                }),
            ),
            // https://postmarkapp.com/developer/api/email-api
            Provider::Postmark => (
                vec![("x-postmark-server-token".into(), key.0.clone()), ("accept".into(), "application/json".into())],
                serde_json::json!({
                    "From": email.from,
                    "To": email.to,
                    "Subject": email.subject,
                    "TextBody": email.text,
                    "HtmlBody": email.html,
                    "Tag": kind,
                    "Metadata": {"event_id": event_id},
                }),
            ),
            // https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send
            Provider::Sendgrid => {
                let mut from = serde_json::json!({"email": self.sender.address});
                if let Some(name) = &self.sender.name {
                    from["name"] = name.as_str().into();
                }
                (
                    vec![("authorization".into(), format!("Bearer {}", key.0))],
                    serde_json::json!({
                        "personalizations": [{"to": [{"email": email.to}]}],
                        "from": from,
                        "subject": email.subject,
                        // text/plain first, as the API requires.
                        "content": [
                            {"type": "text/plain", "value": email.text},
                            {"type": "text/html", "value": email.html},
                        ],
                        "categories": [kind],
                        "custom_args": {"event_id": event_id},
                    }),
                )
            }
        };
        HttpRequest { url: url.as_str().to_string(), headers, body: body.to_string(), timeout_ms: self.timeout_ms }
    }
}

/// `EMAIL_LOCALES` and every template setting, as languages (the default first).
fn languages(var: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Language>, (String, String)> {
    let err = |name: &str, why: String| (name.to_string(), why);
    let list = var("EMAIL_LOCALES").unwrap_or_else(|| DEFAULT_LOCALES.to_string());
    let mut locales: Vec<Locale> = Vec::new();
    for tag in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let locale = Locale::parse(tag)
            .map_err(|_| err("EMAIL_LOCALES", format!("{tag:?} is not a language tag (e.g. en, pt-BR)")))?;
        if locales.contains(&locale) {
            return Err(err("EMAIL_LOCALES", format!("{locale} is listed twice")));
        }
        locales.push(locale);
    }
    if locales.is_empty() || locales.len() > MAX_LOCALES {
        return Err(err("EMAIL_LOCALES", format!("list 1 to {MAX_LOCALES} languages, the default first")));
    }
    let mut out = Vec::with_capacity(locales.len());
    for (n, locale) in locales.into_iter().enumerate() {
        let built_in = catalog::built_in(locale.as_str()).map(|i| &catalog::BUILT_IN[i]);
        let suffix = locale.as_str().to_ascii_uppercase().replace('-', "_");
        let mut texts = Vec::with_capacity(4);
        for kind in EmailKind::ALL {
            // The language's own setting, else (for the default language)
            // the unsuffixed one, else the built-in text.
            let setting = |part: &str| -> Option<(String, String)> {
                let own = format!("EMAIL_{part}_{}_{suffix}", kind.setting_suffix());
                if let Some(v) = var(&own) {
                    return Some((own, v));
                }
                let plain = format!("EMAIL_{part}_{}", kind.setting_suffix());
                (n == 0).then(|| var(&plain).map(|v| (plain, v))).flatten()
            };
            let required = |part: &str, built: Option<&'static str>| -> Result<(String, String), (String, String)> {
                match (setting(part), built) {
                    (Some(found), _) => Ok(found),
                    (None, Some(text)) => Ok((format!("EMAIL_{part}_{}_{suffix}", kind.setting_suffix()), text.into())),
                    (None, None) => Err(err(
                        &format!("EMAIL_{part}_{}_{suffix}", kind.setting_suffix()),
                        format!("missing: {locale} is in EMAIL_LOCALES but not built in, so each of its emails needs a subject and a body"),
                    )),
                }
            };
            let (subject_name, subject_raw) = required("SUBJECT", built_in.map(|b| b.subject(kind)))?;
            let subject = Template::parse(&subject_raw, kind).map_err(|why| err(&subject_name, why))?;
            // Checked on the parsed template: a literal `\n` is a line break by then.
            if subject_raw.chars().count() > MAX_SUBJECT_CHARS || subject.has_control() {
                return Err(err(
                    &subject_name,
                    format!("must be one line of at most {MAX_SUBJECT_CHARS} characters, without control characters"),
                ));
            }
            if subject.has(Slot::Link) {
                return Err(err(&subject_name, "{link} belongs in the body".into()));
            }
            let (body_name, body_raw) = required("BODY", built_in.map(|b| b.body(kind)))?;
            let text = body_template(&body_raw, kind, MAX_BODY_CHARS).map_err(|why| err(&body_name, why))?;
            let html = match setting("HTML") {
                None => None,
                Some((name, raw)) => Some(body_template(&raw, kind, MAX_HTML_CHARS).map_err(|why| err(&name, why))?),
            };
            texts.push(Texts { subject, text, html });
        }
        out.push(Language { locale, texts });
    }
    Ok(out)
}

/// A body template of `kind`: at most `max` characters, with its `{link}` or `{code}`.
fn body_template(raw: &str, kind: EmailKind, max: usize) -> Result<Template, String> {
    if raw.chars().count() > max {
        return Err(format!("at most {max} characters"));
    }
    let body = Template::parse(raw, kind)?;
    if !body.has(required_slot(kind)) {
        let p = if required_slot(kind) == Slot::Link { "{link}" } else { "{code}" };
        return Err(format!("must contain {p}"));
    }
    Ok(body)
}

impl OutgoingEmail {
    /// The JSON of the `portcullis.email` log line of the `log` transport:
    /// the email (its text part), and its `link` or `code` on their own
    /// (what a developer clicks or types, and what the end-to-end tests read).
    pub fn log_value(&self, event_id: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "event_id": event_id,
            "type": self.kind.event_type(),
            "to": self.to,
            "from": self.from,
            "locale": self.locale,
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

/// `addr@example.com`, `Name <addr@example.com>` or `"Name, Inc." <addr@example.com>`, one line.
fn parse_from(v: &str) -> Result<Sender, String> {
    if v.chars().any(char::is_control) || v.chars().count() > 320 {
        return Err("must be one line: addr@example.com or Name <addr@example.com>".into());
    }
    let (name, addr) = match (v.rfind('<'), v.strip_suffix('>')) {
        (Some(open), Some(inner)) => (v[..open].trim(), &inner[open + 1..]),
        (None, None) => ("", v),
        _ => return Err("must be addr@example.com or Name <addr@example.com>".into()),
    };
    Email::parse(addr).map_err(|e| e.to_string())?;
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => name.to_string(),
    };
    Ok(Sender { name: (!name.is_empty()).then_some(name), address: addr.trim().to_string() })
}

/// The placeholder every body of `kind` must contain: without it the email
/// is useless.
fn required_slot(kind: EmailKind) -> Slot {
    match kind.link_setting() {
        Some(_) => Slot::Link,
        None => Slot::Code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events;
    use base64::Engine as _;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<EmailSettings, (String, String)> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let var = move |k: &str| m.get(k).cloned();
        EmailSettings::from_lookup(&var, Brand::from_lookup(&var)?)
    }

    /// A sending transport's settings: `transport` with everything it needs, and `extra`.
    fn sending(transport: &str, extra: &[(&str, &str)]) -> EmailSettings {
        let mut pairs = vec![
            ("EMAIL_TRANSPORT", transport),
            ("EMAIL_FROM", "Acme Auth <auth@acme.example>"),
            ("MAGIC_LINK_URL", "https://acme.example/m"),
            ("PASSWORD_RESET_URL", "https://acme.example/r"),
            ("EMAIL_VERIFY_URL", "https://acme.example/v"),
        ];
        if transport != "cloudflare" {
            pairs.push(("EMAIL_API_KEY", "key_s3cret"));
        }
        pairs.extend_from_slice(extra);
        settings(&pairs).unwrap()
    }

    fn magic(email: &str, token: &str) -> Event {
        magic_in(email, token, None)
    }

    fn magic_in(email: &str, token: &str, locale: Option<&str>) -> Event {
        events::MagicLinkRequested {
            user_id: Some("u1".into()),
            email: email.into(),
            token: token.into(),
            locale: locale.map(str::to_string),
        }
        .into()
    }

    fn otp(email: &str, code: &str) -> Event {
        events::EmailOtpRequested { user_id: None, email: email.into(), code: code.into(), locale: None }.into()
    }

    fn http(d: Dispatch) -> HttpRequest {
        match d {
            Dispatch::Http(r) => r,
            other => panic!("not an HTTP request: {other:?}"),
        }
    }

    #[test]
    fn magic_link_email_carries_a_clickable_link_with_the_token() {
        let s = settings(&[("MAGIC_LINK_URL", "https://app.example/auth/magic")]).unwrap();
        let m = s.render(&magic("ada@example.com", "tok_123-_x")).unwrap().unwrap();
        assert_eq!(m.kind, EmailKind::MagicLink);
        assert_eq!(m.to, "ada@example.com");
        assert_eq!(m.from, DEFAULT_FROM);
        assert_eq!(m.locale, "en");
        assert_eq!(m.subject, "Your sign-in link");
        assert!(m.text.contains("\nhttps://app.example/auth/magic?token=tok_123-_x\n"), "{}", m.text);
        assert!(m.text.contains("sign in as ada@example.com"));
        assert!(m.html.contains("<a href=\"https://app.example/auth/magic?token=tok_123-_x\""), "{}", m.html);
    }

    #[test]
    fn link_bases_keep_their_own_query() {
        let base = Url::parse("https://app.example/verify?lang=en").unwrap();
        assert_eq!(link_with_token(&base, "abc"), "https://app.example/verify?lang=en&token=abc");
    }

    #[test]
    fn otp_email_carries_the_code_in_subject_and_both_parts() {
        let m = settings(&[]).unwrap().render(&otp("b@example.com", "042917")).unwrap().unwrap();
        assert_eq!(m.subject, "Your sign-in code: 042917");
        assert!(m.text.contains("    042917\n"));
        assert!(m.html.contains(">042917</strong>"), "{}", m.html);
    }

    #[test]
    fn reset_and_verification_emails_use_their_own_link_bases() {
        let s = settings(&[
            ("PASSWORD_RESET_URL", "https://app.example/reset"),
            ("EMAIL_VERIFY_URL", "https://app.example/verify"),
        ])
        .unwrap();
        let reset: Event = events::PasswordResetRequested {
            user_id: "u".into(),
            email: "c@example.com".into(),
            token: "r1".into(),
            locale: None,
        }
        .into();
        let verify: Event = events::EmailVerificationRequested {
            user_id: "u".into(),
            email: "c@example.com".into(),
            token: "v1".into(),
            locale: None,
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
    fn every_built_in_email_has_both_parts_in_every_language() {
        let s = sending("resend", &[]);
        for tag in ["en", "fr", "de"] {
            for event in [
                magic_in("a@example.com", "tk", Some(tag)),
                events::EmailOtpRequested {
                    user_id: None,
                    email: "a@example.com".into(),
                    code: "123456".into(),
                    locale: Some(tag.into()),
                }
                .into(),
                events::PasswordResetRequested {
                    user_id: "u".into(),
                    email: "a@example.com".into(),
                    token: "tk".into(),
                    locale: Some(tag.into()),
                }
                .into(),
                events::EmailVerificationRequested {
                    user_id: "u".into(),
                    email: "a@example.com".into(),
                    token: "tk".into(),
                    locale: Some(tag.into()),
                }
                .into(),
            ] {
                let m = s.render(&event).unwrap().unwrap();
                assert_eq!(m.locale, tag);
                let secret = m.code.clone().or(m.link.clone()).unwrap();
                assert!(m.text.contains(&secret), "{tag} {:?}: text lacks {secret}", m.kind);
                assert!(m.html.contains(&html::escape(&secret)), "{tag} {:?}: html lacks {secret}", m.kind);
                assert!(m.html.starts_with("<!DOCTYPE html>") && m.html.contains(&format!("<html lang=\"{tag}\">")));
                assert!(m.html.contains("a@example.com"), "{tag} {:?}", m.kind);
            }
        }
    }

    #[test]
    fn the_recipients_locale_picks_the_language_else_the_default() {
        let s = settings(&[("MAGIC_LINK_URL", "https://app.example/m")]).unwrap();
        let subject =
            |locale: Option<&str>| s.render(&magic_in("a@example.com", "t", locale)).unwrap().unwrap().subject;
        assert_eq!(subject(Some("fr")), "Votre lien de connexion");
        assert_eq!(subject(Some("fr-CA")), "Votre lien de connexion", "the language subtag matches");
        assert_eq!(subject(Some("de_AT")), "Ihr Anmeldelink");
        assert_eq!(subject(Some("es")), "Your sign-in link", "unknown: the default");
        assert_eq!(subject(Some("not a tag")), "Your sign-in link");
        assert_eq!(subject(None), "Your sign-in link");
        let german_first = settings(&[("EMAIL_LOCALES", "de, en")]).unwrap();
        let m = german_first.render(&magic("a@example.com", "t")).unwrap().unwrap();
        assert_eq!((m.subject.as_str(), m.locale.as_str()), ("Ihr Anmeldelink", "de"));
        let only_english = settings(&[("EMAIL_LOCALES", "en")]).unwrap();
        assert_eq!(only_english.render(&magic_in("a@example.com", "t", Some("fr"))).unwrap().unwrap().locale, "en");
    }

    #[test]
    fn templates_are_configurable_with_placeholders() {
        let s = settings(&[
            ("MAGIC_LINK_URL", "https://app.example/m"),
            ("EMAIL_SUBJECT_MAGIC_LINK", "Sign in to {brand}, {email}"),
            ("EMAIL_BODY_MAGIC_LINK", "Click {link}\\nThanks {not a placeholder}"),
            ("EMAIL_FROM", "Acme <auth@acme.example>"),
            ("UI_NAME", "Acme"),
        ])
        .unwrap();
        let m = s.render(&magic("d@example.com", "t")).unwrap().unwrap();
        assert_eq!(m.subject, "Sign in to Acme, d@example.com");
        assert_eq!(m.text, "Click https://app.example/m?token=t\nThanks {not a placeholder}");
        assert_eq!(m.from, "Acme <auth@acme.example>");
        // The HTML part follows the overridden text.
        assert!(m.html.contains("Click <a href=\"https://app.example/m?token=t\""), "{}", m.html);
        assert!(m.html.contains("<br>\nThanks {not a placeholder}"));
        // The other languages keep their built-in texts.
        let fr = s.render(&magic_in("d@example.com", "t", Some("fr"))).unwrap().unwrap();
        assert_eq!(fr.subject, "Votre lien de connexion");
    }

    #[test]
    fn html_templates_escape_every_value_and_language_settings_win() {
        let s = settings(&[
            ("MAGIC_LINK_URL", "https://app.example/m?next=/a&b=\"c\""),
            ("UI_NAME", "Acme <b>&</b>"),
            ("EMAIL_HTML_MAGIC_LINK", "<p>{brand}: <a href=\"{link}\">{email}</a></p>"),
            ("EMAIL_SUBJECT_MAGIC_LINK_FR", "Connexion à {brand}"),
            ("EMAIL_HTML_MAGIC_LINK_FR", "<p lang=fr>{link}</p>"),
            ("EMAIL_SUBJECT_MAGIC_LINK", "Sign in"),
            ("EMAIL_SUBJECT_MAGIC_LINK_EN", "Sign in, English"),
        ])
        .unwrap();
        let en = s.render(&magic("o'brien@example.com", "t")).unwrap().unwrap();
        assert_eq!(en.subject, "Sign in, English", "the language's own setting wins over the unsuffixed one");
        assert_eq!(
            en.html,
            "<p>Acme &lt;b&gt;&amp;&lt;/b&gt;: <a href=\"https://app.example/m?next=/a&amp;b=%22c%22&amp;token=t\">o&#39;brien@example.com</a></p>"
        );
        let fr = s.render(&magic_in("a@example.com", "t", Some("fr"))).unwrap().unwrap();
        assert_eq!(fr.subject, "Connexion à Acme <b>&</b>", "the subject is text: not escaped");
        assert_eq!(fr.html, "<p lang=fr>https://app.example/m?next=/a&amp;b=%22c%22&amp;token=t</p>");
        assert!(fr.text.starts_with("Bonjour,"), "the built-in French body stays");
        let de = s.render(&magic_in("a@example.com", "t", Some("de"))).unwrap().unwrap();
        assert!(de.html.contains(">Acme &lt;b&gt;&amp;&lt;/b&gt;</p>"), "the layout's brand is escaped: {}", de.html);
        assert!(!de.html.contains("<b>&</b>"));
    }

    #[test]
    fn a_language_that_is_not_built_in_needs_each_subject_and_body() {
        let (name, why) = settings(&[("EMAIL_LOCALES", "en,es")]).unwrap_err();
        assert_eq!(name, "EMAIL_SUBJECT_MAGIC_LINK_ES", "{why}");
        let mut pairs = vec![("EMAIL_LOCALES", "es,en")];
        let texts = [
            ("EMAIL_SUBJECT_MAGIC_LINK_ES", "Tu enlace"),
            ("EMAIL_BODY_MAGIC_LINK_ES", "Hola: {link}"),
            ("EMAIL_SUBJECT_EMAIL_OTP_ES", "Tu código {code}"),
            ("EMAIL_BODY_EMAIL_OTP_ES", "Código: {code}"),
            ("EMAIL_SUBJECT_PASSWORD_RESET_ES", "Restablecer"),
            ("EMAIL_BODY_PASSWORD_RESET_ES", "{link}"),
            ("EMAIL_SUBJECT_EMAIL_VERIFICATION_ES", "Confirma"),
        ];
        pairs.extend_from_slice(&texts);
        assert_eq!(settings(&pairs).unwrap_err().0, "EMAIL_BODY_EMAIL_VERIFICATION_ES");
        pairs.push(("EMAIL_BODY_EMAIL_VERIFICATION_ES", "Confirma: {link}"));
        let s = settings(&pairs).unwrap();
        let m = s.render(&magic("a@example.com", "t")).unwrap().unwrap();
        assert_eq!((m.locale.as_str(), m.subject.as_str(), m.text.as_str()), ("es", "Tu enlace", "Hola: t"));
        assert!(m.html.contains("<html lang=\"es\">"));
        assert_eq!(s.render(&magic_in("a@example.com", "t", Some("en-GB"))).unwrap().unwrap().locale, "en");
    }

    #[test]
    fn bad_templates_name_the_setting() {
        for (k, v) in [
            ("EMAIL_BODY_MAGIC_LINK", "no link here"),
            ("EMAIL_BODY_EMAIL_OTP", "no code, only {email}"),
            ("EMAIL_BODY_PASSWORD_RESET", "{link} and {code}"),
            ("EMAIL_SUBJECT_EMAIL_OTP", "Code {cod}"),
            ("EMAIL_SUBJECT_MAGIC_LINK", "two\nlines"),
            ("EMAIL_SUBJECT_MAGIC_LINK", "Hello\\nBcc: evil@x.example"),
            ("EMAIL_SUBJECT_PASSWORD_RESET", "tab\there"),
            ("EMAIL_SUBJECT_EMAIL_OTP", "{code}\u{85}"),
            ("EMAIL_SUBJECT_EMAIL_VERIFICATION", "{link}"),
            ("EMAIL_HTML_MAGIC_LINK", "<p>no link</p>"),
            ("EMAIL_BODY_MAGIC_LINK_FR", "pas de lien"),
            ("EMAIL_LOCALES", "en,english"),
            ("EMAIL_LOCALES", "en,fr,en"),
            ("EMAIL_LOCALES", " , "),
            ("EMAIL_FROM", "not an address"),
            ("EMAIL_FROM", "Acme <a@b.example"),
            ("EMAIL_TRANSPORT", "smtp"),
            ("MAGIC_LINK_URL", "javascript:alert(1)"),
            ("UI_ACCENT", "blue"),
            ("EMAIL_TIMEOUT_MS", "0"),
            ("EMAIL_TIMEOUT_MS", "30001"),
        ] {
            let (name, why) = settings(&[(k, v)]).unwrap_err();
            assert_eq!(name, k, "{k}={v}: {why}");
        }
        let why = settings(&[("EMAIL_TRANSPORT", "smtp")]).unwrap_err().1;
        assert!(why.contains("log, resend, postmark, sendgrid, cloudflare"), "{why}");
    }

    #[test]
    fn sending_transports_need_a_sender_and_link_bases_and_apis_a_key() {
        for transport in ["resend", "postmark", "sendgrid", "cloudflare"] {
            let mut full = vec![
                ("EMAIL_TRANSPORT", transport),
                ("EMAIL_FROM", "auth@acme.example"),
                ("MAGIC_LINK_URL", "https://acme.example/m"),
                ("PASSWORD_RESET_URL", "https://acme.example/r"),
                ("EMAIL_VERIFY_URL", "https://acme.example/v"),
            ];
            if transport != "cloudflare" {
                full.push(("EMAIL_API_KEY", "k_123"));
            }
            let s = settings(&full).unwrap();
            assert_eq!(s.transport.name(), transport);
            let names: Vec<&str> = full.iter().map(|(k, _)| *k).filter(|k| *k != "EMAIL_TRANSPORT").collect();
            for missing in names {
                let pairs: Vec<_> = full.iter().copied().filter(|(k, _)| *k != missing).collect();
                assert_eq!(settings(&pairs).unwrap_err().0, missing, "{transport} without {missing}");
            }
        }
    }

    #[test]
    fn resend_requests_are_authorised_idempotent_json_with_both_parts() {
        let s = sending("resend", &[("EMAIL_API_URL", "http://127.0.0.1:9/emails")]);
        assert!(!format!("{s:?}").contains("key_s3cret"));
        let m = s.render(&magic("e@example.com", "tk")).unwrap().unwrap();
        let req = http(s.dispatch(&m, "evt-1", UnixTime(0)));
        assert_eq!(req.url, "http://127.0.0.1:9/emails");
        assert_eq!(req.header("authorization"), Some("Bearer key_s3cret"));
        assert_eq!(req.header("idempotency-key"), Some("evt-1/magic_link_requested"));
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["from"], "Acme Auth <auth@acme.example>");
        assert_eq!(body["to"], serde_json::json!(["e@example.com"]));
        assert_eq!(body["subject"], "Your sign-in link");
        assert_eq!(body["text"], m.text.as_str());
        assert_eq!(body["html"], m.html.as_str());
        assert!(body["text"].as_str().unwrap().contains("https://acme.example/m?token=tk"));
        assert_eq!(settings(&[]).unwrap().dispatch(&m, "evt-1", UnixTime(0)), Dispatch::Log);
    }

    #[test]
    fn postmark_requests_follow_its_api() {
        let s = sending("postmark", &[]);
        let m = s.render(&otp("e@example.com", "123456")).unwrap().unwrap();
        let req = http(s.dispatch(&m, "evt-2", UnixTime(0)));
        assert_eq!(req.url, "https://api.postmarkapp.com/email");
        assert_eq!(req.timeout_ms, EMAIL_TIMEOUT_MS);
        let quick = sending("postmark", &[("EMAIL_TIMEOUT_MS", "750")]);
        assert_eq!(http(quick.dispatch(&m, "evt-2", UnixTime(0))).timeout_ms, 750);
        assert_eq!(req.header("x-postmark-server-token"), Some("key_s3cret"));
        assert_eq!(req.header("accept"), Some("application/json"));
        assert_eq!(req.header("authorization"), None);
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["From"], "Acme Auth <auth@acme.example>");
        assert_eq!(body["To"], "e@example.com");
        assert_eq!(body["Subject"], "Your sign-in code: 123456");
        assert_eq!(body["TextBody"], m.text.as_str());
        assert_eq!(body["HtmlBody"], m.html.as_str());
        assert_eq!(body["Tag"], "email_otp_requested");
        assert_eq!(body["Metadata"], serde_json::json!({"event_id": "evt-2"}));
    }

    #[test]
    fn sendgrid_requests_follow_its_api() {
        let s = sending("sendgrid", &[("EMAIL_FROM", "\"Acme, Inc.\" <auth@acme.example>")]);
        let m = s.render(&magic("e@example.com", "tk")).unwrap().unwrap();
        let req = http(s.dispatch(&m, "evt-3", UnixTime(0)));
        assert_eq!(req.url, "https://api.sendgrid.com/v3/mail/send");
        assert_eq!(req.header("authorization"), Some("Bearer key_s3cret"));
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["personalizations"], serde_json::json!([{"to": [{"email": "e@example.com"}]}]));
        assert_eq!(body["from"], serde_json::json!({"email": "auth@acme.example", "name": "Acme, Inc."}));
        assert_eq!(body["subject"], "Your sign-in link");
        assert_eq!(
            body["content"],
            serde_json::json!([{"type": "text/plain", "value": m.text}, {"type": "text/html", "value": m.html}])
        );
        assert_eq!(body["custom_args"], serde_json::json!({"event_id": "evt-3"}));
    }

    #[test]
    fn the_cloudflare_transport_hands_over_a_mime_message() {
        let s = sending("cloudflare", &[]);
        let m = s.render(&magic_in("e@example.com", "tk", Some("fr"))).unwrap().unwrap();
        let Dispatch::Binding(mime) = s.dispatch(&m, "evt-4", UnixTime(1_795_433_636)) else { panic!("not MIME") };
        assert_eq!((mime.from.as_str(), mime.to.as_str()), ("auth@acme.example", "e@example.com"));
        assert_eq!(mime.timeout_ms, EMAIL_TIMEOUT_MS);
        assert!(mime.raw.starts_with("From: Acme Auth <auth@acme.example>\r\nTo: e@example.com\r\n"), "{}", mime.raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode("Votre lien de connexion");
        assert!(
            mime.raw.contains(&format!("Subject: =?UTF-8?B?{b64}?=\r\n"))
                || mime.raw.contains("Subject: Votre lien de connexion\r\n")
        );
        assert!(mime.raw.contains("Message-ID: <evt-4.magic_link_requested@acme.example>\r\n"));
        assert!(
            mime.raw.contains("Content-Type: text/plain; charset=utf-8")
                && mime.raw.contains("Content-Type: text/html; charset=utf-8")
        );
        assert!(!format!("{mime:?}").contains("token"), "Debug shows no body");
    }

    #[test]
    fn provider_answers_are_scrubbed_of_the_api_key() {
        let s = sending("postmark", &[]);
        assert_eq!(s.scrub("bad token key_s3cret!"), "bad token [redacted]!");
        assert!(s.retryable(&HttpReply { status: 503, body: String::new() }));
        assert!(!s.retryable(&HttpReply { status: 422, body: "{\"ErrorCode\":406}".into() }));
    }

    #[test]
    fn without_a_base_url_the_log_transport_shows_the_bare_token() {
        let m = settings(&[]).unwrap().render(&magic("f@example.com", "bare")).unwrap().unwrap();
        assert!(m.text.contains("\nbare\n"));
        let log = m.log_value("evt");
        assert_eq!(log["to"], "f@example.com");
        assert_eq!(log["type"], "magic_link_requested");
        assert_eq!(log["link"], "bare");
        assert_eq!(log["locale"], "en");
    }

    #[test]
    fn the_printed_email_names_its_link_or_code() {
        let s = settings(&[("MAGIC_LINK_URL", "https://app.example/m")]).unwrap();
        let link = s.render(&magic("g@example.com", "tk")).unwrap().unwrap().log_value("evt-1");
        assert_eq!(link["event_id"], "evt-1");
        assert_eq!(link["link"], "https://app.example/m?token=tk");
        assert!(link.get("code").is_none());
        let code = s.render(&otp("g@example.com", "123456")).unwrap().unwrap().log_value("evt-2");
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
        assert_eq!(sending("resend", &[]).log_transport_warning("issuer", "https://auth.example.com"), None);
    }

    #[test]
    fn unusable_addresses_are_errors_not_emails() {
        assert!(settings(&[]).unwrap().render(&magic("not an address", "t")).is_err());
    }
}
