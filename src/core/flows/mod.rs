//! Use cases, one file each, written against the ports. Every flow receives
//! its dependencies ([`Deps`]), the request's facts ([`Meta`]: time, client,
//! issuer) and a random source, and returns a value or an [`Error`].

pub mod account;
pub mod admin;
pub mod audit;
pub mod email_verification;
pub mod key_rotation;
pub mod magic_link;
pub mod mfa;
pub mod oauth;
pub mod otp;
pub mod passkeys;
pub mod password;
pub mod passwordless;
pub mod revocation;
pub mod throttle;

use serde::{Deserialize, Serialize};

use crate::core::amr::Amr;
use crate::core::config::Config;
use crate::core::email_address::Email;
use crate::core::error::{Error, TokenError};
use crate::core::events::{Envelope, Event, EventContext};
use crate::core::ids::{self, Random, SessionId, UserId};
use crate::core::locale::Locale;
use crate::core::mfa::is_recent_sign_in;
use crate::core::oauth::CodeChallenge;
use crate::core::ports::{EventSink, KeyRing, MfaStore, Pause, SessionStore, SigninHook, UserStore};
use crate::core::session::{LiveSession, Session, SignInBasis};
use crate::core::signin_hook;
use crate::core::time::UnixTime;
use crate::core::token::{self, Expectations, ExtraClaims, NewAccessToken, Parsed, VerifiedToken, ACCESS_TOKEN_TYPE};
use crate::core::users::Role;
use crate::core::users::{User, UserResponse};

/// Verifies `raw` as an access token through the key ring's port: header
/// ([`Parsed`]), signature (`keys`), claims.
pub async fn verify_token(
    raw: &str,
    keys: &impl KeyRing,
    expect: &Expectations<'_>,
    now: UnixTime,
) -> Result<VerifiedToken, Error> {
    let parsed = Parsed::new(raw, expect.token_type).map_err(Error::InvalidToken)?;
    match keys.verify(parsed.kid(), parsed.alg(), parsed.signed_data(), parsed.signature()).await? {
        None => return Err(Error::InvalidToken(TokenError::UnknownKey)),
        Some(false) => return Err(Error::InvalidToken(TokenError::BadSignature)),
        Some(true) => {}
    }
    parsed.validated_claims(expect, now).map_err(Error::InvalidToken)
}

/// What flows reach the world through.
pub struct Deps<'a, S, E, K> {
    /// Users and sessions.
    pub store: &'a S,
    /// The event queue.
    pub events: &'a E,
    /// Signing and verification keys.
    pub keys: &'a K,
    /// Configuration.
    pub config: &'a Config,
    /// The sign-in hook's transport (asked only when `HOOK_URL` is set).
    pub hook: &'a dyn SigninHook,
    /// Waiting within a request (a refused login while others are checked).
    pub pause: &'a dyn Pause,
}

/// Facts about the request being served.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Now.
    pub now: UnixTime,
    /// Client IP (`CF-Connecting-IP`).
    pub ip: Option<String>,
    /// Client `User-Agent`.
    pub user_agent: Option<String>,
    /// The `iss` to issue and expect.
    pub issuer: String,
}

/// Tokens and user, as returned by every sign-in (AuthFort's `AuthResponse`).
///
/// Deliberately not `Serialize`: what a client receives is
/// [`AuthResponse::body`], which leaves the tokens out in cookie mode, so no
/// handler can put them in a body by serialising this value.
#[derive(Debug, Clone)]
pub struct AuthResponse {
    /// The JWT access token.
    pub access_token: String,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// When the refresh token stops working: `REFRESH_TTL` after it was
    /// issued or at the session's end (`SESSION_MAX_AGE`), whichever is first.
    pub refresh_expires_at: UnixTime,
    /// The user.
    pub user: UserResponse,
}

