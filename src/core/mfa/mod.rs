//! Second factors: what an account has ([`StoredFactors`]), what a request
//! offers ([`Proof`]), and a sign-in waiting for its second step
//! ([`Challenge`], the record behind an `mfa_token`).
//!
//! # The rule
//!
//! An account with a second factor on gets no session from a first step
//! alone. Every sign-in path (password, magic link, email code, OAuth) goes
//! through one function, `Deps::start_session_via`, which asks the store for
//! the account's factors and, when any is on, answers with an `mfa_token`
//! instead of a session: 256 random bits, kept only as their SHA-256, live
//! [`MFA_TOKEN_TTL_SECS`], good for [`MFA_TOKEN_MAX_ATTEMPTS`] tries (each
//! counted in one conditional write before the code is looked at), consumed
//! by one conditional delete, and bound to the first step: the user, the
//! provider and `amr` of that step, the provider identity it came through,
//! and the account epoch it was decided under. `POST /auth/mfa/verify`
//! opens the session only with that token and a code, through the same
//! session write every sign-in uses, which checks that epoch (a password
//! reset, a ban, a takeover in between voids the token) and that identity.
//!
//! That write also carries whether the sign-in proved a second factor
//! ([`crate::core::session::SignInBasis::second_factor`]); a sign-in that
//! did not gets its session only while the account has no second factor on,
//! decided in the same write. So a first step that read the account just
//! before TOTP was turned on cannot finish with a one-factor session after.
//!
//! # Factors
//!
//! TOTP ([`totp`]) and backup codes ([`backup`]) finish a second step;
//! [`Method`] is the list `mfa_required` answers name. A passkey is a way to
//! sign in of its own ([`crate::core::passkey`]): with user verification it
//! proves two factors in one step; it does not make other sign-ins need a
//! second step.

pub mod backup;
pub mod totp;

use serde::Serialize;

use crate::core::amr::Amr;
use crate::core::error::Error;
use crate::core::ids::UserId;
use crate::core::time::UnixTime;

/// How long an `mfa_token` lives.
pub const MFA_TOKEN_TTL_SECS: u64 = 300;
/// Codes tried against one `mfa_token` before it dies.
pub const MFA_TOKEN_MAX_ATTEMPTS: u32 = 5;
/// How recent a sign-in must be to turn TOTP on or off (off: without a
/// code), add a passkey or link a provider identity.
pub const RECENT_SIGN_IN_SECS: u64 = 300;

/// Whether a sign-in at `auth_time` is recent at `now` (within
/// [`RECENT_SIGN_IN_SECS`], the limit included).
pub fn is_recent_sign_in(auth_time: UnixTime, now: UnixTime) -> bool {
    now.0.saturating_sub(auth_time.0) <= RECENT_SIGN_IN_SECS as i64
}

/// A way to finish a sign-in's second step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A code from an authenticator app.
    Totp,
    /// One of the account's backup codes.
    BackupCode,
}

impl Method {
    /// The name in `methods`, in events and in the API: `totp`, `backup_code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::BackupCode => "backup_code",
        }
    }
}

/// The account's TOTP as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTotp {
    /// The secret, sealed ([`totp::TotpSecret::seal`]).
    pub sealed: String,
    /// Whether it was confirmed with a code (only then is it on).
    pub confirmed: bool,
    /// The last time step accepted, if any.
    pub last_step: Option<u64>,
    /// The id of its set of backup codes, made by its confirmation or its
    /// last regeneration (`None`: a set older than the id), which a
    /// regeneration replaces only if it is still this one.
    pub backup_set: Option<String>,
}

/// An account's second factors as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFactors {
    /// TOTP, enrolling or on.
    pub totp: Option<StoredTotp>,
    /// Unused backup codes.
    pub backup_codes: u32,
    /// Registered passkeys (a sign-in factor of their own: they do not make
    /// a password sign-in need a second step).
    pub passkeys: u32,
}

/// What `/auth/me` and the admin user view show of the factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FactorsView {
    /// Whether TOTP is on.
    pub totp: bool,
    /// Unused backup codes.
    pub backup_codes_left: u32,
    /// Registered passkeys.
    pub passkeys: u32,
}

impl StoredFactors {
    /// The TOTP, if it is on.
    pub fn confirmed_totp(&self) -> Option<&StoredTotp> {
        self.totp.as_ref().filter(|t| t.confirmed)
    }

    /// Whether a sign-in needs a second step.
    pub fn required(&self) -> bool {
        self.confirmed_totp().is_some()
    }

    /// The methods a second step can use, in the order `methods` lists them;
    /// empty when no second step is needed.
    pub fn methods(&self) -> Vec<Method> {
        if !self.required() {
            return Vec::new();
        }
        let mut out = vec![Method::Totp];
        if self.backup_codes > 0 {
            out.push(Method::BackupCode);
        }
        out
    }

    /// The shown form.
    pub fn view(&self) -> FactorsView {
        FactorsView {
            totp: self.required(),
            backup_codes_left: if self.required() { self.backup_codes } else { 0 },
            passkeys: self.passkeys,
        }
    }
}

/// What removing an account's factors did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactorsRemoved {
    /// A TOTP that was on is gone.
    pub totp: bool,
    /// Sessions revoked with it.
    pub revoked_sessions: u64,
}

