//! The gateway's decision, natively: core's `Gateway::decide` over a fake
//! request view, with keys installed as the edge installs them after a load,
//! the revocation log read from the in-memory store as the edge reads D1's,
//! and signatures made and checked in pure Rust (a fake of the runtime's
//! native crypto that counts its verifications).

use std::cell::Cell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis::core::amr::Amr;
use portcullis::core::config::Config;
use portcullis::core::error::Error;
use portcullis::core::gateway::credential::OWN_COOKIES;
use portcullis::core::gateway::headers::{HOP_BY_HOP, NEVER_CONNECTION_NAMED};
use portcullis::core::gateway::key_cache::{Cached, KeyCacheState, SignatureOps};
use portcullis::core::gateway::revocations::{read, unreadable, BeforeUse};
use portcullis::core::gateway::target::RequestUrl;
use portcullis::core::gateway::{Decision, FreshSession, Gateway, RequestView};
use portcullis::core::revocation::{retention_secs, Revocation, Revoked};
use portcullis::core::session::Session;
use portcullis::core::signing_keys::{self, KeyStatus, SigningAlg, SigningKey, StoredKey};
use portcullis::core::time::UnixTime;
use portcullis::core::token::{self, ExtraClaims, NewAccessToken, LEEWAY_SECS};
use portcullis::core::users::Role;
use portcullis::core::users::User;

use crate::support::{block_on, config, MemStore, TestRandom};

const ISSUER: &str = "https://gw.example";
const ORIGIN_URL: &str = "https://origin.example";
const ROUTES: &str = r#"[
    {"path": "/api/public/*", "policy": "public"},
    {"path": "/api/admin/*", "policy": "role:admin"},
    {"path": "/api/editors/*", "policy": "any_role:[editor, admin]"},
    {"path": "/api/passthrough/*", "policy": "authenticated", "forward_authorization": true}
]"#;

/// The runtime's native signatures, in pure Rust; counts verifications
/// (an own-signature recognition or a cached token makes none).
#[derive(Default)]
struct FakeOps {
    verifications: Cell<u32>,
    signatures: Cell<u32>,
}

impl SignatureOps for FakeOps {
    type PublicKey = StoredKey;
    type PrivateKey = SigningKey;

    fn import_public(&self, key: &StoredKey) -> Result<StoredKey, Error> {
        Ok(key.clone())
    }
    fn import_private(&self, key: &SigningKey) -> Result<SigningKey, Error> {
        Ok(key.clone())
    }
    fn verify(&self, alg: SigningAlg, key: &StoredKey, data: &[u8], signature: &[u8]) -> bool {
        self.verifications.set(self.verifications.get() + 1);
        key.verify(alg, data, signature).unwrap()
    }
    fn sign(&self, _alg: SigningAlg, key: &SigningKey, data: &[u8]) -> Result<Vec<u8>, Error> {
        self.signatures.set(self.signatures.get() + 1);
        Ok(key.sign(data))
    }
}

