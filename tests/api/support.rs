//! In-memory ports, a fixed clock and a seeded random source: core's flows
//! run natively against these exactly as they run against D1 at the edge.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use portcullis::core::audit::{AuditEntry, AuditFilter, AuditRecord};
use portcullis::core::config::Config;
use portcullis::core::emailed_secret::{EmailToken, TokenKind};
use portcullis::core::error::Error;
use portcullis::core::events::Envelope;
use portcullis::core::flows::key_rotation::load_or_create;
use portcullis::core::flows::{Deps, Meta};
use portcullis::core::ids::{Random, SessionId, UserId};
use portcullis::core::ledger::{Claim, DeadLetter, TargetState};
use portcullis::core::mail::{BindingError, MimeEmail};
use portcullis::core::mfa::{Challenge, FactorsRemoved, FactorsReset, StoredFactors, StoredTotp};
use portcullis::core::oauth::LinkedIdentity;
use portcullis::core::outbound::{HttpReply, HttpRequest, SendError};
use portcullis::core::passkey::{counter_ok, Ceremony, Passkey, PasskeyAdded, PasskeyChallenge};
use portcullis::core::ports::{
    AccountStore, AuditLog, Courier, DeliveryLedger, EmailTokenStore, EventSink, KeyRing, KeyStore, LocalFuture,
    MfaStore, PasskeyStore, Pause, RateLimitStore, Result, RevocationStore, SessionStore, SigninHook, UserStore,
};
use portcullis::core::rate_limit::{Backoff, Count, Hit, LoginRecord, LOGIN_IN_FLIGHT_SECS};
use portcullis::core::revocation::{Revocation, RevocationPage, Revoked, Standing};
use portcullis::core::session::{LiveSession, RotateRequest, Rotation, Session, SignInBasis};
use portcullis::core::signing_keys::{Kek, KeyStatus, Kid, SigningAlg, SigningKey, StoredKey};
use portcullis::core::takeover::{keeps_identity, AddressProof, ProfileBefore, Proven};
use portcullis::core::time::UnixTime;
use portcullis::core::token::VerifiedToken;
use portcullis::core::users::Role;
use portcullis::core::users::{ProfileEdit, ProfileUpdate, User, UserPage};

/// xorshift64: deterministic, for tests only.
pub struct TestRandom(pub u64);

impl Random for TestRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 32) as u8;
        }
    }
}

