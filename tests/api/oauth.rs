//! OAuth / OIDC sign-in and linking against an in-memory store and a fake
//! provider (discovery, JWKS, token endpoint, userinfo) whose "signatures"
//! verify when they are the bytes `good-signature`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use portcullis::core::error::Error;
use portcullis::core::flows::oauth::{AuthorizeRequest, CallbackOutcome, CallbackQuery, ExchangeRequest};
use portcullis::core::ids::UserId;
use portcullis::core::oauth::{
    pkce_challenge, CodeChallenge, JwsAlg, LinkedIdentity, OAuthState, OAuthStore, ProviderNet, ProviderRequest,
    StateTake, Unlink, STATE_TTL_SECS,
};
use portcullis::core::outbound::{HttpReply, SendError};
use portcullis::core::ports::{AccountStore, Result};
use portcullis::core::session::LiveSession;
use portcullis::core::takeover::AddressProof;
use portcullis::core::time::UnixTime;
use portcullis::core::users::User;

use crate::support::{block_on, code, signup_at, user, Done, MemStore, TestRandom, World};

/// OAuth rows of the in-memory store.
#[derive(Default)]
pub struct MemOAuth {
    states: Vec<OAuthState>,
    exchanges: Vec<(String, String, UnixTime)>,
    identities: Vec<LinkedIdentity>,
}

impl MemOAuth {
    /// The linked identities, for the store's account writes.
    pub fn identities_mut(&mut self) -> &mut Vec<LinkedIdentity> {
        &mut self.identities
    }

    /// The linked identities.
    pub fn linked(&self) -> &[LinkedIdentity] {
        &self.identities
    }

    /// The sign-ins and links in progress.
    pub fn states(&self) -> &[OAuthState] {
        &self.states
    }

    /// Links `identity` unless its (provider, subject) or (user, provider) is taken.
    fn link(&mut self, identity: &LinkedIdentity) -> bool {
        let taken = self.identities.iter().any(|i| {
            i.provider == identity.provider && (i.subject == identity.subject || i.user_id == identity.user_id)
        });
        if !taken {
            self.identities.push(identity.clone());
        }
        !taken
    }
}

impl OAuthStore for MemStore {
    async fn put_oauth_state(&self, state: &OAuthState) -> Result<()> {
        self.oauth.borrow_mut().states.push(state.clone());
        Ok(())
    }
    async fn put_link_state(&self, state: &OAuthState, caller: &LiveSession<'_>) -> Result<bool> {
        // As D1's conditional INSERT: the caller's session live, the account
        // unbanned at the state's epoch.
        let account_stands = self.users.borrow().iter().any(|u| {
            Some(u.id.as_str()) == state.link_user_id.as_deref() && u.auth_epoch == state.link_epoch && !u.banned
        });
        let own_session = state.link_session_id.as_ref() == Some(caller.session_id);
        if state.link_user_id.as_deref() != Some(caller.user_id)
            || !own_session
            || !self.session_live(caller)
            || !account_stands
        {
            return Ok(false);
        }
        self.oauth.borrow_mut().states.push(state.clone());
        Ok(true)
    }
    async fn take_oauth_state(&self, hash: &str, binding_hash: Option<&str>, now: UnixTime) -> Result<StateTake> {
        if *self.fail.borrow() {
            return Err(Error::unavailable("memory", "injected failure"));
        }
        // As D1's conditional DELETE: only a live state with this binding goes.
        let mut o = self.oauth.borrow_mut();
        let Some(i) = o.states.iter().position(|s| s.hash == hash && s.expires_at > now) else {
            return Ok(StateTake::Unknown);
        };
        if binding_hash != Some(o.states[i].binding_hash.as_str()) {
            return Ok(StateTake::OtherBrowser);
        }
        Ok(StateTake::Taken(Box::new(o.states.remove(i))))
    }
    async fn put_exchange(&self, hash: &str, sealed: &str, expires_at: UnixTime) -> Result<()> {
        self.oauth.borrow_mut().exchanges.push((hash.into(), sealed.into(), expires_at));
        Ok(())
    }
    async fn take_exchange(&self, hash: &str, now: UnixTime) -> Result<Option<String>> {
        let mut o = self.oauth.borrow_mut();
        let Some(i) = o.exchanges.iter().position(|e| e.0 == hash) else { return Ok(None) };
        let (_, sealed, exp) = o.exchanges.remove(i);
        Ok((exp > now).then_some(sealed))
    }
    async fn identity(&self, provider: &str, subject: &str) -> Result<Option<LinkedIdentity>> {
        let found =
            self.oauth.borrow().identities.iter().find(|i| i.provider == provider && i.subject == subject).cloned();
        let meanwhile = self.after_identity_read.borrow_mut().take();
        if let Some(f) = meanwhile {
            f();
        }
        Ok(found)
    }
    async fn identities_of(&self, user_id: &UserId) -> Result<Vec<LinkedIdentity>> {
        Ok(self.oauth.borrow().identities.iter().filter(|i| i.user_id == *user_id).cloned().collect())
    }
    async fn link_identity(&self, identity: &LinkedIdentity, user_epoch: u64, by: &LiveSession<'_>) -> Result<bool> {
        if !self.users.borrow().iter().any(|u| u.id == identity.user_id && u.auth_epoch == user_epoch) {
            return Ok(false);
        }
        if *by.user_id != identity.user_id || !self.session_live(by) {
            return Ok(false);
        }
        Ok(self.oauth.borrow_mut().link(identity))
    }
    async fn create_oauth_user(&self, user: &User, identity: &LinkedIdentity) -> Result<bool> {
        if self.users.borrow().iter().any(|u| u.email == user.email) {
            return Ok(false);
        }
        self.users.borrow_mut().push(user.clone());
        if !self.oauth.borrow_mut().link(identity) {
            self.users.borrow_mut().retain(|u| u.id != user.id);
            return Ok(false);
        }
        Ok(true)
    }
    async fn unlink_identity(&self, caller: &LiveSession<'_>, provider: &str) -> Result<Unlink> {
        if !self.session_live(caller) {
            return Ok(Unlink::SessionEnded);
        }
        let user_id = caller.user_id;
        let mut o = self.oauth.borrow_mut();
        let Some(i) = o.identities.iter().position(|i| i.user_id == *user_id && i.provider == provider) else {
            return Ok(Unlink::NotLinked);
        };
        let has_password = self.users.borrow().iter().any(|u| u.id == *user_id && u.password_hash.is_some());
        let others = o.identities.iter().filter(|i| i.user_id == *user_id && i.provider != provider).count();
        if !has_password && others == 0 {
            return Ok(Unlink::LastMethod);
        }
        o.identities.remove(i);
        Ok(Unlink::Done)
    }
}

