//! The caller's credential, for the gateway and the auth API alike:
//! `Authorization: Bearer`, else — in cookie mode (`COOKIE_MODE`) — the
//! access cookie; and the session cookies' names and attributes.
//!
//! A cookie goes along with every request to its site, a cross-site form post
//! or a cross-site WebSocket handshake included; a bearer token only when the
//! caller's own code sends it. So a request authenticated by a cookie must
//! also pass the CSRF rule ([`csrf_check`]): a state change (any method but
//! `GET`, `HEAD` and `OPTIONS`) or a WebSocket handshake is refused (403
//! `csrf_refused`) when `Sec-Fetch-Site` says `cross-site`, or when an
//! `Origin` is sent that is neither the request's own nor one of
//! `CORS_ORIGINS`. A `GET`, `HEAD` or `OPTIONS` whose query names a method
//! override such as `_method` (which an origin may act on as another
//! method) passes only from a script of a page of ours: `Sec-Fetch-Site`
//! `same-origin` with a `Sec-Fetch-Mode` (when sent) of `cors` or
//! `same-origin` — not a navigation or an image — or, without
//! `Sec-Fetch-Site`, an `Origin` of the gateway's own or in `CORS_ORIGINS`.
//! A bearer token is never held to it.

use crate::core::config::Config;
use crate::core::error::Error;
use crate::core::gateway::policy::names_method_override;
use crate::core::gateway::request::RequestView;
use crate::core::oauth::BINDING_COOKIE;
use crate::core::ui::forms::CSRF_COOKIE;

/// Cookie carrying the access token in cookie mode.
pub const ACCESS_COOKIE: &str = "__Host-portcullis_access";
/// Cookie carrying the refresh token in cookie mode.
pub const REFRESH_COOKIE: &str = "__Host-portcullis_refresh";

/// The gateway's own cookies, removed from every forwarded request: the
/// session cookies, the OAuth sign-in's binding cookie and the hosted pages'
/// CSRF cookie.
pub const OWN_COOKIES: [&str; 4] = [ACCESS_COOKIE, REFRESH_COOKIE, BINDING_COOKIE, CSRF_COOKIE];

/// The bearer token of `Authorization: Bearer <token>`, if any.
pub fn bearer(req: &impl RequestView) -> Option<String> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string()).filter(|t| !t.is_empty())
}

/// The caller's access token: `Authorization: Bearer`, else (cookie mode)
/// the access cookie under [`cookie_credential`]'s rule. `own_origin` is
/// the request URL's origin.
pub fn access_token(req: &impl RequestView, cfg: &Config, own_origin: &str) -> Result<Option<String>, Error> {
    if let Some(t) = bearer(req) {
        return Ok(Some(t));
    }
    cookie_credential(req, cfg, own_origin, ACCESS_COOKIE)
}

/// Cookie `name` in cookie mode (`None` otherwise); a request that sends it
/// must pass [`csrf_check`] (a cookie goes along with a cross-site form post
/// too). `own_origin` is the request URL's origin.
pub fn cookie_credential(
    req: &impl RequestView,
    cfg: &Config,
    own_origin: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    if !cfg.cookie_mode {
        return Ok(None);
    }
    let token = cookie(req, name);
    if token.is_some() {
        csrf_check(req, cfg, own_origin)?;
    }
    Ok(token)
}

/// Refuses cookie-authenticated state changes from another site, and
/// cookie-authenticated WebSocket handshakes from another site (a GET, but it
/// opens a two-way channel under the user's identity: cross-site WebSocket
/// hijacking). `own_origin` is the request URL's origin.
pub fn csrf_check(req: &impl RequestView, cfg: &Config, own_origin: &str) -> Result<(), Error> {
    let websocket = || req.header("upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let refused = || Error::forbidden("csrf_refused", "cross-site request refused for cookie authentication");
    let allowed_origin = |origin: &str| origin == own_origin || cfg.cors_origins.iter().any(|o| o == origin);
    if matches!(req.method(), "GET" | "HEAD" | "OPTIONS") && !websocket() {
        // `GET /x?_method=DELETE`: the route rules judge it as a DELETE too
        // (`policy`), and so does this rule — more strictly than a DELETE,
        // since a browser sends no `Origin` with a link or an image: only
        // a page of ours (`Sec-Fetch-Site: same-origin`), or without that
        // header an `Origin` of ours, may send one.
        if !req.query().is_some_and(names_method_override) {
            return Ok(());
        }
        // Made by a script of a page of ours (`Sec-Fetch-Mode` `cors` or
        // `same-origin`), not a navigation or an image — not even one on
        // our own origin, where user content may hold a link or an image.
        // Not `Sec-Fetch-Site: none` either: a link opened from a mail
        // client or a chat app.
        let scripted = || {
            req.header("sec-fetch-mode")
                .is_none_or(|m| m.eq_ignore_ascii_case("cors") || m.eq_ignore_ascii_case("same-origin"))
        };
        return match req.header("sec-fetch-site") {
            Some(site) if site.eq_ignore_ascii_case("same-origin") && scripted() => Ok(()),
            Some(_) => Err(refused()),
            None if req.header("origin").is_some_and(|o| allowed_origin(&o)) => Ok(()),
            None => Err(refused()),
        };
    }
    if req.header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return Err(refused());
    }
    if let Some(origin) = req.header("origin") {
        if !allowed_origin(&origin) {
            return Err(refused());
        }
    }
    Ok(())
}

/// The value of cookie `name`, if sent (and not empty).
pub fn cookie(req: &impl RequestView, name: &str) -> Option<String> {
    cookie_in(&req.header("cookie")?, name)
}

