//! The auth API's routes: one table from which both dispatch and the 405
//! `Allow` header come.
//!
//! Each entry of the `routes!` table below is a path pattern — literal
//! segments and `{param}` segments — with, for each method it takes, the
//! [`Route`] variant a request becomes, carrying the path's parameters by
//! name. [`match_route`] reads a request's method and path into a `Route`,
//! or says why not ([`NoRoute`]): a path the API does not have (404), or a
//! method the path does not take (405, with the methods it does take). The
//! edge serves a `Route` with one exhaustive `match`, so an entry added here
//! does not compile until it is served, and `Allow` lists exactly the
//! methods that are dispatched.
//!
//! The rules:
//! - The path matched is the API's own name for the normalised request path
//!   (`policy::auth_api_path` of `policy::normalise_path`): `/auth/…`
//!   whatever `AUTH_PREFIX` is, or `/.well-known/…`, without empty segments
//!   or a trailing slash. Literal segments compare case-sensitively.
//! - A `{param}` matches one non-empty segment, whatever its text: the flow
//!   behind the route says whether it names anything.
//! - The first pattern in table order that matches the path decides, for
//!   dispatch and for `Allow`. A pattern with a literal segment comes before
//!   one with a parameter in its place (`/auth/sessions/revoke-others`
//!   before `/auth/sessions/{id}`); a unit test holds the table to that.
//! - `HEAD` is served as `GET` wherever `GET` is, and `Allow` lists it there.
//!
//! A pattern whose `{param}` segments are not its variant's fields, in
//! order, does not compile (a `const` assertion over the table).

use crate::core::error::Error;
use crate::core::rate_limit::Endpoint;

/// Most `{param}` segments in one pattern.
const MAX_PARAMS: usize = 2;

/// The `Allow` value of one method in the table: `GET` brings `HEAD`.
macro_rules! allow_one {
    (GET) => {
        "GET, HEAD"
    };
    (POST) => {
        "POST"
    };
    (PATCH) => {
        "PATCH"
    };
    (DELETE) => {
        "DELETE"
    };
}

/// The `Allow` value of an entry's methods, in the table's order.
macro_rules! allow {
    ($first:ident $(, $rest:ident)*) => {
        concat!(allow_one!($first) $(, ", ", allow_one!($rest))*)
    };
}

macro_rules! routes {
    ($( $pattern:literal { $( $method:ident => $variant:ident $({ $($param:ident),+ })? ),+ $(,)? } )*) => {
        /// An endpoint of the auth API, with the parameters its path carries
        /// (borrowed from the path).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Route<'a> {
            $($(
                #[doc = concat!("`", stringify!($method), " ", $pattern, "`")]
                $variant $({ $( #[doc = concat!("`{", stringify!($param), "}`")] $param: &'a str ),+ })?,
            )+)*
        }

        impl Route<'_> {
            /// The pattern of the route's path, e.g. `/auth/sessions/{id}`.
            pub fn pattern(&self) -> &'static str {
                match self {
                    $($( Route::$variant { .. } => $pattern, )+)*
                }
            }

            /// The method the route is declared with (`GET` serves `HEAD` too).
            pub fn method(&self) -> &'static str {
                match self {
                    $($( Route::$variant { .. } => stringify!($method), )+)*
                }
            }

            /// The route's path parameters, by name, in path order.
            #[cfg(test)]
            fn params(&self) -> Vec<(&'static str, &str)> {
                match self {
                    $($(
                        #[allow(unused_variables)]
                        Route::$variant $({ $($param),+ })? => vec![$($( (stringify!($param), *$param) ),+)?],
                    )+)*
                }
            }
        }

        /// Every pattern with its `Allow` value, in match order.
        #[cfg(test)]
        const TABLE: &[(&str, &str)] = &[$( ($pattern, allow!($($method),+)) ),*];

        /// The route a request with `method` to the API path `path` takes,
        /// or why it takes none (see the module documentation for the rules).
        pub fn match_route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, NoRoute> {
            let method = if method == "HEAD" { "GET" } else { method };
            $(
                if let Some(found) = Params::read($pattern, path) {
                    #[allow(unused_mut, unused_variables)]
                    let mut params = found;
                    $(
                        if method == stringify!($method) {
                            return Ok(Route::$variant $({ $( $param: params.take() ),+ })?);
                        }
                    )+
                    return Err(NoRoute::MethodNotAllowed { allow: allow!($($method),+) });
                }
            )*
            Err(NoRoute::NotFound)
        }

        const _: () = {
            $($(
                assert!(
                    declares($pattern, &[$($(stringify!($param)),+)?]),
                    concat!("the fields of ", stringify!($variant), " are not the parameters of its pattern, in order"),
                );
            )+)*
        };
    };
}

