//! `Locale`: a user's language, a BCP 47 language tag parsed and normalised
//! once, at the boundary (a `locale` in a request body, `EMAIL_LOCALES`).
//!
//! Only the tag's shape is checked (RFC 5646 §2.1: a 2–3 letter ISO 639
//! language, then subtags of 1–8 letters or digits), not whether the
//! language exists: an unknown language is simply one no template speaks,
//! and the emails fall back to the default. Normal form follows RFC 5646 §2.1.1: the language
//! lowercase, a 4-letter script titlecase, a 2-letter region uppercase, the
//! rest (and everything after a singleton such as `u-` or `x-`) lowercase; `_` is accepted for `-` (`fr_CA` is `fr-CA`).

use std::fmt;

use crate::core::error::Error;

/// Longest tag accepted (RFC 5646 §4.4.1 recommends supporting 35).
pub const MAX_LOCALE_LEN: usize = 35;

/// A syntactically valid, normalised language tag, e.g. `fr`, `pt-BR`, `zh-Hant-TW`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale(String);

impl Locale {
    /// Parses and normalises `raw`, or says what is wrong with it
    /// (problem `invalid_locale`).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        Self::normalise(raw).map(Self).ok_or_else(|| {
            Error::validation(
                "invalid_locale",
                format!("locale: must be a language tag such as \"en\", \"fr\" or \"pt-BR\" (at most {MAX_LOCALE_LEN} characters)"),
            )
        })
    }

    fn normalise(raw: &str) -> Option<String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > MAX_LOCALE_LEN {
            return None;
        }
        let mut out = String::with_capacity(raw.len());
        // After a singleton (an extension's `u-`, a private use's `x-`),
        // every subtag is lowercase: the region and script cases apply to
        // the subtags before it only (`en-CA-x-ca`, RFC 5646 §2.1.1).
        let mut extension = false;
        for (i, sub) in raw.split(['-', '_']).enumerate() {
            let ok_len = if i == 0 { (2..=3).contains(&sub.len()) } else { (1..=8).contains(&sub.len()) };
            if !ok_len || !sub.chars().all(|c| c.is_ascii_alphanumeric()) {
                return None;
            }
            if i == 0 {
                if !sub.chars().all(|c| c.is_ascii_alphabetic()) {
                    return None;
                }
                out.push_str(&sub.to_ascii_lowercase());
                continue;
            }
            out.push('-');
            let letters = sub.chars().all(|c| c.is_ascii_alphabetic());
            extension |= sub.len() == 1;
            match sub.len() {
                2 if letters && !extension => out.push_str(&sub.to_ascii_uppercase()),
                4 if letters && !extension => {
                    let lower = sub.to_ascii_lowercase();
                    out.push_str(&lower[..1].to_ascii_uppercase());
                    out.push_str(&lower[1..]);
                }
                _ => out.push_str(&sub.to_ascii_lowercase()),
            }
        }
        Some(out)
    }

    /// The normalised tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The browser's first choice in an `Accept-Language` header (RFC 9110
    /// §12.5.4): the range of the highest weight (the first of equals), if
    /// it is a language tag; ranges that are not (`*`, a zero weight,
    /// anything else) do not compete. The first 32 ranges are read.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut best: Option<(u16, Self)> = None;
        for item in header.split(',').take(32) {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim();
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .map_or(Some(1000), |q| {
                    q.trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .map(|q| (q * 1000.0).round() as u16)
                });
            let Some(weight) = weight else { continue };
            if weight == 0 || range == "*" || best.as_ref().is_some_and(|(w, _)| weight <= *w) {
                continue;
            }
            if let Ok(tag) = Self::parse(range) {
                best = Some((weight, tag));
            }
        }
        best.map(|(_, tag)| tag)
    }

    /// The language subtag alone (`fr` of `fr-CA`).
    pub fn language(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browsers_first_choice_is_read_from_accept_language() {
        let first = |h: &str| Locale::from_accept_language(h).map(|l| l.to_string());
        assert_eq!(first("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5").as_deref(), Some("fr-CH"));
        assert_eq!(first("en;q=0.5, de").as_deref(), Some("de"), "the weight decides, not the order");
        assert_eq!(first("pt_br").as_deref(), Some("pt-BR"));
        assert_eq!(first(", de").as_deref(), Some("de"), "an empty range does not compete");
        assert_eq!(first("x-klingon, de;q=0.9").as_deref(), Some("de"));
        assert_eq!(first("en;q=0.250, de;q=0.251").as_deref(), Some("de"), "weights to the thousandth");
        assert_eq!(first(&"xx;q=0.1,".repeat(10_000)).as_deref(), Some("xx"), "bounded: the first 32 ranges");
        for none in ["", "*", "en;q=0", "<script>", "en;q=2", "en;q=x", "en;q=NaN", "en;q=inf"] {
            assert_eq!(first(none), None, "{none:?}");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn tags_are_normalised() {
        for (raw, want) in [
            ("en", "en"),
            ("FR", "fr"),
            ("fr_ca", "fr-CA"),
            (" pt-br ", "pt-BR"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("de-CH-1901", "de-CH-1901"),
            ("en-US-u-CA-gregory", "en-US-u-ca-gregory"),
            ("en-x-AB", "en-x-ab"),
            ("az-latn-X-LATN", "az-Latn-x-latn"),
            ("en-us-u-nu-thai-x-zz", "en-US-u-nu-thai-x-zz"),
        ] {
            assert_eq!(Locale::parse(raw).unwrap().as_str(), want, "{raw}");
        }
        assert_eq!(Locale::parse("fr-CA").unwrap().language(), "fr");
    }

    #[test]
    fn malformed_tags_are_refused_with_a_stable_code() {
        for bad in
            ["", "e", "f1", "english", "en--US", "en-", "-en", "en US", "en-toolongsubtag", "<script>", "en;q=0.9", "é"]
        {
            let e = Locale::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Validation { code: "invalid_locale", .. }), "{bad:?}: {e:?}");
        }
        assert!(Locale::parse(&"a".repeat(MAX_LOCALE_LEN + 1)).is_err());
    }

    proptest! {
        #[test]
        fn normal_forms_are_fixed_points(s in "[a-zA-Z]{2,3}([-_][a-zA-Z0-9]{1,8}){0,3}") {
            if let Ok(l) = Locale::parse(&s) {
                prop_assert_eq!(Locale::parse(l.as_str()).unwrap(), l.clone());
                prop_assert!(l.as_str().chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
            }
        }
    }
}
