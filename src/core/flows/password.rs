//! Password recovery and change: `POST /auth/password/forgot` emails a
//! single-use reset link, `POST /auth/password/reset` consumes it, sets the
//! new password and revokes every session; `POST /auth/password/change`
//! needs the current password and revokes the caller's other sessions.

use serde::{Deserialize, Serialize};

use crate::core::emailed_secret::TokenKind;
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::account::login_failed_event;
use crate::core::flows::{Accepted, Deps, EmailRequest, Meta, Recipient};
use crate::core::ids::Random;
use crate::core::password::{Password, PasswordHash};
use crate::core::ports::{AccountStore, EmailTokenStore, EventSink, KeyRing, RateLimitStore, SessionStore, UserStore};
use crate::core::rate_limit::Endpoint;
use crate::core::takeover::AddressProof;

/// The one answer of `POST /auth/password/forgot`.
pub const FORGOT_ACCEPTED: Accepted =
    Accepted { message: "if an account uses this address, a password reset link is on its way" };

/// `POST /auth/password/reset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The token from the reset link.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

/// `POST /auth/password/change`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    /// The current password.
    pub old_password: String,
    /// The new password.
    pub new_password: String,
}

/// What a password reset or change did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasswordUpdated {
    /// For people.
    pub message: &'static str,
    /// How many sessions were revoked.
    pub revoked_sessions: u64,
}

fn wrong_current_password() -> Error {
    Error::forbidden("invalid_current_password", "the current password is not correct")
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + EmailTokenStore + RateLimitStore,
    E: EventSink,
    K: KeyRing,
{
    /// Issues a reset link for an existing, unbanned account and emits
    /// `password_reset_requested` with the token. Always the same answer.
    pub async fn forgot_password(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: EmailRequest,
    ) -> Result<Accepted, Error> {
        let to = self.admit_email_request(meta, rng, Endpoint::PasswordForgot, &req).await?;
        self.send_password_reset(meta, rng, &to).await?;
        Ok(FORGOT_ACCEPTED)
    }

    /// The part of [`Self::forgot_password`] after admission: issues and
    /// announces a reset link if the address has a usable account.
    pub async fn send_password_reset(&self, meta: &Meta, rng: &mut impl Random, to: &Recipient) -> Result<(), Error> {
        let email = &to.email;
        let user = match self.store.user_by_email(email.as_str()).await? {
            Some(u) if !u.banned => u,
            _ => return Ok(()),
        };
        let token = self
            .issue_link(meta, rng, TokenKind::PasswordReset, email, Some(&user), self.config.password_reset_ttl_secs)
            .await?;
        let locale = to.locale_or(user.locale.as_deref());
        self.emit(
            meta,
            rng,
            vec![events::PasswordResetRequested { user_id: user.id, email: user.email, token, locale }.into()],
        )
        .await
    }

    /// Consumes a reset link and sets the new password; every session of the
    /// account is revoked and the account epoch moves (every other emailed
    /// token dies) in the same write, and the email counts as verified (the
    /// link was read there): an unverified account is taken over, losing the
    /// identities that did not verify its address ([`crate::core::takeover`]).
    /// Emits `password_reset` and `session_revoked`, and what a takeover did.
    pub async fn reset_password(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: ResetRequest,
    ) -> Result<PasswordUpdated, Error> {
        // Validate first: a rejected password must not use the link up.
        let password = Password::new_checked(req.new_password, &self.config.password_policy)?;
        let user = self.consume_account_link(meta, TokenKind::PasswordReset, &req.token).await?;
        let hash = PasswordHash::create(&password, &self.config.hash_params, rng.bytes::<16>())?;
        let claim = AddressProof {
            user_id: &user.id,
            email: &user.email,
            link: None,
            new_password: Some(hash.as_str()),
            profile: Default::default(),
            now: meta.now,
        };
        // The address changed since the link was consumed: it proves nothing.
        let proven = self.store.prove_address(&claim).await?.ok_or_else(Error::invalid_link)?;
        // Whoever reset the password owns the mailbox: the back-off is lifted.
        self.store.clear_login_failures(&user.email).await?;
        let mut announced: Vec<Event> = vec![
            events::PasswordReset { user_id: user.id.clone() }.into(),
            events::SessionRevoked { user_id: user.id.clone(), session_id: None, revoke_all: true }.into(),
        ];
        announced.extend(proven.events(&user.id, &user.email, true));
        self.emit(meta, rng, announced).await?;
        Ok(PasswordUpdated {
            message: "password reset; every session was signed out",
            revoked_sessions: proven.revoked_sessions,
        })
    }

    /// Changes the caller's password after checking the current one; the
    /// caller's other sessions are revoked and the account epoch moves (every
    /// emailed token dies) in the same write — refused with 409
    /// `account_changed` if the epoch moved after the current password was
    /// checked. Emits `password_changed` and `session_revoked`. The current
    /// password is checked as a login's is: under the login's rate limits
    /// and the account's back-off (429), each check counted as a failed
    /// login until it proves right, a wrong one emitting `login_failed`
    /// (reason `invalid_current_password`).
    pub async fn change_password(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: ChangeRequest,
    ) -> Result<PasswordUpdated, Error> {
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        let new = Password::new_checked(req.new_password, &self.config.password_policy)?;
        let old = Password::presented(req.old_password, &self.config.password_policy)
            .map_err(|_| wrong_current_password())?;
        let current = match &user.password_hash {
            Some(h) => PasswordHash::from_stored(h.clone()),
            // A password-less account has no current password to prove:
            // it sets one through the reset link instead.
            None => return Err(wrong_current_password()),
        };
        // A guess at the current password is a guess at the account's
        // password: it is held to the login's limits and back-off, and a
        // wrong one is a failed login.
        self.throttle(meta, rng, Endpoint::Login, &user.email).await?;
        let admitted = self.login_backoff(meta, rng, &user.email).await?;
        if !current.verify(&old) {
            self.settle_login_attempt(admitted, &user.email).await;
            let failed = login_failed_event(&user.email, "invalid_current_password", meta);
            self.emit(meta, rng, vec![failed]).await?;
            return Err(wrong_current_password());
        }
        if admitted.is_some() {
            self.store.clear_login_failures(&user.email).await?;
        }
        let hash = PasswordHash::create(&new, &self.config.hash_params, rng.bytes::<16>())?;
        let revoked = self
            .store
            .set_password(&user.id, hash.as_str(), Some(&p.session_id), user.auth_epoch, meta.now, "password_changed")
            .await?
            .ok_or_else(Error::account_changed)?;
        self.emit(
            meta,
            rng,
            vec![
                events::PasswordChanged { user_id: user.id.clone() }.into(),
                events::SessionRevoked { user_id: user.id, session_id: None, revoke_all: true }.into(),
            ],
        )
        .await?;
        Ok(PasswordUpdated { message: "password changed; other sessions were signed out", revoked_sessions: revoked })
    }
}