#[derive(Default)]
pub struct MemStore {
    pub users: RefCell<Vec<User>>,
    /// (session, current refresh hash)
    pub sessions: RefCell<Vec<(Session, String)>>,
    /// refresh hash -> session id, every token ever issued
    pub issued: RefCell<HashMap<String, SessionId>>,
    pub keys: RefCell<Vec<StoredKey>>,
    /// Emailed tokens with their consumption time.
    pub email_tokens: RefCell<Vec<(EmailToken, Option<UnixTime>)>>,
    /// OAuth states, exchange codes and linked identities (see `oauth.rs`).
    pub oauth: RefCell<crate::oauth::MemOAuth>,
    pub fail: RefCell<bool>,
    /// Reads of the revocation log (`revocations_after` calls, failed ones too).
    pub log_reads: Cell<usize>,
    /// Rate-limit counters: key -> (window end, count).
    pub counters: RefCell<HashMap<String, (UnixTime, u32)>>,
    /// The login back-off's records by email.
    pub login_failures: RefCell<HashMap<String, LoginRecord>>,
    /// Makes `settle_login_attempt` fail, and only it.
    pub fail_settle: Cell<bool>,
    /// Makes every `user_by_email` give way once before it reads, as an
    /// await on D1 lets the isolate's other requests run: with [`join_all`],
    /// concurrent logins interleave between admission and password check.
    pub give_way_on_user_read: Cell<bool>,
    /// Runs once, right after the next `user_by_email` read: what another
    /// request does between a flow's read and its write.
    #[allow(clippy::type_complexity)]
    pub after_user_read: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Runs once, right after the next `session_by_id` read (an
    /// authenticated flow's session check): what another request does
    /// between that check and the flow's write.
    #[allow(clippy::type_complexity)]
    pub after_session_read: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Runs once, right after the next OAuth `identity` read.
    #[allow(clippy::type_complexity)]
    pub after_identity_read: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Runs once, right after the next emailed token is consumed.
    #[allow(clippy::type_complexity)]
    pub after_token_consumed: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Makes `unhit` (a rate-limit refund) fail, and only it.
    pub fail_unhit: Cell<bool>,
    /// The audit log, in insertion order.
    pub audit: RefCell<Vec<AuditEntry>>,
    /// Makes the audit log's writes fail, and only them.
    pub fail_audit: Cell<bool>,
    /// TOTP by user id.
    pub totp: RefCell<HashMap<UserId, StoredTotp>>,
    /// Unused backup codes: (user id, tag).
    pub backup_codes: RefCell<Vec<(UserId, String)>>,
    /// Sign-ins waiting for their second step.
    pub challenges: RefCell<Vec<Challenge>>,
    /// Runs once, right after the next `mfa_factors` read: what another
    /// request does between a sign-in's factor check and its session write.
    #[allow(clippy::type_complexity)]
    pub after_factors_read: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Runs once, right after the next profile edit that writes: what
    /// another request does between that write and the edit's answer.
    #[allow(clippy::type_complexity)]
    pub after_profile_write: RefCell<Option<Box<dyn FnOnce()>>>,
    /// Runs once, right after the next `taken_over_at` read: what another
    /// request does between an audit listing's reads.
    #[allow(clippy::type_complexity)]
    pub after_takeover_read: RefCell<Option<Box<dyn FnOnce()>>>,
    /// The revocation log, written as D1's triggers write it: by every
    /// write that revokes (or deletes) a live session or changes a user's
    /// roles, in that write.
    pub revocations: RefCell<Vec<Revocation>>,
    /// The database's own clock (`unixepoch()` in D1's triggers): the time
    /// of the last [`World::at`].
    pub clock: Cell<UnixTime>,
    /// The entries' order of writing (D1's `rowid`): rowid -> id, and back.
    pub audit_rowids: RefCell<(BTreeMap<u64, String>, HashMap<String, u64>)>,
    /// user id -> when the account was last taken over (D1 `users.taken_over_at`).
    pub taken_over: RefCell<HashMap<UserId, UnixTime>>,
    /// Passkeys, in registration order.
    pub passkeys: RefCell<Vec<Passkey>>,
    /// Passkey ceremony challenges.
    pub passkey_challenges: RefCell<Vec<PasskeyChallenge>>,
}

impl MemStore {
    fn log(&self, at: UnixTime, what: Revoked) {
        let mut log = self.revocations.borrow_mut();
        let seq = log.last().map_or(0, |r| r.seq) + 1;
        log.push(Revocation { seq, at, what });
    }
    /// Revokes `s` at `now`, recording it if it was used in the last day
    /// (D1: `revocations_session_revoked`).
    fn revoke(&self, s: &mut Session, now: UnixTime) {
        s.revoked_at = Some(now);
        self.log_session(s, now);
    }
    /// Records the revocation of `s` at `now` — only if an access token of it
    /// may still be valid (D1: the triggers' `last_used_at` condition).
    fn log_session(&self, s: &Session, now: UnixTime) {
        if s.last_used_at.plus_secs(portcullis::core::revocation::LOGGED_SESSION_IDLE_SECS) > now {
            self.log(now, Revoked::Session(s.id.clone()));
        }
    }
    /// Records `user`'s roles after a change (D1: `revocations_role_*`).
    pub fn log_roles(&self, user: &User) {
        self.log(self.clock.get(), Revoked::Roles { user_id: user.id.clone(), roles: user.roles.clone() });
    }
    fn check(&self) -> Result<()> {
        if *self.fail.borrow() {
            return Err(Error::unavailable("memory", "injected failure"));
        }
        Ok(())
    }
    /// Whether the account a token was issued for still has the token's
    /// epoch; for a token issued while the address had no account, whether
    /// the account that has it now (if any) still has epoch 0 (as D1's
    /// `COALESCE` over the address).
    fn epoch_stands(&self, t: &EmailToken) -> bool {
        let users = self.users.borrow();
        match &t.user_id {
            None => users.iter().find(|u| u.email == t.email).map_or(0, |u| u.auth_epoch) == t.user_epoch,
            Some(id) => users.iter().any(|u| &u.id == id && u.auth_epoch == t.user_epoch),
        }
    }
    /// Deletes the audit entries `ids` (and their rowids).
    fn forget_audit(&self, log: &mut Vec<AuditEntry>, ids: &HashSet<String>) {
        log.retain(|e| !ids.contains(&e.id));
        let mut rowids = self.audit_rowids.borrow_mut();
        for id in ids {
            if let Some(r) = rowids.1.remove(id) {
                rowids.0.remove(&r);
            }
        }
    }
    /// Whether the user has a second factor on, as D1's `MFA_ON` reads it.
    fn mfa_on(&self, user_id: &UserId) -> bool {
        self.totp.borrow().get(user_id).is_some_and(|t| t.confirmed)
    }
    /// Whether the caller's session is live, as D1 checks it in a write.
    pub fn session_live(&self, c: &LiveSession<'_>) -> bool {
        self.sessions
            .borrow()
            .iter()
            .any(|(s, _)| s.id == *c.session_id && s.user_id == *c.user_id && s.is_live(c.now, c.max_age_secs))
    }
}

impl MemStore {
    /// Revokes every live session of `user_id` but `keep`, recording each.
    fn revoke_logged(&self, user_id: &UserId, keep: Option<&SessionId>, now: UnixTime) -> u64 {
        let mut n = 0;
        for (s, _) in self.sessions.borrow_mut().iter_mut() {
            if s.user_id == *user_id && s.revoked_at.is_none() && keep != Some(&s.id) {
                self.revoke(s, now);
                n += 1;
            }
        }
        n
    }
}

impl PasskeyStore for MemStore {
    async fn put_passkey_challenge(&self, c: &PasskeyChallenge) -> Result<()> {
        self.check()?;
        let mut all = self.passkey_challenges.borrow_mut();
        if c.user_id.is_some() {
            all.retain(|o| !(o.ceremony == Ceremony::Create && o.user_id == c.user_id));
        }
        all.push(c.clone());
        Ok(())
    }
    async fn take_registration_challenge(
        &self,
        user_id: &UserId,
        challenge: &str,
        now: UnixTime,
    ) -> Result<Option<PasskeyChallenge>> {
        self.check()?;
        let mut all = self.passkey_challenges.borrow_mut();
        let found = all.iter().position(|c| {
            c.ceremony == Ceremony::Create
                && c.user_id.as_deref() == Some(user_id)
                && c.challenge == challenge
                && c.expires_at > now
        });
        Ok(found.map(|i| all.remove(i)))
    }
    async fn take_login_challenge(&self, id: &str, now: UnixTime) -> Result<Option<PasskeyChallenge>> {
        self.check()?;
        let mut all = self.passkey_challenges.borrow_mut();
        let found = all.iter().position(|c| c.ceremony == Ceremony::Get && c.id == id && c.expires_at > now);
        Ok(found.map(|i| all.remove(i)))
    }
    async fn passkeys(&self, user_id: &UserId) -> Result<Vec<Passkey>> {
        self.check()?;
        Ok(self.passkeys.borrow().iter().filter(|k| k.user_id == *user_id).cloned().collect())
    }
    async fn passkey_by_credential(&self, credential_id: &str) -> Result<Option<Passkey>> {
        self.check()?;
        Ok(self.passkeys.borrow().iter().find(|k| k.credential_id == credential_id).cloned())
    }
    async fn add_passkey(&self, caller: &LiveSession<'_>, k: &Passkey, max: u32) -> Result<Option<PasskeyAdded>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        let mut all = self.passkeys.borrow_mut();
        if all.iter().any(|p| p.credential_id == k.credential_id) {
            return Ok(Some(PasskeyAdded::Duplicate));
        }
        if all.iter().filter(|p| p.user_id == *caller.user_id).count() >= max as usize {
            return Ok(Some(PasskeyAdded::TooMany));
        }
        all.push(Passkey { user_id: caller.user_id.clone(), ..k.clone() });
        Ok(Some(PasskeyAdded::Added))
    }
    async fn use_passkey(&self, id: &str, sign_count: u32, backed_up: bool, now: UnixTime) -> Result<bool> {
        self.check()?;
        match self.passkeys.borrow_mut().iter_mut().find(|k| k.id == id) {
            Some(k) if counter_ok(k.sign_count, sign_count) => {
                k.sign_count = sign_count;
                k.backed_up = backed_up;
                k.last_used_at = Some(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn rename_passkey(&self, caller: &LiveSession<'_>, id: &str, name: &str) -> Result<Option<bool>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        let mut all = self.passkeys.borrow_mut();
        Ok(Some(match all.iter_mut().find(|k| k.id == id && k.user_id == *caller.user_id) {
            Some(k) => {
                k.name = name.to_string();
                true
            }
            None => false,
        }))
    }
    async fn remove_passkey(&self, caller: &LiveSession<'_>, id: &str, _reason: &str) -> Result<Option<Option<u64>>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        let before = self.passkeys.borrow().len();
        self.passkeys.borrow_mut().retain(|k| !(k.id == id && k.user_id == *caller.user_id));
        if self.passkeys.borrow().len() == before {
            return Ok(Some(None));
        }
        Ok(Some(Some(self.revoke_logged(caller.user_id, Some(caller.session_id), caller.now))))
    }
}

impl UserStore for MemStore {
    async fn insert_user(&self, user: &User) -> Result<bool> {
        self.check()?;
        let mut users = self.users.borrow_mut();
        if users.iter().any(|u| u.email == user.email) {
            return Ok(false);
        }
        users.push(user.clone());
        Ok(true)
    }
    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        if self.give_way_on_user_read.get() {
            give_way().await;
        }
        self.check()?;
        let found = self.users.borrow().iter().find(|u| u.email == email).cloned();
        let meanwhile = self.after_user_read.borrow_mut().take();
        if let Some(f) = meanwhile {
            f();
        }
        Ok(found)
    }
    async fn user_by_id(&self, id: &UserId) -> Result<Option<User>> {
        self.check()?;
        Ok(self.users.borrow().iter().find(|u| u.id == *id).cloned())
    }
    async fn set_password_hash(&self, user_id: &UserId, hash: &str, user_epoch: u64, _now: UnixTime) -> Result<()> {
        self.check()?;
        if let Some(u) = self.users.borrow_mut().iter_mut().find(|u| u.id == *user_id && u.auth_epoch == user_epoch) {
            u.password_hash = Some(hash.to_string());
        }
        Ok(())
    }
}

impl SessionStore for MemStore {
    async fn create_session(&self, session: &Session, refresh_hash: &str, basis: &SignInBasis<'_>) -> Result<bool> {
        self.check()?;
        if !self.users.borrow().iter().any(|u| u.id == session.user_id && u.auth_epoch == basis.user_epoch && !u.banned)
        {
            return Ok(false);
        }
        if !basis.second_factor && self.mfa_on(&session.user_id) {
            return Ok(false);
        }
        if let Some((provider, subject)) = basis.identity {
            let linked = self
                .oauth
                .borrow()
                .linked()
                .iter()
                .any(|i| i.provider == provider && i.subject == subject && i.user_id == session.user_id);
            if !linked {
                return Ok(false);
            }
        }
        if let Some(id) = basis.passkey {
            if !self.passkeys.borrow().iter().any(|k| k.id == id && k.user_id == session.user_id) {
                return Ok(false);
            }
        }
        self.sessions.borrow_mut().push((session.clone(), refresh_hash.to_string()));
        self.issued.borrow_mut().insert(refresh_hash.to_string(), session.id.clone());
        Ok(true)
    }
    async fn rotate_refresh(&self, r: &RotateRequest<'_>) -> Result<Rotation> {
        self.check()?;
        let mut sessions = self.sessions.borrow_mut();
        if let Some((s, h)) = sessions.iter_mut().find(|(_, h)| h == r.old_hash) {
            // What the D1 adapter's conditional UPDATE checks and writes.
            if !s.is_live(r.now, r.max_age_secs) {
                return Ok(Rotation::Dead);
            }
            // As D1: the session's counter is hit first, in the same write.
            if let Some(l) = &r.limit {
                let mut counters = self.counters.borrow_mut();
                let entry = counters.entry(format!("{}{}", l.key_prefix, s.id)).or_insert((r.now, 0));
                if entry.0 <= r.now {
                    *entry = (r.now.plus_secs(l.rule.window_secs), 0);
                }
                entry.1 += 1;
                if entry.1 > l.rule.limit {
                    return Ok(Rotation::Throttled { count: Count { count: entry.1, resets_at: entry.0 } });
                }
            }
            *h = r.new_hash.to_string();
            s.last_used_at = r.now;
            s.expires_at = r.expires_at.min(s.ends_at(r.max_age_secs));
            if let Some(claims) = r.extra_claims {
                s.extra_claims = claims.clone();
            }
            self.issued.borrow_mut().insert(r.new_hash.to_string(), s.id.clone());
            return Ok(Rotation::Rotated(s.clone()));
        }
        let Some(sid) = self.issued.borrow().get(r.old_hash).cloned() else { return Ok(Rotation::Unknown) };
        let (s, _) = sessions.iter_mut().find(|(s, _)| s.id == sid).expect("issued tokens have sessions");
        if s.revoked_at.is_some() {
            return Ok(Rotation::Dead);
        }
        self.revoke(s, r.now);
        Ok(Rotation::Reused { session_id: s.id.clone(), user_id: s.user_id.clone() })
    }
    async fn session_by_id(&self, id: &SessionId) -> Result<Option<Session>> {
        self.check()?;
        let found = self.sessions.borrow().iter().find(|(s, _)| s.id == *id).map(|(s, _)| s.clone());
        let meanwhile = self.after_session_read.borrow_mut().take();
        if let Some(f) = meanwhile {
            f();
        }
        Ok(found)
    }
    async fn session_by_refresh(&self, refresh_hash: &str) -> Result<Option<Session>> {
        self.check()?;
        Ok(self.sessions.borrow().iter().find(|(_, h)| h == refresh_hash).map(|(s, _)| s.clone()))
    }
    async fn session_by_issued_refresh(&self, refresh_hash: &str) -> Result<Option<Session>> {
        self.check()?;
        let Some(sid) = self.issued.borrow().get(refresh_hash).cloned() else { return Ok(None) };
        Ok(self.sessions.borrow().iter().find(|(s, _)| s.id == sid).map(|(s, _)| s.clone()))
    }
    async fn revoke_session(&self, id: &SessionId, now: UnixTime, _reason: &str) -> Result<bool> {
        self.check()?;
        let mut sessions = self.sessions.borrow_mut();
        match sessions.iter_mut().find(|(s, _)| s.id == *id) {
            Some((s, _)) if s.revoked_at.is_none() => {
                self.revoke(s, now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn revoke_user_sessions(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
        now: UnixTime,
        _reason: &str,
    ) -> Result<u64> {
        self.check()?;
        let mut n = 0;
        for (s, _) in self.sessions.borrow_mut().iter_mut() {
            if s.user_id == *user_id && s.revoked_at.is_none() && except != Some(&s.id) {
                self.revoke(s, now);
                n += 1;
            }
        }
        Ok(n)
    }
    async fn revoke_other_sessions(&self, caller: &LiveSession<'_>, reason: &str) -> Result<Option<u64>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        self.revoke_user_sessions(caller.user_id, Some(caller.session_id), caller.now, reason).await.map(Some)
    }
    async fn list_sessions(&self, user_id: &UserId, now: UnixTime) -> Result<Vec<Session>> {
        self.check()?;
        Ok(self
            .sessions
            .borrow()
            .iter()
            .filter(|(s, _)| s.user_id == *user_id && s.revoked_at.is_none() && s.expires_at > now)
            .map(|(s, _)| s.clone())
            .collect())
    }
}

impl AccountStore for MemStore {
    async fn set_email_verified(&self, holder: &LiveSession<'_>, email: &str) -> Result<Option<bool>> {
        self.check()?;
        if !self.session_live(holder) {
            return Ok(None);
        }
        match self.users.borrow_mut().iter_mut().find(|u| u.id == *holder.user_id && u.email == email) {
            Some(u) if !u.email_verified => {
                u.email_verified = true;
                Ok(Some(true))
            }
            _ => Ok(Some(false)),
        }
    }
    async fn prove_address(&self, p: &AddressProof<'_>) -> Result<Option<Proven>> {
        self.check()?;
        let mut users = self.users.borrow_mut();
        let Some(u) = users.iter_mut().find(|u| u.id == *p.user_id && u.email == p.email) else { return Ok(None) };
        let mut oauth = self.oauth.borrow_mut();
        let ids = oauth.identities_mut();
        let unverified = !u.email_verified;
        let mut proven = Proven::default();
        if let Some(l) = p.link {
            let same = |i: &LinkedIdentity| i.provider == l.provider && i.subject == l.subject;
            if !unverified {
                if !ids.iter().any(|i| i.provider == l.provider && (i.subject == l.subject || i.user_id == u.id)) {
                    ids.push(l.clone());
                }
                proven.linked = ids.iter().any(|i| same(i) && i.user_id == u.id);
                proven.auth_epoch = u.auth_epoch;
                return Ok(Some(proven));
            }
            let blocked = ids.iter().any(|i| {
                (same(i) && i.user_id != u.id)
                    || (i.user_id == u.id && i.provider == l.provider && !same(i) && keeps_identity(i, p.email))
            });
            if blocked {
                proven.auth_epoch = u.auth_epoch;
                return Ok(Some(proven));
            }
        }
        if unverified {
            let (kept, dropped): (Vec<LinkedIdentity>, Vec<LinkedIdentity>) =
                ids.drain(..).partition(|i| i.user_id != u.id || keeps_identity(i, p.email));
            *ids = kept;
            proven.dropped_providers = dropped.into_iter().map(|i| i.provider).collect();
            if let Some(l) = p.link {
                if !ids.iter().any(|i| i.provider == l.provider && i.subject == l.subject) {
                    ids.push(l.clone());
                }
                proven.linked = true;
            }
        }
        if unverified {
            // What D1 deletes in the same write: the earlier holder's factors.
            proven.mfa_removed = self.totp.borrow_mut().remove(&u.id).is_some_and(|t| t.confirmed);
            let mut keys = self.passkeys.borrow_mut();
            proven.removed_passkeys = keys.iter().filter(|k| k.user_id == u.id).map(|k| k.id.clone()).collect();
            keys.retain(|k| k.user_id != u.id);
            self.backup_codes.borrow_mut().retain(|(id, _)| *id != u.id);
        }
        if unverified || p.new_password.is_some() {
            for (s, _) in self.sessions.borrow_mut().iter_mut() {
                if s.user_id == u.id && s.revoked_at.is_none() {
                    self.revoke(s, p.now);
                    proven.revoked_sessions += 1;
                }
            }
            proven.took_over = unverified;
            if unverified {
                self.taken_over.borrow_mut().insert(u.id.clone(), p.now);
            }
            proven.password_cleared = unverified && u.password_hash.is_some() && p.new_password.is_none();
            match p.new_password {
                Some(hash) => u.password_hash = Some(hash.to_string()),
                None => u.password_hash = None,
            }
            if unverified {
                // The prover's profile replaces the earlier holder's.
                let before =
                    ProfileBefore { name: u.name.clone(), avatar_url: u.avatar_url.clone(), phone: u.phone.clone() };
                proven.profile_fields = before.changed_by(&p.profile);
                p.profile.apply_to(u);
            }
            u.email_verified = true;
            u.auth_epoch += 1;
        }
        proven.auth_epoch = u.auth_epoch;
        Ok(Some(proven))
    }
    async fn set_password(
        &self,
        user_id: &UserId,
        hash: &str,
        keep: Option<&SessionId>,
        user_epoch: u64,
        now: UnixTime,
        reason: &str,
    ) -> Result<Option<u64>> {
        self.check()?;
        match self.users.borrow_mut().iter_mut().find(|u| u.id == *user_id && u.auth_epoch == user_epoch) {
            Some(u) => {
                u.password_hash = Some(hash.to_string());
                u.auth_epoch += 1;
            }
            None => return Ok(None),
        }
        self.revoke_user_sessions(user_id, keep, now, reason).await.map(Some)
    }
    async fn list_users(&self, query: Option<&str>, limit: u32, offset: u32) -> Result<UserPage> {
        self.check()?;
        let q = query.map(str::to_lowercase);
        let mut matching: Vec<User> = self
            .users
            .borrow()
            .iter()
            .filter(|u| match &q {
                None => true,
                Some(q) => {
                    u.email.to_lowercase().contains(q)
                        || u.name.as_deref().is_some_and(|n| n.to_lowercase().contains(q))
                }
            })
            .cloned()
            .collect();
        matching.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let total = matching.len() as u64;
        let users = matching.into_iter().skip(offset as usize).take(limit as usize).collect();
        Ok(UserPage { users, total })
    }
    async fn update_profile(&self, user: &User, fields: &[String], _now: UnixTime) -> Result<ProfileUpdate> {
        self.check()?;
        let writes = |name: &str| fields.iter().any(|f| f == name);
        let mut users = self.users.borrow_mut();
        if writes("email") && users.iter().any(|u| u.email == user.email && u.id != user.id) {
            return Ok(ProfileUpdate::EmailTaken);
        }
        match users.iter_mut().find(|u| u.id == user.id) {
            Some(u) => {
                if writes("email") && u.email != user.email {
                    u.auth_epoch += 1;
                    // What D1 deletes in the same write: tokens mailed to the
                    // old address before the account existed.
                    self.email_tokens.borrow_mut().retain(|(t, _)| t.user_id.is_some() || t.email != u.email);
                }
                if writes("email") {
                    u.email = user.email.clone();
                }
                if writes("name") {
                    u.name = user.name.clone();
                }
                if writes("avatar_url") {
                    u.avatar_url = user.avatar_url.clone();
                }
                if writes("phone") {
                    u.phone = user.phone.clone();
                }
                if writes("email") || writes("email_verified") {
                    u.email_verified = user.email_verified;
                }
                if writes("locale") {
                    u.locale = user.locale.clone();
                }
                Ok(ProfileUpdate::Updated)
            }
            None => Ok(ProfileUpdate::NotFound),
        }
    }
    async fn edit_own_profile(&self, caller: &LiveSession<'_>, edit: &ProfileEdit) -> Result<bool> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(false);
        }
        let written = match self.users.borrow_mut().iter_mut().find(|u| u.id == *caller.user_id && !u.banned) {
            Some(u) => {
                *u = edit.applied_to(u);
                true
            }
            None => false,
        };
        if written {
            let meanwhile = self.after_profile_write.borrow_mut().take();
            if let Some(f) = meanwhile {
                f();
            }
        }
        Ok(written)
    }
    async fn delete_user(&self, user_id: &UserId) -> Result<bool> {
        self.check()?;
        let mut users = self.users.borrow_mut();
        let Some(at) = users.iter().position(|u| u.id == *user_id) else {
            return Ok(false);
        };
        let gone = users.remove(at);
        // What ON DELETE CASCADE does in D1, and the tokens mailed to the
        // address before the account existed, deleted in the same write.
        for (s, _) in self.sessions.borrow().iter() {
            if s.user_id == *user_id && s.revoked_at.is_none() {
                self.log_session(s, self.clock.get());
            }
        }
        if !gone.roles.is_empty() {
            self.log(self.clock.get(), Revoked::Roles { user_id: gone.id.clone(), roles: Vec::new() });
        }
        self.sessions.borrow_mut().retain(|(s, _)| s.user_id != *user_id);
        self.totp.borrow_mut().remove(user_id);
        self.backup_codes.borrow_mut().retain(|(id, _)| id != user_id);
        self.challenges.borrow_mut().retain(|c| c.user_id != *user_id);
        self.email_tokens
            .borrow_mut()
            .retain(|(t, _)| t.user_id.as_deref() != Some(user_id) && (t.user_id.is_some() || t.email != gone.email));
        Ok(true)
    }
    async fn set_banned(&self, user_id: &UserId, banned: bool, now: UnixTime) -> Result<bool> {
        self.check()?;
        let changed = match self.users.borrow_mut().iter_mut().find(|u| u.id == *user_id) {
            Some(u) => {
                let changed = u.banned != banned;
                u.banned = banned;
                if changed && banned {
                    u.auth_epoch += 1;
                }
                changed
            }
            None => false,
        };
        if banned {
            self.revoke_user_sessions(user_id, None, now, "banned").await?;
        }
        Ok(changed)
    }
    async fn add_role(&self, user_id: &UserId, role: &str, _now: UnixTime) -> Result<bool> {
        self.check()?;
        match self.users.borrow_mut().iter_mut().find(|u| u.id == *user_id) {
            Some(u) if !u.roles.iter().any(|r| r == role) => {
                u.roles.push(Role::stored(role.to_string()));
                u.roles.sort();
                self.log_roles(u);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn remove_role(&self, user_id: &UserId, role: &str) -> Result<bool> {
        self.check()?;
        match self.users.borrow_mut().iter_mut().find(|u| u.id == *user_id) {
            Some(u) => {
                let before = u.roles.len();
                u.roles.retain(|r| r != role);
                if u.roles.len() != before {
                    self.log_roles(u);
                }
                Ok(u.roles.len() != before)
            }
            None => Ok(false),
        }
    }
}

impl MfaStore for MemStore {
    async fn mfa_factors(&self, user_id: &UserId) -> Result<StoredFactors> {
        self.check()?;
        let found = StoredFactors {
            totp: self.totp.borrow().get(user_id).cloned(),
            backup_codes: self.backup_codes.borrow().iter().filter(|(id, _)| id == user_id).count() as u32,
            passkeys: self.passkeys.borrow().iter().filter(|k| k.user_id == *user_id).count() as u32,
        };
        let meanwhile = self.after_factors_read.borrow_mut().take();
        if let Some(f) = meanwhile {
            f();
        }
        Ok(found)
    }
    async fn enroll_totp(&self, caller: &LiveSession<'_>, sealed: &str) -> Result<Option<bool>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        if self.mfa_on(caller.user_id) {
            return Ok(Some(false));
        }
        let pending = StoredTotp { sealed: sealed.to_string(), confirmed: false, last_step: None, backup_set: None };
        self.totp.borrow_mut().insert(caller.user_id.clone(), pending);
        Ok(Some(true))
    }
    async fn confirm_totp(
        &self,
        caller: &LiveSession<'_>,
        sealed: &str,
        step: u64,
        backup_hashes: &[String],
        backup_set: &str,
        _reason: &str,
    ) -> Result<Option<u64>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        {
            let mut totp = self.totp.borrow_mut();
            match totp.get_mut(caller.user_id) {
                Some(t) if !t.confirmed && t.sealed == sealed => {
                    t.confirmed = true;
                    t.last_step = Some(step);
                    t.backup_set = Some(backup_set.to_string());
                }
                _ => return Ok(None),
            }
        }
        let mut codes = self.backup_codes.borrow_mut();
        codes.retain(|(id, _)| id != caller.user_id);
        codes.extend(backup_hashes.iter().map(|h| (caller.user_id.clone(), h.clone())));
        Ok(Some(self.revoke_logged(caller.user_id, Some(caller.session_id), caller.now)))
    }
    async fn use_totp_step(&self, user_id: &UserId, sealed: &str, step: u64) -> Result<bool> {
        self.check()?;
        match self.totp.borrow_mut().get_mut(user_id) {
            Some(t) if t.confirmed && t.sealed == sealed && t.last_step.is_none_or(|last| last < step) => {
                t.last_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
    async fn use_backup_code(&self, user_id: &UserId, hash: &str) -> Result<bool> {
        self.check()?;
        let mut codes = self.backup_codes.borrow_mut();
        match codes.iter().position(|(id, h)| id == user_id && h == hash) {
            Some(at) => {
                codes.remove(at);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    async fn replace_backup_codes(
        &self,
        caller: &LiveSession<'_>,
        read_set: Option<&str>,
        new_set: &str,
        hashes: &[String],
    ) -> Result<Option<bool>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        match self.totp.borrow_mut().get_mut(caller.user_id) {
            Some(t) if t.confirmed && t.backup_set.as_deref() == read_set => t.backup_set = Some(new_set.to_string()),
            _ => return Ok(Some(false)),
        }
        let mut codes = self.backup_codes.borrow_mut();
        codes.retain(|(id, _)| id != caller.user_id);
        codes.extend(hashes.iter().map(|h| (caller.user_id.clone(), h.clone())));
        Ok(Some(true))
    }
    async fn remove_factors(&self, caller: &LiveSession<'_>, _reason: &str) -> Result<Option<FactorsRemoved>> {
        self.check()?;
        if !self.session_live(caller) {
            return Ok(None);
        }
        let totp = self.totp.borrow_mut().remove(caller.user_id).is_some_and(|t| t.confirmed);
        self.backup_codes.borrow_mut().retain(|(id, _)| id != caller.user_id);
        let revoked_sessions =
            if totp { self.revoke_logged(caller.user_id, Some(caller.session_id), caller.now) } else { 0 };
        Ok(Some(FactorsRemoved { totp, revoked_sessions }))
    }
    async fn reset_factors(&self, user_id: &UserId, now: UnixTime, _reason: &str) -> Result<FactorsReset> {
        self.check()?;
        let totp = self.totp.borrow_mut().remove(user_id).is_some_and(|t| t.confirmed);
        self.backup_codes.borrow_mut().retain(|(id, _)| id != user_id);
        let passkeys: Vec<String> =
            self.passkeys.borrow().iter().filter(|k| k.user_id == *user_id).map(|k| k.id.clone()).collect();
        self.passkeys.borrow_mut().retain(|k| k.user_id != *user_id);
        let revoked_sessions = if totp || !passkeys.is_empty() { self.revoke_logged(user_id, None, now) } else { 0 };
        Ok(FactorsReset { totp, passkeys, revoked_sessions })
    }
    async fn put_mfa_challenge(&self, challenge: &Challenge) -> Result<()> {
        self.check()?;
        let mut all = self.challenges.borrow_mut();
        all.retain(|c| !(c.user_id == challenge.user_id && c.expires_at <= challenge.created_at));
        all.push(challenge.clone());
        Ok(())
    }
    async fn count_mfa_attempt(&self, hash: &str, now: UnixTime, max_attempts: u32) -> Result<Option<Challenge>> {
        self.check()?;
        let mut all = self.challenges.borrow_mut();
        let live = all.iter_mut().find(|c| c.hash == hash && c.expires_at > now && c.attempts < max_attempts);
        Ok(live.map(|c| {
            c.attempts += 1;
            c.clone()
        }))
    }
    async fn take_mfa_challenge(&self, hash: &str, now: UnixTime) -> Result<Option<Challenge>> {
        self.check()?;
        let mut all = self.challenges.borrow_mut();
        let Some(at) = all.iter().position(|c| c.hash == hash && c.expires_at > now) else { return Ok(None) };
        Ok(Some(all.remove(at)))
    }
}

impl RevocationStore for MemStore {
    async fn revocations_after(&self, after: u64, live_after: UnixTime, limit: u32) -> Result<RevocationPage> {
        self.log_reads.set(self.log_reads.get() + 1);
        self.check()?;
        let log = self.revocations.borrow();
        let rows = log.iter().filter(|r| r.seq > after && r.at > live_after).take(limit as usize).cloned().collect();
        Ok(RevocationPage { rows, last_seq: log.last().map_or(0, |r| r.seq) })
    }
    async fn session_standing(&self, sid: &SessionId) -> Result<Option<Standing>> {
        self.check()?;
        let Some(session) = self.sessions.borrow().iter().find(|(s, _)| s.id == *sid).map(|(s, _)| s.clone()) else {
            return Ok(None);
        };
        let roles = self.users.borrow().iter().find(|u| u.id == session.user_id).map(|u| u.roles.clone());
        Ok(Some(Standing { session, roles: roles.unwrap_or_default() }))
    }
    async fn purge_revocations(&self, before: UnixTime) -> Result<u64> {
        self.check()?;
        let mut log = self.revocations.borrow_mut();
        let n = log.len();
        log.retain(|r| r.at > before);
        Ok((n - log.len()) as u64)
    }
}

impl RateLimitStore for MemStore {
    async fn hit(&self, hits: &[Hit], now: UnixTime) -> Result<Vec<Option<Count>>> {
        self.check()?;
        let mut counters = self.counters.borrow_mut();
        let mut out: Vec<Option<Count>> = Vec::with_capacity(hits.len());
        for h in hits {
            // As D1's conditional upsert: counted only if the earlier counter, as just counted, admits it.
            let admitted =
                h.within.is_none_or(|w| out.get(w.hit).copied().flatten().is_some_and(|c| c.count <= w.limit));
            if !admitted {
                out.push(None);
                continue;
            }
            let entry = counters.entry(h.key.clone()).or_insert((now, 0));
            if entry.0 <= now {
                *entry = (now.plus_secs(h.window_secs), 0);
            }
            entry.1 += 1;
            out.push(Some(Count { count: entry.1, resets_at: entry.0 }));
        }
        Ok(out)
    }
    async fn unhit(&self, key: &str, resets_at: UnixTime, limit: u32) -> Result<()> {
        self.check()?;
        if self.fail_unhit.get() {
            return Err(Error::unavailable("memory", "injected refund failure"));
        }
        if let Some(entry) = self.counters.borrow_mut().get_mut(key) {
            if entry.0 == resets_at && (1..=limit).contains(&entry.1) {
                entry.1 -= 1;
            }
        }
        Ok(())
    }
    async fn count_login_attempt(
        &self,
        email: &str,
        backoff: &Backoff,
        now: UnixTime,
        forget_before: UnixTime,
    ) -> Result<Option<LoginRecord>> {
        self.check()?;
        let mut m = self.login_failures.borrow_mut();
        // As D1's conditional upsert: a missing or forgotten record starts
        // over, one within the free failures or past its delay counts one
        // more of each; otherwise refused, nothing written.
        let counted = match m.get(email).copied() {
            Some(r) if r.last_failed_at > forget_before => {
                let delay = i64::try_from(backoff.delay_secs(r.failures)).unwrap_or(i64::MAX);
                if r.failures >= backoff.free_failures && now.0.saturating_sub(r.last_failed_at.0) < delay {
                    return Ok(Some(r));
                }
                LoginRecord {
                    failures: r.failures + 1,
                    last_failed_at: r.last_failed_at.max(now),
                    // As D1: marks older than LOGIN_IN_FLIGHT_SECS are stale.
                    in_flight: if now.0.saturating_sub(r.last_failed_at.0) >= LOGIN_IN_FLIGHT_SECS {
                        1
                    } else {
                        r.in_flight + 1
                    },
                }
            }
            _ => LoginRecord { failures: 1, last_failed_at: now, in_flight: 1 },
        };
        m.insert(email.to_string(), counted);
        Ok(None)
    }
    async fn settle_login_attempt(&self, email: &str, admitted_at: UnixTime) -> Result<()> {
        self.check()?;
        if self.fail_settle.get() {
            return Err(Error::unavailable("memory", "injected settle failure"));
        }
        if let Some(r) = self.login_failures.borrow_mut().get_mut(email) {
            // As D1: not once the marks may have started over after it.
            if r.last_failed_at.0.saturating_sub(admitted_at.0) < LOGIN_IN_FLIGHT_SECS {
                r.in_flight = r.in_flight.saturating_sub(1);
            }
        }
        Ok(())
    }
    async fn clear_login_failures(&self, email: &str) -> Result<()> {
        self.check()?;
        self.login_failures.borrow_mut().remove(email);
        Ok(())
    }
}

impl EmailTokenStore for MemStore {
    async fn issue_email_token(&self, token: &EmailToken) -> Result<()> {
        self.check()?;
        let mut tokens = self.email_tokens.borrow_mut();
        for (t, consumed) in tokens.iter_mut() {
            if t.kind == token.kind && t.email == token.email && consumed.is_none() {
                *consumed = Some(token.created_at);
            }
        }
        tokens.push((token.clone(), None));
        Ok(())
    }
    async fn consume_email_token(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<Option<EmailToken>> {
        self.check()?;
        let consumed = {
            let mut tokens = self.email_tokens.borrow_mut();
            tokens
                .iter_mut()
                .find(|(t, c)| {
                    t.hash == hash && t.kind == kind && c.is_none() && t.expires_at > now && self.epoch_stands(t)
                })
                .map(|(t, consumed)| {
                    *consumed = Some(now);
                    t.clone()
                })
        };
        if consumed.is_some() {
            let meanwhile = self.after_token_consumed.borrow_mut().take();
            if let Some(f) = meanwhile {
                f();
            }
        }
        Ok(consumed)
    }
    async fn peek_email_token(&self, kind: TokenKind, hash: &str, now: UnixTime) -> Result<Option<EmailToken>> {
        self.check()?;
        Ok(self
            .email_tokens
            .borrow()
            .iter()
            .find(|(t, c)| {
                t.hash == hash && t.kind == kind && c.is_none() && t.expires_at > now && self.epoch_stands(t)
            })
            .map(|(t, _)| t.clone()))
    }
    async fn count_code_attempt(&self, email: &str, now: UnixTime, max_attempts: u32) -> Result<Option<EmailToken>> {
        self.check()?;
        let mut tokens = self.email_tokens.borrow_mut();
        let live = tokens.iter_mut().find(|(t, c)| {
            t.kind == TokenKind::EmailOtp
                && t.email == email
                && c.is_none()
                && t.expires_at > now
                && t.attempts < max_attempts
                && self.epoch_stands(t)
        });
        Ok(live.map(|(t, _)| {
            t.attempts += 1;
            t.clone()
        }))
    }
    async fn purge_email_tokens(&self, before: UnixTime) -> Result<u64> {
        self.check()?;
        let mut tokens = self.email_tokens.borrow_mut();
        let n = tokens.len();
        tokens.retain(|(t, _)| t.expires_at >= before);
        Ok((n - tokens.len()) as u64)
    }
}

impl KeyStore for MemStore {
    async fn load_keys(&self) -> Result<Vec<StoredKey>> {
        self.check()?;
        Ok(self.keys.borrow().clone())
    }
    async fn insert_first_key(&self, key: &StoredKey) -> Result<bool> {
        self.check()?;
        let mut keys = self.keys.borrow_mut();
        if keys.iter().any(|k| k.status == KeyStatus::Active) {
            return Ok(false);
        }
        keys.push(key.clone());
        Ok(true)
    }
    async fn rotate_key(&self, old_kid: &Kid, new: &StoredKey, now: UnixTime, publish_until: UnixTime) -> Result<bool> {
        self.check()?;
        let mut keys = self.keys.borrow_mut();
        match keys.iter_mut().find(|k| k.kid == *old_kid && k.status == KeyStatus::Active) {
            Some(old) => {
                old.status = KeyStatus::Retired;
                old.retired_at = Some(now);
                old.publish_until = Some(publish_until);
            }
            None => return Ok(false),
        }
        keys.retain(|k| k.is_published(now));
        keys.push(new.clone());
        Ok(true)
    }
    async fn withdraw_key(&self, kid: &Kid, now: UnixTime) -> Result<bool> {
        self.check()?;
        let mut keys = self.keys.borrow_mut();
        let n = keys.len();
        keys.retain(|k| !(k.kid == *kid && k.status == KeyStatus::Retired && k.is_published(now)));
        Ok(keys.len() < n)
    }
}

impl AuditLog for MemStore {
    async fn record_audit(&self, r: &AuditRecord) -> Result<bool> {
        self.check()?;
        if self.fail_audit.get() {
            return Err(Error::unavailable("memory", "injected audit failure"));
        }
        let mut log = self.audit.borrow_mut();
        let mut rowids = self.audit_rowids.borrow_mut();
        if rowids.1.contains_key(&r.id) {
            return Ok(false);
        }
        // As D1: the event's user, else the account that had its address then.
        let user_id = r.user_id.clone().or_else(|| {
            let email = r.subject_email.as_deref()?;
            self.users.borrow().iter().find(|u| u.email == email && u.created_at <= r.at).map(|u| u.id.clone())
        });
        // As SQLite: one more than the largest rowid in the table.
        let rowid = rowids.0.keys().next_back().copied().unwrap_or(0) + 1;
        rowids.0.insert(rowid, r.id.clone());
        rowids.1.insert(r.id.clone(), rowid);
        log.push(AuditEntry {
            id: r.id.clone(),
            kind: r.kind.to_string(),
            user_id,
            actor_id: r.actor_id.clone(),
            outcome: r.outcome,
            ip_address: r.ip_address.clone(),
            user_agent: r.user_agent.clone(),
            at: r.at,
            data: serde_json::from_str(&r.data).expect("audit data is JSON"),
        });
        Ok(true)
    }
    async fn audit_entries(&self, f: &AuditFilter, limit: u32) -> Result<Vec<AuditEntry>> {
        self.check()?;
        let mut out: Vec<AuditEntry> = self
            .audit
            .borrow()
            .iter()
            .filter(|e| f.user_id.as_ref().is_none_or(|u| e.user_id.as_ref() == Some(u)))
            .filter(|e| f.kind.is_none_or(|k| e.kind == k))
            .filter(|e| f.since.is_none_or(|t| e.at >= t))
            .filter(|e| f.until.is_none_or(|t| e.at < t))
            .filter(|e| f.after.as_ref().is_none_or(|c| (e.at, e.id.as_str()) < (c.at, c.id.as_str())))
            .cloned()
            .collect();
        out.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        out.truncate(limit as usize);
        Ok(out)
    }
    async fn purge_audit(&self, before: UnixTime, limit: u32) -> Result<u64> {
        self.check()?;
        let mut log = self.audit.borrow_mut();
        let mut old: Vec<(UnixTime, String)> =
            log.iter().filter(|e| e.at < before).map(|e| (e.at, e.id.clone())).collect();
        old.sort();
        old.truncate(limit as usize);
        let doomed: HashSet<String> = old.into_iter().map(|(_, id)| id).collect();
        self.forget_audit(&mut log, &doomed);
        Ok(doomed.len() as u64)
    }
    async fn purge_audit_beyond(&self, keep: u64, limit: u32) -> Result<u64> {
        self.check()?;
        let mut log = self.audit.borrow_mut();
        // As D1: by rowid, up to the largest minus `keep`, the first written first.
        let doomed: HashSet<String> = {
            let rowids = self.audit_rowids.borrow();
            let Some(max) = rowids.0.keys().next_back().copied() else { return Ok(0) };
            let below = rowids.0.range(..=max.saturating_sub(keep)).filter(|(r, _)| **r + keep <= max);
            below.take(limit as usize).map(|(_, id)| id.clone()).collect()
        };
        self.forget_audit(&mut log, &doomed);
        Ok(doomed.len() as u64)
    }
    async fn taken_over_at(&self, user_id: &UserId) -> Result<Option<UnixTime>> {
        self.check()?;
        let at = self.taken_over.borrow().get(user_id).copied();
        let meanwhile = self.after_takeover_read.borrow_mut().take();
        if let Some(f) = meanwhile {
            f();
        }
        Ok(at)
    }
}

/// A key ring over the in-memory key store, verifying in pure Rust.
pub struct MemKeys {
    pub store: Rc<MemStore>,
    pub kek: Kek,
    /// `SIGNING_ALG`: the algorithm of keys made on first use.
    pub alg: SigningAlg,
    pub now: Cell<UnixTime>,
    /// What [`KeyRing::issued`] was told, in order: token, kid, verified form, time.
    pub issued: RefCell<Vec<(String, String, VerifiedToken, UnixTime)>>,
    /// How often [`KeyRing::keys_changed`] was called.
    pub changed: Cell<u32>,
}

impl KeyRing for MemKeys {
    async fn signing_key(&self) -> Result<SigningKey> {
        let (_, key) = load_or_create(&*self.store, &self.kek, self.alg, &mut TestRandom(99), self.now.get()).await?;
        Ok(key)
    }
    async fn verify(&self, kid: &str, alg: SigningAlg, signed: &[u8], signature: &[u8]) -> Result<Option<bool>> {
        let keys = self.store.load_keys().await?;
        let Some(k) = keys.iter().find(|k| k.kid == kid && k.is_published(self.now.get())) else { return Ok(None) };
        k.verify(alg, signed, signature).map(Some)
    }
    fn issued(&self, raw: &str, kid: &str, token: VerifiedToken, now: UnixTime) {
        self.issued.borrow_mut().push((raw.to_string(), kid.to_string(), token, now));
    }
    fn keys_changed(&self) {
        self.changed.set(self.changed.get() + 1);
    }
}

#[derive(Default)]
pub struct MemEvents {
    pub sent: RefCell<Vec<Envelope>>,
    /// What flows reported for the log (`EventSink::report`).
    pub reported: RefCell<Vec<String>>,
    /// Refuse every publish (the queue and the outbox down).
    pub fail: Cell<bool>,
}

impl MemEvents {
    pub fn kinds(&self) -> Vec<&'static str> {
        self.sent.borrow().iter().map(|e| e.kind).collect()
    }
    pub fn last_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.sent.borrow().last().expect("an event").to_json()).unwrap()
    }
    /// The `data` of the last event of type `kind`.
    pub fn last_of(&self, kind: &str) -> serde_json::Value {
        let sent = self.sent.borrow();
        let env = sent
            .iter()
            .rev()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {:?}", self.kinds()));
        serde_json::from_str::<serde_json::Value>(&env.to_json()).unwrap()["data"].clone()
    }
    /// The `data` of every event of type `kind`, in order.
    pub fn all_of(&self, kind: &str) -> Vec<serde_json::Value> {
        let sent = self.sent.borrow();
        sent.iter()
            .filter(|e| e.kind == kind)
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.to_json()).unwrap()["data"].clone())
            .collect()
    }
    /// How many events of type `kind` were sent.
    pub fn count(&self, kind: &str) -> usize {
        self.sent.borrow().iter().filter(|e| e.kind == kind).count()
    }
}

impl EventSink for MemEvents {
    async fn publish(&self, events: &[Envelope]) -> Result<()> {
        if self.fail.get() {
            return Err(Error::unavailable("memory", "injected queue failure"));
        }
        self.sent.borrow_mut().extend_from_slice(events);
        Ok(())
    }
    fn report(&self, warning: &str) {
        self.reported.borrow_mut().push(warning.to_string());
    }
}

/// Test configuration: fast argon2 so the suite stays quick.
pub fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("KEY_ENCRYPTION_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ("ARGON2_MEMORY_KIB", "64"),
        ("ARGON2_ITERATIONS", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| vars.get(k).cloned()).expect("valid test config")
}

pub const ISSUER: &str = "https://auth.test";

pub fn meta(now: i64) -> Meta {
    Meta { now: UnixTime(now), ip: Some("203.0.113.7".into()), user_agent: Some("tests".into()), issuer: ISSUER.into() }
}

/// Everything a flow needs, owned, with a clock that tests move.
pub struct World {
    pub store: Rc<MemStore>,
    pub events: MemEvents,
    pub keys: MemKeys,
    pub config: Config,
    pub hook: MemHook,
    pub pause: MemPause,
}

impl World {
    pub fn new(extra: &[(&str, &str)]) -> Self {
        let store = Rc::new(MemStore::default());
        let config = config(extra);
        let keys = MemKeys {
            store: store.clone(),
            kek: config.kek.clone(),
            alg: config.signing_alg,
            now: Cell::new(UnixTime(0)),
            issued: RefCell::default(),
            changed: Cell::new(0),
        };
        Self { store, events: MemEvents::default(), keys, config, hook: MemHook::default(), pause: MemPause::default() }
    }

    /// The dependencies and request facts at time `now`.
    pub fn at(&self, now: i64) -> (Deps<'_, MemStore, MemEvents, MemKeys>, Meta) {
        self.keys.now.set(UnixTime(now));
        self.store.clock.set(UnixTime(now));
        self.pause.now_ms.set(now.saturating_mul(1_000));
        (
            Deps {
                store: &self.store,
                events: &self.events,
                keys: &self.keys,
                config: &self.config,
                hook: &self.hook,
                pause: &self.pause,
            },
            meta(now),
        )
    }
}

/// [`Pause`] on a simulated clock: each pause gives way once (so futures
/// run together by [`join_all`] go on meanwhile) and is counted; the clock
/// (milliseconds, set by [`World::at`]) stands still unless `moving`, when
/// every pause moves it on by its length.
#[derive(Default)]
pub struct MemPause {
    pub now_ms: Cell<i64>,
    pub moving: Cell<bool>,
    pub pauses: Cell<u32>,
}

impl Pause for MemPause {
    fn pause(&self, ms: u64) -> LocalFuture<'_, UnixTime> {
        self.pauses.set(self.pauses.get() + 1);
        Box::pin(async move {
            give_way().await;
            if self.moving.get() {
                self.now_ms.set(self.now_ms.get() + i64::try_from(ms).unwrap_or(i64::MAX));
            }
            UnixTime(self.now_ms.get().div_euclid(1_000))
        })
    }
}

/// Pending once, waking itself: what an await on I/O looks like to the
/// other futures polled with it.
pub fn give_way() -> impl std::future::Future<Output = ()> {
    let mut given = false;
    std::future::poll_fn(move |cx| {
        if given {
            return std::task::Poll::Ready(());
        }
        given = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

/// Runs `futures` together, as one isolate runs concurrent requests: in
/// rounds, each polling every unfinished one once (so they interleave
/// wherever one gives way); returns their outputs in order.
pub fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut running: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = running.iter().map(|_| None).collect();
    while done.iter().any(Option::is_none) {
        for (f, out) in running.iter_mut().zip(done.iter_mut()).filter(|(_, out)| out.is_none()) {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                *out = Some(v);
            }
        }
    }
    done.into_iter().flatten().collect()
}

/// A sign-in's result as a completed one: for accounts without a second
/// factor, whose first step always ends with a session.
pub trait Done {
    /// The session's tokens; panics on a second step.
    fn done(self) -> std::result::Result<portcullis::core::flows::AuthResponse, Error>;
}

impl Done for std::result::Result<portcullis::core::flows::SignIn, Error> {
    fn done(self) -> std::result::Result<portcullis::core::flows::AuthResponse, Error> {
        self.map(|s| s.complete().expect("signed in, not asked for a second step"))
    }
}

/// Polls a future whose every await is ready at once (all ports here are).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Signs `email` up with `password` at `now`.
pub fn signup_at(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    email: &str,
    password: &str,
) -> portcullis::core::flows::AuthResponse {
    let (deps, meta) = w.at(now);
    block_on(deps.signup(
        &meta,
        rng,
        portcullis::core::flows::account::SignupRequest {
            email: email.into(),
            password: password.into(),
            name: None,
            locale: None,
        },
    ))
    .expect("signup")
}

/// Logs `email` in at `now`.
pub fn login_at(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    email: &str,
    password: &str,
) -> std::result::Result<portcullis::core::flows::AuthResponse, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.login(
        &meta,
        rng,
        portcullis::core::flows::account::LoginRequest { email: email.into(), password: password.into() },
    ))
    .done()
}

/// Gives the stored user `email` the role `role` (as `npm run admin:grant`
/// does: straight into the table, whose trigger records the new roles).
pub fn grant(w: &World, email: &str, role: &str) {
    let mut users = w.store.users.borrow_mut();
    let u = users.iter_mut().find(|u| u.email == email).expect("user exists");
    u.roles.push(Role::stored(role.to_string()));
    u.roles.sort();
    w.store.log_roles(u);
}

/// The stored user with this email.
pub fn user(w: &World, email: &str) -> User {
    w.store.users.borrow().iter().find(|u| u.email == email).cloned().expect("user exists")
}

/// The problem code of an error.
pub fn code<T: std::fmt::Debug>(r: std::result::Result<T, Error>) -> &'static str {
    r.expect_err("an error").problem().code
}

/// A sign-in hook in memory: answers with `reply` (a scripted HTTP reply or
/// a transport failure) and records every request and warning.
pub struct MemHook {
    pub reply: RefCell<std::result::Result<HttpReply, SendError>>,
    pub requests: RefCell<Vec<HttpRequest>>,
    pub warnings: RefCell<Vec<String>>,
}

impl Default for MemHook {
    fn default() -> Self {
        Self {
            reply: RefCell::new(Ok(HttpReply { status: 200, body: r#"{"allow": true}"#.into() })),
            requests: RefCell::default(),
            warnings: RefCell::default(),
        }
    }
}

impl MemHook {
    pub fn answer(&self, status: u16, body: &str) {
        *self.reply.borrow_mut() = Ok(HttpReply { status, body: body.into() });
    }
    pub fn fail(&self, e: SendError) {
        *self.reply.borrow_mut() = Err(e);
    }
}

impl SigninHook for MemHook {
    fn send<'a>(&'a self, request: &'a HttpRequest) -> LocalFuture<'a, std::result::Result<HttpReply, SendError>> {
        self.requests.borrow_mut().push(request.clone());
        Box::pin(std::future::ready(self.reply.borrow().clone()))
    }
    fn report(&self, warning: &str) {
        self.warnings.borrow_mut().push(warning.to_string());
    }
}

/// One ledger row, as D1's `event_deliveries` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub attempts: u32,
    pub claimed_until: Option<UnixTime>,
    pub delivered_at: Option<UnixTime>,
    pub last_error: Option<String>,
}

/// The delivery ledger in memory, with the same claim rules as the D1 one.
#[derive(Default)]
pub struct MemLedger {
    pub rows: RefCell<HashMap<(String, String), LedgerRow>>,
    pub dead: RefCell<Vec<DeadLetter>>,
    pub fail: Cell<bool>,
}

impl MemLedger {
    fn check(&self) -> Result<()> {
        if self.fail.get() {
            return Err(Error::unavailable("memory", "injected ledger failure"));
        }
        Ok(())
    }
    pub fn row(&self, event_id: &str, target: &str) -> Option<LedgerRow> {
        self.rows.borrow().get(&(event_id.to_string(), target.to_string())).cloned()
    }
}

impl DeliveryLedger for MemLedger {
    async fn claim(
        &self,
        event_id: &str,
        _event_type: &str,
        target: &str,
        now: UnixTime,
        lease_until: UnixTime,
    ) -> Result<Claim> {
        self.check()?;
        let mut rows = self.rows.borrow_mut();
        let row = rows.entry((event_id.to_string(), target.to_string())).or_insert(LedgerRow {
            attempts: 0,
            claimed_until: None,
            delivered_at: None,
            last_error: None,
        });
        if row.delivered_at.is_some() {
            return Ok(Claim::Delivered);
        }
        if let Some(until) = row.claimed_until.filter(|u| *u > now) {
            return Ok(Claim::Busy { until });
        }
        row.attempts += 1;
        row.claimed_until = Some(lease_until);
        Ok(Claim::Mine { attempt: row.attempts })
    }
    async fn settle(&self, event_id: &str, target: &str, now: UnixTime, error: Option<&str>) -> Result<()> {
        self.check()?;
        if let Some(row) = self.rows.borrow_mut().get_mut(&(event_id.to_string(), target.to_string())) {
            row.claimed_until = None;
            match error {
                None => row.delivered_at = Some(now),
                Some(e) => row.last_error = Some(e.to_string()),
            }
        }
        Ok(())
    }
    async fn undelivered(&self, event_id: &str) -> Result<Vec<TargetState>> {
        self.check()?;
        let mut out: Vec<TargetState> = self
            .rows
            .borrow()
            .iter()
            .filter(|((id, _), row)| id == event_id && row.delivered_at.is_none())
            .map(|((_, target), row)| TargetState {
                target: target.clone(),
                attempts: row.attempts,
                last_error: row.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(out)
    }
    async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<bool> {
        self.check()?;
        let mut dead = self.dead.borrow_mut();
        if dead.iter().any(|d| d.id == letter.id) {
            return Ok(false);
        }
        dead.push(letter.clone());
        Ok(true)
    }
}

/// Outbound HTTP in memory: `respond` decides each reply; every request and
/// log line is recorded.
pub struct MemCourier {
    #[allow(clippy::type_complexity)]
    pub respond: Box<dyn Fn(&HttpRequest) -> std::result::Result<HttpReply, SendError>>,
    pub sent: RefCell<Vec<HttpRequest>>,
    /// What the mail binding answers; `Ok` unless set.
    #[allow(clippy::type_complexity)]
    pub respond_mime: Box<dyn Fn(&MimeEmail) -> std::result::Result<(), BindingError>>,
    pub mime_sent: RefCell<Vec<MimeEmail>>,
    pub lines: RefCell<Vec<(String, serde_json::Value)>>,
}

impl MemCourier {
    pub fn new(respond: impl Fn(&HttpRequest) -> std::result::Result<HttpReply, SendError> + 'static) -> Self {
        Self {
            respond: Box::new(respond),
            sent: RefCell::default(),
            respond_mime: Box::new(|_| Ok(())),
            mime_sent: RefCell::default(),
            lines: RefCell::default(),
        }
    }
    /// A courier whose mail binding answers with `respond`.
    pub fn binding(respond: impl Fn(&MimeEmail) -> std::result::Result<(), BindingError> + 'static) -> Self {
        Self { respond_mime: Box::new(respond), ..Self::ok() }
    }
    pub fn ok() -> Self {
        Self::new(|_| Ok(HttpReply { status: 204, body: String::new() }))
    }
    pub fn sent_to(&self, url: &str) -> Vec<HttpRequest> {
        self.sent.borrow().iter().filter(|r| r.url == url).cloned().collect()
    }
    pub fn lines(&self, marker: &str) -> Vec<serde_json::Value> {
        self.lines.borrow().iter().filter(|(m, _)| m == marker).map(|(_, v)| v.clone()).collect()
    }
}

impl Courier for MemCourier {
    async fn send(&self, request: &HttpRequest) -> std::result::Result<HttpReply, SendError> {
        self.sent.borrow_mut().push(request.clone());
        (self.respond)(request)
    }
    async fn send_mime(&self, message: &MimeEmail) -> std::result::Result<(), BindingError> {
        self.mime_sent.borrow_mut().push(message.clone());
        (self.respond_mime)(message)
    }
    fn log(&self, marker: &str, value: &serde_json::Value) {
        self.lines.borrow_mut().push((marker.to_string(), value.clone()));
    }
}

/// The revocation set an isolate holds after reading the whole log at `now`.
pub fn set_at(w: &World, now: i64) -> portcullis::core::revocation::RevocationSet {
    use portcullis::core::revocation::{retention_secs, RevocationSet};
    let retention = retention_secs(w.config.access_ttl_secs);
    let log = block_on(portcullis::core::gateway::revocations::read(&*w.store, 0, UnixTime(now), retention)).unwrap();
    let mut set = RevocationSet::new();
    set.apply(log.rows, log.last_seq, UnixTime(now), retention);
    set
}

/// Whether `set` refuses the access token of this sign-in.
pub fn refused(set: &portcullis::core::revocation::RevocationSet, a: &portcullis::core::flows::AuthResponse) -> bool {
    set.refuses(a.user.session_id.as_ref().unwrap(), &a.user.id, &a.user.roles)
}
