//! Talking to a provider: OIDC discovery and JWKS (cached per isolate, with a
//! bounded refresh when a token names an unknown key), the authorization URL,
//! the code-for-token exchange, userinfo, and GitHub's REST API. Requests are
//! built here and sent through [`ProviderNet`]; replies are parsed here.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::core::oauth::idtoken::{self, ClaimChecks, IdTokenError, Identity};
use crate::core::oauth::{ProviderConfig, ProviderKind, ProviderNet, ProviderRequest};
use crate::core::time::UnixTime;

/// How long a provider may take to answer one request.
pub const PROVIDER_TIMEOUT_MS: u32 = 10_000;
/// How long discovery documents and JWKS are trusted.
pub const DOCUMENT_CACHE_SECS: i64 = 3_600;
/// Least time between two JWKS refetches caused by an unknown `kid`.
pub const JWKS_MIN_REFRESH_SECS: i64 = 60;
/// Where Microsoft's issuers live.
const MICROSOFT_ISSUER_PREFIX: &str = "https://login.microsoftonline.com/";
/// `User-Agent` on provider calls (GitHub requires one).
const USER_AGENT: &str = "portcullis";

/// Why talking to the provider failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderFailure {
    /// Unreachable, timed out, a 5xx, or a reply we cannot use; the cause is for the log.
    Unavailable(String),
    /// The token endpoint refused the code (`invalid_grant`, a PKCE mismatch, …).
    CodeRejected(String),
    /// The ID token was refused.
    IdToken(IdTokenError),
}

impl ProviderFailure {
    /// The `login_failed` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "provider_unavailable",
            Self::CodeRejected(_) => "code_rejected",
            Self::IdToken(e) => e.reason(),
        }
    }
}

type Outcome<T> = Result<T, ProviderFailure>;

fn unavailable(what: impl std::fmt::Display) -> ProviderFailure {
    ProviderFailure::Unavailable(what.to_string())
}

/// The endpoints of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Expected `iss` of its ID tokens (OIDC); empty for GitHub.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization: String,
    /// Where codes are exchanged.
    pub token: String,
    /// OIDC userinfo, if offered.
    pub userinfo: Option<String>,
    /// OIDC JWKS.
    pub jwks_uri: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
}

fn http_url(what: &str, v: &str) -> Outcome<String> {
    match Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(v.to_string()),
        _ => Err(unavailable(format!("{what} {v:?} is not an http(s) URL"))),
    }
}

/// Parses a discovery document for the provider configured with `issuer`
/// (OIDC Discovery §4.3: its `issuer` must be exactly the configured one).
pub fn parse_discovery(issuer: &str, body: &str) -> Outcome<Endpoints> {
    let d: Discovery = serde_json::from_str(body).map_err(|e| unavailable(format!("discovery document: {e}")))?;
    // Microsoft's documents name the tenant by GUID (or, multi-tenant, a
    // `{tenantid}` placeholder) whatever name the URL used; they come over
    // TLS from its own host, which is what we hold it to.
    let microsoft = |i: &str| i.starts_with(MICROSOFT_ISSUER_PREFIX);
    let same = d.issuer.trim_end_matches('/') == issuer || (microsoft(issuer) && microsoft(&d.issuer));
    if !same {
        return Err(unavailable(format!("discovery issuer {:?} is not {issuer:?}", d.issuer)));
    }
    Ok(Endpoints {
        issuer: d.issuer,
        authorization: http_url("authorization_endpoint", &d.authorization_endpoint)?,
        token: http_url("token_endpoint", &d.token_endpoint)?,
        userinfo: d.userinfo_endpoint.map(|u| http_url("userinfo_endpoint", &u)).transpose()?,
        jwks_uri: Some(http_url("jwks_uri", &d.jwks_uri)?),
    })
}

async fn get(net: &impl ProviderNet, url: &str, headers: Vec<(String, String)>) -> Outcome<String> {
    let reply = net
        .send(&ProviderRequest {
            method: "GET",
            url: url.to_string(),
            headers,
            form: None,
            timeout_ms: PROVIDER_TIMEOUT_MS,
        })
        .await
        .map_err(|e| unavailable(format!("GET {url}: {e}")))?;
    if !reply.is_success() {
        return Err(unavailable(format!("GET {url}: HTTP {}", reply.status)));
    }
    Ok(reply.body)
}

