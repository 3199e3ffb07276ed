//! Sign-in and account linking with OAuth / OIDC providers.
//!
//! `/authorize` stores a short-lived, single-use state (PKCE verifier, nonce,
//! the checked `redirect_to`, the linking user) and sends the browser to the
//! provider. The callback consumes the state, swaps the code for tokens,
//! verifies the ID token (or asks GitHub's API), and then: a linked identity
//! signs its user in; a provider-verified email matching an account links to
//! it, taking an unverified account over ([`crate::core::takeover`]); an
//! unverified one never does; otherwise a new account is made. The
//! browser returns to `redirect_to` with a one-time `code` the app swaps for
//! tokens at `/auth/oauth/exchange` — tokens never travel in a URL. In
//! cookie mode (without `COOKIE_MODE_BODY_TOKENS`) the callback's answer
//! sets the session cookies itself and the browser returns without a code:
//! a code in the app's URL would hand the session (as `Set-Cookie`) to
//! whoever read it there, so there is none, and the exchange is refused.
//!
//! For an account with a second factor on, the sign-in stops before the
//! session (see [`crate::core::mfa`]): the exchange answers the second step
//! (`{"mfa_required": true, "mfa_token", "methods"}`) instead of tokens; in
//! cookie mode the callback sets no cookies and returns the browser to
//! `redirect_to#mfa_token=…&methods=totp,backup_code` — in the fragment,
//! which no server and no `Referer` sees; the token is worth nothing without
//! the second factor.

use serde::{Deserialize, Serialize};

use crate::core::amr::Amr;
use crate::core::config::Config;
use crate::core::email_address::Email;
use crate::core::error::{Error, TokenError};
use crate::core::events::{self, Event};
use crate::core::flows::account::{
    banned, login_event, login_failed_event, parse_avatar_url, parse_name, signin_refusal, ProfileRequest,
};
use crate::core::flows::{AuthResponse, Deps, Meta, Principal, SignIn};
use crate::core::ids::{self, Random, SessionId, UserId};
use crate::core::locale::Locale;
use crate::core::mfa::FactorsView;
use crate::core::oauth::idtoken::Identity;
use crate::core::oauth::provider::{self, AuthorizeParams, ProviderFailure};
use crate::core::oauth::{
    self as oauth, CodeChallenge, LinkedIdentity, OAuthState, OAuthStore, ProviderConfig, ProviderKind, ProviderNet,
    StateTake, Unlink, EXCHANGE_TTL_SECS, STATE_TTL_SECS,
};
use crate::core::ports::{AccountStore, EventSink, KeyRing, MfaStore, SessionStore, UserStore};
use crate::core::session::{LiveSession, SignInBasis};
use crate::core::takeover::{AddressProof, ProverProfile};
use crate::core::users::{User, UserResponse};

/// Longest `state`, `code` or `error` parameter looked at.
const MAX_PARAM_LEN: usize = 2048;

fn oauth_error(status: u16, code: &'static str, detail: impl Into<String>) -> Error {
    Error::OAuth { status, code, detail: detail.into() }
}

/// 404 `unknown_provider`.
pub fn unknown_provider() -> Error {
    oauth_error(404, "unknown_provider", "no OAuth provider with this id is configured")
}

fn invalid_state() -> Error {
    oauth_error(400, "invalid_state", "the sign-in state is unknown, already used or expired; start again")
}

/// The parameters of `/authorize` and `POST /link`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeRequest {
    /// Where the browser returns; the first `REDIRECT_ALLOWLIST` entry if absent.
    #[serde(default)]
    pub redirect_to: Option<String>,
}

/// What [`Deps::start_oauth`] starts.
enum Start<'u, 's> {
    /// A sign-in, with the app's `code_challenge` as asked.
    SignIn(Option<&'s str>),
    /// A link to this signed-in caller's account.
    Link(&'u User, LiveSession<'s>),
}

/// A started sign-in: where to send the browser, and the value of the
/// binding cookie to set on it.
#[derive(Debug, Clone)]
pub struct Started {
    /// The provider's authorization URL.
    pub authorize_url: String,
    /// The raw binding cookie value.
    pub binding: String,
}

/// The query of the callback, as the provider sent it.
#[derive(Debug, Default, Clone)]
pub struct CallbackQuery {
    /// Authorization code.
    pub code: Option<String>,
    /// Our `state`.
    pub state: Option<String>,
    /// The provider's `error` (e.g. `access_denied`).
    pub error: Option<String>,
    /// RFC 9207 `iss`, if the provider sends it.
    pub iss: Option<String>,
}

/// How a callback ends.
#[derive(Debug)]
pub enum CallbackOutcome {
    /// Signed in: go to `location` — with the one-time `code`, except in
    /// cookie mode without body tokens, where this answer's cookies carry
    /// the session and there is no code.
    SignedIn {
        /// `redirect_to?code=…`, or `redirect_to` (cookie mode).
        location: String,
        /// The session's tokens (for cookie mode).
        auth: Box<AuthResponse>,
    },
    /// The account has a second factor on: no session, no cookies; go to
    /// `location` — `?code=…` (the exchange answers the second step), or in
    /// cookie mode `#mfa_token=…&methods=…`.
    SecondStep {
        /// Where the browser returns.
        location: String,
    },
    /// A signed-in user linked a provider: go to `location` (`?linked=<id>`).
    Linked {
        /// `redirect_to?linked=…`.
        location: String,
    },
    /// Refused: go to `location` (`?error=<code>`) when the state was valid,
    /// else answer with the problem.
    Failed {
        /// `redirect_to?error=…`, when known.
        location: Option<String>,
        /// The refusal.
        error: Error,
    },
}

/// `POST /auth/oauth/exchange`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The one-time code from the redirect.
    pub code: String,
    /// The PKCE verifier of the `code_challenge` the app passed when it
    /// started the sign-in (required for a code issued with one).
    #[serde(default)]
    pub code_verifier: Option<String>,
}