/// The JSON body of a sign-in's answer (signup, login, refresh, magic link,
/// email code, OAuth exchange): the AuthResponse, whose `access_token` and
/// `refresh_token` are left out when [`Config::tokens_in_body`] says they
/// travel only as cookies.
#[derive(Debug, Serialize)]
pub struct AuthBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    token_type: &'static str,
    expires_in: u64,
    user: &'a UserResponse,
}

/// An [`AuthResponse`] with its tokens, as the OAuth exchange keeps it
/// sealed between the callback and the app's exchange (the members and
/// their names are the AuthResponse's).
#[derive(Serialize, Deserialize)]
struct StoredAuth {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    /// Unix seconds; absent from what an earlier version sealed (then the
    /// refresh cookie lives `REFRESH_TTL`, as it used to).
    #[serde(default)]
    refresh_expires_at: Option<i64>,
    user: UserResponse,
    /// The app's PKCE S256 challenge the code is bound to; absent for a
    /// code issued unbound (an OAuth sign-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_challenge: Option<String>,
}

impl AuthResponse {
    /// The body to send for this sign-in under `config`.
    pub fn body(&self, config: &Config) -> AuthBody<'_> {
        let with_tokens = config.tokens_in_body();
        AuthBody {
            access_token: with_tokens.then_some(self.access_token.as_str()),
            refresh_token: with_tokens.then_some(self.refresh_token.as_str()),
            token_type: self.token_type,
            expires_in: self.expires_in,
            user: &self.user,
        }
    }

    /// Every member, tokens included, and the `challenge` the code is
    /// bound to, as JSON: what the OAuth exchange seals.
    pub fn to_sealed_json(&self, challenge: Option<&CodeChallenge>) -> Result<String, Error> {
        let stored = StoredAuth {
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
            expires_in: self.expires_in,
            refresh_expires_at: Some(self.refresh_expires_at.0),
            user: self.user.clone(),
            code_challenge: challenge.map(|c| c.as_str().to_string()),
        };
        serde_json::to_string(&stored).map_err(|e| Error::Internal(format!("auth response: {e}")))
    }

    /// Reads back [`AuthResponse::to_sealed_json`] and its challenge;
    /// `None` for anything else.
    pub fn from_sealed_json(json: &str) -> Option<(Self, Option<CodeChallenge>)> {
        let s: StoredAuth = serde_json::from_str(json).ok()?;
        let challenge = match s.code_challenge {
            None => None,
            Some(c) => Some(CodeChallenge::parse(&c)?),
        };
        let auth = Self {
            access_token: s.access_token,
            refresh_token: s.refresh_token,
            token_type: TOKEN_TYPE,
            expires_in: s.expires_in,
            refresh_expires_at: UnixTime(s.refresh_expires_at.unwrap_or(i64::MAX)),
            user: s.user,
        };
        Some((auth, challenge))
    }

    /// How long, at `now`, the cookies carrying this sign-in's tokens should
    /// live (cookie mode's `Max-Age`, in seconds): the access cookie as long
    /// as its token (`expires_in`, cut short near the session's end), the
    /// refresh cookie until the refresh token stops working — `REFRESH_TTL`
    /// or the session's end, whichever is first — so neither outlives what
    /// it carries.
    pub fn cookie_max_ages(&self, config: &Config, now: UnixTime) -> (u64, u64) {
        let refresh_left = u64::try_from(self.refresh_expires_at.0.saturating_sub(now.0)).unwrap_or(0);
        (self.expires_in, refresh_left.min(config.refresh_ttl_secs))
    }
}

/// What a sign-in's first step leads to: a session, or — for an account with
/// a second factor on — a second step to take at `/auth/mfa/verify`.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per sign-in, moved a few times: not worth a box
pub enum SignIn {
    /// Signed in.
    Complete(AuthResponse),
    /// No session yet: the second step's `mfa_token`.
    SecondStep(mfa::SecondStep),
}

