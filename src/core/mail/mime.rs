//! The raw MIME message the `cloudflare` transport hands to the Worker's
//! `send_email` binding: RFC 5322 headers (`From`, `To`, `Subject` as RFC
//! 2047 encoded words when it is not plain ASCII, `Date`, `Message-ID`)
//! and a `multipart/alternative` body (RFC 2046) with the text part first
//! and the HTML part last, each UTF-8, canonical CRLF line breaks, base64.
//!
//! The boundary is `=_pc_` and 32 hex digits of the SHA-256 of the
//! message's id: 37 characters whatever the id (RFC 2046 §5.1.1 allows 1 to
//! 70), the same for the same email. It cannot occur in the parts: base64
//! lines never hold `-` or `_`, and every delimiter line starts with `--`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use sha2::{Digest as _, Sha256};

use crate::core::time::UnixTime;

/// Longest line of base64 (RFC 2045 §6.8).
const BASE64_LINE: usize = 76;
/// Most UTF-8 bytes in one encoded word: 45 bytes make 60 base64
/// characters, and `=?UTF-8?B?…?=` stays within RFC 2047's 75.
const WORD_BYTES: usize = 45;

/// A complete message for a mail binding.
#[derive(Clone, PartialEq, Eq)]
pub struct MimeEmail {
    /// The envelope sender: the bare address of `EMAIL_FROM` (the runtime
    /// checks that it is the `From` header's address).
    pub from: String,
    /// The envelope recipient.
    pub to: String,
    /// The message, headers and body, CRLF line breaks.
    pub raw: String,
    /// Give up after this long.
    pub timeout_ms: u32,
}

impl std::fmt::Debug for MimeEmail {
    // The message holds the link or code: it is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MimeEmail").field("from", &self.from).field("to", &self.to).finish_non_exhaustive()
    }
}

/// What goes into a message.
pub(crate) struct Parts<'a> {
    /// `From` as configured: `addr` or `Name <addr>`.
    pub from_name: Option<&'a str>,
    /// The sender's address.
    pub from_addr: &'a str,
    /// The recipient's address.
    pub to: &'a str,
    /// Subject line.
    pub subject: &'a str,
    /// Plain-text part.
    pub text: &'a str,
    /// HTML part.
    pub html: &'a str,
    /// Left part of the `Message-ID` (unique per email: event id and type).
    pub id: &'a str,
    /// When it is sent.
    pub date: UnixTime,
}

/// The raw message for `p`.
pub(crate) fn message(p: &Parts<'_>) -> String {
    let domain = p.from_addr.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let boundary = boundary(p.id);
    let from = match p.from_name {
        Some(name) => format!("{} <{}>", display_name(name), p.from_addr),
        None => p.from_addr.to_string(),
    };
    let date = chrono::DateTime::from_timestamp(p.date.0, 0).unwrap_or_default().to_rfc2822();
    let mut m = String::new();
    for (name, value) in [
        ("From", from.as_str()),
        ("To", p.to),
        ("Subject", &header_text(p.subject)),
        ("Date", &date),
        ("Message-ID", &format!("<{}@{domain}>", p.id)),
        ("MIME-Version", "1.0"),
        ("Content-Type", &format!("multipart/alternative; boundary=\"{boundary}\"")),
    ] {
        m.push_str(name);
        m.push_str(": ");
        m.push_str(value);
        m.push_str("\r\n");
    }
    m.push_str("\r\n");
    for (kind, body) in [("plain", p.text), ("html", p.html)] {
        m.push_str(&format!("--{boundary}\r\n"));
        m.push_str(&format!("Content-Type: text/{kind}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"));
        m.push_str(&base64_lines(&crlf(body)));
    }
    m.push_str(&format!("--{boundary}--\r\n"));
    m
}

/// The multipart boundary of the message with id `id`: 37 characters.
fn boundary(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let mut b = String::with_capacity(37);
    b.push_str("=_pc_");
    for byte in &digest[..16] {
        b.push_str(&format!("{byte:02x}"));
    }
    b
}

/// `text` with every line break as CRLF (the canonical form of `text/*`).
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n")
}

fn base64_lines(text: &str) -> String {
    let encoded = STANDARD.encode(text.as_bytes());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / BASE64_LINE * 2 + 2);
    for chunk in encoded.as_bytes().chunks(BASE64_LINE) {
        // Base64 output is ASCII: every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// Unstructured header text: as it is when printable ASCII, else RFC 2047
/// encoded words (`=?UTF-8?B?…?=`), folded between words.
fn header_text(text: &str) -> String {
    if text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) && !text.contains("=?") {
        return text.to_string();
    }
    encoded_words(text)
}

/// A display name in a `From` header: an atom sequence as it is, a quoted
/// string when it has specials, encoded words when it is not ASCII.
fn display_name(name: &str) -> String {
    if !name.chars().all(|c| c == ' ' || c.is_ascii_graphic()) || name.contains("=?") {
        return encoded_words(name);
    }
    const SPECIALS: &[char] = &['(', ')', '<', '>', '[', ']', ':', ';', '@', '\\', ',', '.', '"'];
    if name.contains(SPECIALS) {
        return format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
    }
    name.to_string()
}

