//! The gateway's two URLs as strings: the request URL the runtime hands over,
//! read without parsing it again, and the URL a request is forwarded to.
//!
//! The runtime gives a request's URL already parsed and serialised (WHATWG
//! URL Standard), so its path and query are where that serialisation puts
//! them; reading them off the string instead of parsing the whole URL again
//! with the `url` crate takes a parse and its allocations off every gateway
//! request (by `bench/experiments/ab.mjs`). Anything that is not such a
//! serialisation, and the origin of a URL with credentials or of a scheme
//! other than http(s), goes to the `url` crate. Tests hold both functions to
//! the `url` crate's reading and writing of the same URLs.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, CONTROLS};
use url::Url;

use crate::core::config::Config;
use crate::core::error::Error;

/// The base URL of requests sent through the `ORIGIN` service binding
/// when `ORIGIN_URL` is not set (the binding ignores the host), and so the
/// origin the assertion names then.
pub const BINDING_BASE_URL: &str = "https://origin.internal";

/// The `aud` of the gateway's assertions: the origin's origin, or
/// [`BINDING_BASE_URL`] when there is no `ORIGIN_URL`.
pub fn assertion_audience(cfg: &Config) -> String {
    cfg.origin_url.as_ref().map_or_else(|| BINDING_BASE_URL.to_string(), |o| o.origin().ascii_serialization())
}

/// The problem for a request URL that cannot be read.
pub fn invalid_url() -> Error {
    Error::validation("invalid_path", "the request URL is not valid")
}

/// A request URL as serialised by the runtime, with its path and query found.
#[derive(Debug, Clone)]
pub struct RequestUrl {
    raw: String,
    path_start: usize,
    path_end: usize,
    query_end: usize,
}

impl RequestUrl {
    /// Finds the path and query of a serialised `http`/`https` URL
    /// (`scheme://authority/path[?query][#fragment]`); `None` when `raw` is
    /// not one (the caller parses it in full, or refuses it).
    pub fn new(raw: String) -> Option<Self> {
        let scheme_end = raw.find("://")?;
        if !matches!(&raw[..scheme_end], "http" | "https") {
            return None;
        }
        let authority = scheme_end + 3;
        // A serialised authority holds no `/`, `?` or `#`; a special URL's
        // serialised path is never empty (at least `/`).
        let path_start = authority + raw[authority..].find(['/', '?', '#'])?;
        if raw.as_bytes()[path_start] != b'/' {
            return None;
        }
        let path_end = raw[path_start..].find(['?', '#']).map_or(raw.len(), |i| path_start + i);
        let query_end = raw[path_end..].find('#').map_or(raw.len(), |i| path_end + i);
        Some(Self { raw, path_start, path_end, query_end })
    }

    /// The path, as serialised (percent-encoded), starting with `/`.
    pub fn path(&self) -> &str {
        &self.raw[self.path_start..self.path_end]
    }

    /// The query without its `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.raw[self.path_end..self.query_end].strip_prefix('?')
    }

    /// The URL's origin (`scheme://host[:port]`): the part before the path
    /// when the authority holds no credentials, else as the `url` crate says.
    pub fn origin(&self) -> Cow<'_, str> {
        let before_path = &self.raw[..self.path_start];
        if !before_path.contains('@') {
            return Cow::Borrowed(before_path);
        }
        Cow::Owned(Url::parse(&self.raw).map_or_else(|_| "null".to_string(), |u| u.origin().ascii_serialization()))
    }
}