/// A request as the edge's view reads it.
struct Req {
    method: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn get() -> Self {
        Self { method: "GET", headers: Vec::new() }
    }
    fn method(method: &'static str) -> Self {
        Self { method, headers: Vec::new() }
    }
    fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

impl RequestView for Req {
    fn method(&self) -> &str {
        self.method
    }
    fn query(&self) -> Option<&str> {
        None
    }
    fn has_body(&self) -> bool {
        false
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }
}

type Identity = Vec<(&'static str, String)>;

/// The gateway of one isolate, its configuration, its keys as stored, the
/// store its revocation log and sessions are read from (D1 at the edge), and
/// the fake crypto.
struct Isolate {
    gw: Gateway<FakeOps, Identity>,
    cfg: Config,
    ops: FakeOps,
    stored: Vec<StoredKey>,
    signing: SigningKey,
    rng: TestRandom,
    store: MemStore,
}

impl Isolate {
    fn new(extra: &[(&str, &str)]) -> Self {
        Self::with_alg(extra, SigningAlg::EdDsa)
    }

    fn with_alg(extra: &[(&str, &str)], alg: SigningAlg) -> Self {
        let mut vars =
            vec![("ISSUER", ISSUER), ("ORIGIN_URL", ORIGIN_URL), ("ROUTES", ROUTES), ("KEY_CACHE_TTL", "300")];
        vars.extend_from_slice(extra);
        let cfg = config(&vars);
        let mut rng = TestRandom(7);
        let (stored, signing) = signing_keys::generate(alg, &mut rng, &cfg.kek, UnixTime(0)).unwrap();
        let mut i = Self {
            gw: Gateway::new(100),
            cfg,
            ops: FakeOps::default(),
            stored: vec![stored],
            signing,
            rng,
            store: MemStore::default(),
        };
        i.load(0);
        assert_eq!(i.ensure_read(0), Ok(()));
        i
    }

    /// Installs the stored keys as a load at `now` would.
    fn load(&mut self, now: i64) -> bool {
        let began = self.gw.keys.begin_reload();
        self.gw.keys.install(began, UnixTime(now), self.stored.clone(), self.signing.clone(), &self.cfg)
    }

    /// A new active key; the old one retired, published until `until`.
    fn rotate(&mut self, now: i64, until: i64) {
        let (new, signing) =
            signing_keys::generate(SigningAlg::EdDsa, &mut self.rng, &self.cfg.kek, UnixTime(now)).unwrap();
        for k in &mut self.stored {
            if k.status == KeyStatus::Active {
                k.status = KeyStatus::Retired;
                k.retired_at = Some(UnixTime(now));
                k.publish_until = Some(UnixTime(until));
            }
        }
        self.stored.push(new);
        self.signing = signing;
    }

    /// An access token signed by the active key, issued at `iat`.
    fn token(&self, sub: &str, roles: &[&str], iat: i64) -> String {
        token_by(&self.signing, sub, roles, iat, self.cfg.access_ttl_secs)
    }

    /// The gateway's own judgement at `now` (seconds), nothing loaded.
    fn decide_raw(&mut self, req: &Req, url: &str, now: i64) -> Decision<Identity> {
        self.decide_raw_at(req, url, now * 1000, true)
    }

    /// As [`Isolate::decide_raw`], at `now_ms`, with or without a role
    /// refusal's recheck.
    fn decide_raw_at(&mut self, req: &Req, url: &str, now_ms: i64, recheck_roles: bool) -> Decision<Identity> {
        let url = RequestUrl::new(url.to_string()).unwrap();
        let path = portcullis::core::gateway::policy::normalise_path(url.path()).unwrap();
        self.gw.decide(req, &url, &path, &self.cfg, &self.ops, now_ms, recheck_roles)
    }

    /// Reads the revocation log when the decision asks, as the edge's
    /// `ensure_read` does: a read at `now`, from the store (which may fail);
    /// 503 when the set may not be used and cannot be read, or is still
    /// unusable after the read.
    fn ensure_read(&mut self, now: i64) -> Result<(), Error> {
        self.ensure_read_at(now * 1000)
    }

    /// As [`Isolate::ensure_read`], at `now_ms`.
    fn ensure_read_at(&mut self, now_ms: i64) -> Result<(), Error> {
        match self.gw.revocations.before_use(now_ms, self.cfg.revocation_lag_secs) {
            BeforeUse::Use => return Ok(()),
            BeforeUse::FailClosed => return Err(unreadable()),
            BeforeUse::Read => {}
        }
        self.read_now(now_ms);
        self.usable_after_read(now_ms)
    }

    /// The edge's `recheck_read` for a request that arrived at `now_ms`: a
    /// read that began then or later, unless one was installed already; 503
    /// when none could be had.
    fn recheck_read_at(&mut self, now_ms: i64) -> Result<(), Error> {
        if !self.gw.revocations.read_since(now_ms) {
            self.read_now(now_ms);
        }
        if !self.gw.revocations.read_since(now_ms) {
            return Err(unreadable());
        }
        self.usable_after_read(now_ms)
    }

    /// A read of the log from the store (which may fail), begun and ended
    /// at `now_ms`.
    fn read_now(&mut self, now_ms: i64) {
        let (now, retention) = (UnixTime(now_ms / 1000), retention_secs(self.cfg.access_ttl_secs));
        let cursor = self.gw.revocations.begin_read(now_ms);
        let rows = block_on(read(&self.store, cursor, now, retention)).ok();
        self.gw.revocations.end_read(now_ms, rows, now, retention);
    }

    fn usable_after_read(&self, now_ms: i64) -> Result<(), Error> {
        match self.gw.revocations.unusable(now_ms, self.cfg.revocation_lag_secs) {
            true => Err(unreadable()),
            false => Ok(()),
        }
    }

    /// Decides as the edge's `forward` does at `now_ms`: reading the
    /// revocation log when asked (a role refusal's recheck once, then
    /// asking without it), with `load_keys` loading the keys when asked too
    /// (the reload an unknown kid may cause included), then asking again.
    fn decide_edge(&mut self, req: &Req, url: &str, now_ms: i64, load_keys: bool) -> Decision<Identity> {
        let mut recheck = true;
        let mut d = self.decide_raw_at(req, url, now_ms, recheck);
        for _ in 0..4 {
            let loaded = match &d {
                Decision::LoadKeys { unknown_kid } if load_keys => {
                    if self.gw.keys.reload_needed(unknown_kid.as_deref(), UnixTime(now_ms / 1000)) {
                        self.load(now_ms / 1000);
                    }
                    Ok(())
                }
                Decision::LoadRevocations => self.ensure_read_at(now_ms),
                Decision::RecheckRevocations => {
                    recheck = false;
                    self.recheck_read_at(now_ms)
                }
                _ => break,
            };
            if let Err(e) = loaded {
                return Decision::Refuse(e);
            }
            d = self.decide_raw_at(req, url, now_ms, recheck);
        }
        d
    }

    /// Decides as the edge does before any key load.
    fn decide(&mut self, req: &Req, url: &str, now: i64) -> Decision<Identity> {
        self.decide_edge(req, url, now * 1000, false)
    }

    /// As [`Isolate::decide`], at `now_ms`.
    fn decide_at(&mut self, req: &Req, url: &str, now_ms: i64) -> Decision<Identity> {
        self.decide_edge(req, url, now_ms, false)
    }

    /// Decides as the edge's `forward` does, keys loaded when asked.
    fn decide_loading(&mut self, req: &Req, url: &str, now: i64) -> Decision<Identity> {
        self.decide_edge(req, url, now * 1000, true)
    }

    /// Records a revocation in the log at `at`, as D1's triggers do.
    fn revoke(&self, at: i64, what: Revoked) {
        let mut log = self.store.revocations.borrow_mut();
        let seq = log.last().map_or(1, |r| r.seq + 1);
        log.push(Revocation { seq, at: UnixTime(at), what });
    }
}

fn token_by(key: &SigningKey, sub: &str, roles: &[&str], iat: i64, ttl_secs: u64) -> String {
    token_with(key, sub, roles, iat, ttl_secs, Amr::PWD, &ExtraClaims::new())
}

/// A token of a sign-in at `iat` by `amr`, with the sign-in hook's `extra` claims.
fn token_with(
    key: &SigningKey,
    sub: &str,
    roles: &[&str],
    iat: i64,
    ttl_secs: u64,
    amr: Amr,
    extra: &ExtraClaims,
) -> String {
    let roles: Vec<Role> = roles.iter().map(|r| Role::from(*r)).collect();
    token::issue(
        &NewAccessToken {
            issuer: ISSUER,
            audience: "portcullis",
            user_id: &sub.into(),
            session_id: &format!("sid-{sub}").into(),
            roles: &roles,
            email: &format!("{sub}@example.com"),
            email_verified: true,
            jti: &format!("jti-{sub}-{iat}"),
            now: UnixTime(iat),
            ttl_secs,
            amr,
            auth_time: UnixTime(iat),
            extra,
        },
        key,
    )
    .unwrap()
}

const API: &str = "https://gw.example/api/data";
const ADMIN: &str = "https://gw.example/api/admin/users";
const EDITORS: &str = "https://gw.example/api/editors/page";
const PUBLIC: &str = "https://gw.example/api/public/ping";

/// The identity forwarded, or why not.
fn forwarded(d: Decision<Identity>) -> (Identity, bool) {
    match d {
        Decision::Forward { identity: Some(identity), drop_auth, fresh: None } => (identity, drop_auth),
        other => panic!("expected a forward with identity, got {other:?}"),
    }
}

/// The problem's status and code of a refusal.
fn refused(d: Decision<Identity>) -> (u16, &'static str) {
    match d {
        Decision::Refuse(e) => {
            let p = e.problem();
            (p.status, p.code)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn value<'a>(identity: &'a Identity, name: &str) -> &'a str {
    &identity.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn a_public_route_is_forwarded_without_a_token_and_without_identity_or_authorization() {
    let mut i = Isolate::new(&[]);
    for req in [Req::get(), Req::get().bearer("not even a token")] {
        match i.decide(&req, PUBLIC, 10) {
            Decision::Forward { identity: None, drop_auth: true, fresh: None } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(i.ops.verifications.get() + i.ops.signatures.get(), 0, "no token is checked on a public route");
}

#[test]
fn trace_and_track_are_never_forwarded_since_the_origin_would_echo_the_identity() {
    let mut i = Isolate::new(&[]);
    let t = i.token("u1", &[], 0);
    for method in ["TRACE", "TRACK", "trace", "Track"] {
        for url in [PUBLIC, API] {
            let d = i.decide(&Req::method(method).bearer(&t), url, 10);
            let Decision::Refuse(e) = d else { panic!("{method} {url}: {d:?}") };
            let p = e.problem();
            assert_eq!((p.status, p.code), (405, "method_not_allowed"), "{method} {url}");
            assert_eq!(p.allow, Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
        }
    }
    assert_eq!(i.ops.verifications.get() + i.ops.signatures.get(), 0, "refused before any token work");
    forwarded(i.decide(&Req::method("TRACES").bearer(&t), API, 10));
}

#[test]
fn an_authenticated_route_needs_a_valid_token() {
    let mut i = Isolate::new(&[]);
    assert_eq!(refused(i.decide(&Req::get(), API, 10)), (401, "missing_token"));
    assert_eq!(refused(i.decide(&Req::get().bearer("abc.def.ghi"), API, 10)), (401, "invalid_token"));
    let t = i.token("u1", &[], 0);
    let mut forged = t.clone();
    forged.replace_range(forged.len() - 4.., if forged.ends_with("AAAA") { "BBBB" } else { "AAAA" });
    assert_eq!(refused(i.decide(&Req::get().bearer(&forged), API, 10)), (401, "invalid_token"));
    let (identity, drop_auth) = forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    assert_eq!(value(&identity, "x-auth-user-id"), "u1");
    assert!(drop_auth);
}

#[test]
fn a_role_route_needs_the_role_and_any_role_one_of_them() {
    let mut i = Isolate::new(&[]);
    let (user, admin, editor) =
        (i.token("user", &["user"], 0), i.token("root", &["admin"], 0), i.token("ed", &["editor"], 0));
    assert_eq!(refused(i.decide(&Req::get().bearer(&user), ADMIN, 10)), (403, "insufficient_role"));
    assert_eq!(refused(i.decide(&Req::get().bearer(&editor), ADMIN, 10)), (403, "insufficient_role"));
    forwarded(i.decide(&Req::get().bearer(&admin), ADMIN, 10));
    assert_eq!(refused(i.decide(&Req::get().bearer(&user), EDITORS, 10)), (403, "insufficient_role"));
    forwarded(i.decide(&Req::get().bearer(&editor), EDITORS, 10));
    forwarded(i.decide(&Req::get().bearer(&admin), EDITORS, 10));
    // Refused again from the cache, without verifying again.
    let before = i.ops.verifications.get();
    assert_eq!(refused(i.decide(&Req::get().bearer(&user), ADMIN, 11)), (403, "insufficient_role"));
    assert_eq!(i.ops.verifications.get(), before);
}

#[test]
fn the_identity_headers_and_a_signed_assertion_for_the_origin_are_added() {
    let mut i = Isolate::new(&[]);
    let t = i.token("u1", &["editor", "beta"], 0);
    let (identity, _) = forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    let names: Vec<&str> = identity.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["x-auth-user-id", "x-auth-email", "x-auth-roles", "x-auth-session-id", "x-auth-assertion"]);
    assert_eq!(value(&identity, "x-auth-user-id"), "u1");
    assert_eq!(value(&identity, "x-auth-email"), "u1@example.com");
    assert_eq!(value(&identity, "x-auth-roles"), "editor,beta");
    assert_eq!(value(&identity, "x-auth-session-id"), "sid-u1");
    // The assertion verifies with the published key, names the origin, and
    // is no access token.
    let assertion = value(&identity, "x-auth-assertion");
    let (signed, sig) = assertion.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    assert!(i.stored[0].verify(SigningAlg::EdDsa, signed.as_bytes(), &sig).unwrap());
    let part = |n: usize| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(signed.split('.').nth(n).unwrap()).unwrap()).unwrap()
    };
    assert_eq!(part(0)["typ"], "portcullis-assertion+jwt");
    assert_eq!(part(1)["aud"], ORIGIN_URL);
    assert_eq!(part(1)["iss"], ISSUER);
    assert_eq!(part(1)["sub"], "u1");
    assert_eq!(part(1)["exp"], 10 + 60);
}

#[test]
fn authorization_is_removed_unless_the_rule_forwards_it_and_spoofed_identity_headers_are_stripped() {
    let mut i = Isolate::new(&[("STRIP_HEADERS", "x-tenant-id")]);
    let t = i.token("u1", &[], 0);
    let spoofed = Req::get().bearer(&t).header("x-auth-user-id", "admin").header("x-forwarded-user", "admin");
    let (_, drop_auth) = forwarded(i.decide(&spoofed, API, 10));
    assert!(drop_auth);
    let (_, drop_auth) = forwarded(i.decide(&spoofed, "https://gw.example/api/passthrough/x", 10));
    assert!(!drop_auth, "forward_authorization keeps it");
    // What the forward removes besides: every spelling of the identity
    // headers the gateway sets, other proxies' identity headers, and names
    // added with STRIP_HEADERS; the request's own headers stay.
    let stripped = &i.cfg.strip_headers;
    for name in ["x-auth-user-id", "X_Auth_Roles", "x-auth-assertion", "x-forwarded-user", "remote-user", "x-tenant-id"]
    {
        assert!(stripped.strips(name), "{name}");
    }
    for name in ["content-type", "accept", "cf-connecting-ip", "x-request-id"] {
        assert!(!stripped.strips(name), "{name}");
    }
    // Nor do our own cookies (the session's, the OAuth sign-in's and the
    // hosted pages'), or hop-by-hop headers; the forward keeps what the
    // decision read.
    assert_eq!(
        OWN_COOKIES,
        ["__Host-portcullis_access", "__Host-portcullis_refresh", "__Host-portcullis_oauth", "__Host-portcullis_ui"]
    );
    assert!(HOP_BY_HOP.contains(&"connection") && HOP_BY_HOP.contains(&"upgrade"));
    for read in ["authorization", "cookie", "origin", "content-length"] {
        assert!(NEVER_CONNECTION_NAMED.contains(&read), "{read}");
    }
}

#[test]
fn in_cookie_mode_the_access_cookie_is_a_credential_and_a_bearer_token_comes_first() {
    let mut i = Isolate::new(&[("COOKIE_MODE", "true")]);
    let (a, b) = (i.token("cookie-user", &[], 0), i.token("bearer-user", &[], 0));
    let by_cookie = Req::get().header("cookie", &format!("theme=dark; __Host-portcullis_access={a}"));
    let (identity, _) = forwarded(i.decide(&by_cookie, API, 10));
    assert_eq!(value(&identity, "x-auth-user-id"), "cookie-user");
    let both = by_cookie.bearer(&b);
    let (identity, _) = forwarded(i.decide(&both, API, 10));
    assert_eq!(value(&identity, "x-auth-user-id"), "bearer-user");

    // Without cookie mode the cookie is no credential.
    let mut i = Isolate::new(&[]);
    let a = i.token("cookie-user", &[], 0);
    let by_cookie = Req::get().header("cookie", &format!("__Host-portcullis_access={a}"));
    assert_eq!(refused(i.decide(&by_cookie, API, 10)), (401, "missing_token"));
}

#[test]
fn a_cookie_authenticated_cross_site_state_change_is_refused_but_a_bearer_one_is_not() {
    let mut i = Isolate::new(&[("COOKIE_MODE", "true"), ("CORS_ORIGINS", "https://app.example")]);
    let t = i.token("u1", &[], 0);
    let cookie = format!("__Host-portcullis_access={t}");
    let post = |extra: &[(&'static str, &str)]| {
        let mut r = Req::method("POST").header("cookie", &cookie);
        for (n, v) in extra {
            r = r.header(n, v);
        }
        r
    };
    assert_eq!(refused(i.decide(&post(&[("sec-fetch-site", "cross-site")]), API, 10)), (403, "csrf_refused"));
    assert_eq!(refused(i.decide(&post(&[("origin", "https://evil.example")]), API, 10)), (403, "csrf_refused"));
    let handshake =
        Req::get().header("cookie", &cookie).header("upgrade", "websocket").header("origin", "https://evil.example");
    assert_eq!(refused(i.decide(&handshake, API, 10)), (403, "csrf_refused"));
    forwarded(i.decide(&post(&[("origin", ISSUER)]), API, 10));
    forwarded(i.decide(&post(&[("origin", "https://app.example")]), API, 10));
    // The same cross-site request with a bearer token: no CSRF in play.
    let bearer =
        Req::method("POST").bearer(&t).header("sec-fetch-site", "cross-site").header("origin", "https://evil.example");
    forwarded(i.decide(&bearer, API, 10));
}

#[test]
fn our_own_ed25519_signatures_are_recognised_and_others_verified() {
    let mut i = Isolate::new(&[]);
    let t = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    assert_eq!(i.ops.verifications.get(), 0, "recognised as our key's own, no signature operation");
    // ES256 signatures are randomised: always verified.
    let mut i = Isolate::with_alg(&[], SigningAlg::Es256);
    let t = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    assert_eq!(i.ops.verifications.get(), 1);
}

#[test]
fn a_verified_token_is_served_from_the_cache_until_it_expires() {
    let mut i = Isolate::with_alg(&[("ACCESS_TTL", "900")], SigningAlg::Es256);
    let t = i.token("u1", &[], 0);
    let (first, _) = forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    assert_eq!((i.ops.verifications.get(), i.ops.signatures.get()), (1, 1));
    // Cached with its assertion: no verification, no signature.
    let (again, _) = forwarded(i.decide(&Req::get().bearer(&t), API, 20));
    assert_eq!((i.ops.verifications.get(), i.ops.signatures.get()), (1, 1));
    assert_eq!(first, again, "the same assertion, reused");
    // With less than half its lifetime left, the assertion is signed anew; the token is still cached.
    let (renewed, _) = forwarded(i.decide(&Req::get().bearer(&t), API, 41));
    assert_eq!((i.ops.verifications.get(), i.ops.signatures.get()), (1, 2));
    assert_ne!(value(&first, "x-auth-assertion"), value(&renewed, "x-auth-assertion"));
    // Keys reloaded meanwhile (KEY_CACHE_TTL is 300) keep it cached.
    i.load(800);
    forwarded(i.decide(&Req::get().bearer(&t), API, 900 + LEEWAY_SECS - 1));
    assert_eq!(i.ops.verifications.get(), 1);
    // Past exp (and the leeway) the cache no longer serves it: verifying again refuses it.
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), API, 900 + LEEWAY_SECS)), (401, "token_expired"));
    assert_eq!(i.ops.verifications.get(), 2);
}

#[test]
fn a_token_this_isolate_issued_is_forwarded_without_a_check() {
    let mut i = Isolate::with_alg(&[], SigningAlg::Es256);
    let raw = i.token("u1", &["admin"], 0);
    let issued = token::Parsed::new(&raw, token::ACCESS_TOKEN_TYPE)
        .unwrap()
        .validated_claims(
            &token::Expectations {
                issuer: ISSUER,
                audience: "portcullis",
                token_type: token::ACCESS_TOKEN_TYPE,
                max_lifetime_secs: 900,
            },
            UnixTime(0),
        )
        .unwrap();
    let kid = i.signing.kid.clone();
    i.gw.remember_issued(&raw, &kid, issued, &i.cfg, &i.ops, UnixTime(0));
    let (identity, _) = forwarded(i.decide(&Req::get().bearer(&raw), ADMIN, 5));
    assert_eq!(value(&identity, "x-auth-user-id"), "u1");
    assert_eq!((i.ops.verifications.get(), i.ops.signatures.get()), (0, 1), "its assertion signed when it was issued");
}

#[test]
fn a_cached_token_is_refused_at_another_issuer() {
    // Without ISSUER, each request's own origin is the issuer.
    let cfg = config(&[("ROUTES", ROUTES), ("ORIGIN_URL", ORIGIN_URL)]);
    let mut i = Isolate::new(&[]);
    i.cfg = cfg;
    i.load(0);
    let t = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    let elsewhere = "https://other.example/api/data";
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), elsewhere, 11)), (401, "invalid_token"));
}