pub(crate) const IDP: &str = "https://idp.test";
pub(crate) const CLIENT: &str = "portcullis-test";
const APP: &str = "https://app.test/done";
/// The app's PKCE verifier of every sign-in [`begin`] starts (RFC 7636's example).
pub(crate) const APP_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A fake OIDC provider.
#[derive(Default)]
pub(crate) struct FakeIdp {
    /// Claims of the next ID token (iss, aud, exp, iat, nonce are filled in unless given).
    pub(crate) claims: RefCell<Value>,
    /// What userinfo answers.
    userinfo: RefCell<Value>,
    /// A forced token-endpoint reply.
    token_reply: RefCell<Option<HttpReply>>,
    /// Sign with a bad signature.
    bad_signature: Cell<bool>,
    /// Every request.
    requests: RefCell<Vec<ProviderRequest>>,
    /// Unreachable.
    down: Cell<bool>,
    cache: RefCell<HashMap<String, (UnixTime, String)>>,
    /// What was reported for the log.
    warnings: RefCell<Vec<String>>,
    /// The `kid` of the next ID token (default `k1`), and the kids the JWKS
    /// publishes (default `k1`).
    kid: RefCell<Option<String>>,
    published: RefCell<Option<Vec<String>>>,
    /// The nonce of the last /authorize, and the time.
    nonce: RefCell<String>,
    now: Cell<i64>,
}