/// What an administrator's reset of an account's factors did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactorsReset {
    /// A TOTP that was on is gone.
    pub totp: bool,
    /// The ids of the passkeys removed.
    pub passkeys: Vec<String>,
    /// Sessions revoked with them.
    pub revoked_sessions: u64,
}

/// A code offered for a second factor, its shape checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A TOTP code: six digits.
    Totp(String),
    /// A backup code, normalised ([`backup::normalize`]).
    BackupCode(String),
}

impl Proof {
    /// The proof in a body's `code` and `backup_code`: at most one of them.
    /// `code` may hold a TOTP code or a backup code, told apart by their
    /// shapes; `backup_code` only a backup code. `Ok(None)` when neither is
    /// given; 422 `validation_failed` for both; 401 `invalid_code` for a
    /// value of neither shape (nothing is looked up or counted for it).
    pub fn parse(code: Option<&str>, backup_code: Option<&str>) -> Result<Option<Self>, Error> {
        match (code, backup_code) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err(Error::validation("validation_failed", "give either code or backup_code, not both"))
            }
            (Some(c), None) => match totp::parse_code(c) {
                Some(code) => Ok(Some(Self::Totp(code))),
                None => backup::normalize(c).map(|b| Some(Self::BackupCode(b))).ok_or_else(Error::invalid_code),
            },
            (None, Some(b)) => backup::normalize(b).map(|b| Some(Self::BackupCode(b))).ok_or_else(Error::invalid_code),
        }
    }

    /// The method the proof is for.
    pub fn method(&self) -> Method {
        match self {
            Self::Totp(_) => Method::Totp,
            Self::BackupCode(_) => Method::BackupCode,
        }
    }
}

/// A sign-in waiting for its second step: the record of an `mfa_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// SHA-256 of the `mfa_token` (base64url). Unique.
    pub hash: String,
    /// The account signing in.
    pub user_id: UserId,
    /// The account epoch the first step was decided under.
    pub user_epoch: u64,
    /// The first step's provider (`email`, `magic_link`, `email_otp`, an
    /// OAuth provider id): the `login` event's.
    pub provider: String,
    /// The first step's methods.
    pub amr: Amr,
    /// The provider identity `(provider, subject)` an OAuth first step came
    /// through: it must still be linked when the session is opened.
    pub identity: Option<(String, String)>,
    /// The passkey (its id) a passkey first step without user verification
    /// used: it must still be the account's when the session is opened.
    pub passkey: Option<String>,
    /// Codes tried so far.
    pub attempts: u32,
    /// Issued at.
    pub created_at: UnixTime,
    /// Unusable from this instant on.
    pub expires_at: UnixTime,
}

/// 401 `invalid_mfa_token`: the `mfa_token` is unknown, used, expired, out
/// of attempts, or its first step no longer holds (the account changed).
pub fn invalid_mfa_token() -> Error {
    Error::InvalidEmailSecret {
        code: "invalid_mfa_token",
        detail: "the mfa_token is invalid, already used, expired or out of attempts; sign in again".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_one_code_of_a_known_shape() {
        assert_eq!(Proof::parse(Some("123 456"), None).unwrap(), Some(Proof::Totp("123456".into())));
        assert_eq!(Proof::parse(Some("ABCDE-fgh12"), None).unwrap(), Some(Proof::BackupCode("abcdefgh12".into())));
        assert_eq!(Proof::parse(None, Some("abcde-fgh12")).unwrap(), Some(Proof::BackupCode("abcdefgh12".into())));
        assert_eq!(Proof::parse(None, None).unwrap(), None);
        assert_eq!(Proof::parse(Some("123456"), Some("abcde-fgh12")).unwrap_err().problem().status, 422);
        for bad in ["12345", "1234567", "", "abcde-fgh1u", "x".repeat(300).as_str()] {
            assert_eq!(Proof::parse(Some(bad), None).unwrap_err().problem().code, "invalid_code", "{bad:?}");
        }
        // A TOTP code is not a backup code.
        assert_eq!(Proof::parse(None, Some("123456")).unwrap_err().problem().code, "invalid_code");
    }

    #[test]
    fn methods_list_what_can_finish_a_sign_in() {
        let pending = StoredTotp { sealed: "s".into(), confirmed: false, last_step: None, backup_set: None };
        let on = StoredTotp { confirmed: true, ..pending.clone() };
        assert_eq!(StoredFactors::default().methods(), vec![]);
        assert_eq!(StoredFactors { totp: Some(pending), backup_codes: 3, passkeys: 0 }.methods(), vec![]);
        let f = StoredFactors { totp: Some(on.clone()), backup_codes: 0, passkeys: 0 };
        assert_eq!(f.methods(), vec![Method::Totp]);
        let f = StoredFactors { totp: Some(on), backup_codes: 2, passkeys: 1 };
        assert_eq!(f.methods(), vec![Method::Totp, Method::BackupCode]);
        assert_eq!(f.view(), FactorsView { totp: true, backup_codes_left: 2, passkeys: 1 });
        assert_eq!(StoredFactors::default().view(), FactorsView { totp: false, backup_codes_left: 0, passkeys: 0 });
    }
}
