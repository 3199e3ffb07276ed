//! Proving an account's address, and what the first proof does to an
//! unverified account: it takes it over. The defence against pre-hijacked
//! accounts (Sudhodanan & Paverd, "Pre-hijacked accounts", USENIX Security
//! 2022: the classic-federated merge and the unexpired session).
//!
//! Premise: signing up needs no proof of the address, so an account whose
//! address is unverified may have been made by anyone — `victim@corp.com`
//! with the attacker's password. Whoever later proves they read that
//! mailbox (a consumed magic link, email code or reset link, or a provider
//! that verified the address) is the address's owner, and the account is
//! theirs from then on. Nothing the earlier holder set up may survive that
//! proof, or the "planter" keeps a way in:
//!
//! - the password is cleared (a reset replaces it with the prover's);
//! - every session is revoked, and with them their refresh tokens;
//! - every linked identity is dropped but those whose provider verified this
//!   very address ([`keeps_identity`]): an identity linked by the planter
//!   (their own GitHub, or one whose email the provider never checked) is
//!   another way in;
//! - every second factor goes (TOTP, on or enrolling, the backup codes, and
//!   every passkey):
//!   the planter's authenticator would otherwise stand between the owner
//!   and their account, or vouch for the planter;
//! - the profile the earlier holder gave the account (name, picture, phone,
//!   language) is replaced by what the prover brings ([`ProverProfile`]: a
//!   provider's claims, the language asked for with a magic link or code),
//!   or cleared: the planter's name must not greet the owner;
//! - the account epoch moves, which kills every emailed token issued before
//!   (the planter may have asked for some), every sign-in that read the
//!   account before and has not yet made its session (a planter's password
//!   login racing the takeover), and every OAuth link started before.
//!
//! And nothing the planter is doing across the takeover survives it either:
//! a request that authenticated before the takeover and writes after it —
//! starting a link ([`crate::core::oauth::OAuthStore::put_link_state`]),
//! unlinking, signing the other sessions out — writes only while its session
//! is live ([`crate::core::session::LiveSession`]), which the takeover
//! revoked; a sign-in through a provider identity writes its session only
//! while that identity is still linked
//! ([`crate::core::session::SignInBasis`]), which the takeover may have
//! dropped.
//!
//! All of it, the verified flag and the identity the proof links (an OAuth
//! sign-in) are one atomic write ([`crate::core::ports::AccountStore::prove_address`]),
//! decided on the account as it is in that write: of racing proofs one takes
//! over and the others find the address verified. A proof of an address that
//! is already verified changes nothing but the identity it links (a reset
//! still replaces the password and revokes every session).
//!
//! Which paths set `email_verified`, and what each does:
//!
//! | path | takes over an unverified account |
//! |---|---|
//! | magic link, email code (`passwordless_sign_in`) | yes |
//! | OAuth sign-in whose provider verified the address (link by email) | yes |
//! | password reset link | yes (the new password is the prover's) |
//! | `/auth/email/verify` | yes, unless the request is authenticated by a live session of that same account: then a signed-in holder confirms the account as it stands (their password and sessions stay). A planter has the session but never the link (it goes to the owner's mailbox); an owner who follows it anywhere else takes the account, and so does a legitimate holder who is not signed in where they follow it (they then sign in by link or code, or reset the password: the email says so). |
//! | admin `PATCH` with `email_verified: true` | no: an operator vouches for the account as it stands |
//! | a new account (passwordless sign-up, OAuth with a verified email) | nothing to take over |
//!
//! What the takeover did is announced with existing events ([`Proven::events`]):
//! `email_verified`, `session_revoked` with `revoke_all`, `user_updated`
//! whose `fields` name what was removed or replaced (`password`, `providers`,
//! `name`, `avatar_url`, `phone`), and
//! `mfa_disabled` when a TOTP that was on went, `passkey_removed` for each
//! passkey that went.

use crate::core::events::{self, Event};
use crate::core::ids::UserId;
use crate::core::mfa::Method;
use crate::core::oauth::LinkedIdentity;
use crate::core::time::UnixTime;
use crate::core::users::User;

/// The `revoke_reason` of sessions revoked by a takeover.
pub const TAKEOVER_REVOKE_REASON: &str = "address_proven";