/// A document from the isolate cache if fresh, else fetched (and cached).
async fn document(net: &impl ProviderNet, key: &str, url: &str, now: UnixTime, max_age: i64) -> Outcome<String> {
    if let Some((at, body)) = net.cached(key) {
        if now.0.saturating_sub(at.0) < max_age {
            return Ok(body);
        }
    }
    let body = get(net, url, vec![("accept".into(), "application/json".into())]).await?;
    net.cache(key, now, &body);
    Ok(body)
}

/// The provider's endpoints: discovered (OIDC) or fixed (GitHub).
pub async fn endpoints(net: &impl ProviderNet, p: &ProviderConfig, now: UnixTime) -> Outcome<Endpoints> {
    match &p.kind {
        ProviderKind::Github { base_url, .. } => Ok(Endpoints {
            issuer: String::new(),
            authorization: format!("{base_url}/login/oauth/authorize"),
            token: format!("{base_url}/login/oauth/access_token"),
            userinfo: None,
            jwks_uri: None,
        }),
        ProviderKind::Oidc { issuer } => {
            let key = format!("discovery:{}", p.id);
            let url = format!("{issuer}/.well-known/openid-configuration");
            let body = document(net, &key, &url, now, DOCUMENT_CACHE_SECS).await?;
            match parse_discovery(issuer, &body) {
                Ok(e) => Ok(e),
                Err(err) => {
                    // A bad cached copy must not stick for an hour.
                    net.cache(&key, UnixTime(i64::MIN), "");
                    Err(err)
                }
            }
        }
    }
}

/// What `/authorize` sends the browser with.
pub struct AuthorizeParams<'a> {
    /// Our callback URL.
    pub redirect_uri: &'a str,
    /// The raw `state`.
    pub state: &'a str,
    /// The raw nonce (OIDC only).
    pub nonce: &'a str,
    /// The PKCE S256 challenge.
    pub code_challenge: &'a str,
}

/// The URL the browser is sent to.
pub fn authorize_url(p: &ProviderConfig, e: &Endpoints, a: &AuthorizeParams<'_>) -> Outcome<String> {
    let mut u = Url::parse(&e.authorization).map_err(|err| unavailable(format!("authorization endpoint: {err}")))?;
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &p.client_id)
            .append_pair("redirect_uri", a.redirect_uri)
            .append_pair("scope", &p.scopes.join(" "))
            .append_pair("state", a.state)
            .append_pair("code_challenge", a.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if matches!(p.kind, ProviderKind::Oidc { .. }) {
            q.append_pair("nonce", a.nonce);
        }
    }
    Ok(u.into())
}

#[derive(Debug, Deserialize)]
struct TokenReply {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Tokens from the token endpoint.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// For userinfo / GitHub's API.
    pub access_token: Option<String>,
    /// OIDC ID token.
    pub id_token: Option<String>,
}

/// Exchanges `code` (with its PKCE `verifier`) at the token endpoint,
/// authenticating as the client: HTTP Basic when there is a secret (RFC 6749
/// §2.3.1; GitHub takes it in the form), else `client_id` in the form.
pub async fn exchange_code(
    net: &impl ProviderNet,
    p: &ProviderConfig,
    e: &Endpoints,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Outcome<Tokens> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_verifier", verifier);
    let mut headers =
        vec![("accept".to_string(), "application/json".to_string()), ("user-agent".into(), USER_AGENT.into())];
    match (&p.kind, &p.client_secret) {
        (ProviderKind::Github { .. }, secret) => {
            form.append_pair("client_id", &p.client_id);
            if let Some(s) = secret {
                form.append_pair("client_secret", s);
            }
        }
        (ProviderKind::Oidc { .. }, Some(secret)) => {
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let basic = STANDARD.encode(format!("{}:{}", enc(&p.client_id), enc(secret)));
            headers.push(("authorization".into(), format!("Basic {basic}")));
        }
        (ProviderKind::Oidc { .. }, None) => {
            form.append_pair("client_id", &p.client_id);
        }
    }
    let request = ProviderRequest {
        method: "POST",
        url: e.token.clone(),
        headers,
        form: Some(form.finish()),
        timeout_ms: PROVIDER_TIMEOUT_MS,
    };
    let reply = net.send(&request).await.map_err(|err| unavailable(format!("token endpoint: {err}")))?;
    let parsed = serde_json::from_str::<TokenReply>(&reply.body).ok();
    if reply.status >= 500 {
        return Err(unavailable(format!("token endpoint: HTTP {}", reply.status)));
    }
    // RFC 6749 §5.2: a refused grant is a 400 (401 for client authentication)
    // with an `error`; GitHub sends its `error` with a 200. Anything else that
    // is not a 2xx (a redirect, a 404 page) means the endpoint is not working.
    match parsed {
        Some(TokenReply { error: Some(err), .. }) => Err(ProviderFailure::CodeRejected(err)),
        _ if matches!(reply.status, 400 | 401) => Err(ProviderFailure::CodeRejected(format!("HTTP {}", reply.status))),
        _ if !reply.is_success() => Err(unavailable(format!("token endpoint: HTTP {}", reply.status))),
        Some(t) => Ok(Tokens { access_token: t.access_token, id_token: t.id_token }),
        None => Err(unavailable("token endpoint: the reply is not JSON")),
    }
}