/// A linked provider as `/auth/me` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderView {
    /// Provider id.
    pub provider: String,
    /// The email the provider reported when it was linked.
    pub email: Option<String>,
    /// Whether the provider said it verified that email.
    pub email_verified: bool,
    /// When it was linked (RFC 3339).
    pub linked_at: String,
}

impl From<LinkedIdentity> for ProviderView {
    fn from(i: LinkedIdentity) -> Self {
        Self {
            provider: i.provider,
            email: i.email,
            email_verified: i.email_verified,
            linked_at: i.linked_at.rfc3339(),
        }
    }
}

/// `GET /auth/me` with the caller's linked providers.
#[derive(Debug, Serialize)]
pub struct MeResponse {
    /// The user.
    #[serde(flatten)]
    pub user: UserResponse,
    /// Linked provider identities, oldest first.
    pub providers: Vec<ProviderView>,
    /// How this session's user signed in (RFC 8176 values).
    pub amr: Amr,
    /// When they signed in (Unix seconds), kept across refreshes.
    pub auth_time: i64,
    /// The account's second factors.
    pub mfa: FactorsView,
    /// The language of the user's emails (a BCP 47 tag), if known.
    pub locale: Option<String>,
}

/// Query parameters the gateway sets on the return to the app; any copy of
/// them already in `redirect_to` is dropped, so nobody can plant their own
/// `code` ahead of ours (login CSRF).
const RESULT_PARAMS: [&str; 3] = ["code", "error", "linked"];

fn with_param(base: &str, key: &str, value: &str) -> String {
    result_url(base, Some((key, value)))
}

/// `base` without any of [`RESULT_PARAMS`], and with `result` appended.
fn result_url(base: &str, result: Option<(&str, &str)>) -> String {
    match url::Url::parse(base) {
        Ok(mut u) => {
            let kept: Vec<(String, String)> =
                u.query_pairs().into_owned().filter(|(k, _)| !RESULT_PARAMS.contains(&k.as_str())).collect();
            u.set_query(None);
            if !kept.is_empty() || result.is_some() {
                let mut q = u.query_pairs_mut();
                q.extend_pairs(kept);
                if let Some((key, value)) = result {
                    q.append_pair(key, value);
                }
            }
            u.into()
        }
        // Checked against the allowlist when stored; cannot happen.
        Err(_) => base.to_string(),
    }
}

fn callback_uri(config: &Config, meta: &Meta, provider: &str) -> String {
    config.auth_url(&meta.issuer, &format!("/oauth/{provider}/callback"))
}

/// The client's error for a provider failure; its cause goes to the log.
fn failure_error(net: &impl ProviderNet, provider: &str, f: &ProviderFailure) -> Error {
    match f {
        ProviderFailure::Unavailable(cause) => net.report(&format!("{provider}: {cause}")),
        ProviderFailure::CodeRejected(error) => {
            net.report(&format!("{provider}: the token endpoint refused the code: {error}"))
        }
        ProviderFailure::IdToken(e) => net.report(&format!("{provider}: ID token refused: {}", e.reason())),
    }
    failure_code(f)
}

fn failure_code(f: &ProviderFailure) -> Error {
    match f {
        ProviderFailure::Unavailable(_) => oauth_error(
            502,
            "provider_unavailable",
            "the sign-in provider could not be reached or gave an unusable answer",
        ),
        ProviderFailure::CodeRejected(_) => {
            oauth_error(400, "code_rejected", "the provider refused the authorization code; start again")
        }
        ProviderFailure::IdToken(_) => oauth_error(401, "invalid_id_token", "the provider's ID token was refused"),
    }
}

