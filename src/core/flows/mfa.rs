//! Strong authentication: turning TOTP on and off, backup codes, and the
//! second step of a sign-in (`POST /auth/mfa/verify`). The rules are in
//! [`crate::core::mfa`]; in short:
//!
//! - `POST /auth/mfa/totp/enroll` stores a fresh secret, sealed, as the
//!   caller's enrolling TOTP; `POST /auth/mfa/totp/confirm` with a first code
//!   turns it on and answers ten backup codes (shown once). Only then is MFA
//!   on, and every other session of the account ends (they were signed in
//!   with one factor).
//! - Every code — at confirmation, at the second step, to turn TOTP off or to
//!   get new backup codes — is checked the same way
//!   ([`Deps::check_second_factor`]): counted against the `mfa/verify` rate
//!   limits and the account's daily cap on failed codes
//!   (`OTP_MAX_FAILURES_PER_DAY`, a counter of its own) before it is
//!   compared, given back when right; a wrong one is 401 `invalid_code` with
//!   `mfa_failed`. A TOTP code is accepted once (its time step must be later
//!   than the last one used), a backup code once (its row is deleted).
//! - `DELETE /auth/mfa/totp` needs a current code or a sign-in within
//!   [`RECENT_SIGN_IN_SECS`](crate::core::mfa::RECENT_SIGN_IN_SECS);
//!   it removes TOTP and the backup codes and ends every other session. So does an administrator's reset (every session).
//! - Every change of the factors is announced with `factors_events` (through
//!   [`Deps::factors_changed`], or by an administrator's reset, which adds
//!   its passkeys' removal).

use serde::{Deserialize, Serialize};

use crate::core::amr::Amr;
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::account::{banned, login_event};
use crate::core::flows::magic_link::PROVIDER_MAGIC_LINK;
use crate::core::flows::otp::PROVIDER_EMAIL_OTP;
use crate::core::flows::{AuthResponse, Deps, Meta, Principal};
use crate::core::ids::{self, Random, UserId};
use crate::core::mfa::backup::{self, BackupCodeKey, BACKUP_CODE_COUNT};
use crate::core::mfa::totp::{TotpSealKey, TotpSecret};
use crate::core::mfa::{
    invalid_mfa_token, Challenge, FactorsView, Method, Proof, StoredFactors, MFA_TOKEN_MAX_ATTEMPTS, MFA_TOKEN_TTL_SECS,
};
use crate::core::ports::{EventSink, KeyRing, MfaStore, RateLimitStore, SessionStore, UserStore};
use crate::core::rate_limit::Endpoint;
use crate::core::session::SignInBasis;
use crate::core::users::User;

/// The `revoke_reason` of sessions ended by a change of second factors.
pub const MFA_CHANGE_REVOKE_REASON: &str = "mfa_changed";
/// Longest `mfa_token` looked up (ours are 43 characters).
const MAX_MFA_TOKEN_LEN: usize = 64;

/// The second step a sign-in waits for: what the first step answers
/// (`{"mfa_required": true, "mfa_token", "methods", "expires_in"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondStep {
    /// The token to send to `/auth/mfa/verify` with a code.
    pub mfa_token: String,
    /// The methods it can be finished with.
    pub methods: Vec<Method>,
    /// Seconds the token lives.
    pub expires_in: u64,
}

/// The JSON of a [`SecondStep`].
#[derive(Debug, Serialize, Deserialize)]
struct SecondStepJson {
    mfa_required: bool,
    mfa_token: String,
    methods: Vec<String>,
    expires_in: u64,
}

