//! The one judgement of a gateway request, synchronous and without I/O: route
//! policy, credential, revocation, token (from the isolate's token cache,
//! else verified with the isolate's cached keys), the claims' checks (roles,
//! the revocation set, a second factor, the sign-in's age), and the origin
//! assertion (cached with the token, else signed with the active key).
//!
//! Only what the isolate does not hold needs I/O: a cold key cache (or one
//! past `KEY_CACHE_TTL`), and a revocation set never read or a lag old. The
//! decision then says so ([`Decision::LoadKeys`], [`Decision::LoadRevocations`])
//! and the caller loads and asks again; keys and revocations merely due for a
//! reload are used meanwhile and read again in the background
//! ([`crate::core::gateway::key_cache`], [`crate::core::gateway::revocations`]).
//! A rule saying `"fresh": true` needs the token's session read now: the
//! decision forwards with a [`FreshSession`] to check first, through the
//! `RevocationStore` port. So nearly every request — public, cached or fresh
//! token, refusal — is decided within one call.
//!
//! What the isolate keeps between requests is the [`Gateway`]: its keys, its
//! copy of the revocation set and the tokens it verified (or issued), each
//! with its identity headers and assertion in the form the platform sends
//! them (`A`, [`IdentityHeaders`]).

use std::borrow::Cow;

use crate::core::config::Config;
use crate::core::error::{Error, TokenError};
use crate::core::gateway::cache::{Assertion, TokenCache};
use crate::core::gateway::credential;
use crate::core::gateway::headers::IdentityHeaders;
use crate::core::gateway::key_cache::{Cached, KeyCache, SignatureOps};
use crate::core::gateway::policy::{missing_token, Judgement};
use crate::core::gateway::request::RequestView;
use crate::core::gateway::revocations::{unreadable, BeforeUse, FreshSession, RevocationCopy, RoleRefusal};
use crate::core::gateway::target::{assertion_audience, RequestUrl};
use crate::core::time::UnixTime;
use crate::core::token::{self, Expectations, Parsed, VerifiedToken, ACCESS_TOKEN_TYPE, ASSERTION_TTL_SECS};

/// The judgement on one gateway request.
#[derive(Debug)]
pub enum Decision<A> {
    /// Forward, with the identity headers (`None`: none, the route is
    /// public) and whether the `Authorization` header is removed (unless
    /// every rule that applies says `forward_authorization`) — once the
    /// token's session passes `fresh`'s check, if a rule says `fresh`.
    Forward {
        /// The identity headers, assertion included.
        identity: Option<A>,
        /// Whether `Authorization` is removed before forwarding.
        drop_auth: bool,
        /// The session to read and check first ([`FreshSession::check`]).
        fresh: Option<FreshSession>,
    },
    /// Answer with this problem.
    Refuse(Error),
    /// The key cache must be loaded first, then ask again: it is cold or
    /// past `KEY_CACHE_TTL` (`None`), or the token names a `kid` it does not
    /// publish and a reload for an unknown kid is due.
    LoadKeys {
        /// The unknown `kid`, if that is why.
        unknown_kid: Option<String>,
    },
    /// The revocation set must be read first (never read, or a lag old),
    /// then ask again ([`RevocationCopy::before_use`]).
    LoadRevocations,
    /// The token is refused for a role by a copy read before it may have
    /// been minted ([`RevocationCopy::role_refusal`]): read the set (a
    /// read that began after the request arrived), then ask again with
    /// `recheck_roles` false, whose answer stands.
    RecheckRevocations,
}

/// What an isolate keeps for the gateway between requests: its signing keys
/// (`O`: the platform's signature operations), its copy of the revocation
/// set, and the tokens it verified or issued, each with what is forwarded
/// with it (`A`).
pub struct Gateway<O: SignatureOps, A> {
    /// The isolate's signing keys.
    pub keys: KeyCache<O>,
    /// The isolate's copy of the revocation set.
    pub revocations: RevocationCopy,
    tokens: TokenCache<A>,
    /// The assertion's `aud` (fixed per isolate, as the configuration is).
    audience: Option<String>,
}