impl SignIn {
    /// Every member as JSON, tokens included: what the OAuth exchange seals,
    /// with the `code_challenge` its code is bound to — a second step's too:
    /// it grants nothing without the factor, but an app must not be handed
    /// another browser's sign-in either.
    pub fn to_sealed_json(&self, challenge: Option<&CodeChallenge>) -> Result<String, Error> {
        match self {
            Self::Complete(auth) => auth.to_sealed_json(challenge),
            Self::SecondStep(step) => {
                let mut body = step.body();
                if let Some(c) = challenge {
                    body["code_challenge"] = serde_json::Value::String(c.as_str().to_string());
                }
                Ok(body.to_string())
            }
        }
    }

    /// Reads [`SignIn::to_sealed_json`] back, with the challenge its code is
    /// bound to; `None` for anything else (a malformed challenge included).
    pub fn from_sealed_json(json: &str) -> Option<(Self, Option<CodeChallenge>)> {
        match mfa::SecondStep::from_body(json) {
            Some(step) => {
                let v: serde_json::Value = serde_json::from_str(json).ok()?;
                let challenge = match v.get("code_challenge") {
                    None => None,
                    Some(c) => Some(CodeChallenge::parse(c.as_str()?)?),
                };
                Some((Self::SecondStep(step), challenge))
            }
            None => AuthResponse::from_sealed_json(json).map(|(auth, c)| (Self::Complete(auth), c)),
        }
    }

    /// The session, if the sign-in is complete.
    pub fn complete(self) -> Option<AuthResponse> {
        match self {
            Self::Complete(a) => Some(a),
            Self::SecondStep(_) => None,
        }
    }
}

/// The `token_type` of every AuthResponse.
const TOKEN_TYPE: &str = "Bearer";

/// A body holding an email address (`/magic-link`, `/otp`, `/password/forgot`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    /// Email address.
    pub email: String,
    /// The language the email is wanted in (a BCP 47 tag, e.g. `fr`);
    /// without it, the account's own, if it has one.
    #[serde(default)]
    pub locale: Option<String>,
}

/// Who an admitted email request writes to: the parsed address, and the
/// language asked for, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address.
    pub email: Email,
    /// The request's `locale`.
    pub locale: Option<Locale>,
}

impl Recipient {
    /// The language of the email to this recipient: the one asked for, else
    /// the account's (`stored`), if any.
    pub fn locale_or(&self, stored: Option<&str>) -> Option<String> {
        self.locale.as_ref().map(Locale::to_string).or_else(|| stored.map(str::to_string))
    }
}

/// A body holding only an emailed link token (`/magic-link/verify`, `/email/verify`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the link.
    pub token: String,
}

/// A plain acknowledgement. Endpoints that must not reveal whether an
/// account exists answer with the same one whatever happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// For people.
    pub message: &'static str,
}

/// A caller authenticated by a verified access token on a live session.
/// A write made on the caller's behalf that must not outlive the session
/// names it with [`Deps::live_session`].
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// User id (`sub`).
    pub user_id: UserId,
    /// Session id (`sid`).
    pub session_id: SessionId,
    /// Roles from the token.
    pub roles: Vec<Role>,
    /// Email from the token.
    pub email: String,
    /// How the session's user signed in (the session's `amr`).
    pub amr: Amr,
    /// When they signed in: the session's creation.
    pub auth_time: UnixTime,
}

impl Principal {
    /// Whether the session's sign-in is recent at `now` ([`is_recent_sign_in`];
    /// a refresh keeps the sign-in's time).
    pub fn signed_in_recently(&self, now: UnixTime) -> bool {
        is_recent_sign_in(self.auth_time, now)
    }