#[test]
fn keys_are_used_until_key_cache_ttl_reloaded_in_the_background_from_half_of_it() {
    let mut i = Isolate::new(&[]);
    let t = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    assert_eq!(i.gw.keys.state(UnixTime(149)), KeyCacheState::Fresh);
    assert!(!i.gw.keys.claim_background_reload(UnixTime(149)));
    // From half of KEY_CACHE_TTL (300): still used — a fresh token too —
    // while one background reload starts, and no other for 30 s.
    let fresh = i.token("u2", &[], 100);
    forwarded(i.decide(&Req::get().bearer(&fresh), API, 150));
    forwarded(i.decide(&Req::get().bearer(&t), API, 150));
    assert!(i.gw.keys.claim_background_reload(UnixTime(150)));
    assert!(!i.gw.keys.claim_background_reload(UnixTime(179)));
    assert!(i.gw.keys.claim_background_reload(UnixTime(180)), "one that did not finish is given up");
    forwarded(i.decide(&Req::get().bearer(&t), API, 299));
    // At KEY_CACHE_TTL nothing is used before a reload: not the keys, not
    // the tokens they vouched for.
    let stale = UnixTime(300);
    assert_eq!(i.gw.keys.state(stale), KeyCacheState::Stale);
    assert!(!i.gw.keys.vouches(&i.signing.kid, stale));
    match i.decide(&Req::get().bearer(&t), API, 300) {
        Decision::LoadKeys { unknown_kid: Some(kid) } => assert_eq!(kid, i.signing.kid),
        other => panic!("{other:?}"),
    }
    assert!(i.gw.keys.reload_needed(None, stale));
    assert!(i.load(300));
    forwarded(i.decide(&Req::get().bearer(&t), API, 300));
}

