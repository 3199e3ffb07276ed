//! Rate limiting, the daily cap on failed email codes and the login
//! back-off, as the flows apply them (`RATE_LIMITS`,
//! `OTP_MAX_FAILURES_PER_DAY`, `LOGIN_BACKOFF`): by client IP and email on
//! the flows that take an address, by caller on the audit listings, by
//! session on refresh.

use crate::core::email_address::Email;
use crate::core::error::Error;
use crate::core::events;
use crate::core::flows::{Deps, EmailRequest, Meta, Recipient};
use crate::core::ids::Random;
use crate::core::locale::Locale;
use crate::core::ports::{EventSink, KeyRing, RateLimitStore, SessionStore, UserStore};
use crate::core::rate_limit::{
    self, Charge, Count, Endpoint, Hit, KeyType, Rule, BACKOFF_MEMORY_SECS, LOGIN_WAIT_STEPS, LOGIN_WAIT_STEP_MS,
};
use crate::core::time::UnixTime;

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + RateLimitStore,
    E: EventSink,
    K: KeyRing,
{
    /// Counts this request against `endpoint`'s limits for the client IP
    /// and `email`; over a limit it is refused with 429 `rate_limited` and
    /// the first refusal of each window emits `rate_limit_exceeded`.
    /// Every attempt counts, whether or not the account exists.
    pub async fn throttle(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        endpoint: Endpoint,
        email: &str,
    ) -> Result<(), Error> {
        self.throttle_keys(meta, rng, endpoint, Some(email)).await.map(|_| ())
    }

    /// Everything an email-sending request (magic link, code, password
    /// reset) does before anything depends on whether the address has an
    /// account: the address is parsed and the request counted against the
    /// limits. The edge answers right after it and sends in the background,
    /// so the answer takes as long for any address (no enumeration by time).
    pub async fn admit_email_request(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        endpoint: Endpoint,
        req: &EmailRequest,
    ) -> Result<Recipient, Error> {
        let email = Email::parse(&req.email)?;
        let locale = req.locale.as_deref().map(Locale::parse).transpose()?;
        self.throttle(meta, rng, endpoint, email.as_str()).await?;
        Ok(Recipient { email, locale })
    }

    /// Counts this request against `endpoint`'s per-IP limit only.
    pub async fn throttle_ip(&self, meta: &Meta, rng: &mut impl Random, endpoint: Endpoint) -> Result<(), Error> {
        self.throttle_keys(meta, rng, endpoint, None).await.map(|_| ())
    }

    /// Counts a code verification for `email` at `endpoint` (`otp/verify`
    /// for email codes, `mfa/verify` for second factors): its per-IP and
    /// per-email limits, and the account's daily cap on failed codes
    /// (`OTP_MAX_FAILURES_PER_DAY`, one counter per endpoint), all refused
    /// alike with 429 `rate_limited` — once the cap is reached even the
    /// right code is.
    /// The attempt is charged to the cap *before* any code is compared, so
    /// concurrent guesses cannot get past it; the returned [`Charge`] goes to
    /// [`Self::refund_code_attempt`] when the attempt turns out not to be a
    /// failure. Unknown addresses are counted exactly like accounts.
    pub async fn throttle_code_attempt(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        endpoint: Endpoint,
        email: &str,
    ) -> Result<Option<Charge>, Error> {
        let counted = self.throttle_keys(meta, rng, endpoint, Some(email)).await?;
        Ok(counted.into_iter().find(|(_, _, k, _)| *k == KeyType::Account).map(|(hit, rule, _, count)| Charge {
            key: hit.key,
            resets_at: count.resets_at,
            limit: rule.limit,
        }))
    }

    /// Gives back an attempt charged by [`Self::throttle_code_attempt`]
    /// that was not a failed guess (the right code, or no code at all).
    /// Best effort: a refund that fails is reported for the log and
    /// otherwise ignored — it costs the address one failure too many
    /// against the day's cap, never a sign-in with the right code (whose
    /// code is already spent by then).
    pub async fn refund_code_attempt(&self, charge: Option<Charge>) {
        let Some(c) = charge else { return };
        if let Err(e) = self.store.unhit(&c.key, c.resets_at, c.limit).await {
            // The key's endpoint only: the rest is the address.
            let endpoint = c.key.split(':').next().unwrap_or_default();
            self.events.report(&format!("{endpoint}: giving back a charged attempt failed: {e}"));
        }
    }

    /// Counts this request against `endpoint`'s per-IP limits and its limit
    /// per `key_type` for `subject` (the signed-in caller's user id, for the
    /// audit listings); refused like [`Self::throttle`]. The
    /// `rate_limit_exceeded` it may emit names `email` (the caller's), so
    /// the audit log attributes it to their account.
    pub async fn throttle_subject(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        endpoint: Endpoint,
        key_type: KeyType,
        subject: &str,
        email: Option<&str>,
    ) -> Result<(), Error> {
        let limits = &self.config.rate_limits;
        let mut hits = rate_limit::hits(limits, endpoint, meta.ip.as_deref(), None);
        hits.extend(rate_limit::subject_hit(limits, endpoint, key_type, subject));
        self.count_hits(meta, rng, endpoint, hits, email).await.map(|_| ())
    }

    /// The refusal of a refresh whose session went over its limit in the
    /// rotation's write (`count`, its counter with this request; `rule`, the
    /// limit): 429 `rate_limited` with the wait, and on the first refusal of
    /// the window `rate_limit_exceeded` with `key_type` `session` and the
    /// email of the session's account (`old_hash` is the presented token's).
    pub async fn refresh_throttled(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        old_hash: &str,
        rule: Rule,
        count: Count,
    ) -> Error {
        let hit = (Hit::always(String::new(), rule.window_secs), rule, KeyType::Session);
        let Some(exceeded) = rate_limit::decide(&[hit], &[Some(count)], meta.now) else {
            // The store said over the limit; its count says otherwise: refuse all the same.
            return Error::RateLimited { retry_after_secs: 1 };
        };
        if !exceeded.tripped.is_empty() {
            let reported = async {
                let session = self.store.session_by_refresh(old_hash).await?;
                let user = match session {
                    Some(s) => self.store.user_by_id(&s.user_id).await?,
                    None => None,
                };
                let email = user.map(|u| u.email);
                let event = limit_event(meta, Endpoint::Refresh, email.as_deref(), rule.limit, KeyType::Session);
                self.emit(meta, rng, vec![event]).await
            };
            if let Err(e) = reported.await {
                return e;
            }
        }
        Error::RateLimited { retry_after_secs: exceeded.retry_after_secs }
    }

    /// Counts the request on every counter of `endpoint` and returns those
    /// counted, or refuses it when one is over its limit.
    async fn throttle_keys(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        endpoint: Endpoint,
        email: Option<&str>,
    ) -> Result<Vec<(Hit, Rule, KeyType, Count)>, Error> {
        let hits = rate_limit::hits(&self.config.rate_limits, endpoint, meta.ip.as_deref(), email);
        self.count_hits(meta, rng, endpoint, hits, email).await
    }

    /// Counts the request on `hits` (of `endpoint`) in one write and returns
    /// those counted, or refuses it when one is over its limit; the first
    /// refusal of each key and window emits `rate_limit_exceeded` naming
    /// `email`.
    async fn count_hits(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        endpoint: Endpoint,
        hits: Vec<(Hit, Rule, KeyType)>,
        email: Option<&str>,
    ) -> Result<Vec<(Hit, Rule, KeyType, Count)>, Error> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Hit> = hits.iter().map(|(h, _, _)| h.clone()).collect();
        let counts = self.store.hit(&keys, meta.now).await?;
        let Some(exceeded) = rate_limit::decide(&hits, &counts, meta.now) else {
            return Ok(hits.into_iter().zip(counts).filter_map(|((h, r, k), c)| Some((h, r, k, c?))).collect());
        };
        if !exceeded.tripped.is_empty() {
            let events =
                exceeded.tripped.iter().map(|(key_type, limit)| limit_event(meta, endpoint, email, *limit, *key_type));
            self.emit(meta, rng, events.collect()).await?;
        }
        Err(Error::RateLimited { retry_after_secs: exceeded.retry_after_secs })
    }

    /// Admits a login for `email` under its back-off and counts it as a
    /// failure right away, before the password is looked at, in one write
    /// ([`RateLimitStore::count_login_attempt`]): concurrent attempts cannot
    /// get past the free failures, as they could if each read the record
    /// before its password check and counted its failure after it. While the
    /// back-off lasts the attempt is refused with 429 and the seconds left;
    /// the first refusal of each back-off emits `rate_limit_exceeded` with
    /// `key_type` `email` and `limit` the failures allowed before it.
    ///
    /// Refused while attempts admitted moments ago are still being checked
    /// ([`rate_limit::LoginRecord::may_clear_soon`]), the attempt first waits for them:
    /// it tries again every [`LOGIN_WAIT_STEP_MS`], at most
    /// [`LOGIN_WAIT_STEPS`] times, at the time the pause ends, and is
    /// admitted if one of them proved the password (clearing the record) or
    /// the back-off lets it in by then — as an attempt arriving then would
    /// be. So concurrent logins with the right password all get in, and
    /// concurrent wrong guesses get no more checks than one after another.
    /// `Ok(Some(admitted_at))`: counted at that time, so the check must end
    /// in [`RateLimitStore::clear_login_failures`] (the right password) or
    /// [`Self::settle_login_attempt`] (anything else); `Ok(None)`: no
    /// back-off (`LOGIN_BACKOFF=off`), nothing counted.
    pub async fn login_backoff(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        email: &str,
    ) -> Result<Option<UnixTime>, Error> {
        let Some(backoff) = self.config.rate_limits.backoff else { return Ok(None) };
        let mut now = meta.now;
        let mut waits = 0;
        let record = loop {
            let forget_before = now.minus_secs(BACKOFF_MEMORY_SECS);
            let Some(record) = self.store.count_login_attempt(email, &backoff, now, forget_before).await? else {
                return Ok(Some(now));
            };
            if waits == LOGIN_WAIT_STEPS || !record.may_clear_soon(now) {
                break record;
            }
            waits += 1;
            // Never back in time, should the clock step back.
            now = self.pause.pause(LOGIN_WAIT_STEP_MS).await.max(now);
        };
        // The store refused: its wait, or (should the two clocks disagree) a second.
        let retry_after_secs = backoff.wait(record.failures, record.last_failed_at, now).unwrap_or(1);
        let hit = rate_limit::backoff_hit(email, record.last_failed_at, retry_after_secs);
        let counts = self.store.hit(&[hit], now).await?;
        if counts.first().copied().flatten().is_some_and(|c| c.count == 1) {
            let event = limit_event(meta, Endpoint::Login, Some(email), backoff.free_failures, KeyType::Email);
            self.emit(meta, rng, vec![event]).await?;
        }
        Err(Error::RateLimited { retry_after_secs })
    }

    /// Ends a login attempt that [`Self::login_backoff`] counted (`admitted`,
    /// the time it was admitted at) and that did not prove the password — wrong, too long, no account,
    /// no password: its failure stays, it is no longer in flight, so logins
    /// refused meanwhile stop waiting for it. Best effort: a settlement that
    /// fails is reported for the log and otherwise ignored — the mark left
    /// behind only makes refused logins wait, and only for
    /// [`rate_limit::LOGIN_IN_FLIGHT_SECS`] after the last admission; it never admits one.
    pub async fn settle_login_attempt(&self, admitted: Option<UnixTime>, email: &str) {
        let Some(admitted_at) = admitted else { return };
        if let Err(e) = self.store.settle_login_attempt(email, admitted_at).await {
            self.events.report(&format!("login: settling a failed attempt failed: {e}"));
        }
    }
}

/// `rate_limit_exceeded` for a refusal on `endpoint` by the `key_type` rule of `limit`.
fn limit_event(meta: &Meta, endpoint: Endpoint, email: Option<&str>, limit: u32, key_type: KeyType) -> events::Event {
    events::RateLimitExceeded {
        endpoint: endpoint.name().into(),
        ip_address: meta.ip.clone(),
        email: email.map(str::to_string),
        limit,
        key_type: key_type.as_str().into(),
    }
    .into()
}
