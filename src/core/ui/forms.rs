//! The hosted pages' form rules: reading a posted form, the CSRF check that
//! keeps another site from posting one (login CSRF included), and where a
//! finished sign-in returns to.
//!
//! # CSRF
//!
//! A page's forms carry the value of the cookie [`CSRF_COOKIE`]
//! (`__Host-`, `HttpOnly`, `Secure`, `SameSite=Lax`, random, set by the
//! first page shown) in the field [`CSRF_FIELD`]; a POST is served only if
//! the two are present and equal — a double-submit token. The premise: a
//! page of another site can make the browser post a form here, but cannot
//! read our page (the same-origin policy) to learn the value, cannot send
//! the cookie along (`SameSite=Lax` holds it back from cross-site POSTs), and
//! cannot set it (the `__Host-` prefix refuses cookies from other hosts,
//! sibling subdomains included). On top, browsers' `Sec-Fetch-Site` must say
//! `same-origin` and `Origin` must be ours when sent — `Origin: null`
//! included, which a sandboxed frame or a redirect chain can produce
//! (the pages' `Referrer-Policy: same-origin` makes browsers send our own
//! origin with our forms). This holds *whether or
//! not the victim is signed in*: the sign-in forms are checked too, so a
//! cross-site post cannot sign a victim into the attacker's account (login
//! CSRF), nor out of their own.

use subtle::ConstantTimeEq;
use url::Url;

use crate::core::error::Error;
use crate::core::ids::{self, Random};
use crate::core::oauth::redirect::Allowlist;
use crate::core::oauth::CodeChallenge;

/// The cookie holding the pages' CSRF token.
pub const CSRF_COOKIE: &str = "__Host-portcullis_ui";
/// The form field carrying it back.
pub const CSRF_FIELD: &str = "csrf";
/// Most fields read from one form.
pub const MAX_FORM_FIELDS: usize = 32;
/// The field naming where a sign-in returns to.
pub const REDIRECT_FIELD: &str = "redirect_to";
/// The field carrying the app's PKCE S256 `code_challenge` (token mode).
pub const CHALLENGE_FIELD: &str = "code_challenge";

/// A posted `application/x-www-form-urlencoded` form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Reads a form body (at most [`MAX_FORM_FIELDS`] fields; the rest is
    /// ignored). Bytes that are not UTF-8 become U+FFFD.
    pub fn parse(body: &[u8]) -> Self {
        let fields =
            url::form_urlencoded::parse(body).take(MAX_FORM_FIELDS).map(|(k, v)| (k.into(), v.into())).collect();
        Self { fields }
    }

    /// The first value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of field `name`, or `""`.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_string()
    }

    /// The first value of field `name` unless it is empty or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).map(str::to_string)
    }
}

/// What the CSRF check reads from a POST.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostFacts<'a> {
    /// The request URL's origin: the pages' own.
    pub own_origin: &'a str,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Sec-Fetch-Site` header.
    pub fetch_site: Option<&'a str>,
    /// The [`CSRF_COOKIE`] sent.
    pub cookie: Option<&'a str>,
    /// The [`CSRF_FIELD`] posted.
    pub field: Option<&'a str>,
}

/// 403 `csrf_refused` unless the POST comes from one of our own pages (see
/// the module documentation).
pub fn check_csrf(f: &PostFacts<'_>) -> Result<(), Error> {
    let refused = |why: &str| Err(Error::forbidden("csrf_refused", format!("form refused: {why}; reload the page")));
    if f.fetch_site.is_some_and(|s| !s.eq_ignore_ascii_case("same-origin")) {
        return refused("it was posted from another site");
    }
    // `Origin: null` is refused too: our pages (`Referrer-Policy:
    // same-origin`) make browsers send our origin with their forms.
    if f.origin.is_some_and(|o| o != f.own_origin) {
        return refused("it was posted from another site");
    }
    match (f.cookie.filter(|c| is_csrf_token(c)), f.field) {
        (Some(cookie), Some(field)) if bool::from(cookie.as_bytes().ct_eq(field.as_bytes())) => Ok(()),
        _ => refused("its security token is missing or stale"),
    }
}