/// A proof that whoever is acting reads the mail of `email`, the address of
/// account `user_id`, to be recorded in one write.
#[derive(Debug, Clone, Copy)]
pub struct AddressProof<'a> {
    /// The account.
    pub user_id: &'a UserId,
    /// The address proven; the write does nothing unless it is still the
    /// account's.
    pub email: &'a str,
    /// An identity to link in the same write (an OAuth sign-in whose provider
    /// verified `email`). A takeover happens only if it gets linked.
    pub link: Option<&'a LinkedIdentity>,
    /// A password reset: the new password hash, set whether or not the
    /// account was verified, with every session revoked.
    pub new_password: Option<&'a str>,
    /// What the prover brings to an account it takes over.
    pub profile: ProverProfile<'a>,
    /// Now.
    pub now: UnixTime,
}

/// The profile a takeover gives the account in place of the earlier
/// holder's: `phone` always goes; name, picture and language are the
/// prover's (`None`: cleared). Each already checked as its field is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProverProfile<'a> {
    /// A display name (a provider's `name` claim).
    pub name: Option<&'a str>,
    /// A picture URL (a provider's `picture` claim).
    pub avatar_url: Option<&'a str>,
    /// A normalised language tag (a provider's `locale` claim, or the one
    /// asked for with the magic link or code that proves the address).
    pub locale: Option<&'a str>,
}

impl ProverProfile<'_> {
    /// What the takeover's write does to the profile, done to `user` as held
    /// in memory: phone gone, the rest the prover's.
    pub fn apply_to(&self, user: &mut User) {
        user.name = self.name.map(str::to_string);
        user.avatar_url = self.avatar_url.map(str::to_string);
        user.phone = None;
        user.locale = self.locale.map(str::to_string);
    }
}

/// The profile fields of an account before a takeover, to tell which it
/// changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileBefore {
    /// `name`.
    pub name: Option<String>,
    /// `avatar_url`.
    pub avatar_url: Option<String>,
    /// `phone`.
    pub phone: Option<String>,
}

impl ProfileBefore {
    /// The names of the fields (`name`, `avatar_url`, `phone`) that `now`
    /// changes, for `user_updated`.
    pub fn changed_by(&self, now: &ProverProfile<'_>) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.name.as_deref() != now.name {
            out.push("name");
        }
        if self.avatar_url.as_deref() != now.avatar_url {
            out.push("avatar_url");
        }
        if self.phone.is_some() {
            out.push("phone");
        }
        out
    }
}

/// What recording an [`AddressProof`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proven {
    /// The address was unverified: the account was taken over and is verified now.
    pub took_over: bool,
    /// The takeover cleared a password the account had.
    pub password_cleared: bool,
    /// Sessions revoked (by the takeover, or by the reset).
    pub revoked_sessions: u64,
    /// Providers of the identities the takeover dropped.
    pub dropped_providers: Vec<String>,
    /// The proof's identity is linked to the account now.
    pub linked: bool,
    /// The takeover removed a TOTP that was on.
    pub mfa_removed: bool,
    /// The ids of the passkeys the takeover removed.
    pub removed_passkeys: Vec<String>,
    /// The profile fields the takeover replaced or cleared
    /// ([`ProfileBefore::changed_by`]).
    pub profile_fields: Vec<&'static str>,
    /// The account's epoch after the write.
    pub auth_epoch: u64,
}

/// Whether a takeover at `email` keeps `identity`: only if its provider
/// verified that very address (its owner is the prover, or proved the same
/// mailbox). Everything else may be the earlier holder's.
pub fn keeps_identity(identity: &LinkedIdentity, email: &str) -> bool {
    identity.email_verified && identity.email.as_deref() == Some(email)
}

