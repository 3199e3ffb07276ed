//! Password accounts and sessions: signup, login, refresh, logout, me and
//! the caller's own profile edit, and the caller's own session list and
//! revocation.

use serde::{Deserialize, Deserializer};

use crate::core::amr::Amr;
use crate::core::email_address::Email;
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::{AuthResponse, Deps, Meta, Principal, SignIn};
use crate::core::ids::{self, Random, SessionId, UserId};
use crate::core::locale::Locale;
use crate::core::password::{Password, PasswordHash};
use crate::core::ports::{AccountStore, EventSink, KeyRing, MfaStore, RateLimitStore, SessionStore, UserStore};
use crate::core::rate_limit::{self, Endpoint, KeyType};
use crate::core::session::{RotateRequest, Rotation, RotationLimit, SessionView, SignInBasis};
use crate::core::signin_hook;
use crate::core::token::ExtraClaims;
use crate::core::users::{is_unsafe_in_name, ProfileEdit, User, UserResponse, MAX_NAME_CHARS};

/// How a login's password check ended.
enum PasswordCheck {
    /// The account's password.
    Right { user: User, hash: PasswordHash, password: Password },
    /// Not it: the `login_failed` reason and the answer.
    Failed { reason: &'static str, error: Error },
}

/// Provider name for password and email-code sign-ins.
pub const PROVIDER_EMAIL: &str = "email";
/// Longest refresh token looked up (ours are 43 characters).
const MAX_REFRESH_TOKEN_LEN: usize = 256;
/// Longest avatar URL.
pub const MAX_AVATAR_URL_LEN: usize = 2048;

/// `POST /auth/signup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Email address.
    pub email: String,
    /// New password.
    pub password: String,
    /// Optional display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Optional language (a BCP 47 tag, e.g. `fr`): the emails' language.
    #[serde(default)]
    pub locale: Option<String>,
}

/// `POST /auth/login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// `POST /auth/refresh` and the optional body of `POST /auth/logout`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token (or taken from the cookie by the edge).
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// `PATCH /auth/me`: any of these; `null` (or an empty string) clears a
/// field. The address, phone, roles and the rest are the administrator's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// Display name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    /// Avatar URL (http or https).
    #[serde(default, deserialize_with = "present")]
    pub avatar_url: Option<Option<String>>,
    /// Language of the user's emails (a BCP 47 tag such as `fr` or `pt-BR`).
    #[serde(default, deserialize_with = "present")]
    pub locale: Option<Option<String>>,
}

impl ProfileRequest {
    /// Checks and normalises every field given, before anything is written.
    pub fn parse(self) -> Result<ProfileEdit, Error> {
        Ok(ProfileEdit {
            name: self.name.map(parse_name).transpose()?,
            avatar_url: self.avatar_url.map(parse_avatar_url).transpose()?,
            locale: self.locale.map(parse_locale).transpose()?,
        })
    }
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Checks an avatar URL, set by its user or an administrator, which other
/// users' browsers and the origin may fetch: an `https` URL of at most
/// [`MAX_AVATAR_URL_LEN`] as written and as normalised, without a user name
/// or password, on a public-looking name — no IP address, `localhost` or
/// single-label host, nor `.local`, `.internal`, `.localhost`, `.lan`,
/// `.home.arpa`, `.localdomain`. By name only: a public name may still
/// resolve to a private address, which whatever fetches the image must
/// check. Empty clears it.
pub(crate) fn parse_avatar_url(raw: Option<String>) -> Result<Option<String>, Error> {
    let Some(raw) = raw.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else { return Ok(None) };
    let bad = || {
        Error::validation(
            "invalid_avatar_url",
            format!("avatar_url: an https URL on a public host name of at most {MAX_AVATAR_URL_LEN} characters"),
        )
    };
    if raw.len() > MAX_AVATAR_URL_LEN {
        return Err(bad());
    }
    let url = url::Url::parse(&raw).map_err(|_| bad())?;
    let public = match url.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            let private = [".local", ".internal", ".localhost", ".lan", ".home.arpa", ".localdomain"];
            d.contains('.') && !private.iter().any(|s| d.ends_with(s))
        }
        _ => false,
    };
    let credentials = !url.username().is_empty() || url.password().is_some();
    if url.scheme() != "https" || credentials || !public || url.as_str().len() > MAX_AVATAR_URL_LEN {
        return Err(bad());
    }
    Ok(Some(url.to_string()))
}

