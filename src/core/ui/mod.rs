//! The hosted pages under `/auth/ui/` (`AUTH_PREFIX` + `/ui/`): sign in,
//! sign up, the magic-link landing, email code, forgot and reset password,
//! verify email, the second factor and the account page — server-rendered
//! HTML forms that work without JavaScript, posting to handlers that call
//! the same flows as the JSON API.
//!
//! This module is the pure part: the settings and what they make once per
//! isolate ([`UiConfig`]: brand, stylesheet, Content-Security-Policy), the
//! templates ([`pages`], built with [`html`]'s escaping macro), the colours
//! ([`theme`]) and the form rules ([`forms`]: CSRF, where a finished
//! sign-in goes). The edge (`edge::ui`) reads requests, calls the flows and
//! sets cookies.
//!
//! Every page is answered with [`UiConfig::headers`]: a strict CSP
//! (`default-src 'none'`; the one inline stylesheet allowed by its hash; no
//! script at all; images only from the logo's origin; forms only to this
//! origin and the allowlisted return targets — browsers hold a form's
//! redirects to `form-action` too; no framing, no `<base>`), `no-store`,
//! `Referrer-Policy: same-origin` (in place of the gateway's usual
//! `no-referrer`, under which browsers post our own forms with `Origin:
//! null`, a value the CSRF check could not tell from a sandboxed frame's;
//! other sites still get no `Referer`), and the gateway's usual `nosniff`
//! and `X-Frame-Options: DENY`.

pub mod forms;
pub mod html;
pub mod pages;
pub mod theme;

use base64::Engine;
use sha2::{Digest, Sha256};
use url::Url;

use crate::core::oauth::redirect::Allowlist;
use theme::{Rgb, Theme};

/// Default `UI_NAME`.
pub const DEFAULT_NAME: &str = "Portcullis";
/// Longest `UI_NAME`, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `UI_LOGO_URL`.
pub const MAX_LOGO_URL_LEN: usize = 2048;
/// The pages' `Referrer-Policy`: our own form posts then carry our
/// `Origin` (not `null`), which [`forms::check_csrf`] requires.
pub const PAGE_REFERRER_POLICY: &str = "same-origin";
/// Where the pages live under `AUTH_PREFIX`.
pub const UI_PATH: &str = "/ui";

/// The hosted pages' settings and what is derived from them once.
#[derive(Debug, Clone, PartialEq)]
pub struct UiConfig {
    /// `UI_ENABLED` (default true): false answers 404 under `/auth/ui/`.
    pub enabled: bool,
    /// `UI_NAME`: shown in every page's header and title.
    pub name: String,
    /// `UI_LOGO_URL`: an https image shown beside the name.
    pub logo_url: Option<Url>,
    /// `UI_ACCENT` and the colours computed from it.
    pub theme: Theme,
    /// The stylesheet, inlined in every page.
    pub css: Css,
    /// The `Content-Security-Policy` of every page.
    pub csp: String,
}

