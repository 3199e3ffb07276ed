//! `OAUTH_PROVIDERS`, the per-provider `OAUTH_<ID>_CLIENT_SECRET` secrets and
//! `REDIRECT_ALLOWLIST`, parsed and validated at start.

use serde::Deserialize;
use url::Url;

use crate::core::oauth::redirect::Allowlist;

/// Longest provider id.
pub const MAX_PROVIDER_ID_LEN: usize = 32;

/// The OAuth settings; `providers` is empty when OAuth sign-in is off.
#[derive(Debug, Clone, Default)]
pub struct OAuthConfig {
    /// Configured providers, in configuration order.
    pub providers: Vec<ProviderConfig>,
    /// Where the browser may be sent back to.
    pub redirect_allowlist: Allowlist,
}

impl OAuthConfig {
    /// The provider with this id.
    pub fn provider(&self, id: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.id == id)
    }
}

/// What protocol a provider speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenID Connect, discovered from `issuer`.
    Oidc {
        /// The issuer URL (no trailing slash), exactly as ID tokens carry it —
        /// except that Microsoft's multi-tenant discovery names a
        /// `{tenantid}` placeholder, filled from the token's `tid`.
        issuer: String,
    },
    /// GitHub's OAuth 2.0 apps: no ID token; the user and their verified
    /// emails come from the REST API.
    Github {
        /// Web base URL (`https://github.com`): `/login/oauth/authorize`, `/login/oauth/access_token`.
        base_url: String,
        /// REST API base URL (`https://api.github.com`): `/user`, `/user/emails`.
        api_url: String,
    },
}

/// One configured provider.
#[derive(Clone)]
pub struct ProviderConfig {
    /// Its id in paths and events (`/auth/oauth/{id}/…`, `provider`).
    pub id: String,
    /// Protocol and endpoints.
    pub kind: ProviderKind,
    /// OAuth client id.
    pub client_id: String,
    /// `OAUTH_<ID>_CLIENT_SECRET`; `None` for a public client (PKCE only).
    pub client_secret: Option<String>,
    /// Scopes asked for.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("scopes", &self.scopes)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    id: String,
    #[serde(default)]
    preset: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    client_id: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_url: Option<String>,
}

/// The secret's name for provider `id`: `OAUTH_<ID>_CLIENT_SECRET`, the id
/// uppercased with `-` as `_`.
pub fn secret_name(id: &str) -> String {
    format!("OAUTH_{}_CLIENT_SECRET", id.to_ascii_uppercase().replace('-', "_"))
}

