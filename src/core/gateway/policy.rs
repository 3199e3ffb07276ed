//! Route policies: the `ROUTES` rules, path normalisation, and the decision
//! for one request.
//!
//! Matching happens on the normalised path — percent-decoded, `\` read as `/`,
//! duplicate slashes collapsed, `.` and `..` resolved, trailing slash dropped,
//! compared without regard to ASCII case — and the gateway forwards that same
//! normalised path, so the origin sees exactly what was authorised.
//!
//! # Paths as origins read them
//!
//! A rule must not be dodged by a spelling that the origin's framework reads
//! as the path the rule protects. Origins read more into a path than its
//! bytes. The readings modelled here, each one tested
//! (`an_accepted_path_is_let_through_only_where_every_origin_reading_is`):
//! Tomcat, Jetty and Spring strip path parameters (`;`); Windows and IIS trim
//! trailing dots and spaces from segments, and Spring's path matcher trims
//! whitespace; Java's `equalsIgnoreCase` and .NET's ordinal ignore-case match
//! `ſ` with `s`, `ı` with `i` and the Kelvin sign with `k`; Unicode
//! normalisation (NFKC) and case folding turn `ｓ`, `ﬁ` and `²` into ASCII
//! and drop invisible characters; a decoded `?` or `#` ends the path for
//! whoever parses it again; ASP.NET removes cookieless-session segments
//! (`/(S(…))/`); a PHP front controller routes the path after its script
//! from the script's directory (Laravel or Symfony at `/app/index.php` read
//! `/app/index.php/admin/x` as their `/admin/x`, which is the URL
//! `/app/admin/x`; at `/index.php`, `/index.php/api/x` is `/api/x`); and
//! Rails, Django REST framework and Spring's suffix matching read
//! `/api/x.json` as `/api/x`. Two ways answer them:
//!
//! - Refused (422 `invalid_path`), when a reading changes the path's text:
//!   - Rule patterns are ASCII. So a path dodges a rule only if we read it as
//!     not matching while the origin reads it as the rule's ASCII text.
//!   - ASCII is read the same by everyone once the path is decoded and its
//!     dot segments resolved, except for what is refused: controls, `;`,
//!     encoded `/`, `\`, `%`, `?` and `#`, segments that start with a space or
//!     end with a space or a dot, and ASP.NET cookieless segments (`(X(…)…)`,
//!     a letter and a parenthesised value, repeated, in parentheses). ASCII
//!     case is matched insensitively.
//!   - A non-ASCII character that stays non-ASCII under every reading cannot
//!     become a rule's text. So a non-ASCII character is refused exactly when
//!     some reading turns it into ASCII or into nothing, or when this build
//!     cannot tell: when its uppercase, lowercase or case folding contains
//!     ASCII; when its UTS 46 mapping (NFKC with case folding,
//!     default-ignorable characters removed) is empty, contains ASCII, or is
//!     disallowed (unassigned in this build's Unicode data, which a newer
//!     Unicode may map; private use; bidirectional controls); and whitespace,
//!     controls and the two joiners, which that mapping keeps but other
//!     readings trim or drop.
//! - Judged as every path it may be ([`Routes::judge`]), when a reading
//!   routes a valid path with a part taken out: the path without its first
//!   and without its last `*.php`, `*.phtml` or `*.phar` segment (Debian's
//!   default PHP handler pattern; `/app/index.php/admin/x` as
//!   `/app/admin/x`), and the path with its last segment cut at its first
//!   and at its last dot, a leading character aside (`/api/x.tar.gz` as
//!   `/api/x` and `/api/x.tar`). The request must pass the rule of each
//!   that a rule matches (next section).
//!
//! # Readings that reach only the default
//!
//! Another reading of a path counts only where it matches a rule; one that
//! would reach only `DEFAULT_POLICY` adds nothing. Else an exact public rule
//! for a dotted name, `{"path": "/robots.txt", "policy": "public"}`, would
//! need the default's token as well, since `/robots` matches no rule.
//!
//! The protection stays whole. Let a path `P` match rule `R` for a method
//! while a reading `Q` of it matches no rule for that method. `Q` is `P`
//! with parts taken out — the end of the last segment (a dot cut never takes
//! all of it: the leading character stays), a segment before the last (a
//! script), or both — and shares with `P` every segment before the first
//! part taken out. Had `R`'s pattern ended there — a subtree pattern over
//! segments `P` and `Q` share — `R` would cover `Q` too (its prefix heads
//! `Q`, and `Q` goes on below it) and match it for the same method. So `R`'s
//! pattern reaches into a part taken out: it names the dotted name itself
//! (`/robots.txt`, `/openapi.json/*`) or the script (`/app/index.php/*`),
//! the operator's explicit rule for the very name the origin would read
//! otherwise, which stands. Where `P` matches no rule, the default judges
//! `P` itself already. The same holds for a HEAD's GET policy and for each
//! method an override may name.
//!
//! Names, slugs and words in other scripts (`Müller`, `日本`, `ελληνικά`) pass;
//! `ß` (uppercase `SS`), Turkish `ı` and `İ`, ligatures and fullwidth forms
//! are refused: a client must spell them otherwise.
//!
//! Not modelled: readings an origin adds on its own (a custom rewrite, a
//! router that strips other prefixes), and Windows' best-fit conversion of a
//! Unicode path to an ANSI code page, which a CGI program or an ANSI API on
//! Windows applies: it reads `¥` (Japanese code pages) and `₩` (Korean) as
//! `\`, and other characters as ASCII look-alikes. Those that NFKC or case
//! mapping also turn into ASCII (`＼`, `ｓ`) are refused anyway; the
//! code-page tables themselves are not checked, so such an origin is
//! protected only by a rule over its whole tree.
//!
//! # Methods as origins read them
//!
//! Origins answer a HEAD with their GET handler: a rule listing `GET` also
//! covers `HEAD`, and a HEAD must pass the GET policy of its path too (a rule
//! listing `HEAD` alone cannot make it looser). Express, ASP.NET Core,
//! Symfony, Laravel and Rack act on a POST as another method when it says so:
//! the override headers never reach the origin (`crate::core::gateway::headers`), but
//! a `_method` query parameter does, and so does a `_method` in a body that a
//! streaming gateway does not read — a form (Rack, Symfony, ASP.NET Core),
//! `multipart/mixed` or `multipart/related` (Rack), JSON (Laravel), or any
//! body a custom `method-override` getter reads. So when the rules for a path
//! differ by method, a request that names `_method` in its query (as PHP, Rack,
//! Node or ASP.NET Core decode and mangle names: `names_method_override`),
//! and a POST with any body but a certainly empty one, must pass the policy
//! of every method the path's rules give. A rule saying `"method_override":
//! false` is the operator's word that the origin behind it honours no
//! override: no request of another method is judged under it (a POST with a
//! body needs what a POST needs, not what the rule gives DELETE). Nothing in
//! a request tells whether an origin honours overrides, so only the operator
//! can trade this strictness away, rule by rule.
//!
//! # Step-up: how and when the caller signed in
//!
//! The policy `mfa` asks for a token whose `amr` holds `mfa` (two factors in
//! its sign-in, see [`crate::core::amr`]); the rule member `"max_age": N`
//! for a token whose `auth_time` is at most N seconds old. A token without
//! them is refused with 401 `insufficient_user_authentication` and RFC 9470's
//! challenge (`WWW-Authenticate: Bearer error="insufficient_user_authentication"`,
//! with `max_age="N"` for the age), so a client knows to sign in again,
//! with its second factor. Like every policy, they apply wherever the
//! request's other readings and methods take it: a judgement asks for the
//! second factor if any policy it must pass is `mfa`, and for the smallest
//! `max_age` among the rules it meets. Both are read from the rules at
//! configuration time; a judgement of rules without them costs nothing more.

use icu_normalizer::uts46::Uts46MapperBorrowed;
use serde::Deserialize;

use crate::core::amr::Amr;
use crate::core::error::{Error, TokenError};
use crate::core::gateway::request::RequestView;
use crate::core::time::UnixTime;
use crate::core::token::AccessClaims;
use crate::core::users::Role;

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
    Role(Role),
    /// A valid token carrying at least one of these roles.
    AnyRole(Vec<Role>),
    /// A valid token of a sign-in with a second factor (`amr` holds `mfa`).
    Mfa,
}

impl Policy {
    /// Parses `public`, `authenticated`, `mfa`, `role:<name>` or `any_role:[a, b]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "public" => return Ok(Self::Public),
            "authenticated" => return Ok(Self::Authenticated),
            "mfa" => return Ok(Self::Mfa),
            _ => {}
        }
        if let Some(role) = s.strip_prefix("role:") {
            let role = role.trim();
            if !is_role_name(role) {
                return Err(format!("policy {s:?}: invalid role name"));
            }
            return Ok(Self::Role(Role::stored(role)));
        }
        if let Some(list) = s.strip_prefix("any_role:") {
            let inner = list
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or_else(|| format!("policy {s:?}: any_role needs a list like any_role:[admin,editor]"))?;
            let roles: Vec<Role> = inner
                .split(',')
                .map(|r| Role::stored(r.trim().trim_matches('"').trim()))
                .filter(|r| !r.is_empty())
                .collect();
            if roles.is_empty() || !roles.iter().all(|r| is_role_name(r)) {
                return Err(format!("policy {s:?}: any_role needs one or more valid role names"));
            }
            return Ok(Self::AnyRole(roles));
        }
        Err(format!("unknown policy {s:?} (expected public, authenticated, mfa, role:<name> or any_role:[...])"))
    }

    /// Whether a caller with `roles` satisfies the policy's roles (a token
    /// is assumed verified for every policy but `Public`; `Mfa`'s second
    /// factor is checked by [`Judgement::admit`]).
    pub fn allows(&self, roles: &[Role]) -> bool {
        match self {
            Self::Public | Self::Authenticated | Self::Mfa => true,
            Self::Role(r) => roles.iter().any(|have| have == r),
            Self::AnyRole(rs) => rs.iter().any(|r| roles.iter().any(|have| have == r)),
        }
    }
}

/// Whether `s` is an acceptable role name: 1–64 of `[A-Za-z0-9_.:-]`.
pub fn is_role_name(s: &str) -> bool {
    Role::is_name(s)
}

/// What applies to a request: a matching rule's, or the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The policy.
    pub policy: Policy,
    /// Rule member `forward_authorization`: the request's `Authorization`
    /// header reaches the origin. Otherwise it is removed, on public routes
    /// too (it is a credential, and the origin is told who the caller is).
    pub forward_authorization: bool,
    /// Rule member `method_override` (default `true`): whether the origin
    /// behind this rule may act on a request of another method as one of
    /// this rule's (a `_method` parameter, a POST's body). With `false` the
    /// operator says it honours no override: a request of another method is
    /// not judged under this rule. Always `true` for the default.
    pub method_override: bool,
    /// Rule member `max_age`: the caller must have signed in (`auth_time`)
    /// at most this many seconds ago. Never on the default.
    pub max_age_secs: Option<u64>,
    /// Rule member `mfa` (default `false`): the caller must have signed in
    /// with a second factor, as under the `mfa` policy — on top of this
    /// rule's own policy (`"policy": "role:admin", "mfa": true`). Never on
    /// the default.
    pub mfa: bool,
    /// Rule member `fresh` (default `false`): every request the rule judges
    /// has its token's session read from D1 — live, its user's, every role
    /// the token claims still held — before it is forwarded, instead of
    /// relying on the isolate's revocation set alone
    /// ([`crate::core::gateway::revocations::check_fresh`]). Always `false` for the
    /// default.
    pub fresh: bool,
}