impl FakeIdp {
    fn id_token(&self) -> String {
        let mut c = self.claims.borrow().clone();
        let now = self.now.get();
        for (k, v) in [
            ("iss", json!(IDP)),
            ("aud", json!(CLIENT)),
            ("exp", json!(now + 300)),
            ("iat", json!(now)),
            ("nonce", json!(*self.nonce.borrow())),
        ] {
            if c.get(k).is_none() {
                c[k] = v;
            }
        }
        let sig: &[u8] = if self.bad_signature.get() { b"forged" } else { b"good-signature" };
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD
                .encode(json!({"alg": "EdDSA", "kid": self.kid.borrow().clone().unwrap_or("k1".into())}).to_string()),
            URL_SAFE_NO_PAD.encode(c.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }
}

impl ProviderNet for FakeIdp {
    async fn send(&self, request: &ProviderRequest) -> std::result::Result<HttpReply, SendError> {
        self.requests.borrow_mut().push(request.clone());
        if self.down.get() {
            return Err(SendError::Network("connection refused".into()));
        }
        let ok = |body: Value| Ok(HttpReply { status: 200, body: body.to_string() });
        match request.url.strip_prefix(IDP).unwrap_or("") {
            "/.well-known/openid-configuration" => ok(json!({
                "issuer": IDP, "authorization_endpoint": format!("{IDP}/authorize"), "token_endpoint": format!("{IDP}/token"),
                "userinfo_endpoint": format!("{IDP}/userinfo"), "jwks_uri": format!("{IDP}/jwks"),
            })),
            "/jwks" => {
                let kids = self.published.borrow().clone().unwrap_or_else(|| vec!["k1".into()]);
                ok(
                    json!({"keys": kids.iter().map(|k| json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": k})).collect::<Vec<_>>()}),
                )
            }
            "/token" => match self.token_reply.borrow().clone() {
                Some(r) => Ok(r),
                None => ok(json!({"access_token": "idp-at", "token_type": "Bearer", "id_token": self.id_token()})),
            },
            "/userinfo" => ok(self.userinfo.borrow().clone()),
            _ => Ok(HttpReply { status: 404, body: String::new() }),
        }
    }
    async fn verify(&self, alg: JwsAlg, jwk: &Value, _signed: &[u8], signature: &[u8]) -> Result<bool> {
        assert_eq!(alg, JwsAlg::EdDsa);
        assert_eq!(jwk["kid"].as_str(), Some(self.kid.borrow().clone().unwrap_or("k1".into()).as_str()));
        Ok(signature == b"good-signature")
    }
    fn cached(&self, key: &str) -> Option<(UnixTime, String)> {
        self.cache.borrow().get(key).cloned()
    }
    fn cache(&self, key: &str, fetched_at: UnixTime, body: &str) {
        self.cache.borrow_mut().insert(key.into(), (fetched_at, body.into()));
    }
    fn report(&self, warning: &str) {
        self.warnings.borrow_mut().push(warning.into());
    }
}

pub(crate) fn world() -> World {
    world_with(&[])
}

/// The provider `idp` and the app's redirect allowed, with `more` settings.
fn world_with(more: &[(&str, &str)]) -> World {
    let providers = json!([{"id": "idp", "issuer": IDP, "client_id": CLIENT}]).to_string();
    let mut vars = vec![
        ("OAUTH_PROVIDERS", providers.as_str()),
        ("OAUTH_IDP_CLIENT_SECRET", "shh"),
        ("REDIRECT_ALLOWLIST", "https://app.test"),
    ];
    vars.extend_from_slice(more);
    World::new(&vars)
}

/// What /authorize gave the browser.
pub(crate) struct Begun {
    url: url::Url,
    binding: String,
}

impl Begun {
    fn param(&self, name: &str) -> String {
        self.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default()
    }
}

/// Starts a sign-in, or with `linking` (the caller's access token) a link
/// to the caller's account.
pub(crate) fn begin(w: &World, rng: &mut TestRandom, idp: &FakeIdp, now: i64, linking: Option<&str>) -> Begun {
    let (deps, meta) = w.at(now);
    let req = AuthorizeRequest { redirect_to: Some(APP.into()) };
    let challenge = pkce_challenge(APP_VERIFIER);
    let started = match linking {
        None => block_on(deps.oauth_authorize(&meta, rng, idp, "idp", req, Some(&challenge))),
        Some(bearer) => block_on(deps.oauth_link_start(&meta, rng, idp, Some(bearer), "idp", req)),
    }
    .unwrap();
    let b = Begun { url: url::Url::parse(&started.authorize_url).unwrap(), binding: started.binding };
    *idp.nonce.borrow_mut() = b.param("nonce");
    b
}

pub(crate) fn finish(w: &World, rng: &mut TestRandom, idp: &FakeIdp, now: i64, b: &Begun) -> CallbackOutcome {
    let (deps, meta) = w.at(now);
    idp.now.set(now);
    let q = CallbackQuery { code: Some("provider-code".into()), state: Some(b.param("state")), error: None, iss: None };
    block_on(deps.oauth_callback(&meta, rng, idp, "idp", q, Some(&b.binding))).unwrap()
}

pub(crate) fn sign_in(w: &World, rng: &mut TestRandom, idp: &FakeIdp, now: i64, claims: Value) -> CallbackOutcome {
    *idp.claims.borrow_mut() = claims;
    let b = begin(w, rng, idp, now, None);
    finish(w, rng, idp, now + 1, &b)
}

pub(crate) fn location_param(outcome: &CallbackOutcome, name: &str) -> Option<String> {
    let loc = match outcome {
        CallbackOutcome::SignedIn { location, .. }
        | CallbackOutcome::Linked { location }
        | CallbackOutcome::SecondStep { location } => location,
        CallbackOutcome::Failed { location: Some(location), .. } => location,
        CallbackOutcome::Failed { location: None, error } => panic!("no redirect: {error:?}"),
    };
    url::Url::parse(loc).unwrap().query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[test]
fn a_new_identity_creates_an_account_and_its_code_is_exchanged_once() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(3);
    let b = begin(&w, rng, &idp, 1_000, None);
    assert_eq!(b.param("code_challenge_method"), "S256");
    assert_eq!(b.param("redirect_uri"), "https://auth.test/auth/oauth/idp/callback");
    *idp.claims.borrow_mut() = json!({"sub": "s-1", "email": "Ada@Example.com", "email_verified": true, "name": "Ada"});
    let out = finish(&w, rng, &idp, 1_001, &b);
    let code = location_param(&out, "code").expect("a one-time code");
    assert!(matches!(out, CallbackOutcome::SignedIn { .. }));

    // The token request carried the verifier of the challenge, and client auth.
    let token_req = idp.requests.borrow().iter().find(|r| r.url.ends_with("/token")).cloned().unwrap();
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(token_req.form.unwrap().as_bytes()).into_owned().collect();
    assert_eq!(pkce_challenge(&form["code_verifier"]), b.param("code_challenge"));
    assert!(token_req.headers.iter().any(|(k, v)| k == "authorization" && v.starts_with("Basic ")));

    let ada = user(&w, "ada@example.com");
    assert!(ada.email_verified && ada.password_hash.is_none());
    assert_eq!(ada.name.as_deref(), Some("Ada"));
    assert_eq!(w.events.last_of("user_created")["provider"], "idp");
    assert_eq!(w.events.last_of("login")["provider"], "idp");
    assert_eq!(w.events.count("oauth_link"), 0);

    // Stored sealed: the row holds no token.
    let sealed = w.store.oauth.borrow().exchanges[0].1.clone();
    let (deps, meta) = w.at(1_010);
    let auth = block_on(
        deps.oauth_exchange(&meta, ExchangeRequest { code: code.clone(), code_verifier: Some(APP_VERIFIER.into()) }),
    )
    .done()
    .unwrap();
    assert!(!sealed.contains(&auth.access_token) && !sealed.contains(&auth.refresh_token));
    let body = serde_json::to_value(auth.body(&w.config)).unwrap();
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(
        (body["access_token"].as_str(), body["refresh_token"].as_str()),
        (Some(&*auth.access_token), Some(&*auth.refresh_token))
    );
    assert_eq!(
        code_of(block_on(
            deps.oauth_exchange(&meta, ExchangeRequest { code, code_verifier: Some(APP_VERIFIER.into()) })
        )),
        "invalid_exchange_code"
    );
}

#[test]
fn a_new_account_takes_the_providers_locale_claim_when_it_is_a_language_tag() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(31);
    for (n, (claim, stored)) in
        [(json!("en_US"), Some("en-US")), (json!("<b>"), None), (json!(7), None)].into_iter().enumerate()
    {
        let b = begin(&w, rng, &idp, 1_000, None);
        let email = format!("u{n}@example.com");
        *idp.claims.borrow_mut() =
            json!({"sub": format!("s-{n}"), "email": email, "email_verified": true, "locale": claim});
        assert!(matches!(finish(&w, rng, &idp, 1_001, &b), CallbackOutcome::SignedIn { .. }), "{claim}");
        assert_eq!(user(&w, &email).locale.as_deref(), stored, "{claim}");
    }
}

fn code_of<T: std::fmt::Debug>(r: std::result::Result<T, Error>) -> &'static str {
    code(r)
}

#[test]
fn exchange_codes_expire_after_a_minute() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(4);
    let out = sign_in(&w, rng, &idp, 1_000, json!({"sub": "s", "email": "e@example.com", "email_verified": true}));
    let code = location_param(&out, "code").unwrap();
    let (deps, meta) = w.at(1_001 + 61);
    assert_eq!(
        code_of(block_on(
            deps.oauth_exchange(&meta, ExchangeRequest { code, code_verifier: Some(APP_VERIFIER.into()) })
        )),
        "invalid_exchange_code"
    );
}

#[test]
fn a_verified_email_links_the_existing_account_and_an_unverified_one_never_does() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(5);
    let ada = signup_at(&w, rng, 900, "ada@example.com", "password-1");
    let out =
        sign_in(&w, rng, &idp, 1_000, json!({"sub": "s-ada", "email": "ada@example.com", "email_verified": false}));
    assert_eq!(location_param(&out, "error").as_deref(), Some("email_not_verified"));
    assert_eq!(w.events.last_of("login_failed")["reason"], "unverified_email");
    assert!(w.store.oauth.borrow().identities.is_empty());

    let out =
        sign_in(&w, rng, &idp, 1_100, json!({"sub": "s-ada", "email": "ada@example.com", "email_verified": "true"}));
    assert!(location_param(&out, "code").is_some());
    let link = w.events.last_of("oauth_link");
    assert_eq!((link["user_id"].as_str(), link["provider"].as_str()), (Some(ada.user.id.as_str()), Some("idp")));
    assert!(user(&w, "ada@example.com").email_verified, "the provider verified the address");
    // That was the first proof of the address: whoever signed up with it
    // before is out (see `takeover.rs`).
    assert_eq!(
        crate::support::login_at(&w, rng, 1_101, "ada@example.com", "password-1").unwrap_err(),
        Error::InvalidCredentials
    );
    let (deps, meta) = w.at(1_101);
    assert_eq!(code_of(block_on(deps.me(&meta, Some(&ada.access_token)))), "session_revoked");
}

