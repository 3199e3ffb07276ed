//! Passkeys: registering one (signed in), listing, renaming and removing
//! them, and signing in with one — discoverable (no email) or not. The
//! WebAuthn checks themselves are in [`crate::core::passkey`]; here is what
//! the ceremonies read and write, in what order:
//!
//! - Options (`…/register/options`, `…/login/options`) store a fresh
//!   challenge (32 random bytes) for [`CHALLENGE_TTL_SECS`]. A registration
//!   challenge is bound to the account; a sign-in challenge to nobody, and
//!   found again by its `challenge_id`.
//! - Verification parses and checks everything it can without the store
//!   first (credential shape, client data type and origin, RP ID hash, user
//!   presence, key algorithm): malformed or refused input writes nothing.
//!   Then it consumes the challenge — one conditional delete, so a replayed
//!   or concurrent second use fails (401 `invalid_challenge`) — and only
//!   then looks at the credential: a sign-in's must be one its options'
//!   `allowCredentials` listed (the challenge keeps them), and a
//!   discoverable sign-in's must carry its user handle (WebAuthn §7.2
//!   steps 5–6).
//! - A sign-in's signature is checked through the runtime's native crypto
//!   ([`PasskeyVerifier`]); its counter is recorded by one conditional write
//!   that refuses a counter not above the stored one (401
//!   `sign_count_regressed`: a cloned authenticator, or a replay), and
//!   nothing is recorded then. Only after both is a ban told (403
//!   `account_banned`): whoever cannot sign with the passkey learns nothing
//!   of the account and makes no `login_failed` `passkey_banned`.
//! - With user verification (UV) a passkey proves two factors: the session
//!   opens at once with `amr` `hwk`/`swk`, `user`, `mfa`. Without it, one:
//!   an account with a second factor on gets the `mfa_required` second step,
//!   as a password login does ([`Deps::start_session_via`]). Either way the
//!   sign-in hook is asked once, when the session opens, and `login` is
//!   emitted with provider `passkey`.
//! - Removing a passkey is a change of factors: every other session of the
//!   account ends in the same write (as turning TOTP off does), which the
//!   revocation log carries to every isolate within `REVOCATION_LAG`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::core::amr::Amr;
use crate::core::crypto::b64url;
use crate::core::email_address::Email;
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::account::{banned, login_event, login_failed_event};
use crate::core::flows::mfa::MFA_CHANGE_REVOKE_REASON;
use crate::core::flows::{Deps, Meta, Principal, SignIn};
use crate::core::ids::{self, Random, UserId};
use crate::core::passkey::{
    self, check_authenticator_data, clean_transports, counter_ok, decode_b64url, descriptor, is_user_handle, key_amr,
    malformed, parse_attestation_object, parse_name, refused, stand_in_credential_id, user_handle, Alg,
    AuthenticatorData, Ceremony, ClientData, Passkey, PasskeyAdded, PasskeyChallenge, PasskeyView, PublicKey,
    RelyingParty, CEREMONY_TIMEOUT_MS, CHALLENGE_TTL_SECS, MAX_ATTESTATION_OBJECT_BYTES, MAX_AUTHENTICATOR_DATA_BYTES,
    MAX_CLIENT_DATA_BYTES, MAX_CREDENTIAL_ID_BYTES, MAX_PASSKEYS_PER_USER, MAX_SIGNATURE_BYTES, MAX_USER_HANDLE_BYTES,
};
use crate::core::ports::{
    EventSink, KeyRing, MfaStore, PasskeyStore, PasskeyVerifier, RateLimitStore, SessionStore, UserStore,
};
use crate::core::rate_limit::Endpoint;
use crate::core::session::SignInBasis;
use crate::core::users::User;

/// The `provider` of a passkey sign-in (`login` event, the sign-in hook).
pub const PROVIDER_PASSKEY: &str = "passkey";