/// The value of cookie `name` in a `Cookie` header's value, if there (and
/// not empty).
pub fn cookie_in(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// The `Set-Cookie` header of one of our cookies: host-only (`__Host-`),
/// `HttpOnly`, `Secure`, `SameSite=Lax`, living `max_age` seconds (0
/// clears it).
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> (&'static str, String) {
    ("set-cookie", format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req {
        method: &'static str,
        headers: Vec<(&'static str, &'static str)>,
        query: Option<&'static str>,
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
        fn has_body(&self) -> bool {
            false
        }
        fn header(&self, name: &str) -> Option<String> {
            self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        }
    }

    fn cookie_mode() -> Config {
        Config::from_lookup(|name| match name {
            "KEY_ENCRYPTION_KEY" => Some("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
            "COOKIE_MODE" => Some("true".into()),
            "CORS_ORIGINS" => Some("https://app.example".into()),
            _ => None,
        })
        .unwrap()
    }

    const OWN: &str = "https://gw.example";

    #[test]
    fn bearer_takes_the_scheme_in_any_case_and_nothing_else() {
        let r = |v: &'static str| Req { method: "GET", headers: vec![("authorization", v)], query: None };
        assert_eq!(bearer(&r("Bearer abc")), Some("abc".into()));
        assert_eq!(bearer(&r("  bearer   abc  ")), Some("abc".into()));
        assert_eq!(bearer(&r("Basic abc")), None);
        assert_eq!(bearer(&r("Bearer ")), None);
        assert_eq!(bearer(&r("Bearerabc")), None);
    }

    #[test]
    fn the_access_cookie_counts_only_in_cookie_mode_and_never_before_a_bearer_token() {
        let with_cookie =
            Req { method: "POST", headers: vec![("cookie", "a=1; __Host-portcullis_access=tok; b=")], query: None };
        let mut off = cookie_mode();
        off.cookie_mode = false;
        assert_eq!(access_token(&with_cookie, &off, OWN).unwrap(), None);
        assert_eq!(access_token(&with_cookie, &cookie_mode(), OWN).unwrap(), Some("tok".into()));
        let both = Req {
            method: "POST",
            headers: vec![
                ("authorization", "Bearer b"),
                ("cookie", "__Host-portcullis_access=c"),
                ("sec-fetch-site", "cross-site"),
            ],
            query: None,
        };
        assert_eq!(access_token(&both, &cookie_mode(), OWN).unwrap(), Some("b".into()));
    }

    #[test]
    fn cookie_authenticated_state_changes_and_websockets_from_other_sites_are_refused() {
        let cfg = cookie_mode();
        let req = |method, extra: Vec<(&'static str, &'static str)>| {
            let mut headers = vec![("cookie", "__Host-portcullis_access=tok")];
            headers.extend(extra);
            Req { method, headers, query: None }
        };
        let refused = |r: &Req| access_token(r, &cfg, OWN).unwrap_err().problem().code;
        assert_eq!(refused(&req("POST", vec![("sec-fetch-site", "cross-site")])), "csrf_refused");
        assert_eq!(refused(&req("DELETE", vec![("origin", "https://evil.example")])), "csrf_refused");
        assert_eq!(
            refused(&req("GET", vec![("upgrade", "websocket"), ("origin", "https://evil.example")])),
            "csrf_refused"
        );
        for ok in [
            req("GET", vec![("sec-fetch-site", "cross-site")]),
            req("POST", vec![("origin", OWN)]),
            req("POST", vec![("origin", "https://app.example"), ("sec-fetch-site", "same-site")]),
            req("PUT", vec![]),
            req("GET", vec![("upgrade", "websocket"), ("origin", OWN)]),
        ] {
            assert_eq!(access_token(&ok, &cfg, OWN).unwrap(), Some("tok".into()));
        }
        // A GET the origin may read as another method: only from the page's
        // own origin (a link or an image from a sibling subdomain is
        // `same-site` and sends no Origin).
        for query in ["_method=DELETE", "a=1&_METHOD=PUT", "+_method=POST"] {
            for headers in [
                vec![("sec-fetch-site", "cross-site")],
                vec![("sec-fetch-site", "same-site")],
                vec![("sec-fetch-site", "none")],
                vec![("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "navigate")],
                vec![("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "no-cors")],
                vec![("sec-fetch-site", "same-site"), ("origin", OWN)],
                vec![],
                vec![("origin", "https://evil.example")],
            ] {
                let overridden = Req { query: Some(query), ..req("GET", headers.clone()) };
                assert_eq!(refused(&overridden), "csrf_refused", "{query} {headers:?}");
            }
            for headers in [
                vec![("sec-fetch-site", "same-origin")],
                vec![("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "cors")],
                vec![("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "same-origin")],
                vec![("origin", OWN)],
                vec![("origin", "https://app.example")],
            ] {
                let own = Req { query: Some(query), ..req("HEAD", headers.clone()) };
                assert_eq!(access_token(&own, &cfg, OWN).unwrap(), Some("tok".into()), "{query} {headers:?}");
            }
        }
        let plain =
            Req { query: Some("method=DELETE&x=_method"), ..req("GET", vec![("sec-fetch-site", "cross-site")]) };
        assert_eq!(access_token(&plain, &cfg, OWN).unwrap(), Some("tok".into()));
    }

    #[test]
    fn set_cookie_is_host_only_http_only_secure_and_lax() {
        assert_eq!(
            set_cookie(ACCESS_COOKIE, "v", 60),
            ("set-cookie", "__Host-portcullis_access=v; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax".into())
        );
    }
}