fn short(param: Option<String>) -> Option<String> {
    param.filter(|p| !p.is_empty() && p.len() <= MAX_PARAM_LEN)
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + OAuthStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    fn oauth_provider(&self, id: &str) -> Result<&ProviderConfig, Error> {
        self.config.oauth.provider(id).ok_or_else(unknown_provider)
    }

    /// Starts a sign-in with provider `id`, its exchange code bound to the
    /// app's `code_challenge` ([`CodeChallenge::from_app`]: required in
    /// token mode, 400 `invalid_code_challenge` without or malformed).
    pub async fn oauth_authorize(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        net: &impl ProviderNet,
        id: &str,
        req: AuthorizeRequest,
        code_challenge: Option<&str>,
    ) -> Result<Started, Error> {
        self.start_oauth(meta, rng, net, id, req, Start::SignIn(code_challenge)).await
    }

    /// Starts a sign-in (with the app's challenge as asked), or a link to
    /// the account of that signed-in caller as just read (stored only while
    /// the caller's session is live and that account's epoch stands; the
    /// link completes only while the epoch still stands).
    async fn start_oauth(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        net: &impl ProviderNet,
        id: &str,
        req: AuthorizeRequest,
        start: Start<'_, '_>,
    ) -> Result<Started, Error> {
        let p = self.oauth_provider(id)?;
        let allowlist = &self.config.oauth.redirect_allowlist;
        let redirect_to = match req.redirect_to.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => allowlist.check(r).map(String::from),
            None => allowlist.default_target().map(str::to_string),
        }
        .ok_or_else(|| oauth_error(400, "invalid_redirect", "redirect_to is not on REDIRECT_ALLOWLIST"))?;
        // Decided before the provider is asked: a sign-in whose code could
        // be planted elsewhere is never started. A link issues no code.
        let (code_challenge, link) = match start {
            Start::SignIn(asked) => (CodeChallenge::from_app(asked, self.config.tokens_in_body())?, None),
            Start::Link(user, caller) => (None, Some((user, caller))),
        };
        let endpoints = provider::endpoints(net, p, meta.now).await.map_err(|f| failure_error(net, &p.id, &f))?;
        let state = ids::secret_token(rng);
        let verifier = ids::secret_token(rng);
        let nonce = ids::secret_token(rng);
        let binding = ids::secret_token(rng);
        let url = provider::authorize_url(
            p,
            &endpoints,
            &AuthorizeParams {
                redirect_uri: &callback_uri(self.config, meta, &p.id),
                state: &state,
                nonce: &nonce,
                code_challenge: &oauth::pkce_challenge(&verifier),
            },
        )
        .map_err(|f| failure_error(net, &p.id, &f))?;
        let state = OAuthState {
            hash: ids::token_hash(&state),
            provider: p.id.clone(),
            code_verifier: verifier,
            nonce,
            redirect_to,
            link_user_id: link.map(|(u, _)| u.id.clone()),
            link_epoch: link.map_or(0, |(u, _)| u.auth_epoch),
            link_session_id: link.map(|(_, caller)| caller.session_id.clone()),
            binding_hash: ids::token_hash(&binding),
            code_challenge,
            created_at: meta.now,
            expires_at: meta.now.plus_secs(STATE_TTL_SECS),
        };
        match link {
            None => self.store.put_oauth_state(&state).await?,
            // The caller authenticated and the account was read before this
            // write: a takeover (or a revocation, a ban, a password change)
            // in between must not leave a link its holder may finish after
            // it — so the write itself checks the session and the epoch.
            Some((_, caller)) => {
                if !self.store.put_link_state(&state, &caller).await? {
                    return Err(self.refused_write(&caller).await);
                }
            }
        }
        Ok(Started { authorize_url: url, binding })
    }

    /// Starts linking provider `id` to the signed-in caller, whose session
    /// must have signed in within [`RECENT_SIGN_IN_SECS`](crate::core::mfa::RECENT_SIGN_IN_SECS)
    /// (403 `reauthentication_required`): a linked identity is a lasting way in,
    /// and its sign-ins are recent ones, which may add a second factor or a
    /// passkey — a stolen session must not be able to plant one.
    pub async fn oauth_link_start(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        net: &impl ProviderNet,
        bearer: Option<&str>,
        id: &str,
        req: AuthorizeRequest,
    ) -> Result<Started, Error> {
        let principal = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&principal).await?;
        self.oauth_provider(id)?;
        principal.require_recent_sign_in(meta.now, "linking a sign-in provider")?;
        self.start_oauth(meta, rng, net, id, req, Start::Link(&user, self.live_session(meta, &principal))).await
    }

    /// Finishes a sign-in or link at the callback. `Err` only when a backing
    /// service failed; every refusal is a [`CallbackOutcome::Failed`], with a
    /// `login_failed` event.
    pub async fn oauth_callback(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        net: &impl ProviderNet,
        id: &str,
        q: CallbackQuery,
        binding: Option<&str>,
    ) -> Result<CallbackOutcome, Error> {
        let p = self.oauth_provider(id)?;
        let Some(raw_state) = short(q.state) else {
            return self.oauth_failed(meta, rng, None, None, invalid_state(), "missing_state").await;
        };
        // The binding is checked in the write that consumes the state: a
        // callback from another browser (no binding cookie, or another one)
        // is refused without spending it, so it cannot break the real
        // browser's sign-in, and is answered with the problem (no redirect,
        // and the edge leaves that browser's own binding cookie alone).
        let binding_hash = binding.map(ids::token_hash);
        let st =
            match self.store.take_oauth_state(&ids::token_hash(&raw_state), binding_hash.as_deref(), meta.now).await? {
                StateTake::Taken(st) => st,
                StateTake::OtherBrowser => {
                    return self.oauth_failed(meta, rng, None, None, invalid_state(), "state_binding_mismatch").await
                }
                StateTake::Unknown => {
                    return self.oauth_failed(meta, rng, None, None, invalid_state(), "invalid_state").await
                }
            };
        let back = Some(st.redirect_to.as_str());
        if st.provider != p.id {
            return self.oauth_failed(meta, rng, back, None, invalid_state(), "state_provider_mismatch").await;
        }
        if let Some(err) = short(q.error) {
            let (code, reason) = if err == "access_denied" {
                ("access_denied", "access_denied")
            } else {
                ("provider_error", "provider_error")
            };
            let e = oauth_error(403, code, "the provider did not authorize the sign-in");
            return self.oauth_failed(meta, rng, back, None, e, reason).await;
        }
        let endpoints = match provider::endpoints(net, p, meta.now).await {
            Ok(e) => e,
            Err(f) => return self.oauth_failed(meta, rng, back, None, failure_error(net, &p.id, &f), f.reason()).await,
        };
        // RFC 9207: a provider that names itself must be the one we sent the
        // browser to (a multi-tenant template cannot be compared; its ID
        // token's issuer is checked against the tenant instead).
        if let (Some(iss), ProviderKind::Oidc { .. }) = (&q.iss, &p.kind) {
            if !endpoints.issuer.contains("{tenantid}")
                && iss.trim_end_matches('/') != endpoints.issuer.trim_end_matches('/')
            {
                let e = oauth_error(400, "issuer_mismatch", "the callback names another issuer");
                return self.oauth_failed(meta, rng, back, None, e, "issuer_mismatch").await;
            }
        }
        let Some(code) = short(q.code) else {
            let e = oauth_error(400, "invalid_request", "the callback carries no authorization code");
            return self.oauth_failed(meta, rng, back, None, e, "missing_code").await;
        };
        let identity = match self.provider_identity(net, p, &endpoints, &code, &st, meta).await {
            Ok(i) => i,
            Err(f) => return self.oauth_failed(meta, rng, back, None, failure_error(net, &p.id, &f), f.reason()).await,
        };
        match &st.link_user_id {
            Some(user_id) => self.finish_link(meta, rng, p, &st, user_id, identity).await,
            None => self.finish_sign_in(meta, rng, p, &st, identity).await,
        }
    }

    async fn provider_identity(
        &self,
        net: &impl ProviderNet,
        p: &ProviderConfig,
        endpoints: &provider::Endpoints,
        code: &str,
        st: &OAuthState,
        meta: &Meta,
    ) -> Result<Identity, ProviderFailure> {
        let redirect_uri = callback_uri(self.config, meta, &p.id);
        let tokens = provider::exchange_code(net, p, endpoints, code, &st.code_verifier, &redirect_uri).await?;
        match &p.kind {
            ProviderKind::Github { api_url, .. } => provider::github_identity(net, api_url, &tokens).await,
            ProviderKind::Oidc { .. } => {
                let raw = tokens
                    .id_token
                    .as_deref()
                    .ok_or_else(|| ProviderFailure::Unavailable("the token endpoint returned no id_token".into()))?;
                let identity = provider::verify_id_token(net, p, endpoints, raw, &st.nonce, meta.now).await?;
                provider::complete_from_userinfo(net, endpoints, &tokens, identity).await
            }
        }
    }

    fn identity_row(
        &self,
        p: &ProviderConfig,
        user_id: &UserId,
        identity: &Identity,
        email: Option<&Email>,
        meta: &Meta,
    ) -> LinkedIdentity {
        LinkedIdentity {
            provider: p.id.clone(),
            subject: identity.subject.clone(),
            user_id: user_id.clone(),
            email: email.map(|e| e.as_str().to_string()),
            email_verified: identity.email_verified,
            linked_at: meta.now,
        }
    }

    async fn finish_link(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        p: &ProviderConfig,
        st: &OAuthState,
        user_id: &UserId,
        identity: Identity,
    ) -> Result<CallbackOutcome, Error> {
        let back = Some(st.redirect_to.as_str());
        let email = identity.email.as_deref().and_then(|e| Email::parse(e).ok());
        let mail = email.as_ref().map(Email::as_str);
        let linked = Ok(CallbackOutcome::Linked { location: with_param(&st.redirect_to, "linked", &p.id) });
        if let Some(existing) = self.store.identity(&p.id, &identity.subject).await? {
            if existing.user_id == *user_id {
                return linked;
            }
            return self.oauth_failed(meta, rng, back, mail, linked_elsewhere(), "identity_linked_elsewhere").await;
        }
        let user = match self.store.user_by_id(user_id).await? {
            Some(u) if !u.banned => u,
            Some(_) => return self.oauth_failed(meta, rng, back, mail, banned(), "banned").await,
            None => return self.oauth_failed(meta, rng, back, mail, invalid_state(), "user_not_found").await,
        };
        // A link belongs to the account as it was when the signed-in user
        // started it: after a password change or reset, a ban, a new address
        // or a takeover, whoever started it may no longer be entitled to it.
        // Checked here for a clear answer, and again in the linking write.
        if user.auth_epoch != st.link_epoch {
            return self.oauth_failed(meta, rng, back, mail, Error::account_changed(), "account_changed").await;
        }
        // A link state from before sessions were recorded in it has none:
        // it names no live session, and fails closed.
        let none = SessionId::new("");
        let by = LiveSession {
            user_id: &user.id,
            session_id: st.link_session_id.as_ref().unwrap_or(&none),
            now: meta.now,
            max_age_secs: self.config.session_max_age_secs,
        };
        let row = self.identity_row(p, &user.id, &identity, email.as_ref(), meta);
        if !self.store.link_identity(&row, st.link_epoch, &by).await? {
            if self.store.user_by_id(&user.id).await?.is_none_or(|u| u.auth_epoch != st.link_epoch) {
                return self.oauth_failed(meta, rng, back, mail, Error::account_changed(), "account_changed").await;
            }
            if !self.still_live(&by).await? {
                let ended = Error::InvalidToken(TokenError::SessionRevoked);
                return self.oauth_failed(meta, rng, back, mail, ended, "session_revoked").await;
            }
            return self.link_refused(meta, rng, back, mail, &user.id, &p.id).await;
        }
        self.emit(
            meta,
            rng,
            vec![events::OauthLink { user_id: user.id.clone(), email: user.email.clone(), provider: p.id.clone() }
                .into()],
        )
        .await?;
        linked
    }

    /// Why `link_identity` wrote nothing: the user has this provider already,
    /// or (a race) someone else linked the identity first.
    async fn link_refused(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        back: Option<&str>,
        mail: Option<&str>,
        user_id: &UserId,
        provider_id: &str,
    ) -> Result<CallbackOutcome, Error> {
        let has_provider = self.store.identities_of(user_id).await?.iter().any(|i| i.provider == provider_id);
        if has_provider {
            let e = oauth_error(
                409,
                "provider_already_linked",
                "this account already has another identity of this provider linked",
            );
            return self.oauth_failed(meta, rng, back, mail, e, "provider_already_linked").await;
        }
        self.oauth_failed(meta, rng, back, mail, linked_elsewhere(), "identity_linked_elsewhere").await
    }

    async fn finish_sign_in(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        p: &ProviderConfig,
        st: &OAuthState,
        identity: Identity,
    ) -> Result<CallbackOutcome, Error> {
        let back = Some(st.redirect_to.as_str());
        let email = identity.email.as_deref().and_then(|e| Email::parse(e).ok());
        let mail = email.as_ref().map(Email::as_str);
        if let Some(existing) = self.store.identity(&p.id, &identity.subject).await? {
            // The session is written only while this identity is still
            // linked to that account (a takeover may have dropped it, or its
            // holder unlinked it, since it was read).
            return match self.store.user_by_id(&existing.user_id).await? {
                Some(user) => self.oauth_session(meta, rng, p, st, &identity.subject, user, Vec::new()).await,
                None => self.oauth_failed(meta, rng, back, mail, invalid_state(), "user_not_found").await,
            };
        }
        let Some(email) = email else {
            let e = oauth_error(403, "email_required", "the provider did not share a usable email address");
            return self.oauth_failed(meta, rng, back, None, e, "no_email").await;
        };
        let mut events: Vec<Event> = Vec::new();
        let user = match self.store.user_by_email(email.as_str()).await? {
            Some(mut user) => {
                // Only an address the provider vouches for may join an
                // existing account; anything else would let whoever controls
                // a provider account take over ours. One it vouches for is a
                // proof of the address: an unverified account is taken over
                // in the same write that links the identity (`core::takeover`).
                if !identity.email_verified {
                    let e = oauth_error(
                        403,
                        "email_not_verified",
                        "an account with this email exists, and the provider has not verified the address: sign in \
                         and link the provider instead",
                    );
                    return self.oauth_failed(meta, rng, back, Some(email.as_str()), e, "unverified_email").await;
                }
                if user.banned {
                    return self.oauth_failed(meta, rng, back, Some(email.as_str()), banned(), "banned").await;
                }
                let row = self.identity_row(p, &user.id, &identity, Some(&email), meta);
                let brought = ProviderProfile::of(&identity);
                let claim = AddressProof {
                    user_id: &user.id,
                    email: &user.email,
                    link: Some(&row),
                    new_password: None,
                    profile: brought.as_prover(),
                    now: meta.now,
                };
                let proven = match self.store.prove_address(&claim).await? {
                    Some(proven) if proven.linked => proven,
                    Some(_) => {
                        return self.link_refused(meta, rng, back, Some(email.as_str()), &user.id, &p.id).await;
                    }
                    // The account's address changed since it was looked up.
                    None => {
                        let e = Error::account_changed();
                        return self.oauth_failed(meta, rng, back, Some(email.as_str()), e, "account_changed").await;
                    }
                };
                events.push(
                    events::OauthLink { user_id: user.id.clone(), email: user.email.clone(), provider: p.id.clone() }
                        .into(),
                );
                events.extend(proven.events(&user.id, &user.email, false));
                if proven.took_over {
                    user.password_hash = None;
                    brought.as_prover().apply_to(&mut user);
                }
                user.email_verified = true;
                user.auth_epoch = proven.auth_epoch;
                user
            }
            None => {
                let brought = ProviderProfile::of(&identity);
                let user = User {
                    name: brought.name,
                    email_verified: identity.email_verified,
                    avatar_url: brought.avatar_url,
                    locale: brought.locale,
                    ..User::new(UserId::generate(rng), email.as_str().to_string(), meta.now)
                };
                let row = self.identity_row(p, &user.id, &identity, Some(&email), meta);
                if !self.store.create_oauth_user(&user, &row).await? {
                    let e = oauth_error(
                        409,
                        "account_conflict",
                        "the account was created by a concurrent request; try again",
                    );
                    return self.oauth_failed(meta, rng, back, Some(email.as_str()), e, "account_conflict").await;
                }
                events.push(
                    events::UserCreated {
                        user_id: user.id.clone(),
                        email: user.email.clone(),
                        name: user.name.clone(),
                        provider: p.id.clone(),
                    }
                    .into(),
                );
                user
            }
        };
        self.oauth_session(meta, rng, p, st, &identity.subject, user, events).await
    }

    /// Opens the session of `user` signing in through the identity
    /// `subject` of provider `p` (through the sign-in hook; written only
    /// while the identity is linked to `user` and the account epoch is the
    /// one `user` was read or left at) and stores its tokens under a
    /// one-time exchange code.
    #[allow(clippy::too_many_arguments)] // the callback's facts, all needed
    async fn oauth_session(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        p: &ProviderConfig,
        st: &OAuthState,
        subject: &str,
        user: User,
        mut events: Vec<Event>,
    ) -> Result<CallbackOutcome, Error> {
        let back = Some(st.redirect_to.as_str());
        if user.banned {
            if !events.is_empty() {
                self.emit(meta, rng, events).await?;
            }
            return self.oauth_failed(meta, rng, back, Some(&user.email), banned(), "banned").await;
        }
        let basis = SignInBasis {
            user_epoch: user.auth_epoch,
            identity: Some((&p.id, subject)),
            passkey: None,
            second_factor: false,
        };
        let signed_in = match self.start_session_via(meta, rng, &user, &p.id, basis, Amr::FED).await {
            Ok(a) => a,
            Err(e) => {
                // A new account or link stays and is announced; the refusal is a failed login.
                if !events.is_empty() {
                    self.emit(meta, rng, events).await?;
                }
                return match signin_refusal(&e) {
                    Some(reason) => self.oauth_failed(meta, rng, back, Some(&user.email), e, reason).await,
                    None => Err(e),
                };
            }
        };
        let auth = match signed_in {
            SignIn::Complete(auth) => auth,
            SignIn::SecondStep(step) => {
                // No session yet: `login` waits for the second step.
                if !events.is_empty() {
                    self.emit(meta, rng, events).await?;
                }
                if !self.config.tokens_in_body() {
                    let methods: Vec<&str> = step.methods.iter().map(|m| m.as_str()).collect();
                    let location = format!(
                        "{}#mfa_token={}&methods={}",
                        result_url(&st.redirect_to, None),
                        step.mfa_token,
                        methods.join(",")
                    );
                    return Ok(CallbackOutcome::SecondStep { location });
                }
                // Bound to the app's challenge like a complete sign-in's.
                let sealed = SignIn::SecondStep(step).to_sealed_json(st.code_challenge.as_ref())?;
                let location = self.put_exchange_code(meta, rng, &st.redirect_to, &sealed).await?;
                return Ok(CallbackOutcome::SecondStep { location });
            }
        };
        events.push(login_event(&user, &p.id, meta));
        self.emit(meta, rng, events).await?;
        // Bound to the app's challenge from `/authorize`, like a hosted page's code.
        let location = self.signed_in_location(meta, rng, &st.redirect_to, &auth, st.code_challenge.as_ref()).await?;
        Ok(CallbackOutcome::SignedIn { location, auth: Box::new(auth) })
    }

    /// Where a browser sign-in (an OAuth callback, a hosted page) sends the
    /// browser back to: `redirect_to` (already checked against the
    /// allowlist) with a one-time `code` the app swaps for `auth`'s tokens at
    /// `/auth/oauth/exchange` — tokens never travel in a URL. In cookie mode
    /// without body tokens, `redirect_to` alone: the answer's cookies carry
    /// the session, and a code would let whoever reads the app's URL (its
    /// history, a script on the page, a Referer) take the session at the
    /// exchange. With `challenge`, the code is swapped only with its
    /// verifier ([`CodeChallenge`]).
    pub async fn signed_in_location(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        redirect_to: &str,
        auth: &AuthResponse,
        challenge: Option<&CodeChallenge>,
    ) -> Result<String, Error> {
        if !self.config.tokens_in_body() {
            return Ok(result_url(redirect_to, None));
        }
        self.put_exchange_code(meta, rng, redirect_to, &auth.to_sealed_json(challenge)?).await
    }

    /// Seals `plain` (a sign-in's sealed JSON, [`SignIn::to_sealed_json`])
    /// under a fresh one-time exchange code and returns `redirect_to` with
    /// the code.
    async fn put_exchange_code(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        redirect_to: &str,
        plain: &str,
    ) -> Result<String, Error> {
        let code = ids::secret_token(rng);
        let sealed = oauth::seal(&code, plain, rng)?;
        self.store.put_exchange(&ids::token_hash(&code), &sealed, meta.now.plus_secs(EXCHANGE_TTL_SECS)).await?;
        Ok(with_param(redirect_to, "code", &code))
    }

    /// Emits `login_failed` and returns the refusal.
    async fn oauth_failed(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        back: Option<&str>,
        email: Option<&str>,
        error: Error,
        reason: &str,
    ) -> Result<CallbackOutcome, Error> {
        self.emit(meta, rng, vec![login_failed_event(email.unwrap_or_default(), reason, meta)]).await?;
        let location = back.map(|b| with_param(b, "error", error.problem().code));
        Ok(CallbackOutcome::Failed { location, error })
    }

    /// Swaps a one-time code for the sign-in's tokens (once), or for its
    /// second step when the account has a second factor on. Its answer's
    /// body is [`AuthResponse::body`], like every sign-in's. In cookie mode
    /// without body tokens no code is ever issued, and every exchange is
    /// refused (400 `invalid_exchange_code`) before anything is looked up.
    /// A code issued with a `code_challenge` is swapped only with its
    /// `code_verifier`; a wrong or missing one is refused alike, and the
    /// code is spent either way (a planted code cannot be retried).
    pub async fn oauth_exchange(&self, meta: &Meta, req: ExchangeRequest) -> Result<SignIn, Error> {
        if !self.config.tokens_in_body() {
            return Err(oauth_error(
                400,
                "invalid_exchange_code",
                "in cookie mode browser sign-ins (OAuth, the hosted pages) set the session cookies themselves and issue no code to exchange",
            ));
        }
        let refused = || oauth_error(400, "invalid_exchange_code", "the code is unknown, already used or expired");
        let code = req.code;
        if code.is_empty()
            || code.len() > 64
            || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(refused());
        }
        let sealed = self.store.take_exchange(&ids::token_hash(&code), meta.now).await?.ok_or_else(refused)?;
        let plain = oauth::open(&code, &sealed).ok_or_else(refused)?;
        let (signed_in, challenge) = SignIn::from_sealed_json(&plain).ok_or_else(refused)?;
        match (challenge, req.code_verifier.as_deref()) {
            (None, None) => Ok(signed_in),
            // An app that sent a verifier expects a code bound to it: an
            // unbound one is not its own (spent all the same).
            (None, Some(_)) => Err(oauth_error(
                400,
                "invalid_exchange_code",
                "this code was not started with a code_challenge, yet a code_verifier was sent",
            )),
            (Some(c), Some(v)) if c.is_met_by(v) => Ok(signed_in),
            (Some(_), _) => Err(oauth_error(
                400,
                "invalid_exchange_code",
                "the code_verifier does not match the code_challenge this sign-in was started with",
            )),
        }
    }

    /// Unlinks the caller's identity of `provider`, unless it is their last
    /// way to sign in (no password and no other provider).
    pub async fn oauth_unlink(&self, meta: &Meta, bearer: Option<&str>, provider_id: &str) -> Result<(), Error> {
        let principal = self.authenticate(meta, bearer).await?;
        self.live_user(&principal).await?;
        // Decided with the caller's session in the same write: a request
        // whose session a takeover revoked meanwhile unlinks nothing (not
        // the identity the new owner signed in with).
        match self.store.unlink_identity(&self.live_session(meta, &principal), provider_id).await? {
            Unlink::Done => Ok(()),
            Unlink::SessionEnded => Err(Error::InvalidToken(TokenError::SessionRevoked)),
            Unlink::NotLinked => {
                Err(oauth_error(404, "not_linked", "no identity of this provider is linked to the account"))
            }
            Unlink::LastMethod => Err(oauth_error(
                409,
                "last_sign_in_method",
                "this is the account's only way to sign in: set a password or link another provider first",
            )),
        }
    }

    /// `GET /auth/me`: the caller and their linked providers.
    pub async fn me_with_providers(&self, meta: &Meta, bearer: Option<&str>) -> Result<MeResponse, Error> {
        let principal = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&principal).await?;
        let view = self.me_view(&principal, user).await?;
        self.shown_to_live_session(meta, &principal, view).await
    }

    /// `view`, read for `principal`, if its session is still live after the
    /// reads: a takeover (or sign-out) committed while they were read ended
    /// the session in its write, and what they read may be the new holder's.
    async fn shown_to_live_session(
        &self,
        meta: &Meta,
        principal: &Principal,
        view: MeResponse,
    ) -> Result<MeResponse, Error> {
        match self.still_live(&self.live_session(meta, principal)).await? {
            true => Ok(view),
            false => Err(Error::InvalidToken(TokenError::SessionRevoked)),
        }
    }

    /// `PATCH /auth/me` ([`Deps::edit_profile`]), answered as `GET
    /// /auth/me`: the account as read just before the write, with the edit
    /// applied. Everything the answer shows is read before the write, and
    /// the write needs the session live (so it was at every read before it);
    /// nothing is read after. An edit that changes nothing writes nothing:
    /// then the session is checked after the reads, as `GET /auth/me` does.
    pub async fn edit_profile_view(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: ProfileRequest,
    ) -> Result<MeResponse, Error> {
        let edit = req.parse()?;
        let principal = self.authenticate(meta, bearer).await?;
        let before = self.live_user(&principal).await?;
        let mut view = self.me_view(&principal, before.clone()).await?;
        let Some(written) = self.write_profile_edit(meta, rng, &principal, &before, &edit).await? else {
            return self.shown_to_live_session(meta, &principal, view).await;
        };
        view.locale.clone_from(&written.locale);
        view.user = written.response(Some(&principal.session_id));
        Ok(view)
    }

    /// `GET /auth/me`'s answer for `user`, read by `principal`'s session
    /// (already checked): the user, linked providers and factors.
    async fn me_view(&self, principal: &Principal, user: User) -> Result<MeResponse, Error> {
        debug_assert_eq!(user.id, principal.user_id);
        let providers = self.store.identities_of(&user.id).await?.into_iter().map(ProviderView::from).collect();
        let mfa = self.factors_view(&user.id).await?;
        Ok(MeResponse {
            user: user.response(Some(&principal.session_id)),
            providers,
            amr: principal.amr,
            auth_time: principal.auth_time.0,
            mfa,
            locale: user.locale.clone(),
        })
    }
}

