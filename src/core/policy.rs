//! Route policies: the `ROUTES` rules, path normalisation, and the decision
//! for one request.
//!
//! Matching happens on the normalised path — percent-decoded, `\` read as `/`,
//! duplicate slashes collapsed, `.` and `..` resolved, trailing slash dropped,
//! compared lowercased — and the gateway forwards that same normalised path, so the
//! origin sees exactly what was authorised. Encoded slashes, backslashes,
//! NULs and path parameters (`;`, raw or encoded) are refused outright: they
//! are how path tricks smuggle a segment past a rule.

use serde::Deserialize;

use crate::core::error::{Error, TokenError};

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 8192;

/// What a route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Anyone; no token is needed and none is checked.
    Public,
    /// Any valid access token.
    Authenticated,
    /// A valid token carrying this role.
    Role(String),
    /// A valid token carrying at least one of these roles.
    AnyRole(Vec<String>),
}

impl Policy {
    /// Parses `public`, `authenticated`, `role:<name>` or `any_role:[a, b]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "public" => return Ok(Self::Public),
            "authenticated" => return Ok(Self::Authenticated),
            _ => {}
        }
        if let Some(role) = s.strip_prefix("role:") {
            let role = role.trim();
            if !is_role_name(role) {
                return Err(format!("policy {s:?}: invalid role name"));
            }
            return Ok(Self::Role(role.to_string()));
        }
        if let Some(list) = s.strip_prefix("any_role:") {
            let inner = list
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or_else(|| format!("policy {s:?}: any_role needs a list like any_role:[admin,editor]"))?;
            let roles: Vec<String> = inner
                .split(',')
                .map(|r| r.trim().trim_matches('"').trim().to_string())
                .filter(|r| !r.is_empty())
                .collect();
            if roles.is_empty() || !roles.iter().all(|r| is_role_name(r)) {
                return Err(format!("policy {s:?}: any_role needs one or more valid role names"));
            }
            return Ok(Self::AnyRole(roles));
        }
        Err(format!("unknown policy {s:?} (expected public, authenticated, role:<name> or any_role:[...])"))
    }

    /// Whether a caller with `roles` satisfies the policy (a token is assumed
    /// verified for every policy but `Public`).
    pub fn allows(&self, roles: &[String]) -> bool {
        match self {
            Self::Public | Self::Authenticated => true,
            Self::Role(r) => roles.iter().any(|have| have == r),
            Self::AnyRole(rs) => rs.iter().any(|r| roles.iter().any(|have| have == r)),
        }
    }
}

/// Whether `s` is an acceptable role name: 1–64 of `[A-Za-z0-9_.:-]`.
pub fn is_role_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

/// One `ROUTES` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Lowercased, normalised pattern without its `/*` suffix.
    prefix: String,
    /// Whether the pattern ended in `/*` (matches the prefix and below).
    subtree: bool,
    /// Uppercased methods; `None` for all.
    methods: Option<Vec<String>>,
    /// The policy.
    pub policy: Policy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    policy: String,
}

impl Rule {
    /// Whether the rule applies to a request (path already normalised).
    pub fn matches(&self, method: &str, normalised_path: &str) -> bool {
        let path_ok = if self.subtree {
            normalised_path == self.prefix
                || (normalised_path.starts_with(&self.prefix)
                    && (self.prefix == "/" || normalised_path.as_bytes().get(self.prefix.len()) == Some(&b'/')))
        } else {
            normalised_path == self.prefix
        };
        path_ok && self.methods.as_ref().is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// The ordered rule list and the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    rules: Vec<Rule>,
    default: Policy,
}

impl Routes {
    /// Parses the `ROUTES` JSON and the `DEFAULT_POLICY`; errors name the problem.
    pub fn parse(routes_json: Option<&str>, default_policy: Option<&str>) -> Result<Self, String> {
        let default = match default_policy {
            Some(s) if !s.trim().is_empty() => Policy::parse(s).map_err(|e| format!("DEFAULT_POLICY: {e}"))?,
            _ => Policy::Authenticated,
        };
        let raw: Vec<RawRule> = match routes_json {
            Some(s) if !s.trim().is_empty() => {
                serde_json::from_str(s).map_err(|e| format!("ROUTES: not a JSON array of rules: {e}"))?
            }
            _ => Vec::new(),
        };
        let mut rules = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let at = |e: String| format!("ROUTES[{i}]: {e}");
            if !r.path.starts_with('/') {
                return Err(at(format!("path {:?} must start with /", r.path)));
            }
            let (base, subtree) = match r.path.strip_suffix("/*") {
                Some(b) => (if b.is_empty() { "/" } else { b }, true),
                None => (r.path.as_str(), false),
            };
            if base.contains('*') {
                return Err(at(format!("path {:?}: * is only allowed as a final /*", r.path)));
            }
            let prefix =
                normalise_path(base).map_err(|_| at(format!("path {:?} is not a valid path", r.path)))?.to_lowercase();
            let methods = match r.methods {
                Some(ms) if ms.is_empty() => return Err(at("methods must not be empty".into())),
                Some(ms) => {
                    for m in &ms {
                        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                            return Err(at(format!("method {m:?} is not an HTTP method")));
                        }
                    }
                    Some(ms.into_iter().map(|m| m.to_ascii_uppercase()).collect())
                }
                None => None,
            };
            let policy = Policy::parse(&r.policy).map_err(at)?;
            rules.push(Rule { prefix, subtree, methods, policy });
        }
        Ok(Self { rules, default })
    }

    /// The policy for a request: the first matching rule's, else the default.
    pub fn policy_for(&self, method: &str, normalised_path: &str) -> &Policy {
        let key = normalised_path.to_lowercase();
        self.rules.iter().find(|r| r.matches(method, &key)).map_or(&self.default, |r| &r.policy)
    }
}

