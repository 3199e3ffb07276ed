//! CORS decisions for `CORS_ORIGINS`: which origin a response may name, and
//! whether with credentials. Only listed origins are ever reflected; the
//! wildcard `*` allows any origin but never with credentials.

/// Methods a preflight may be granted.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// How long browsers may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_SECS: u32 = 600;
/// Response headers scripts may read.
pub const EXPOSED_HEADERS: &str = "WWW-Authenticate, Retry-After";

/// What a response may say about a request's `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `Access-Control-Allow-Origin: <origin>` with credentials.
    Listed(String),
    /// `Access-Control-Allow-Origin: *`, no credentials.
    Any,
}

impl Grant {
    /// The `Access-Control-Allow-Origin` value.
    pub fn allow_origin(&self) -> &str {
        match self {
            Self::Listed(o) => o,
            Self::Any => "*",
        }
    }

    /// Whether `Access-Control-Allow-Credentials: true` may be sent.
    pub fn credentials(&self) -> bool {
        matches!(self, Self::Listed(_))
    }
}

/// The grant for a request from `origin`, if any.
pub fn grant(origin: Option<&str>, allowed: &[String]) -> Option<Grant> {
    let origin = origin?;
    if allowed.iter().any(|a| a == origin) && origin != "*" && origin != "null" {
        return Some(Grant::Listed(origin.to_string()));
    }
    allowed.iter().any(|a| a == "*").then_some(Grant::Any)
}

/// The `Access-Control-Allow-Headers` for a preflight: the requested header
/// names if they are all well-formed tokens, else `None` (refuse).
pub fn allowed_request_headers(requested: Option<&str>) -> Option<String> {
    let requested = requested.unwrap_or("").trim();
    if requested.len() > 1024 {
        return None;
    }
    let names: Vec<&str> = requested.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let ok = names.iter().all(|n| n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)));
    ok.then(|| names.join(", "))
}

/// Whether `method` may be granted in a preflight.
pub fn method_allowed(method: &str) -> bool {
    ALLOWED_METHODS.split(", ").any(|m| m.eq_ignore_ascii_case(method.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_listed_origins_get_credentials() {
        let allowed = list(&["https://app.example"]);
        assert_eq!(grant(Some("https://app.example"), &allowed), Some(Grant::Listed("https://app.example".into())));
        assert_eq!(grant(Some("https://evil.example"), &allowed), None);
        assert_eq!(grant(None, &allowed), None);
        assert_eq!(grant(Some("null"), &list(&["null"])), None);
    }

    #[test]
    fn wildcard_never_carries_credentials() {
        let g = grant(Some("https://any.example"), &list(&["*"])).unwrap();
        assert_eq!(g.allow_origin(), "*");
        assert!(!g.credentials());
    }

    #[test]
    fn preflight_headers_and_methods_are_checked() {
        assert_eq!(
            allowed_request_headers(Some("Authorization, content-type")).as_deref(),
            Some("Authorization, content-type")
        );
        assert_eq!(allowed_request_headers(None).as_deref(), Some(""));
        assert!(allowed_request_headers(Some("bad header\r\nx: y")).is_none());
        assert!(method_allowed("patch"));
        assert!(!method_allowed("TRACE"));
    }
}
