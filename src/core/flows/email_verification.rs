//! Email verification: `POST /auth/email/verify/request` (authenticated)
//! emails a single-use link, `POST /auth/email/verify` consumes it and marks
//! the address verified.

use serde::Serialize;

use crate::core::email::Email;
use crate::core::email_token::TokenKind;
use crate::core::error::Error;
use crate::core::events;
use crate::core::flows::{Accepted, Deps, Meta, TokenRequest};
use crate::core::ids::Random;
use crate::core::ports::{AccountStore, EmailTokenStore, EventSink, KeyRing, SessionStore, UserStore};

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
    S: UserStore + SessionStore + AccountStore + EmailTokenStore,
    E: EventSink,
    K: KeyRing,
{
    /// Emails the caller a verification link (emits
    /// `email_verification_requested` with the token), unless the address is
    /// verified already.
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
            vec![events::EmailVerificationRequested { user_id: user.id, email: user.email, token }.into()],
        )
        .await?;
        Ok(VERIFICATION_SENT)
    }

    /// Consumes a verification link; the address it was sent to is verified
    /// if it is still the account's. Emits `email_verified`.
    ///
    /// Unlike the other proofs of an address this never takes the account
    /// over: the link was asked for by a signed-in holder of the account, so
    /// following it confirms the account as it stands, password and all (a
    /// holder who chose their own password keeps it). Someone who did not
    /// make the account is told by the email not to follow it, and takes it
    /// over with a sign-in link or code, or a password reset, instead (see
    /// [`crate::core::takeover`]).
    pub async fn verify_email(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: TokenRequest,
    ) -> Result<EmailVerified, Error> {
        let user = self.consume_account_link(meta, TokenKind::EmailVerification, &req.token).await?;
        if self.store.set_email_verified(&user.id, &user.email, meta.now).await? {
            self.emit(meta, rng, vec![events::EmailVerified { user_id: user.id, email: user.email.clone() }.into()])
                .await?;
        }
        Ok(EmailVerified { email: user.email, email_verified: true })
    }
}