#[test]
fn a_takeover_by_a_provider_gives_the_account_the_providers_profile() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(32);
    signup_at(&w, rng, 900, "ada@example.com", "password-1");
    {
        let mut users = w.store.users.borrow_mut();
        (users[0].name, users[0].locale) = (Some("Planter".into()), Some("de".into()));
    }
    let claims = json!({"sub": "s-ada", "email": "ada@example.com", "email_verified": true, "name": "Ada",
                        "picture": "https://idp.example/ada.png", "locale": "fr"});
    assert!(location_param(&sign_in(&w, rng, &idp, 1_000, claims), "code").is_some());
    let ada = user(&w, "ada@example.com");
    assert_eq!(
        (ada.name.as_deref(), ada.avatar_url.as_deref(), ada.locale.as_deref()),
        (Some("Ada"), Some("https://idp.example/ada.png"), Some("fr"))
    );
    assert_eq!(w.events.last_of("user_updated")["fields"], json!(["password", "name", "avatar_url"]));
}

#[test]
fn a_providers_picture_is_kept_only_under_the_avatar_rule() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(33);
    for (i, (picture, kept)) in [
        ("https://idp.example/a.png", true),
        ("http://idp.example/a.png", false),
        ("https://127.0.0.1/a.png", false),
        ("https://user:pw@idp.example/a.png", false),
        ("https://intranet/a.png", false),
    ]
    .into_iter()
    .enumerate()
    {
        let email = format!("p{i}@example.com");
        let claims = json!({"sub": format!("s-{i}"), "email": email, "email_verified": true, "picture": picture});
        assert!(location_param(&sign_in(&w, rng, &idp, 1_000 + i as i64, claims), "code").is_some());
        assert_eq!(user(&w, &email).avatar_url.is_some(), kept, "{picture}");
    }
}

#[test]
fn states_are_single_use_expire_and_belong_to_their_browser() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(6);
    *idp.claims.borrow_mut() = json!({"sub": "s", "email": "e@example.com", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_000, None);
    assert!(matches!(finish(&w, rng, &idp, 1_001, &b), CallbackOutcome::SignedIn { .. }));
    let replay = finish(&w, rng, &idp, 1_002, &b);
    assert!(
        matches!(&replay, CallbackOutcome::Failed { location: None, error } if error.problem().code == "invalid_state")
    );

    let late = begin(&w, rng, &idp, 2_000, None);
    let out = finish(&w, rng, &idp, 2_000 + STATE_TTL_SECS as i64, &late);
    assert!(matches!(out, CallbackOutcome::Failed { location: None, .. }));

    let mut other = begin(&w, rng, &idp, 3_000, None);
    other.binding = "someone-else".into();
    let out = finish(&w, rng, &idp, 3_001, &other);
    assert!(
        matches!(&out, CallbackOutcome::Failed { location: None, error } if error.problem().code == "invalid_state"),
        "{out:?}"
    );
    assert_eq!(w.events.last_of("login_failed")["reason"], "state_binding_mismatch");
}

fn callback_with(
    w: &World,
    rng: &mut TestRandom,
    idp: &FakeIdp,
    now: i64,
    b: &Begun,
    binding: Option<&str>,
) -> CallbackOutcome {
    let (deps, meta) = w.at(now);
    idp.now.set(now);
    let q = CallbackQuery { code: Some("provider-code".into()), state: Some(b.param("state")), error: None, iss: None };
    block_on(deps.oauth_callback(&meta, rng, idp, "idp", q, binding)).unwrap()
}

#[test]
fn a_callback_without_the_browsers_binding_is_refused_and_leaves_the_state_to_that_browser() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(14);
    *idp.claims.borrow_mut() = json!({"sub": "s-bind", "email": "bind@example.com", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_000, None);
    let elsewhere = begin(&w, rng, &idp, 1_000, None);
    for (i, binding) in [None, Some("forged-binding"), Some(elsewhere.binding.as_str())].into_iter().enumerate() {
        let out = callback_with(&w, rng, &idp, 1_001, &b, binding);
        assert!(
            matches!(&out, CallbackOutcome::Failed { location: None, error } if error.problem().code == "invalid_state"),
            "binding {i}: {out:?}"
        );
        assert_eq!(w.events.last_of("login_failed")["reason"], "state_binding_mismatch", "binding {i}");
        assert_eq!(w.store.oauth.borrow().states.len(), 2, "binding {i}: nothing was spent");
    }
    assert!(!idp.requests.borrow().iter().any(|r| r.url.ends_with("/token")), "the code never left");

    // The browser that started the sign-in still finishes it, once (the
    // provider's ID token carries that sign-in's nonce).
    *idp.nonce.borrow_mut() = b.param("nonce");
    let out = finish(&w, rng, &idp, 1_002, &b);
    assert!(location_param(&out, "code").is_some(), "{out:?}");
    assert_eq!(w.events.count("login"), 1);
    let replay = finish(&w, rng, &idp, 1_003, &b);
    assert!(matches!(replay, CallbackOutcome::Failed { location: None, .. }));
    assert_eq!(w.events.last_of("login_failed")["reason"], "invalid_state");
    // The other sign-in in progress was never touched either.
    assert_eq!(w.store.oauth.borrow().states.len(), 1);
    *idp.nonce.borrow_mut() = elsewhere.param("nonce");
    assert!(location_param(&finish(&w, rng, &idp, 1_004, &elsewhere), "code").is_some());
}

#[test]
fn in_cookie_mode_the_callback_issues_no_code_and_the_exchange_is_refused() {
    let providers = json!([{"id": "idp", "issuer": IDP, "client_id": CLIENT}]).to_string();
    let vars = [
        ("OAUTH_PROVIDERS", providers.as_str()),
        ("OAUTH_IDP_CLIENT_SECRET", "shh"),
        ("REDIRECT_ALLOWLIST", "https://app.test/done"),
        ("COOKIE_MODE", "true"),
    ];
    for body_tokens in [None, Some("false")] {
        let mut vars = vars.to_vec();
        vars.extend(body_tokens.map(|v| ("COOKIE_MODE_BODY_TOKENS", v)));
        let w = World::new(&vars);
        let idp = FakeIdp::default();
        let rng = &mut TestRandom(15);
        *idp.claims.borrow_mut() = json!({"sub": "s-c", "email": "c@example.com", "email_verified": true});
        let b = begin(&w, rng, &idp, 1_000, None);
        let out = finish(&w, rng, &idp, 1_001, &b);
        // Back to the app with nothing in the URL to steal: the answer's cookies carry the session.
        let CallbackOutcome::SignedIn { location, auth } = &out else { panic!("{out:?}") };
        assert_eq!(location, "https://app.test/done", "{body_tokens:?}");
        assert_eq!(w.store.oauth.borrow().exchanges.len(), 0, "no exchange stored");
        let (deps, meta) = w.at(1_002);
        assert!(block_on(deps.me_with_providers(&meta, Some(&auth.access_token))).is_ok());
        // Any exchange is refused, with a problem that says why.
        let err = block_on(deps.oauth_exchange(&meta, ExchangeRequest { code: "a".repeat(43), code_verifier: None }))
            .unwrap_err();
        let p = err.problem();
        assert_eq!((p.status, p.code), (400, "invalid_exchange_code"));
        assert!(p.detail.contains("cookie mode"), "{}", p.detail);
    }
}