    /// The rule for what plants a lasting way into the account (a passkey,
    /// a second factor, a linked identity): only a recent sign-in, so a
    /// stolen session cannot. Else 403 `reauthentication_required`, saying
    /// that `what` needs one.
    pub fn require_recent_sign_in(&self, now: UnixTime, what: &str) -> Result<(), Error> {
        if self.signed_in_recently(now) {
            return Ok(());
        }
        Err(Error::forbidden(
            "reauthentication_required",
            format!("{what} needs a sign-in within the last five minutes; sign in again"),
        ))
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore,
    E: EventSink,
    K: KeyRing,
{
    /// Token expectations for this deployment.
    pub fn expectations<'m>(&'m self, meta: &'m Meta) -> Expectations<'m> {
        Expectations {
            issuer: &meta.issuer,
            audience: &self.config.audience,
            token_type: ACCESS_TOKEN_TYPE,
            max_lifetime_secs: self.config.access_ttl_secs,
        }
    }

    /// Verifies an access token and checks its session is still live in D1 —
    /// the auth API honours logout and revocation at once; the gateway's hot
    /// path, which reads no D1, within `REVOCATION_LAG`
    /// ([`crate::core::revocation`]).
    pub async fn authenticate(&self, meta: &Meta, bearer: Option<&str>) -> Result<Principal, Error> {
        let c = self.bearer_token(meta, bearer).await?.claims;
        let session = match self.store.session_by_id(&c.sid).await? {
            Some(s) if s.user_id == c.sub && s.is_live(meta.now, self.config.session_max_age_secs) => s,
            _ => return Err(Error::InvalidToken(TokenError::SessionRevoked)),
        };
        Ok(Principal {
            user_id: c.sub,
            session_id: c.sid,
            roles: c.roles,
            email: c.email,
            amr: session.amr,
            auth_time: session.created_at,
        })
    }

    /// The token a signed-in caller presents, checked without the store
    /// (signature, claims, expiry) before the request's body is read: a
    /// request with no valid token is refused 401 whatever its body. The
    /// flow then [authenticates](Self::authenticate) it, session and all.
    pub async fn check_bearer(&self, meta: &Meta, bearer: Option<&str>) -> Result<(), Error> {
        self.bearer_token(meta, bearer).await.map(drop)
    }

    /// The presented access token verified (signature, claims, expiry);
    /// 401 `missing_token` when there is none.
    async fn bearer_token(&self, meta: &Meta, bearer: Option<&str>) -> Result<VerifiedToken, Error> {
        let raw = bearer.ok_or(Error::InvalidToken(TokenError::Missing))?;
        verify_token(raw, self.keys, &self.expectations(meta), meta.now).await
    }

    /// The caller's session as a write made on their behalf checks it (see
    /// [`LiveSession`]).
    pub fn live_session<'p>(&self, meta: &Meta, p: &'p Principal) -> LiveSession<'p> {
        LiveSession {
            user_id: &p.user_id,
            session_id: &p.session_id,
            now: meta.now,
            max_age_secs: self.config.session_max_age_secs,
        }
    }

    /// Why a write conditioned on the caller's live session (and account)
    /// wrote nothing: 401 `session_revoked` if the session is no longer
    /// live, else 409 `account_changed`.
    pub async fn refused_write(&self, caller: &LiveSession<'_>) -> Error {
        match self.still_live(caller).await {
            Ok(true) => Error::account_changed(),
            Ok(false) => Error::InvalidToken(TokenError::SessionRevoked),
            Err(e) => e,
        }
    }

    /// Whether `caller`'s session is live in the store now (a read after
    /// the fact: a write that must not outlive it decides it in the write).
    pub async fn still_live(&self, caller: &LiveSession<'_>) -> Result<bool, Error> {
        Ok(self
            .store
            .session_by_id(caller.session_id)
            .await?
            .is_some_and(|s| s.user_id == *caller.user_id && s.is_live(caller.now, caller.max_age_secs)))
    }

