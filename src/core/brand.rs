//! The brand: `UI_NAME`, `UI_LOGO_URL` and `UI_ACCENT`, read once at
//! config parse and shown by both the hosted pages ([`crate::core::ui`])
//! and the emails ([`crate::core::mail`]) — one parse, one set of rules.

use url::Url;

/// Default `UI_NAME`.
pub const DEFAULT_NAME: &str = "Portcullis";
/// Longest `UI_NAME`, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `UI_LOGO_URL`.
pub const MAX_LOGO_URL_LEN: usize = 2048;

/// Default `UI_ACCENT`.
pub const DEFAULT_ACCENT: Rgb = Rgb(0x25, 0x63, 0xeb);

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Parses `#rgb` or `#rrggbb` (hex digits in either case).
    pub fn parse(v: &str) -> Result<Self, String> {
        let bad = || format!("{v:?} is not a hex colour like #2563eb or #26e");
        let hex = v.strip_prefix('#').ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let digit = |i: usize| u8::from_str_radix(hex.get(i..=i).unwrap_or("0"), 16).unwrap_or(0);
        match hex.len() {
            3 => Ok(Self(digit(0) * 17, digit(1) * 17, digit(2) * 17)),
            6 => Ok(Self(digit(0) * 16 + digit(1), digit(2) * 16 + digit(3), digit(4) * 16 + digit(5))),
            _ => Err(bad()),
        }
    }

    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Who the pages and the emails speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    /// `UI_NAME`: one line, shown in every page's header and title and at
    /// the top of every email (the `{brand}` placeholder).
    pub name: String,
    /// Whether `UI_NAME` was set (TOTP enrolments are then issued in its
    /// name, else in the issuer's host).
    pub named: bool,
    /// `UI_LOGO_URL`: an https image beside the name, without credentials.
    pub logo_url: Option<Url>,
    /// `UI_ACCENT`: `#rgb` or `#rrggbb`. Only a hex colour is accepted, so
    /// it cannot carry CSS.
    pub accent: Rgb,
}

impl Default for Brand {
    fn default() -> Self {
        Self { name: DEFAULT_NAME.into(), named: false, logo_url: None, accent: DEFAULT_ACCENT }
    }
}

impl Brand {
    /// Reads `UI_NAME`, `UI_LOGO_URL` and `UI_ACCENT` through `var`
    /// (trimmed, empty as unset). Errors are `(setting, why)`.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, (String, String)> {
        let err = |name: &str, why: String| (name.to_string(), why);
        let name = match var("UI_NAME") {
            None => DEFAULT_NAME.to_string(),
            Some(v) if v.chars().count() > MAX_NAME_CHARS => {
                return Err(err("UI_NAME", format!("longer than {MAX_NAME_CHARS} characters")))
            }
            Some(v) if v.chars().any(char::is_control) => {
                return Err(err("UI_NAME", "must be one line, without control characters".into()))
            }
            Some(v) => v,
        };
        let logo_url = match var("UI_LOGO_URL") {
            None => None,
            Some(v) => Some(logo_url(&v).map_err(|why| err("UI_LOGO_URL", why))?),
        };
        let accent = match var("UI_ACCENT") {
            None => DEFAULT_ACCENT,
            Some(v) => Rgb::parse(&v).map_err(|why| err("UI_ACCENT", why))?,
        };
        Ok(Self { name, named: var("UI_NAME").is_some(), logo_url, accent })
    }

    /// [`Brand::from_lookup`] over `(name, value)` pairs, for tests.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, (String, String)> {
        let m: std::collections::HashMap<&str, &str> = pairs.iter().copied().collect();
        Self::from_lookup(&move |k: &str| m.get(k).map(|v| v.to_string()))
    }
}

fn logo_url(v: &str) -> Result<Url, String> {
    if v.len() > MAX_LOGO_URL_LEN {
        return Err(format!("longer than {MAX_LOGO_URL_LEN} characters"));
    }
    let u = Url::parse(v).map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    if u.scheme() != "https" || u.host_str().is_none() {
        return Err(format!("{v:?} must be an https URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{v:?} must not carry credentials"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brand(pairs: &[(&str, &str)]) -> Result<Brand, (String, String)> {
        Brand::from_pairs(pairs)
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(brand(&[]).unwrap(), Brand::default());
        let b =
            brand(&[("UI_NAME", "Acme <Labs>"), ("UI_LOGO_URL", "https://cdn.example/l.svg"), ("UI_ACCENT", "#ABC")])
                .unwrap();
        assert_eq!(b.name, "Acme <Labs>");
        assert_eq!(b.logo_url.map(String::from).as_deref(), Some("https://cdn.example/l.svg"));
        assert_eq!(b.accent.hex(), "#aabbcc");
    }

    #[test]
    fn bad_values_name_their_setting() {
        let long_name = "x".repeat(MAX_NAME_CHARS + 1);
        let long_url = format!("https://cdn.example/{}", "a".repeat(MAX_LOGO_URL_LEN));
        for (k, v) in [
            ("UI_ACCENT", "blue"),
            ("UI_ACCENT", "#12345"),
            ("UI_ACCENT", "#fff;background:url(x)"),
            ("UI_LOGO_URL", "http://cdn.example/logo.png"),
            ("UI_LOGO_URL", "javascript:alert(1)"),
            ("UI_LOGO_URL", "https://user:pw@cdn.example/logo.png"),
            ("UI_LOGO_URL", "/logo.png"),
            ("UI_LOGO_URL", long_url.as_str()),
            ("UI_NAME", "Acme\nInc"),
            ("UI_NAME", long_name.as_str()),
        ] {
            let (name, why) = brand(&[(k, v)]).unwrap_err();
            assert_eq!(name, k, "{k}={v}: {why}");
        }
    }
}