impl Proven {
    /// The events saying what the proof did to account `user_id` at `email`:
    /// `email_verified` if it took the account over; `user_updated` with the
    /// removed `password` and `providers` and the replaced profile fields,
    /// if any; and `session_revoked`
    /// (`revoke_all`) if sessions were revoked — unless the caller announces
    /// that itself (`sessions_announced`, as a password reset does).
    pub fn events(&self, user_id: &UserId, email: &str, sessions_announced: bool) -> Vec<Event> {
        let mut out = Vec::new();
        if self.took_over {
            out.push(events::EmailVerified { user_id: user_id.clone(), email: email.to_string() }.into());
        }
        let mut fields = Vec::new();
        if self.password_cleared {
            fields.push("password".to_string());
        }
        if !self.dropped_providers.is_empty() {
            fields.push("providers".to_string());
        }
        fields.extend(self.profile_fields.iter().map(|f| f.to_string()));
        if !fields.is_empty() {
            out.push(events::UserUpdated { user_id: user_id.clone(), fields }.into());
        }
        if self.mfa_removed {
            out.push(events::MfaDisabled { user_id: user_id.clone(), method: Method::Totp.as_str().into() }.into());
        }
        for passkey_id in &self.removed_passkeys {
            out.push(events::PasskeyRemoved { user_id: user_id.clone(), passkey_id: passkey_id.clone() }.into());
        }
        if self.revoked_sessions > 0 && !sessions_announced {
            out.push(events::SessionRevoked { user_id: user_id.clone(), session_id: None, revoke_all: true }.into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(email: Option<&str>, verified: bool) -> LinkedIdentity {
        LinkedIdentity {
            provider: "acme".into(),
            subject: "s".into(),
            user_id: "u".into(),
            email: email.map(str::to_string),
            email_verified: verified,
            linked_at: UnixTime(0),
        }
    }

    #[test]
    fn only_identities_that_verified_this_very_address_survive() {
        assert!(keeps_identity(&identity(Some("v@corp.example"), true), "v@corp.example"));
        // The planter's own, verified for their own address.
        assert!(!keeps_identity(&identity(Some("planter@evil.example"), true), "v@corp.example"));
        // One whose provider never checked the address.
        assert!(!keeps_identity(&identity(Some("v@corp.example"), false), "v@corp.example"));
        assert!(!keeps_identity(&identity(None, true), "v@corp.example"));
    }

    #[test]
    fn a_takeover_announces_what_it_removed() {
        let p = Proven {
            took_over: true,
            password_cleared: true,
            revoked_sessions: 2,
            dropped_providers: vec!["github".into()],
            linked: false,
            mfa_removed: true,
            removed_passkeys: vec!["pk1".into()],
            profile_fields: vec!["name", "phone"],
            auth_epoch: 1,
        };
        let kinds: Vec<&str> = p.events(&"u".into(), "v@corp.example", false).iter().map(Event::kind).collect();
        assert_eq!(kinds, ["email_verified", "user_updated", "mfa_disabled", "passkey_removed", "session_revoked"]);
        let updated = &p.events(&"u".into(), "v@corp.example", false)[1];
        assert_eq!(
            updated,
            &Event::UserUpdated(events::UserUpdated {
                user_id: "u".into(),
                fields: vec!["password".into(), "providers".into(), "name".into(), "phone".into()]
            })
        );
        // A reset announces its own revocation.
        let kinds: Vec<&str> = p.events(&"u".into(), "v@corp.example", true).iter().map(Event::kind).collect();
        assert_eq!(kinds, ["email_verified", "user_updated", "mfa_disabled", "passkey_removed"]);
    }

    #[test]
    fn the_profile_fields_a_takeover_changes_are_named() {
        let before = ProfileBefore { name: Some("Planter".into()), avatar_url: None, phone: Some("+1 555".into()) };
        assert_eq!(before.changed_by(&ProverProfile::default()), ["name", "phone"]);
        let same = ProverProfile { name: Some("Planter"), avatar_url: None, locale: Some("de") };
        assert_eq!(before.changed_by(&same), ["phone"]);
        let picture = ProverProfile { avatar_url: Some("https://a.example/p.png"), ..Default::default() };
        assert_eq!(ProfileBefore::default().changed_by(&picture), ["avatar_url"]);
        assert!(ProfileBefore::default().changed_by(&ProverProfile::default()).is_empty());
    }

    #[test]
    fn a_proof_of_a_verified_address_announces_nothing() {
        assert!(Proven { linked: true, auth_epoch: 3, ..Proven::default() }.events(&"u".into(), "e", false).is_empty());
        // An unverified account with nothing to remove is just verified.
        let kinds: Vec<Event> = Proven { took_over: true, ..Proven::default() }.events(&"u".into(), "e", false);
        assert_eq!(kinds, vec![Event::EmailVerified(events::EmailVerified { user_id: "u".into(), email: "e".into() })]);
    }
}