    /// Signs an access token for `user` in `session`, carrying the claims
    /// the session was given at sign-in besides ours (reserved names among
    /// them are skipped). It expires `ACCESS_TTL` from now or at the
    /// session's end (`SESSION_MAX_AGE`), whichever is first, so no access
    /// token outlives its session; returns it with its lifetime in seconds.
    pub async fn session_access_token(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user: &User,
        session: &Session,
    ) -> Result<(String, u64), Error> {
        let left = session.ends_at(self.config.session_max_age_secs).0.saturating_sub(meta.now.0);
        let ttl_secs = self.config.access_ttl_secs.min(u64::try_from(left).unwrap_or(0));
        if ttl_secs == 0 {
            // Callers only sign for live sessions; an ended one gets nothing.
            return Err(Error::InvalidToken(TokenError::SessionRevoked));
        }
        let key = self.keys.signing_key().await?;
        let jti = ids::uuid(rng);
        let new = NewAccessToken {
            issuer: &meta.issuer,
            audience: &self.config.audience,
            user_id: &user.id,
            session_id: &session.id,
            roles: &user.roles,
            email: &user.email,
            email_verified: user.email_verified,
            jti: &jti,
            now: meta.now,
            ttl_secs,
            amr: session.amr,
            auth_time: session.created_at,
            extra: &session.extra_claims,
        };
        let raw = token::issue(&new, &key)?;
        if let Some(verified) = new.verified() {
            self.keys.issued(&raw, &key.kid, verified, meta.now);
        }
        Ok((raw, ttl_secs))
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    /// Signs `user` in with a password, as `user` was just read. See
    /// [`Deps::start_session_via`].
    pub async fn start_session(&self, meta: &Meta, rng: &mut impl Random, user: &User) -> Result<SignIn, Error> {
        let basis = SignInBasis::epoch(user.auth_epoch);
        self.start_session_via(meta, rng, user, account::PROVIDER_EMAIL, basis, Amr::PWD).await
    }

    /// The end of every sign-in's first step: `user` proved `amr` through
    /// `provider`. With a second factor on, no session: a second step's
    /// `mfa_token`, bound to this step (see [`crate::core::mfa`]). Else the
    /// session, through [`Deps::open_session`].
    pub async fn start_session_via(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user: &User,
        provider: &str,
        basis: SignInBasis<'_>,
        amr: Amr,
    ) -> Result<SignIn, Error> {
        let factors = self.store.mfa_factors(&user.id).await?;
        if factors.required() {
            let step = self.second_step(meta, rng, user, provider, &basis, amr, &factors).await?;
            return Ok(SignIn::SecondStep(step));
        }
        self.open_session(meta, rng, user, provider, basis, amr).await.map(SignIn::Complete)
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore,
    E: EventSink,
    K: KeyRing,
{
    /// Opens a new session for `user`, who signed in through `provider`
    /// proving `amr`, and returns its tokens. The sign-in hook, when
    /// configured, is asked first — here, once per sign-in, after its last
    /// step: it may refuse (403 `signin_denied`) or add claims, which the
    /// session keeps for every access token it issues. The session is
    /// written only while `basis` holds (the account epoch the sign-in was
    /// decided under, the identity it came through, no second factor turned
    /// on meanwhile for a one-factor sign-in): else 409 `account_changed`,
    /// no session.
    pub async fn open_session(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user: &User,
        provider: &str,
        basis: SignInBasis<'_>,
        amr: Amr,
    ) -> Result<AuthResponse, Error> {
        let extra_claims = self.allow_signin(meta, rng, user, provider).await?;
        let refresh_token = ids::secret_token(rng);
        let session = Session {
            id: SessionId::generate(rng),
            user_id: user.id.clone(),
            created_at: meta.now,
            last_used_at: meta.now,
            expires_at: meta.now.plus_secs(self.config.refresh_ttl_secs.min(self.config.session_max_age_secs)),
            revoked_at: None,
            ip_address: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            extra_claims,
            amr,
        };
        // Sign first: a key problem must not leave a session behind.
        let (access_token, expires_in) = self.session_access_token(meta, rng, user, &session).await?;
        // The session exists only if the account is still as this sign-in
        // relied on: a password login racing a reset, a ban or a takeover of
        // the account, a link or code sign-in racing a password change, a
        // provider sign-in through an identity a takeover dropped, a
        // one-factor sign-in racing TOTP being turned on, must not end with
        // a session (see `core::takeover`, `core::mfa`).
        if !self.store.create_session(&session, &ids::token_hash(&refresh_token), &basis).await? {
            return Err(Error::account_changed());
        }
        Ok(AuthResponse { expires_in, ..self.auth_response(access_token, refresh_token, user, &session) })
    }
    /// Asks the sign-in hook, if one is configured, whether `user` may sign
    /// in; returns the claims it adds.
    async fn allow_signin(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user: &User,
        provider: &str,
    ) -> Result<ExtraClaims, Error> {
        let Some(hook) = &self.config.hook else { return Ok(ExtraClaims::new()) };
        let request = signin_hook::request(hook, user, provider, &ids::uuid(rng), meta.now);
        let decision = signin_hook::decide(hook.failure_mode, self.hook.send(&request).await);
        if let Some(warning) = &decision.warning {
            self.hook.report(warning);
        }
        decision.result
    }

    /// Assembles an [`AuthResponse`] for `session`, whose current refresh
    /// token is `refresh_token`.
    pub fn auth_response(
        &self,
        access_token: String,
        refresh_token: String,
        user: &User,
        session: &Session,
    ) -> AuthResponse {
        AuthResponse {
            access_token,
            refresh_token,
            token_type: TOKEN_TYPE,
            expires_in: self.config.access_ttl_secs,
            refresh_expires_at: session.expires_at,
            user: user.response(Some(&session.id)),
        }
    }

    /// Publishes events for an action that already happened, with the
    /// request's client (IP, user agent) as their context.
    pub async fn emit(&self, meta: &Meta, rng: &mut impl Random, events: Vec<Event>) -> Result<(), Error> {
        self.emit_with(meta, rng, None, events).await
    }

    /// [`Deps::emit`] for an action an administrator took through the admin
    /// API: the context names them (`actor_id`, for the audit log).
    pub async fn emit_as(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &admin::Admin,
        events: Vec<Event>,
    ) -> Result<(), Error> {
        self.emit_with(meta, rng, Some(admin.user().id.clone()), events).await
    }

    /// `started`, the start of a sign-in's session, with its failure
    /// announced: `earlier` (what the flow did before it, e.g. an account
    /// made just now, which stays) and, for a refusal by the sign-in hook or
    /// by a changed account ([`account::signin_refusal`]), a `login_failed`
    /// of `email` whose reason is the refusal after `prefix`. On success
    /// `earlier` is left to the caller, who announces it with the sign-in.
    pub(crate) async fn refusal_announced<T>(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        started: Result<T, Error>,
        (email, prefix): (&str, &str),
        earlier: &mut Vec<Event>,
    ) -> Result<T, Error> {
        let e = match started {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let mut events = std::mem::take(earlier);
        if let Some(reason) = account::signin_refusal(&e) {
            events.push(account::login_failed_event(email, format!("{prefix}{reason}"), meta));
        }
        if !events.is_empty() {
            self.emit(meta, rng, events).await?;
        }
        Err(e)
    }

    async fn emit_with(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        actor_id: Option<UserId>,
        events: Vec<Event>,
    ) -> Result<(), Error> {
        let ctx = EventContext { ip_address: meta.ip.clone(), user_agent: meta.user_agent.clone(), actor_id };
        let envelopes: Vec<Envelope> =
            events.into_iter().map(|e| Envelope::new(e, rng, meta.now).with_context(ctx.clone())).collect();
        self.events.publish(&envelopes).await
    }
}