/// Cookie mode that still puts the tokens in bodies (`COOKIE_MODE_BODY_TOKENS`).
fn body_tokens_world() -> World {
    world_with(&[("COOKIE_MODE", "true"), ("COOKIE_MODE_BODY_TOKENS", "true")])
}

#[test]
fn in_cookie_mode_with_body_tokens_the_code_is_exchanged_for_the_tokens_as_before() {
    let w = body_tokens_world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(16);
    let out = sign_in(&w, rng, &idp, 1_000, json!({"sub": "s-c", "email": "c@example.com", "email_verified": true}));
    let code = location_param(&out, "code").unwrap();
    let (deps, meta) = w.at(1_002);
    let auth = block_on(deps.oauth_exchange(&meta, ExchangeRequest { code, code_verifier: Some(APP_VERIFIER.into()) }))
        .done()
        .unwrap();
    let body: Value = serde_json::to_value(auth.body(&w.config)).unwrap();
    assert_eq!(body["user"]["email"], "c@example.com");
    assert_eq!(body["access_token"].as_str(), Some(auth.access_token.as_str()));
    assert_eq!(body["refresh_token"].as_str(), Some(auth.refresh_token.as_str()));
}

#[test]
fn id_tokens_are_checked_before_anyone_is_signed_in() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(7);
    let good = json!({"sub": "s", "email": "e@example.com", "email_verified": true});
    idp.bad_signature.set(true);
    let out = sign_in(&w, rng, &idp, 1_000, good.clone());
    assert_eq!(location_param(&out, "error").as_deref(), Some("invalid_id_token"));
    assert_eq!(w.events.last_of("login_failed")["reason"], "id_token_bad_signature");
    idp.bad_signature.set(false);
    for (patch, reason) in [
        (json!({"nonce": "replayed"}), "id_token_nonce_mismatch"),
        (json!({"aud": "other"}), "id_token_wrong_audience"),
        (json!({"iss": "https://evil.test"}), "id_token_wrong_issuer"),
    ] {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let out = sign_in(&w, rng, &idp, 1_100, claims);
        assert_eq!(location_param(&out, "error").as_deref(), Some("invalid_id_token"), "{reason}");
        assert_eq!(w.events.last_of("login_failed")["reason"], reason);
    }
    assert!(w.store.users.borrow().is_empty());
    assert!(w.store.sessions.borrow().is_empty());
}

#[test]
fn a_callback_naming_another_issuer_is_refused_before_the_code_is_used() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(12);
    *idp.claims.borrow_mut() = json!({"sub": "s", "email": "e@example.com", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_000, None);
    let (deps, meta) = w.at(1_001);
    idp.now.set(1_001);
    let q = CallbackQuery {
        code: Some("c".into()),
        state: Some(b.param("state")),
        error: None,
        iss: Some("https://mix-up.test".into()),
    };
    let out = block_on(deps.oauth_callback(&meta, rng, &idp, "idp", q, Some(&b.binding))).unwrap();
    assert_eq!(location_param(&out, "error").as_deref(), Some("issuer_mismatch"));
    assert!(!idp.requests.borrow().iter().any(|r| r.url.ends_with("/token")), "the code never left");

    let b = begin(&w, rng, &idp, 1_100, None);
    let q = CallbackQuery {
        code: Some("c".into()),
        state: Some(b.param("state")),
        error: None,
        iss: Some(format!("{IDP}/")),
    };
    let out = block_on(deps.oauth_callback(&meta, rng, &idp, "idp", q, Some(&b.binding))).unwrap();
    assert!(location_param(&out, "code").is_some(), "its own issuer is fine");
}

#[test]
fn a_rotated_provider_key_is_fetched_at_most_once_a_minute() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(13);
    let jwks_fetches = || idp.requests.borrow().iter().filter(|r| r.url.ends_with("/jwks")).count();
    let claims = json!({"sub": "s-rot", "email": "rot@example.com", "email_verified": true});
    assert!(location_param(&sign_in(&w, rng, &idp, 1_000, claims.clone()), "code").is_some());
    assert_eq!(jwks_fetches(), 1);
    assert!(location_param(&sign_in(&w, rng, &idp, 1_010, claims.clone()), "code").is_some());
    assert_eq!(jwks_fetches(), 1, "the JWKS is cached");

    // The provider rotates to k2: a token naming it soon after the last fetch is
    // refused without a refetch (no JWKS flood from forged kids) ...
    *idp.kid.borrow_mut() = Some("k2".into());
    *idp.published.borrow_mut() = Some(vec!["k1".into(), "k2".into()]);
    let out = sign_in(&w, rng, &idp, 1_030, claims.clone());
    assert_eq!(location_param(&out, "error").as_deref(), Some("invalid_id_token"));
    assert_eq!(w.events.last_of("login_failed")["reason"], "id_token_unknown_key");
    assert_eq!(jwks_fetches(), 1);
    // ... and a minute later it is fetched again and the new key works.
    assert!(location_param(&sign_in(&w, rng, &idp, 1_070, claims), "code").is_some());
    assert_eq!(jwks_fetches(), 2);
}

#[test]
fn a_missing_email_comes_from_userinfo_whose_subject_must_match() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(8);
    *idp.userinfo.borrow_mut() = json!({"sub": "s-9", "email": "info@example.com", "email_verified": true});
    let out = sign_in(&w, rng, &idp, 1_000, json!({"sub": "s-9"}));
    assert!(location_param(&out, "code").is_some());
    assert!(user(&w, "info@example.com").email_verified);
    let ui = idp.requests.borrow().iter().find(|r| r.url.ends_with("/userinfo")).cloned().unwrap();
    assert!(ui.headers.contains(&("authorization".into(), "Bearer idp-at".into())));

    *idp.userinfo.borrow_mut() = json!({"sub": "someone-else", "email": "x@example.com", "email_verified": true});
    let out = sign_in(&w, rng, &idp, 1_100, json!({"sub": "s-10"}));
    assert_eq!(location_param(&out, "error").as_deref(), Some("provider_unavailable"));
}

