//! `GET /auth/admin/audit` and `GET /auth/audit`: the audit log, read by an
//! administrator over every user, and by a user over their own account (see
//! [`crate::core::audit`]). Both check the caller, then count the request
//! against the caller's `audit` rate limit, before the query is read.

use crate::core::audit::{self, AuditPage, AuditQuery, Reader, Viewer};
use crate::core::error::Error;
use crate::core::flows::admin::Admin;
use crate::core::flows::{Deps, Meta};
use crate::core::ids::Random;
use crate::core::ports::{AuditLog, EventSink, KeyRing, RateLimitStore, SessionStore, UserStore};
use crate::core::rate_limit::{Endpoint, KeyType};

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + RateLimitStore + AuditLog,
    E: EventSink,
    K: KeyRing,
{
    /// `GET /auth/admin/audit`: a page of every user's entries, with who
    /// acted for admin API actions (`raw_query` as for [`AuditQuery::parse`]).
    pub async fn admin_audit(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        raw_query: Option<&str>,
    ) -> Result<AuditPage, Error> {
        let user = admin.user();
        self.throttle_subject(meta, rng, Endpoint::Audit, KeyType::User, &user.id, Some(&user.email)).await?;
        let q = AuditQuery::parse(raw_query, Reader::Admin)?;
        audit::page(self.store, &q, Viewer::Admin).await
    }

    /// `GET /auth/audit`: a page of the caller's own entries (`raw_query`
    /// as for [`AuditQuery::parse`], without `user_id`), read once the
    /// caller is authenticated. Only entries at or after the account's
    /// latest takeover ([`crate::core::takeover`]) are shown: those before
    /// are the earlier holder's — their sign-ins, IP addresses and clients
    /// — and stay in the admin view only. While the account's address is
    /// unverified, entries anyone who knows the address can cause are shown
    /// without their client ([`audit::Viewer::Own`]): its holder may not be
    /// the address's owner, whose requests those may be.
    pub async fn own_audit(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        bearer: Option<&str>,
        raw_query: Option<&str>,
    ) -> Result<AuditPage, Error> {
        let p = self.authenticate(meta, bearer).await?;
        self.throttle_subject(meta, rng, Endpoint::Audit, KeyType::User, &p.user_id, Some(&p.email)).await?;
        let mut q = AuditQuery::parse(raw_query, Reader::Own)?;
        // The flag first, then the floor: a takeover between the two reads
        // then finds the flag as the planter's (unverified) and the floor
        // past everything before it — it can only hide more, never show the
        // new holder's client to the old one. An account gone meanwhile
        // counts as unverified.
        let address_verified = self.store.user_by_id(&p.user_id).await?.is_some_and(|u| u.email_verified);
        if let Some(floor) = self.store.taken_over_at(&p.user_id).await? {
            q.filter.since = Some(q.filter.since.map_or(floor, |since| since.max(floor)));
        }
        q.filter.user_id = Some(p.user_id.clone());
        let page = audit::page(self.store, &q, Viewer::Own { address_verified }).await?;
        // A takeover while the page was read revoked the caller's session in
        // its write: entries its new holder made since (their own, shown with
        // their client) must not reach the old holder. So the page goes only
        // to a session still live after it was read.
        if self.still_live(&self.live_session(meta, &p)).await? {
            Ok(page)
        } else {
            Err(Error::InvalidToken(crate::core::error::TokenError::SessionRevoked))
        }
    }
}