/// Verifies an OIDC ID token against the provider's JWKS (refetched at most
/// once per [`JWKS_MIN_REFRESH_SECS`] when the `kid` is unknown) and checks
/// its claims.
pub async fn verify_id_token(
    net: &impl ProviderNet,
    p: &ProviderConfig,
    e: &Endpoints,
    raw: &str,
    nonce: &str,
    now: UnixTime,
) -> Outcome<Identity> {
    let token = idtoken::parse(raw).map_err(ProviderFailure::IdToken)?;
    let jwks_uri = e.jwks_uri.as_deref().ok_or_else(|| unavailable("no jwks_uri"))?;
    let key = format!("jwks:{}", p.id);
    let parse = |body: &str| serde_json::from_str::<Value>(body).map_err(|err| unavailable(format!("JWKS: {err}")));
    let mut jwks = parse(&document(net, &key, jwks_uri, now, DOCUMENT_CACHE_SECS).await?)?;
    if idtoken::select_key(&jwks, token.kid.as_deref(), token.alg).is_none() {
        let fetched_at = net.cached(&key).map(|(at, _)| at.0).unwrap_or(i64::MIN);
        if now.0.saturating_sub(fetched_at) >= JWKS_MIN_REFRESH_SECS {
            jwks = parse(&document(net, &key, jwks_uri, now, 0).await?)?;
        }
    }
    let jwk = idtoken::select_key(&jwks, token.kid.as_deref(), token.alg)
        .ok_or(ProviderFailure::IdToken(IdTokenError::UnknownKey))?;
    let ok = net
        .verify(token.alg, jwk, &token.signed, &token.signature)
        .await
        .map_err(|err| unavailable(format!("signature check: {err}")))?;
    if !ok {
        return Err(ProviderFailure::IdToken(IdTokenError::BadSignature));
    }
    // The discovery document's own spelling (it may end in a slash, or hold
    // Microsoft's `{tenantid}` placeholder), checked against the configured one.
    let issuer = e.issuer.clone();
    idtoken::check_claims(&token.claims, &ClaimChecks { issuer: &issuer, client_id: &p.client_id, nonce, now })
        .map_err(ProviderFailure::IdToken)
}

fn bearer_headers(access_token: &str, accept: &str) -> Vec<(String, String)> {
    vec![
        ("authorization".into(), format!("Bearer {access_token}")),
        ("accept".into(), accept.into()),
        ("user-agent".into(), USER_AGENT.into()),
    ]
}

/// Fills a missing email from the userinfo endpoint (OIDC Core §5.3), whose
/// `sub` must be the ID token's.
pub async fn complete_from_userinfo(
    net: &impl ProviderNet,
    e: &Endpoints,
    tokens: &Tokens,
    mut identity: Identity,
) -> Outcome<Identity> {
    let (Some(url), Some(at)) = (&e.userinfo, &tokens.access_token) else { return Ok(identity) };
    if identity.email.is_some() {
        return Ok(identity);
    }
    let body = get(net, url, bearer_headers(at, "application/json")).await?;
    let claims = match serde_json::from_str::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => return Err(unavailable("userinfo: not a JSON object")),
    };
    let info = idtoken::profile(&claims);
    if info.subject != identity.subject {
        return Err(unavailable("userinfo: sub differs from the ID token's"));
    }
    identity.email = info.email;
    identity.email_verified = info.email_verified;
    identity.name = identity.name.or(info.name);
    identity.picture = identity.picture.or(info.picture);
    identity.locale = identity.locale.or(info.locale);
    Ok(identity)
}