/// A cached token that the policy allows.
enum Hit<A> {
    /// With its identity headers and a fresh assertion (and what a `fresh`
    /// rule's check reads).
    Ready(A, Option<FreshSession>),
    /// Its assertion is missing, about to expire, or signed by a key no
    /// longer published.
    Unsigned(VerifiedToken),
    /// The revocation set must be read first, or cannot be had.
    Blocked(BeforeUse),
    /// Refused for a role by a copy older than the token: read, then ask again.
    Recheck,
}

impl<O: SignatureOps, A: IdentityHeaders> Gateway<O, A> {
    /// Nothing loaded or cached yet; at most `capacity` cached tokens.
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: KeyCache::new(),
            revocations: RevocationCopy::new(),
            tokens: TokenCache::new(capacity),
            audience: None,
        }
    }

    /// Judges a gateway request at `now_ms` (Unix milliseconds): `req` (its
    /// URL `url`, its path normalised to `path`) under `cfg`, signatures
    /// through `ops`. With `recheck_roles`, a token refused for a role by a
    /// copy older than the token asks for a read first
    /// ([`Decision::RecheckRevocations`]); without, the refusal stands.
    /// Never does I/O.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        req: &impl RequestView,
        url: &RequestUrl,
        path: &str,
        cfg: &Config,
        ops: &O,
        now_ms: i64,
        recheck_roles: bool,
    ) -> Decision<A> {
        let now = UnixTime::from_millis(now_ms as f64);
        if echoes_the_request(req.method()) {
            return Decision::Refuse(Error::MethodNotAllowed { allow: FORWARDED_METHODS });
        }
        let judged = cfg.routes.judge(req, path);
        let drop_auth = !judged.forwards_authorization();
        if judged.is_public() {
            return Decision::Forward { identity: None, drop_auth, fresh: None };
        }
        let raw = match credential::access_token(req, cfg, &url.origin()) {
            Ok(Some(t)) => t,
            Ok(None) => return Decision::Refuse(missing_token()),
            Err(e) => return Decision::Refuse(e),
        };
        // A token that verifies is checked against the revocation set: an
        // isolate without a usable one reads it first, or fails closed. A
        // token that does not verify gets its 401 whatever the set; a fresh
        // rule reads the session from D1 anyway, so it needs no set read.
        let lag = cfg.revocation_lag_secs;
        let needs_fresh = judged.needs_fresh_session();
        let before_use = |copy: &RevocationCopy| match needs_fresh {
            true => BeforeUse::Use,
            false => copy.before_use(now_ms, lag),
        };
        let issuer: Cow<'_, str> = match &cfg.issuer {
            Some(fixed) => Cow::Borrowed(fixed),
            None => Cow::Owned(cfg.issuer_for(&url.origin())),
        };
        let fresh_session = |t: &VerifiedToken| judged.needs_fresh_session().then(|| FreshSession::of(&t.claims));
        // What a refusal of `t` becomes: `None` to read and ask again (a role
        // refusal by a copy older than the token), else the refusal (503
        // while D1 cannot be read).
        let settle = |copy: &RevocationCopy, e: Error, t: &VerifiedToken| match e {
            Error::InvalidToken(TokenError::Revoked) if recheck_roles => {
                match copy.role_refusal(&t.claims.sid, t.issued_at, now_ms, lag) {
                    RoleRefusal::Stands => Some(e),
                    RoleRefusal::Unknowable => Some(unreadable()),
                    RoleRefusal::Recheck => None,
                }
            }
            e => Some(e),
        };

        // A token this isolate verified before: a map lookup, while the keys
        // that signed it (and its assertion) are published.
        let (keys, revocations) = (&self.keys, &self.revocations);
        let cached = self.tokens.get_mut(&raw, now, |kid| keys.vouches(kid, now)).map(|e| {
            if e.token.claims.iss != *issuer {
                return Err(Error::InvalidToken(TokenError::WrongIssuer));
            }
            match before_use(revocations) {
                BeforeUse::Use => {}
                blocked => return Ok(Hit::Blocked(blocked)),
            }
            if let Err(refusal) = admit(&judged, revocations, &e.token, now) {
                return settle(revocations, refusal, &e.token).map_or(Ok(Hit::Recheck), Err);
            }
            Ok(match e.assertion.as_ref().filter(|a| assertion_fresh(a.expires_at, now)) {
                Some(a) => Hit::Ready(a.value.clone(), fresh_session(&e.token)),
                None => Hit::Unsigned(e.token.clone()),
            })
        });
        let blocked = |b: BeforeUse| match b {
            BeforeUse::FailClosed => Decision::Refuse(unreadable()),
            _ => Decision::LoadRevocations,
        };
        let (verified, fresh) = match cached {
            Some(Err(e)) => return Decision::Refuse(e),
            Some(Ok(Hit::Ready(identity, fresh))) => {
                return Decision::Forward { identity: Some(identity), drop_auth, fresh }
            }
            Some(Ok(Hit::Blocked(b))) => return blocked(b),
            Some(Ok(Hit::Recheck)) => return Decision::RecheckRevocations,
            Some(Ok(Hit::Unsigned(verified))) => (verified, None),
            None => match self.verify_fresh(&raw, &issuer, cfg, ops, now) {
                Ok((v, kid)) => match before_use(&self.revocations) {
                    BeforeUse::Use => (v, Some(kid)),
                    b => {
                        // Verified: cached, so the request after the read
                        // costs a lookup.
                        self.remember(&raw, Some((v, kid)), None, now);
                        return blocked(b);
                    }
                },
                Err(d) => return d,
            },
        };
        if let Err(e) = admit(&judged, &self.revocations, &verified, now) {
            let settled = settle(&self.revocations, e, &verified);
            // Cached all the same: a repeat of the refused request costs a lookup.
            self.remember(&raw, fresh.map(|kid| (verified, kid)), None, now);
            return settled.map_or(Decision::RecheckRevocations, Decision::Refuse);
        }
        let signed = self.sign_assertion(&issuer, cfg, &verified, ops, now);
        let fresh_check = fresh_session(&verified);
        let fresh = fresh.map(|kid| (verified, kid));
        match signed {
            Ok(signed) => {
                let identity = signed.value.clone();
                self.remember(&raw, fresh, Some(signed), now);
                Decision::Forward { identity: Some(identity), drop_auth, fresh: fresh_check }
            }
            Err(d) => {
                self.remember(&raw, fresh, None, now);
                d
            }
        }
    }

    /// Caches an access token this isolate has just signed (login, refresh,
    /// link, code, OAuth) with the key `kid`, with its assertion for the
    /// origin, as if the gateway had verified it: its first request through
    /// the gateway costs a lookup, not a signature check (if the assertion
    /// cannot be signed now, the first forward signs it) — for as long as
    /// its key is published.
    pub fn remember_issued(
        &mut self,
        raw: &str,
        kid: &str,
        token: VerifiedToken,
        cfg: &Config,
        ops: &O,
        now: UnixTime,
    ) {
        let signed = self.sign_assertion(&token.claims.iss, cfg, &token, ops, now).ok();
        self.remember(raw, Some((token, kid.to_string())), signed, now);
    }

    /// Caches what [`Gateway::decide`] learnt, with one write: a fresh token
    /// with the `kid` that signed it (and its assertion, if one was signed),
    /// or a new assertion for a cached token.
    fn remember(
        &mut self,
        raw: &str,
        fresh: Option<(VerifiedToken, String)>,
        assertion: Option<Assertion<A>>,
        now: UnixTime,
    ) {
        match (fresh, assertion) {
            (Some((token, kid)), assertion) => self.tokens.insert(raw, token, &kid, now).assertion = assertion,
            (None, Some(a)) => {
                let keys = &self.keys;
                if let Some(e) = self.tokens.get_mut(raw, now, |kid| keys.vouches(kid, now)) {
                    e.assertion = Some(a);
                }
            }
            (None, None) => {}
        }
    }

    /// Verifies a token the cache does not hold; with the `kid` that signed
    /// it (the caller caches both).
    fn verify_fresh(
        &mut self,
        raw: &str,
        issuer: &str,
        cfg: &Config,
        ops: &O,
        now: UnixTime,
    ) -> Result<(VerifiedToken, String), Decision<A>> {
        let refuse = |e: TokenError| Decision::Refuse(Error::InvalidToken(e));
        let parsed = Parsed::new(raw, ACCESS_TOKEN_TYPE).map_err(refuse)?;
        match self.keys.verify(ops, parsed.kid(), parsed.alg(), parsed.signed_data(), parsed.signature(), now) {
            Err(e) => return Err(Decision::Refuse(e)),
            Ok(Cached::NeedsLoad) => return Err(Decision::LoadKeys { unknown_kid: Some(parsed.kid().to_string()) }),
            Ok(Cached::UnknownKey) => return Err(refuse(TokenError::UnknownKey)),
            Ok(Cached::Verified(false)) => return Err(refuse(TokenError::BadSignature)),
            Ok(Cached::Verified(true)) => {}
        }
        let expect = Expectations {
            issuer,
            audience: &cfg.audience,
            token_type: ACCESS_TOKEN_TYPE,
            max_lifetime_secs: cfg.access_ttl_secs,
        };
        let verified = parsed.validated_claims(&expect, now).map_err(refuse)?;
        Ok((verified, parsed.kid().to_string()))
    }

    /// Signs the origin assertion for a verified token with the active key:
    /// the identity headers (assertion included), when the assertion
    /// expires and the `kid` that signed it.
    fn sign_assertion(
        &mut self,
        issuer: &str,
        cfg: &Config,
        verified: &VerifiedToken,
        ops: &O,
        now: UnixTime,
    ) -> Result<Assertion<A>, Decision<A>> {
        let signer = match self.keys.signer(ops, now) {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Decision::LoadKeys { unknown_kid: None }),
            Err(e) => return Err(Decision::Refuse(e)),
        };
        let audience = self.audience.get_or_insert_with(|| assertion_audience(cfg));
        let (input, exp) = token::assertion_signing_input(issuer, audience, verified, now, signer.kid(), signer.alg());
        let sig = signer.sign(ops, input.as_bytes()).map_err(Decision::Refuse)?;
        let c = &verified.claims;
        // Hook claims reach the origin in the assertion (signed above) and,
        // with CLAIMS_HEADER, as `X-Auth-Claims` too: built once per token,
        // cached with the assertion, nothing per request.
        let claims = if cfg.claims_header { token::claims_header_value(&verified.extra) } else { None };
        let identity = A::new(
            [
                &c.sub,
                &c.email,
                &c.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
                &c.sid,
                &token::compact(&input, &sig),
            ],
            claims.as_deref(),
        );
        Ok(Assertion { value: identity, expires_at: exp, kid: signer.kid().to_string() })
    }
}