routes! {
    "/.well-known/jwks.json" { GET => Jwks }
    "/.well-known/openid-configuration" { GET => OpenidConfiguration }
    "/auth/signup" { POST => Signup }
    "/auth/login" { POST => Login }
    "/auth/refresh" { POST => Refresh }
    "/auth/logout" { POST => Logout }
    "/auth/introspect" { POST => Introspect }
    "/auth/revoke" { POST => Revoke }
    "/auth/me" { GET => Me, PATCH => EditProfile }
    "/auth/sessions" { GET => Sessions }
    "/auth/sessions/revoke-others" { POST => RevokeOtherSessions }
    "/auth/sessions/{id}" { DELETE => RevokeSession { id } }
    "/auth/magic-link" { POST => MagicLink }
    "/auth/magic-link/verify" { GET => MagicLinkLanding, POST => MagicLinkVerify }
    "/auth/otp" { POST => Otp }
    "/auth/otp/verify" { POST => OtpVerify }
    "/auth/password/forgot" { POST => PasswordForgot }
    "/auth/password/reset" { POST => PasswordReset }
    "/auth/password/change" { POST => PasswordChange }
    "/auth/email/verify/request" { POST => EmailVerifyRequest }
    "/auth/email/verify" { POST => EmailVerify }
    "/auth/mfa/totp/enroll" { POST => MfaTotpEnroll }
    "/auth/mfa/totp/confirm" { POST => MfaTotpConfirm }
    "/auth/mfa/totp" { DELETE => MfaTotpDisable }
    "/auth/mfa/backup-codes" { POST => MfaBackupCodes }
    "/auth/mfa/verify" { POST => MfaVerify }
    "/auth/passkeys" { GET => Passkeys }
    "/auth/passkeys/register/options" { POST => PasskeyRegisterOptions }
    "/auth/passkeys/register/verify" { POST => PasskeyRegisterVerify }
    "/auth/passkeys/login/options" { POST => PasskeyLoginOptions }
    "/auth/passkeys/login/verify" { POST => PasskeyLoginVerify }
    "/auth/passkeys/{id}" { PATCH => PasskeyRename { id }, DELETE => PasskeyRemove { id } }
    "/auth/admin/keys/rotate" { POST => AdminRotateKeys }
    "/auth/admin/keys/{kid}/retire" { POST => AdminRetireKey { kid } }
    "/auth/audit" { GET => Audit }
    "/auth/admin/audit" { GET => AdminAudit }
    "/auth/admin/users" { GET => AdminListUsers }
    "/auth/admin/users/{id}" {
        GET => AdminGetUser { id },
        PATCH => AdminUpdateUser { id },
        DELETE => AdminDeleteUser { id },
    }
    "/auth/admin/users/{id}/ban" { POST => AdminBanUser { id } }
    "/auth/admin/users/{id}/unban" { POST => AdminUnbanUser { id } }
    "/auth/admin/users/{id}/roles/{role}" { POST => AdminAddRole { id, role }, DELETE => AdminRemoveRole { id, role } }
    "/auth/admin/users/{id}/sessions/revoke" { POST => AdminRevokeSessions { id } }
    "/auth/admin/users/{id}/mfa" { DELETE => AdminResetMfa { id } }
    "/auth/oauth/exchange" { POST => OauthExchange }
    "/auth/oauth/{provider}" { DELETE => OauthUnlink { provider } }
    "/auth/oauth/{provider}/authorize" { GET => OauthAuthorize { provider } }
    "/auth/oauth/{provider}/callback" { GET => OauthCallback { provider } }
    "/auth/oauth/{provider}/link" { POST => OauthLink { provider } }
    "/auth/ui/login" { GET => UiLoginPage, POST => UiLogin }
    "/auth/ui/signup" { GET => UiSignupPage, POST => UiSignup }
    "/auth/ui/magic-link" { GET => UiMagicLinkPage, POST => UiMagicLink }
    "/auth/ui/otp" { GET => UiOtpPage, POST => UiOtp }
    "/auth/ui/forgot" { GET => UiForgotPage, POST => UiForgot }
    "/auth/ui/reset" { GET => UiResetPage, POST => UiReset }
    "/auth/ui/verify-email" { GET => UiVerifyEmailPage, POST => UiVerifyEmail }
    "/auth/ui/mfa" { GET => UiMfaPage, POST => UiMfa }
    "/auth/ui/account" { GET => UiAccountPage, POST => UiAccount }
    "/auth/ui/passkey.js" { GET => UiPasskeyScript }
}

