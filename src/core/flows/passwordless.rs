//! What magic links, email codes and the other emailed secrets share:
//! issuing a secret (the previous one of its kind dies, and it is bound to
//! the account epoch it was issued under), and signing in the owner of a
//! consumed magic link or code — creating the account when passwordless
//! sign-up is on, refusing banned users, taking an unverified account over
//! ([`crate::core::takeover`]), opening the session.

use crate::core::amr::Amr;
use crate::core::email_address::Email;
use crate::core::emailed_secret::{is_link_token, EmailToken, TokenKind};
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::account::{banned, login_event, login_failed_event};
use crate::core::flows::{Deps, Meta, SignIn};
use crate::core::ids::{self, Random, UserId};
use crate::core::locale::Locale;
use crate::core::ports::{AccountStore, EmailTokenStore, EventSink, KeyRing, MfaStore, SessionStore, UserStore};
use crate::core::session::SignInBasis;
use crate::core::takeover::{AddressProof, ProverProfile};
use crate::core::users::User;

/// The stored form of a secret being issued.
pub(crate) enum Secret {
    /// A link token's hash.
    Link(String),
    /// A code: its random challenge's hash and the code's keyed hash.
    Code {
        /// Hash of the random challenge (the token's unique key).
        challenge: String,
        /// [`crate::core::emailed_secret::CodeKey::hash`] of the code.
        code_hash: String,
    },
}

