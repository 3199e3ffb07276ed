//! What the gateway does to a forwarded request's headers: the names that
//! never reach the origin — every name an origin may trust for who the user
//! is, where the request came from, or what to do instead of what was asked
//! (another method, another URL), and hop-by-hop headers — and the identity
//! headers it adds in their place ([`IDENTITY_HEADERS`]). The edge applies
//! them (`edge/js/glue.js` `forward`), given these lists once per isolate.
//!
//! The premise: an origin behind Portcullis learns the user from the
//! `X-Auth-*` headers the gateway sets, and nothing a client sends may say
//! otherwise. Other gateways, auth proxies and load balancers tell their
//! origins the same things under other names (oauth2-proxy's
//! `X-Forwarded-User`, Authelia's `Remote-User`, `X-Real-IP`, `Forwarded`,
//! `X-Original-URL`, `X-HTTP-Method-Override`, …), and frameworks read them
//! when told to trust a proxy: a client that sends one through Portcullis
//! speaks with the proxy's voice. So every such header is removed, on every
//! route, before the request is forwarded. Nothing is put in their place:
//! removing costs the gateway nothing when a header is absent, where setting
//! one costs every request (bench/README.md, decision log).
//!
//! Names are compared case-insensitively with `-` and `_` alike: WSGI (Django,
//! Flask), PHP and Rack read `X_Forwarded_User` as `X-Forwarded-User`. An
//! entry ending in `*` is a prefix. Operators extend the list with
//! `STRIP_HEADERS` (comma-separated names in the same syntax: any RFC 9110
//! token, `*` only at the end).
//!
//! The list cannot know every name an origin falls back to. Code that reads
//! `X-Forwarded-For` and, when it is absent, some other header (a
//! `X-Client-Addr` of its own, say) now always finds it absent and trusts
//! the other one: removing the first makes the fallback the client's to
//! set. Every name an origin reads for these purposes, fallbacks included,
//! belongs on the list (`STRIP_HEADERS`).
//!
//! The edge applies the list in JavaScript (`edge/js/glue.js`, one test per incoming
//! header name): [`StrippedHeaders::js_pattern`] is the list as one regular
//! expression, built once per isolate as a trie so that a name is decided in
//! a character or two; [`StrippedHeaders::strips`] is the same rule in Rust,
//! and the tests hold the two to each other.

use std::collections::BTreeMap;

