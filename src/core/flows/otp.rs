//! Email one-time codes: `POST /auth/otp` emails a six-digit code,
//! `POST /auth/otp/verify` checks it and signs in.
//!
//! Same rules as magic links (one answer whatever the address, a new code
//! kills the old one, banned users refused, passwordless sign-up optional),
//! plus an attempt limit: every verification first counts an attempt against
//! the live code in one conditional write, and only then compares — so
//! concurrent guesses are all counted, and after [`OTP_MAX_ATTEMPTS`] the
//! code is dead even for the right digits.
//!
//! A new code would start those attempts over, so each address also has a
//! daily cap on failed verifications, across codes
//! (`OTP_MAX_FAILURES_PER_DAY`, default 20): every verification is charged
//! to it in the same atomic count as the rate limits, before anything is
//! compared, and given back only when it proves not to be a failed guess (the
//! right code, or a malformed one that tests nothing). Once the cap is
//! reached, verification for the address is refused (429) until the day's
//! window ends, whatever the code — so at most that many wrong codes are
//! ever checked per day, however many codes are requested or guesses race.

use serde::Deserialize;

use crate::core::email_address::Email;
use crate::core::emailed_secret::{otp_code, parse_code, CodeKey, TokenKind, OTP_MAX_ATTEMPTS};
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::account::login_failed_event;
use crate::core::flows::passwordless::{Proof, Secret};
use crate::core::flows::{Accepted, Deps, EmailRequest, Meta, Recipient, SignIn};
use crate::core::ids::{self, Random};
use crate::core::locale::Locale;
use crate::core::ports::{
    AccountStore, EmailTokenStore, EventSink, KeyRing, MfaStore, RateLimitStore, SessionStore, UserStore,
};
use crate::core::rate_limit::Endpoint;
use crate::core::users::User;

/// Provider name of email-code sign-ins.
pub const PROVIDER_EMAIL_OTP: &str = "email_otp";

/// The one answer of `POST /auth/otp`.
pub const OTP_ACCEPTED: Accepted = Accepted { message: "if this address can sign in, a sign-in code is on its way" };

/// `POST /auth/otp/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpVerifyRequest {
    /// The address the code was sent to.
    pub email: String,
    /// The six digits.
    pub code: String,
    /// The language of an account this sign-in creates or takes over (a
    /// language tag; 422 `invalid_locale` otherwise).
    #[serde(default)]
    pub locale: Option<String>,
}

fn signed_in(user: &User) -> Event {
    events::EmailOtpLogin { user_id: user.id.clone(), email: user.email.clone() }.into()
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + EmailTokenStore + RateLimitStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    /// Issues a code if the address can sign in; emits `email_otp_requested`
    /// with the code then. Always the same answer.
    pub async fn request_otp(&self, meta: &Meta, rng: &mut impl Random, req: EmailRequest) -> Result<Accepted, Error> {
        let to = self.admit_email_request(meta, rng, Endpoint::Otp, &req).await?;
        self.send_otp(meta, rng, &to).await?;
        Ok(OTP_ACCEPTED)
    }

    /// The part of [`Self::request_otp`] after admission: issues and
    /// announces a code if the address can sign in, else does nothing.
    pub async fn send_otp(&self, meta: &Meta, rng: &mut impl Random, to: &Recipient) -> Result<(), Error> {
        let email = &to.email;
        let Some(owner) = self.emailed_sign_in_owner(email).await? else { return Ok(()) };
        let challenge = ids::token_hash(&ids::secret_token(rng));
        let code = otp_code(rng);
        let code_hash = CodeKey::from_kek(&self.config.kek).hash(&challenge, email.as_str(), &code);
        self.issue_email_token(
            meta,
            TokenKind::EmailOtp,
            email,
            owner.as_ref(),
            self.config.otp_ttl_secs,
            Secret::Code { challenge, code_hash },
        )
        .await?;
        let locale = to.locale_or(owner.as_ref().and_then(|u| u.locale.as_deref()));
        let user_id = owner.map(|u| u.id);
        self.emit(
            meta,
            rng,
            vec![events::EmailOtpRequested { user_id, email: email.as_str().to_string(), code, locale }.into()],
        )
        .await
    }

    /// Checks a code and signs its owner in. Every wrong code gets the same
    /// 401 `invalid_code`, whether or not the address has an account, and
    /// emits `login_failed`. Success emits `email_otp_login` and `login`.
    /// Over a rate limit or the address's daily cap on failed codes: 429
    /// `rate_limited`, before the code is looked at.
    pub async fn verify_otp(&self, meta: &Meta, rng: &mut impl Random, req: OtpVerifyRequest) -> Result<SignIn, Error> {
        let email = Email::parse(&req.email)?;
        let locale = req.locale.as_deref().map(Locale::parse).transpose()?;
        let charge = self.throttle_code_attempt(meta, rng, Endpoint::OtpVerify, email.as_str()).await?;
        let Some(code) = parse_code(&req.code) else {
            // Not a code: nothing was guessed.
            self.refund_code_attempt(charge).await;
            return Err(Error::invalid_code());
        };
        let challenge = self.store.count_code_attempt(email.as_str(), meta.now, OTP_MAX_ATTEMPTS).await?;
        let key = CodeKey::from_kek(&self.config.kek);
        let matched = challenge
            .filter(|c| c.code_hash.as_deref().is_some_and(|stored| key.verify(&c.hash, &c.email, code, stored)));
        let Some(challenge) = matched else {
            self.emit(meta, rng, vec![login_failed_event(email.as_str(), "invalid_code", meta)]).await?;
            return Err(Error::invalid_code());
        };
        // The attempt is counted; now the one conditional consumption decides
        // between racing right answers.
        let token = self
            .store
            .consume_email_token(TokenKind::EmailOtp, &challenge.hash, meta.now)
            .await?
            .ok_or_else(Error::invalid_code)?;
        // The right code: not a failure, whatever the sign-in decides next.
        self.refund_code_attempt(charge).await;
        let proof = Proof {
            token: &token,
            provider: PROVIDER_EMAIL_OTP,
            refuse: Error::invalid_code,
            signed_in,
            locale: locale.as_ref(),
        };
        self.passwordless_sign_in(meta, rng, proof).await
    }
}