/// Where the hosted pages live in the API's own names: every path at or
/// below it is theirs, answered 404 when `UI_ENABLED` is false.
pub const UI_PREFIX: &str = "/auth/ui";

/// Whether the API path `path` is (or is below) the hosted pages'.
pub fn is_ui_path(path: &str) -> bool {
    path.strip_prefix(UI_PREFIX).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Route<'_> {
    /// Whether the route only reads, and can afford reads up to a D1 read
    /// replica's lag behind the primary: the listings of users and of the
    /// audit log (entries arrive through the queue, later anyway). The
    /// edge reads the caller's session first, from the primary, and the rest
    /// from a replica at least that recent (docs/scaling.md). `/auth/me` and
    /// `/auth/sessions` stay on the primary: they are what a client asks
    /// right after signing in, and must see that sign-in.
    pub fn replica_reads(&self) -> bool {
        matches!(self, Route::AdminListUsers | Route::AdminGetUser { .. } | Route::AdminAudit | Route::Audit)
    }

    /// Whether the route serves only a signed-in caller and reads a body:
    /// its access token is checked (without the store) before the body is
    /// read, so a request with none, or an invalid one, is 401 whatever its
    /// body. Administrators' routes check the caller first too, fully;
    /// routes that read no body, or take a token only optionally (logout,
    /// email verification), are not here.
    pub fn checks_token_first(&self) -> bool {
        // No wildcard: a route added to the table does not compile until it is placed here.
        match self {
            Route::EditProfile
            | Route::RevokeOtherSessions
            | Route::PasswordChange
            | Route::EmailVerifyRequest
            | Route::MfaTotpEnroll
            | Route::MfaTotpConfirm
            | Route::MfaTotpDisable
            | Route::MfaBackupCodes
            | Route::PasskeyRegisterOptions
            | Route::PasskeyRegisterVerify
            | Route::PasskeyRename { .. }
            | Route::PasskeyRemove { .. }
            | Route::OauthLink { .. } => true,
            Route::Jwks
            | Route::OpenidConfiguration
            | Route::Signup
            | Route::Login
            | Route::Refresh
            | Route::Logout
            | Route::Introspect
            | Route::Revoke
            | Route::Me
            | Route::Sessions
            | Route::RevokeSession { .. }
            | Route::MagicLink
            | Route::MagicLinkLanding
            | Route::MagicLinkVerify
            | Route::Otp
            | Route::OtpVerify
            | Route::PasswordForgot
            | Route::PasswordReset
            | Route::EmailVerify
            | Route::MfaVerify
            | Route::Passkeys
            | Route::PasskeyLoginOptions
            | Route::PasskeyLoginVerify
            | Route::AdminRotateKeys
            | Route::AdminRetireKey { .. }
            | Route::Audit
            | Route::AdminAudit
            | Route::AdminListUsers
            | Route::AdminGetUser { .. }
            | Route::AdminUpdateUser { .. }
            | Route::AdminDeleteUser { .. }
            | Route::AdminBanUser { .. }
            | Route::AdminUnbanUser { .. }
            | Route::AdminAddRole { .. }
            | Route::AdminRemoveRole { .. }
            | Route::AdminRevokeSessions { .. }
            | Route::AdminResetMfa { .. }
            | Route::OauthExchange
            | Route::OauthUnlink { .. }
            | Route::OauthAuthorize { .. }
            | Route::OauthCallback { .. }
            | Route::UiLoginPage
            | Route::UiLogin
            | Route::UiSignupPage
            | Route::UiSignup
            | Route::UiMagicLinkPage
            | Route::UiMagicLink
            | Route::UiOtpPage
            | Route::UiOtp
            | Route::UiForgotPage
            | Route::UiForgot
            | Route::UiResetPage
            | Route::UiReset
            | Route::UiVerifyEmailPage
            | Route::UiVerifyEmail
            | Route::UiMfaPage
            | Route::UiMfa
            | Route::UiAccountPage
            | Route::UiAccount
            | Route::UiPasskeyScript => false,
        }
    }
}

/// Why a request takes no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No pattern matches the path: 404 `not_found`.
    NotFound,
    /// The path's pattern does not take the method: 405
    /// `method_not_allowed`.
    MethodNotAllowed {
        /// The methods the path takes, for the `Allow` header, e.g.
        /// `"GET, HEAD"`.
        allow: &'static str,
    },
}