/// One `ROUTES` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Lowercased, normalised (ASCII) pattern without its `/*` suffix.
    prefix: String,
    /// Whether the pattern ended in `/*` (matches the prefix and below).
    subtree: bool,
    /// Uppercased methods (with `HEAD` wherever `GET` is); `None` for all.
    methods: Option<Vec<String>>,
    /// What the rule says.
    pub route: Route,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: String,
    #[serde(default)]
    methods: Option<Vec<String>>,
    policy: String,
    #[serde(default)]
    forward_authorization: bool,
    #[serde(default = "honours_overrides")]
    method_override: bool,
    #[serde(default)]
    max_age: Option<u64>,
    #[serde(default)]
    mfa: bool,
    #[serde(default)]
    fresh: bool,
}

/// The largest `max_age` accepted: ten years, in seconds.
const MAX_MAX_AGE_SECS: u64 = 10 * 365 * 86_400;

/// The default of the rule member `method_override`: judged strictly.
fn honours_overrides() -> bool {
    true
}

impl Rule {
    /// Whether the rule's pattern covers a (normalised) path, ASCII case aside.
    fn covers(&self, normalised_path: &str) -> bool {
        let p = self.prefix.as_bytes();
        let path = normalised_path.as_bytes();
        let head = path.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        if self.subtree {
            head && (p == b"/" || matches!(path.get(p.len()), None | Some(b'/')))
        } else {
            head && path.len() == p.len()
        }
    }

    /// Whether the rule applies to a request (path already normalised).
    pub fn matches(&self, method: &str, normalised_path: &str) -> bool {
        self.covers(normalised_path)
            && self.methods.as_ref().is_none_or(|ms| ms.iter().any(|m| m.eq_ignore_ascii_case(method)))
    }
}

/// Whether a request certainly has an empty body: none at all, or
/// `Content-Length: 0` without a `Transfer-Encoding` (which would override it).
fn body_is_empty(req: &impl RequestView) -> bool {
    !req.has_body()
        || (req.header("content-length").is_some_and(|v| v.trim() == "0") && req.header("transfer-encoding").is_none())
}

/// The judgement of one request: the route of its own method, and every
/// further policy it must pass because the origin may act on it as another
/// method or read its path as another path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement<'a> {
    /// The rule (or default) for the request's method on its path as sent.
    pub route: &'a Route,
    forward_authorization: bool,
    also: Vec<&'a Policy>,
    /// The smallest `max_age` of the rules met.
    max_age_secs: Option<u64>,
    /// Whether any rule met says `"mfa": true`.
    mfa: bool,
    /// Whether any rule met says `fresh`.
    fresh: bool,
}

/// The smaller of two optional bounds (`None`: no bound).
fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

impl<'a> Judgement<'a> {
    /// Whether no token is needed.
    pub fn is_public(&self) -> bool {
        self.route.policy == Policy::Public && self.also.iter().all(|p| **p == Policy::Public)
    }

    /// `Ok` if a verified caller with `roles` passes every policy's roles,
    /// else the 403. Knowing nothing of how the caller signed in, it refuses
    /// a judgement that asks for a second factor or a recent sign-in (401
    /// `insufficient_user_authentication`): [`Judgement::admit`] checks them.
    pub fn authorize(&self, roles: &[Role]) -> Result<(), Error> {
        authorize(&self.route.policy, roles)?;
        self.also.iter().try_for_each(|p| authorize(p, roles))?;
        if self.needs_mfa() || self.max_age_secs.is_some() {
            return Err(Error::InsufficientAuthentication { mfa: self.needs_mfa(), max_age_secs: self.max_age_secs });
        }
        Ok(())
    }

    /// `Ok` if the caller of the verified token `claims` passes every policy
    /// at `now`: its roles (else 403 `insufficient_role`), then its sign-in —
    /// a second factor where a policy is `mfa`, an `auth_time` at most the
    /// smallest `max_age` old — else 401 `insufficient_user_authentication`
    /// naming what is missing.
    pub fn admit(&self, claims: &AccessClaims, now: UnixTime) -> Result<(), Error> {
        authorize(&self.route.policy, &claims.roles)?;
        self.also.iter().try_for_each(|p| authorize(p, &claims.roles))?;
        let mfa = self.needs_mfa() && !claims.amr.contains(Amr::MFA);
        let max_age_secs = self.max_age_secs.filter(|max| {
            let max = i64::try_from(*max).unwrap_or(i64::MAX);
            claims.auth_time.is_none_or(|t| now.0.saturating_sub(t) > max)
        });
        if mfa || max_age_secs.is_some() {
            return Err(Error::InsufficientAuthentication { mfa, max_age_secs });
        }
        Ok(())
    }

    /// Whether a policy to pass is `mfa`, or a rule met says `"mfa": true`.
    fn needs_mfa(&self) -> bool {
        self.mfa || self.route.policy == Policy::Mfa || self.also.contains(&&Policy::Mfa)
    }

    /// The policies besides the route's own (for tests and logs).
    pub fn also(&self) -> &[&Policy] {
        &self.also
    }

    /// Whether the request's `Authorization` header reaches the origin: only
    /// if the route of its path, and of every other reading of it that a rule
    /// matches, says `forward_authorization`.
    pub fn forwards_authorization(&self) -> bool {
        self.forward_authorization
    }

    /// Adds `r`'s policy and `max_age` to what the request must pass.
    /// Whether the token's session must be read from D1 before forwarding
    /// ([`Route::fresh`]): if the route of the path says so, or that of any
    /// other reading of it or method it is judged under.
    pub fn needs_fresh_session(&self) -> bool {
        self.fresh
    }

    fn require(&mut self, r: &'a Route) {
        self.fresh |= r.fresh;
        self.mfa |= r.mfa;
        self.max_age_secs = tighter(self.max_age_secs, r.max_age_secs);
        let p = &r.policy;
        if *p != self.route.policy && !self.also.contains(&p) {
            self.also.push(p);
        }
    }

    /// Whether requiring `r` would add nothing.
    fn holds(&self, r: &Route) -> bool {
        r.policy == self.route.policy
            && r.max_age_secs.is_none_or(|m| self.max_age_secs.is_some_and(|have| have <= m))
            && (!r.fresh || self.fresh)
            && (!r.mfa || self.mfa)
    }
}

/// The ordered rule list and the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    rules: Vec<Rule>,
    default: Route,
    /// Whether any rule lists methods (else a request's method never matters).
    method_specific: bool,
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
            let prefix = normalise_path(base).map_err(|_| at(format!("path {:?} is not a valid path", r.path)))?;
            if !prefix.is_ascii() {
                // Non-ASCII text has readings (case, normalisation) that
                // ASCII does not; see the module docs.
                return Err(at(format!("path {:?} must be ASCII (protect its ASCII parent, e.g. \"/api/*\")", r.path)));
            }
            let methods = match r.methods {
                Some(ms) if ms.is_empty() => return Err(at("methods must not be empty".into())),
                Some(ms) => {
                    for m in &ms {
                        // A misspelt method would make a rule that never
                        // matches, and its paths fall to a looser rule.
                        if !KNOWN_METHODS.iter().any(|k| k.eq_ignore_ascii_case(m)) {
                            return Err(at(format!(
                                "method {m:?} is not a registered HTTP method (GET, HEAD, POST, PUT, PATCH, DELETE, \
                                 OPTIONS, or another of the IANA HTTP Method Registry)"
                            )));
                        }
                    }
                    let mut ms: Vec<String> = ms.into_iter().map(|m| m.to_ascii_uppercase()).collect();
                    // Origins answer HEAD with their GET handler.
                    if ms.iter().any(|m| m == "GET") && !ms.iter().any(|m| m == "HEAD") {
                        ms.push("HEAD".into());
                    }
                    Some(ms)
                }
                None => None,
            };
            let policy = Policy::parse(&r.policy).map_err(at)?;
            if r.fresh && policy == Policy::Public {
                return Err(at("fresh needs a policy that checks a token, not public".into()));
            }
            let max_age_secs = match r.max_age {
                None => None,
                Some(_) if policy == Policy::Public => {
                    return Err(at("max_age on a public rule: there is no sign-in to check".into()))
                }
                Some(n) if (1..=MAX_MAX_AGE_SECS).contains(&n) => Some(n),
                Some(n) => {
                    return Err(at(format!("max_age {n}: a whole number of seconds from 1 to {MAX_MAX_AGE_SECS}")))
                }
            };
            if r.mfa && policy == Policy::Public {
                return Err(at("mfa on a public rule: there is no sign-in to check".into()));
            }
            let route = Route {
                policy,
                forward_authorization: r.forward_authorization,
                method_override: r.method_override,
                max_age_secs,
                mfa: r.mfa,
                fresh: r.fresh,
            };
            rules.push(Rule { prefix: prefix.to_ascii_lowercase(), subtree, methods, route });
        }
        let method_specific = rules.iter().any(|r| r.methods.is_some());
        let default = Route {
            policy: default,
            forward_authorization: false,
            method_override: true,
            max_age_secs: None,
            mfa: false,
            fresh: false,
        };
        Ok(Self { rules, default, method_specific })
    }

    /// The route for a request: the first matching rule's, else the default.
    pub fn route_for(&self, method: &str, normalised_path: &str) -> &Route {
        self.rule_for(method, normalised_path).unwrap_or(&self.default)
    }

    /// The route of the first matching rule, if any rule matches.
    fn rule_for(&self, method: &str, normalised_path: &str) -> Option<&Route> {
        self.rules.iter().find(|r| r.matches(method, normalised_path)).map(|r| &r.route)
    }

    /// The policy for a request: the first matching rule's, else the default.
    pub fn policy_for(&self, method: &str, normalised_path: &str) -> &Policy {
        &self.route_for(method, normalised_path).policy
    }

    /// Judges a request on a normalised path: the route of its method and,
    /// when the origin may read the path as another path or act on the
    /// request as another method (see the module docs), the policies of
    /// those paths and methods too — of another reading of the path, only
    /// what an explicit rule gives it, never the default alone. Without
    /// rules listing methods and without a dot in the last segment or a PHP
    /// script segment, costs one rule lookup and a scan of the path; reads
    /// `Content-Length` (and `Transfer-Encoding`) only for a POST with a
    /// body on a path whose rules differ by method. Allocates only when
    /// another policy applies or the path holds a PHP script segment.
    pub fn judge(&self, req: &impl RequestView, normalised_path: &str) -> Judgement<'_> {
        let method = req.method();
        let route = self.route_for(method, normalised_path);
        let mut j = Judgement {
            route,
            forward_authorization: route.forward_authorization,
            also: Vec::new(),
            max_age_secs: route.max_age_secs,
            mfa: route.mfa,
            fresh: route.fresh,
        };
        let head = self.method_specific && method.eq_ignore_ascii_case("HEAD");
        // Whether the origin may act on the request as another method: read
        // once, only where some rule lists methods, and only what is needed.
        let named = self.method_specific && req.query().is_some_and(names_method_override);
        let post = self.method_specific && method.eq_ignore_ascii_case("POST");
        let mut overridden: Option<bool> = (!named && !post).then_some(false);
        for_each_reading(normalised_path, |path, reading| {
            // The path as sent falls back to the default; another reading
            // counts only where a rule names it (module docs).
            let route_of = |m: &str| match reading {
                Reading::AsSent => Some(self.route_for(m, path)),
                Reading::Other => self.rule_for(m, path),
            };
            if reading == Reading::Other {
                if let Some(r) = route_of(method) {
                    j.forward_authorization &= r.forward_authorization;
                    j.require(r);
                }
            }
            if head {
                if let Some(r) = route_of("GET") {
                    j.require(r);
                }
            }
            if overridden == Some(false) {
                return;
            }
            let others = self.override_routes(path, reading == Reading::AsSent);
            if others.iter().all(|r| j.holds(r)) {
                return;
            }
            if *overridden.get_or_insert_with(|| named || !body_is_empty(req)) {
                others.into_iter().for_each(|r| j.require(r));
            }
        });
        j
    }

    /// Every distinct route a request may meet on this path when the origin
    /// acts on it as another method: that of every rule an override can
    /// land on (not those saying `"method_override": false`), and, with
    /// `default`, the default's where some method reaches it.
    fn override_routes(&self, normalised_path: &str, default: bool) -> Vec<&Route> {
        let mut out: Vec<&Route> = Vec::new();
        let mut claimed: Vec<&str> = Vec::new();
        for r in self.rules.iter().filter(|r| r.covers(normalised_path)) {
            match &r.methods {
                None => {
                    if r.route.method_override {
                        push_unique(&mut out, &r.route);
                    }
                    return out;
                }
                Some(ms) => {
                    // A rule whose every method an earlier rule took never applies.
                    if r.route.method_override && ms.iter().any(|m| !claimed.contains(&m.as_str())) {
                        push_unique(&mut out, &r.route);
                    }
                    claimed.extend(ms.iter().map(String::as_str));
                }
            }
        }
        if default {
            push_unique(&mut out, &self.default);
        }
        out
    }
}