#[test]
fn provider_failures_are_502_or_a_redirect_with_login_failed() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(9);
    idp.down.set(true);
    let (deps, meta) = w.at(1_000);
    let challenge = pkce_challenge(APP_VERIFIER);
    let c = Some(challenge.as_str());
    let err = block_on(deps.oauth_authorize(&meta, rng, &idp, "idp", AuthorizeRequest::default(), c)).unwrap_err();
    assert_eq!((err.problem().status, err.problem().code), (502, "provider_unavailable"));
    let err = block_on(deps.oauth_authorize(&meta, rng, &idp, "nope", AuthorizeRequest::default(), c)).unwrap_err();
    assert_eq!((err.problem().status, err.problem().code), (404, "unknown_provider"));
    idp.down.set(false);
    let bad = AuthorizeRequest { redirect_to: Some("https://app.test.evil.test/".into()) };
    assert_eq!(code_of(block_on(deps.oauth_authorize(&meta, rng, &idp, "idp", bad, c))), "invalid_redirect");

    *idp.token_reply.borrow_mut() = Some(HttpReply { status: 400, body: r#"{"error":"invalid_grant"}"#.into() });
    let out = sign_in(&w, rng, &idp, 1_100, json!({}));
    assert_eq!(location_param(&out, "error").as_deref(), Some("code_rejected"));
    *idp.token_reply.borrow_mut() = Some(HttpReply { status: 302, body: String::new() });
    let out = sign_in(&w, rng, &idp, 1_150, json!({}));
    assert_eq!(location_param(&out, "error").as_deref(), Some("provider_unavailable"), "a redirect is no answer");
    *idp.token_reply.borrow_mut() = Some(HttpReply { status: 502, body: "<html>".into() });
    let out = sign_in(&w, rng, &idp, 1_200, json!({}));
    assert_eq!(location_param(&out, "error").as_deref(), Some("provider_unavailable"));
    assert_eq!(w.events.last_of("login_failed")["reason"], "provider_unavailable");
    let warnings = idp.warnings.borrow();
    assert!(warnings.iter().any(|w| w.contains("invalid_grant")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("HTTP 502")), "{warnings:?}");
}

#[test]
fn linking_unlinking_and_the_last_way_to_sign_in() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(10);
    let pw = signup_at(&w, rng, 900, "pw@example.com", "password-1");
    *idp.claims.borrow_mut() = json!({"sub": "s-link", "email": "elsewhere@example.com", "email_verified": false});
    let b = begin(&w, rng, &idp, 1_000, Some(&pw.access_token));
    let out = finish(&w, rng, &idp, 1_001, &b);
    assert_eq!(location_param(&out, "linked").as_deref(), Some("idp"));
    assert_eq!(w.events.last_of("oauth_link")["user_id"], pw.user.id.as_str());

    // The same identity for another account: refused.
    let other = signup_at(&w, rng, 1_100, "other@example.com", "password-2");
    let b = begin(&w, rng, &idp, 1_200, Some(&other.access_token));
    let out = finish(&w, rng, &idp, 1_201, &b);
    assert_eq!(location_param(&out, "error").as_deref(), Some("identity_linked_elsewhere"));

    // An OAuth-only account cannot drop its only provider; a password account can.
    let solo =
        sign_in(&w, rng, &idp, 1_300, json!({"sub": "s-solo", "email": "solo@example.com", "email_verified": true}));
    let code = location_param(&solo, "code").unwrap();
    let (deps, meta) = w.at(1_301);
    let auth = block_on(deps.oauth_exchange(&meta, ExchangeRequest { code, code_verifier: Some(APP_VERIFIER.into()) }))
        .done()
        .unwrap();
    let solo_token = auth.access_token;
    assert_eq!(code_of(block_on(deps.oauth_unlink(&meta, Some(&solo_token), "idp"))), "last_sign_in_method");
    let me = block_on(deps.me_with_providers(&meta, Some(&solo_token))).unwrap();
    assert_eq!(me.providers.len(), 1);
    assert_eq!(me.providers[0].provider, "idp");
    block_on(deps.oauth_unlink(&meta, Some(&pw.access_token), "idp")).unwrap();
    assert_eq!(code_of(block_on(deps.oauth_unlink(&meta, Some(&pw.access_token), "idp"))), "not_linked");
}

#[test]
fn banned_accounts_are_refused_and_storage_failures_fail_closed() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(11);
    let claims = json!({"sub": "s-b", "email": "b@example.com", "email_verified": true});
    assert!(location_param(&sign_in(&w, rng, &idp, 1_000, claims.clone()), "code").is_some());
    w.store.users.borrow_mut().iter_mut().for_each(|u| u.banned = true);
    let out = sign_in(&w, rng, &idp, 1_100, claims.clone());
    assert_eq!(location_param(&out, "error").as_deref(), Some("account_banned"));
    assert_eq!(w.events.last_of("login_failed")["reason"], "banned");

    *idp.claims.borrow_mut() = claims;
    let b = begin(&w, rng, &idp, 1_200, None);
    *w.store.fail.borrow_mut() = true;
    let (deps, meta) = w.at(1_201);
    let q = CallbackQuery { code: Some("c".into()), state: Some(b.param("state")), error: None, iss: None };
    let err = block_on(deps.oauth_callback(&meta, rng, &idp, "idp", q, Some(&b.binding))).unwrap_err();
    assert_eq!(err.problem().status, 503);
}

#[test]
fn the_callback_lives_under_auth_prefix_at_authorize_and_at_the_token_request() {
    let w = world_with(&[("AUTH_PREFIX", "/identity/v1")]);
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(41);
    let b = begin(&w, rng, &idp, 1_000, None);
    assert_eq!(b.param("redirect_uri"), "https://auth.test/identity/v1/oauth/idp/callback");
    *idp.claims.borrow_mut() = json!({"sub": "s-9", "email": "lin@example.com", "email_verified": true});
    assert!(matches!(finish(&w, rng, &idp, 1_001, &b), CallbackOutcome::SignedIn { .. }));
    let token_req = idp.requests.borrow().iter().find(|r| r.url.ends_with("/token")).cloned().unwrap();
    let form: HashMap<String, String> =
        url::form_urlencoded::parse(token_req.form.unwrap().as_bytes()).into_owned().collect();
    assert_eq!(form["redirect_uri"], "https://auth.test/identity/v1/oauth/idp/callback");
}