impl From<NoRoute> for Error {
    fn from(e: NoRoute) -> Self {
        match e {
            NoRoute::NotFound => Error::NotFound,
            NoRoute::MethodNotAllowed { allow } => Error::MethodNotAllowed { allow },
        }
    }
}

/// Paths under this prefix count against the `oauth` rate limit.
const OAUTH_PREFIX: &str = "/auth/oauth/";

/// The per-IP rate limit a request to the API path `path` counts against
/// before it is routed, if any: [`Endpoint::Oauth`] for everything under
/// `/auth/oauth/`, routed or not (a 404 or 405 there is counted too, and a
/// client over the limit gets 429 whatever it asks for).
pub fn ip_limit(path: &str) -> Option<Endpoint> {
    path.starts_with(OAUTH_PREFIX).then_some(Endpoint::Oauth)
}

/// The `{param}` segments of a path that matched a pattern, taken in order.
struct Params<'a> {
    found: [&'a str; MAX_PARAMS],
    taken: usize,
}

impl<'a> Params<'a> {
    /// The parameters of `path` if it matches `pattern`, else `None`.
    fn read(pattern: &str, path: &'a str) -> Option<Self> {
        let mut params = Params { found: [""; MAX_PARAMS], taken: 0 };
        let mut count = 0;
        let mut segments = path.split('/');
        for want in pattern.split('/') {
            let segment = segments.next()?;
            if want.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
                *params.found.get_mut(count)? = segment;
                count += 1;
            } else if want != segment {
                return None;
            }
        }
        segments.next().is_none().then_some(params)
    }

    /// The next parameter; the table's `const` check makes every variant
    /// take exactly as many as its pattern has.
    fn take(&mut self) -> &'a str {
        let segment = self.found.get(self.taken).copied().unwrap_or_default();
        self.taken += 1;
        segment
    }
}

/// Whether `pattern` is well formed — it starts with `/`, has no empty
/// segment, and a segment holding `{` or `}` is a whole `{name}` — and its
/// `{name}` segments are `names`, in order (at most [`MAX_PARAMS`]).
const fn declares(pattern: &str, names: &[&str]) -> bool {
    let p = pattern.as_bytes();
    if p.is_empty() || p[0] != b'/' || names.len() > MAX_PARAMS {
        return false;
    }
    let mut start = 1;
    let mut seen = 0;
    loop {
        let mut end = start;
        let mut braces = 0;
        while end < p.len() && p[end] != b'/' {
            if p[end] == b'{' || p[end] == b'}' {
                braces += 1;
            }
            end += 1;
        }
        if end == start {
            return false;
        }
        if braces > 0 {
            let whole = braces == 2 && p[start] == b'{' && p[end - 1] == b'}' && end - start > 2;
            if !whole || seen == names.len() || !bytes_are(p, start + 1, end - 1, names[seen].as_bytes()) {
                return false;
            }
            seen += 1;
        }
        if end == p.len() {
            return seen == names.len();
        }
        start = end + 1;
    }
}