impl UiConfig {
    /// Reads `UI_ENABLED`, `UI_NAME`, `UI_LOGO_URL` and `UI_ACCENT` through
    /// `var` (trimmed, empty as unset); `allowlist` is `REDIRECT_ALLOWLIST`,
    /// whose origins the pages' forms may end up at. Errors are `(setting, why)`.
    pub fn parse(var: impl Fn(&str) -> Option<String>, allowlist: &Allowlist) -> Result<Self, (String, String)> {
        let err = |name: &str, why: String| (name.to_string(), why);
        let enabled = match var("UI_ENABLED").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(v) => return Err(err("UI_ENABLED", format!("{v:?} must be true or false"))),
        };
        // UI_NAME, UI_LOGO_URL and UI_ACCENT brand the emails too
        // (`mail::html::Brand`), so they stand with the pages off.
        let name = match var("UI_NAME") {
            None => DEFAULT_NAME.to_string(),
            Some(v) if v.chars().count() > MAX_NAME_CHARS => {
                return Err(err("UI_NAME", format!("longer than {MAX_NAME_CHARS} characters")))
            }
            Some(v) if v.chars().any(char::is_control) => {
                return Err(err("UI_NAME", "must not hold control characters".into()))
            }
            Some(v) => v,
        };
        let logo_url = match var("UI_LOGO_URL") {
            None => None,
            Some(v) => Some(logo_url(&v).map_err(|why| err("UI_LOGO_URL", why))?),
        };
        let accent = match var("UI_ACCENT") {
            None => theme::DEFAULT_ACCENT,
            Some(v) => Rgb::parse(&v).map_err(|why| err("UI_ACCENT", why))?,
        };
        let theme = Theme::new(accent);
        let css = stylesheet(&theme);
        let csp = content_security_policy(&css, logo_url.as_ref(), allowlist);
        Ok(Self { enabled, name, logo_url, theme, css, csp })
    }

    /// The headers of every page (besides the gateway's own security
    /// headers and `Cache-Control: no-store`; these replace its defaults of
    /// the same names).
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [("content-security-policy", self.csp.clone()), ("referrer-policy", PAGE_REFERRER_POLICY.into())]
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        let theme = Theme::default();
        let css = stylesheet(&theme);
        let csp = content_security_policy(&css, None, &Allowlist::default());
        Self { enabled: true, name: DEFAULT_NAME.into(), logo_url: None, theme, css, csp }
    }
}

/// The pages' stylesheet. Only [`stylesheet`] makes one, from hex colours
/// and literals, so it is safe to put in a `<style>` element unescaped
/// ([`html::Html::push_css`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Css(String);

impl Css {
    /// The CSS text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `UI_LOGO_URL`: an absolute https URL without credentials.
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

/// The CSP of every page: nothing by default; the stylesheet `css` by its
/// SHA-256; images only from the logo's origin; forms to this origin and
/// the allowlist's origins (a form's redirect is held to `form-action`).
fn content_security_policy(css: &Css, logo: Option<&Url>, allowlist: &Allowlist) -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(css.as_str().as_bytes()));
    let mut csp = format!("default-src 'none'; style-src 'sha256-{hash}'");
    if let Some(logo) = logo {
        csp.push_str("; img-src ");
        csp.push_str(&logo.origin().ascii_serialization());
    }
    csp.push_str("; form-action 'self'");
    for origin in allowlist.origins() {
        csp.push(' ');
        csp.push_str(&origin);
    }
    csp.push_str("; frame-ancestors 'none'; base-uri 'none'");
    csp
}