fn push_unique<'a>(out: &mut Vec<&'a Route>, p: &'a Route) {
    if !out.contains(&p) {
        out.push(p);
    }
}

/// Which reading of a path [`for_each_reading`] hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The normalised path itself.
    AsSent,
    /// Another path an origin may route it as.
    Other,
}

/// Calls `f` with every path an origin may route a normalised path as: the
/// path itself first, then the path without its first and without its last
/// PHP script segment (a front controller routes its `PATH_INFO` from the
/// script's directory: Symfony and Laravel at `/app/index.php` read
/// `/app/index.php/admin/x` as their `/admin/x`, the URL `/app/admin/x`;
/// nginx's `fastcgi_split_path_info` takes the first script, Apache the
/// first that is a file), and each of those with the last segment cut at
/// its first dot (Spring's suffix match) and at its last (Rails, Django REST
/// framework), a leading character aside. At most nine readings, however
/// many scripts or dots a path holds (each costs a rule lookup). Those of
/// the path itself are slices of it; one buffer holds a path without a
/// script, allocated only when there is one.
fn for_each_reading(path: &str, mut f: impl FnMut(&str, Reading)) {
    let name = &path[path.rfind('/').map_or(0, |i| i + 1)..];
    // What each dot cut drops from the end: every reading ends in `name`.
    let lead = name.chars().next().map_or(0, char::len_utf8);
    let first_dot = name[lead..].find('.').map(|i| lead + i);
    let last_dot = name.rfind('.').filter(|&i| i > 0 && Some(i) != first_dot);
    let cuts = [first_dot, last_dot].map(|dot| dot.map(|d| name.len() - d));
    let mut reading = |p: &str, which: Reading| {
        f(p, which);
        for drop in cuts.into_iter().flatten() {
            f(&p[..p.len() - drop], Reading::Other);
        }
    };
    reading(path, Reading::AsSent);
    // Segments before the last one that name a PHP script: where the first
    // and the last begin (at their `/`) and end (at the next).
    let (mut first_script, mut last_script) = (None, None);
    let mut at = 0;
    while let Some(end) = path[at + 1..].find('/').map(|i| at + 1 + i) {
        if is_php_script(&path[at + 1..end]) {
            first_script.get_or_insert((at, end));
            last_script = Some((at, end));
        }
        at = end;
    }
    let mut without = String::new();
    for (start, end) in [first_script, last_script.filter(|s| Some(*s) != first_script)].into_iter().flatten() {
        without.clear();
        without.push_str(&path[..start]);
        without.push_str(&path[end..]);
        reading(&without, Reading::Other);
    }
}

/// Whether a segment names a script that PHP runs with the rest of the path
/// as `PATH_INFO`: `*.php`, `*.phtml`, `*.phar` in any case (Debian's and
/// the PHP manual's handler pattern `.+\.ph(ar|p|tml)$`; Windows and
/// `location ~*` match it case-insensitively).
fn is_php_script(segment: &str) -> bool {
    let s = segment.as_bytes();
    [".php", ".phtml", ".phar"]
        .iter()
        .any(|ext| s.len() > ext.len() && s[s.len() - ext.len()..].eq_ignore_ascii_case(ext.as_bytes()))
}

/// Whether a query names a method override: a parameter that PHP (Symfony,
/// Laravel), Rack, Node's `querystring` (Express's `method-override`) or
/// ASP.NET Core reads as `_method` ([`php_reads_method`],
/// [`plain_reads_method`]), ignoring ASCII case (ASP.NET Core's collections
/// do). Pairs are split on `&` and on `;` (PHP's `arg_separator.input` may
/// list it, older Rack splits on both); a name ends at the first `=`.
pub(crate) fn names_method_override(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or("").as_bytes();
        php_reads_method(FormDecoded(name)) || plain_reads_method(FormDecoded(name))
    })
}

/// Whether PHP files a query parameter of this (decoded) name under
/// `$_GET['_method']`, mangling it as `php_register_variable_ex` does: the
/// name is a C string (it ends at a decoded NUL); leading spaces are
/// dropped; then every space and `.` is read as `_` up to the first `[`,
/// where the name ends if a `]` follows anywhere (`_method[x]`, `_method[]`:
/// an array under `_method`); without one the `[` is read as `_` and the name
/// goes on (`_method[x` is `_method_x`), which can never give `_method` (its
/// second character is not `_`). So `+_method`, `%20.method`, `.method` and
/// `_method%00x` are `_method`; `+method` (`method`) and `_method.`
/// (`_method_`) are not.
fn php_reads_method(name: FormDecoded<'_>) -> bool {
    let mut it = name.take_while(|&b| b != 0).skip_while(|&b| b == b' ');
    if !matches!(it.next(), Some(b'_' | b'.')) {
        return false;
    }
    if !b"method".iter().all(|want| it.next().is_some_and(|b| b.eq_ignore_ascii_case(want))) {
        return false;
    }
    match it.next() {
        None => true,
        Some(b'[') => it.any(|b| b == b']'),
        Some(_) => false,
    }
}

/// Whether Rack, Node's `querystring`/`qs` or ASP.NET Core read a query
/// parameter of this (decoded) name as `_method`: the name itself, or its
/// base before a `[` or `]` (`_method[]`, `_method[x]`), after any leading
/// brackets (Rack 2 drops them: `[_method]`).
fn plain_reads_method(name: FormDecoded<'_>) -> bool {
    let mut it = name.skip_while(|&b| b == b'[' || b == b']');
    b"_method".iter().all(|want| it.next().is_some_and(|b| b.eq_ignore_ascii_case(want)))
        && matches!(it.next(), None | Some(b'[' | b']'))
}

/// The bytes of a query component as form decoding reads them: `+` is a
/// space, `%` and two hex digits a byte, any other `%` itself (PHP's
/// `php_url_decode`, Node's `querystring.unescape`).
#[derive(Clone)]
struct FormDecoded<'a>(&'a [u8]);

impl Iterator for FormDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        match (b, rest) {
            (b'+', _) => Some(b' '),
            (b'%', [h, l, tail @ ..]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                self.0 = tail;
                Some(hex_value(*h) << 4 | hex_value(*l))
            }
            _ => Some(b),
        }
    }
}

/// The value of an ASCII hex digit (0 for anything else).
fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

/// Whether a (decoded) segment is ASP.NET's cookieless state, which it
/// removes from the path before routing: in parentheses, one or more of a
/// letter and a parenthesised value without `)` (`(S(x))`, `(A(x)F(y))`:
/// session, anonymous id, forms ticket). ASP.NET asks for capitals; any
/// letter is refused here.
fn is_cookieless_segment(segment: &str) -> bool {
    let Some(mut rest) = segment.strip_prefix('(').and_then(|s| s.strip_suffix(')')).map(str::as_bytes) else {
        return false;
    };
    if rest.is_empty() {
        return false;
    }
    while let [letter, b'(', tail @ ..] = rest {
        if !letter.is_ascii_alphabetic() {
            return false;
        }
        let Some(close) = tail.iter().position(|&b| b == b')') else { return false };
        rest = &tail[close + 1..];
    }
    rest.is_empty()
}