/// Bytes percent-encoded in a path: the `url` crate's set for path segments
/// (WHATWG's path percent-encode set as it implements it), so that
/// [`origin_target`] writes the path as `Url::set_path` would.
const PATH: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`').add(b'#').add(b'?').add(b'{').add(b'}');

/// The URL a request goes to: `base` (the origin's URL up to its path, which
/// is a prefix; no query or fragment) with `path` (normalised: starting with `/`, no `%`, no `.` or `..`
/// segments, no backslash, see [`crate::core::gateway::policy::normalise_path`])
/// appended and `query` (serialised, as the request had it) as its query.
/// What `Url::set_path` and `Url::set_query` make of the same parts.
pub fn origin_target(base: &str, path: &str, query: Option<&str>) -> String {
    let prefix = base.trim_end_matches('/');
    let mut out = String::with_capacity(prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1) + 8);
    out.push_str(prefix);
    out.extend(percent_encoding::utf8_percent_encode(path, PATH));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gateway::policy::normalise_path;
    use proptest::prelude::*;
    use url::Position;

    fn split(raw: &str) -> Option<(String, Option<String>, String)> {
        let r = RequestUrl::new(raw.to_string())?;
        Some((r.path().to_string(), r.query().map(str::to_string), r.origin().into_owned()))
    }

    #[test]
    fn reads_path_query_and_origin_of_serialised_urls() {
        let cases = [
            ("https://gw.example/api/x?a=1&b=%20", "/api/x", Some("a=1&b=%20"), "https://gw.example"),
            ("http://127.0.0.1:8787/", "/", None, "http://127.0.0.1:8787"),
            ("http://[::1]:8080/a/b/?", "/a/b/", Some(""), "http://[::1]:8080"),
            ("https://gw.example/p#frag", "/p", None, "https://gw.example"),
            ("https://gw.example/p?q#frag?x", "/p", Some("q"), "https://gw.example"),
            ("https://user:pw@gw.example:444/p", "/p", None, "https://gw.example:444"),
        ];
        for (raw, path, query, origin) in cases {
            assert_eq!(split(raw), Some((path.to_string(), query.map(str::to_string), origin.to_string())), "{raw}");
        }
        for raw in ["", "gw.example/a", "mailto:a@b", "ws://gw.example/a", "https://gw.example", "https://gw.example?q"]
        {
            assert!(RequestUrl::new(raw.to_string()).is_none(), "{raw}");
        }
    }

    #[test]
    fn writes_the_target_as_set_path_and_set_query_would() {
        let base = Url::parse("http://127.0.0.1:8790/").unwrap();
        let base = &base[..Position::AfterPath];
        assert_eq!(origin_target(base, "/api/a b?#", Some("x=1")), "http://127.0.0.1:8790/api/a%20b%3F%23?x=1");
        let base = Url::parse("https://o.example/base/?old=1#f").unwrap();
        let base = &base[..Position::AfterPath];
        assert_eq!(origin_target(base, "/", None), "https://o.example/base/");
        assert_eq!(origin_target(base, "/é", Some("")), "https://o.example/base/%C3%A9?");
    }

    /// The `url` crate's target, as the gateway built it before.
    fn url_crate_target(base: &Url, path: &str, query: Option<&str>) -> String {
        let mut t = base.clone();
        let prefix = t.path().trim_end_matches('/').to_string();
        t.set_path(&format!("{prefix}{path}"));
        t.set_query(query);
        t.to_string()
    }

    proptest! {
        #[test]
        fn reading_agrees_with_the_url_crate(
            host in "[a-z0-9.-]{1,20}|\\[::[0-9a-f]{1,4}\\]",
            port in proptest::option::of(1u16..),
            scheme in "https?",
            user in proptest::option::of("[a-z:]{0,6}"),
            rest in "\\PC{0,60}",
        ) {
            let auth = user.map_or(String::new(), |u| format!("{u}@"));
            let port = port.map_or(String::new(), |p| format!(":{p}"));
            let Ok(u) = Url::parse(&format!("{scheme}://{auth}{host}{port}/{rest}")) else { return Ok(()) };
            let r = RequestUrl::new(u.as_str().to_string()).expect("a serialised http(s) URL");
            prop_assert_eq!(r.path(), u.path());
            prop_assert_eq!(r.query(), u.query());
            prop_assert_eq!(r.origin().into_owned(), u.origin().ascii_serialization());
        }

        #[test]
        fn writing_agrees_with_the_url_crate(
            base in "https?://o\\.example(:8[0-9]{3})?(/[a-z]{0,4}){0,2}/?",
            raw_path in "(/\\PC{0,12}){1,4}",
            query in proptest::option::of("\\PC{0,20}"),
        ) {
            let base = Url::parse(&base).unwrap();
            let Ok(path) = normalise_path(&raw_path) else { return Ok(()) };
            // The query as the request's serialised URL has it.
            let query = query.and_then(|q| Url::parse(&format!("http://x/?{q}")).ok()?.query().map(str::to_string));
            prop_assert_eq!(
                origin_target(&base[..Position::AfterPath], &path, query.as_deref()),
                url_crate_target(&base, &path, query.as_deref())
            );
        }
    }
}