/// Before the reason of a passkey sign-in's `login_failed`, e.g. `passkey_banned`.
const PASSKEY_REASON_PREFIX: &str = "passkey_";
/// The name a passkey gets when none is asked for.
const DEFAULT_NAME: &str = "Passkey";
/// Longest `challenge_id` or passkey id looked up (ours are UUIDs).
const MAX_ID_LEN: usize = 64;

/// `POST /auth/passkeys/register/options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterOptionsRequest {
    /// The name to give the passkey.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /auth/passkeys/register/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterVerifyRequest {
    /// The browser's `RegistrationResponseJSON` (`credential.toJSON()`).
    pub credential: RegistrationCredential,
    /// A name, overriding the one given to the options.
    #[serde(default)]
    pub name: Option<String>,
}

/// `RegistrationResponseJSON`: the members read (others are ignored, as
/// browsers add some).
#[derive(Debug, Deserialize)]
pub struct RegistrationCredential {
    /// The credential id, base64url.
    pub id: String,
    /// The same.
    #[serde(rename = "rawId")]
    pub raw_id: String,
    /// `public-key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The authenticator's response.
    pub response: AttestationResponse,
}

/// `AuthenticatorAttestationResponseJSON`.
#[derive(Debug, Deserialize)]
pub struct AttestationResponse {
    /// base64url.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    /// base64url.
    #[serde(rename = "attestationObject")]
    pub attestation_object: String,
    /// `getTransports()`.
    #[serde(default)]
    pub transports: Vec<String>,
}

/// `POST /auth/passkeys/login/options`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginOptionsRequest {
    /// The account's address; without it, a discoverable credential is asked for.
    #[serde(default)]
    pub email: Option<String>,
}

/// `POST /auth/passkeys/login/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginVerifyRequest {
    /// The options' `challenge_id`.
    pub challenge_id: String,
    /// The browser's `AuthenticationResponseJSON`.
    pub credential: AuthenticationCredential,
}

/// `AuthenticationResponseJSON`: the members read.
#[derive(Debug, Deserialize)]
pub struct AuthenticationCredential {
    /// The credential id, base64url.
    pub id: String,
    /// The same.
    #[serde(rename = "rawId")]
    pub raw_id: String,
    /// `public-key`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The authenticator's response.
    pub response: AssertionResponse,
}

/// `AuthenticatorAssertionResponseJSON`.
#[derive(Debug, Deserialize)]
pub struct AssertionResponse {
    /// base64url.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    /// base64url.
    #[serde(rename = "authenticatorData")]
    pub authenticator_data: String,
    /// base64url.
    pub signature: String,
    /// base64url; present for discoverable credentials.
    #[serde(default, rename = "userHandle")]
    pub user_handle: Option<String>,
}

/// `PATCH /auth/passkeys/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// The new name.
    pub name: String,
}

/// `POST /auth/passkeys/register/verify`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct PasskeyCreated {
    /// Our id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Registered at (RFC 3339).
    pub created_at: String,
}

/// 404 `passkeys_disabled`: `RP_ID` is not set.
fn disabled() -> Error {
    Error::NoSuch { code: "passkeys_disabled", detail: "passkeys are not configured here (RP_ID is not set)".into() }
}

/// 404 `passkey_not_found`.
fn not_found() -> Error {
    Error::NoSuch { code: "passkey_not_found", detail: "the caller has no passkey with this id".into() }
}

/// 401 `invalid_challenge`.
fn invalid_challenge() -> Error {
    refused("invalid_challenge", "the challenge is unknown, already used, expired or not this ceremony's")
}

/// 401 `unknown_credential`.
fn unknown_credential() -> Error {
    refused("unknown_credential", "no account has this passkey")
}

