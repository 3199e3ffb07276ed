//! The redirect allowlist: where a finished sign-in may send the browser.
//! Both sides are parsed as URLs and compared by scheme, host, port and path
//! segments — never as strings — so `https://app.example.com.evil.com`,
//! `https://app.example.com@evil.com`, `//evil.com` or backslash tricks
//! cannot pass for an allowed entry.

use url::Url;

/// Longest `redirect_to` accepted.
pub const MAX_REDIRECT_LEN: usize = 2048;

/// Allowed redirect targets: an origin (any path on it) or an origin and a
/// path prefix (that path and what lies below it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<Url>,
}

impl Allowlist {
    /// Parses a comma-separated list of absolute http(s) URLs.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let u = Url::parse(item).map_err(|e| format!("{item:?} is not a URL: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                return Err(format!("{item:?} must be an http(s) URL"));
            }
            if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
                return Err(format!("{item:?} must not carry credentials, a query or a fragment"));
            }
            entries.push(u);
        }
        if entries.is_empty() {
            return Err("no URLs listed".into());
        }
        Ok(Self { entries })
    }

    /// The first entry: where a sign-in without `redirect_to` returns.
    pub fn default_target(&self) -> Option<&str> {
        self.entries.first().map(Url::as_str)
    }

    /// The entries' origins (`scheme://host[:port]`), each once, in order.
    pub fn origins(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for origin in self.entries.iter().map(|e| e.origin().ascii_serialization()) {
            if !out.contains(&origin) {
                out.push(origin);
            }
        }
        out
    }

    /// `candidate` parsed, if it is allowed.
    pub fn check(&self, candidate: &str) -> Option<Url> {
        if candidate.len() > MAX_REDIRECT_LEN
            || candidate.chars().any(|c| c == '\\' || c.is_control() || c.is_whitespace())
        {
            return None;
        }
        let u = Url::parse(candidate).ok()?;
        if !matches!(u.scheme(), "http" | "https")
            || !u.username().is_empty()
            || u.password().is_some()
            || u.fragment().is_some()
        {
            return None;
        }
        self.entries.iter().any(|e| matches(e, &u)).then_some(u)
    }
}

fn matches(entry: &Url, u: &Url) -> bool {
    if entry.scheme() != u.scheme()
        || entry.host() != u.host()
        || entry.port_or_known_default() != u.port_or_known_default()
    {
        return false;
    }
    let prefix = entry.path();
    let path = u.path();
    if prefix == "/" || prefix.is_empty() {
        return true;
    }
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> Allowlist {
        Allowlist::parse("https://app.example.com, http://127.0.0.1:3000/oauth/done").unwrap()
    }

    #[test]
    fn allowed_targets_pass() {
        let l = list();
        for ok in [
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/welcome?x=1",
            "https://APP.example.com:443/a/b",
            "http://127.0.0.1:3000/oauth/done",
            "http://127.0.0.1:3000/oauth/done/inner?next=%2F",
        ] {
            assert!(l.check(ok).is_some(), "{ok}");
        }
        assert_eq!(l.default_target(), Some("https://app.example.com/"));
        assert_eq!(l.origins(), vec!["https://app.example.com", "http://127.0.0.1:3000"]);
    }

    #[test]
    fn hostile_targets_are_refused() {
        let l = list();
        for bad in [
            "https://app.example.com.evil.com/",
            "https://evil.com/https://app.example.com",
            "https://app.example.com@evil.com/",
            "https://user:pw@app.example.com/",
            "//evil.com",
            "/relative",
            "https:\\\\evil.com",
            "https://app.example.com\\@evil.com",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://app.example.com/#frag",
            "http://127.0.0.1:3000/oauth/doneX",
            "http://127.0.0.1:3000/oauth",
            "http://127.0.0.1:3000/oauth/done/../../admin",
            "http://127.0.0.1:3001/oauth/done",
            "https://app.example.com/\nLocation: https://evil.com",
            "https://app.example.com/ x",
            "",
        ] {
            assert!(l.check(bad).is_none(), "{bad}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_REDIRECT_LEN));
        assert!(l.check(&long).is_none());
    }

    proptest::proptest! {
        #[test]
        fn whatever_is_accepted_goes_to_an_allowed_origin(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "https://", "http://", "//", "app.example.com", "evil.com", ".", "@", ":", "443", "8443", "/",
                    "\\", "%2f", "%40", "#", "?", "oauth", "done", "..", "%00", " ", "\t", "user:pw",
                ]),
                0..10,
            ),
            noise in "\\PC{0,20}",
        ) {
            let l = list();
            for candidate in [parts.concat(), format!("{}{noise}", parts.concat())] {
                if let Some(u) = l.check(&candidate) {
                    let ok = (u.scheme() == "https" && u.host_str() == Some("app.example.com") && u.port_or_known_default() == Some(443))
                        || (u.scheme() == "http" && u.host_str() == Some("127.0.0.1") && u.port() == Some(3000)
                            && (u.path() == "/oauth/done" || u.path().starts_with("/oauth/done/")));
                    proptest::prop_assert!(ok, "{candidate:?} -> {u}");
                    proptest::prop_assert!(u.username().is_empty() && u.password().is_none() && u.fragment().is_none());
                }
            }
        }
    }

    #[test]
    fn entries_must_be_plain_http_urls() {
        for bad in ["", "app.example.com", "ftp://x.example", "https://u@x.example", "https://x.example/?q=1"] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
    }
}