#[derive(Debug, Deserialize)]
struct GithubUser {
    id: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GithubEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

/// The GitHub identity: `GET /user` (the numeric id is the subject) and
/// `GET /user/emails` (the primary address, verified or not as GitHub says).
pub async fn github_identity(net: &impl ProviderNet, api_url: &str, tokens: &Tokens) -> Outcome<Identity> {
    let at = tokens.access_token.as_deref().ok_or_else(|| unavailable("GitHub returned no access_token"))?;
    let accept = "application/vnd.github+json";
    let user: GithubUser =
        serde_json::from_str(&get(net, &format!("{api_url}/user"), bearer_headers(at, accept)).await?)
            .map_err(|e| unavailable(format!("GitHub /user: {e}")))?;
    let emails: Vec<GithubEmail> =
        serde_json::from_str(&get(net, &format!("{api_url}/user/emails"), bearer_headers(at, accept)).await?)
            .map_err(|e| unavailable(format!("GitHub /user/emails: {e}")))?;
    Ok(github_profile(user.id, user.name, user.avatar_url, &emails))
}

fn github_profile(id: u64, name: Option<String>, picture: Option<String>, emails: &[GithubEmail]) -> Identity {
    let primary = emails.iter().find(|e| e.primary);
    Identity {
        subject: id.to_string(),
        email: primary.map(|e| e.email.clone()),
        email_verified: primary.is_some_and(|e| e.verified),
        name: name.filter(|n| !n.is_empty()),
        picture: picture.filter(|p| !p.is_empty()),
        locale: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_must_name_the_configured_issuer() {
        let doc = r#"{"issuer":"https://idp.example","authorization_endpoint":"https://idp.example/auth",
                      "token_endpoint":"https://idp.example/token","jwks_uri":"https://idp.example/jwks"}"#;
        let e = parse_discovery("https://idp.example", doc).unwrap();
        assert_eq!(e.token, "https://idp.example/token");
        assert_eq!(e.userinfo, None);
        assert!(parse_discovery("https://other.example", doc).is_err());
        let bad = doc.replace("https://idp.example/token", "javascript:alert(1)");
        assert!(parse_discovery("https://idp.example", &bad).is_err());
        let ms = doc.replace(
            "\"issuer\":\"https://idp.example\"",
            "\"issuer\":\"https://login.microsoftonline.com/{tenantid}/v2.0\"",
        );
        let e = parse_discovery("https://login.microsoftonline.com/common/v2.0", &ms).unwrap();
        assert_eq!(e.issuer, "https://login.microsoftonline.com/{tenantid}/v2.0");
        assert!(parse_discovery("https://idp.example", &ms).is_err());
    }

    #[test]
    fn the_authorize_url_carries_state_pkce_and_nonce() {
        let p = ProviderConfig {
            id: "acme".into(),
            kind: ProviderKind::Oidc { issuer: "https://idp.example".into() },
            client_id: "portcullis".into(),
            client_secret: None,
            scopes: vec!["openid".into(), "email".into()],
        };
        let e = Endpoints {
            issuer: "https://idp.example".into(),
            authorization: "https://idp.example/auth?tenant=x".into(),
            token: String::new(),
            userinfo: None,
            jwks_uri: None,
        };
        let a = AuthorizeParams {
            redirect_uri: "https://gw.example/auth/oauth/acme/callback",
            state: "st",
            nonce: "nn",
            code_challenge: "cc",
        };
        let u = Url::parse(&authorize_url(&p, &e, &a).unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x");
        assert_eq!(q["scope"], "openid email");
        assert_eq!((q["state"].as_str(), q["nonce"].as_str(), q["code_challenge"].as_str()), ("st", "nn", "cc"));
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://gw.example/auth/oauth/acme/callback");
    }

    #[test]
    fn github_uses_the_primary_email_and_its_verification() {
        let emails = vec![
            GithubEmail { email: "old@example.com".into(), primary: false, verified: true },
            GithubEmail { email: "main@example.com".into(), primary: true, verified: false },
        ];
        let id = github_profile(42, Some("Octo".into()), None, &emails);
        assert_eq!(
            (id.subject.as_str(), id.email.as_deref(), id.email_verified),
            ("42", Some("main@example.com"), false)
        );
        assert_eq!(github_profile(1, None, None, &[]).email, None);
    }
}
