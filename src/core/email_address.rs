//! `Email`: an address parsed and normalised once, at the boundary.
//!
//! Normal form: trimmed, the local part lowercased, the domain lowercased and,
//! for internationalised domains, converted to its ASCII (punycode) form — so
//! `Ünï@BÜCHER.example` and `ünï@xn--bcher-kva.example` are one account.

use std::fmt;

use crate::core::error::Error;

/// Longest address accepted (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part accepted (RFC 5321).
pub const MAX_LOCAL_LEN: usize = 64;

/// A syntactically valid, normalised email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses and normalises `raw`, or says what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = |why: &str| Error::validation("invalid_email", format!("email: {why}"));
        if raw.len() > MAX_EMAIL_LEN * 4 {
            return Err(invalid("too long"));
        }
        // NFC first, so a decomposed `ü` (u + combining diaeresis) is the same
        // address as the precomposed one.
        let composed = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(raw);
        let s = composed.trim();
        if s.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if s.len() > MAX_EMAIL_LEN * 4 {
            return Err(invalid("too long"));
        }
        let (local, domain) = match s.rsplit_once('@') {
            Some(parts) => parts,
            None => return Err(invalid("must contain @")),
        };
        if local.is_empty() || local.chars().count() > MAX_LOCAL_LEN {
            return Err(invalid("the part before @ must have 1 to 64 characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(invalid("misplaced dot before @"));
        }
        if !local.chars().all(is_local_char) {
            return Err(invalid("contains a character not allowed before @"));
        }
        let domain = parse_domain(domain).ok_or_else(|| invalid("the domain is not valid"))?;
        let normalised = format!("{}@{}", local.to_lowercase(), domain);
        if normalised.len() > MAX_EMAIL_LEN {
            return Err(invalid("too long"));
        }
        Ok(Self(normalised))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 5322 `atext` plus dots, and non-ASCII letters and digits (RFC 6531).
fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-.".contains(c) || (!c.is_ascii() && c.is_alphanumeric())
}

/// A DNS name with at least two labels, in ASCII form (IDNA via the `url` crate).
fn parse_domain(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.starts_with('[') || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let ascii = match url::Host::parse(raw).ok()? {
        url::Host::Domain(d) => d,
        _ => return None,
    };
    let labels: Vec<&str> = ascii.split('.').collect();
    let valid = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels.last().is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()));
    valid.then_some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_case_and_whitespace() {
        assert_eq!(Email::parse("  Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
    }

    #[test]
    fn converts_idn_domains_to_ascii() {
        assert_eq!(Email::parse("user@bücher.example").unwrap().as_str(), "user@xn--bcher-kva.example");
    }

    #[test]
    fn composes_decomposed_unicode() {
        let decomposed = "u\u{0308}ser@example.com";
        assert_eq!(Email::parse(decomposed).unwrap().as_str(), "\u{00fc}ser@example.com");
    }

    #[test]
    fn accepts_plus_addressing_and_unicode_local_parts() {
        assert!(Email::parse("a+tag@example.com").is_ok());
        assert!(Email::parse("ünï@example.com").is_ok());
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a@@example.com",
            "a b@example.com",
            "a@exa mple.com",
            ".a@example.com",
            "a..b@example.com",
            "a@[127.0.0.1]",
            "a@127.0.0.1",
            "a\0@example.com",
            "<script>@example.com",
            "a'--@example.com;DROP",
            "a@-example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overlong_addresses() {
        let local = "a".repeat(65);
        assert!(Email::parse(&format!("{local}@example.com")).is_err());
        let domain = format!("{}.com", "a".repeat(250));
        assert!(Email::parse(&format!("a@{domain}")).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_output_is_stable(s in "\\PC{0,80}") {
            if let Ok(e) = Email::parse(&s) {
                prop_assert_eq!(Email::parse(e.as_str()).unwrap(), e);
            }
        }
    }
}