/// A credential id checked as `id` and decoded from `rawId`.
fn credential_id(id: &str, raw_id: &str, kind: &str) -> Result<Vec<u8>, Error> {
    if kind != "public-key" {
        return Err(malformed("type must be public-key"));
    }
    let raw = decode_b64url(raw_id, MAX_CREDENTIAL_ID_BYTES, "rawId")?;
    if decode_b64url(id, MAX_CREDENTIAL_ID_BYTES, "id")? != raw {
        return Err(malformed("id is not rawId"));
    }
    Ok(raw)
}

/// A fresh challenge: base64url of 32 random bytes.
fn new_challenge(rng: &mut impl Random) -> String {
    b64url(rng.bytes::<32>())
}

/// A sign-in's credential, parsed and checked as far as it can be without
/// the store.
struct Assertion {
    credential_id: String,
    client: ClientData,
    client_hash: [u8; 32],
    auth_data_bytes: Vec<u8>,
    auth_data: AuthenticatorData,
    signature: Vec<u8>,
    user_handle: Option<Vec<u8>>,
}

impl Assertion {
    fn parse(c: &AuthenticationCredential, rp: &RelyingParty) -> Result<Self, Error> {
        let raw = credential_id(&c.id, &c.raw_id, &c.kind)?;
        let r = &c.response;
        let client_bytes = decode_b64url(&r.client_data_json, MAX_CLIENT_DATA_BYTES, "clientDataJSON")?;
        let client = ClientData::check(&client_bytes, Ceremony::Get, rp)?;
        let auth_data_bytes = decode_b64url(&r.authenticator_data, MAX_AUTHENTICATOR_DATA_BYTES, "authenticatorData")?;
        let auth_data = AuthenticatorData::parse(&auth_data_bytes)?;
        if auth_data.attested.is_some() {
            return Err(malformed("a sign-in's authenticator data carries no new credential"));
        }
        check_authenticator_data(&auth_data, rp)?;
        let signature = decode_b64url(&r.signature, MAX_SIGNATURE_BYTES, "signature")?;
        let user_handle = match r.user_handle.as_deref() {
            None | Some("") => None,
            Some(h) => Some(decode_b64url(h, MAX_USER_HANDLE_BYTES, "userHandle")?),
        };
        Ok(Self {
            credential_id: b64url(raw),
            client,
            client_hash: Sha256::digest(&client_bytes).into(),
            auth_data_bytes,
            auth_data,
            signature,
            user_handle,
        })
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + MfaStore + PasskeyStore + RateLimitStore,
    E: EventSink,
    K: KeyRing,
{
    fn relying_party(&self) -> Result<&RelyingParty, Error> {
        self.config.relying_party.as_ref().ok_or_else(disabled)
    }

    /// `POST /auth/passkeys/register/options`: the options for
    /// `navigator.credentials.create`, for a caller signed in within
    /// [`RECENT_SIGN_IN_SECS`](crate::core::mfa::RECENT_SIGN_IN_SECS)
    /// (403 `reauthentication_required` otherwise: a stolen access token must not be able to plant a lasting way in).
    /// The new challenge replaces the caller's earlier registration
    /// challenges: one open registration per account.
    pub async fn passkey_register_options(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        req: RegisterOptionsRequest,
    ) -> Result<Value, Error> {
        let rp = self.relying_party()?;
        let name = req.name.as_deref().map(parse_name).transpose()?;
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        p.require_recent_sign_in(meta.now, "adding a passkey")?;
        let existing = self.store.passkeys(&user.id).await?;
        if existing.len() >= MAX_PASSKEYS_PER_USER as usize {
            return Err(too_many());
        }
        let challenge = new_challenge(rng);
        self.store
            .put_passkey_challenge(&PasskeyChallenge {
                id: ids::uuid(rng),
                ceremony: Ceremony::Create,
                challenge: challenge.clone(),
                user_id: Some(user.id.clone()),
                name,
                allowed: None,
                expires_at: meta.now.plus_secs(CHALLENGE_TTL_SECS),
            })
            .await?;
        Ok(json!({
            "rp": { "id": rp.id, "name": rp.name },
            "user": {
                "id": b64url(user_handle(&self.config.kek, &user.id)),
                "name": user.email,
                "displayName": user.name.as_deref().unwrap_or(&user.email),
            },
            "challenge": challenge,
            "pubKeyCredParams": Alg::OFFERED.iter().map(|a| json!({ "type": "public-key", "alg": a.cose() })).collect::<Vec<_>>(),
            "timeout": CEREMONY_TIMEOUT_MS,
            "excludeCredentials": existing.iter().map(Passkey::descriptor).collect::<Vec<_>>(),
            "authenticatorSelection": {
                "residentKey": "preferred",
                "requireResidentKey": false,
                "userVerification": "preferred",
            },
            "attestation": "none",
            "extensions": { "credProps": true },
        }))
    }

    /// `POST /auth/passkeys/register/verify`: checks the new credential
    /// (see [`crate::core::passkey`]), consumes the caller's challenge it
    /// answers, and stores the passkey. Emits `passkey_added`.
    pub async fn passkey_register_verify(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        verifier: &impl PasskeyVerifier,
        bearer: Option<&str>,
        req: RegisterVerifyRequest,
    ) -> Result<PasskeyCreated, Error> {
        let rp = self.relying_party()?;
        let name = req.name.as_deref().map(parse_name).transpose()?;
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        self.register_passkey(meta, rng, verifier, &p, &user, rp, name, &req.credential).await.map_err(as_bad_ceremony)
    }

    /// [`Deps::passkey_register_verify`] for the signed-in caller `p`
    /// (`user`): the checks, the challenge, the write.
    #[allow(clippy::too_many_arguments)] // the request's parts, checked by the caller
    async fn register_passkey(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        verifier: &impl PasskeyVerifier,
        p: &Principal,
        user: &User,
        rp: &RelyingParty,
        name: Option<String>,
        c: &RegistrationCredential,
    ) -> Result<PasskeyCreated, Error> {
        // Everything that needs no store first: bad input writes nothing.
        let raw = credential_id(&c.id, &c.raw_id, &c.kind)?;
        let client_bytes = decode_b64url(&c.response.client_data_json, MAX_CLIENT_DATA_BYTES, "clientDataJSON")?;
        let client = ClientData::check(&client_bytes, Ceremony::Create, rp)?;
        let object = decode_b64url(&c.response.attestation_object, MAX_ATTESTATION_OBJECT_BYTES, "attestationObject")?;
        let (_format, auth_data_bytes) = parse_attestation_object(&object)?;
        let auth_data = AuthenticatorData::parse(&auth_data_bytes)?;
        check_authenticator_data(&auth_data, rp)?;
        let Some(attested) = auth_data.attested else {
            return Err(malformed("the authenticator data carries no credential"));
        };
        if attested.credential_id != raw {
            return Err(malformed("the attested credential id is not rawId"));
        }
        if !verifier.accepts_key(&attested.public_key) {
            return Err(malformed("the public key does not import (not a point on the curve?)"));
        }
        let Some(challenge) = self.store.take_registration_challenge(&user.id, &client.challenge, meta.now).await?
        else {
            return Err(invalid_challenge());
        };
        let passkey = Passkey {
            id: ids::uuid(rng),
            user_id: user.id.clone(),
            credential_id: b64url(&raw),
            public_key: b64url(&attested.cose_key),
            alg: attested.public_key.alg().cose(),
            sign_count: auth_data.sign_count,
            backup_eligible: auth_data.flags.backup_eligible(),
            backed_up: auth_data.flags.backed_up(),
            transports: clean_transports(&c.response.transports),
            aaguid: attested.aaguid.iter().map(|b| format!("{b:02x}")).collect(),
            name: name.or(challenge.name).unwrap_or_else(|| DEFAULT_NAME.to_string()),
            created_at: meta.now,
            last_used_at: None,
        };
        let caller = self.live_session(meta, p);
        match self.store.add_passkey(&caller, &passkey, MAX_PASSKEYS_PER_USER).await? {
            None => return Err(self.refused_write(&caller).await),
            Some(PasskeyAdded::Duplicate) => {
                return Err(Error::Conflict {
                    code: "credential_exists",
                    detail: "this credential is already registered".into(),
                })
            }
            Some(PasskeyAdded::TooMany) => return Err(too_many()),
            Some(PasskeyAdded::Added) => {}
        }
        let event = events::PasskeyAdded { user_id: user.id.clone(), passkey_id: passkey.id.clone() };
        self.emit(meta, rng, vec![event.into()]).await?;
        Ok(PasskeyCreated { id: passkey.id, name: passkey.name, created_at: meta.now.rfc3339() })
    }

    /// `GET /auth/passkeys`: the caller's passkeys, oldest first.
    pub async fn list_passkeys(&self, meta: &Meta, bearer: Option<&str>) -> Result<Vec<PasskeyView>, Error> {
        let p = self.authenticate(meta, bearer).await?;
        Ok(self.store.passkeys(&p.user_id).await?.iter().map(Passkey::view).collect())
    }

    /// `PATCH /auth/passkeys/{id}`: renames one of the caller's passkeys;
    /// answers it as listed.
    pub async fn rename_passkey(
        &self,
        meta: &Meta,
        bearer: Option<&str>,
        id: &str,
        req: RenameRequest,
    ) -> Result<PasskeyView, Error> {
        let name = parse_name(&req.name)?;
        let p = self.authenticate(meta, bearer).await?;
        if id.len() > MAX_ID_LEN {
            return Err(not_found());
        }
        let caller = self.live_session(meta, &p);
        match self.store.rename_passkey(&caller, id, &name).await? {
            None => Err(self.refused_write(&caller).await),
            Some(false) => Err(not_found()),
            Some(true) => self
                .store
                .passkeys(&p.user_id)
                .await?
                .iter()
                .find(|k| k.id == id)
                .map(Passkey::view)
                .ok_or_else(not_found),
        }
    }

    /// `DELETE /auth/passkeys/{id}`: removes one of the caller's passkeys
    /// and ends every other session of the account (a change of factors).
    /// Emits `passkey_removed` (and `session_revoked`).
    pub async fn remove_passkey(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        id: &str,
    ) -> Result<(), Error> {
        let p = self.authenticate(meta, bearer).await?;
        if id.len() > MAX_ID_LEN {
            return Err(not_found());
        }
        let caller = self.live_session(meta, &p);
        let revoked = match self.store.remove_passkey(&caller, id, MFA_CHANGE_REVOKE_REASON).await? {
            None => return Err(self.refused_write(&caller).await),
            Some(None) => return Err(not_found()),
            Some(Some(n)) => n,
        };
        let mut out: Vec<Event> =
            vec![events::PasskeyRemoved { user_id: p.user_id.clone(), passkey_id: id.to_string() }.into()];
        if revoked > 0 {
            out.push(events::SessionRevoked { user_id: p.user_id.clone(), session_id: None, revoke_all: true }.into());
        }
        self.emit(meta, rng, out).await
    }

    /// `POST /auth/passkeys/login/options`: the options for
    /// `navigator.credentials.get` and their `challenge_id`. With `email`,
    /// `allowCredentials` lists the account's passkeys — or, for an address
    /// without any (or without an account), one stable stand-in, so the
    /// answer does not tell whether the address has an account; without,
    /// it is empty (a discoverable credential is asked for). Counted
    /// against the login per-IP limit.
    pub async fn passkey_login_options(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        req: LoginOptionsRequest,
    ) -> Result<Value, Error> {
        let rp = self.relying_party()?;
        let email = req.email.as_deref().map(Email::parse).transpose()?;
        self.throttle_ip(meta, rng, Endpoint::Login).await?;
        let (allow, allowed) = match &email {
            None => (Vec::new(), None),
            Some(email) => {
                // The same two reads whether the address has an account or
                // not (an id no account has for none): the time taken does
                // not tell either.
                let user = self.store.user_by_email(email.as_str()).await?;
                let nobody = UserId::new(String::new());
                let keys = self.store.passkeys(user.as_ref().map_or(&nobody, |u| &u.id)).await?;
                if keys.is_empty() {
                    let stand_in = stand_in_credential_id(&self.config.kek, email.as_str());
                    (vec![descriptor(&stand_in, &[])], Some(vec![stand_in]))
                } else {
                    let ids = keys.iter().map(|k| k.credential_id.clone()).collect();
                    (keys.iter().map(Passkey::descriptor).collect(), Some(ids))
                }
            }
        };
        let challenge = new_challenge(rng);
        let id = ids::uuid(rng);
        self.store
            .put_passkey_challenge(&PasskeyChallenge {
                id: id.clone(),
                ceremony: Ceremony::Get,
                challenge: challenge.clone(),
                user_id: None,
                name: None,
                allowed,
                expires_at: meta.now.plus_secs(CHALLENGE_TTL_SECS),
            })
            .await?;
        Ok(json!({
            "challenge": challenge,
            "timeout": CEREMONY_TIMEOUT_MS,
            "rpId": rp.id,
            "allowCredentials": allow,
            "userVerification": "preferred",
            "challenge_id": id,
        }))
    }

    /// `POST /auth/passkeys/login/verify`: signs in with a passkey (see the
    /// module documentation for the order of checks). 401 with
    /// `invalid_challenge`, `unknown_credential`, `user_handle_required`, `user_handle_mismatch`,
    /// `invalid_signature` or `sign_count_regressed`; 403 `account_banned`.
    pub async fn passkey_login_verify(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        verifier: &impl PasskeyVerifier,
        req: LoginVerifyRequest,
    ) -> Result<SignIn, Error> {
        let rp = self.relying_party()?;
        self.throttle_ip(meta, rng, Endpoint::Login).await?;
        let id = req.challenge_id.trim();
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(invalid_challenge());
        }
        let a = Assertion::parse(&req.credential, rp)?;
        let Some(challenge) = self.store.take_login_challenge(id, meta.now).await? else {
            return Err(invalid_challenge());
        };
        if !a.client.has_challenge(&challenge.challenge) {
            return Err(invalid_challenge());
        }
        // WebAuthn §7.2 steps 5–6: a credential the options allowed, and
        // for a discoverable sign-in (no list) the user handle it names.
        match &challenge.allowed {
            // As an unknown one: the options were for another account.
            Some(allowed) if !allowed.contains(&a.credential_id) => return Err(unknown_credential()),
            None if a.user_handle.is_none() => {
                return Err(refused("user_handle_required", "a discoverable passkey sign-in needs the userHandle"));
            }
            _ => {}
        }
        let Some(passkey) = self.store.passkey_by_credential(&a.credential_id).await? else {
            return Err(unknown_credential());
        };
        if let Some(handle) = &a.user_handle {
            if !is_user_handle(&self.config.kek, &passkey.user_id, handle) {
                return Err(refused("user_handle_mismatch", "the user handle is not the passkey's account's"));
            }
        }
        let Some(user) = self.store.user_by_id(&passkey.user_id).await? else {
            return Err(unknown_credential());
        };
        let stored = decode_b64url(&passkey.public_key, passkey::MAX_ATTESTATION_OBJECT_BYTES, "stored key")
            .map_err(|_| Error::Internal(format!("passkey {}: the stored public key is not base64url", passkey.id)))?;
        let key = match PublicKey::from_cose(&stored) {
            Ok(key) => key,
            // A key stored before a check that now refuses it (one whose
            // signatures anyone could forge) verifies nothing.
            Err(_) if PublicKey::is_weak_cose(&stored) => {
                self.passkey_failed(meta, rng, &user, "invalid_signature").await?;
                return Err(refused("invalid_signature", "the passkey's key is too weak to sign in with"));
            }
            Err(_) => {
                return Err(Error::Internal(format!("passkey {}: the stored public key does not parse", passkey.id)))
            }
        };
        let mut signed = a.auth_data_bytes.clone();
        signed.extend_from_slice(&a.client_hash);
        if !verifier.verify_passkey(&key, &signed, &a.signature).await? {
            self.passkey_failed(meta, rng, &user, "invalid_signature").await?;
            return Err(refused("invalid_signature", "the passkey's signature does not verify"));
        }
        let new_count = a.auth_data.sign_count;
        let flags = a.auth_data.flags;
        if flags.backup_eligible() != passkey.backup_eligible {
            // BE is fixed for a credential's life (WebAuthn §6.1.3): another
            // value is not the authenticator that registered it.
            self.passkey_failed(meta, rng, &user, "invalid_credential").await?;
            return Err(malformed("the BE flag differs from the one the passkey registered with"));
        }
        if !counter_ok(passkey.sign_count, new_count)
            || !self.store.use_passkey(&passkey.id, new_count, flags.backed_up(), meta.now).await?
        {
            self.passkey_failed(meta, rng, &user, "sign_count_regressed").await?;
            return Err(refused(
                "sign_count_regressed",
                "the authenticator's signature counter did not grow: it may be a clone; nothing was recorded",
            ));
        }
        // A ban is told only to whoever proved the passkey (as a password
        // login tells it only after the right password).
        if user.banned {
            self.passkey_failed(meta, rng, &user, "banned").await?;
            return Err(banned());
        }
        let key_amr = key_amr(passkey.backup_eligible);
        // The session (or the second step's) is bound to this passkey: its
        // removal racing this sign-in leaves the sign-in without a session.
        let basis = SignInBasis {
            user_epoch: user.auth_epoch,
            identity: None,
            passkey: Some(&passkey.id),
            second_factor: false,
        };
        let started = if flags.user_verified() {
            let basis = SignInBasis { second_factor: true, ..basis };
            let amr = key_amr.with(Amr::USER).with(Amr::MFA);
            self.open_session(meta, rng, &user, PROVIDER_PASSKEY, basis, amr).await.map(SignIn::Complete)
        } else {
            self.start_session_via(meta, rng, &user, PROVIDER_PASSKEY, basis, key_amr).await
        };
        let signed_in =
            self.refusal_announced(meta, rng, started, (&user.email, PASSKEY_REASON_PREFIX), &mut Vec::new()).await?;
        if let SignIn::Complete(_) = signed_in {
            self.emit(meta, rng, vec![login_event(&user, PROVIDER_PASSKEY, meta)]).await?;
        }
        Ok(signed_in)
    }

    /// Emits `login_failed` for a passkey sign-in of `user` refused for `reason`.
    async fn passkey_failed(&self, meta: &Meta, rng: &mut impl Random, user: &User, reason: &str) -> Result<(), Error> {
        self.emit(meta, rng, vec![login_failed_event(&user.email, format!("{PASSKEY_REASON_PREFIX}{reason}"), meta)])
            .await
    }
}

/// A refused registration ceremony (challenge, origin, RP ID, user
/// presence) on the signed-in `register/verify`: 400 with the same code,
/// not the sign-in's 401, whose `WWW-Authenticate` tells a client to
/// refresh its (valid) token and retry.
fn as_bad_ceremony(e: Error) -> Error {
    match e {
        Error::PasskeyRefused { code, detail } => Error::BadRequest { code, detail },
        other => other,
    }
}

/// 409 `too_many_passkeys`.
fn too_many() -> Error {
    Error::Conflict {
        code: "too_many_passkeys",
        detail: format!("an account holds at most {MAX_PASSKEYS_PER_USER} passkeys; remove one first"),
    }
}