/// The built-in list. `tests/e2e/gateway.test.mjs` reads this table (every
/// string literal between the `STRIPPED` line and its closing `];`).
pub const STRIPPED: &[&str] = &[
    // Identity, as gateways and auth proxies tell their origins.
    "x-auth-*",     // Portcullis's own (set again after this), oauth2-proxy's X-Auth-Request-*
    "x-forwarded*", // X-Forwarded (PHP's HTTP_X_FORWARDED, request-ip), oauth2-proxy's -User, -Email, -Preferred-Username, -Groups, -Access-Token; -For, -Host, -Proto, -Port, -Prefix, -Server, -Ssl, Envoy's -Client-Cert, Traefik's -Tls-Client-Cert
    "remote-*",     // Remote-User, Remote-Groups, Remote-Email, Remote-Name (Authelia, Caddy, Apache)
    "x-remote-*",   // X-Remote-User, X-Remote-Group, X-Remote-Addr
    "x-user",
    "x-user-id",
    "x-user-email",
    "x-user-name",
    "x-user-roles",
    "x-user-groups",
    "x-userid",
    "x-username",
    "x-userinfo",     // Kong's OIDC plugin
    "x-id-token",     // idem
    "x-access-token", // idem
    "x-email",
    "x-preferred-username",
    "x-groups",
    "x-roles",
    "x-authenticated-*", // Kong
    "x-consumer-*",      // Kong
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-authentik-*",               // authentik's proxy outpost
    "x-webauth-*",                 // Grafana's auth proxy
    "x-ms-client-principal*",      // Azure App Service authentication (Easy Auth)
    "x-ms-token-*",                // idem
    "x-goog-authenticated-user-*", // Google IAP
    "x-goog-iap-jwt-assertion",
    "x-amzn-oidc-*", // AWS load balancers
    "cf-access-*",   // Cloudflare Access
    "x-pomerium-*",
    "x-vouch-*",
    "tailscale-*", // Tailscale serve: -User-Login, -User-Name, -User-Profile-Pic, -Headers-Info
    "teleport-jwt-assertion",
    "x-appengine-user-*",        // -Email, -Id, -Nickname, -Ip
    "oidc-*",                    // Apache mod_auth_openidc: OIDC_CLAIM_*, OIDC_access_token, …
    "mellon-*",                  // Apache mod_auth_mellon
    "shib-*",                    // Shibboleth SP
    "x-apigateway-api-userinfo", // Google API Gateway: the verified JWT's claims
    "x-endpoint-api-userinfo",   // Google Cloud Endpoints (ESPv2): idem
    "x-proxy-user",
    "x-principal",
    "x-kong-jwt-claim-*", // Kong's JWT plugin
    "ms-aspnetcore-*",    // IIS's ASP.NET Core module: -Token, -WinAuthToken
    // Client certificates, as TLS-terminating proxies pass them on.
    "x-ssl*",
    "x-client-cert*",
    "x-client-verify",
    "x-client-dn",
    "ssl-client-*",
    "client-cert*", // RFC 9440: Client-Cert, Client-Cert-Chain
    "x-arr-clientcert",
    "x-arr-ssl",
    // The client's address.
    "forwarded",
    "forwarded-*", // Forwarded-For (PHP's HTTP_FORWARDED_FOR, request-ip)
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cluster-client-ip",
    "client-ip",
    "proxy-client-ip",    // Java's getClientIp recipes
    "wl-proxy-client-ip", // idem (WebLogic)
    "fastly-client-ip",
    "x-originating-ip",
    "x-azure-clientip",
    "x-azure-socketip",
    "x-proxyuser-ip",
    "x-envoy-*", // -External-Address, -Original-Path, -Peer-Metadata, …
    // CGI variable names sent as headers: code that reads `HTTP_X_FORWARDED_FOR`
    // or `HTTP_CLIENT_IP` with a header getter (Java recipes) finds them.
    "http-*",
    // CGI meta-variables sent as headers: gunicorn takes `SCRIPT_NAME` and
    // `PATH_INFO` from a trusted forwarder's headers (`forwarder_headers`),
    // and Flask and Django then route a path the gateway never judged.
    "script-name",
    "path-info",
    "path-translated",
    "request-uri",
    "request-method",
    "query-string",
    "auth-type",
    // httpoxy (CVE-2016-5385): CGI stacks read `Proxy` as `HTTP_PROXY`, the
    // proxy of their own outbound calls.
    "proxy",
    // Another URL, host, prefix or scheme than the request's.
    "x-original-*", // -URL, -URI, -Host, -Method, -Forwarded-For
    "x-rewrite-url",
    "x-script-name", // Flask's ReverseProxied recipe, mounting the app elsewhere
    "x-host",
    "x-http-host-override",
    "x-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-https",
    "aspfiltersessionid", // IIS's cookieless-session filter
    "x-middleware-*",     // Next.js: X-Middleware-Subrequest skips its middleware (CVE-2025-29927)
    "x-invoke-*",         // Next.js's internal routing: -Path, -Query, -Status, -Output
    "x-matched-path",     // idem
    "x-now-route-matches",
    "x-prerender-revalidate", // Next.js: the preview and revalidation secret's header
    // Another method than the request's (Express, ASP.NET Core, Symfony, Rack).
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers a `Connection` value may not remove: the body's framing and type
/// (the origin parses the body by them), the target, and what the gateway's
/// decision read (the credentials, the request's origin). A client naming
/// them would have the origin read another request than the one judged.
pub const NEVER_CONNECTION_NAMED: [&str; 7] =
    ["content-type", "content-length", "transfer-encoding", "host", "authorization", "cookie", "origin"];

/// The identity headers the gateway adds to every request it forwards with a
/// verified token (after removing any the client sent: `x-auth-*` is on
/// [`STRIPPED`]), in the order of [`IdentityHeaders::new`]'s values; the
/// last, `x-auth-claims`, only with `CLAIMS_HEADER=true` and a token that
/// carries the sign-in hook's claims.
pub const IDENTITY_HEADERS: [&str; 6] =
    ["x-auth-user-id", "x-auth-email", "x-auth-roles", "x-auth-session-id", "x-auth-assertion", "x-auth-claims"];

/// The values of [`IDENTITY_HEADERS`] in the form the platform sends them
/// (at the edge: one JS array, built once per token and cached with it).
pub trait IdentityHeaders: Clone {
    /// From the values, in the order of [`IDENTITY_HEADERS`]: user id, email,
    /// roles (comma-separated), session id, the signed assertion; then the
    /// `X-Auth-Claims` value, if any.
    fn new(values: [&str; 5], claims: Option<&str>) -> Self;
}

/// Name and value pairs, in the order of [`IDENTITY_HEADERS`].
impl IdentityHeaders for Vec<(&'static str, String)> {
    fn new(values: [&str; 5], claims: Option<&str>) -> Self {
        let values = values.into_iter().chain(claims);
        IDENTITY_HEADERS.iter().zip(values).map(|(name, value)| (*name, value.to_string())).collect()
    }
}

/// Longest name `STRIP_HEADERS` may list.
pub const MAX_NAME_LEN: usize = 128;

/// One entry: a normalised name (lowercase, `_` as `-`) and whether it is a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    prefix: bool,
}