/// A sign-in through an identity its holder unlinks after the callback read
/// it (and before the session is written) gets no session: the session
/// insert requires the identity to still be linked to the account.
#[test]
fn a_sign_in_through_an_identity_unlinked_meanwhile_gets_no_session() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(16);
    let ada = signup_at(&w, rng, 900, "ada@example.com", "password-1");
    *idp.claims.borrow_mut() = json!({"sub": "s-ada", "email": "ada@elsewhere.example", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_000, Some(&ada.access_token));
    assert_eq!(location_param(&finish(&w, rng, &idp, 1_001, &b), "linked").as_deref(), Some("idp"));

    let store = w.store.clone();
    let (user_id, sid) = (ada.user.id.clone(), ada.user.session_id.clone().unwrap());
    *w.store.after_identity_read.borrow_mut() = Some(Box::new(move || {
        let caller = LiveSession { user_id: &user_id, session_id: &sid, now: UnixTime(1_100), max_age_secs: 7_776_000 };
        assert_eq!(block_on(store.unlink_identity(&caller, "idp")).unwrap(), Unlink::Done);
    }));
    let sessions_before = w.store.sessions.borrow().len();
    let out = sign_in(
        &w,
        rng,
        &idp,
        1_100,
        json!({"sub": "s-ada", "email": "ada@elsewhere.example", "email_verified": true}),
    );
    assert_eq!(location_param(&out, "error").as_deref(), Some("account_changed"), "{out:?}");
    assert_eq!(w.store.sessions.borrow().len(), sessions_before, "no session was written");
    assert_eq!(w.events.last_of("login_failed")["reason"], "account_changed");
}

/// Unlinking is decided with the caller's session in the same write: a
/// request that authenticated just before its session was revoked (here by
/// the owner's password reset, which signs every session out) unlinks
/// nothing — not the owner's identity.
#[test]
fn an_unlink_whose_session_is_revoked_meanwhile_unlinks_nothing() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(17);
    let ada = signup_at(&w, rng, 900, "ada@example.com", "password-1");
    *idp.claims.borrow_mut() = json!({"sub": "s-ada", "email": "ada@example.com", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_000, Some(&ada.access_token));
    assert_eq!(location_param(&finish(&w, rng, &idp, 1_001, &b), "linked").as_deref(), Some("idp"));
    let stolen = crate::support::login_at(&w, rng, 1_002, "ada@example.com", "password-1").unwrap();

    let store = w.store.clone();
    let user_id = ada.user.id.clone();
    *w.store.after_session_read.borrow_mut() = Some(Box::new(move || {
        let reset = AddressProof {
            user_id: &user_id,
            email: "ada@example.com",
            link: None,
            new_password: Some("the owner's new hash"),
            profile: Default::default(),
            now: UnixTime(1_100),
        };
        assert!(block_on(store.prove_address(&reset)).unwrap().unwrap().revoked_sessions >= 2);
    }));
    let (deps, meta) = w.at(1_100);
    assert_eq!(code_of(block_on(deps.oauth_unlink(&meta, Some(&stolen.access_token), "idp"))), "session_revoked");
    assert_eq!(w.store.oauth.borrow().linked().len(), 1, "the owner's identity is still linked");
}

/// A hosted-page sign-in's code, issued with the app's `code_challenge`, is
/// swapped only with its `code_verifier`: a code an attacker got for their
/// own account cannot be planted in a victim's app (login CSRF). It is spent
/// by a refused attempt too.
#[test]
fn a_code_bound_to_a_challenge_is_swapped_only_with_its_verifier() {
    let w = world();
    let rng = &mut TestRandom(9);
    let auth = signup_at(&w, rng, 1_000, "pkce@example.com", "correct horse battery staple 9");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = CodeChallenge::parse(&pkce_challenge(verifier)).unwrap();
    let (deps, meta) = w.at(1_001);
    let issue = |rng: &mut TestRandom| {
        let loc = block_on(deps.signed_in_location(&meta, rng, "https://app.test/", &auth, Some(&challenge))).unwrap();
        let url = url::Url::parse(&loc).unwrap();
        url.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).unwrap()
    };
    let other = "x".repeat(43);
    for wrong in [None, Some(other.as_str()), Some(""), Some(&verifier[1..])] {
        let code = issue(rng);
        let req = ExchangeRequest { code: code.clone(), code_verifier: wrong.map(str::to_string) };
        assert_eq!(code_of(block_on(deps.oauth_exchange(&meta, req))), "invalid_exchange_code", "{wrong:?}");
        // Spent: the right verifier does not revive it.
        let req = ExchangeRequest { code, code_verifier: Some(verifier.into()) };
        assert_eq!(code_of(block_on(deps.oauth_exchange(&meta, req))), "invalid_exchange_code");
    }
    let code = issue(rng);
    let got = block_on(deps.oauth_exchange(&meta, ExchangeRequest { code, code_verifier: Some(verifier.into()) }))
        .done()
        .unwrap();
    assert_eq!(got.user.email, "pkce@example.com");
    assert_eq!(got.access_token, auth.access_token);
    // An unbound code (one whose sign-in started before challenges were
    // required) is not the code of an app that sends a verifier: refused, spent.
    let unbound = |rng: &mut TestRandom| {
        let loc = block_on(deps.signed_in_location(&meta, rng, "https://app.test/", &auth, None)).unwrap();
        let url = url::Url::parse(&loc).unwrap();
        url.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).unwrap()
    };
    let code = unbound(rng);
    let req = ExchangeRequest { code: code.clone(), code_verifier: Some(verifier.into()) };
    assert_eq!(code_of(block_on(deps.oauth_exchange(&meta, req))), "invalid_exchange_code");
    let req = ExchangeRequest { code, code_verifier: None };
    assert_eq!(code_of(block_on(deps.oauth_exchange(&meta, req))), "invalid_exchange_code", "spent");
    let req = ExchangeRequest { code: unbound(rng), code_verifier: None };
    assert!(block_on(deps.oauth_exchange(&meta, req)).is_ok(), "without a verifier, as before");
}