/// Whether a verified token may make this request at `now`: the checks of
/// its claims that a cached and a freshly verified token both pass (a fresh
/// token's issuer, audience and lifetime were checked by its verification,
/// a cached one's issuer by the caller). Its session or a role it claims
/// revoked by the isolate's set (401 `token_revoked`), then every applicable
/// policy's roles (403) and sign-in — a second factor, a recent enough
/// `auth_time` (401 `insufficient_user_authentication`).
fn admit(
    judged: &Judgement<'_>,
    revocations: &RevocationCopy,
    token: &VerifiedToken,
    now: UnixTime,
) -> Result<(), Error> {
    let c = &token.claims;
    if revocations.refuses(&c.sid, &c.sub, &c.roles) {
        return Err(Error::InvalidToken(TokenError::Revoked));
    }
    judged.admit(c, now)
}

/// Whether an assertion expiring at `expires` is still worth forwarding at
/// `now`: more than half its lifetime left.
fn assertion_fresh(expires: UnixTime, now: UnixTime) -> bool {
    expires.0 - now.0 > (ASSERTION_TTL_SECS as i64) / 2
}

/// What a 405 for [`echoes_the_request`] offers in `Allow`: the methods
/// browsers and API clients use (the gateway forwards any other too).
pub const FORWARDED_METHODS: &str = crate::core::cors::ALLOWED_METHODS;

/// `TRACE` (RFC 9110 §9.3.8) and IIS's `TRACK` make an origin that allows
/// them send the request back as it received it: the identity headers and
/// the signed assertion the gateway added, to the client (cross-site
/// tracing). Never forwarded: 405 `method_not_allowed`. In any case, as the
/// Fetch standard's forbidden methods are matched.
fn echoes_the_request(method: &str) -> bool {
    method.len() == 5 && (method.eq_ignore_ascii_case("TRACE") || method.eq_ignore_ascii_case("TRACK"))
}