impl Entry {
    /// Parses `name` or `prefix*`: an RFC 9110 token (letters, digits and
    /// ``!#$%&'+-.^_`|~``; `*` only as the final prefix marker).
    fn parse(raw: &str) -> Result<Self, String> {
        let (name, prefix) = match raw.strip_suffix('*') {
            Some(p) => (p, true),
            None => (raw, false),
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN || !name.bytes().all(is_tchar) {
            return Err(format!(
                "{raw:?} is not a header name (an RFC 9110 token: letters, digits and !#$%&'+-.^_`|~, at most {MAX_NAME_LEN}, optionally ending in * for a prefix)"
            ));
        }
        Ok(Self { name: normalise(name), prefix })
    }

    fn covers(&self, normalised: &str) -> bool {
        if self.prefix {
            normalised.starts_with(&self.name)
        } else {
            normalised == self.name
        }
    }
}

/// An RFC 9110 `tchar` but `*` (the prefix marker here).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b)
}

fn normalise(name: &str) -> String {
    name.bytes().map(|b| if b == b'_' { '-' } else { b.to_ascii_lowercase() as char }).collect()
}

/// The headers the gateway removes before forwarding: [`STRIPPED`] and the
/// names of `STRIP_HEADERS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrippedHeaders {
    entries: Vec<Entry>,
    js_pattern: String,
}

impl StrippedHeaders {
    /// The built-in list plus `extra` (`STRIP_HEADERS`: comma-separated
    /// names, each optionally ending in `*`); errors say which name is bad.
    pub fn parse(extra: Option<&str>) -> Result<Self, String> {
        let mut entries = Vec::with_capacity(STRIPPED.len());
        for raw in STRIPPED {
            entries.push(Entry::parse(raw)?);
        }
        for raw in extra.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            entries.push(Entry::parse(raw)?);
        }
        let js_pattern = trie_pattern(&entries);
        Ok(Self { entries, js_pattern })
    }

    /// Whether a header of this name is removed.
    pub fn strips(&self, name: &str) -> bool {
        let name = normalise(name);
        self.entries.iter().any(|e| e.covers(&name))
    }

    /// The same rule as a JavaScript regular expression (its source), for
    /// names as the runtime gives them (lowercase).
    pub fn js_pattern(&self) -> &str {
        &self.js_pattern
    }
}

/// A trie over the names: `end` marks an exact name, `rest` a prefix.
#[derive(Default)]
struct Node {
    children: BTreeMap<u8, Node>,
    end: bool,
    rest: bool,
}

/// `^` and the trie as nested alternatives, `-` as `[-_]`, the token
/// characters that mean something in a regular expression (`$+.^|`) escaped.
fn trie_pattern(entries: &[Entry]) -> String {
    let mut root = Node::default();
    for e in entries {
        let mut node = &mut root;
        for b in e.name.bytes() {
            node = node.children.entry(b).or_default();
        }
        if e.prefix {
            node.rest = true;
        } else {
            node.end = true;
        }
    }
    let mut out = String::from("^");
    emit(&root, &mut out);
    out
}