/// Checks a language tag for a profile, normalised; empty clears it.
pub(crate) fn parse_locale(raw: Option<String>) -> Result<Option<String>, Error> {
    match raw.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(tag) => Ok(Some(Locale::parse(tag)?.to_string())),
    }
}

/// The profile fields that differ between `a` and `b`, by their API names.
pub(crate) fn changed_fields(a: &User, b: &User) -> Vec<String> {
    let mut fields = Vec::new();
    let mut check = |name: &str, changed: bool| {
        if changed {
            fields.push(name.to_string());
        }
    };
    check("email", a.email != b.email);
    check("name", a.name != b.name);
    check("avatar_url", a.avatar_url != b.avatar_url);
    check("phone", a.phone != b.phone);
    check("email_verified", a.email_verified != b.email_verified);
    check("locale", a.locale != b.locale);
    fields
}

/// Checks a display name: trimmed, at most [`MAX_NAME_CHARS`], no control
/// or bidirectional formatting characters ([`is_unsafe_in_name`]).
pub fn parse_name(name: Option<String>) -> Result<Option<String>, Error> {
    let Some(name) = name else { return Ok(None) };
    let name = name.trim().to_string();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::validation("invalid_name", format!("name: at most {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(is_unsafe_in_name) {
        return Err(Error::validation(
            "invalid_name",
            "name: must not contain control or bidirectional formatting characters",
        ));
    }
    Ok(Some(name))
}

/// `raw` if it has the shape of one of our refresh tokens, else 401
/// `invalid_refresh_token`.
pub(crate) fn refresh_token_shape(raw: Option<&str>) -> Result<&str, Error> {
    match raw {
        Some(t)
            if !t.is_empty()
                && t.len() <= MAX_REFRESH_TOKEN_LEN
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(t)
        }
        _ => Err(Error::InvalidRefreshToken),
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + RateLimitStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    /// Creates a password account and signs it in. Emits `user_created`.
    pub async fn signup(&self, meta: &Meta, rng: &mut impl Random, req: SignupRequest) -> Result<AuthResponse, Error> {
        let email = Email::parse(&req.email)?;
        self.throttle(meta, rng, Endpoint::Signup, email.as_str()).await?;
        let password = Password::new_checked(req.password, &self.config.password_policy)?;
        let name = parse_name(req.name)?;
        let locale = req.locale.as_deref().map(Locale::parse).transpose()?.map(|l| l.to_string());
        if self.store.user_by_email(email.as_str()).await?.is_some() {
            return Err(email_taken());
        }
        let hash = PasswordHash::create(&password, &self.config.hash_params, rng.bytes::<16>())?;
        let user = User {
            name,
            password_hash: Some(hash.as_str().to_string()),
            locale,
            ..User::new(UserId::generate(rng), email.as_str().to_string(), meta.now)
        };
        // The unique email index decides between racing signups.
        if !self.store.insert_user(&user).await? {
            return Err(email_taken());
        }
        // The account exists from here on, whether or not the sign-in hook
        // lets it sign in now: `user_created` is emitted either way. A new
        // account has no second factor: its session opens at once.
        let response =
            self.open_session(meta, rng, &user, PROVIDER_EMAIL, SignInBasis::epoch(user.auth_epoch), Amr::PWD).await;
        self.emit(
            meta,
            rng,
            vec![events::UserCreated {
                user_id: user.id.clone(),
                email: user.email.clone(),
                name: user.name.clone(),
                provider: PROVIDER_EMAIL.into(),
            }
            .into()],
        )
        .await?;
        response
    }

    /// Signs in with email and password. Unknown email and wrong password give
    /// the same answer after the same argon2 work. Emits `login` or
    /// `login_failed`. With a second factor on, the answer is the second
    /// step (and `login` waits for it).
    pub async fn login(&self, meta: &Meta, rng: &mut impl Random, req: LoginRequest) -> Result<SignIn, Error> {
        let email = Email::parse(&req.email)?;
        self.throttle(meta, rng, Endpoint::Login, email.as_str()).await?;
        // While the account's back-off lasts the password is not even looked
        // at; an attempt it admits is counted as a failure from here on.
        let admitted = self.login_backoff(meta, rng, email.as_str()).await?;
        let checked = self.check_password(&email, req.password).await;
        // Any end but the right password (an error too) is no longer in flight.
        if !matches!(checked, Ok(PasswordCheck::Right { .. })) {
            self.settle_login_attempt(admitted, email.as_str()).await;
        }
        let (user, hash, password) = match checked? {
            PasswordCheck::Right { user, hash, password } => (user, hash, password),
            PasswordCheck::Failed { reason, error } => {
                self.login_failed(meta, rng, &email, reason).await?;
                return Err(error);
            }
        };
        // The right password: the attempt counted on admission was no failure.
        if admitted.is_some() {
            self.store.clear_login_failures(email.as_str()).await?;
        }
        if user.banned {
            self.login_failed(meta, rng, &email, "banned").await?;
            return Err(banned());
        }
        if hash.needs_rehash(&self.config.hash_params) {
            let upgraded = PasswordHash::create(&password, &self.config.hash_params, rng.bytes::<16>())?;
            self.store.set_password_hash(&user.id, upgraded.as_str(), user.auth_epoch, meta.now).await?;
        }
        let started = self.start_session(meta, rng, &user).await;
        let signed_in = self.refusal_announced(meta, rng, started, (email.as_str(), ""), &mut Vec::new()).await?;
        if let SignIn::Complete(_) = signed_in {
            self.emit(meta, rng, vec![login_event(&user, PROVIDER_EMAIL, meta)]).await?;
        }
        Ok(signed_in)
    }

    /// A login's password check: the account with its hash and the password
    /// when they match, else why not (the `login_failed` reason) and the
    /// answer. An unknown account or one without a password is checked
    /// against a dummy hash, for the same argon2 work.
    async fn check_password(&self, email: &Email, presented: String) -> Result<PasswordCheck, Error> {
        let password = match Password::presented(presented, &self.config.password_policy) {
            Ok(p) => p,
            Err(error) => return Ok(PasswordCheck::Failed { reason: "password_too_long", error }),
        };
        let user = self.store.user_by_email(email.as_str()).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let hash = match &stored {
            Some(h) => PasswordHash::from_stored(h.clone()),
            None => PasswordHash::dummy(&self.config.hash_params),
        };
        let matches = hash.verify(&password);
        Ok(match (user, matches && stored.is_some()) {
            (Some(user), true) => PasswordCheck::Right { user, hash, password },
            (u, _) => {
                let reason = match (&u, &stored) {
                    (None, _) => "user_not_found",
                    (Some(_), None) => "no_password",
                    _ => "invalid_password",
                };
                PasswordCheck::Failed { reason, error: Error::InvalidCredentials }
            }
        })
    }

    async fn login_failed(&self, meta: &Meta, rng: &mut impl Random, email: &Email, reason: &str) -> Result<(), Error> {
        self.emit(meta, rng, vec![login_failed_event(email.as_str(), reason, meta)]).await
    }

    /// Exchanges a refresh token for a new pair, rotating it. Presenting a
    /// rotated token revokes the session. Emits `token_refreshed`, or
    /// `session_revoked` on reuse. A session past `SESSION_MAX_AGE` does not
    /// rotate: 401 `invalid_refresh_token`, as for any expired refresh token,
    /// and the session is revoked with `session_revoked` (once). A session
    /// over its `refresh` limit (`RATE_LIMITS`, per session, counted in the
    /// rotation's write) does not rotate either: 429 `rate_limited`, its
    /// token still current for when the window ends.
    pub async fn refresh(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        presented: Option<&str>,
    ) -> Result<AuthResponse, Error> {
        let old = refresh_token_shape(presented)?;
        self.throttle_ip(meta, rng, Endpoint::Refresh).await?;
        let limit = self.config.rate_limits.of(Endpoint::Refresh).session;
        let key_prefix = rate_limit::key_prefix(Endpoint::Refresh, KeyType::Session);
        let new_token = ids::secret_token(rng);
        let old_hash = ids::token_hash(old);
        let new_hash = ids::token_hash(&new_token);
        let claims = self.refresh_claims(meta, rng, &old_hash).await?;
        let rotation = self
            .store
            .rotate_refresh(&RotateRequest {
                old_hash: &old_hash,
                new_hash: &new_hash,
                now: meta.now,
                expires_at: meta.now.plus_secs(self.config.refresh_ttl_secs),
                max_age_secs: self.config.session_max_age_secs,
                ip_address: meta.ip.as_deref(),
                user_agent: meta.user_agent.as_deref(),
                extra_claims: claims.as_ref(),
                limit: limit.map(|rule| RotationLimit { key_prefix: &key_prefix, rule }),
            })
            .await?;
        let session = match rotation {
            Rotation::Rotated(s) => s,
            Rotation::Reused { session_id, user_id } => {
                self.emit(
                    meta,
                    rng,
                    vec![events::SessionRevoked { user_id, session_id: Some(session_id), revoke_all: false }.into()],
                )
                .await?;
                return Err(Error::InvalidRefreshToken);
            }
            Rotation::Dead => {
                self.end_session_past_max_age(meta, rng, &old_hash).await?;
                return Err(Error::InvalidRefreshToken);
            }
            Rotation::Unknown => return Err(Error::InvalidRefreshToken),
            Rotation::Throttled { count } => {
                let rule = limit.ok_or_else(|| Error::Internal("a rotation throttled without a limit".into()))?;
                return Err(self.refresh_throttled(meta, rng, &old_hash, rule, count).await);
            }
        };
        let user = match self.store.user_by_id(&session.user_id).await? {
            Some(u) if !u.banned => u,
            Some(_) => {
                self.store.revoke_session(&session.id, meta.now, "banned").await?;
                return Err(banned());
            }
            None => return Err(Error::InvalidRefreshToken),
        };
        let (access, expires_in) = self.session_access_token(meta, rng, &user, &session).await?;
        self.emit(
            meta,
            rng,
            vec![events::TokenRefreshed {
                user_id: user.id.clone(),
                ip_address: meta.ip.clone(),
                user_agent: meta.user_agent.clone(),
            }
            .into()],
        )
        .await?;
        Ok(AuthResponse { expires_in, ..self.auth_response(access, new_token, &user, &session) })
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore,
    E: EventSink,
    K: KeyRing,
{
    /// With `HOOK_ON_REFRESH`, asks the sign-in hook again about the session
    /// whose current refresh token hashes to `refresh_hash`, before it
    /// rotates: `Some(claims)` to replace the session's, `None` to keep them
    /// (no hook asked: the option is off, or the token is not a live
    /// session's current one — the rotation then refuses it as ever — or
    /// the hook failed with `HOOK_FAILURE_MODE=open`). A denial revokes the
    /// session (`session_revoked`) and is the refresh's answer, 403
    /// `signin_denied`; a failure failing closed is 503 `hook_unavailable`
    /// with nothing rotated, so the client may retry with the same token.
    async fn refresh_claims(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        refresh_hash: &str,
    ) -> Result<Option<ExtraClaims>, Error> {
        let Some(hook) = self.config.hook.as_ref().filter(|h| h.on_refresh) else { return Ok(None) };
        let session = match self.store.session_by_refresh(refresh_hash).await? {
            Some(s) if s.is_live(meta.now, self.config.session_max_age_secs) => s,
            _ => return Ok(None),
        };
        let user = match self.store.user_by_id(&session.user_id).await? {
            Some(u) if !u.banned => u,
            _ => return Ok(None),
        };
        let request = signin_hook::refresh_request(hook, &user, &session.id, &ids::uuid(rng), meta.now);
        let decision = signin_hook::decide(hook.failure_mode, self.hook.send(&request).await);
        if let Some(warning) = &decision.warning {
            self.hook.report(warning);
        }
        match decision.result {
            // Failing open on a refresh keeps what the hook last said.
            Ok(_) if decision.failed => Ok(None),
            Ok(claims) => Ok(Some(claims)),
            Err(e @ Error::Forbidden { .. }) => {
                if self.store.revoke_session(&session.id, meta.now, "signin_denied").await? {
                    self.emit(
                        meta,
                        rng,
                        vec![events::SessionRevoked {
                            user_id: session.user_id,
                            session_id: Some(session.id),
                            revoke_all: false,
                        }
                        .into()],
                    )
                    .await?;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// After a current refresh token failed to rotate: if its session has
    /// reached `SESSION_MAX_AGE` without being revoked, it ends now, revoked
    /// (reason `max_age`) with `session_revoked`. Of racing refreshes only
    /// the one whose write revoked it reports it.
    async fn end_session_past_max_age(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        refresh_hash: &str,
    ) -> Result<(), Error> {
        let Some(s) = self.store.session_by_refresh(refresh_hash).await? else { return Ok(()) };
        if s.revoked_at.is_some() || s.ends_at(self.config.session_max_age_secs) > meta.now {
            return Ok(());
        }
        if !self.store.revoke_session(&s.id, meta.now, "max_age").await? {
            return Ok(());
        }
        self.emit(
            meta,
            rng,
            vec![events::SessionRevoked { user_id: s.user_id, session_id: Some(s.id), revoke_all: false }.into()],
        )
        .await
    }

    /// Ends a session: the one of the access token if given, else the one of
    /// the refresh token. Emits `logout`.
    pub async fn logout(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        refresh: Option<&str>,
    ) -> Result<(), Error> {
        // A refresh token that is there must at least look like one, even
        // when the access token decides which session ends.
        if refresh.is_some() {
            refresh_token_shape(refresh)?;
        }
        let (user_id, sid) = if bearer.is_some() || refresh.is_none() {
            let p = self.authenticate(meta, bearer).await?;
            (p.user_id, p.session_id)
        } else {
            let hash = ids::token_hash(refresh_token_shape(refresh)?);
            // Any token of the family ends the session: a rotated one too
            // (a logout that raced the client's own refresh; see `revoke_token`).
            match self.store.session_by_issued_refresh(&hash).await? {
                Some(s) if s.is_live(meta.now, self.config.session_max_age_secs) => (s.user_id, s.id),
                _ => return Err(Error::InvalidRefreshToken),
            }
        };
        // Racing logouts of one session all succeed; only the one whose write
        // ended the session reports it.
        if !self.store.revoke_session(&sid, meta.now, "logout").await? {
            return Ok(());
        }
        self.emit(meta, rng, vec![events::Logout { user_id }.into()]).await
    }

    /// The caller's profile.
    pub async fn me(&self, meta: &Meta, bearer: Option<&str>) -> Result<UserResponse, Error> {
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        Ok(user.response(Some(&p.session_id)))
    }

    /// The user behind a principal; deleted or banned users are refused.
    pub async fn live_user(&self, p: &Principal) -> Result<User, Error> {
        match self.store.user_by_id(&p.user_id).await? {
            Some(u) if u.banned => Err(banned()),
            Some(u) => Ok(u),
            None => Err(Error::InvalidToken(crate::core::error::TokenError::SessionRevoked)),
        }
    }

    /// The caller's live sessions.
    pub async fn sessions(&self, meta: &Meta, bearer: Option<&str>) -> Result<Vec<SessionView>, Error> {
        let p = self.authenticate(meta, bearer).await?;
        let list = self.store.list_sessions(&p.user_id, meta.now).await?;
        let max_age = self.config.session_max_age_secs;
        Ok(list.iter().filter(|s| s.is_live(meta.now, max_age)).map(|s| s.view(&p.session_id)).collect())
    }

    /// Revokes one of the caller's own sessions. Emits `session_revoked`.
    pub async fn revoke_own_session(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        id: &str,
    ) -> Result<(), Error> {
        let p = self.authenticate(meta, bearer).await?;
        let id = SessionId::new(id);
        match self.store.session_by_id(&id).await? {
            Some(s) if s.user_id == p.user_id && s.is_live(meta.now, self.config.session_max_age_secs) => {}
            _ => return Err(Error::NotFound),
        }
        // The conditional write decides: of racing revocations exactly one
        // wins; the others find nothing left to revoke.
        if !self.store.revoke_session(&id, meta.now, "revoked_by_user").await? {
            return Err(Error::NotFound);
        }
        self.emit(
            meta,
            rng,
            vec![events::SessionRevoked { user_id: p.user_id, session_id: Some(id), revoke_all: false }.into()],
        )
        .await
    }

    /// Revokes all of the caller's sessions but the current one. Emits
    /// `session_revoked` with `revoke_all`. Returns how many were revoked.
    /// The revocation is made only while the caller's session is still live
    /// (401 `session_revoked` otherwise): a session revoked meanwhile — say
    /// by a takeover of the account — cannot sign out the sessions made
    /// after it.
    pub async fn revoke_other_sessions(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
    ) -> Result<u64, Error> {
        let p = self.authenticate(meta, bearer).await?;
        let n = self
            .store
            .revoke_other_sessions(&self.live_session(meta, &p), "revoke_others")
            .await?
            .ok_or(Error::InvalidToken(crate::core::error::TokenError::SessionRevoked))?;
        if n == 0 {
            // Nothing happened: no event.
            return Ok(0);
        }
        self.emit(
            meta,
            rng,
            vec![events::SessionRevoked { user_id: p.user_id, session_id: None, revoke_all: true }.into()],
        )
        .await?;
        Ok(n)
    }
}

/// The `login_failed` event for `email`, refused for `reason`, with the
/// request's client.
pub fn login_failed_event(email: &str, reason: impl Into<String>, meta: &Meta) -> Event {
    events::LoginFailed {
        email: email.to_string(),
        reason: reason.into(),
        ip_address: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    }
    .into()
}

/// The `login` event for `user` signing in through `provider`.
pub fn login_event(user: &User, provider: &str, meta: &Meta) -> Event {
    events::Login {
        user_id: user.id.clone(),
        email: user.email.clone(),
        provider: provider.into(),
        ip_address: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    }
    .into()
}

fn email_taken() -> Error {
    Error::Conflict { code: "email_taken", detail: "an account with this email already exists".into() }
}

/// The `login_failed` reason for a sign-in the hook refused or could not
/// approve, or whose session was refused because the account changed under
/// it; `None` for other errors.
pub fn signin_refusal(e: &Error) -> Option<&'static str> {
    match e {
        Error::Forbidden { code: "signin_denied", .. } => Some("signin_denied"),
        Error::HookUnavailable(_) => Some("hook_unavailable"),
        Error::Conflict { code: "account_changed", .. } => Some("account_changed"),
        _ => None,
    }
}

/// The refusal for banned accounts.
pub fn banned() -> Error {
    Error::forbidden("account_banned", "this account is banned")
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore,
    E: EventSink,
    K: KeyRing,
{
    /// `PATCH /auth/me`: the caller edits their own name, avatar or
    /// language ([`ProfileRequest`]), each field checked before any is
    /// written. Only the fields given are written, while the caller's session
    /// is live (401 `session_revoked` otherwise). Emits `user_updated` with
    /// the names of the fields that changed; none changed, nothing written.
    /// The API's answer is [`Deps::edit_profile_view`].
    pub async fn edit_profile(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: ProfileRequest,
    ) -> Result<(), Error> {
        let edit = req.parse()?;
        let p = self.authenticate(meta, bearer).await?;
        let before = self.live_user(&p).await?;
        self.write_profile_edit(meta, rng, &p, &before, &edit).await.map(|_| ())
    }

    /// Writes `edit` of `before` (the caller `p`'s account, read live),
    /// while `p`'s session is live, and emits `user_updated`: `before` with
    /// the edit applied, or `None` when it changes nothing (nothing
    /// written). Nothing is read after the write: a ban, sign-out or
    /// takeover committed since must neither turn a done edit into a
    /// refusal (a client would send it again) nor show the caller what came
    /// after.
    pub(crate) async fn write_profile_edit(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        p: &Principal,
        before: &User,
        edit: &ProfileEdit,
    ) -> Result<Option<User>, Error> {
        let after = edit.applied_to(before);
        let fields = changed_fields(before, &after);
        if fields.is_empty() {
            return Ok(None);
        }
        let caller = self.live_session(meta, p);
        if !self.store.edit_own_profile(&caller, edit).await? {
            return Err(self.refused_write(&caller).await);
        }
        self.emit(meta, rng, vec![events::UserUpdated { user_id: p.user_id.clone(), fields }.into()]).await?;
        Ok(Some(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_refuse_controls_and_bidirectional_formatting() {
        for bad in ["a\nb", "Ada\u{202E}nimda", "x\u{2066}y\u{2069}", "\u{200F}Ada", "a\u{061C}b"] {
            assert_eq!(parse_name(Some(bad.into())).unwrap_err().problem().code, "invalid_name", "{bad:?}");
        }
        // Other formatting characters some scripts need stay allowed (ZWJ in emoji, ZWNJ in Persian).
        for good in
            ["Ada Lovelace", "\u{1F469}\u{200D}\u{1F4BB}", "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0645}"]
        {
            assert_eq!(parse_name(Some(good.into())).unwrap().as_deref(), Some(good));
        }
    }

    proptest! {
        #[test]
        fn request_bodies_of_any_shape_parse_or_fail_cleanly(body in "\\PC{0,200}") {
            let _ = serde_json::from_str::<SignupRequest>(&body);
            let _ = serde_json::from_str::<LoginRequest>(&body);
            let _ = serde_json::from_str::<RefreshRequest>(&body);
        }

        #[test]
        fn json_objects_with_arbitrary_fields_parse_or_fail_cleanly(
            fields in prop::collection::hash_map("[a-z_]{1,10}", "\\PC{0,20}", 0..5),
        ) {
            let body = serde_json::json!(fields).to_string();
            if let Ok(req) = serde_json::from_str::<SignupRequest>(&body) {
                let _ = Email::parse(&req.email);
                let _ = parse_name(req.name);
            }
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(serde_json::from_str::<LoginRequest>(r#"{"email":"a@b.co","password":"x","admin":true}"#).is_err());
    }
}
