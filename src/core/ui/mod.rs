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
//! script, except on a page showing passkeys: there the one static script
//! [`PASSKEY_SCRIPT`] (WebAuthn needs script), allowed by its SHA-256 and its
//! exact URL, fetching only its options endpoint (`connect-src` that one
//! URL); no inline script ever; images only from the logo's origin; forms only to this
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

use crate::core::brand::Brand;
use crate::core::oauth::redirect::Allowlist;
use theme::Theme;

/// The pages' `Referrer-Policy`: our own form posts then carry our
/// `Origin` (not `null`), which [`forms::check_csrf`] requires.
pub const PAGE_REFERRER_POLICY: &str = "same-origin";
/// Where the pages live under `AUTH_PREFIX`.
pub const UI_PATH: &str = "/ui";
/// The pages' one script: the passkey ceremonies (`navigator.credentials`),
/// served as is at [`PASSKEY_SCRIPT_PATH`] and run only by pages that show
/// passkeys. Pure ASCII: its CSP hash and its `integrity` are of these bytes.
pub const PASSKEY_SCRIPT: &str = include_str!("passkey.js");
/// Where [`PASSKEY_SCRIPT`] is served, under `AUTH_PREFIX`.
pub const PASSKEY_SCRIPT_PATH: &str = "/ui/passkey.js";
/// `Cache-Control` of [`PASSKEY_SCRIPT`]: pages ask for it with its
/// version in the query ([`UiConfig::script_version`]), so a new script is
/// a new URL.
pub const PASSKEY_SCRIPT_CACHE: &str = "public, max-age=31536000, immutable";
/// The sign-in options endpoint, under `AUTH_PREFIX`, that the login
/// page's script fetches.
pub const LOGIN_OPTIONS_PATH: &str = "/passkeys/login/options";
/// The registration options endpoint, under `AUTH_PREFIX`, that the account
/// page's script fetches.
pub const REGISTER_OPTIONS_PATH: &str = "/passkeys/register/options";

/// A page's use of [`PASSKEY_SCRIPT`]: what its CSP must allow, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptUse<'a> {
    /// The page's own origin (`scheme://host[:port]`).
    pub origin: &'a str,
    /// `AUTH_PREFIX`.
    pub auth_prefix: &'a str,
    /// The options endpoint the script fetches ([`LOGIN_OPTIONS_PATH`] or
    /// [`REGISTER_OPTIONS_PATH`]).
    pub options_path: &'static str,
}

/// The hosted pages' settings and what is derived from them once.
#[derive(Debug, Clone, PartialEq)]
pub struct UiConfig {
    /// `UI_ENABLED` (default true): false answers 404 under `/auth/ui/`.
    pub enabled: bool,
    /// `UI_NAME`, `UI_LOGO_URL`, `UI_ACCENT` (shared with the emails).
    pub brand: Brand,
    /// The colours computed from the accent.
    pub theme: Theme,
    /// The stylesheet, inlined in every page.
    pub css: Css,
    /// The `Content-Security-Policy` of every page without script.
    pub csp: String,
    /// `sha256-…` of [`PASSKEY_SCRIPT`]: its `integrity` and CSP source.
    pub script_integrity: String,
    /// The first 8 bytes of the same, hex: the version in its URL's query.
    pub script_version: String,
}

impl UiConfig {
    /// Reads `UI_ENABLED` through `var` (trimmed, empty as unset), with the
    /// `brand` read once for the pages and the emails; `allowlist` is
    /// `REDIRECT_ALLOWLIST`, whose origins the pages' forms may end up at.
    /// Errors are `(setting, why)`.
    pub fn parse(
        var: impl Fn(&str) -> Option<String>,
        brand: Brand,
        allowlist: &Allowlist,
    ) -> Result<Self, (String, String)> {
        let enabled = match var("UI_ENABLED").as_deref() {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(v) => return Err(("UI_ENABLED".to_string(), format!("{v:?} must be true or false"))),
        };
        let theme = Theme::new(brand.accent);
        let css = stylesheet(&theme);
        let csp = content_security_policy(&css, brand.logo_url.as_ref(), allowlist);
        Ok(Self::with(enabled, brand, theme, css, csp))
    }