/// A fresh CSRF token.
pub fn new_csrf_token(rng: &mut impl Random) -> String {
    ids::secret_token(rng)
}

/// Whether `v` looks like a token [`new_csrf_token`] makes (43 base64url
/// characters): anything else in the cookie is replaced.
pub fn is_csrf_token(v: &str) -> bool {
    v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a sign-in through the pages returns to, as the browser asked
/// (`redirect_to`) or by default.
///
/// Asked: it must be on `REDIRECT_ALLOWLIST` (compared as parsed URLs by
/// [`Allowlist::check`], the rule OAuth sign-ins follow), or, in cookie
/// mode, be the pages' own account page `account_url`. Not asked: the
/// allowlist's first entry, else (cookie mode) the account page. Token mode
/// without an allowlist has nowhere to hand the tokens to: 503
/// `misconfigured`.
pub fn return_target(
    asked: Option<&str>,
    allowlist: &Allowlist,
    account_url: &str,
    cookie_mode: bool,
) -> Result<String, Error> {
    match asked.filter(|a| !a.is_empty()) {
        Some(a) if cookie_mode && a == account_url => Ok(a.to_string()),
        Some(a) => allowlist.check(a).map(Url::into).ok_or_else(|| Error::BadRequest {
            code: "invalid_redirect",
            detail: "redirect_to is not on REDIRECT_ALLOWLIST".into(),
        }),
        None => match allowlist.default_target() {
            Some(t) => Ok(t.to_string()),
            None if cookie_mode => Ok(account_url.to_string()),
            None => Err(nowhere_to_return()),
        },
    }
}

/// The app's `code_challenge` a sign-in through the pages binds its
/// one-time exchange code to ([`CodeChallenge`]), as the browser brought
/// it (`asked`). Required whenever a code is issued (`codes_issued`: token
/// mode, or cookie mode with body tokens): an unbound code could be planted
/// in a victim's app (login CSRF). Optional only in plain cookie mode.
/// Missing where required or malformed: 400 `invalid_code_challenge`.
/// The rule is [`CodeChallenge::from_app`], the one `/auth/oauth/{id}/authorize` follows.
pub fn code_challenge(asked: Option<&str>, codes_issued: bool) -> Result<Option<CodeChallenge>, Error> {
    CodeChallenge::from_app(asked, codes_issued)
}

/// Token mode without `REDIRECT_ALLOWLIST`: the pages have no app to hand
/// a sign-in's tokens to (503 `misconfigured`).
pub fn nowhere_to_return() -> Error {
    Error::Misconfigured(
        "REDIRECT_ALLOWLIST: not set, so the hosted pages have no app to return the tokens to \
         (set it, or COOKIE_MODE=true)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn facts<'a>(cookie: Option<&'a str>, field: Option<&'a str>) -> PostFacts<'a> {
        PostFacts { own_origin: "https://gw.example", origin: None, fetch_site: None, cookie, field }
    }

    #[test]
    fn a_post_needs_the_cookie_and_the_same_token_in_the_form() {
        assert!(check_csrf(&facts(Some(TOKEN), Some(TOKEN))).is_ok());
        let other = "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        for (cookie, field) in [
            (None, Some(TOKEN)),
            (Some(TOKEN), None),
            (Some(TOKEN), Some(other)),
            (Some(TOKEN), Some("")),
            (Some("short"), Some("short")),
            (Some(""), Some("")),
        ] {
            let p = check_csrf(&facts(cookie, field)).unwrap_err().problem();
            assert_eq!((p.status, p.code), (403, "csrf_refused"), "{cookie:?} {field:?}");
        }
    }

    #[test]
    fn a_post_from_another_site_is_refused_even_with_a_matching_token() {
        let ok = facts(Some(TOKEN), Some(TOKEN));
        for (origin, site) in [
            (Some("https://evil.example"), None),
            (Some("null"), Some("cross-site")),
            (Some("https://gw.example:8443"), None),
            (None, Some("cross-site")),
            (None, Some("same-site")),
            (Some("https://gw.example"), Some("cross-site")),
            // A sandboxed frame, or a page with `Referrer-Policy: no-referrer`.
            (Some("null"), Some("same-origin")),
            (Some("null"), None),
        ] {
            let p = check_csrf(&PostFacts { origin, fetch_site: site, ..ok }).unwrap_err().problem();
            assert_eq!(p.code, "csrf_refused", "{origin:?} {site:?}");
        }
        for (origin, site) in [(Some("https://gw.example"), Some("same-origin")), (None, Some("Same-Origin"))] {
            assert!(check_csrf(&PostFacts { origin, fetch_site: site, ..ok }).is_ok(), "{origin:?} {site:?}");
        }
    }

    #[test]
    fn token_mode_sign_ins_need_a_well_formed_code_challenge() {
        let c = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(code_challenge(Some(c), true).unwrap().unwrap().as_str(), c);
        assert_eq!(code_challenge(Some(c), false).unwrap().unwrap().as_str(), c);
        // Optional only where no code is issued (plain cookie mode).
        assert_eq!(code_challenge(None, false).unwrap(), None);
        for (asked, codes_issued) in [(None, true), (Some(""), true), (Some("short"), false), (Some(&c[1..]), true)] {
            let p = code_challenge(asked, codes_issued).unwrap_err().problem();
            assert_eq!((p.status, p.code), (400, "invalid_code_challenge"), "{asked:?}");
        }
    }

    #[test]
    fn forms_read_the_first_value_of_a_field_and_decode_it() {
        let f = Form::parse(b"email=a%2Bb%40example.com&password=p+w%26&email=second&empty=&blank=%20");
        assert_eq!(f.get("email"), Some("a+b@example.com"));
        assert_eq!(f.text("password"), "p w&");
        assert_eq!((f.get("missing"), f.text("missing").as_str()), (None, ""));
        assert_eq!((f.optional("empty"), f.optional("blank")), (None, None));
        let many: String = (0..100).map(|i| format!("f{i}=x&")).collect();
        assert_eq!(Form::parse(many.as_bytes()).get("f40"), None, "at most MAX_FORM_FIELDS fields are read");
    }

    #[test]
    fn sign_ins_return_only_to_allowed_targets() {
        let list = Allowlist::parse("https://app.example/done").unwrap();
        let account = "https://gw.example/auth/ui/account";
        let ok = |asked, cookie| return_target(asked, &list, account, cookie);
        assert_eq!(ok(Some("https://app.example/done?x=1"), false).unwrap(), "https://app.example/done?x=1");
        assert_eq!(ok(None, false).unwrap(), "https://app.example/done");
        assert_eq!(ok(Some(""), true).unwrap(), "https://app.example/done");
        assert_eq!(ok(Some(account), true).unwrap(), account);
        for bad in [
            "https://app.example.evil/done",
            "https://app.example/other",
            "//evil.example",
            "/auth/ui/account",
            "javascript:alert(1)",
            "https://app.example@evil.example/done",
        ] {
            let p = ok(Some(bad), true).unwrap_err().problem();
            assert_eq!((p.status, p.code), (400, "invalid_redirect"), "{bad}");
        }
        // The account page is a target only in cookie mode (where it works).
        assert_eq!(ok(Some(account), false).unwrap_err().problem().code, "invalid_redirect");
        let none = Allowlist::default();
        assert_eq!(return_target(None, &none, account, true).unwrap(), account);
        assert_eq!(return_target(None, &none, account, false).unwrap_err().problem().code, "misconfigured");
    }
}