fn emit(node: &Node, out: &mut String) {
    if node.rest {
        return; // anything may follow
    }
    let alternatives = node.children.len() + usize::from(node.end);
    let group = alternatives > 1;
    if group {
        out.push_str("(?:");
    }
    let mut first = true;
    for (b, child) in &node.children {
        if !first {
            out.push('|');
        }
        first = false;
        match *b {
            b'-' => out.push_str("[-_]"),
            b'$' | b'+' | b'.' | b'^' | b'|' => {
                out.push('\\');
                out.push(*b as char);
            }
            _ => out.push(*b as char),
        }
        emit(child, out);
    }
    if node.end {
        if !first {
            out.push('|');
        }
        out.push('$');
    }
    if group {
        out.push(')');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    fn builtin() -> StrippedHeaders {
        StrippedHeaders::parse(None).unwrap()
    }

    #[test]
    fn identity_client_routing_and_override_headers_are_stripped_in_any_spelling() {
        let s = builtin();
        for name in [
            "x-forwarded-user",
            "X-Forwarded-Email",
            "x_forwarded_preferred_username",
            "X-Forwarded-Groups",
            "x-forwarded-access-token",
            "x-auth-request-user",
            "X-Auth-Request-Email",
            "remote-user",
            "X_Remote_User",
            "x-user",
            "x-email",
            "x-forwarded-for",
            "X-Forwarded-Host",
            "x-forwarded-proto",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
            "forwarded",
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-cluster-client-ip",
            "client-ip",
            "x-original-forwarded-for",
            "x-original-url",
            "X_Original_URL",
            "x-rewrite-url",
            "x-http-method-override",
            "X-HTTP-Method",
            "x_method_override",
            "cf-access-authenticated-user-email",
            "x-ms-client-principal-name",
            "x-ssl-client-cert",
        ] {
            assert!(s.strips(name), "{name}");
        }
        for kept in [
            "content-type",
            "cookie",
            "authorization",
            "cf-connecting-ip",
            "user-agent",
            "x-request-id",
            "x-user-agent",
            "x-forwarde",
            "forwardedfor",
            "http2-settings",
            "x-http-methods",
            "x-emails",
        ] {
            assert!(!s.strips(kept), "{kept}");
        }
    }

    #[test]
    fn strip_headers_extends_the_list_and_names_bad_entries() {
        let s = StrippedHeaders::parse(Some(" X-Tenant-Id, x_acme_* ,,")).unwrap();
        assert!(s.strips("x-tenant-id") && s.strips("X_TENANT_ID"));
        assert!(s.strips("x-acme-anything") && s.strips("x_acme_"));
        assert!(!s.strips("x-tenant") && !s.strips("x-acme"));
        for bad in ["*", "x y", "x:y", "x-*-y", "ü", "x\"y", "x(y)", "x/y", "x@y", &"x".repeat(MAX_NAME_LEN + 1)] {
            let e = StrippedHeaders::parse(Some(bad)).unwrap_err();
            assert!(e.contains("not a header name"), "{bad}: {e}");
        }
    }

    #[test]
    fn strip_headers_takes_any_token_name_and_the_pattern_reads_it_literally() {
        let s = StrippedHeaders::parse(Some("x.tenant, a!#$%&'+-.^_`|~z, p.q*")).unwrap();
        let re = Regex::new(s.js_pattern()).unwrap();
        for name in ["x.tenant", "X.Tenant", "a!#$%&'+-.^_`|~z", "a!#$%&'+_.^-`|~z", "p.q", "p.q-more"] {
            assert!(s.strips(name), "{name}");
            assert!(re.is_match(&name.to_ascii_lowercase()), "{name}");
        }
        for name in ["xztenant", "x-tenant", "a!#$%&'+-x^_`|~z", "pzq", "p-q"] {
            assert!(!s.strips(name), "{name}");
            assert!(!re.is_match(&name.to_ascii_lowercase()), "{name}");
        }
    }

    #[test]
    fn address_identity_and_routing_headers_of_other_proxies_and_recipes_are_stripped() {
        let s = builtin();
        for name in [
            "x-forwarded",          // PHP's HTTP_X_FORWARDED, request-ip (npm)
            "forwarded-for",        // PHP's HTTP_FORWARDED_FOR, request-ip (npm)
            "proxy-client-ip",      // Java getClientIp recipes
            "wl-proxy-client-ip",   // idem (WebLogic)
            "http_x_forwarded_for", // Java request.getHeader("HTTP_X_FORWARDED_FOR")
            "http_client_ip",       // Java request.getHeader("HTTP_CLIENT_IP")
            "HTTP-X-Real-IP",
            "x-authentik-username", // authentik's proxy outpost
            "x-authentik-email",
            "x-authentik-groups",
            "oidc_claim_email", // Apache mod_auth_openidc
            "oidc-claim-sub",
            "OIDC_access_token",
            "x-script-name", // Flask's ReverseProxied recipe
            "client-cert",   // RFC 9440
            "client-cert-chain",
            "aspfiltersessionid",
            "x-envoy-original-path",
            "x-envoy-external-address",
            "x-amzn-oidc-identity",
            "x-amzn-oidc-data",
            "cf-access-jwt-assertion",
            "x-ms-client-principal",
            "x-ms-client-principal-id",
            "x-goog-iap-jwt-assertion",
            "x-goog-authenticated-user-email",
            "x-pomerium-jwt-assertion",
            "x-vouch-user",
            "x-webauth-user",
            "ssl-client-s-dn",
            "x-ssl-client-cert",
            "x-client-cert-dn",
            "tailscale-user-login",
            "teleport-jwt-assertion",
            "x-middleware-subrequest",
            "mellon-name-id",
            "shib-session-id",
            "x-userinfo",
            "x-id-token",
            "x-access-token",
        ] {
            assert!(s.strips(name), "{name}");
        }
    }

    #[test]
    fn the_pattern_is_a_trie_with_either_separator() {
        let s = StrippedHeaders::parse(Some("ab,ac*,b")).unwrap();
        assert!(s.js_pattern().starts_with('^'));
        let only = |extra: &str| {
            let entries: Vec<Entry> = extra.split(',').map(|e| Entry::parse(e).unwrap()).collect();
            trie_pattern(&entries)
        };
        assert_eq!(only("ab,ac*,b"), "^(?:a(?:b$|c)|b$)");
        assert_eq!(only("x-a,x-ab"), "^x[-_]a(?:b$|$)");
        assert_eq!(only("x*,x-y"), "^x");
    }

    /// Names made of pieces of the listed names (so that near misses are
    /// common), in random case and with `-` or `_`.
    fn names() -> impl Strategy<Value = String> {
        let pieces: Vec<String> = STRIPPED
            .iter()
            .flat_map(|e| e.trim_end_matches('*').split('-').map(str::to_string).collect::<Vec<_>>())
            .chain(["", "a", "z9", "ip", "forwarde", "methods"].map(String::from))
            .collect();
        (prop::collection::vec(prop::sample::select(pieces), 1..5), any::<u64>()).prop_map(|(parts, bits)| {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(if bits >> (i % 64) & 1 == 1 { '_' } else { '-' });
                }
                for (j, c) in p.chars().enumerate() {
                    out.push(if bits >> ((i * 7 + j) % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c });
                }
            }
            out
        })
    }

    proptest! {
        #[test]
        fn the_js_pattern_decides_exactly_as_strips(name in names(), listed in prop::sample::select(STRIPPED.to_vec())) {
            let s = builtin();
            let re = Regex::new(s.js_pattern()).unwrap();
            // The runtime hands header names over lowercased.
            prop_assert_eq!(re.is_match(&name.to_ascii_lowercase()), s.strips(&name), "{}", name);
            // Every listed name, and anything under a listed prefix, is stripped.
            let listed = listed.replace('*', "-extra");
            prop_assert!(s.strips(&listed) && re.is_match(&listed), "{}", listed);
        }

        #[test]
        fn nothing_on_the_list_survives_and_everything_else_does(names in prop::collection::vec(names(), 0..24)) {
            let s = builtin();
            let re = Regex::new(s.js_pattern()).unwrap();
            let kept: Vec<&String> = names.iter().filter(|n| !re.is_match(&n.to_ascii_lowercase())).collect();
            for n in &names {
                let normalised = n.to_ascii_lowercase().replace('_', "-");
                let listed = STRIPPED.iter().any(|e| match e.strip_suffix('*') {
                    Some(p) => normalised.starts_with(p),
                    None => normalised == *e,
                });
                prop_assert_eq!(kept.contains(&n), !listed, "{}", n);
            }
        }
    }
}