#[test]
fn an_invalidated_cache_and_a_reload_begun_before_the_invalidation_are_not_used() {
    let mut i = Isolate::new(&[]);
    let t = i.token("u1", &[], 0);
    let began = i.gw.keys.begin_reload();
    i.gw.keys.invalidate();
    assert!(matches!(i.decide(&Req::get().bearer(&t), API, 10), Decision::LoadKeys { .. }));
    // The reload that read the keys before the change installs as stale.
    assert!(!i.gw.keys.install(began, UnixTime(10), i.stored.clone(), i.signing.clone(), &i.cfg));
    assert!(matches!(i.decide(&Req::get().bearer(&t), API, 10), Decision::LoadKeys { .. }));
    assert!(i.load(10));
    forwarded(i.decide(&Req::get().bearer(&t), API, 10));
}

#[test]
fn a_rotated_key_counts_while_published_and_a_withdrawn_one_is_refused_cached_or_not() {
    let mut i = Isolate::new(&[]);
    let old_key = i.signing.clone();
    let old_kid = old_key.kid.clone();
    let cached = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&cached), API, 10));
    // A rotation: the old key retired, published until 2000.
    i.rotate(20, 2_000);
    i.load(20);
    forwarded(i.decide(&Req::get().bearer(&cached), API, 21));
    let fresh_old = token_by(&old_key, "u2", &[], 21, 900);
    forwarded(i.decide(&Req::get().bearer(&fresh_old), API, 22));
    assert_eq!(i.ops.verifications.get(), 0, "a retired key's own signatures are still recognised");
    // Withdrawn at once (an administrator retiring a compromised key): gone from the next load.
    i.stored.retain(|k| k.kid != old_kid);
    i.load(30);
    assert!(!i.gw.keys.vouches(&old_kid, UnixTime(30)));
    let refused_after_load =
        |i: &mut Isolate, raw: &str, now: i64| refused(i.decide_loading(&Req::get().bearer(raw), API, now));
    assert_eq!(refused_after_load(&mut i, &cached, 31), (401, "invalid_token"), "cached before: refused");
    assert_eq!(refused_after_load(&mut i, &fresh_old, 32), (401, "invalid_token"));
    let never_seen = token_by(&old_key, "u3", &[], 30, 900);
    assert_eq!(refused_after_load(&mut i, &never_seen, 33), (401, "invalid_token"));
    // The new key's tokens pass.
    let new = i.token("u4", &[], 30);
    forwarded(i.decide(&Req::get().bearer(&new), API, 34));
}