/// What the caller proved by consuming a secret, and what to say about it.
pub struct Proof<'t> {
    /// The consumed token.
    pub token: &'t EmailToken,
    /// Provider name for `user_created` and `login` (`magic_link`, `email_otp`).
    pub provider: &'static str,
    /// The refusal when the token leads to no usable account.
    pub refuse: fn() -> Error,
    /// The flow's own sign-in event (`magic_link_login`, `email_otp_login`).
    pub signed_in: fn(&User) -> Event,
    /// The language the caller asked for with this sign-in: kept by an
    /// account it creates or takes over. Only the mailbox's reader makes
    /// this request, unlike the one that sent the secret.
    pub locale: Option<&'t Locale>,
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + EmailTokenStore,
    E: EventSink,
    K: KeyRing,
{
    /// Whom an emailed sign-in (a magic link or a code) for `email` would
    /// sign in: `Some(Some(user))` an account that may sign in,
    /// `Some(None)` a new password-less account (`ALLOW_PASSWORDLESS_SIGNUP`),
    /// `None` nobody — a banned account, or an unknown address without
    /// password-less sign-up — and then nothing is sent.
    pub(crate) async fn emailed_sign_in_owner(&self, email: &Email) -> Result<Option<Option<User>>, Error> {
        Ok(match self.store.user_by_email(email.as_str()).await? {
            Some(u) if u.banned => None,
            Some(u) => Some(Some(u)),
            None if self.config.allow_passwordless_signup => Some(None),
            None => None,
        })
    }

    /// Makes a fresh link token of `kind` for `email` (and its account
    /// `owner`, as just read), valid for `ttl_secs`, stores only its hash,
    /// and returns the token to send.
    pub(crate) async fn issue_link(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        kind: TokenKind,
        email: &Email,
        owner: Option<&User>,
        ttl_secs: u64,
    ) -> Result<String, Error> {
        let token = ids::secret_token(rng);
        self.issue_email_token(meta, kind, email, owner, ttl_secs, Secret::Link(ids::token_hash(&token))).await?;
        Ok(token)
    }

    /// Consumes the live link token of `kind` that `raw` (as pasted, trimmed)
    /// names; `invalid_link` when it is malformed, unknown, used, superseded
    /// or expired.
    pub(crate) async fn consume_link(&self, meta: &Meta, kind: TokenKind, raw: &str) -> Result<EmailToken, Error> {
        let raw = raw.trim();
        if !is_link_token(raw) {
            return Err(Error::invalid_link());
        }
        self.store.consume_email_token(kind, &ids::token_hash(raw), meta.now).await?.ok_or_else(Error::invalid_link)
    }

    /// Consumes a link token of `kind` sent to an account, and returns that
    /// account — `invalid_link` unless it still has the address the link
    /// was sent to.
    pub(crate) async fn consume_account_link(&self, meta: &Meta, kind: TokenKind, raw: &str) -> Result<User, Error> {
        let token = self.consume_link(meta, kind, raw).await?;
        let user = match &token.user_id {
            Some(id) => self.store.user_by_id(id).await?,
            None => None,
        };
        match user {
            Some(u) if u.email == token.email => Ok(u),
            _ => Err(Error::invalid_link()),
        }
    }

    /// Stores a fresh secret of `kind` for `email` (and its account `owner`,
    /// as just read: the secret dies if the owner's epoch moves after that
    /// read), valid for `ttl_secs`; the previous live one of that kind and
    /// email dies.
    pub(crate) async fn issue_email_token(
        &self,
        meta: &Meta,
        kind: TokenKind,
        email: &Email,
        owner: Option<&User>,
        ttl_secs: u64,
        secret: Secret,
    ) -> Result<(), Error> {
        let (hash, code_hash) = match secret {
            Secret::Link(hash) => (hash, None),
            Secret::Code { challenge, code_hash } => (challenge, Some(code_hash)),
        };
        let token = EmailToken {
            hash,
            kind,
            email: email.as_str().to_string(),
            user_id: owner.map(|u| u.id.clone()),
            user_epoch: owner.map_or(0, |u| u.auth_epoch),
            code_hash,
            created_at: meta.now,
            expires_at: meta.now.plus_secs(ttl_secs),
            attempts: 0,
        };
        self.store.issue_email_token(&token).await
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + EmailTokenStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    /// Signs in the owner of a consumed magic link or code (`amr` `otp`)
    /// and publishes `user_created` (if the account was made now), what a
    /// takeover of an unverified account did
    /// ([`crate::core::takeover::Proven::events`]), the flow's own event and
    /// `login` — the last two only once signed in: with a second factor on,
    /// they wait for the second step.
    pub(crate) async fn passwordless_sign_in(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        proof: Proof<'_>,
    ) -> Result<SignIn, Error> {
        let t = proof.token;
        let mut events = Vec::new();
        let found = match &t.user_id {
            Some(id) => self.store.user_by_id(id).await?,
            None => self.store.user_by_email(&t.email).await?,
        };
        // A token is for the address it was sent to: if the account's email
        // changed since, the token proves nothing about the account.
        let mut user = match found {
            Some(u) if u.email == t.email => u,
            Some(_) => return Err((proof.refuse)()),
            None if t.user_id.is_none() && self.config.allow_passwordless_signup => {
                let (user, created) = self.create_passwordless(meta, rng, &t.email, proof.locale).await?;
                if created {
                    events.push(
                        events::UserCreated {
                            user_id: user.id.clone(),
                            email: user.email.clone(),
                            name: None,
                            provider: proof.provider.into(),
                        }
                        .into(),
                    );
                }
                user
            }
            None => return Err((proof.refuse)()),
        };
        if user.banned {
            self.emit(meta, rng, vec![login_failed_event(&user.email, "banned", meta)]).await?;
            return Err(banned());
        }
        // The session belongs to the account as the token knew it: the
        // epoch the token was issued under (and consumed at — for a token
        // issued before the account existed, 0, the epoch the account had
        // then). A password change or reset, a ban, a new address that
        // lands between the consumption and the session is not undone by a
        // sign-in that started before it: 409 `account_changed`.
        let mut basis = SignInBasis::epoch(t.user_epoch);
        // Consuming a secret sent to the address proves the caller reads it:
        // an unverified account is theirs now, and whatever its earlier holder
        // set up goes, in one write (see `core::takeover`). The session then
        // belongs to the account as that write left it.
        if !user.email_verified {
            let profile = ProverProfile { locale: proof.locale.map(Locale::as_str), ..Default::default() };
            let claim = AddressProof {
                user_id: &user.id,
                email: &t.email,
                link: None,
                new_password: None,
                profile,
                now: meta.now,
            };
            let Some(proven) = self.store.prove_address(&claim).await? else { return Err((proof.refuse)()) };
            events.extend(proven.events(&user.id, &user.email, false));
            if proven.took_over {
                user.password_hash = None;
                profile.apply_to(&mut user);
                basis = SignInBasis::epoch(proven.auth_epoch);
            }
            user.email_verified = true;
            user.auth_epoch = proven.auth_epoch;
        }
        // Refused (or the sign-in hook could not be asked): an account made
        // just now still exists and is announced.
        let started = self.start_session_via(meta, rng, &user, proof.provider, basis, Amr::OTP).await;
        let signed_in = self.refusal_announced(meta, rng, started, (&user.email, ""), &mut events).await?;
        if let SignIn::Complete(_) = signed_in {
            events.push((proof.signed_in)(&user));
            events.push(login_event(&user, proof.provider, meta));
        }
        if !events.is_empty() {
            self.emit(meta, rng, events).await?;
        }
        Ok(signed_in)
    }

    /// Creates a verified, password-less account for `email` in `locale`;
    /// if a racing request created it first, that account is returned
    /// (`false`).
    async fn create_passwordless(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        email: &str,
        locale: Option<&Locale>,
    ) -> Result<(User, bool), Error> {
        let user = User {
            email_verified: true,
            locale: locale.map(Locale::to_string),
            ..User::new(UserId::generate(rng), email.to_string(), meta.now)
        };
        if self.store.insert_user(&user).await? {
            return Ok((user, true));
        }
        match self.store.user_by_email(email).await? {
            Some(u) => Ok((u, false)),
            None => Err(Error::Internal("passwordless sign-up: insert conflicted but no user found".into())),
        }
    }
}