    fn with(enabled: bool, brand: Brand, theme: Theme, css: Css, csp: String) -> Self {
        let digest = Sha256::digest(PASSKEY_SCRIPT.as_bytes());
        let script_integrity = format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest));
        let script_version = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self { enabled, brand, theme, css, csp, script_integrity, script_version }
    }

    /// The headers of every page (besides the gateway's own security
    /// headers and `Cache-Control: no-store`; these replace its defaults of
    /// the same names). A page that runs [`PASSKEY_SCRIPT`] (`script`) gets
    /// `script-src` its hash and its exact URL (either admits it: the hash
    /// where browsers match hashes of external scripts, the URL elsewhere;
    /// the page's `integrity` pins the bytes either way) and `connect-src`
    /// the one options endpoint it fetches; every other page no script.
    pub fn headers(&self, script: Option<&ScriptUse<'_>>) -> [(&'static str, String); 2] {
        let csp = match script {
            None => self.csp.clone(),
            Some(s) => format!(
                "{}; script-src '{}' {origin}{prefix}{PASSKEY_SCRIPT_PATH}; connect-src {origin}{prefix}{options}",
                self.csp,
                self.script_integrity,
                origin = s.origin,
                prefix = s.auth_prefix,
                options = s.options_path,
            ),
        };
        [("content-security-policy", csp), ("referrer-policy", PAGE_REFERRER_POLICY.into())]
    }
}

impl Default for UiConfig {
    fn default() -> Self {
        let theme = Theme::default();
        let css = stylesheet(&theme);
        let csp = content_security_policy(&css, None, &Allowlist::default());
        Self::with(true, Brand::default(), theme, css, csp)
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
[hidden]{{display:none!important}}\
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
        let brand = Brand::from_lookup(&|k: &str| m.get(k).cloned())?;
        UiConfig::parse(|k| m.get(k).cloned(), brand, &list)
    }

    #[test]
    fn defaults_are_on_named_portcullis_with_the_default_accent() {
        let c = parse(&[], "").unwrap();
        assert!(c.enabled);
        assert_eq!((c.brand.name.as_str(), c.brand.logo_url.is_none()), ("Portcullis", true));
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
    fn ui_enabled_is_a_boolean_and_the_brand_stands_with_the_pages_off() {
        let (name, _) = parse(&[("UI_ENABLED", "yes")], "").unwrap_err();
        assert_eq!(name, "UI_ENABLED");
        // The brand settings also brand the emails: they stand with the pages off.
        let off = parse(&[("UI_ENABLED", "false"), ("UI_ACCENT", "#000000")], "").unwrap();
        assert!(!off.enabled);
        assert_eq!(off.brand.accent.hex(), "#000000");
        assert_eq!(parse(&[("UI_ENABLED", "false"), ("UI_ACCENT", "blue")], "").unwrap_err().0, "UI_ACCENT");
    }

    #[test]
    fn a_page_running_the_passkey_script_allows_exactly_it_and_its_options_endpoint() {
        let c = parse(&[], "https://app.example/done").unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(PASSKEY_SCRIPT.as_bytes()));
        assert_eq!(c.script_integrity, format!("sha256-{hash}"));
        let [(name, none), _] = c.headers(None);
        assert_eq!((name, none.as_str()), ("content-security-policy", c.csp.as_str()));
        assert!(!none.contains("script-src") && !none.contains("connect-src"));
        let script = ScriptUse { origin: "https://gw.example", auth_prefix: "/id", options_path: LOGIN_OPTIONS_PATH };
        let [(_, csp), (_, referrer)] = c.headers(Some(&script));
        assert_eq!(
            csp,
            format!(
                "{}; script-src 'sha256-{hash}' https://gw.example/id/ui/passkey.js; \
                 connect-src https://gw.example/id/passkeys/login/options",
                c.csp
            )
        );
        assert!(csp.starts_with("default-src 'none'; ") && !csp.contains("unsafe"));
        assert!(!csp.split("; script-src").nth(1).unwrap().contains("'self'"), "not the whole origin: {csp}");
        assert_eq!(referrer, PAGE_REFERRER_POLICY);
        // The served bytes are the hashed bytes: ASCII, and the version is the hash's.
        assert!(PASSKEY_SCRIPT.is_ascii());
        let hex: String =
            Sha256::digest(PASSKEY_SCRIPT.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
        assert_eq!(c.script_version, hex);
        // It writes text, never markup: a server's detail cannot become HTML.
        assert!(!PASSKEY_SCRIPT.contains("innerHTML") && !PASSKEY_SCRIPT.contains("eval("));
    }
}
