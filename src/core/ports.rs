//! Ports: the small traits through which core reaches storage, the event
//! queue, the key ring, outbound HTTP (webhooks, email APIs, the sign-in
//! hook), the mail binding, the delivery ledger and waiting within a request. The edge implements
//! them with D1, Queues, WebCrypto, `fetch` and timers; the native tests with in-memory fakes.
//!
//! Every method returns core's [`Error`]: adapters map their failures to
//! [`Error::Unavailable`], so a broken dependency fails closed.
#![allow(async_fn_in_trait)] // Send is not needed: a Worker isolate is single-threaded.

use crate::core::audit_log::{AuditEntry, AuditFilter, AuditRecord};
use crate::core::emailed_secret::{EmailToken, TokenKind};
use std::future::Future;
use std::pin::Pin;

use crate::core::error::Error;
use crate::core::events::Envelope;
use crate::core::ids::{SessionId, UserId};
use crate::core::ledger::{Claim, DeadLetter, TargetState};
use crate::core::mail::{BindingError, MimeEmail};
use crate::core::mfa::{Challenge, FactorsRemoved, FactorsReset, StoredFactors};
use crate::core::outbound::{HttpReply, HttpRequest, SendError};
use crate::core::passkey::{Passkey, PasskeyAdded, PasskeyChallenge, PublicKey};
use crate::core::rate_limit::{Backoff, Count, Hit, LoginRecord};
use crate::core::revocation::{RevocationPage, Standing};
use crate::core::session::{LiveSession, RotateRequest, Rotation, Session, SignInBasis};
use crate::core::signing_keys::{Kid, SigningAlg, SigningKey, StoredKey};
use crate::core::takeover::{AddressProof, Proven};
use crate::core::time::UnixTime;
use crate::core::token::VerifiedToken;
use crate::core::users::{ProfileEdit, ProfileUpdate, User, UserPage};

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;

/// User accounts.
pub trait UserStore {
    /// Inserts `user` (and its roles). `Ok(false)` when the email is taken.
    async fn insert_user(&self, user: &User) -> Result<bool>;
    /// The user with this normalised email.
    async fn user_by_email(&self, email: &str) -> Result<Option<User>>;
    /// The user with this id.
    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>>;
    /// Replaces the password hash with a rehash of the same password, if the
    /// account epoch is still `user_epoch` (the one the password was checked
    /// under): a rehash must never bring back a password that a reset or a
    /// takeover removed in the meantime.
    async fn set_password_hash(&self, user_id: &UserId, hash: &str, user_epoch: u64, now: UnixTime) -> Result<()>;
}