#[test]
fn an_unknown_kid_reloads_the_keys_at_most_every_thirty_seconds() {
    let mut i = Isolate::new(&[]);
    let mut rng = TestRandom(99);
    let (_, stranger) = signing_keys::generate(SigningAlg::EdDsa, &mut rng, &i.cfg.kek, UnixTime(0)).unwrap();
    let t = token_by(&stranger, "u1", &[], 0, 900);
    match i.decide(&Req::get().bearer(&t), API, 100) {
        Decision::LoadKeys { unknown_kid: Some(kid) } => assert_eq!(kid, stranger.kid),
        other => panic!("{other:?}"),
    }
    assert!(i.gw.keys.reload_needed(Some(&stranger.kid), UnixTime(100)), "the first unknown kid reloads");
    i.load(100);
    // Within 30 s of that reload, unknown kids are refused without another.
    assert_eq!(
        i.gw.keys.verify(&i.ops, &stranger.kid, SigningAlg::EdDsa, b"x", &[0; 64], UnixTime(129)).unwrap(),
        Cached::UnknownKey
    );
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), API, 129)), (401, "invalid_token"));
    assert!(!i.gw.keys.reload_needed(Some(&stranger.kid), UnixTime(129)));
    assert!(matches!(i.decide(&Req::get().bearer(&t), API, 130), Decision::LoadKeys { unknown_kid: Some(_) }));
}

#[test]
fn a_token_of_a_key_of_another_algorithm_is_refused() {
    let mut i = Isolate::with_alg(&[], SigningAlg::Es256);
    // A token saying EdDSA whose kid names our ES256 key.
    let genuine = i.token("u1", &["admin"], 0);
    let claims = genuine.split('.').nth(1).unwrap();
    let header = serde_json::json!({"alg": "EdDSA", "kid": i.signing.kid, "typ": "at+jwt"}).to_string();
    let t = format!("{}.{claims}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode([7u8; 64]));
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), ADMIN, 10)), (401, "invalid_token"));
    assert_eq!(i.ops.verifications.get(), 0, "refused on the algorithm, before any signature check");
}

#[test]
fn a_retired_key_stops_counting_when_its_publication_ends_though_still_stored() {
    let mut i = Isolate::new(&[]);
    let old_key = i.signing.clone();
    let cached = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&cached), API, 10));
    i.rotate(20, 100);
    i.load(90);
    let fresh = token_by(&old_key, "u2", &[], 90, 900);
    forwarded(i.decide(&Req::get().bearer(&fresh), API, 99));
    forwarded(i.decide(&Req::get().bearer(&cached), API, 99));
    // At `publish_until` the key is still in the store (not yet pruned) but
    // no longer published: neither its cached nor its new tokens count.
    assert!(!i.gw.keys.vouches(&old_key.kid, UnixTime(100)));
    assert_eq!(refused(i.decide_loading(&Req::get().bearer(&fresh), API, 100)), (401, "invalid_token"));
    assert_eq!(refused(i.decide_loading(&Req::get().bearer(&cached), API, 101)), (401, "invalid_token"));
}

/// A session revoked for `sub`'s tokens (`sid-<sub>`), as a logout records it.
fn session_of(sub: &str) -> Revoked {
    Revoked::Session(format!("sid-{sub}").into())
}

#[test]
fn a_token_of_a_revoked_session_is_refused_cached_or_not_within_the_lag() {
    let mut i = Isolate::new(&[("REVOCATION_LAG", "10")]);
    let (t, other) = (i.token("u1", &[], 0), i.token("u2", &[], 0));
    forwarded(i.decide(&Req::get().bearer(&t), API, 1));
    i.revoke(2, session_of("u1"));
    // The copy read at 0 does not know yet; from half the lag a read starts
    // in the background, and the request is answered from the copy meanwhile.
    forwarded(i.decide(&Req::get().bearer(&t), API, 4));
    let now_ms = 5_000;
    assert_eq!(i.gw.revocations.before_use(now_ms, 10), BeforeUse::Use);
    let cursor = i.gw.revocations.begin_background_read(now_ms, 10).expect("due from half the lag");
    assert_eq!(i.gw.revocations.begin_background_read(now_ms, 10), None, "one read at a time");
    forwarded(i.decide_raw(&Req::get().bearer(&t), API, 5));
    let rows = block_on(read(&i.store, cursor, UnixTime(5), retention_secs(900))).unwrap();
    i.gw.revocations.end_read(now_ms, Some(rows), UnixTime(5), retention_secs(900));
    // Read: the cached token is refused, a token of the session never seen
    // before too, and another session's token still passes.
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), API, 6)), (401, "token_revoked"));
    let unseen = token_by(&i.signing, "u1", &[], 3, 900);
    assert_eq!(refused(i.decide(&Req::get().bearer(&unseen), API, 6)), (401, "token_revoked"));
    forwarded(i.decide(&Req::get().bearer(&other), API, 6));
}