impl SecondStep {
    /// The answer's body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "mfa_required": true,
            "mfa_token": self.mfa_token,
            "methods": self.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "expires_in": self.expires_in,
        })
    }

    /// Reads a [`SecondStep::body`] back (as the OAuth exchange keeps it
    /// sealed); `None` for anything else.
    pub fn from_body(json: &str) -> Option<Self> {
        let j: SecondStepJson = serde_json::from_str(json).ok()?;
        let methods = j
            .methods
            .iter()
            .map(|m| [Method::Totp, Method::BackupCode].into_iter().find(|k| k.as_str() == m))
            .collect::<Option<Vec<_>>>()?;
        j.mfa_required.then_some(Self { mfa_token: j.mfa_token, methods, expires_in: j.expires_in })
    }
}

/// `POST /auth/mfa/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    /// The first step's `mfa_token`.
    pub mfa_token: String,
    /// A TOTP code (or a backup code).
    #[serde(default)]
    pub code: Option<String>,
    /// A backup code.
    #[serde(default)]
    pub backup_code: Option<String>,
}

/// A body with a code: `POST /auth/mfa/totp/confirm` (a TOTP code),
/// `DELETE /auth/mfa/totp` and `POST /auth/mfa/backup-codes` (a TOTP code or
/// a backup code).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// A TOTP code, or a backup code.
    #[serde(default)]
    pub code: Option<String>,
    /// A backup code.
    #[serde(default)]
    pub backup_code: Option<String>,
}

/// `POST /auth/mfa/totp/enroll`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct TotpEnrollment {
    /// The secret, base32 without padding (SHA-1, 6 digits, 30 s).
    pub secret: String,
    /// The same as an `otpauth://totp/…` URI (for a QR code).
    pub otpauth_uri: String,
}

/// Fresh backup codes (shown once; the earlier ones are dead).
#[derive(Debug, Clone, Serialize)]
pub struct BackupCodes {
    /// Ten single-use codes, `xxxxx-xxxxx`.
    pub backup_codes: Vec<String>,
}

fn mfa_not_enabled() -> Error {
    Error::Conflict { code: "mfa_not_enabled", detail: "no second factor is on for this account".into() }
}

/// A regeneration that lost to a racing one (409).
fn backup_codes_changed() -> Error {
    Error::Conflict {
        code: "backup_codes_changed",
        detail: "another request replaced the backup codes meanwhile; use the codes it returned, or ask again".into(),
    }
}

fn mfa_already_enabled() -> Error {
    Error::Conflict {
        code: "mfa_already_enabled",
        detail: "TOTP is already on for this account; turn it off first to enrol another".into(),
    }
}

fn mfa_not_enrolled() -> Error {
    Error::Conflict {
        code: "mfa_not_enrolled",
        detail: "no TOTP enrolment to confirm (or it was replaced): start with /mfa/totp/enroll".into(),
    }
}

fn code_required() -> Error {
    Error::validation("validation_failed", "code: required (a code from the authenticator app or a backup code)")
}

/// The flow's own sign-in event of a first step through `provider`, if it
/// has one besides `login`.
fn flow_event(provider: &str, user: &User) -> Option<Event> {
    let (user_id, email) = (user.id.clone(), user.email.clone());
    match provider {
        PROVIDER_MAGIC_LINK => Some(events::MagicLinkLogin { user_id, email }.into()),
        PROVIDER_EMAIL_OTP => Some(events::EmailOtpLogin { user_id, email }.into()),
        _ => None,
    }
}