/// A request path made canonical; see the module docs. The result starts with
/// `/`, has no empty, `.` or `..` segments and no trailing slash. Case is
/// kept (the origin gets it); matching ignores ASCII case, so case cannot
/// dodge a rule.
pub fn normalise_path(raw: &str) -> Result<String, Error> {
    let bad = || Error::validation("invalid_path", "the request path is not acceptable");
    if raw.len() > MAX_PATH_LEN {
        return Err(bad());
    }
    let decoded = percent_decode(raw).ok_or_else(bad)?;
    if !decoded.is_ascii() && !decoded.chars().all(reads_as_itself) {
        return Err(bad());
    }
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
            // Windows and IIS trim trailing dots and spaces (`secrets.` is
            // `secrets`), Spring's path matcher trims spaces at both ends.
            s if s.ends_with(['.', ' ']) || s.starts_with(' ') => return Err(bad()),
            // ASP.NET drops `/(S(…))/`: `/(S(x))/api/admin` is its `/api/admin`.
            s if s.starts_with('(') && is_cookieless_segment(s) => return Err(bad()),
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

/// Whether every reading we know of leaves `c` outside ASCII and present;
/// see the module docs. ASCII itself is judged elsewhere.
fn reads_as_itself(c: char) -> bool {
    if c.is_ascii() {
        return true;
    }
    // Trimmed or dropped by some reading though UTS 46 keeps them.
    if c.is_whitespace() || c.is_control() || matches!(c, '\u{200C}' | '\u{200D}') {
        return false;
    }
    // Java's and .NET's case-insensitive comparisons: `ſ`/`S`, `ı`/`I`,
    // `İ`/`i`, the Kelvin sign/`k`, `ß`/`SS`; and case folding.
    let cased = c.to_uppercase().chain(c.to_lowercase()).chain(c.to_uppercase().flat_map(char::to_lowercase));
    if cased.into_iter().any(|m| m.is_ascii()) {
        return false;
    }
    // NFKC with case folding, default-ignorable characters removed.
    let mut kept = false;
    for m in Uts46MapperBorrowed::new().map_normalize(core::iter::once(c)) {
        if m.is_ascii() || m == char::REPLACEMENT_CHARACTER {
            return false;
        }
        kept = true;
    }
    kept
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

/// Decodes `%XX` escapes; refuses encoded `/`, `\`, `%`, `?`, `#`, NUL and
/// other control characters, raw controls, `?` and `#` (a serialised URL's
/// path has none; a rule pattern must not), and invalid UTF-8 or escapes.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            // A decoded delimiter is a delimiter to whoever parses the path
            // again: `/api/secrets%3F/x` is `/api/secrets` to them.
            if matches!(v, b'/' | b'\\' | b'%' | b'?' | b'#') || v < 0x20 || v == 0x7f {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            if b < 0x20 || b == 0x7f || b == b'?' || b == b'#' {
                return None;
            }
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks that a verified caller satisfies `policy`: `Ok` or the 403 to send.
pub fn authorize(policy: &Policy, roles: &[Role]) -> Result<(), Error> {
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

/// The methods a rule may list: the IANA HTTP Method Registry's, but for
/// `PRI` (HTTP/2's preface, never a request's method) and the reserved `*`.
const KNOWN_METHODS: [&str; 39] = [
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "CONNECT",
    "COPY",
    "DELETE",
    "GET",
    "HEAD",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "OPTIONS",
    "ORDERPATCH",
    "PATCH",
    "POST",
    "PROPFIND",
    "PROPPATCH",
    "PUT",
    "QUERY",
    "REBIND",
    "REPORT",
    "SEARCH",
    "TRACE",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

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
        // Every registered method may be listed, the hyphenated ones too.
        let all = format!(r#"[{{"path": "/x", "methods": {:?}, "policy": "public"}}]"#, KNOWN_METHODS);
        assert!(Routes::parse(Some(&all), None).is_ok());
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
            (
                r#"[{"path": "/x", "methods": ["DELTE"], "policy": "public"}]"#,
                "\"DELTE\" is not a registered HTTP method",
            ),
            (r#"[{"path": "/x", "methods": ["G ET"], "policy": "public"}]"#, "not a registered"),
            (r#"[{"path": "/x", "methods": [""], "policy": "public"}]"#, "not a registered"),
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

    fn secrets_routes() -> Routes {
        Routes::parse(
            Some(r#"[{"path": "/api/secrets/*", "policy": "role:admin"}, {"path": "/api/*", "policy": "public"}]"#),
            None,
        )
        .unwrap()
    }

    #[test]
    fn unicode_spellings_that_origins_read_as_ascii_are_refused() {
        // Each would miss `/api/secrets/*` (and fall to `/api/*`, public)
        // while an origin reads it as `/api/secrets/x`.
        for raw in [
            "/api/%C5%BFecrets/x",        // ſ: Java's equalsIgnoreCase, .NET ignore-case, case folding
            "/api/secret%C5%BF/x",        // ſ at the end
            "/api/%EF%BD%93ecrets/x",     // fullwidth ｓ: NFKC
            "/api/%EF%BC%B3ECRETS/x",     // fullwidth Ｓ
            "/api/secrets%E2%80%8B/x",    // zero-width space: dropped by NFKC_Casefold
            "/api/sec%C2%ADrets/x",       // soft hyphen
            "/api/sec%E2%80%8Drets/x",    // zero-width joiner
            "/api/secr%EF%BB%BFets/x",    // BOM
            "/api/%E2%80%AEsecrets/x",    // right-to-left override
            "/api/secrets%C2%A0/x",       // no-break space (trimmed by .NET, NFKC: space)
            "/api/secrets%E3%80%80/x",    // ideographic space
            "/api/secrets%C2%85/x",       // NEL (C1 control, .NET whitespace)
            "/api/secret%EF%AC%86/x",     // ﬆ ligature: NFKC "st"
            "/api/%F0%9C%B3%98ecrets/x",  // outlined S (Unicode 16): NFKC "s"
            "/api/%C4%B1tems/x",          // ı: Java/.NET read it as i
            "/api/%C4%B0tems/x",          // İ: lowercases to i + dot
            "/api/%E2%84%AAeys/x",        // Kelvin sign: k
            "/api/pa%C3%9F/x",            // ß: uppercase SS
            "/api/%C2%B2fa/x",            // superscript two: NFKC 2
            "/api/%C2%AAdmin/x",          // feminine ordinal: NFKC a
            "/api/%EF%BC%8E%EF%BC%8E/x",  // fullwidth dots: `..` after NFKC
            "/api/%EF%BC%8Fsecrets",      // fullwidth solidus: `/` after NFKC
            "/api/%F3%A0%80%81secrets/x", // tag character (default-ignorable)
            "/api/%EE%80%80/x",           // private use: no reading known
            "/api/%F0%AF%A8%A0/x",        // unassigned here: a newer Unicode may map it
        ] {
            assert!(normalise_path(raw).is_err(), "{raw} is accepted as {:?}", normalise_path(raw));
        }
        let ascii = normalise_path("/API/Secrets/x").unwrap();
        assert_eq!(
            secrets_routes().policy_for("GET", &ascii),
            &Policy::Role("admin".into()),
            "ASCII case still matches"
        );
    }

    #[test]
    fn names_and_words_in_other_scripts_pass_unchanged() {
        for (raw, decoded) in [
            ("/api/users/M%C3%BCller", "/api/users/Müller"),
            ("/api/users/M%C3%9CLLER", "/api/users/MÜLLER"),
            ("/api/caf%C3%A9s/cr%C3%A8me", "/api/cafés/crème"),
            ("/api/%E6%97%A5%E6%9C%AC", "/api/日本"),
            ("/api/%CE%BB%CF%8C%CE%B3%CE%BF%CF%82", "/api/λόγος"),
            ("/api/%D0%9C%D0%BE%D1%81%D0%BA%D0%B2%D0%B0", "/api/Москва"),
            ("/api/%F0%9F%98%80/a%20b", "/api/😀/a b"),
            ("/api/v1.2/.well/a.b", "/api/v1.2/.well/a.b"),
        ] {
            assert_eq!(normalise_path(raw).unwrap(), decoded, "{raw}");
        }
    }

    #[test]
    fn segments_that_servers_trim_are_refused() {
        // Windows and IIS trim trailing dots and spaces; Spring's path
        // matcher trims spaces at both ends: `/api/secrets./x` is their
        // `/api/secrets/x`.
        for raw in [
            "/api/secrets./x",
            "/api/secrets../x",
            "/api/secrets.%20./x",
            "/api/secrets%20/x",
            "/api/%20secrets/x",
            "/api/.../x",
            "/api/secrets/x.",
            "/api/secrets%2E",
        ] {
            assert!(normalise_path(raw).is_err(), "{raw}");
        }
        assert_eq!(normalise_path("/api/x/./y/../z").unwrap(), "/api/x/z", "dot segments are still resolved");
        assert_eq!(normalise_path("/api/a%20b/.env").unwrap(), "/api/a b/.env");
    }

    #[test]
    fn encoded_query_and_fragment_delimiters_are_refused() {
        // Whoever decodes the path and parses it again ends it there:
        // `/api/secrets%3F/x` is their `/api/secrets`.
        for raw in ["/api/secrets%3F/x", "/api/secrets%3f", "/api/secrets%23/x", "/api/a%23b", "/api/a?b", "/api/a#b"] {
            assert!(normalise_path(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn rule_patterns_must_be_ascii_and_valid_paths() {
        for json in [
            r#"[{"path": "/api/müller/*", "policy": "public"}]"#,
            r#"[{"path": "/api/caf%C3%A9", "policy": "public"}]"#,
            r#"[{"path": "/api/secrets./*", "policy": "public"}]"#,
            r#"[{"path": "/api/a%3Fb", "policy": "public"}]"#,
        ] {
            let err = Routes::parse(Some(json), None).unwrap_err();
            assert!(err.starts_with("ROUTES[0]"), "{json}: {err}");
        }
    }

    #[test]
    fn a_rule_listing_get_also_covers_head() {
        let r = Routes::parse(
            Some(r#"[{"path": "/api/reports/*", "methods": ["get"], "policy": "role:admin"}]"#),
            Some("authenticated"),
        )
        .unwrap();
        assert_eq!(r.policy_for("HEAD", "/api/reports/q3"), &Policy::Role("admin".into()));
        assert_eq!(r.policy_for("head", "/api/reports/q3"), &Policy::Role("admin".into()));
        assert_eq!(r.policy_for("POST", "/api/reports/q3"), &Policy::Authenticated);
        let only_post =
            Routes::parse(Some(r#"[{"path": "/x", "methods": ["POST"], "policy": "public"}]"#), None).unwrap();
        assert_eq!(only_post.policy_for("HEAD", "/x"), &Policy::Authenticated);
    }

    #[test]
    fn authorization_is_forwarded_only_where_a_rule_opts_in() {
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/public/*", "policy": "public"},
                    {"path": "/api/relay/*", "policy": "public", "forward_authorization": true},
                    {"path": "/api/own/*", "policy": "authenticated", "forward_authorization": false}]"#,
            ),
            None,
        )
        .unwrap();
        assert!(!r.route_for("GET", "/api/public/x").forward_authorization);
        assert!(r.route_for("GET", "/api/relay/x").forward_authorization);
        assert!(!r.route_for("GET", "/api/own/x").forward_authorization);
        assert!(!r.route_for("GET", "/elsewhere").forward_authorization, "the default never forwards it");
        for bad in [
            r#"[{"path": "/x", "policy": "public", "forward_authorization": "yes"}]"#,
            r#"[{"path": "/x", "policy": "public", "forward_authorization": 1}]"#,
            r#"[{"path": "/x", "policy": "public", "forward_authorisation": true}]"#,
        ] {
            assert!(Routes::parse(Some(bad), None).unwrap_err().starts_with("ROUTES"), "{bad}");
        }
    }

    /// A request as the judgement reads it, counting header reads.
    struct Req {
        method: &'static str,
        query: Option<&'static str>,
        headers: Vec<(&'static str, &'static str)>,
        body: bool,
        reads: std::cell::Cell<u32>,
    }

    /// A request with a body of this `Content-Type` (and a length).
    fn req(method: &'static str, query: Option<&'static str>, content_type: Option<&'static str>) -> Req {
        let mut headers = vec![("content-length", "14")];
        headers.extend(content_type.map(|ct| ("content-type", ct)));
        Req { method, query, headers, body: true, reads: std::cell::Cell::new(0) }
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn query(&self) -> Option<&str> {
            self.query
        }
        fn has_body(&self) -> bool {
            self.body
        }
        fn header(&self, name: &str) -> Option<String> {
            self.reads.set(self.reads.get() + 1);
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.to_string())
        }
    }

    fn items_routes() -> Routes {
        Routes::parse(
            Some(r#"[{"path": "/api/items/*", "methods": ["DELETE", "PUT"], "policy": "role:admin"}]"#),
            Some("authenticated"),
        )
        .unwrap()
    }

    const USER: &[Role] = &[];

    fn admin() -> Vec<Role> {
        vec!["admin".into()]
    }

    /// A verified caller's claims: roles, `amr`, `auth_time`.
    fn caller(roles: &[&str], amr: Amr, auth_time: Option<i64>) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            aud: vec!["a".into()],
            sub: "u".into(),
            sid: "s".into(),
            roles: roles.iter().map(|r| Role::from(*r)).collect(),
            email: "e@x.io".into(),
            email_verified: true,
            jti: "j".into(),
            amr,
            auth_time,
        }
    }

    fn step_up_routes() -> Routes {
        Routes::parse(
            Some(
                r#"[{"path": "/api/billing/*", "policy": "mfa"},
                    {"path": "/api/admin/*", "policy": "role:admin", "max_age": 300},
                    {"path": "/api/vault/*", "policy": "mfa", "max_age": 60},
                    {"path": "/api/files/*", "methods": ["DELETE"], "policy": "authenticated", "max_age": 120}]"#,
            ),
            None,
        )
        .unwrap()
    }

    #[test]
    fn the_mfa_policy_asks_for_a_second_factor_and_max_age_for_a_recent_sign_in() {
        let r = step_up_routes();
        let now = UnixTime(10_000);
        let mfa = Amr::PWD.with(Amr::OTP).with(Amr::MFA);
        let get = req("GET", None, None);
        let refusal = |mfa, max_age_secs| Err(Error::InsufficientAuthentication { mfa, max_age_secs });
        let billing = r.judge(&get, "/api/billing/invoices");
        assert_eq!(billing.admit(&caller(&[], Amr::PWD, Some(9_999)), now), refusal(true, None));
        assert_eq!(billing.admit(&caller(&[], Amr::NONE, None), now), refusal(true, None), "an old token");
        assert_eq!(billing.admit(&caller(&[], mfa, Some(1)), now), Ok(()), "no age asked");
        let admin_route = r.judge(&get, "/api/admin/users");
        assert_eq!(admin_route.admit(&caller(&["admin"], Amr::PWD, Some(10_000 - 300)), now), Ok(()));
        assert_eq!(
            admin_route.admit(&caller(&["admin"], Amr::PWD, Some(10_000 - 301)), now),
            refusal(false, Some(300))
        );
        assert_eq!(admin_route.admit(&caller(&["admin"], mfa, None), now), refusal(false, Some(300)), "no auth_time");
        // The role decides first: stepping up would not help.
        assert_eq!(
            admin_route.admit(&caller(&[], Amr::PWD, Some(1)), now).unwrap_err().problem().code,
            "insufficient_role"
        );
        let vault = r.judge(&get, "/api/vault/k");
        assert_eq!(vault.admit(&caller(&[], Amr::PWD, Some(1)), now), refusal(true, Some(60)));
        assert_eq!(vault.admit(&caller(&[], mfa, Some(1)), now), refusal(false, Some(60)));
        assert_eq!(vault.admit(&caller(&[], mfa, Some(9_950)), now), Ok(()));
        // The roles-only check cannot tell: it refuses.
        assert_eq!(billing.authorize(&admin()), refusal(true, None));
        assert_eq!(admin_route.authorize(&admin()), refusal(false, Some(300)));
        // Elsewhere nothing changes.
        let other = r.judge(&get, "/api/other");
        assert_eq!(other.authorize(USER), Ok(()));
        assert_eq!(other.admit(&caller(&[], Amr::NONE, None), now), Ok(()));
    }

    #[test]
    fn a_rule_asks_for_a_role_and_a_second_factor_with_mfa_true() {
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/admin/*", "policy": "role:admin", "mfa": true},
                     {"path": "/api/admin/*", "methods": ["DELETE"], "policy": "role:admin"}]"#,
            ),
            None,
        )
        .unwrap();
        let now = UnixTime(10_000);
        let mfa = Amr::PWD.with(Amr::OTP).with(Amr::MFA);
        let j = r.judge(&req("GET", None, None), "/api/admin/users");
        // The role first (stepping up would not help), then the second factor.
        assert_eq!(j.admit(&caller(&[], mfa, Some(1)), now).unwrap_err().problem().code, "insufficient_role");
        assert_eq!(
            j.admit(&caller(&["admin"], Amr::PWD, Some(1)), now),
            Err(Error::InsufficientAuthentication { mfa: true, max_age_secs: None })
        );
        assert_eq!(j.admit(&caller(&["admin"], mfa, Some(1)), now), Ok(()));
        // Every method the rule covers (it names none).
        let post = r.judge(&req("POST", None, Some("application/x-www-form-urlencoded")), "/api/admin/users");
        assert_eq!(post.admit(&caller(&["admin"], Amr::PWD, Some(1)), now).unwrap_err().problem().status, 401);
        // Not on a public rule.
        let public = Routes::parse(Some(r#"[{"path": "/x", "policy": "public", "mfa": true}]"#), None);
        assert!(public.unwrap_err().contains("mfa on a public rule"));
    }

    #[test]
    fn step_up_follows_the_methods_a_request_may_become() {
        let r = step_up_routes();
        let now = UnixTime(10_000);
        let old = caller(&[], Amr::PWD, Some(1));
        // A POST with a body may be a DELETE to the origin: its max_age applies.
        let post = req("POST", None, Some("application/x-www-form-urlencoded"));
        assert_eq!(
            r.judge(&post, "/api/files/a").admit(&old, now),
            Err(Error::InsufficientAuthentication { mfa: false, max_age_secs: Some(120) })
        );
        assert_eq!(r.judge(&req("GET", None, None), "/api/files/a").admit(&old, now), Ok(()));
        let named = req("GET", Some("_method=DELETE"), None);
        assert!(r.judge(&named, "/api/files/a").admit(&old, now).is_err());
        assert_eq!(r.judge(&named, "/api/files/a").admit(&caller(&[], Amr::PWD, Some(9_900)), now), Ok(()));
        // A dotted reading of a path reaches the rule that names it.
        let r = Routes::parse(Some(r#"[{"path": "/api/report", "policy": "mfa"}]"#), None).unwrap();
        let j = r.judge(&req("GET", None, None), "/api/report.json");
        assert_eq!(j.admit(&old, now), Err(Error::InsufficientAuthentication { mfa: true, max_age_secs: None }));
    }

    #[test]
    fn max_age_is_a_positive_number_of_seconds_on_a_rule_with_a_sign_in() {
        for (json, needle) in [
            (r#"[{"path": "/x", "policy": "public", "max_age": 60}]"#, "public"),
            (r#"[{"path": "/x", "policy": "authenticated", "max_age": 0}]"#, "max_age 0"),
            (r#"[{"path": "/x", "policy": "authenticated", "max_age": 400000000}]"#, "max_age"),
            (r#"[{"path": "/x", "policy": "authenticated", "max_age": -1}]"#, "ROUTES"),
            (r#"[{"path": "/x", "policy": "authenticated", "max_age": "60"}]"#, "ROUTES"),
            (r#"[{"path": "/x", "policy": "mfa:yes"}]"#, "unknown policy"),
        ] {
            let err = Routes::parse(Some(json), None).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        assert_eq!(Routes::parse(None, Some("mfa")).unwrap().policy_for("GET", "/x"), &Policy::Mfa);
        assert!(Policy::Mfa.allows(USER));
    }

    #[test]
    fn a_post_with_any_body_must_pass_the_policy_of_every_method_of_its_path() {
        let r = items_routes();
        let judge = |q: &Req| r.judge(q, "/api/items/7");
        // Every body may carry `_method`: forms (Rack, Symfony, Laravel,
        // ASP.NET Core), multipart/mixed and multipart/related (Rack), JSON
        // (Laravel: any type holding `/json` or `+json`), and whatever a
        // custom method-override getter reads.
        for ct in [
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("Application/X-WWW-Form-Urlencoded;charset=utf-8"),
            Some("multipart/mixed; boundary=x"),
            Some("multipart/related; boundary=x"),
            Some("application/json"),
            Some("application/vnd.api+json"),
            Some("text/plain; x=/json"),
            Some("application/octet-stream"),
            Some(""),
            None,
        ] {
            let post = req("POST", None, ct);
            assert!(judge(&post).authorize(USER).is_err(), "{ct:?}: a plain user passes; the origin acts on DELETE");
            assert!(judge(&post).authorize(&admin()).is_ok(), "{ct:?}");
        }
        // Only a body that is certainly empty cannot carry one.
        let none = Req { body: false, headers: vec![], ..req("POST", None, None) };
        assert!(judge(&none).authorize(USER).is_ok(), "no body");
        let empty = Req { headers: vec![("content-length", "0")], ..req("POST", None, None) };
        assert!(judge(&empty).authorize(USER).is_ok(), "Content-Length: 0");
        let chunked =
            Req { headers: vec![("content-length", "0"), ("transfer-encoding", "chunked")], ..req("POST", None, None) };
        assert!(judge(&chunked).authorize(USER).is_err(), "Transfer-Encoding overrides Content-Length: 0");
        // Other methods are not overridden by their bodies.
        assert!(judge(&req("PATCH", None, Some("application/json"))).authorize(USER).is_ok());
    }

    #[test]
    fn a_method_override_named_in_the_query_must_pass_every_method_policy() {
        let r = items_routes();
        let judge = |q: &Req| r.judge(q, "/api/items/7");
        // Every spelling PHP, Rack, Node or ASP.NET Core reads as `_method`.
        for q in [
            "_method=DELETE",
            "a=1&_method=delete",
            "a=1;_method=PUT",
            "_METHOD=DELETE",
            "%5Fmethod=DELETE",
            "_m%65thod=DELETE",
            ".method=DELETE",
            "%2Emethod=DELETE",
            "_method[]=DELETE",
            "_method[x]=DELETE",
            "_method[=DELETE&x]",
            "_method[x=DELETE", // PHP: `_method_x`; Rack: a hash under `_method`
            "[_method]=DELETE",
            "_method",
            // PHP drops leading spaces (`+` or `%20`), then reads ` ` and `.` as `_`.
            "+_method=DELETE",
            "%20_method=DELETE",
            "%20%20.method=DELETE",
            "+.method=DELETE",
            "++%20+.method=DELETE",
            // PHP's names are C strings: a decoded NUL ends them.
            "_method%00x=DELETE",
        ] {
            let named = Req { body: false, headers: vec![], ..req("POST", Some(q), None) };
            assert!(judge(&named).authorize(USER).is_err(), "{q}");
            let named_get = Req { body: false, headers: vec![], ..req("GET", Some(q), None) };
            assert!(judge(&named_get).authorize(USER).is_err(), "{q} on a GET");
        }
        // Names nobody reads as `_method`.
        for q in [
            "method=card",
            "x_method=1",
            "_methods=1",
            "a=_method",
            "",
            "+method=DELETE",   // PHP: `method`
            "%20method=DELETE", // PHP: `method`
            "_method.=DELETE",  // PHP: `_method_`
            "%2B_method=DELETE",
            "_meth%00od=DELETE",
        ] {
            let plain = Req { body: false, headers: vec![], ..req("POST", Some(q), None) };
            assert!(judge(&plain).authorize(USER).is_ok(), "{q}");
        }
    }

    #[test]
    fn only_posts_with_a_body_on_paths_whose_rules_differ_by_method_read_a_header() {
        let r = items_routes();
        for q in [req("GET", None, None), req("PUT", None, None), req("DELETE", Some("a=1"), None)] {
            let _ = r.judge(&q, "/api/items/7");
            assert_eq!(q.reads.get(), 0, "{}", q.method);
        }
        let elsewhere = req("POST", None, Some("application/x-www-form-urlencoded"));
        assert!(r.judge(&elsewhere, "/api/other").also().is_empty());
        assert_eq!(elsewhere.reads.get(), 0, "the rules of /api/other do not differ by method");
        let plain = dev_routes();
        let form = req("POST", Some("_method=DELETE"), Some("multipart/form-data"));
        assert!(plain.judge(&form, "/api/admin/x").also().is_empty());
        assert_eq!(form.reads.get(), 0, "no rule lists methods");
        let post = req("POST", None, Some("application/json"));
        let _ = r.judge(&post, "/api/items/7");
        assert_eq!(post.reads.get(), 1, "Content-Length, once");
        let none = Req { body: false, ..req("POST", None, None) };
        let _ = r.judge(&none, "/api/items/7");
        assert_eq!(none.reads.get(), 0, "no body, nothing to read");
    }

    #[test]
    fn a_post_where_get_is_stricter_must_pass_get_too() {
        // Rack and Express's method-override turn a POST into a GET as well.
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/reports", "methods": ["GET"], "policy": "role:admin"},
                    {"path": "/api/reports", "methods": ["POST"], "policy": "public"}]"#,
            ),
            None,
        )
        .unwrap();
        for ct in ["application/x-www-form-urlencoded", "application/json"] {
            let j = r.judge(&req("POST", None, Some(ct)), "/api/reports");
            assert!(!j.is_public(), "{ct}");
            assert!(j.authorize(USER).is_err() && j.authorize(&admin()).is_ok(), "{ct}");
        }
        let empty = Req { body: false, headers: vec![], ..req("POST", None, None) };
        assert!(r.judge(&empty, "/api/reports").is_public());
    }

    #[test]
    fn a_rule_saying_method_override_false_is_not_reached_by_an_override() {
        // The origin behind /api/items/* honours no override: a create (a
        // POST with a body) needs what a POST needs, not the DELETE's role.
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/items/*", "methods": ["DELETE"], "policy": "role:admin", "method_override": false},
                    {"path": "/api/orders/*", "methods": ["DELETE"], "policy": "role:admin"},
                    {"path": "/api/notes/*", "methods": ["PUT"], "policy": "role:editor"},
                    {"path": "/api/notes/*", "methods": ["DELETE"], "policy": "role:admin", "method_override": false}]"#,
            ),
            Some("authenticated"),
        )
        .unwrap();
        for ct in ["application/json", "application/x-www-form-urlencoded"] {
            let post = req("POST", None, Some(ct));
            assert!(r.judge(&post, "/api/items/7").authorize(USER).is_ok(), "{ct}");
            assert!(r.judge(&post, "/api/orders/7").authorize(USER).is_err(), "{ct}: the strict default stays");
            let notes = r.judge(&post, "/api/notes/7");
            assert!(notes.authorize(&admin()).is_err() && notes.authorize(&["editor".into()]).is_ok(), "{ct}");
        }
        let named = Req { body: false, headers: vec![], ..req("POST", Some("_method=DELETE"), None) };
        assert!(r.judge(&named, "/api/items/7").authorize(USER).is_ok());
        // The rule itself holds for the methods it lists.
        let delete = Req { body: false, headers: vec![], ..req("DELETE", None, None) };
        assert!(r.judge(&delete, "/api/items/7").authorize(USER).is_err());
        assert!(r.judge(&delete, "/api/items/7").authorize(&admin()).is_ok());
        // Validated like the other members.
        for bad in [
            r#"[{"path": "/x", "policy": "public", "method_override": "no"}]"#,
            r#"[{"path": "/x", "policy": "public", "method_override": 0}]"#,
            r#"[{"path": "/x", "policy": "public", "method_overrides": false}]"#,
        ] {
            assert!(Routes::parse(Some(bad), None).unwrap_err().starts_with("ROUTES"), "{bad}");
        }
        let strict = Routes::parse(Some(r#"[{"path": "/x", "policy": "public", "method_override": true}]"#), None);
        assert!(strict.unwrap().route_for("GET", "/x").method_override);
    }

    #[test]
    fn a_head_must_pass_the_get_policy_of_its_path() {
        // A HEAD-only rule ahead of a GET rule: the origin answers the HEAD
        // with its GET handler, so the GET rule applies too.
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/*", "methods": ["HEAD", "OPTIONS"], "policy": "public"},
                    {"path": "/api/secrets/*", "methods": ["GET"], "policy": "role:admin"}]"#,
            ),
            None,
        )
        .unwrap();
        let head = Req { body: false, headers: vec![], ..req("HEAD", None, None) };
        let j = r.judge(&head, "/api/secrets/x");
        assert!(!j.is_public());
        assert!(j.authorize(USER).is_err() && j.authorize(&admin()).is_ok());
        // Elsewhere the HEAD needs what the GET needs: a token (the default).
        let elsewhere = r.judge(&head, "/api/other");
        assert!(!elsewhere.is_public() && elsewhere.authorize(USER).is_ok());
    }

    fn secrets_judged(method: &'static str, path: &str) -> (bool, bool, bool) {
        let r = secrets_routes();
        let q = Req { body: false, headers: vec![], ..req(method, None, None) };
        let j = r.judge(&q, &normalise_path(path).unwrap());
        (j.is_public(), j.authorize(USER).is_ok(), j.authorize(&admin()).is_ok())
    }

    #[test]
    fn a_format_suffix_must_pass_the_rule_of_the_path_without_it() {
        // Rails `(.:format)`, DRF's format_suffix_patterns and Spring's suffix
        // match read /api/secrets.json as /api/secrets, under /api/secrets/*.
        for p in ["/api/secrets.json", "/api/SECRETS.xml", "/api/secrets.tar.gz", "/api/secrets.json/"] {
            assert_eq!(secrets_judged("GET", p), (false, false, true), "{p}");
        }
        // Dots elsewhere change nothing: a leading dot is a name, not a suffix.
        for p in ["/api/.secrets", "/api/v1.2/x", "/api/public.json"] {
            assert_eq!(secrets_judged("GET", p), (true, true, true), "{p}");
        }
    }

    #[test]
    fn a_php_script_segment_must_pass_the_rule_of_the_path_without_it() {
        // Laravel, Symfony, Slim behind nginx's try_files or Apache: the
        // script runs with PATH_INFO /secrets/x and routes it from its own
        // directory, so /api/index.php/secrets/x is the app's URL /api/secrets/x.
        for p in [
            "/index.php/api/secrets/x",
            "/INDEX.PHP/api/secrets/x",
            "/api/index.phtml/secrets",
            "/api/x.phar/secrets/y",
            "/index.php/api/secrets.json",
        ] {
            assert_eq!(secrets_judged("GET", p), (false, false, true), "{p}");
        }
        let public_default =
            Routes::parse(Some(r#"[{"path": "/api/secrets/*", "policy": "role:admin"}]"#), Some("public")).unwrap();
        let q = Req { body: false, headers: vec![], ..req("GET", None, None) };
        let j = public_default.judge(&q, "/index.php/api/secrets/x");
        assert!(!j.is_public() && j.authorize(USER).is_err());
        // A script as the last segment has no PATH_INFO; other names are not
        // scripts; an app below /app routes nothing under /api.
        for p in [
            "/api/index.php",
            "/api/php/secrets",
            "/api/x.phps/api/secrets/y",
            "/api/.php/secrets/x",
            "/api/x.phar/api/secrets/y",
        ] {
            assert_eq!(secrets_judged("GET", p), (true, true, true), "{p}");
        }
    }

    #[test]
    fn a_php_app_below_the_root_is_judged_by_the_rules_of_its_own_urls() {
        // Symfony and Laravel at /app/index.php compute their base from the
        // script's directory: /app/index.php/admin/x is their /admin/x, the URL /app/admin/x.
        let n = normalise_path("/app/index.php/admin/x").unwrap();
        let q = Req { body: false, headers: vec![], ..req("GET", None, None) };
        let r = Routes::parse(
            Some(r#"[{"path": "/app/admin/*", "policy": "role:admin"}, {"path": "/app/*", "policy": "public"}]"#),
            Some("authenticated"),
        )
        .unwrap();
        let j = r.judge(&q, &n);
        assert!(!j.is_public() && j.authorize(USER).is_err() && j.authorize(&admin()).is_ok());
        assert!(r.judge(&q, "/app/index.php/x").is_public(), "the rest of the app stays public");
        let public_default =
            Routes::parse(Some(r#"[{"path": "/app/admin/*", "policy": "role:admin"}]"#), Some("public")).unwrap();
        let j = public_default.judge(&q, &n);
        assert!(!j.is_public() && j.authorize(USER).is_err(), "with a public default: a token and the role");
        // The last script too: Apache runs the first one that is a file, so
        // /tools.php may be a directory holding the script.
        let r = Routes::parse(
            Some(r#"[{"path": "/tools.php/admin/*", "policy": "role:admin"}, {"path": "/*", "policy": "public"}]"#),
            None,
        )
        .unwrap();
        let j = r.judge(&q, "/tools.php/index.php/admin/x");
        assert!(!j.is_public() && j.authorize(USER).is_err() && j.authorize(&admin()).is_ok());
    }

    #[test]
    fn an_exact_rule_for_a_dotted_name_is_not_overruled_by_the_default() {
        // Another reading counts only where a rule names it: /robots.txt
        // read as /robots reaches no rule, only the default.
        let r = Routes::parse(
            Some(
                r#"[{"path": "/robots.txt", "policy": "public"}, {"path": "/openapi.json", "policy": "public"},
                    {"path": "/favicon.ico", "policy": "public"}, {"path": "/blog/*", "policy": "public"},
                    {"path": "/api/secrets/*", "policy": "role:admin"}, {"path": "/api/*", "policy": "public"}]"#,
            ),
            Some("authenticated"),
        )
        .unwrap();
        let q = Req { body: false, headers: vec![], ..req("GET", None, None) };
        for p in ["/robots.txt", "/openapi.json", "/favicon.ico", "/blog/index.php/2024/post", "/blog/feed.xml"] {
            let j = r.judge(&q, &normalise_path(p).unwrap());
            assert!(j.is_public(), "{p} needs {:?}", j.also());
        }
        // Where a reading reaches a rule, that rule still counts.
        for p in ["/api/secrets.json", "/api/index.php/secrets/x", "/index.php/api/secrets/x"] {
            let j = r.judge(&q, &normalise_path(p).unwrap());
            assert!(!j.is_public() && j.authorize(USER).is_err(), "{p}");
        }
        // And with a public default, the rules still catch every attack.
        let open =
            Routes::parse(Some(r#"[{"path": "/api/secrets/*", "policy": "role:admin"}]"#), Some("public")).unwrap();
        for p in ["/api/secrets.json", "/api/secrets.tar.gz", "/api/index.php/secrets/x", "/index.php/api/secrets/x"] {
            let j = open.judge(&q, &normalise_path(p).unwrap());
            assert!(!j.is_public() && j.authorize(USER).is_err(), "{p}");
        }
    }

    #[test]
    fn a_path_has_at_most_nine_readings_however_many_scripts_and_dots_it_holds() {
        let readings = |p: &str| {
            let mut out = Vec::new();
            for_each_reading(p, |r, which| {
                assert_eq!(which == Reading::AsSent, out.is_empty(), "{r}");
                out.push(r.to_string());
            });
            out
        };
        assert_eq!(readings("/api/x"), ["/api/x"]);
        assert_eq!(readings("/api/x.json"), ["/api/x.json", "/api/x"]);
        assert_eq!(readings("/api/x.tar.gz"), ["/api/x.tar.gz", "/api/x", "/api/x.tar"]);
        assert_eq!(readings("/api/.env"), ["/api/.env"]);
        assert_eq!(readings("/api/.env.json"), ["/api/.env.json", "/api/.env"]);
        // A leading character aside, whatever its width.
        assert_eq!(readings("/api/é.tar.gz"), ["/api/é.tar.gz", "/api/é", "/api/é.tar"]);
        assert_eq!(readings("/api/日.json"), ["/api/日.json", "/api/日"]);
        assert_eq!(readings("/index.php/x"), ["/index.php/x", "/x"]);
        assert_eq!(readings("/app/index.php/admin/x"), ["/app/index.php/admin/x", "/app/admin/x"]);
        assert_eq!(
            readings("/a.php/b.php/c/x.json"),
            [
                "/a.php/b.php/c/x.json",
                "/a.php/b.php/c/x",
                "/b.php/c/x.json",
                "/b.php/c/x",
                "/a.php/c/x.json",
                "/a.php/c/x"
            ]
        );
        let hostile = format!("{}/{}", "/s.php".repeat(600), "x.".repeat(2_000) + "y");
        assert!(normalise_path(&hostile).is_ok());
        assert_eq!(readings(&hostile).len(), 9);
    }

    #[test]
    fn authorization_is_forwarded_only_if_every_reading_of_the_path_opts_in() {
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/relay/*", "policy": "public", "forward_authorization": true},
                    {"path": "/api/*", "policy": "public"}]"#,
            ),
            None,
        )
        .unwrap();
        let q = Req { body: false, headers: vec![], ..req("GET", None, None) };
        assert!(r.judge(&q, "/api/relay/x").forwards_authorization());
        assert!(r.judge(&q, "/api/relay/x.json").forwards_authorization());
        assert!(r.judge(&q, "/api/relay/x.php/other").forwards_authorization(), "/api/relay/other is relayed");
        assert!(!r.judge(&q, "/api/relay.json").forwards_authorization(), "/api/relay.json is /api/relay.json too");
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/own/*", "policy": "public"},
                    {"path": "/api/*", "policy": "public", "forward_authorization": true},
                    {"path": "/well.json", "policy": "public", "forward_authorization": true}]"#,
            ),
            None,
        )
        .unwrap();
        assert!(r.judge(&q, "/api/x.json").forwards_authorization());
        assert!(!r.judge(&q, "/api/index.php/own/x").forwards_authorization(), "the app's /api/own/x");
        assert!(!r.judge(&q, "/api/own.json").forwards_authorization(), "/api/own to Rails");
        assert!(r.judge(&q, "/well.json").forwards_authorization(), "/well reaches no rule, only the default");
    }

    #[test]
    fn aspnet_cookieless_segments_are_refused() {
        // ASP.NET drops `/(S(…))/` before routing: /api/(S(x))/secrets/x is /api/secrets/x.
        for raw in [
            "/api/(S(x))/secrets/x",
            "/(S(x))/api/secrets/x",
            "/api/(A(x))/secrets/x",
            "/api/(F(t))/secrets/x",
            "/api/(A(a)S(b)F(c))/secrets/x",
            "/api/%28S%28x%29%29/secrets/x",
            "/api/secrets/(s(x))",
        ] {
            assert!(normalise_path(raw).is_err(), "{raw} is accepted as {:?}", normalise_path(raw));
        }
        for ok in ["/api/(x)/y", "/api/(S)/y", "/api/(S(x)/y", "/api/(1(x))/y", "/api/a(S(x))/y", "/api/(S(x))b/y"] {
            assert!(normalise_path(ok).is_ok(), "{ok}");
        }
    }

    /// Confusables: for each ASCII letter and digit, the non-ASCII characters
    /// that some reading (case mapping, folding, NFKC, NFKC_Casefold) turns into it.
    fn confusables() -> &'static std::collections::HashMap<char, Vec<char>> {
        static TABLE: std::sync::OnceLock<std::collections::HashMap<char, Vec<char>>> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc();
            let uts46 = Uts46MapperBorrowed::new();
            let mut table: std::collections::HashMap<char, Vec<char>> = std::collections::HashMap::new();
            for c in (0x80u32..0x2_0000).filter_map(char::from_u32) {
                let mut buf = [0u8; 4];
                let readings: [String; 5] = [
                    c.to_uppercase().collect(),
                    c.to_lowercase().collect(),
                    c.to_uppercase().flat_map(char::to_lowercase).collect(),
                    nfkc.normalize(c.encode_utf8(&mut buf)).into_owned(),
                    uts46.map_normalize(std::iter::once(c)).collect(),
                ];
                for r in readings {
                    let mut it = r.chars();
                    if let (Some(a), None) = (it.next(), it.next()) {
                        if a.is_ascii_alphanumeric() {
                            table.entry(a.to_ascii_lowercase()).or_default().push(c);
                        }
                    }
                }
            }
            table
        })
    }

    type OriginReading = Box<dyn Fn(&str) -> String>;

    /// How origins read a decoded path, each written here on its own (not
    /// with the code under test): case-insensitive comparison and case
    /// folding, NFKC and NFKC_Casefold, trimming, invisible characters
    /// dropped, a decoded path parsed again, path parameters, ASP.NET's
    /// cookieless state, a PHP front controller's path info and format
    /// suffixes.
    fn readings() -> Vec<(&'static str, OriginReading)> {
        let per_segment = |f: fn(&str) -> String| move |p: &str| p.split('/').map(f).collect::<Vec<_>>().join("/");
        vec![
            // Java's equalsIgnoreCase: simple upper, then simple lower, per char.
            (
                "java ignore-case",
                Box::new(|p: &str| {
                    p.chars()
                        .map(|c| {
                            let u = c.to_uppercase().next().unwrap_or(c);
                            u.to_lowercase().next().unwrap_or(u)
                        })
                        .collect()
                }),
            ),
            (
                "case folding",
                Box::new(|p: &str| p.chars().flat_map(char::to_uppercase).flat_map(char::to_lowercase).collect()),
            ),
            ("lowercase", Box::new(|p: &str| p.to_lowercase())),
            (
                "nfkc",
                Box::new(|p: &str| icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(p).into_owned()),
            ),
            ("nfkc_casefold", Box::new(|p: &str| Uts46MapperBorrowed::new().map_normalize(p.chars()).collect())),
            ("windows trims dots and spaces", Box::new(per_segment(|s| s.trim_end_matches(['.', ' ']).to_string()))),
            ("spring/.NET trim whitespace", Box::new(per_segment(|s| s.trim().to_string()))),
            (
                "invisible characters dropped",
                Box::new(|p: &str| {
                    p.chars()
                        .filter(|c| {
                            c.is_ascii()
                                || Uts46MapperBorrowed::new().map_normalize(std::iter::once(*c)).next().is_some()
                        })
                        .filter(|c| !matches!(c, '\u{200C}' | '\u{200D}'))
                        .collect()
                }),
            ),
            ("parsed again", Box::new(|p: &str| p.split(['?', '#']).next().unwrap_or("").to_string())),
            ("path parameters stripped", Box::new(per_segment(|s| s.split(';').next().unwrap_or("").to_string()))),
            (
                // ASP.NET's CookielessHelperClass: `/(X(…)…)/` removed.
                "asp.net cookieless state removed",
                Box::new(|p: &str| {
                    let state = regex::Regex::new(r"^\(([A-Z]\([^)/]*\))+\)$").unwrap();
                    p.split('/').filter(|s| !state.is_match(s)).collect::<Vec<_>>().join("/")
                }),
            ),
            (
                // nginx's `fastcgi_split_path_info ^(.+?\.php)(/.*)$` (the first
                // script); Symfony's and Laravel's base is the script's
                // directory, so the app's URL is that directory + PATH_INFO.
                "php front controller path info (first script)",
                Box::new(|p: &str| {
                    let lazy = regex::Regex::new(r"(?i)^(.+?\.ph(?:p|tml|ar))(/.*)$").unwrap();
                    lazy.captures(p).map_or(p.to_string(), |c| {
                        let script = &c[1];
                        format!("{}{}", &script[..script.rfind('/').unwrap()], &c[2])
                    })
                }),
            ),
            (
                // Apache runs the first that is a file: maybe the last.
                "php front controller path info (last script)",
                Box::new(|p: &str| {
                    let greedy = regex::Regex::new(r"(?i)^(.*)/[^/]+\.ph(?:p|tml|ar)(/.*)$").unwrap();
                    greedy.captures(p).map_or(p.to_string(), |c| format!("{}{}", &c[1], &c[2]))
                }),
            ),
            (
                // Rails `(.:format)`, DRF `\.(?P<format>[a-z0-9]+)/?$`: the last dot.
                "format suffix",
                Box::new(|p: &str| {
                    let (dir, last) = p.rsplit_once('/').unwrap_or(("", p));
                    match last.rsplit_once('.') {
                        Some((base, _)) if !base.is_empty() => format!("{dir}/{base}"),
                        _ => p.to_string(),
                    }
                }),
            ),
            (
                // Spring's suffix pattern match, `/x` matching `/x.*`: the first dot.
                "suffix pattern match",
                Box::new(|p: &str| {
                    let (dir, last) = p.rsplit_once('/').unwrap_or(("", p));
                    match last.split_once('.') {
                        Some((base, _)) if !base.is_empty() => format!("{dir}/{base}"),
                        _ => p.to_string(),
                    }
                }),
            ),
        ]
    }

    /// One spelling of `word`: each character as itself, in upper case,
    /// percent-encoded, or as a confusable; sometimes with a stray character,
    /// a trailing dot or space, or an encoded delimiter.
    fn spelling(word: String) -> impl Strategy<Value = String> {
        let n = word.len();
        (
            prop::collection::vec((0u8..6, any::<prop::sample::Index>()), n),
            prop::option::of(prop_oneof![
                any::<char>().prop_map(|c| c.to_string()),
                Just(".".to_string()),
                Just("%20".to_string()),
                Just("%3F".to_string()),
                Just("%23".to_string()),
                Just("%E2%80%8B".to_string()),
                Just(";x".to_string()),
            ]),
            any::<prop::sample::Index>(),
        )
            .prop_map(move |(choices, stray, at)| {
                let mut out = String::new();
                for (c, (how, pick)) in word.chars().zip(choices) {
                    let alts = confusables().get(&c).map(Vec::as_slice).unwrap_or(&[]);
                    let mut buf = [0u8; 4];
                    match how {
                        0 | 1 => out.push(c),
                        2 => out.push(c.to_ascii_uppercase()),
                        3 => out.push_str(&format!("%{:02X}", c as u32)),
                        4 if !alts.is_empty() => out.push(alts[pick.index(alts.len())]),
                        _ if !alts.is_empty() => {
                            for b in alts[pick.index(alts.len())].encode_utf8(&mut buf).bytes() {
                                out.push_str(&format!("%{b:02X}"));
                            }
                        }
                        _ => out.push(c),
                    }
                }
                if let Some(s) = stray {
                    let mut at = at.index(out.len() + 1);
                    while !out.is_char_boundary(at) {
                        at -= 1;
                    }
                    out.insert_str(at, &s);
                }
                out
            })
    }

    /// `(a, b, path)`: a path through `/a/b` spelt in many ways, sometimes
    /// behind a PHP script or ASP.NET's cookieless state, sometimes with a
    /// PHP app installed at `/a` (a script between `a` and `b`), sometimes
    /// with a format suffix.
    fn spelt_path() -> impl Strategy<Value = (String, String, String)> {
        ("[a-z0-9]{1,6}", "[a-z0-9]{1,6}").prop_flat_map(|(a, b)| {
            let before = prop::sample::select(vec!["", "", "", "/index.php", "/x/App.PHP", "/(S(x))", "/(A(a)F(b))"]);
            let between = prop::sample::select(vec!["", "", "/index.php", "/Front.phtml", "/d.php/i.php"]);
            let tail = prop_oneof![
                "/[a-zA-Z0-9]{0,4}",
                "\\.[a-z]{1,4}",
                "/[a-z]{1,3}\\.[a-z]{1,4}",
                "\\.[a-z]{1,3}\\.[a-z]{1,3}",
            ];
            (Just(a.clone()), Just(b.clone()), (before, spelling(a), between, spelling(b), tail)).prop_map(
                |(a, b, (before, sa, between, sb, tail))| (a, b, format!("{before}/{sa}{between}/{sb}{tail}")),
            )
        })
    }

    /// A body-less request with this method and query.
    fn bare(method: &'static str, query: Option<&'static str>) -> Req {
        Req { method, query, headers: vec![], body: false, reads: std::cell::Cell::new(0) }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn an_accepted_path_is_let_through_only_where_every_origin_reading_is(
            rules in spelt_path(),
            default in prop::sample::select(vec!["authenticated", "public", "role:root"]),
            public_parent in any::<bool>(),
        ) {
            // The rules name no dotted segment and no script, so every
            // reading counts, the default included (see the module docs).
            let (a, b, raw) = rules;
            let parent = if public_parent { format!(r#", {{"path": "/{a}/*", "policy": "public"}}"#) } else { String::new() };
            let routes =
                Routes::parse(Some(&format!(r#"[{{"path": "/{a}/{b}/*", "policy": "role:admin"}}{parent}]"#)), Some(default))
                    .unwrap();
            if let Ok(n) = normalise_path(&raw) {
                let judged = routes.judge(&bare("GET", None), &n);
                for (name, read) in readings() {
                    let theirs = read(&n);
                    let theirs = normalise_path(&theirs).unwrap_or(theirs);
                    let policy = routes.policy_for("GET", &theirs);
                    prop_assert!(
                        !judged.is_public() || *policy == Policy::Public,
                        "{} accepted as {:?}, public; read by {} as {:?}: {:?}", raw, n, name, theirs, policy
                    );
                    for roles in [USER, &admin()] {
                        prop_assert!(
                            judged.authorize(roles).is_err() || policy.allows(roles),
                            "{} accepted as {:?} for {:?}; read by {} as {:?}: {:?}", raw, n, roles, name, theirs, policy
                        );
                    }
                }
            }
        }

        #[test]
        fn a_request_is_let_through_only_if_every_method_it_may_become_is(
            rules in prop::collection::vec((0usize..3, prop::option::of(prop::sample::subsequence(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "LINK"], 1..4)), 0usize..4, prop::option::of(any::<bool>())), 0..5),
            path in 0usize..3,
            roles in prop::sample::subsequence(vec![Role::from("admin"), Role::from("editor")], 0..3),
            method in prop::sample::select(vec!["POST", "HEAD", "GET", "PUT"]),
            body in prop::sample::select(vec![None, Some("0"), Some("12")]),
            ct in prop::option::of(prop::sample::select(vec!["application/json", "application/x-www-form-urlencoded", "multipart/mixed", "text/plain"])),
            query in prop::option::of(prop::sample::select(vec!["_method=PATCH", "a=1", "%5Fmethod=LINK", "+.method=LINK", "+method=PUT"])),
        ) {
            const PATHS: [&str; 3] = ["/a/*", "/a/b", "/*"];
            const POLICIES: [&str; 4] = ["public", "authenticated", "role:admin", "any_role:[editor]"];
            let json: Vec<String> = rules.iter().map(|(p, ms, pol, honours)| {
                let ms = ms.as_ref().map_or(String::new(), |ms| format!(r#", "methods": {ms:?}"#));
                let honours = honours.map_or(String::new(), |h| format!(r#", "method_override": {h}"#));
                format!(r#"{{"path": "{}"{ms}, "policy": "{}"{honours}}}"#, PATHS[*p], POLICIES[*pol])
            }).collect();
            let routes = Routes::parse(Some(&format!("[{}]", json.join(","))), Some("role:root")).unwrap();
            let target = ["/a/b", "/a/c", "/z"][path];
            let mut headers: Vec<(&'static str, &'static str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
            headers.extend(body.map(|len| ("content-length", len)));
            let r = Req { method, query, headers, body: body.is_some(), reads: std::cell::Cell::new(0) };
            let j = routes.judge(&r, target);
            // What the origin may act on (written apart from the code under
            // test): the method sent; GET's handler for a HEAD; and for a
            // `_method` query parameter (the spellings above that PHP or Rack
            // read as one) or a POST whose body is not empty, any method whose
            // rule does not say the origin honours no override.
            let named = query.is_some_and(|q| q.contains("_method") || q.contains("%5Fmethod") || q.contains(".method"));
            let all = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "LINK", "PURGE"];
            let mut possible = vec![method];
            if method == "HEAD" {
                possible.push("GET");
            }
            if named || (method == "POST" && body == Some("12")) {
                possible.extend(all.iter().filter(|m| routes.route_for(m, target).method_override));
            }
            if j.is_public() {
                for m in &possible {
                    prop_assert_eq!(routes.policy_for(m, target), &Policy::Public, "{}", m);
                }
            }
            if j.authorize(&roles).is_ok() {
                for m in &possible {
                    prop_assert!(routes.policy_for(m, target).allows(&roles), "{} {:?} {:?}", m, roles, json);
                }
            }
            // And no stricter: what every possible method allows passes.
            let allowed = possible.iter().all(|m| routes.policy_for(m, target).allows(&roles));
            prop_assert_eq!(j.authorize(&roles).is_ok(), allowed, "{:?} {:?} {:?}", possible, roles, json);
            let public = possible.iter().all(|m| *routes.policy_for(m, target) == Policy::Public);
            prop_assert_eq!(j.is_public(), public, "{:?} {:?}", possible, json);
        }
    }

    /// PHP's `$_GET` key for a raw query name, transcribed from
    /// `php_url_decode` and `php_register_variable_ex` (PHP 8): `None` when
    /// the parameter is dropped.
    fn php_key(raw: &str) -> Option<Vec<u8>> {
        let b = raw.as_bytes();
        let mut decoded = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => decoded.push(b' '),
                b'%' if i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() => {
                    decoded.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                    i += 2;
                }
                c => decoded.push(c),
            }
            i += 1;
        }
        // A C string from here on.
        let cstr = decoded.split(|&c| c == 0).next().unwrap_or(&[]);
        let start = cstr.iter().position(|&c| c != b' ').unwrap_or(cstr.len());
        let mut var = cstr[start..].to_vec();
        let mut bracket = None;
        for (j, c) in var.iter_mut().enumerate() {
            if *c == b' ' || *c == b'.' {
                *c = b'_';
            } else if *c == b'[' {
                bracket = Some(j);
                break;
            }
        }
        let len = bracket.unwrap_or(var.len());
        if len == 0 {
            return None;
        }
        let Some(j) = bracket else { return Some(var) };
        let mut ip = j + 1;
        if var.get(ip).is_some_and(|c| b" \t\n\x0b\x0c\r".contains(c)) {
            ip += 1;
        }
        if var.get(ip) == Some(&b']') || var.get(ip..).is_some_and(|rest| rest.contains(&b']')) {
            return Some(var[..j].to_vec());
        }
        var[j] = b'_';
        for c in &mut var[j + 1..] {
            if matches!(*c, b' ' | b'.' | b'[') {
                *c = b'_';
            }
        }
        Some(var)
    }

    /// Rack's, `qs`'s, Node's and ASP.NET Core's key for a raw query name,
    /// from their parsers: decoded; Rack 2 drops leading brackets and ends
    /// the key at the next bracket; the others take the name up to a `[`.
    fn plain_keys(raw: &str) -> Vec<Vec<u8>> {
        let decoded: Vec<u8> = percent_encoding::percent_decode(raw.replace('+', " ").as_bytes()).collect();
        let rack2: Vec<u8> = decoded
            .iter()
            .skip_while(|c| matches!(c, b'[' | b']'))
            .take_while(|c| !matches!(c, b'[' | b']'))
            .copied()
            .collect();
        let nested = decoded.iter().take_while(|c| **c != b'[').copied().collect();
        vec![decoded, rack2, nested]
    }

    /// Raw query names made of the pieces that PHP and the others read
    /// specially, around `method`.
    fn query_name() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "_", "%5F", "%5f", ".", "%2E", " ", "+", "%20", "[", "%5B", "]", "%5D", "%00", "%", "%2", "%09", "x", "M",
            "method", "meth", "od", "METHOD", "m%65thod",
        ]);
        prop::collection::vec(piece, 0..7).prop_map(|ps| ps.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4_000))]

        #[test]
        fn a_query_name_is_an_override_exactly_when_php_or_another_parser_reads_it_as_method(name in query_name()) {
            let php = php_key(&name).is_some_and(|k| k.eq_ignore_ascii_case(b"_method"));
            let plain = plain_keys(&name).iter().any(|k| k.eq_ignore_ascii_case(b"_method"));
            prop_assert_eq!(names_method_override(&format!("{name}=DELETE")), php || plain, "{:?}", name);
            prop_assert_eq!(names_method_override(&format!("a=1&{name}=DELETE;b=2")), php || plain, "{:?}", name);
        }

        #[test]
        fn every_spelling_php_reads_as_method_is_an_override(
            spaces in prop::collection::vec(prop::sample::select(vec![" ", "+", "%20"]), 0..4),
            first in prop::sample::select(vec!["_", "%5F", ".", "%2e"]),
            letters in prop::collection::vec((any::<bool>(), any::<bool>()), 6),
            suffix in prop::sample::select(vec!["", "[]", "[x]", "[ ]", "[a][b]", "[x]y", "%00", "%00junk[", "%5B%5D"]),
        ) {
            let mut name = spaces.concat() + first;
            for (c, (upper, encoded)) in "method".chars().zip(letters) {
                let c = if upper { c.to_ascii_uppercase() } else { c };
                name += &if encoded { format!("%{:02X}", c as u32) } else { c.to_string() };
            }
            name += suffix;
            prop_assert!(php_key(&name).is_some_and(|k| k.eq_ignore_ascii_case(b"_method")), "{:?}", name);
            prop_assert!(names_method_override(&format!("{name}=DELETE")), "{:?}", name);
        }
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

    #[test]
    fn fresh_rules_ask_for_the_session_on_every_reading_and_method_they_judge() {
        let r = Routes::parse(
            Some(
                r#"[{"path": "/api/pay/*", "policy": "authenticated", "fresh": true},
                    {"path": "/api/admin/*", "methods": ["GET"], "policy": "role:admin", "fresh": true},
                    {"path": "/api/admin/*", "methods": ["DELETE"], "policy": "role:admin"},
                    {"path": "/api/report.json", "policy": "authenticated", "fresh": true},
                    {"path": "/api/public/*", "policy": "public"}]"#,
            ),
            None,
        )
        .unwrap();
        let get = Req { method: "GET", query: None, headers: vec![], body: false, reads: Default::default() };
        assert!(r.judge(&get, "/api/pay/now").needs_fresh_session());
        assert!(!r.judge(&get, "/api/other").needs_fresh_session(), "the default is never fresh");
        assert!(r.judge(&get, "/api/admin/users").needs_fresh_session());
        let head = Req { method: "HEAD", ..get };
        assert!(r.judge(&head, "/api/admin/users").needs_fresh_session(), "a HEAD is held to its GET rule");
        let delete = Req { method: "DELETE", query: None, headers: vec![], body: false, reads: Default::default() };
        assert!(!r.judge(&delete, "/api/admin/users").needs_fresh_session());
        // A DELETE the origin may read as a GET (`?_method=GET`) gets the GET rule's freshness too.
        let overridden = Req { query: Some("_method=GET"), ..delete };
        assert!(r.judge(&overridden, "/api/admin/users").needs_fresh_session());
        // Another reading of the path: `/api/report.json.bak` cut at its last dot is the fresh rule's.
        let get = Req { method: "GET", query: None, headers: vec![], body: false, reads: Default::default() };
        assert!(r.judge(&get, "/api/report.json.bak").needs_fresh_session());
        for bad in [
            r#"[{"path": "/x", "policy": "public", "fresh": true}]"#,
            r#"[{"path": "/x", "policy": "authenticated", "fresh": "yes"}]"#,
        ] {
            assert!(Routes::parse(Some(bad), None).unwrap_err().starts_with("ROUTES"), "{bad}");
        }
    }
}