#[test]
fn a_token_claiming_a_role_its_user_lost_is_refused_and_its_refreshed_token_passes() {
    let mut i = Isolate::new(&[]);
    let admin = i.token("root", &["admin", "editor"], 0);
    forwarded(i.decide(&Req::get().bearer(&admin), ADMIN, 1));
    i.revoke(2, Revoked::Roles { user_id: "root".into(), roles: vec!["editor".into()] });
    // A lag (10 s) after the copy was read it is read again before use.
    assert!(matches!(i.decide_raw(&Req::get().bearer(&admin), ADMIN, 10), Decision::LoadRevocations));
    assert_eq!(refused(i.decide(&Req::get().bearer(&admin), ADMIN, 10)), (401, "token_revoked"));
    // Refused wherever it goes, not only where the role is asked for.
    assert_eq!(refused(i.decide(&Req::get().bearer(&admin), API, 11)), (401, "token_revoked"));
    // The token a refresh gives carries the roles held now: it passes where they do.
    let refreshed = i.token("root", &["editor"], 11);
    forwarded(i.decide(&Req::get().bearer(&refreshed), EDITORS, 12));
    assert_eq!(refused(i.decide(&Req::get().bearer(&refreshed), ADMIN, 12)), (403, "insufficient_role"));
}

#[test]
fn a_token_minted_after_a_grant_the_copy_has_not_read_passes_after_one_read() {
    let mut i = Isolate::new(&[]);
    let editor = Revoked::Roles { user_id: "root".into(), roles: vec!["editor".into()] };
    i.revoke(1, editor);
    // The copy (read at 11 s, a lag after its first read) holds {editor}.
    forwarded(i.decide(&Req::get().bearer(&i.token("other", &[], 11)), API, 11));
    // billing is granted at 12 s, and a sign-in then gets a token with it.
    i.revoke(12, Revoked::Roles { user_id: "root".into(), roles: vec!["billing".into(), "editor".into()] });
    let t = i.token("root", &["billing", "editor"], 12);
    // The copy refuses it for a role, but was read before the token could
    // have been minted: it asks for a read, and then the token passes.
    assert!(matches!(i.decide_raw_at(&Req::get().bearer(&t), API, 12_500, true), Decision::RecheckRevocations));
    forwarded(i.decide_at(&Req::get().bearer(&t), API, 12_500));
    forwarded(i.decide_at(&Req::get().bearer(&t), EDITORS, 12_600));
    // A role the user does not hold: refused after the read; without the
    // recheck (the edge's second ask) the refusal stands.
    let other = i.token("root", &["admin"], 12);
    assert!(matches!(i.decide_raw_at(&Req::get().bearer(&other), API, 13_600, true), Decision::RecheckRevocations));
    assert_eq!(refused(i.decide_raw_at(&Req::get().bearer(&other), API, 13_600, false)), (401, "token_revoked"));
    assert_eq!(refused(i.decide_at(&Req::get().bearer(&other), API, 13_600)), (401, "token_revoked"));
}

#[test]
fn a_recheck_after_a_read_that_began_with_the_request_reads_nothing_more() {
    let mut i = Isolate::new(&[]);
    i.revoke(1, Revoked::Roles { user_id: "root".into(), roles: vec!["editor".into()] });
    forwarded(i.decide(&Req::get().bearer(&i.token("other", &[], 1)), API, 1));
    i.revoke(2, Revoked::Roles { user_id: "root".into(), roles: vec!["billing".into(), "editor".into()] });
    // The copy (read at 0, before either row) is a lag old at 12: read before
    // use, by a read that began as the request arrived. It holds the grant.
    let t = i.token("root", &["billing", "editor"], 11);
    let reads = i.store.log_reads.get();
    forwarded(i.decide(&Req::get().bearer(&t), API, 12));
    assert_eq!(i.store.log_reads.get(), reads + 1);
    // A role it lacks: refused for it, and that read, begun with the
    // request, already answers the recheck: no second read.
    let admin = i.token("root", &["admin"], 11);
    let reads = i.store.log_reads.get();
    assert!(matches!(i.decide_raw_at(&Req::get().bearer(&admin), API, 12_000, true), Decision::RecheckRevocations));
    assert_eq!(refused(i.decide_at(&Req::get().bearer(&admin), API, 12_000)), (401, "token_revoked"));
    assert_eq!(i.store.log_reads.get(), reads, "the read at 12 s answers");
}

#[test]
fn with_the_log_unreadable_a_role_refusal_is_rechecked_once_and_never_passes() {
    let mut i = Isolate::new(&[]);
    i.revoke(1, Revoked::Roles { user_id: "root".into(), roles: vec!["editor".into()] });
    forwarded(i.decide(&Req::get().bearer(&i.token("other", &[], 11)), API, 11));
    i.revoke(12, Revoked::Roles { user_id: "root".into(), roles: vec!["billing".into(), "editor".into()] });
    let t = i.token("root", &["billing", "editor"], 12);
    *i.store.fail.borrow_mut() = true;
    // The recheck's read fails: the grant cannot be told from a removal, 503.
    assert_eq!(refused(i.decide_at(&Req::get().bearer(&t), API, 12_500)), (503, "service_unavailable"));
    // A read failed since the copy's: no request waits on D1 again, and the
    // copy cannot say whether the role was granted or removed: 503 at once.
    let reads = i.store.log_reads.get();
    assert_eq!(refused(i.decide_raw_at(&Req::get().bearer(&t), API, 13_000, true)), (503, "service_unavailable"));
    assert_eq!(refused(i.decide_at(&Req::get().bearer(&t), API, 14_000)), (503, "service_unavailable"));
    assert_eq!(i.store.log_reads.get(), reads, "no read tried for them");
    // A token claiming only roles the copy holds passes meanwhile.
    forwarded(i.decide_at(&Req::get().bearer(&i.token("root", &["editor"], 12)), API, 14_000));
    // D1 back: the next read (in the background here) holds the grant.
    *i.store.fail.borrow_mut() = false;
    let cursor = i.gw.revocations.begin_background_read(16_500, 10).unwrap();
    let rows = block_on(read(&i.store, cursor, UnixTime(16), retention_secs(900))).unwrap();
    i.gw.revocations.end_read(16_500, Some(rows), UnixTime(16), retention_secs(900));
    forwarded(i.decide_at(&Req::get().bearer(&t), API, 16_600));
}

#[test]
fn a_role_removed_right_after_a_sign_in_is_refused_after_a_read_while_the_copy_is_not_newer() {
    let mut i = Isolate::new(&[]);
    let admin = i.token("root", &["admin", "editor"], 20);
    forwarded(i.decide(&Req::get().bearer(&admin), ADMIN, 20));
    i.revoke(21, Revoked::Roles { user_id: "root".into(), roles: vec!["editor".into()] });
    // Read at 31 s (a lag old): the copy has the removal, and is new
    // enough to answer for a token of 20 s at once.
    assert_eq!(refused(i.decide(&Req::get().bearer(&admin), ADMIN, 31)), (401, "token_revoked"));
    assert_eq!(refused(i.decide_raw(&Req::get().bearer(&admin), API, 32)), (401, "token_revoked"));

    // A token of the second the copy was read in (a refresh racing the
    // removal): checked against a new read while the copy is not newer
    // than it by the margin (5 s), and refused all the same.
    let fresh = i.token("root", &["admin"], 32);
    for ms in (32_000..40_000).step_by(500) {
        let rechecks =
            matches!(i.decide_raw_at(&Req::get().bearer(&fresh), API, ms, true), Decision::RecheckRevocations);
        assert_eq!(rechecks, ms <= 37_000, "{ms}");
        assert_eq!(refused(i.decide_at(&Req::get().bearer(&fresh), API, ms)), (401, "token_revoked"), "{ms}");
    }

    // A revoked session is never rechecked, however new its token.
    i.revoke(40, session_of("u9"));
    forwarded(i.decide(&Req::get().bearer(&i.token("other", &[], 51)), API, 51));
    let t = i.token("u9", &[], 51);
    assert_eq!(refused(i.decide_raw_at(&Req::get().bearer(&t), API, 51_100, true)), (401, "token_revoked"));
}