fn linked_elsewhere() -> Error {
    oauth_error(409, "identity_linked_elsewhere", "this provider identity is already linked to another account")
}

/// The profile a provider's claims give an account it creates or takes
/// over, each claim kept only if it passes its field's check (a bad one is
/// no reason to refuse a sign-in): `name`, `picture` (the rule of a
/// user's own `avatar_url`) and `locale` (a language tag, normalised).
struct ProviderProfile {
    name: Option<String>,
    avatar_url: Option<String>,
    locale: Option<String>,
}

impl ProviderProfile {
    fn of(identity: &Identity) -> Self {
        Self {
            name: parse_name(identity.name.clone()).ok().flatten(),
            avatar_url: parse_avatar_url(identity.picture.clone()).ok().flatten(),
            locale: identity.locale.as_deref().and_then(|l| Locale::parse(l).ok()).map(|l| l.to_string()),
        }
    }

    fn as_prover(&self) -> ProverProfile<'_> {
        ProverProfile {
            name: self.name.as_deref(),
            avatar_url: self.avatar_url.as_deref(),
            locale: self.locale.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_errors_are_appended_to_the_redirect() {
        assert_eq!(with_param("https://app.example/done?x=1", "code", "a b"), "https://app.example/done?x=1&code=a+b");
        assert_eq!(
            with_param("https://app.example", "error", "invalid_state"),
            "https://app.example/?error=invalid_state"
        );
        assert_eq!(
            with_param("https://app.example/?code=planted&next=%2Fa&error=x&linked=y", "code", "ours"),
            "https://app.example/?next=%2Fa&code=ours"
        );
        // Cookie mode's return: no result, and nobody else's either.
        assert_eq!(result_url("https://app.example/done?code=planted&x=1", None), "https://app.example/done?x=1");
        assert_eq!(result_url("https://app.example/done?code=planted", None), "https://app.example/done");
    }

    #[test]
    fn provider_failures_map_to_stable_codes() {
        let codes: Vec<(u16, &str)> = [
            ProviderFailure::Unavailable("x".into()),
            ProviderFailure::CodeRejected("invalid_grant".into()),
            ProviderFailure::IdToken(crate::core::oauth::idtoken::IdTokenError::BadSignature),
        ]
        .iter()
        .map(|f| {
            let p = failure_code(f).problem();
            (p.status, p.code)
        })
        .collect();
        assert_eq!(codes, vec![(502, "provider_unavailable"), (400, "code_rejected"), (401, "invalid_id_token")]);
    }
}