fn encoded_words(text: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > WORD_BYTES {
            words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(subject: &'a str, from_name: Option<&'a str>) -> Parts<'a> {
        Parts {
            from_name,
            from_addr: "auth@acme.example",
            to: "ada@example.com",
            subject,
            text: "Bonjour,\n\nvoici {lien}: é\n",
            html: "<p>é</p>",
            id: "0b8e-42.magic_link_requested",
            date: UnixTime(1_795_433_636),
        }
    }

    /// The headers and each part's decoded body.
    fn split(raw: &str) -> (String, Vec<(String, String)>) {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let boundary = head.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let mut parts = Vec::new();
        for section in body.split(&format!("--{boundary}")).skip(1) {
            if section.starts_with("--") {
                assert_eq!(section, "--\r\n", "nothing after the closing delimiter");
                continue;
            }
            let (h, b) = section.trim_start_matches("\r\n").split_once("\r\n\r\n").unwrap();
            assert!(b.lines().all(|l| l.len() <= BASE64_LINE));
            let bytes = STANDARD.decode(b.replace("\r\n", "")).unwrap();
            parts.push((h.to_string(), String::from_utf8(bytes).unwrap()));
        }
        (head.to_string(), parts)
    }

    #[test]
    fn a_message_is_multipart_alternative_text_then_html_with_crlf() {
        let raw = message(&parts("Your sign-in link", Some("Acme")));
        assert!(!raw.replace("\r\n", "").contains('\n'), "every line break is CRLF");
        let (head, parts) = split(&raw);
        assert!(
            head.starts_with("From: Acme <auth@acme.example>\r\nTo: ada@example.com\r\nSubject: Your sign-in link\r\n")
        );
        assert!(head.contains("\r\nDate: Mon, 23 Nov 2026 11:33:56 +0000\r\n"), "{head}");
        assert!(head.contains("\r\nMessage-ID: <0b8e-42.magic_link_requested@acme.example>\r\n"));
        assert!(head.contains("\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"=_pc_"));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64");
        assert_eq!(parts[0].1, "Bonjour,\r\n\r\nvoici {lien}: é\r\n");
        assert_eq!(parts[1].0, "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64");
        assert_eq!(parts[1].1, "<p>é</p>");
    }

    #[test]
    fn subjects_and_names_that_are_not_ascii_are_encoded_words() {
        let subject = "Réinitialisez votre mot de passe — c'est très très très très urgent";
        let raw = message(&parts(subject, Some("Équipe Acme")));
        let head = raw.split("\r\n\r\n").next().unwrap();
        let from = head.lines().next().unwrap();
        assert_eq!(from, format!("From: =?UTF-8?B?{}?= <auth@acme.example>", STANDARD.encode("Équipe Acme")));
        let subject_field: String =
            head.split("\r\nSubject: ").nth(1).unwrap().split("\r\nDate:").next().unwrap().to_string();
        let mut decoded = Vec::new();
        for word in subject_field.split("\r\n ") {
            assert!(word.len() <= 75, "{word}");
            let b64 = word.strip_prefix("=?UTF-8?B?").unwrap().strip_suffix("?=").unwrap();
            decoded.extend(STANDARD.decode(b64).unwrap());
        }
        assert!(subject_field.contains("\r\n "), "a long subject is folded");
        assert_eq!(String::from_utf8(decoded).unwrap(), subject);
    }

    #[test]
    fn the_boundary_fits_rfc_2046_whatever_the_id() {
        // A real event id (a UUID) and the longest event type.
        let id = "0b8e4c2a-1d3f-4e5a-9b7c-6d8e9f0a1b2c.email_verification_requested";
        let raw = message(&Parts { id, ..parts("s", None) });
        let head = raw.split("\r\n\r\n").next().unwrap();
        let b = head.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!((1..=70).contains(&b.len()), "boundary is {} characters: {b}", b.len());
        // bchars (RFC 2046 §5.1.1), and no space at its end.
        assert!(b.chars().all(|c| c.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(c)), "{b}");
        assert_eq!(b, boundary(id), "the same email, the same boundary");
        assert_ne!(b, boundary("another.email_verification_requested"));
        assert_eq!(boundary("x").len(), boundary(&"x".repeat(500)).len());
        assert_eq!(split(&raw).1.len(), 2);
    }

    #[test]
    fn display_names_with_specials_are_quoted() {
        assert_eq!(display_name("Acme, Inc. \"HQ\""), "\"Acme, Inc. \\\"HQ\\\"\"");
        assert_eq!(display_name("Acme Auth"), "Acme Auth");
        assert_eq!(header_text("a =?x?= b"), encoded_words("a =?x?= b"));
    }
}