/// Whether `p[from..to]` is `want`.
const fn bytes_are(p: &[u8], from: usize, to: usize, want: &[u8]) -> bool {
    if to - from != want.len() {
        return false;
    }
    let mut i = 0;
    while i < want.len() {
        if p[from + i] != want[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gateway::policy::{auth_api_path, normalise_path};

    fn not_allowed(allow: &'static str) -> Result<Route<'static>, NoRoute> {
        Err(NoRoute::MethodNotAllowed { allow })
    }

    /// `pattern` with each `{name}` replaced by `name-value`.
    fn example(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!("{name}-value"),
                None => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

    #[test]
    fn every_route_of_the_table_matches_its_own_pattern_with_its_params() {
        let mut routes = 0;
        for (pattern, allow) in TABLE {
            let path = example(pattern);
            for method in METHODS {
                let takes = allow.split(", ").any(|m| m == method);
                match match_route(method, &path) {
                    Ok(route) => {
                        assert!(takes, "{method} {path}");
                        assert_eq!(route.pattern(), *pattern, "{method} {path}");
                        let declared = if method == "HEAD" { "GET" } else { method };
                        assert_eq!(route.method(), declared, "{method} {path}");
                        for (name, value) in route.params() {
                            assert_eq!(value, format!("{name}-value"), "{method} {path}");
                            assert!(pattern.contains(&format!("{{{name}}}")), "{method} {path}");
                        }
                        routes += 1;
                    }
                    Err(e) => {
                        assert!(!takes, "{method} {path}: {e:?}");
                        assert_eq!(e, NoRoute::MethodNotAllowed { allow }, "{method} {path}");
                    }
                }
            }
        }
        // 73 endpoints; the 22 GET ones answer HEAD too.
        assert_eq!(routes, 73 + 22, "every endpoint, and HEAD for each GET one");
    }

    #[test]
    fn routes_carry_the_segments_of_their_params() {
        assert_eq!(match_route("DELETE", "/auth/sessions/s-1"), Ok(Route::RevokeSession { id: "s-1" }));
        assert_eq!(match_route("HEAD", "/auth/ui/passkey.js"), Ok(Route::UiPasskeyScript));
        assert_eq!(match_route("POST", "/auth/ui/passkey.js"), not_allowed("GET, HEAD"));
        assert_eq!(match_route("POST", "/auth/admin/keys/k%201/retire"), Ok(Route::AdminRetireKey { kid: "k%201" }));
        assert_eq!(match_route("GET", "/auth/admin/users/u1"), Ok(Route::AdminGetUser { id: "u1" }));
        assert_eq!(match_route("PATCH", "/auth/admin/users/u1"), Ok(Route::AdminUpdateUser { id: "u1" }));
        assert_eq!(match_route("DELETE", "/auth/admin/users/u1"), Ok(Route::AdminDeleteUser { id: "u1" }));
        assert_eq!(match_route("POST", "/auth/admin/users/u1/ban"), Ok(Route::AdminBanUser { id: "u1" }));
        assert_eq!(match_route("POST", "/auth/admin/users/u1/unban"), Ok(Route::AdminUnbanUser { id: "u1" }));
        assert_eq!(
            match_route("POST", "/auth/admin/users/u1/roles/editor"),
            Ok(Route::AdminAddRole { id: "u1", role: "editor" })
        );
        assert_eq!(
            match_route("DELETE", "/auth/admin/users/u1/roles/editor"),
            Ok(Route::AdminRemoveRole { id: "u1", role: "editor" })
        );
        assert_eq!(
            match_route("POST", "/auth/admin/users/u1/sessions/revoke"),
            Ok(Route::AdminRevokeSessions { id: "u1" })
        );
        assert_eq!(match_route("DELETE", "/auth/admin/users/u1/mfa"), Ok(Route::AdminResetMfa { id: "u1" }));
        assert_eq!(match_route("DELETE", "/auth/mfa/totp"), Ok(Route::MfaTotpDisable));
        assert_eq!(match_route("POST", "/auth/mfa/verify"), Ok(Route::MfaVerify));
        assert_eq!(match_route("PATCH", "/auth/passkeys/pk-1"), Ok(Route::PasskeyRename { id: "pk-1" }));
        assert_eq!(match_route("DELETE", "/auth/passkeys/pk-1"), Ok(Route::PasskeyRemove { id: "pk-1" }));
        assert_eq!(match_route("POST", "/auth/passkeys/login/verify"), Ok(Route::PasskeyLoginVerify));
        assert_eq!(match_route("GET", "/auth/oauth/acme/authorize"), Ok(Route::OauthAuthorize { provider: "acme" }));
        assert_eq!(match_route("GET", "/auth/oauth/acme/callback"), Ok(Route::OauthCallback { provider: "acme" }));
        assert_eq!(match_route("POST", "/auth/oauth/acme/link"), Ok(Route::OauthLink { provider: "acme" }));
        assert_eq!(match_route("DELETE", "/auth/oauth/acme"), Ok(Route::OauthUnlink { provider: "acme" }));
        // A literal word in a parameter's place is just a value there.
        assert_eq!(
            match_route("GET", "/auth/oauth/exchange/authorize"),
            Ok(Route::OauthAuthorize { provider: "exchange" })
        );
        assert_eq!(match_route("POST", "/auth/admin/keys/rotate/retire"), Ok(Route::AdminRetireKey { kid: "rotate" }));
        assert_eq!(match_route("POST", "/auth/admin/users/ban/ban"), Ok(Route::AdminBanUser { id: "ban" }));
    }

    #[test]
    fn head_is_served_as_get_and_nowhere_else() {
        assert_eq!(match_route("HEAD", "/.well-known/jwks.json"), Ok(Route::Jwks));
        assert_eq!(match_route("HEAD", "/auth/magic-link/verify"), Ok(Route::MagicLinkLanding));
        assert_eq!(match_route("HEAD", "/auth/admin/users/u1"), Ok(Route::AdminGetUser { id: "u1" }));
        assert_eq!(match_route("GET", "/auth/admin/audit"), Ok(Route::AdminAudit));
        assert_eq!(match_route("HEAD", "/auth/audit"), Ok(Route::Audit));
        assert_eq!(match_route("HEAD", "/auth/login"), not_allowed("POST"));
        assert_eq!(match_route("HEAD", "/auth/sessions/s-1"), not_allowed("DELETE"));
    }

    #[test]
    fn a_wrong_method_is_405_with_every_method_the_path_takes() {
        // The cases of tests/e2e/auth.test.mjs, and the rest of the table.
        let cases = [
            ("GET", "/auth/login", "POST"),
            ("GET", "/auth/signup", "POST"),
            ("PUT", "/auth/refresh", "POST"),
            ("GET", "/auth/logout", "POST"),
            ("POST", "/auth/me", "GET, HEAD, PATCH"),
            ("DELETE", "/auth/sessions", "GET, HEAD"),
            ("GET", "/auth/sessions/revoke-others", "POST"),
            ("GET", "/auth/sessions/some-id", "DELETE"),
            ("GET", &format!("/auth/sessions/{}", "x".repeat(65)), "DELETE"),
            ("POST", "/.well-known/jwks.json", "GET, HEAD"),
            ("PUT", "/.well-known/openid-configuration", "GET, HEAD"),
            ("PUT", "/auth/magic-link", "POST"),
            ("PUT", "/auth/magic-link/verify", "GET, HEAD, POST"),
            ("GET", "/auth/otp", "POST"),
            ("GET", "/auth/otp/verify", "POST"),
            ("GET", "/auth/password/forgot", "POST"),
            ("GET", "/auth/password/reset", "POST"),
            ("GET", "/auth/password/change", "POST"),
            ("GET", "/auth/email/verify/request", "POST"),
            ("GET", "/auth/email/verify", "POST"),
            ("GET", "/auth/admin/keys/rotate", "POST"),
            ("GET", "/auth/admin/keys/k1/retire", "POST"),
            ("PUT", "/auth/admin/users", "GET, HEAD"),
            ("POST", "/auth/admin/audit", "GET, HEAD"),
            ("DELETE", "/auth/audit", "GET, HEAD"),
            ("POST", "/auth/admin/users/some-id", "GET, HEAD, PATCH, DELETE"),
            ("PUT", "/auth/admin/users/some-id", "GET, HEAD, PATCH, DELETE"),
            ("GET", "/auth/admin/users/some-id/ban", "POST"),
            ("DELETE", "/auth/admin/users/some-id/unban", "POST"),
            ("GET", "/auth/admin/users/some-id/roles/admin", "POST, DELETE"),
            ("GET", "/auth/admin/users/some-id/sessions/revoke", "POST"),
            ("GET", "/auth/admin/users/some-id/mfa", "DELETE"),
            ("GET", "/auth/mfa/totp/enroll", "POST"),
            ("GET", "/auth/mfa/totp/confirm", "POST"),
            ("POST", "/auth/mfa/totp", "DELETE"),
            ("GET", "/auth/mfa/backup-codes", "POST"),
            ("GET", "/auth/mfa/verify", "POST"),
            ("POST", "/auth/passkeys", "GET, HEAD"),
            ("GET", "/auth/passkeys/register/options", "POST"),
            ("GET", "/auth/passkeys/register/verify", "POST"),
            ("GET", "/auth/passkeys/login/options", "POST"),
            ("PUT", "/auth/passkeys/login/verify", "POST"),
            ("GET", "/auth/passkeys/pk-1", "PATCH, DELETE"),
            ("GET", "/auth/oauth/exchange", "POST"),
            ("DELETE", "/auth/oauth/exchange", "POST"),
            ("POST", "/auth/oauth/acme/authorize", "GET, HEAD"),
            ("POST", "/auth/oauth/acme/callback", "GET, HEAD"),
            ("GET", "/auth/oauth/acme/link", "POST"),
            ("GET", "/auth/oauth/acme", "DELETE"),
            ("OPTIONS", "/auth/signup", "POST"),
            // Methods compare exactly, as the runtime hands them over (it
            // upper-cases only DELETE, GET, HEAD, OPTIONS, POST and PUT).
            ("patch", "/auth/admin/users/u1", "GET, HEAD, PATCH, DELETE"),
            ("post", "/auth/signup", "POST"),
        ];
        for (method, path, allow) in cases {
            assert_eq!(match_route(method, path), not_allowed(allow), "{method} {path}");
        }
    }

    #[test]
    fn a_path_the_api_does_not_have_is_404_for_every_method() {
        let paths = [
            "/auth",
            "/auth/nope",
            "/auth/login/extra",
            "/.well-known",
            "/.well-known/nope",
            "/auth/oauth",
            "/auth/oauth/acme/other",
            "/auth/oauth/acme/authorize/x",
            "/auth/sessions/a/b",
            "/auth/admin",
            "/auth/admin/keys",
            "/auth/admin/keys/k1",
            "/auth/admin/keys/k1/retire/x",
            "/auth/admin/usersx",
            "/auth/admin/audit/x",
            "/auth/audit/u1",
            "/auth/admin/users/u1/roles",
            "/auth/admin/users/u1/roles/r/x",
            "/auth/admin/users/u1/sessions",
            "/auth/admin/users/u1/other",
            "/auth/magic-link/other",
            "/auth/mfa",
            "/auth/mfa/totp/other",
            "/auth/admin/users/u1/mfa/x",
            // Literal segments compare case-sensitively (AUTH_PREFIX itself
            // is matched case-insensitively before: see below).
            "/auth/Signup",
            "/auth/ME",
            "/.WELL-KNOWN/jwks.json",
            "/.well-known/JWKS.json",
            // Not normalised: the router normalises before it routes.
            "/auth/signup/",
            "/auth//signup",
            "/auth/sessions/",
            "/auth/oauth//authorize",
            "/auth/admin/users//ban",
            "auth/signup",
            "",
            "/",
        ];
        for path in paths {
            for method in METHODS {
                assert_eq!(match_route(method, path), Err(NoRoute::NotFound), "{method} {path:?}");
            }
        }
    }

    /// What the router routes for a raw request path: normalised, then
    /// named as the API names it under `prefix`.
    fn routed(method: &str, raw: &str, prefix: &str) -> Option<Result<String, NoRoute>> {
        let normalised = normalise_path(raw).ok()?;
        let api = auth_api_path(&normalised, prefix)?;
        Some(match_route(method, &api).map(|r| format!("{} {}", r.method(), r.pattern())))
    }

    #[test]
    fn through_the_router_trailing_slashes_and_the_prefix_case_do_not_matter_but_the_rest_does() {
        let ok = |s: &str| Some(Ok(s.to_string()));
        assert_eq!(routed("POST", "/auth/signup/", "/auth"), ok("POST /auth/signup"));
        assert_eq!(routed("POST", "/auth//signup", "/auth"), ok("POST /auth/signup"));
        assert_eq!(routed("POST", "/AUTH/signup", "/auth"), ok("POST /auth/signup"));
        assert_eq!(routed("POST", "/x/../auth/./signup", "/auth"), ok("POST /auth/signup"));
        assert_eq!(routed("DELETE", "/auth/sessions/s1/", "/auth"), ok("DELETE /auth/sessions/{id}"));
        assert_eq!(routed("GET", "/.well-known/jwks.json/", "/auth"), ok("GET /.well-known/jwks.json"));
        assert_eq!(routed("POST", "/api/v1/Auth/login", "/api/v1/auth"), ok("POST /auth/login"));
        assert_eq!(
            routed("GET", "/api/v1/auth/oauth/acme/callback", "/api/v1/auth"),
            ok("GET /auth/oauth/{provider}/callback")
        );
        assert_eq!(routed("GET", "/auth/SIGNUP", "/auth"), Some(Err(NoRoute::NotFound)));
        assert_eq!(routed("GET", "/.WELL-KNOWN/jwks.json", "/auth"), Some(Err(NoRoute::NotFound)));
        assert_eq!(routed("GET", "/auth/sessions/", "/auth"), ok("GET /auth/sessions"));
        assert_eq!(
            routed("GET", "/api/v1/auth/login", "/api/v1/auth"),
            Some(Err(NoRoute::MethodNotAllowed { allow: "POST" }))
        );
        // Under another prefix, /auth is the gateway's, not the API's.
        assert_eq!(routed("POST", "/auth/login", "/api/v1/auth"), None);
    }

    #[test]
    fn literal_segments_win_over_a_param_in_their_place() {
        assert_eq!(match_route("POST", "/auth/sessions/revoke-others"), Ok(Route::RevokeOtherSessions));
        assert_eq!(match_route("DELETE", "/auth/sessions/revoke-others"), not_allowed("POST"));
        assert_eq!(match_route("POST", "/auth/oauth/exchange"), Ok(Route::OauthExchange));
        assert_eq!(match_route("DELETE", "/auth/oauth/exchange"), not_allowed("POST"));
    }

    /// Whether some path matches both patterns.
    fn overlap(a: &str, b: &str) -> bool {
        let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
        a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || x.starts_with('{') || y.starts_with('{'))
    }

    #[test]
    fn of_two_patterns_that_can_match_one_path_the_one_with_a_literal_comes_first() {
        for (i, (earlier, _)) in TABLE.iter().enumerate() {
            for (later, _) in &TABLE[i + 1..] {
                assert_ne!(earlier, later, "{earlier} twice in the table");
                if !overlap(earlier, later) {
                    continue;
                }
                let first_difference = earlier.split('/').zip(later.split('/')).find(|(x, y)| x != y);
                let Some((x, y)) = first_difference else { unreachable!() };
                assert!(!x.starts_with('{') && y.starts_with('{'), "{earlier} shadows {later}, or the other way round");
            }
        }
        assert!(overlap("/auth/sessions/revoke-others", "/auth/sessions/{id}"));
        assert!(!overlap("/auth/sessions", "/auth/sessions/{id}"));
    }

    #[test]
    fn a_malformed_pattern_or_wrong_fields_are_caught_by_the_table_check() {
        assert!(declares("/auth/admin/users/{id}/roles/{role}", &["id", "role"]));
        assert!(declares("/auth/signup", &[]));
        assert!(!declares("/auth/admin/users/{id}/roles/{role}", &["role", "id"]));
        assert!(!declares("/auth/admin/users/{id}", &["user"]));
        assert!(!declares("/auth/admin/users/{id}", &[]));
        assert!(!declares("/auth/signup", &["id"]));
        assert!(!declares("/auth/x{id}", &["id"]));
        assert!(!declares("/auth/{id}x", &["id"]));
        assert!(!declares("/auth/{}", &[""]));
        assert!(!declares("/auth//signup", &[]));
        assert!(!declares("/auth/signup/", &[]));
        assert!(!declares("auth/signup", &[]));
        assert!(!declares("", &[]));
        assert!(!declares("/{a}/{b}/{c}", &["a", "b", "c"]));
    }

    #[test]
    fn everything_under_the_oauth_prefix_counts_against_the_oauth_limit_routed_or_not() {
        for path in ["/auth/oauth/exchange", "/auth/oauth/acme", "/auth/oauth/acme/authorize", "/auth/oauth/a/b/c"] {
            assert_eq!(ip_limit(path), Some(Endpoint::Oauth), "{path}");
        }
        for path in ["/auth/oauth", "/auth/oauthx/y", "/auth/login", "/.well-known/jwks.json", "/auth/OAUTH/exchange"] {
            assert_eq!(ip_limit(path), None, "{path}");
        }
    }

    #[test]
    fn the_hosted_pages_take_get_and_post_under_their_prefix_only() {
        assert_eq!(match_route("GET", "/auth/ui/login"), Ok(Route::UiLoginPage));
        assert_eq!(match_route("HEAD", "/auth/ui/account"), Ok(Route::UiAccountPage));
        assert_eq!(match_route("POST", "/auth/ui/magic-link"), Ok(Route::UiMagicLink));
        assert_eq!(match_route("POST", "/auth/ui/mfa"), Ok(Route::UiMfa));
        assert_eq!(match_route("DELETE", "/auth/ui/login"), not_allowed("GET, HEAD, POST"));
        assert_eq!(match_route("GET", "/auth/ui/nope"), Err(NoRoute::NotFound));
        assert_eq!(match_route("GET", "/auth/ui"), Err(NoRoute::NotFound));
        for ui in ["/auth/ui", "/auth/ui/login", "/auth/ui/nope/x"] {
            assert!(is_ui_path(ui), "{ui}");
        }
        for not in ["/auth/uix", "/auth/login", "/auth/u", "/.well-known/ui"] {
            assert!(!is_ui_path(not), "{not}");
        }
    }

    #[test]
    fn no_route_maps_to_404_and_405_with_allow() {
        assert_eq!(Error::from(NoRoute::NotFound).problem().status, 404);
        let p = Error::from(NoRoute::MethodNotAllowed { allow: "POST, DELETE" }).problem();
        assert_eq!((p.status, p.code, p.allow), (405, "method_not_allowed", Some("POST, DELETE")));
    }

    #[test]
    fn only_the_listings_read_from_a_replica() {
        let replica: Vec<&str> = [
            "/auth/admin/users",
            "/auth/admin/users/u1",
            "/auth/admin/audit",
            "/auth/audit",
            "/auth/me",
            "/auth/sessions",
        ]
        .into_iter()
        .filter(|p| match_route("GET", p).is_ok_and(|r| r.replica_reads()))
        .collect();
        assert_eq!(replica, ["/auth/admin/users", "/auth/admin/users/u1", "/auth/admin/audit", "/auth/audit"]);
        assert!(!match_route("PATCH", "/auth/admin/users/u1").is_ok_and(|r| r.replica_reads()));
    }
}