/// Ten fresh backup codes and their stored forms for `user_id`.
fn new_backup_codes(rng: &mut impl Random, key: &BackupCodeKey, user_id: &UserId) -> (Vec<String>, Vec<String>) {
    let codes: Vec<String> = (0..BACKUP_CODE_COUNT).map(|_| backup::generate(rng)).collect();
    let hashes = codes.iter().filter_map(|c| backup::normalize(c)).map(|c| key.hash(user_id, &c)).collect();
    (codes, hashes)
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + MfaStore,
    E: EventSink,
    K: KeyRing,
{
    /// Issues the `mfa_token` of a first step that `user` (with `factors`
    /// on) finished through `provider`, proving `amr`, on `basis`.
    #[allow(clippy::too_many_arguments)] // the first step's facts, all bound to the token
    pub(crate) async fn second_step(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user: &User,
        provider: &str,
        basis: &SignInBasis<'_>,
        amr: Amr,
        factors: &StoredFactors,
    ) -> Result<SecondStep, Error> {
        let token = ids::secret_token(rng);
        let challenge = Challenge {
            hash: ids::token_hash(&token),
            user_id: user.id.clone(),
            user_epoch: basis.user_epoch,
            provider: provider.to_string(),
            amr,
            identity: basis.identity.map(|(p, s)| (p.to_string(), s.to_string())),
            passkey: basis.passkey.map(str::to_string),
            attempts: 0,
            created_at: meta.now,
            expires_at: meta.now.plus_secs(MFA_TOKEN_TTL_SECS),
        };
        self.store.put_mfa_challenge(&challenge).await?;
        Ok(SecondStep { mfa_token: token, methods: factors.methods(), expires_in: MFA_TOKEN_TTL_SECS })
    }

    /// What `/auth/me` and the admin user view show of `user_id`'s factors.
    pub async fn factors_view(&self, user_id: &UserId) -> Result<FactorsView, Error> {
        Ok(self.store.mfa_factors(user_id).await?.view())
    }

    /// Announces a change of `user_id`'s second factors: `mfa_enabled` or
    /// `mfa_disabled` for `method`, and `session_revoked` (`revoke_all`)
    /// when the change ended other sessions. Every change of factors but an
    /// administrator's reset — turned on, turned off, removed by a takeover —
    /// passes here, after its write (which revoked those sessions itself).
    pub async fn factors_changed(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user_id: &UserId,
        method: Method,
        enabled: bool,
        revoked_sessions: u64,
    ) -> Result<(), Error> {
        self.emit(meta, rng, factors_events(user_id, method, enabled, revoked_sessions)).await
    }
}

/// The events of a change of `user_id`'s second factors (see
/// [`Deps::factors_changed`]): `mfa_enabled` or `mfa_disabled` for `method`,
/// and `session_revoked` (`revoke_all`) when it ended other sessions.
pub(crate) fn factors_events(user_id: &UserId, method: Method, enabled: bool, revoked_sessions: u64) -> Vec<Event> {
    let (user_id, method) = (user_id.clone(), method.as_str().to_string());
    let mut events: Vec<Event> = vec![if enabled {
        events::MfaEnabled { user_id: user_id.clone(), method }.into()
    } else {
        events::MfaDisabled { user_id: user_id.clone(), method }.into()
    }];
    if revoked_sessions > 0 {
        events.push(events::SessionRevoked { user_id, session_id: None, revoke_all: true }.into());
    }
    events
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + MfaStore + RateLimitStore,
    E: EventSink,
    K: KeyRing,
{
    fn totp_key(&self) -> TotpSealKey {
        TotpSealKey::from_kek(&self.config.kek)
    }

    fn backup_key(&self) -> BackupCodeKey {
        BackupCodeKey::from_kek(&self.config.kek)
    }

    /// The caller, their account and its factors.
    async fn mfa_caller(&self, meta: &Meta, bearer: Option<&str>) -> Result<(Principal, User, StoredFactors), Error> {
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        let factors = self.store.mfa_factors(&user.id).await?;
        Ok((p, user, factors))
    }

    /// `POST /auth/mfa/totp/enroll`: a fresh secret for the caller, stored
    /// sealed as their enrolling TOTP (replacing an earlier enrolment); it is
    /// on once confirmed with a code. 409 `mfa_already_enabled` when TOTP is
    /// on; 403 `reauthentication_required` unless the caller's session
    /// signed in within [`RECENT_SIGN_IN_SECS`](crate::core::mfa::RECENT_SIGN_IN_SECS)
    /// (the confirmation needs the secret this answer alone shows, so it
    /// needs no such check).
    pub async fn enroll_totp(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
    ) -> Result<TotpEnrollment, Error> {
        let (p, user, factors) = self.mfa_caller(meta, bearer).await?;
        if factors.required() {
            return Err(mfa_already_enabled());
        }
        // A second factor locks out whoever lacks it, the owner included
        // (confirming it ends every other session): a stolen session must
        // not be able to add one, so, as for a passkey, only a recent sign-in.
        p.require_recent_sign_in(meta.now, "turning on two-step verification")?;
        let secret = TotpSecret::generate(rng);
        let sealed = secret.seal(&self.totp_key(), &user.id, rng)?;
        let caller = self.live_session(meta, &p);
        match self.store.enroll_totp(&caller, &sealed).await? {
            Some(true) => {}
            Some(false) => return Err(mfa_already_enabled()),
            None => return Err(self.refused_write(&caller).await),
        }
        let issuer = self.totp_issuer(meta);
        Ok(TotpEnrollment { secret: secret.base32(), otpauth_uri: secret.otpauth_uri(&issuer, &user.email) })
    }

    /// The issuer label of enrolments: `UI_NAME`, else the issuer's host.
    fn totp_issuer(&self, meta: &Meta) -> String {
        let brand = &self.config.ui.brand;
        if brand.named {
            return brand.name.clone();
        }
        url::Url::parse(&meta.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "Portcullis".to_string())
    }

    /// `POST /auth/mfa/totp/confirm`: checks a first code against the
    /// caller's enrolling secret and turns TOTP on (the code's step counts as
    /// used), with ten new backup codes, ending every other session of the
    /// account. Emits `mfa_enabled` (and `session_revoked`).
    pub async fn confirm_totp(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: CodeRequest,
    ) -> Result<BackupCodes, Error> {
        if req.backup_code.is_some() {
            return Err(Error::validation("validation_failed", "backup_code: not accepted here; send the TOTP code"));
        }
        let code = match Proof::parse(req.code.as_deref(), None)? {
            Some(Proof::Totp(code)) => code,
            Some(Proof::BackupCode(_)) => return Err(Error::invalid_code()),
            None => return Err(code_required()),
        };
        let (p, user, factors) = self.mfa_caller(meta, bearer).await?;
        let enrolling = match &factors.totp {
            Some(t) if t.confirmed => return Err(mfa_already_enabled()),
            Some(t) => t.clone(),
            None => return Err(mfa_not_enrolled()),
        };
        let charge = self.throttle_code_attempt(meta, rng, Endpoint::MfaVerify, &user.email).await?;
        let secret = TotpSecret::open(&self.totp_key(), &user.id, &enrolling.sealed)
            .ok_or_else(|| Error::Internal("a stored TOTP secret does not open with KEY_ENCRYPTION_KEY".into()))?;
        let Some(step) = secret.matching_step(&code, meta.now) else {
            return Err(self.second_factor_failed(meta, rng, &user, Method::Totp).await);
        };
        let (codes, hashes) = new_backup_codes(rng, &self.backup_key(), &user.id);
        let backup_set = ids::uuid(rng);
        let caller = self.live_session(meta, &p);
        let confirmed =
            self.store.confirm_totp(&caller, &enrolling.sealed, step, &hashes, &backup_set, MFA_CHANGE_REVOKE_REASON);
        let Some(revoked) = confirmed.await? else {
            self.refund_code_attempt(charge).await;
            return match self.refused_write(&caller).await {
                Error::Conflict { code: "account_changed", .. } => Err(mfa_not_enrolled()),
                e => Err(e),
            };
        };
        self.refund_code_attempt(charge).await;
        self.factors_changed(meta, rng, &user.id, Method::Totp, true, revoked).await?;
        Ok(BackupCodes { backup_codes: codes })
    }

    /// `DELETE /auth/mfa/totp`: turns TOTP off and removes the backup codes,
    /// given a current code or backup code — or without one, when the
    /// caller's session signed in within
    /// [`RECENT_SIGN_IN_SECS`](crate::core::mfa::RECENT_SIGN_IN_SECS). Ends every
    /// other session of the account. Emits `mfa_disabled` (and
    /// `session_revoked`).
    pub async fn disable_totp(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: CodeRequest,
    ) -> Result<(), Error> {
        let proof = Proof::parse(req.code.as_deref(), req.backup_code.as_deref())?;
        let (p, user, factors) = self.mfa_caller(meta, bearer).await?;
        if !factors.required() {
            return Err(mfa_not_enabled());
        }
        match proof {
            Some(proof) => self.check_second_factor(meta, rng, &user, &factors, &proof).await?,
            None if p.signed_in_recently(meta.now) => {}
            None => {
                return Err(Error::forbidden(
                    "code_required",
                    "send a current code or a backup code: this session signed in more than five minutes ago",
                ))
            }
        }
        let caller = self.live_session(meta, &p);
        let Some(removed) = self.store.remove_factors(&caller, MFA_CHANGE_REVOKE_REASON).await? else {
            return Err(self.refused_write(&caller).await);
        };
        if !removed.totp {
            // Turned off by a racing request, which announced it.
            return Ok(());
        }
        self.factors_changed(meta, rng, &user.id, Method::Totp, false, removed.revoked_sessions).await
    }

    /// `POST /auth/mfa/backup-codes`: ten new backup codes for a current
    /// code or backup code; the earlier ones die.
    pub async fn regenerate_backup_codes(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: CodeRequest,
    ) -> Result<BackupCodes, Error> {
        let proof = Proof::parse(req.code.as_deref(), req.backup_code.as_deref())?.ok_or_else(code_required)?;
        let (p, user, factors) = self.mfa_caller(meta, bearer).await?;
        if !factors.required() {
            return Err(mfa_not_enabled());
        }
        self.check_second_factor(meta, rng, &user, &factors, &proof).await?;
        let read_set = factors.totp.as_ref().and_then(|t| t.backup_set.as_deref());
        let (codes, hashes) = new_backup_codes(rng, &self.backup_key(), &user.id);
        let new_set = ids::uuid(rng);
        let caller = self.live_session(meta, &p);
        match self.store.replace_backup_codes(&caller, read_set, &new_set, &hashes).await? {
            Some(true) => Ok(BackupCodes { backup_codes: codes }),
            // TOTP went off, or a racing request replaced the set first: its
            // codes are the ones that work, and these are never shown.
            Some(false) if self.store.mfa_factors(&user.id).await?.required() => Err(backup_codes_changed()),
            Some(false) => Err(mfa_not_enabled()),
            None => Err(self.refused_write(&caller).await),
        }
    }

    /// `POST /auth/mfa/verify`: the second step. Counts an attempt against
    /// the `mfa_token` (401 `invalid_mfa_token` when it is unknown, used,
    /// expired or out of attempts, or the account changed since the first
    /// step), checks the code as every code is checked, consumes the token,
    /// and opens the session — through the sign-in hook, asked now and only
    /// now — with the first step's `amr` plus `otp` and `mfa`. Emits what the
    /// first step would have (`magic_link_login` or `email_otp_login`, and
    /// `login` with the first step's provider).
    pub async fn verify_mfa(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: MfaVerifyRequest,
    ) -> Result<AuthResponse, Error> {
        let proof = Proof::parse(req.code.as_deref(), req.backup_code.as_deref())?.ok_or_else(|| {
            Error::validation("validation_failed", "code or backup_code: required (with the mfa_token)")
        })?;
        let raw = req.mfa_token.trim();
        if raw.is_empty()
            || raw.len() > MAX_MFA_TOKEN_LEN
            || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid_mfa_token());
        }
        let hash = ids::token_hash(raw);
        let Some(challenge) = self.store.count_mfa_attempt(&hash, meta.now, MFA_TOKEN_MAX_ATTEMPTS).await? else {
            // Nothing to guess at; still counted per IP.
            self.throttle_ip(meta, rng, Endpoint::MfaVerify).await?;
            return Err(invalid_mfa_token());
        };
        let user = match self.store.user_by_id(&challenge.user_id).await? {
            Some(u) if u.auth_epoch == challenge.user_epoch && !u.banned => u,
            found => {
                // The first step no longer holds: the token dies.
                self.store.take_mfa_challenge(&hash, meta.now).await?;
                return Err(if found.is_some_and(|u| u.banned) { banned() } else { invalid_mfa_token() });
            }
        };
        let factors = self.store.mfa_factors(&user.id).await?;
        if !factors.required() {
            // The second factor was turned off or reset since the first
            // step: no code can be right, and none is counted as a wrong
            // one (the account's daily cap); the token dies.
            self.store.take_mfa_challenge(&hash, meta.now).await?;
            return Err(invalid_mfa_token());
        }
        self.check_second_factor(meta, rng, &user, &factors, &proof).await?;
        let Some(challenge) = self.store.take_mfa_challenge(&hash, meta.now).await? else {
            return Err(invalid_mfa_token());
        };
        let basis = SignInBasis {
            user_epoch: challenge.user_epoch,
            identity: challenge.identity.as_ref().map(|(p, s)| (p.as_str(), s.as_str())),
            passkey: challenge.passkey.as_deref(),
            second_factor: true,
        };
        let amr = challenge.amr.with(Amr::OTP).with(Amr::MFA);
        let started = self.open_session(meta, rng, &user, &challenge.provider, basis, amr).await;
        let response = self.refusal_announced(meta, rng, started, (&user.email, ""), &mut Vec::new()).await?;
        let mut events: Vec<Event> = flow_event(&challenge.provider, &user).into_iter().collect();
        events.push(login_event(&user, &challenge.provider, meta));
        self.emit(meta, rng, events).await?;
        Ok(response)
    }

    /// Checks `proof` for `user`, whose factors are `factors`: counted
    /// against the `mfa/verify` limits and the account's daily cap on failed
    /// codes first (429 over them, whatever the code), then compared; a TOTP
    /// code must match a step later than the last one used, a backup code
    /// must be unused, and using either is one conditional write. Right: the
    /// charge is given back. Wrong, replayed or used: 401 `invalid_code` and
    /// `mfa_failed`.
    pub async fn check_second_factor(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        user: &User,
        factors: &StoredFactors,
        proof: &Proof,
    ) -> Result<(), Error> {
        let charge = self.throttle_code_attempt(meta, rng, Endpoint::MfaVerify, &user.email).await?;
        let accepted = match proof {
            Proof::Totp(code) => match factors.confirmed_totp() {
                Some(totp) => {
                    let secret = TotpSecret::open(&self.totp_key(), &user.id, &totp.sealed).ok_or_else(|| {
                        Error::Internal("a stored TOTP secret does not open with KEY_ENCRYPTION_KEY".into())
                    })?;
                    match secret.matching_step(code, meta.now) {
                        Some(step) => self.store.use_totp_step(&user.id, &totp.sealed, step).await?,
                        None => false,
                    }
                }
                None => false,
            },
            Proof::BackupCode(code) => {
                factors.required()
                    && self.store.use_backup_code(&user.id, &self.backup_key().hash(&user.id, code)).await?
            }
        };
        if !accepted {
            return Err(self.second_factor_failed(meta, rng, user, proof.method()).await);
        }
        self.refund_code_attempt(charge).await;
        Ok(())
    }

    /// Emits `mfa_failed` and returns the refusal (or the queue's failure).
    async fn second_factor_failed(&self, meta: &Meta, rng: &mut impl Random, user: &User, method: Method) -> Error {
        let event =
            events::MfaFailed { user_id: user.id.clone(), method: method.as_str().into(), ip_address: meta.ip.clone() };
        match self.emit(meta, rng, vec![event.into()]).await {
            Ok(()) => Error::invalid_code(),
            Err(e) => e,
        }
    }
}