#[test]
fn the_revocation_set_is_read_before_its_first_use_and_only_for_a_token() {
    let mut i = Isolate::new(&[]);
    i.gw = Gateway::new(100);
    i.load(0);
    let t = i.token("u1", &[], 0);
    // Public routes and requests without a credential need no set.
    forwarded_public(i.decide_raw(&Req::get(), PUBLIC, 1));
    assert_eq!(refused(i.decide_raw(&Req::get(), API, 1)), (401, "missing_token"));
    // Nor a token that does not verify: its 401 comes first, D1 or not.
    assert_eq!(refused(i.decide_raw(&Req::get().bearer("not.a.token"), API, 1)), (401, "invalid_token"));
    assert!(matches!(i.decide_raw(&Req::get().bearer(&t), API, 1), Decision::LoadRevocations));
    assert_eq!(i.ensure_read(1), Ok(()));
    forwarded(i.decide_raw(&Req::get().bearer(&t), API, 1));
}

#[test]
fn a_fresh_rule_needs_no_set_read_it_reads_the_session_itself() {
    let routes = r#"[{"path": "/api/pay/*", "policy": "authenticated", "fresh": true}]"#;
    let mut i = Isolate::new(&[("ROUTES", routes)]);
    i.gw = Gateway::new(100);
    i.load(0);
    *i.store.fail.borrow_mut() = true;
    let t = i.token("u1", &[], 0);
    // Never read, the log unreadable: the fresh rule still has its own check.
    match i.decide_raw(&Req::get().bearer(&t), "https://gw.example/api/pay/now", 1) {
        Decision::Forward { identity: Some(_), fresh: Some(f), .. } => assert_eq!(f.sid, "sid-u1"),
        other => panic!("expected a forward with a fresh check, got {other:?}"),
    }
    // Elsewhere the set is needed first.
    assert!(matches!(i.decide_raw(&Req::get().bearer(&t), API, 1), Decision::LoadRevocations));
}

#[test]
fn with_the_log_unreadable_a_set_never_read_fails_closed_and_a_stale_one_serves_three_lags() {
    let mut i = Isolate::new(&[("REVOCATION_LAG", "10")]);
    let t = i.token("u1", &[], 0);
    *i.store.fail.borrow_mut() = true;
    // Read at 0; a lag old at 10: read first, and when that fails the copy
    // still serves (a D1 outage), without a read per request.
    forwarded(i.decide(&Req::get().bearer(&t), API, 10));
    assert_eq!(i.gw.revocations.before_use(10_500, 10), BeforeUse::Use, "no new read within a second");
    // Nor after it: D1 failed since the copy was read, so no request waits
    // on it again (a slow failure would hold each one); reads go on in the
    // background, every second.
    forwarded(i.decide_raw(&Req::get().bearer(&t), API, 11));
    assert!(i.gw.revocations.begin_background_read(11_000, 10).is_some(), "retried in the background");
    i.gw.revocations.end_read(11_000, None, UnixTime(11), 1_000);
    assert!(i.gw.revocations.begin_background_read(11_500, 10).is_none(), "at most once a second");
    forwarded(i.decide_raw(&Req::get().bearer(&t), API, 20));
    forwarded(i.decide(&Req::get().bearer(&t), API, 29));
    // Three lags old: no longer used; a failed read is a 503.
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), API, 30)), (503, "service_unavailable"));
    // Within a second of that read, the request is refused without waiting for another.
    assert_eq!(refused(i.decide_raw(&Req::get().bearer(&t), API, 30)), (503, "service_unavailable"));
    forwarded_public(i.decide_raw(&Req::get(), PUBLIC, 30));
    // The log readable again: the next read restores it.
    *i.store.fail.borrow_mut() = false;
    assert!(matches!(i.decide_raw(&Req::get().bearer(&t), API, 31), Decision::LoadRevocations));
    forwarded(i.decide(&Req::get().bearer(&t), API, 31));

    // An isolate that never read the set refuses with 503 when it cannot.
    let mut cold = Isolate::new(&[]);
    cold.gw = Gateway::new(100);
    cold.load(0);
    *cold.store.fail.borrow_mut() = true;
    let t = cold.token("u1", &[], 0);
    assert_eq!(refused(cold.decide(&Req::get().bearer(&t), API, 1)), (503, "service_unavailable"));
}

/// A public forward: no identity, no session check.
fn forwarded_public(d: Decision<Identity>) {
    match d {
        Decision::Forward { identity: None, fresh: None, .. } => {}
        other => panic!("expected a public forward, got {other:?}"),
    }
}

/// A session of `sub` (`sid-<sub>`) and its user with `roles`, in the store.
fn store_session(store: &MemStore, sub: &str, roles: &[&str]) {
    store.users.borrow_mut().push(User {
        id: sub.into(),
        email: format!("{sub}@example.com"),
        name: None,
        password_hash: None,
        email_verified: true,
        avatar_url: None,
        phone: None,
        banned: false,
        roles: roles.iter().map(|r| Role::stored(r.to_string())).collect(),
        created_at: UnixTime(0),
        auth_epoch: 0,
        locale: None,
    });
    let session = Session {
        id: format!("sid-{sub}").into(),
        user_id: sub.into(),
        created_at: UnixTime(0),
        last_used_at: UnixTime(0),
        expires_at: UnixTime(100_000),
        revoked_at: None,
        ip_address: None,
        user_agent: None,
        extra_claims: ExtraClaims::new(),
        amr: Amr::PWD,
    };
    store.sessions.borrow_mut().push((session, String::new()));
}

