//! Magic links: `POST /auth/magic-link` emails a single-use sign-in link,
//! `POST /auth/magic-link/verify` consumes it and signs in.
//!
//! The request answers the same whatever the address: no account, a banned
//! account and a live account are indistinguishable to the caller. A link is
//! issued (and `magic_link_requested` emitted) only when it can sign in: for
//! an existing, unbanned account, or for an unknown address when
//! `ALLOW_PASSWORDLESS_SIGNUP` is on.

use serde::Deserialize;

use crate::core::emailed_secret::{is_link_token, TokenKind};
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::passwordless::Proof;
use crate::core::flows::{Accepted, Deps, EmailRequest, Meta, Recipient, SignIn};
use crate::core::ids::{self, Random};
use crate::core::locale::Locale;
use crate::core::ports::{
    AccountStore, EmailTokenStore, EventSink, KeyRing, MfaStore, RateLimitStore, SessionStore, UserStore,
};
use crate::core::rate_limit::Endpoint;
use crate::core::users::User;

/// `POST /auth/magic-link/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MagicLinkVerifyRequest {
    /// The token from the link.
    pub token: String,
    /// The language of an account this sign-in creates or takes over (a
    /// language tag; 422 `invalid_locale` otherwise).
    #[serde(default)]
    pub locale: Option<String>,
}

/// Provider name of magic-link sign-ins.
pub const PROVIDER_MAGIC_LINK: &str = "magic_link";

/// The one answer of `POST /auth/magic-link`.
pub const MAGIC_LINK_ACCEPTED: Accepted =
    Accepted { message: "if this address can sign in, a sign-in link is on its way" };

fn signed_in(user: &User) -> Event {
    events::MagicLinkLogin { user_id: user.id.clone(), email: user.email.clone() }.into()
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + EmailTokenStore + RateLimitStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    /// Issues a magic link if the address can sign in; emits
    /// `magic_link_requested` with the token then. Always the same answer.
    pub async fn request_magic_link(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: EmailRequest,
    ) -> Result<Accepted, Error> {
        let to = self.admit_email_request(meta, rng, Endpoint::MagicLink, &req).await?;
        self.send_magic_link(meta, rng, &to).await?;
        Ok(MAGIC_LINK_ACCEPTED)
    }

    /// The part of [`Self::request_magic_link`] after admission: issues and
    /// announces the link if the address can sign in, else does nothing.
    pub async fn send_magic_link(&self, meta: &Meta, rng: &mut impl Random, to: &Recipient) -> Result<(), Error> {
        let email = &to.email;
        let Some(owner) = self.emailed_sign_in_owner(email).await? else { return Ok(()) };
        let token = self
            .issue_link(meta, rng, TokenKind::MagicLink, email, owner.as_ref(), self.config.magic_link_ttl_secs)
            .await?;
        let locale = to.locale_or(owner.as_ref().and_then(|u| u.locale.as_deref()));
        let user_id = owner.map(|u| u.id);
        self.emit(
            meta,
            rng,
            vec![events::MagicLinkRequested { user_id, email: email.as_str().to_string(), token, locale }.into()],
        )
        .await
    }

    /// The address the magic link `raw` signs in to, without using it up;
    /// `None` if it cannot be used (malformed, unknown, used, superseded or
    /// expired). The hosted landing page shows it on its button, so a link
    /// someone mailed for their own account cannot sign a victim into that
    /// account without the page saying whose it is.
    pub async fn magic_link_account(&self, meta: &Meta, raw: &str) -> Result<Option<String>, Error> {
        let raw = raw.trim();
        if !is_link_token(raw) {
            return Ok(None);
        }
        let token = self.store.peek_email_token(TokenKind::MagicLink, &ids::token_hash(raw), meta.now).await?;
        Ok(token.map(|t| t.email))
    }

    /// Consumes a magic link and signs its owner in (creating the account
    /// under passwordless sign-up). Emits `magic_link_login` and `login`.
    pub async fn verify_magic_link(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: MagicLinkVerifyRequest,
    ) -> Result<SignIn, Error> {
        // A malformed language is refused before the link is used up.
        let locale = req.locale.as_deref().map(Locale::parse).transpose()?;
        let token = self.consume_link(meta, TokenKind::MagicLink, &req.token).await?;
        let proof = Proof {
            token: &token,
            provider: PROVIDER_MAGIC_LINK,
            refuse: Error::invalid_link,
            signed_in,
            locale: locale.as_ref(),
        };
        self.passwordless_sign_in(meta, rng, proof).await
    }
}