fn base_url(what: &str, v: &str) -> Result<String, String> {
    let u = Url::parse(v).map_err(|e| format!("{what} {v:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("{what} {v:?} must be an http(s) URL"));
    }
    if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!("{what} {v:?} must not carry a query, fragment or credentials"));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

impl OAuthConfig {
    /// Parses `OAUTH_PROVIDERS` and `REDIRECT_ALLOWLIST` (values as given),
    /// reading client secrets through `secret`. `hosted_pages` says whether
    /// the hosted pages are on (`UI_ENABLED`): they return to the allowlist
    /// too, so it may then be set without providers. Errors are
    /// `(setting, why)`.
    pub fn parse(
        providers: Option<&str>,
        allowlist: Option<&str>,
        hosted_pages: bool,
        secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, (String, String)> {
        const P: &str = "OAUTH_PROVIDERS";
        let e = |why: String| (P.to_string(), why);
        let Some(raw) = providers else {
            return match allowlist {
                None => Ok(Self::default()),
                Some(v) if hosted_pages => Ok(Self {
                    providers: Vec::new(),
                    redirect_allowlist: Allowlist::parse(v).map_err(|why| ("REDIRECT_ALLOWLIST".to_string(), why))?,
                }),
                Some(_) => Err((
                    "REDIRECT_ALLOWLIST".into(),
                    "set, but neither OAUTH_PROVIDERS nor the hosted pages (UI_ENABLED is false) return anywhere"
                        .into(),
                )),
            };
        };
        let raw: Vec<RawProvider> =
            serde_json::from_str(raw).map_err(|err| e(format!("not a JSON array of providers: {err}")))?;
        if raw.is_empty() {
            return Err(e("an empty list: leave it unset to turn OAuth sign-in off".into()));
        }
        let mut out: Vec<ProviderConfig> = Vec::new();
        for r in raw {
            let id = r.id.trim().to_string();
            let valid_id = !id.is_empty()
                && id.len() <= MAX_PROVIDER_ID_LEN
                && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && id != "exchange";
            if !valid_id {
                return Err(e(format!(
                    "id {id:?}: 1-{MAX_PROVIDER_ID_LEN} characters of a-z, 0-9 and '-' (and not \"exchange\")"
                )));
            }
            if out.iter().any(|p| p.id == id) {
                return Err(e(format!("id {id:?} appears twice")));
            }
            let at = |why: String| e(format!("provider {id:?}: {why}"));
            if r.client_id.trim().is_empty() {
                return Err(at("client_id is empty".into()));
            }
            let github_only = r.base_url.is_some() || r.api_url.is_some();
            let kind = match r.preset.as_deref() {
                None => {
                    if github_only || r.tenant.is_some() {
                        return Err(at("base_url, api_url and tenant belong to presets".into()));
                    }
                    let issuer = r.issuer.as_deref().ok_or_else(|| at("issuer is required without a preset".into()))?;
                    ProviderKind::Oidc { issuer: base_url("issuer", issuer).map_err(at)? }
                }
                Some("google") => {
                    if github_only || r.tenant.is_some() {
                        return Err(at("the google preset takes issuer only".into()));
                    }
                    let issuer = r.issuer.as_deref().unwrap_or("https://accounts.google.com");
                    ProviderKind::Oidc { issuer: base_url("issuer", issuer).map_err(at)? }
                }
                Some("microsoft") => {
                    if github_only {
                        return Err(at("the microsoft preset takes issuer or tenant".into()));
                    }
                    let issuer = match (&r.issuer, &r.tenant) {
                        (Some(_), Some(_)) => return Err(at("give issuer or tenant, not both".into())),
                        (Some(i), None) => i.clone(),
                        (None, tenant) => {
                            let tenant = tenant.as_deref().unwrap_or("common");
                            if tenant.is_empty()
                                || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                            {
                                return Err(at(format!("tenant {tenant:?} is not a tenant id or name")));
                            }
                            format!("https://login.microsoftonline.com/{tenant}/v2.0")
                        }
                    };
                    ProviderKind::Oidc { issuer: base_url("issuer", &issuer).map_err(at)? }
                }
                Some("github") => {
                    if r.issuer.is_some() || r.tenant.is_some() {
                        return Err(at("the github preset speaks OAuth 2.0, not OIDC: no issuer or tenant".into()));
                    }
                    ProviderKind::Github {
                        base_url: base_url("base_url", r.base_url.as_deref().unwrap_or("https://github.com"))
                            .map_err(at)?,
                        api_url: base_url("api_url", r.api_url.as_deref().unwrap_or("https://api.github.com"))
                            .map_err(at)?,
                    }
                }
                Some(other) => return Err(at(format!("unknown preset {other:?} (google, microsoft or github)"))),
            };
            let scopes = match r.scopes {
                Some(s) => {
                    if s.iter()
                        .any(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
                    {
                        return Err(at("scopes must be non-empty tokens without spaces or quotes".into()));
                    }
                    s
                }
                None => match kind {
                    ProviderKind::Oidc { .. } => vec!["openid".into(), "email".into(), "profile".into()],
                    ProviderKind::Github { .. } => vec!["read:user".into(), "user:email".into()],
                },
            };
            if matches!(kind, ProviderKind::Oidc { .. }) && !scopes.iter().any(|s| s == "openid") {
                return Err(at("scopes must include \"openid\"".into()));
            }
            let client_secret = secret(&secret_name(&id)).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
            if matches!(kind, ProviderKind::Github { .. }) && client_secret.is_none() {
                return Err((secret_name(&id), "missing: GitHub apps need their client secret".into()));
            }
            out.push(ProviderConfig { id, kind, client_id: r.client_id.trim().to_string(), client_secret, scopes });
        }
        let redirect_allowlist = match allowlist {
            None => {
                return Err((
                    "REDIRECT_ALLOWLIST".into(),
                    "missing: OAUTH_PROVIDERS is set, so list where sign-ins may return to".into(),
                ))
            }
            Some(v) => Allowlist::parse(v).map_err(|why| ("REDIRECT_ALLOWLIST".to_string(), why))?,
        };
        Ok(Self { providers: out, redirect_allowlist })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: Option<&str> = Some("https://app.example");

    fn parse(p: &str) -> Result<OAuthConfig, (String, String)> {
        OAuthConfig::parse(Some(p), LIST, true, |name| (name == "OAUTH_GH_CLIENT_SECRET").then(|| "s3cret".to_string()))
    }

    #[test]
    fn providers_and_presets_are_parsed() {
        let c = parse(
            r#"[{"id":"acme","issuer":"http://127.0.0.1:9400/","client_id":"portcullis"},
                {"id":"google","preset":"google","client_id":"g"},
                {"id":"ms","preset":"microsoft","client_id":"m","tenant":"contoso.onmicrosoft.com"},
                {"id":"gh","preset":"github","client_id":"x","base_url":"http://127.0.0.1:9500","scopes":["user:email"]}]"#,
        )
        .unwrap();
        assert_eq!(c.providers.len(), 4);
        let acme = c.provider("acme").unwrap();
        assert_eq!(acme.kind, ProviderKind::Oidc { issuer: "http://127.0.0.1:9400".into() });
        assert_eq!(acme.scopes, ["openid", "email", "profile"]);
        assert_eq!(acme.client_secret, None);
        assert_eq!(
            c.provider("google").unwrap().kind,
            ProviderKind::Oidc { issuer: "https://accounts.google.com".into() }
        );
        assert_eq!(
            c.provider("ms").unwrap().kind,
            ProviderKind::Oidc { issuer: "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0".into() }
        );
        let gh = c.provider("gh").unwrap();
        assert_eq!(
            gh.kind,
            ProviderKind::Github { base_url: "http://127.0.0.1:9500".into(), api_url: "https://api.github.com".into() }
        );
        assert_eq!(gh.client_secret.as_deref(), Some("s3cret"));
        assert!(!format!("{gh:?}").contains("s3cret"));
    }

    #[test]
    fn bad_providers_name_the_setting() {
        for bad in [
            "{}",
            "[]",
            r#"[{"id":"Acme","issuer":"https://a.example","client_id":"c"}]"#,
            r#"[{"id":"exchange","issuer":"https://a.example","client_id":"c"}]"#,
            r#"[{"id":"a","client_id":"c"}]"#,
            r#"[{"id":"a","issuer":"ftp://a.example","client_id":"c"}]"#,
            r#"[{"id":"a","issuer":"https://a.example","client_id":""}]"#,
            r#"[{"id":"a","issuer":"https://a.example","client_id":"c","scopes":["email"]}]"#,
            r#"[{"id":"a","issuer":"https://a.example","client_id":"c","secret":"x"}]"#,
            r#"[{"id":"a","preset":"facebook","client_id":"c"}]"#,
            r#"[{"id":"a","issuer":"https://a.example","client_id":"c"},{"id":"a","issuer":"https://b.example","client_id":"c"}]"#,
        ] {
            let (name, why) = parse(bad).unwrap_err();
            assert_eq!(name, "OAUTH_PROVIDERS", "{bad}: {why}");
        }
    }

    #[test]
    fn the_gateway_config_names_the_oauth_setting_at_fault() {
        let cfg = |pairs: &[(&str, &str)]| {
            let mut m: std::collections::HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            m.insert("KEY_ENCRYPTION_KEY".into(), crate::core::signing_keys::b64(&[7; 32]));
            crate::core::config::Config::from_lookup(move |k| m.get(k).cloned())
        };
        let ok = r#"[{"id":"gh","preset":"github","client_id":"c"}]"#;
        for (pairs, setting) in [
            (vec![("OAUTH_PROVIDERS", "nope")], "OAUTH_PROVIDERS"),
            (vec![("OAUTH_PROVIDERS", ok), ("REDIRECT_ALLOWLIST", "https://a.example")], "OAUTH_GH_CLIENT_SECRET"),
            (vec![("OAUTH_PROVIDERS", ok), ("OAUTH_GH_CLIENT_SECRET", "s")], "REDIRECT_ALLOWLIST"),
            (vec![("REDIRECT_ALLOWLIST", "https://a.example"), ("UI_ENABLED", "false")], "REDIRECT_ALLOWLIST"),
            (vec![("REDIRECT_ALLOWLIST", "a.example")], "REDIRECT_ALLOWLIST"),
            (
                vec![("OAUTH_PROVIDERS", ok), ("OAUTH_GH_CLIENT_SECRET", "s"), ("REDIRECT_ALLOWLIST", "a.example")],
                "REDIRECT_ALLOWLIST",
            ),
        ] {
            let e = cfg(&pairs).unwrap_err();
            assert!(e.0.starts_with(setting), "{pairs:?}: {e}");
        }
        let c = cfg(&[
            ("OAUTH_PROVIDERS", ok),
            ("OAUTH_GH_CLIENT_SECRET", "s"),
            ("REDIRECT_ALLOWLIST", "https://a.example"),
        ])
        .unwrap();
        assert_eq!(c.oauth.providers.len(), 1);
        assert!(cfg(&[]).unwrap().oauth.providers.is_empty());
        // The hosted pages return to the allowlist without any provider.
        let c = cfg(&[("REDIRECT_ALLOWLIST", "https://a.example")]).unwrap();
        assert_eq!(
            (c.oauth.providers.len(), c.oauth.redirect_allowlist.default_target()),
            (0, Some("https://a.example/"))
        );
    }

    #[test]
    fn github_needs_its_secret_and_oauth_needs_an_allowlist() {
        let (name, _) = parse(r#"[{"id":"other","preset":"github","client_id":"c"}]"#).unwrap_err();
        assert_eq!(name, "OAUTH_OTHER_CLIENT_SECRET");
        let (name, _) = OAuthConfig::parse(
            Some(r#"[{"id":"a","issuer":"https://a.example","client_id":"c"}]"#),
            None,
            true,
            |_| None,
        )
        .unwrap_err();
        assert_eq!(name, "REDIRECT_ALLOWLIST");
        let (name, _) = OAuthConfig::parse(None, LIST, false, |_| None).unwrap_err();
        assert_eq!(name, "REDIRECT_ALLOWLIST");
        assert!(OAuthConfig::parse(None, LIST, true, |_| None).unwrap().providers.is_empty());
        assert!(OAuthConfig::parse(None, None, false, |_| None).unwrap().providers.is_empty());
        assert_eq!(secret_name("my-idp"), "OAUTH_MY_IDP_CLIENT_SECRET");
    }
}