#[test]
fn a_fresh_rule_forwards_only_once_the_session_read_now_stands() {
    let routes = r#"[{"path": "/api/pay/*", "policy": "authenticated", "fresh": true},
                     {"path": "/api/admin/*", "policy": "role:admin", "fresh": true}]"#;
    let mut i = Isolate::new(&[("ROUTES", routes)]);
    let (t, admin) = (i.token("u1", &[], 0), i.token("root", &["admin"], 0));
    store_session(&i.store, "u1", &[]);
    store_session(&i.store, "root", &["admin"]);
    let fresh_of = |d: Decision<Identity>| match d {
        Decision::Forward { identity: Some(_), fresh, .. } => fresh,
        other => panic!("expected a forward, got {other:?}"),
    };
    let pay = "https://gw.example/api/pay/now";
    let check = fresh_of(i.decide(&Req::get().bearer(&t), pay, 1)).expect("a fresh rule asks for the session");
    assert_eq!(check, FreshSession { sid: "sid-u1".into(), sub: "u1".into(), roles: vec![] });
    // Cached, the token still has its session read on every request.
    assert_eq!(fresh_of(i.decide(&Req::get().bearer(&t), pay, 2)), Some(check.clone()));
    assert_eq!(fresh_of(i.decide(&Req::get().bearer(&t), API, 2)), None, "not where no rule says fresh");
    let max_age = i.cfg.session_max_age_secs;
    assert_eq!(block_on(check.check(&i.store, UnixTime(2), max_age)), Ok(()));
    // Revoked in D1 but not yet in the isolate's copy: the check refuses it.
    i.store.sessions.borrow_mut()[0].0.revoked_at = Some(UnixTime(3));
    forwarded_fresh(i.decide(&Req::get().bearer(&t), pay, 3));
    assert_eq!(refused_by(block_on(check.check(&i.store, UnixTime(3), max_age))), (401, "token_revoked"));
    // A role removed in D1: the admin's check refuses it at once.
    let admin_check = fresh_of(i.decide(&Req::get().bearer(&admin), ADMIN, 3)).unwrap();
    assert_eq!(block_on(admin_check.check(&i.store, UnixTime(3), max_age)), Ok(()));
    i.store.users.borrow_mut()[1].roles.clear();
    assert_eq!(refused_by(block_on(admin_check.check(&i.store, UnixTime(4), max_age))), (401, "token_revoked"));
    // D1 unreadable: fail closed.
    *i.store.fail.borrow_mut() = true;
    assert_eq!(refused_by(block_on(admin_check.check(&i.store, UnixTime(4), max_age))), (503, "service_unavailable"));
}

fn forwarded_fresh(d: Decision<Identity>) {
    assert!(matches!(d, Decision::Forward { identity: Some(_), fresh: Some(_), .. }), "{d:?}");
}

fn refused_by(r: Result<(), Error>) -> (u16, &'static str) {
    let p = r.unwrap_err().problem();
    (p.status, p.code)
}

#[test]
fn the_mfa_policy_asks_for_a_second_factor_cached_token_or_not() {
    let routes = r#"[{"path": "/api/billing/*", "policy": "mfa"}]"#;
    let mut i = Isolate::new(&[("ROUTES", routes)]);
    let billing = "https://gw.example/api/billing/invoices";
    let password_only = i.token("u1", &[], 0);
    let two_factors =
        token_with(&i.signing, "u2", &[], 0, 900, Amr::PWD.with(Amr::OTP).with(Amr::MFA), &ExtraClaims::new());
    let step_up = Error::InsufficientAuthentication { mfa: true, max_age_secs: None };
    for now in [1, 2] {
        match i.decide(&Req::get().bearer(&password_only), billing, now) {
            Decision::Refuse(e) => assert_eq!(e, step_up, "at {now}"),
            other => panic!("{other:?}"),
        }
        forwarded(i.decide(&Req::get().bearer(&two_factors), billing, now));
    }
    assert_eq!(
        refused(i.decide(&Req::get().bearer(&password_only), billing, 3)),
        (401, "insufficient_user_authentication")
    );
    forwarded(i.decide(&Req::get().bearer(&password_only), API, 3));
}

#[test]
fn max_age_asks_for_a_recent_sign_in_and_a_cached_token_ages_out() {
    let routes = r#"[{"path": "/api/admin/*", "policy": "role:admin", "max_age": 60}]"#;
    let mut i = Isolate::new(&[("ROUTES", routes)]);
    let signed_in_at_0 = i.token("root", &["admin"], 0);
    forwarded(i.decide(&Req::get().bearer(&signed_in_at_0), ADMIN, 60));
    // The same token, cached, a second later: its sign-in is too old.
    match i.decide(&Req::get().bearer(&signed_in_at_0), ADMIN, 61) {
        Decision::Refuse(e) => assert_eq!(e, Error::InsufficientAuthentication { mfa: false, max_age_secs: Some(60) }),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        refused(i.decide(&Req::get().bearer(&signed_in_at_0), ADMIN, 62)),
        (401, "insufficient_user_authentication")
    );
    forwarded(i.decide(&Req::get().bearer(&signed_in_at_0), API, 62));
    let recent = i.token("root", &["admin"], 30);
    forwarded(i.decide(&Req::get().bearer(&recent), ADMIN, 62));
}

#[test]
fn hook_claims_reach_the_origin_in_the_assertion_and_with_claims_header_as_x_auth_claims() {
    let mut claims = ExtraClaims::new();
    claims.insert("tenant".into(), serde_json::json!("acmé"));
    for claims_header in [false, true] {
        let mut i = Isolate::new(&[("CLAIMS_HEADER", if claims_header { "true" } else { "false" })]);
        let t = token_with(&i.signing, "u1", &[], 0, 900, Amr::PWD, &claims);
        let (identity, _) = forwarded(i.decide(&Req::get().bearer(&t), API, 1));
        let assertion = value(&identity, "x-auth-assertion");
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(assertion.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(payload["tenant"], "acmé", "signed into the assertion");
        let header = identity.iter().find(|(n, _)| *n == "x-auth-claims").map(|(_, v)| v.as_str());
        assert_eq!(header, claims_header.then_some(r#"{"tenant":"acm\u00e9"}"#));
        // Cached with the token: the same identity again.
        assert_eq!(forwarded(i.decide(&Req::get().bearer(&t), API, 2)).0, identity);
        // A token without hook claims has no X-Auth-Claims.
        let plain = i.token("u2", &[], 0);
        let (identity, _) = forwarded(i.decide(&Req::get().bearer(&plain), API, 2));
        assert_eq!(identity.len(), 5);
    }
}

/// One passing failure of a background read, then an idle isolate: with D1
/// healthy again, its next request reads before it uses a copy older than
/// the lag, and a session revoked after the failure is refused.
#[test]
fn an_old_passing_failure_does_not_let_an_idle_isolate_skip_its_read() {
    let mut i = Isolate::new(&[("REVOCATION_LAG", "10")]); // read at 0
    let t = i.token("u1", &[], 0);
    forwarded(i.decide(&Req::get().bearer(&t), API, 1));
    // At 5 s a background read starts and fails (a D1 blip); the isolate then goes idle.
    let began = 5_000;
    i.gw.revocations.begin_background_read(began, 10).expect("due");
    i.gw.revocations.end_read(began, None, UnixTime(5), retention_secs(900));
    // D1 is fine from here on. The session is revoked at 7 s.
    i.revoke(7, session_of("u1"));
    // 25 s: the copy is 25 s old, the failure 20 s: read first, refused.
    assert_eq!(refused(i.decide(&Req::get().bearer(&t), API, 25)), (401, "token_revoked"));
}