/// A sign-in started at `/authorize` with the app's `code_challenge` gives a
/// code swapped only with that app's `code_verifier`: the code an attacker
/// gets by finishing their own sign-in, planted in a victim's app (whose
/// verifier is its own), signs nobody in, and is spent (login CSRF).
#[test]
fn an_authorize_code_is_bound_to_the_apps_challenge_and_a_planted_one_signs_nobody_in() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(31);
    let who = json!({"sub": "s-mallory", "email": "mallory@example.com", "email_verified": true});
    let victims_verifier = "victim-verifier-0123456789-0123456789-abcdefgh";
    for wrong in [None, Some(victims_verifier), Some("")] {
        let code = location_param(&sign_in(&w, rng, &idp, 1_000, who.clone()), "code").unwrap();
        let (deps, meta) = w.at(1_002);
        let req = ExchangeRequest { code: code.clone(), code_verifier: wrong.map(str::to_string) };
        assert_eq!(code_of(block_on(deps.oauth_exchange(&meta, req))), "invalid_exchange_code", "{wrong:?}");
        let req = ExchangeRequest { code, code_verifier: Some(APP_VERIFIER.into()) };
        assert_eq!(code_of(block_on(deps.oauth_exchange(&meta, req))), "invalid_exchange_code", "spent");
    }
    let code = location_param(&sign_in(&w, rng, &idp, 1_010, who), "code").unwrap();
    let (deps, meta) = w.at(1_012);
    let auth = block_on(deps.oauth_exchange(&meta, ExchangeRequest { code, code_verifier: Some(APP_VERIFIER.into()) }))
        .done()
        .unwrap();
    assert_eq!(auth.user.email, "mallory@example.com");
    // The app's challenge is the app's, not the gateway's own PKCE with the provider.
    let b = begin(&w, rng, &idp, 1_020, None);
    assert_ne!(b.param("code_challenge"), pkce_challenge(APP_VERIFIER));
    assert_eq!(
        w.store.oauth.borrow().states().last().unwrap().code_challenge,
        CodeChallenge::parse(&pkce_challenge(APP_VERIFIER))
    );
}

/// Token mode: `/authorize` without the app's challenge (or with a malformed
/// one) is refused before anything is stored or the provider is asked, as the
/// hosted pages refuse it. Cookie mode is unchanged: no challenge needed.
#[test]
fn in_token_mode_authorize_needs_the_apps_challenge_and_in_cookie_mode_it_does_not() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(32);
    let (deps, meta) = w.at(1_000);
    let req = || AuthorizeRequest { redirect_to: Some(APP.into()) };
    for asked in [None, Some(""), Some("too-short"), Some(&pkce_challenge(APP_VERIFIER)[1..])] {
        let err = block_on(deps.oauth_authorize(&meta, rng, &idp, "idp", req(), asked)).unwrap_err();
        let p = err.problem();
        assert_eq!((p.status, p.code), (400, "invalid_code_challenge"), "{asked:?}");
    }
    assert!(w.store.oauth.borrow().states().is_empty(), "nothing stored");
    assert!(idp.requests.borrow().is_empty(), "the provider was not asked");

    let cookie = world_with(&[("COOKIE_MODE", "true")]);
    let (deps, meta) = cookie.at(1_000);
    let started = block_on(deps.oauth_authorize(&meta, rng, &idp, "idp", req(), None)).unwrap();
    assert!(started.authorize_url.starts_with("https://idp.test/authorize?"));
    assert_eq!(cookie.store.oauth.borrow().states()[0].code_challenge, None);
}

/// Cookie mode with COOKIE_MODE_BODY_TOKENS issues codes, so it needs the
/// app's challenge like token mode: an attacker cannot start a sign-in
/// without one and plant its code in a victim's app.
#[test]
fn with_body_tokens_in_cookie_mode_a_code_needs_the_apps_challenge() {
    let w = body_tokens_world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(77);
    let (deps, meta) = w.at(1_000);
    let req = AuthorizeRequest { redirect_to: Some(APP.into()) };
    let refused = block_on(deps.oauth_authorize(&meta, rng, &idp, "idp", req, None)).map(|_| ());
    assert_eq!(code(refused), "invalid_code_challenge");
}

/// SECURITY 50: a stolen, long-ago session could link the thief's own
/// provider identity, sign in through it (a fresh `auth_time`) and turn TOTP
/// on, locking the owner out. Linking needs a recent sign-in too.
#[test]
fn a_stale_session_cannot_link_an_identity_whose_fresh_sign_ins_would_turn_totp_on() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(77);
    let owner = signup_at(&w, rng, 1_000, "owner@example.com", "password-1");
    // Days later, the stolen session is far too old to enrol TOTP directly…
    let later = 1_000 + 3 * 86_400;
    let (deps, meta) = w.at(later);
    let stolen = block_on(deps.refresh(&meta, rng, Some(&owner.refresh_token))).unwrap();
    let e = block_on(deps.enroll_totp(&meta, rng, Some(&stolen.access_token))).unwrap_err();
    assert_eq!(e.problem().code, "reauthentication_required");
    // … and to link an identity.
    let req = AuthorizeRequest { redirect_to: Some(APP.into()) };
    let e = block_on(deps.oauth_link_start(&meta, rng, &idp, Some(&stolen.access_token), "idp", req)).map(|_| ());
    let p = e.unwrap_err().problem();
    assert_eq!((p.status, p.code), (403, "reauthentication_required"));
    // A sign-in of five minutes ago links (the limit included).
    let fresh = crate::support::login_at(&w, rng, later - 300, "owner@example.com", "password-1").unwrap();
    *idp.claims.borrow_mut() = json!({"sub": "owner-gh", "email": "owner@example.com", "email_verified": true});
    let b = begin(&w, rng, &idp, later, Some(&fresh.access_token));
    let out = finish(&w, rng, &idp, later + 1, &b);
    assert_eq!(location_param(&out, "linked").as_deref(), Some("idp"));
}

/// A link belongs to the session that started it: signing that session out
/// (logout, revoke-others: no epoch moves) stops the link in progress.
#[test]
fn a_link_started_by_a_session_since_signed_out_does_not_complete() {
    let w = world();
    let idp = FakeIdp::default();
    let rng = &mut TestRandom(78);
    let owner = signup_at(&w, rng, 1_000, "owner@example.com", "password-1");
    *idp.claims.borrow_mut() = json!({"sub": "thief", "email": "thief@evil.example", "email_verified": true});
    let b = begin(&w, rng, &idp, 1_010, Some(&owner.access_token));
    let (deps, meta) = w.at(1_020);
    block_on(deps.logout(&meta, rng, Some(&owner.access_token), None)).unwrap();
    let out = finish(&w, rng, &idp, 1_030, &b);
    assert_eq!(location_param(&out, "linked"), None);
    assert_eq!(location_param(&out, "error").as_deref(), Some("session_revoked"));
    assert!(w.store.oauth.borrow().linked().iter().all(|i| i.subject != "thief"), "nothing linked");
    assert_eq!(w.events.last_of("login_failed")["reason"], "session_revoked");
    // With the session still live, the same link completes.
    let again = crate::support::login_at(&w, rng, 1_040, "owner@example.com", "password-1").unwrap();
    let b = begin(&w, rng, &idp, 1_050, Some(&again.access_token));
    assert_eq!(location_param(&finish(&w, rng, &idp, 1_060, &b), "linked").as_deref(), Some("idp"));
}