/// A request path made canonical; see the module docs. The result starts with
/// `/`, has no empty, `.` or `..` segments and no trailing slash. Case is
/// kept (the origin gets it); matching lowercases, so case cannot dodge a rule.
pub fn normalise_path(raw: &str) -> Result<String, Error> {
    let bad = || Error::validation("invalid_path", "the request path is not acceptable");
    if raw.len() > MAX_PATH_LEN {
        return Err(bad());
    }
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split(['/', '\\']) {
        // Servers that strip path parameters (Tomcat, Jetty, Spring) read
        // `/admin;x/users` as `/admin/users` and `/public/..;/admin` as
        // `/admin`, while a rule sees other segments: any `;`, raw or
        // `%3B`, is refused (as Spring Security's StrictHttpFirewall does).
        if seg.contains(';') {
            return Err(bad());
        }
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The auth API's own name for a normalised request path, or `None` when the
/// path belongs to the origin: under `prefix` (`AUTH_PREFIX`, matched
/// case-insensitively) it is `/auth` plus the rest, so the API's routes do
/// not depend on the prefix; `/.well-known/...` is the API's as it is.
pub fn auth_api_path(normalised: &str, prefix: &str) -> Option<String> {
    // Runs on every gateway request: no allocation unless the path is the API's.
    let under = |p: &str| {
        normalised.get(..p.len()).is_some_and(|head| head.eq_ignore_ascii_case(p))
            && matches!(normalised.as_bytes().get(p.len()), None | Some(b'/'))
    };
    if under(prefix) {
        return Some(format!("/auth{}", &normalised[prefix.len()..]));
    }
    under("/.well-known").then(|| normalised.to_string())
}

/// Decodes `%XX` escapes; refuses encoded `/`, `\`, NUL and other control
/// characters, raw control characters, and invalid UTF-8 or escapes.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            if v == b'/' || v == b'\\' || v == b'%' || v < 0x20 || v == 0x7f {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            if b < 0x20 || b == 0x7f {
                return None;
            }
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks that a verified caller satisfies `policy`: `Ok` or the 403 to send.
pub fn authorize(policy: &Policy, roles: &[String]) -> Result<(), Error> {
    if policy.allows(roles) {
        Ok(())
    } else {
        Err(Error::InsufficientRole { detail: "your roles do not allow this request" })
    }
}

/// The 401 for a request with no token on a protected route.
pub fn missing_token() -> Error {
    Error::InvalidToken(TokenError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev_routes() -> Routes {
        Routes::parse(
            Some(
                r#"[{"path": "/api/public/*", "policy": "public"}, {"path": "/api/admin/*", "policy": "role:admin"}]"#,
            ),
            None,
        )
        .unwrap()
    }

    fn policy(method: &str, raw: &str) -> Policy {
        dev_routes().policy_for(method, &normalise_path(raw).unwrap()).clone()
    }

    #[test]
    fn subtree_pattern_matches_itself_and_below_only() {
        assert_eq!(policy("GET", "/api/public"), Policy::Public);
        assert_eq!(policy("GET", "/api/public/x/y"), Policy::Public);
        assert_eq!(policy("GET", "/api/publicity"), Policy::Authenticated);
        assert_eq!(policy("GET", "/api/admin/users"), Policy::Role("admin".into()));
    }

    #[test]
    fn path_tricks_cannot_leave_a_protected_rule() {
        for trick in [
            "/api/public/../admin/users",
            "/api/public/%2e%2e/admin/users",
            "/api/public/%2E%2E/admin",
            "/api/public/.%2e/admin",
            "//api//admin//users",
            "/api/admin/users/",
            "/API/Admin/users",
            "/api/./admin/users",
            "/api/public\\..\\admin",
        ] {
            assert_eq!(policy("GET", trick), Policy::Role("admin".into()), "{trick}");
        }
    }

    #[test]
    fn encoded_slashes_and_nuls_are_refused() {
        for bad in [
            "/api/public%2f..%2fadmin",
            "/api/%5cadmin",
            "/api/a%00b",
            "/a%zz",
            "/a%",
            "/a%c3%28",
            "/api/public/..;/admin/x",
            "/api/public/..;jsessionid=1/admin",
            "/api/public/.;/../admin",
            "/api/public/%2e%2e;/admin",
            "/api/public/.%2e;x/admin",
        ] {
            assert!(normalise_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_auth_api_lives_under_its_prefix_and_well_known() {
        assert_eq!(auth_api_path("/auth/login", "/auth").as_deref(), Some("/auth/login"));
        assert_eq!(auth_api_path("/AUTH/login", "/auth").as_deref(), Some("/auth/login"));
        assert_eq!(auth_api_path("/auth", "/auth").as_deref(), Some("/auth"));
        assert_eq!(auth_api_path("/authx/login", "/auth"), None);
        assert_eq!(auth_api_path("/api/auth/login", "/auth"), None);
        assert_eq!(auth_api_path("/.well-known/jwks.json", "/auth").as_deref(), Some("/.well-known/jwks.json"));
        assert_eq!(auth_api_path("/id/v1/sessions/x", "/id/v1").as_deref(), Some("/auth/sessions/x"));
        assert_eq!(auth_api_path("/auth/login", "/id/v1"), None, "the default prefix is the origin's then");
        assert_eq!(auth_api_path("/.well-known/jwks.json", "/id/v1").as_deref(), Some("/.well-known/jwks.json"));
        assert_eq!(auth_api_path("/", "/auth"), None);
        assert_eq!(auth_api_path("/a", "/auth"), None);
        assert_eq!(auth_api_path("/.well-knownx", "/auth"), None);
        assert_eq!(auth_api_path("/.WELL-KNOWN/jwks.json", "/auth").as_deref(), Some("/.WELL-KNOWN/jwks.json"));
        assert_eq!(auth_api_path("/é", "/auth"), None, "a prefix length inside a character is no match");
    }

    #[test]
    fn path_parameters_are_refused_on_any_segment() {
        // Tomcat, Jetty and Spring strip them: `/api/admin;x/users` is their
        // `/api/admin/users`, which an `/api/admin/*` rule must not miss.
        for raw in [
            "/api/a;v=1/b",
            "/api/a/...;x",
            "/api/admin;x/users",
            "/api/admin%3Bx/users",
            "/api/admin%3b/users",
            "/api/admin/users;jsessionid=1",
            "/;",
        ] {
            assert!(normalise_path(raw).is_err(), "{raw}");
        }
        let routes = Routes::parse(Some(r#"[{"path": "/api/admin;x/*", "policy": "public"}]"#), None);
        assert!(routes.is_err(), "a rule cannot name a path parameter either");
    }

    #[test]
    fn methods_restrict_a_rule() {
        let r = Routes::parse(
            Some(r#"[{"path": "/api/docs/*", "methods": ["get", "HEAD"], "policy": "public"}]"#),
            Some("authenticated"),
        )
        .unwrap();
        assert_eq!(r.policy_for("GET", "/api/docs/a"), &Policy::Public);
        assert_eq!(r.policy_for("POST", "/api/docs/a"), &Policy::Authenticated);
    }

    #[test]
    fn first_match_wins_and_exact_patterns_are_exact() {
        let r = Routes::parse(
            Some(r#"[{"path": "/a", "policy": "public"}, {"path": "/a/*", "policy": "any_role:[x, \"y\"]"}]"#),
            Some("role:root"),
        )
        .unwrap();
        assert_eq!(r.policy_for("GET", "/a"), &Policy::Public);
        assert_eq!(r.policy_for("GET", "/a/b"), &Policy::AnyRole(vec!["x".into(), "y".into()]));
        assert_eq!(r.policy_for("GET", "/b"), &Policy::Role("root".into()));
    }

    #[test]
    fn malformed_routes_name_the_problem() {
        for (json, needle) in [
            ("{", "ROUTES"),
            (r#"[{"path": "x", "policy": "public"}]"#, "ROUTES[0]"),
            (r#"[{"path": "/x", "policy": "everyone"}]"#, "unknown policy"),
            (r#"[{"path": "/x/*/y", "policy": "public"}]"#, "final /*"),
            (r#"[{"path": "/x", "policy": "public", "extra": 1}]"#, "ROUTES"),
            (r#"[{"path": "/x", "methods": [], "policy": "public"}]"#, "methods"),
            (r#"[{"path": "/x", "policy": "any_role:[]"}]"#, "any_role"),
        ] {
            let err = Routes::parse(Some(json), None).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        assert!(Routes::parse(None, Some("nobody")).unwrap_err().contains("DEFAULT_POLICY"));
    }

    #[test]
    fn role_policies_check_roles() {
        assert!(Policy::Role("admin".into()).allows(&["user".into(), "admin".into()]));
        assert!(!Policy::Role("admin".into()).allows(&["user".into()]));
        assert!(Policy::AnyRole(vec!["a".into(), "b".into()]).allows(&["b".into()]));
        assert!(authorize(&Policy::Role("admin".into()), &[]).is_err());
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent_and_canonical(s in "[/a-zA-Z0-9.%\\\\]{0,60}") {
            if let Ok(n) = normalise_path(&s) {
                prop_assert!(n.starts_with('/'));
                prop_assert!(!n.contains("//"));
                prop_assert!(!n.split('/').any(|seg| seg == ".." || seg == "."));
                prop_assert_eq!(normalise_path(&n).unwrap(), n);
            }
        }
    }
}
