//! Email verification: `POST /auth/email/verify/request` (authenticated)
//! emails a single-use link, `POST /auth/email/verify` consumes it and marks
//! the address verified — taking an unverified account over unless a
//! signed-in holder of the account follows it ([`Deps::verify_email`]).

use serde::Serialize;

use crate::core::email_address::Email;
use crate::core::emailed_secret::TokenKind;
use crate::core::error::Error;
use crate::core::events;
use crate::core::flows::{Accepted, Deps, Meta, TokenRequest};
use crate::core::ids::Random;
use crate::core::ports::{AccountStore, EmailTokenStore, EventSink, KeyRing, RateLimitStore, SessionStore, UserStore};
use crate::core::rate_limit::Endpoint;
use crate::core::takeover::AddressProof;

/// The answer when a verification link was sent.
pub const VERIFICATION_SENT: Accepted = Accepted { message: "a verification link is on its way" };
/// The answer when there is nothing to verify.
pub const ALREADY_VERIFIED: Accepted = Accepted { message: "this address is already verified" };

/// What `POST /auth/email/verify` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailVerified {
    /// The verified address.
    pub email: String,
    /// Always true.
    pub email_verified: bool,
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + EmailTokenStore + RateLimitStore,
    E: EventSink,
    K: KeyRing,
{
    /// Emails the caller a verification link (emits
    /// `email_verification_requested` with the token), unless the address is
    /// verified already.
    ///
    /// Each request that would send one is first counted against the
    /// `email/verify/request` limits, per client IP and per the account's
    /// address, in one atomic write ([`Self::throttle`]): sign-up does not
    /// prove the address, so without them whoever signs up under someone
    /// else's address could mail them a link per request. Over a limit: 429
    /// `rate_limited`, nothing issued or sent.
    pub async fn request_email_verification(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
    ) -> Result<Accepted, Error> {
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        if user.email_verified {
            return Ok(ALREADY_VERIFIED);
        }
        let email = Email::parse(&user.email)?;
        self.throttle(meta, rng, Endpoint::EmailVerifyRequest, email.as_str()).await?;
        let token = self
            .issue_link(
                meta,
                rng,
                TokenKind::EmailVerification,
                &email,
                Some(&user),
                self.config.email_verification_ttl_secs,
            )
            .await?;
        self.emit(
            meta,
            rng,
            vec![events::EmailVerificationRequested {
                user_id: user.id,
                email: user.email,
                token,
                locale: user.locale,
            }
            .into()],
        )
        .await?;
        Ok(VERIFICATION_SENT)
    }

    /// Consumes a verification link; the address it was sent to is verified
    /// if it is still the account's. Emits `email_verified`.
    ///
    /// Following the link proves the caller reads the address, like every
    /// other proof, so it takes an unverified account over
    /// ([`crate::core::takeover`]: the password cleared, every session
    /// revoked, identities that did not verify the address dropped, emailed
    /// tokens dead; `user_updated` and `session_revoked` say so) — unless the
    /// request is authenticated (`bearer`, or the access cookie) by a live
    /// session of that same account. Then a signed-in holder confirms the
    /// account as it stands: their password and sessions stay. That needs
    /// both the link, from the mailbox, and the account's session, in one
    /// request: a planter who asked for the link has the session but never
    /// the link, so the owner following it without being signed in takes the
    /// account. A credential that is presented must authenticate (401, the
    /// link not spent); one of another account counts as none.
    pub async fn verify_email(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: TokenRequest,
        bearer: Option<&str>,
    ) -> Result<EmailVerified, Error> {
        let holder = match bearer {
            Some(_) => Some(self.authenticate(meta, bearer).await?),
            None => None,
        };
        let user = self.consume_account_link(meta, TokenKind::EmailVerification, &req.token).await?;
        let verified = EmailVerified { email: user.email.clone(), email_verified: true };
        if let Some(p) = holder.as_ref().filter(|p| p.user_id == user.id) {
            // Decided with the holder's session in the same write: one that
            // was revoked meanwhile (a takeover, a logout) is no holder.
            match self.store.set_email_verified(&self.live_session(meta, p), &user.email).await? {
                Some(true) => {
                    let event = events::EmailVerified { user_id: user.id, email: user.email };
                    self.emit(meta, rng, vec![event.into()]).await?;
                    return Ok(verified);
                }
                Some(false) => return Ok(verified),
                None => {}
            }
        }
        let claim = AddressProof {
            user_id: &user.id,
            email: &user.email,
            link: None,
            new_password: None,
            profile: Default::default(),
            now: meta.now,
        };
        // The address changed since the link was consumed: it proves nothing.
        let proven = self.store.prove_address(&claim).await?.ok_or_else(Error::invalid_link)?;
        let announced = proven.events(&user.id, &user.email, false);
        if !announced.is_empty() {
            self.emit(meta, rng, announced).await?;
        }
        Ok(verified)
    }
}