/// Sessions and their refresh tokens.
pub trait SessionStore {
    /// Stores a new session whose current refresh token hashes to
    /// `refresh_hash` — if what the sign-in relied on still holds: the
    /// user's account epoch is still `basis.user_epoch`, the user is not
    /// banned, the identity of `basis.identity` (if any) is still linked
    /// to the user, the passkey of `basis.passkey` (if any) is still the
    /// user's, and, unless `basis.second_factor`, the user has no second
    /// factor on, all decided in the same write. `Ok(false)`, nothing
    /// written, when the epoch moved (a password change or reset, a ban, a
    /// new address or a takeover got in between), the identity was unlinked
    /// or dropped, the passkey was removed (by its owner or an
    /// administrator's reset), a second factor was turned on, or the user is banned or gone.
    async fn create_session(&self, session: &Session, refresh_hash: &str, basis: &SignInBasis<'_>) -> Result<bool>;
    /// Atomically swaps the current refresh token for its successor; see [`Rotation`].
    async fn rotate_refresh(&self, req: &RotateRequest<'_>) -> Result<Rotation>;
    /// The session with this id.
    async fn session_by_id(&self, id: &SessionId) -> Result<Option<Session>>;
    /// The session whose current refresh token hashes to `refresh_hash`.
    async fn session_by_refresh(&self, refresh_hash: &str) -> Result<Option<Session>>;
    /// The session a refresh token hashing to `refresh_hash` was issued to:
    /// its current token or one rotated away (the whole family).
    async fn session_by_issued_refresh(&self, refresh_hash: &str) -> Result<Option<Session>>;
    /// Revokes one session; `Ok(false)` if it was already revoked or unknown.
    async fn revoke_session(&self, id: &SessionId, now: UnixTime, reason: &str) -> Result<bool>;
    /// Revokes every live session of `user_id` but `except`; returns how many.
    async fn revoke_user_sessions(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
        now: UnixTime,
        reason: &str,
    ) -> Result<u64>;
    /// Revokes every live session of the caller's user but the caller's
    /// own, if the caller's session is still live, decided in the same
    /// write; returns how many. `Ok(None)`, nothing written, when it is not
    /// (revoked or ended since the caller authenticated).
    async fn revoke_other_sessions(&self, caller: &LiveSession<'_>, reason: &str) -> Result<Option<u64>>;
    /// The user's live sessions, newest first.
    async fn list_sessions(&self, user_id: &UserId, now: UnixTime) -> Result<Vec<Session>>;
}

/// The revocation log (see [`crate::core::revocation`]). Rows are written by
/// the store itself, in the same write as whatever revokes a session or
/// changes a user's roles — every [`SessionStore`] and [`AccountStore`]
/// method that does either, and anything else that does (a cascade from a
/// deleted user, an operator's SQL) — never by a separate call, so a
/// revocation is recorded exactly when it happens. Each row gets a sequence
/// number larger than every row committed before it.
pub trait RevocationStore {
    /// The rows after `after` (by sequence number, ascending) recorded after
    /// `live_after`, at most `limit`, and the log's largest sequence number,
    /// read in one snapshot.
    async fn revocations_after(&self, after: u64, live_after: UnixTime, limit: u32) -> Result<RevocationPage>;
    /// The session `sid` and the roles its user holds now, read together;
    /// `None` when there is no such session.
    async fn session_standing(&self, sid: &SessionId) -> Result<Option<Standing>>;
    /// Deletes the rows recorded at or before `before`; returns how many.
    async fn purge_revocations(&self, before: UnixTime) -> Result<u64>;
}

/// Account changes beyond sign-up: verification, passwords, and what
/// administrators do to users. Every method is one atomic write. Those that
/// must void what was granted before them (emailed tokens, sign-ins in
/// flight, pending OAuth links) move the account epoch in that write.
pub trait AccountStore {
    /// Marks the address of the account of `holder` verified if it is still
    /// `email` and `holder`'s session is still live, decided in the same
    /// write. Nothing else changes: this is a signed-in holder confirming
    /// the account as it stands (see [`crate::core::takeover`]). `Ok(Some(true))`
    /// when it was marked now; `Ok(Some(false))` when it already was verified
    /// (or the account has another address or is gone); `Ok(None)`, nothing
    /// written, when the holder's session is no longer live.
    async fn set_email_verified(&self, holder: &LiveSession<'_>, email: &str) -> Result<Option<bool>>;
    /// Records a proof of the account's address: links the proof's identity,
    /// and takes an unverified account over (clears the password, revokes
    /// every session, drops identities that did not verify this address,
    /// marks it verified, moves the epoch); a reset's new password is set and
    /// every session revoked either way. One atomic write, decided on the
    /// account as it is then (see [`crate::core::takeover`]). `Ok(None)`,
    /// nothing written, when the account is gone or has another address.
    async fn prove_address(&self, proof: &AddressProof<'_>) -> Result<Option<Proven>>;
    /// Replaces the password hash if the account epoch is still `user_epoch`
    /// (the one the caller checked the current password under), moving the
    /// epoch and revoking every live session of the user but `keep`, in the
    /// same write. Returns how many sessions were revoked; `Ok(None)`,
    /// nothing written, when the epoch moved.
    async fn set_password(
        &self,
        user_id: &UserId,
        hash: &str,
        keep: Option<&SessionId>,
        user_epoch: u64,
        now: UnixTime,
        reason: &str,
    ) -> Result<Option<u64>>;
    /// Users whose email or name contains `query` (case-insensitive; all
    /// users if `None`), newest first, `limit` from `offset`, and the total.
    async fn list_users(&self, query: Option<&str>, limit: u32, offset: u32) -> Result<UserPage>;
    /// Writes the profile fields of `user` named in `fields` (`email`,
    /// `name`, `avatar_url`, `phone`, `email_verified`, `locale`) and no
    /// other column, keeping emails unique; a new email also writes
    /// `email_verified`, moves the epoch and, in the same write, deletes the
    /// tokens mailed to the old address before the account existed (no user
    /// id).
    async fn update_profile(&self, user: &User, fields: &[String], now: UnixTime) -> Result<ProfileUpdate>;
    /// Writes the fields `edit` gives of `caller`'s account, leaving every
    /// other column as it is (an administrator's concurrent edit of another
    /// field stands), if `caller`'s session is still live, decided in the
    /// same write. `Ok(false)`, nothing written, when it is not.
    async fn edit_own_profile(&self, caller: &LiveSession<'_>, edit: &ProfileEdit) -> Result<bool>;
    /// Deletes the user with their roles, sessions and emailed tokens, and
    /// in the same write the tokens mailed to their address before the
    /// account existed (no user id); `Ok(false)` if there was no such user.
    async fn delete_user(&self, user_id: &UserId) -> Result<bool>;
    /// Sets the ban flag. Banning also revokes every live session of the
    /// user and moves the epoch, in the same write. `Ok(true)` if the flag
    /// changed.
    async fn set_banned(&self, user_id: &UserId, banned: bool, now: UnixTime) -> Result<bool>;
    /// Grants `role`; `Ok(false)` if the user already had it.
    async fn add_role(&self, user_id: &UserId, role: &str, now: UnixTime) -> Result<bool>;
    /// Withdraws `role`; `Ok(false)` if the user did not have it.
    async fn remove_role(&self, user_id: &UserId, role: &str) -> Result<bool>;
}

/// Single-use secrets sent by email. The store is the authority on whether
/// a secret can still be used: every decision is one conditional write, so of
/// any number of racing requests exactly one consumes a secret, and every
/// attempt at a code is counted.
pub trait EmailTokenStore {
    /// Stores `token` as the one live token of its kind for its email;
    /// earlier live tokens of that kind and email die in the same write.
    async fn issue_email_token(&self, token: &EmailToken) -> Result<()>;
    /// Consumes the live, unexpired token of `kind` whose hash is `hash`;
    /// `Ok(None)` when there is none (unknown, used, superseded or expired,
    /// or issued for an account whose epoch has moved since, or is gone).
    /// The epoch is compared in the consuming write. A token issued while
    /// its address had no account (`user_id` `None`, epoch 0) is held to the
    /// epoch of the account that has the address now, if any: it works
    /// until that account's epoch first moves.
    async fn consume_email_token(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<Option<EmailToken>>;
    /// The token [`EmailTokenStore::consume_email_token`] would consume now,
    /// left as it is: a read, for a page that names what a link is for
    /// before anyone uses it (a racing consumption may still win).
    async fn peek_email_token(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<Option<EmailToken>>;
    /// Counts one attempt against the live, unexpired code sent to `email`
    /// unless it already had `max_attempts`, and returns it with the attempt
    /// counted; `Ok(None)` when there is no such code (a code issued under an
    /// earlier account epoch is none, by the rule of
    /// [`EmailTokenStore::consume_email_token`]).
    async fn count_code_attempt(&self, email: &str, now: UnixTime, max_attempts: u32) -> Result<Option<EmailToken>>;
    /// Deletes tokens that expired before `before`; returns how many.
    async fn purge_email_tokens(&self, before: UnixTime) -> Result<u64>;
}

/// Rate-limit counters and the login back-off. Every method is one atomic
/// statement per key, so concurrent requests are all counted.
pub trait RateLimitStore {
    /// Counts one request at `now` on each counter — opening a new window
    /// when there is none or it has ended — and returns the counts, in order,
    /// all in one atomic write. A hit with a condition ([`Hit::within`]) is
    /// counted only if the earlier hit it names, as just counted, is within
    /// its limit, and is `None` otherwise (nothing written for it); the
    /// condition is checked in the same write, so concurrent requests
    /// charge it exactly once for each request the earlier counter admits.
    async fn hit(&self, hits: &[Hit], now: UnixTime) -> Result<Vec<Option<Count>>>;
    /// Takes one request back from counter `key`, in one conditional write:
    /// only while its window is the one ending at `resets_at` and its count
    /// is between 1 and `limit` — a window that went over its limit stays
    /// over (its refusal was reported once and must not be again), and a
    /// later window owes nothing.
    async fn unhit(&self, key: &str, resets_at: UnixTime, limit: u32) -> Result<()>;
    /// Admits a login attempt for `email` at `now` if `backoff` lets it in,
    /// and counts it as a failure (the record's failures plus one, the last
    /// at `now` or a later one already stamped) and as in flight (one more
    /// [`LoginRecord::in_flight`]; or one alone, the marks started over,
    /// when the last admission is [`crate::core::rate_limit::LOGIN_IN_FLIGHT_SECS`]
    /// or more before `now`) before any password is checked, in one
    /// atomic write: so
    /// concurrent attempts are admitted exactly as if they came one after
    /// another, never more than the back-off allows. A record whose last
    /// failure is at or before `forget_before` is forgotten (the attempt is
    /// admitted and counts as the first, the only one in flight). With `forget_before` `now` less
    /// [`crate::core::rate_limit::BACKOFF_MEMORY_SECS`], as every caller
    /// passes, admitted exactly when the record has fewer than the free
    /// failures or [`Backoff::wait`] is `None` for it (the two differ only
    /// for a last failure stamped later than `now` by a clock ahead of this
    /// one); the attempts in flight play no part in it. `Ok(None)`: admitted and
    /// counted; `Ok(Some(record))`: refused, with the record that refused
    /// it, and nothing written.
    async fn count_login_attempt(
        &self,
        email: &str,
        backoff: &Backoff,
        now: UnixTime,
        forget_before: UnixTime,
    ) -> Result<Option<LoginRecord>>;
    /// Ends an attempt admitted by [`Self::count_login_attempt`] at
    /// `admitted_at` that did not prove the password: one fewer in flight
    /// (never below zero), in one atomic write; its failure stays counted.
    /// Nothing for a record already cleared, nor once the record's last
    /// admission is [`crate::core::rate_limit::LOGIN_IN_FLIGHT_SECS`] or
    /// more after `admitted_at`: the marks may have started over since
    /// (see `count_login_attempt`), and this one's is not among them.
    async fn settle_login_attempt(&self, email: &str, admitted_at: UnixTime) -> Result<()>;
    /// Forgets the failed logins of `email`, and the attempts in flight
    /// (after a success, whose attempt was counted, or a reset).
    async fn clear_login_failures(&self, email: &str) -> Result<()>;
}

/// Second factors and the sign-ins waiting for their second step (see
/// [`crate::core::mfa`]). Every method is one atomic write (or read); those
/// made for a signed-in caller are made only while the caller's session is
/// live, decided in the same write.
pub trait MfaStore {
    /// The account's second factors.
    async fn mfa_factors(&self, user_id: &UserId) -> Result<StoredFactors>;
    /// Stores `sealed` as the caller's enrolling (not yet confirmed) TOTP
    /// secret, replacing an enrolling one, unless TOTP is on. `Ok(Some(true))`
    /// stored; `Ok(Some(false))`, nothing written, when TOTP is on; `Ok(None)`,
    /// nothing written, when the caller's session is not live.
    async fn enroll_totp(&self, caller: &LiveSession<'_>, sealed: &str) -> Result<Option<bool>>;
    /// Turns the caller's enrolling TOTP on if its secret is still `sealed`
    /// (the one the code was checked against): marks it confirmed with
    /// `step` as its last used step, replaces the account's backup codes
    /// with `backup_hashes`, the set `backup_set` (see
    /// [`MfaStore::replace_backup_codes`]), and revokes every other live session of the
    /// user (`reason`), in one write. `Ok(Some(revoked))`; `Ok(None)`,
    /// nothing written, when the session is not live or the enrolment is
    /// gone, replaced or already confirmed.
    async fn confirm_totp(
        &self,
        caller: &LiveSession<'_>,
        sealed: &str,
        step: u64,
        backup_hashes: &[String],
        backup_set: &str,
        reason: &str,
    ) -> Result<Option<u64>>;
    /// Records `step` as the last used step of the account's TOTP if it is
    /// on, its secret is still `sealed`, and `step` is later than the last
    /// one used: `Ok(true)` when the code is accepted. One conditional write,
    /// so of racing uses of one code exactly one is accepted, and never a
    /// code older than one already used.
    async fn use_totp_step(&self, user_id: &UserId, sealed: &str, step: u64) -> Result<bool>;
    /// Deletes the account's unused backup code tagged `hash`: `Ok(true)` if
    /// there was one (exactly one of racing uses of a code gets it).
    async fn use_backup_code(&self, user_id: &UserId, hash: &str) -> Result<bool>;
    /// Replaces the caller's backup codes with `hashes`, the set `new_set`,
    /// if TOTP is on and its set is still `read_set` (as read in
    /// [`crate::core::mfa::StoredTotp::backup_set`]), in one write: of racing regenerations
    /// exactly one replaces the set. `Ok(Some(true))` replaced;
    /// `Ok(Some(false))`, nothing written, when TOTP is off or its set is
    /// another; `Ok(None)`, nothing written, when the session is not live.
    async fn replace_backup_codes(
        &self,
        caller: &LiveSession<'_>,
        read_set: Option<&str>,
        new_set: &str,
        hashes: &[String],
    ) -> Result<Option<bool>>;
    /// Removes the caller's TOTP (on or enrolling) and backup codes and, if
    /// TOTP was on, revokes every other live session of the user, in one
    /// write, only while the caller's session is live: `Ok(None)`, nothing
    /// written, otherwise.
    async fn remove_factors(&self, caller: &LiveSession<'_>, reason: &str) -> Result<Option<FactorsRemoved>>;
    /// An administrator's reset: removes every second factor of `user_id`
    /// (TOTP, on or enrolling, the backup codes and every passkey) and, if
    /// TOTP was on or there was a passkey, revokes every live session of the
    /// user (`reason`), all in one write.
    async fn reset_factors(&self, user_id: &UserId, now: UnixTime, reason: &str) -> Result<FactorsReset>;
    /// Stores a sign-in waiting for its second step; the user's expired ones
    /// are deleted in the same write.
    async fn put_mfa_challenge(&self, challenge: &Challenge) -> Result<()>;
    /// Counts one attempt against the live, unexpired challenge `hash`
    /// unless it already had `max_attempts`, and returns it with the attempt
    /// counted; `Ok(None)` when there is none. One conditional write: racing
    /// attempts are all counted.
    async fn count_mfa_attempt(&self, hash: &str, now: UnixTime, max_attempts: u32) -> Result<Option<Challenge>>;
    /// Consumes (deletes) the unexpired challenge `hash`; of racing callers
    /// exactly one gets it.
    async fn take_mfa_challenge(&self, hash: &str, now: UnixTime) -> Result<Option<Challenge>>;
}

/// Passkeys and their ceremonies' challenges (see [`crate::core::passkey`]).
/// Every method is one atomic write (or one read); those made for a
/// signed-in caller are made only while the caller's session is live,
/// decided in the same write.
pub trait PasskeyStore {
    /// Stores a ceremony's challenge; expired challenges of the same user
    /// (or, without a user, of nobody) may be deleted in the same write. A
    /// registration challenge replaces the user's earlier ones, in the same
    /// write: a user has at most one open registration.
    async fn put_passkey_challenge(&self, challenge: &PasskeyChallenge) -> Result<()>;
    /// Consumes (deletes) the unexpired registration challenge `challenge`
    /// issued to `user_id`, returning it; of racing callers exactly one
    /// gets it, and an expired one is never returned.
    async fn take_registration_challenge(
        &self,
        user_id: &UserId,
        challenge: &str,
        now: UnixTime,
    ) -> Result<Option<PasskeyChallenge>>;
    /// Consumes (deletes) the unexpired sign-in challenge `id`, returning
    /// it; of racing callers exactly one gets it.
    async fn take_login_challenge(&self, id: &str, now: UnixTime) -> Result<Option<PasskeyChallenge>>;
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user_id: &UserId) -> Result<Vec<Passkey>>;
    /// The passkey with this credential id (base64url), whoever's it is.
    async fn passkey_by_credential(&self, credential_id: &str) -> Result<Option<Passkey>>;
    /// Stores `passkey` for the caller (its `user_id`), if the caller's
    /// session is live, no passkey anywhere has its credential id, and the
    /// user holds fewer than `max` passkeys, all decided in the one write.
    /// `Ok(None)`, nothing written, when the session is not live.
    async fn add_passkey(&self, caller: &LiveSession<'_>, passkey: &Passkey, max: u32) -> Result<Option<PasskeyAdded>>;
    /// Records a sign-in with passkey `id`: its counter becomes
    /// `sign_count`, its backup state `backed_up`, `last_used_at` `now` —
    /// only if the stored counter still allows `sign_count`
    /// ([`crate::core::passkey::counter_ok`]), decided in the write, so of
    /// racing uses of one counter value at most one is recorded. `Ok(false)`,
    /// nothing written, otherwise (or when the passkey is gone).
    async fn use_passkey(&self, id: &str, sign_count: u32, backed_up: bool, now: UnixTime) -> Result<bool>;
    /// Renames the caller's passkey `id`. `Ok(Some(false))` when the caller
    /// has no such passkey; `Ok(None)`, nothing written, when the session is
    /// not live.
    async fn rename_passkey(&self, caller: &LiveSession<'_>, id: &str, name: &str) -> Result<Option<bool>>;
    /// Removes the caller's passkey `id` and revokes every other live
    /// session of the user (`reason`: a change of factors), in one write.
    /// `Ok(Some(Some(revoked)))` removed; `Ok(Some(None))` when the caller
    /// has no such passkey (nothing written); `Ok(None)`, nothing written,
    /// when the session is not live.
    async fn remove_passkey(&self, caller: &LiveSession<'_>, id: &str, reason: &str) -> Result<Option<Option<u64>>>;
}

/// Signature checks of passkey assertions, through the runtime's native
/// crypto at the edge (a pure implementation in the native tests).
pub trait PasskeyVerifier {
    /// Whether `signature` is `key`'s signature over `signed`: for ES256 the
    /// DER-encoded ECDSA P-256 / SHA-256 signature WebAuthn carries, for
    /// EdDSA the 64-byte Ed25519 one. `Ok(false)` for any malformed
    /// signature; `Err` only when the runtime's crypto failed.
    async fn verify_passkey(&self, key: &PublicKey, signed: &[u8], signature: &[u8]) -> Result<bool>;
    /// Whether the runtime imports `key` (for P-256: the point is on the
    /// curve): asked at registration, so no key stored fails at sign-in.
    fn accepts_key(&self, key: &PublicKey) -> bool;
}

/// Signing keys at rest.
pub trait KeyStore {
    /// Every stored key.
    async fn load_keys(&self) -> Result<Vec<StoredKey>>;
    /// Inserts `key` as the active key unless one exists; `Ok(false)` if one did.
    async fn insert_first_key(&self, key: &StoredKey) -> Result<bool>;
    /// In one atomic write: retires `old_kid` if it is still the active key
    /// (published until `publish_until`), inserts `new` as the active key, and
    /// deletes retired keys no longer published at `now`. `Ok(false)`, with
    /// nothing written, when `old_kid` is no longer active (another rotation won).
    async fn rotate_key(&self, old_kid: &Kid, new: &StoredKey, now: UnixTime, publish_until: UnixTime) -> Result<bool>;
    /// In one conditional write: deletes the retired key `kid` if it is
    /// still published at `now`. `Ok(false)`, with nothing written, when
    /// there is no such key (unknown, active, or past its publication).
    async fn withdraw_key(&self, kid: &Kid, now: UnixTime) -> Result<bool>;
}

/// The key ring as request handlers see it: signing and verification.
pub trait KeyRing {
    /// The active signing key, created on first use.
    async fn signing_key(&self) -> Result<SigningKey>;
    /// Verifies a signature by key `kid` over `signed`, made with `alg`:
    /// `Ok(Some(false))` when the key is of another algorithm, `Ok(None)`
    /// when no published key has that `kid`.
    async fn verify(&self, kid: &str, alg: SigningAlg, signed: &[u8], signature: &[u8]) -> Result<Option<bool>>;
    /// Told of each access token signed with [`KeyRing::signing_key`] (the
    /// key `kid`), in the form verifying it would give, at `now`: an edge
    /// may trust it from then on without checking its own signature, for as
    /// long as it would verify it. Default: nothing.
    fn issued(&self, _raw: &str, _kid: &str, _token: VerifiedToken, _now: UnixTime) {}
    /// Told that the stored keys have just changed (a rotation or a
    /// retirement written by this caller): whatever the ring loaded, or is
    /// loading, must be read again before it is used. Called before the
    /// change's event is emitted, so a failing queue cannot leave the ring on
    /// the old keys. Default: nothing (a ring that caches nothing).
    fn keys_changed(&self) {}
}

/// The event queue, and the log of what a flow tolerated.
pub trait EventSink {
    /// Publishes the envelopes, in order.
    async fn publish(&self, events: &[Envelope]) -> Result<()>;
    /// Hears about a failure a flow tolerated (a best-effort write that did
    /// not happen), for the log. Default: nothing.
    fn report(&self, _warning: &str) {}
}

/// The audit log (see [`crate::core::audit`]). Written only by the queue
/// consumers, read by the audit endpoints, purged by the cron trigger.
pub trait AuditLog {
    /// Writes `record` unless an entry with its id exists, in one statement
    /// (so a redelivered event is recorded once, and racing consumers write
    /// one entry). An entry without a user id but with a subject email is
    /// attributed, in that statement, to the account that has that address
    /// and existed at the entry's time, if any. `Ok(false)` when the id was
    /// already recorded.
    async fn record_audit(&self, record: &AuditRecord) -> Result<bool>;
    /// At most `limit` entries matching `filter`, newest first: ordered by
    /// time, then id, both descending (the order [`crate::core::audit::Cursor`]
    /// relies on). A plain read: entries written meanwhile may or may not be
    /// in it.
    async fn audit_entries(&self, filter: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Deletes at most `limit` entries older than `before` (oldest first), in
    /// one statement; returns how many.
    async fn purge_audit(&self, before: UnixTime, limit: u32) -> Result<u64>;
    /// Deletes at most `limit` of the entries written before the newest
    /// `keep` (the first written first), in one statement; returns how many.
    /// Entries count in the order they were written, not by their time, and
    /// without counting the table: an entry written later than another
    /// outlives it, and gaps left by other deletions may make it keep fewer
    /// than `keep`, never more.
    async fn purge_audit_beyond(&self, keep: u64, limit: u32) -> Result<u64>;
    /// When the account `user_id` was last taken over
    /// ([`crate::core::takeover`]), as the takeover's own write recorded it
    /// ([`AccountStore::prove_address`]); `None` if it never was (or there
    /// is no such account).
    async fn taken_over_at(&self, user_id: &UserId) -> Result<Option<UnixTime>>;
}

/// A boxed future, for the one port used as a trait object ([`SigninHook`]).
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The transport of the sign-in hook (`HOOK_URL`): sends the signed request
/// core built and returns the reply. Flows reach it as `&dyn SigninHook`, so
/// adding it did not change the type of every flow — hence a boxed future
/// rather than `async fn`.
pub trait SigninHook {
    /// Sends `request`, waiting at most its `timeout_ms` for the response head.
    fn send<'a>(&'a self, request: &'a HttpRequest) -> LocalFuture<'a, std::result::Result<HttpReply, SendError>>;
    /// Hears about a hook failure or a dropped reserved claim, for the log.
    fn report(&self, warning: &str);
}

/// A hook client for deployments and tests without a hook: never asked, since
/// flows only call the hook when `HOOK_URL` is configured.
pub struct NoGate;

impl SigninHook for NoGate {
    fn send<'a>(&'a self, _request: &'a HttpRequest) -> LocalFuture<'a, std::result::Result<HttpReply, SendError>> {
        Box::pin(std::future::ready(Err(SendError::Network("no sign-in hook transport".into()))))
    }
    fn report(&self, _warning: &str) {}
}

/// Waiting a moment inside a request, for a login refused while attempts it
/// may be waiting on are in flight ([`LoginRecord::may_clear_soon`]).
/// Reached as `&dyn Pause`, as [`SigninHook`] is and for the same reason.
pub trait Pause {
    /// Waits about `ms` milliseconds and returns the time then (the clock
    /// the request's [`crate::core::flows::Meta::now`] came from).
    fn pause(&self, ms: u64) -> LocalFuture<'_, UnixTime>;
}

/// Outbound HTTP, the mail binding and the log, as the queue consumer uses them.
pub trait Courier {
    /// Sends `request`, waiting at most its `timeout_ms` for the response head.
    async fn send(&self, request: &HttpRequest) -> std::result::Result<HttpReply, SendError>;
    /// Hands `message` to the `send_email` binding, waiting at most its
    /// `timeout_ms`. `Ok` once the binding took it.
    async fn send_mime(&self, message: &MimeEmail) -> std::result::Result<(), BindingError>;
    /// Writes `marker` and the JSON `value` as one log line.
    fn log(&self, marker: &str, value: &serde_json::Value);
}

/// The delivery ledger: one row per (event, target), which makes delivery
/// idempotent by event id and counts the attempts that drive the backoff.
pub trait DeliveryLedger {
    /// Claims (`event_id`, `target`) for one attempt until `lease_until`:
    /// [`Claim::Mine`] with the attempt number, or why not.
    async fn claim(
        &self,
        event_id: &str,
        event_type: &str,
        target: &str,
        now: UnixTime,
        lease_until: UnixTime,
    ) -> Result<Claim>;
    /// Records the attempt's outcome and releases the claim: `error` is
    /// `None` when the target got the event.
    async fn settle(&self, event_id: &str, target: &str, now: UnixTime, error: Option<&str>) -> Result<()>;
    /// The targets of `event_id` that never got it.
    async fn undelivered(&self, event_id: &str) -> Result<Vec<TargetState>>;
    /// Stores a dead letter; `Ok(false)` if one with its id is already stored.
    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<bool>;
}