/// The stylesheet for `theme`: a few hundred bytes of plain CSS, every
/// colour pair at least 4.5:1 (text) or 3:1 (borders, the focus ring).
fn stylesheet(theme: &Theme) -> Css {
    let (accent, on_accent, link) = (theme.accent.hex(), theme.on_accent.hex(), theme.link.hex());
    Css(format!(
        "*{{box-sizing:border-box}}\
body{{margin:0;font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1a1a1a;background:#f4f4f5}}\
main{{max-width:28rem;margin:2rem auto;padding:1.5rem 2rem 2rem;background:#fff;border-radius:.75rem;box-shadow:0 1px 3px rgba(0,0,0,.2)}}\
header{{display:flex;align-items:center;gap:.75rem;margin-bottom:1rem}}\
header img{{max-height:2.5rem;max-width:8rem}}\
.brand{{font-weight:700;margin:0}}\
h1{{font-size:1.5rem;margin:0 0 1rem}}\
h2{{font-size:1.125rem;margin:1.75rem 0 .25rem}}\
label{{display:block;font-weight:600;margin:.9rem 0 .25rem}}\
input{{display:block;width:100%;padding:.6rem .7rem;font:inherit;color:#1a1a1a;background:#fff;border:1px solid #6b6b6b;border-radius:.375rem}}\
button{{display:block;width:100%;margin-top:1rem;padding:.6rem 1rem;font:inherit;font-weight:600;cursor:pointer;border-radius:.375rem;border:2px solid {accent};background:{accent};color:{on_accent}}}\
button.secondary{{background:#fff;color:{link};border-color:{link}}}\
button.inline{{display:inline-block;width:auto;margin:0;padding:.25rem .75rem}}\
a{{color:{link}}}\
:focus-visible{{outline:3px solid {link};outline-offset:2px}}\
.alert{{margin:1rem 0;padding:.5rem .75rem;border-left:4px solid #b00020;color:#8a0019;background:#fff}}\
.notice{{margin:1rem 0;padding:.5rem .75rem;border-left:4px solid {link};background:#fff}}\
.hint,.meta{{color:#52525b;font-size:.9rem;margin:.25rem 0 0}}\
.links{{margin-top:1.5rem}}\
.links a{{display:inline-block;margin:.25rem 1rem .25rem 0}}\
ul.sessions{{list-style:none;padding:0;margin:0}}\
ul.sessions li{{padding:.75rem 0;border-bottom:1px solid #d4d4d8}}\
ul.codes{{list-style:none;padding:0;margin:.5rem 0 0}}\
code{{font-family:ui-monospace,Menlo,Consolas,monospace}}\
.account{{overflow-wrap:anywhere}}\
a.button{{display:block;margin-top:.75rem;padding:.6rem 1rem;text-align:center;font-weight:600;text-decoration:none;border:2px solid {link};border-radius:.375rem}}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)], allowlist: &str) -> Result<UiConfig, (String, String)> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let list = if allowlist.is_empty() { Allowlist::default() } else { Allowlist::parse(allowlist).unwrap() };
        UiConfig::parse(|k| m.get(k).cloned(), &list)
    }

    #[test]
    fn defaults_are_on_named_portcullis_with_the_default_accent() {
        let c = parse(&[], "").unwrap();
        assert!(c.enabled);
        assert_eq!((c.name.as_str(), c.logo_url.is_none()), ("Portcullis", true));
        assert_eq!(c.theme, Theme::default());
        assert_eq!(c, UiConfig::default());
    }

    #[test]
    fn the_csp_allows_the_stylesheet_by_hash_the_logo_origin_and_the_return_origins_only() {
        let c = parse(
            &[("UI_LOGO_URL", "https://cdn.example/brand/logo.svg?v=2"), ("UI_ACCENT", "#ffdd00")],
            "https://app.example/done, http://127.0.0.1:3000",
        )
        .unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(c.css.as_str().as_bytes()));
        assert_eq!(
            c.csp,
            format!(
                "default-src 'none'; style-src 'sha256-{hash}'; img-src https://cdn.example; \
                 form-action 'self' https://app.example http://127.0.0.1:3000; frame-ancestors 'none'; base-uri 'none'"
            )
        );
        assert!(!c.csp.contains("script-src") && !c.csp.contains("unsafe"));
        // The accent is in the stylesheet, and so is its readable text colour.
        assert!(c.css.as_str().contains("background:#ffdd00;color:#000000"), "{}", c.css.as_str());
        assert!(!parse(&[], "").unwrap().csp.contains("img-src"));
    }

    #[test]
    fn bad_brand_values_name_their_setting() {
        for (k, v) in [
            ("UI_ENABLED", "yes"),
            ("UI_ACCENT", "blue"),
            ("UI_ACCENT", "#12345"),
            ("UI_LOGO_URL", "http://cdn.example/logo.png"),
            ("UI_LOGO_URL", "javascript:alert(1)"),
            ("UI_LOGO_URL", "https://user:pw@cdn.example/logo.png"),
            ("UI_LOGO_URL", "/logo.png"),
            ("UI_NAME", "Acme\nInc"),
        ] {
            let (name, why) = parse(&[(k, v)], "").unwrap_err();
            assert_eq!(name, k, "{k}={v}: {why}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(parse(&[("UI_NAME", &long)], "").unwrap_err().0, "UI_NAME");
        // The brand settings also brand the emails: they stand with the pages off.
        assert!(!parse(&[("UI_ENABLED", "false"), ("UI_ACCENT", "#000000")], "").unwrap().enabled);
        assert!(!parse(&[("UI_ENABLED", "false")], "").unwrap().enabled);
    }
}
