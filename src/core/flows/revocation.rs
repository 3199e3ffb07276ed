//! Introspection and revocation for origins and clients: `POST
//! /auth/introspect` (RFC 7662) and `POST /auth/revoke` (RFC 7009), both
//! taking a form with `token` and an optional `token_type_hint`.
//!
//! Both read D1, not the isolate's revocation set: an introspection answer
//! is as current as the auth API's own checks, and a revocation takes
//! effect at once for them (at the gateway, within `REVOCATION_LAG`).
//!
//! The kind of token is told by its shape — an access token is a JWT (it has
//! dots), a refresh token is opaque base64url (it has none) — so the hint
//! can never send the search the wrong way, and is accepted whatever it
//! says (RFC 7009 §2.1 and RFC 7662 §2.1 let a server ignore it, and ask it
//! to search every kind anyway).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use crate::core::error::Error;
use crate::core::events;
use crate::core::flows::account::refresh_token_shape;
use crate::core::flows::{verify_token, Deps, Meta};
use crate::core::ids::{self, Random, SessionId, UserId};
use crate::core::ports::{EventSink, KeyRing, RevocationStore, SessionStore, UserStore};
use crate::core::revocation::stands;
use crate::core::users::Role;

/// `token_type` of an active access token: the access token type it is
/// used as (RFC 7662 §2.2 names RFC 6749's token types).
pub const ACCESS_TOKEN_TYPE_NAME: &str = "Bearer";
/// `token_type` of an active refresh token, which is no access token type:
/// RFC 7009's hint value for it, so callers can tell the two apart.
pub const REFRESH_TOKEN_TYPE_NAME: &str = "refresh_token";
/// The `revoke_reason` of sessions revoked through `POST /auth/revoke`.
pub const CLIENT_REVOKE_REASON: &str = "revoked_by_client";

/// The form both endpoints take: `token`, once; `token_type_hint` at most
/// once and otherwise ignored (see the module docs); any other parameter
/// ignored (RFC 6749 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenForm {
    /// The token to introspect or revoke.
    pub token: String,
}

impl TokenForm {
    /// Reads an `application/x-www-form-urlencoded` body. A missing, empty
    /// or repeated `token`, or a repeated `token_type_hint`, is 400
    /// `invalid_request`.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let mut token = None;
        let mut hint = false;
        for (name, value) in url::form_urlencoded::parse(body) {
            match name.as_ref() {
                "token" if token.is_some() => return Err(invalid("token: given more than once")),
                "token" => token = Some(value.into_owned()),
                "token_type_hint" if hint => return Err(invalid("token_type_hint: given more than once")),
                "token_type_hint" => hint = true,
                _ => {}
            }
        }
        match token {
            Some(t) if !t.is_empty() => Ok(Self { token: t }),
            _ => Err(invalid("token: required")),
        }
    }
}

fn invalid(detail: &str) -> Error {
    Error::InvalidRequest(detail.to_string())
}

/// The answer of `POST /auth/introspect`: `{"active": false}`, or the
/// token's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Introspection {
    /// Whether the token is active.
    pub active: bool,
    /// What an active token says.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub token: Option<ActiveToken>,
}

impl Introspection {
    /// The answer for anything revoked, expired, unknown, malformed or not ours.
    pub const INACTIVE: Self = Self { active: false, token: None };
}

/// The members of an active token's introspection (RFC 7662 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveToken {
    /// The user.
    pub sub: UserId,
    /// The session.
    pub sid: SessionId,
    /// When it expires (Unix seconds): an access token's `exp`; for a
    /// refresh token, when it stops working.
    pub exp: i64,
    /// When it was issued (Unix seconds): an access token's `iat`; for a
    /// refresh token, its issue by sign-in or by the last refresh.
    pub iat: i64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// [`ACCESS_TOKEN_TYPE_NAME`] or [`REFRESH_TOKEN_TYPE_NAME`].
    pub token_type: &'static str,
    /// The roles the token carries (an access token), or the user's roles
    /// now (a refresh token, whose next access token will carry them).
    pub roles: Vec<Role>,
}

/// The 404 of `POST /auth/introspect` when `INTROSPECTION_SECRET` is not set.
pub fn introspection_disabled() -> Error {
    Error::NoSuch {
        code: "introspection_disabled",
        detail: "token introspection is not enabled here (INTROSPECTION_SECRET is not set)".into(),
    }
}

/// The secrets an `Authorization` header may present: `Bearer <secret>`,
/// or `Basic` with the secret as the password (`client_secret_basic`, any
/// client id), which is what standard introspection clients send. RFC 6749
/// §2.3.1 form-urlencodes the password first, but many clients (curl `-u`,
/// Python requests, Go's `SetBasicAuth`) do not, and a base64 secret holds
/// `+`: both readings are candidates. Empty for any other shape.
pub fn presented_secrets(authorization: &str) -> Vec<String> {
    let Some((scheme, credentials)) = authorization.trim().split_once(' ') else { return Vec::new() };
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return [credentials.to_string()].into_iter().filter(|c| !c.is_empty()).collect();
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Vec::new();
    }
    let Some(decoded) = STANDARD.decode(credentials).ok() else { return Vec::new() };
    let Some((_, raw)) = std::str::from_utf8(&decoded).ok().and_then(|t| t.split_once(':')) else { return Vec::new() };
    let form = percent_decode_str(&raw.replace('+', " ")).decode_utf8().ok().map(|p| p.into_owned());
    let mut out: Vec<String> = vec![raw.to_string()];
    out.extend(form.filter(|f| f != raw));
    out.retain(|p| !p.is_empty());
    out
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + RevocationStore,
    E: EventSink,
    K: KeyRing,
{
    /// Admits a caller of `POST /auth/introspect` by its `Authorization`
    /// header ([`presented_secrets`]): 404 `introspection_disabled` without
    /// `INTROSPECTION_SECRET`, 401 `invalid_client` unless it presents the
    /// secret (compared in constant time).
    pub fn admit_introspection(&self, authorization: Option<&str>) -> Result<(), Error> {
        let Some(secret) = &self.config.introspection_secret else { return Err(introspection_disabled()) };
        let presented = authorization.map(presented_secrets);
        // Every candidate is compared (in constant time each).
        let matched = presented.iter().flatten().fold(false, |any, c| secret.matches(c) | any);
        match presented {
            _ if matched => Ok(()),
            presented => Err(Error::InvalidClient { presented: presented.is_some() }),
        }
    }

    /// `POST /auth/introspect` for an admitted caller: active only for an
    /// access token that verifies, is not past its `exp` (no leeway), and
    /// whose session stands in D1 (live, its
    /// user's, every role claimed still held), or for the current refresh
    /// token of a live session. A store that cannot be read fails (503).
    pub async fn introspect(&self, meta: &Meta, form: &TokenForm) -> Result<Introspection, Error> {
        let raw = form.token.as_str();
        let active = if is_jwt(raw) {
            let verified = match verify_token(raw, self.keys, &self.expectations(meta), meta.now).await {
                Ok(v) => v,
                Err(Error::InvalidToken(_)) => return Ok(Introspection::INACTIVE),
                Err(e) => return Err(e),
            };
            // Past its `exp` by this clock it is not active (RFC 7662 §2.2),
            // whatever leeway a verifier elsewhere gives for clock skew.
            if verified.expires_at.0 <= meta.now.0 {
                return Ok(Introspection::INACTIVE);
            }
            let c = &verified.claims;
            let standing = self.store.session_standing(&c.sid).await?;
            if !stands(standing.as_ref(), &c.sub, &c.roles, meta.now, self.config.session_max_age_secs) {
                return Ok(Introspection::INACTIVE);
            }
            ActiveToken {
                sub: c.sub.clone(),
                sid: c.sid.clone(),
                exp: verified.expires_at.0,
                iat: verified.issued_at.0,
                iss: c.iss.clone(),
                aud: self.config.audience.clone(),
                token_type: ACCESS_TOKEN_TYPE_NAME,
                roles: c.roles.clone(),
            }
        } else {
            let Ok(shaped) = refresh_token_shape(Some(raw)) else { return Ok(Introspection::INACTIVE) };
            let session = match self.store.session_by_refresh(&ids::token_hash(shaped)).await? {
                Some(s) if s.is_live(meta.now, self.config.session_max_age_secs) => s,
                _ => return Ok(Introspection::INACTIVE),
            };
            let Some(user) = self.store.user_by_id(&session.user_id).await?.filter(|u| !u.banned) else {
                return Ok(Introspection::INACTIVE);
            };
            let exp = session.expires_at.min(session.ends_at(self.config.session_max_age_secs)).0;
            ActiveToken {
                sub: user.id,
                sid: session.id,
                exp,
                iat: session.last_used_at.0,
                iss: meta.issuer.clone(),
                aud: self.config.audience.clone(),
                token_type: REFRESH_TOKEN_TYPE_NAME,
                roles: user.roles,
            }
        };
        Ok(Introspection { active: true, token: Some(active) })
    }

    /// `POST /auth/revoke`: an access token that verifies, or a refresh
    /// token of a live session (its current one or one rotated away),
    /// revokes its session (in D1 at once,
    /// at the gateway within `REVOCATION_LAG`) and emits `session_revoked`.
    /// Anything else — unknown, expired, already revoked, not ours — changes
    /// nothing and is answered the same (RFC 7009 §2.2). A store that cannot
    /// be read or written fails (503).
    pub async fn revoke_token(&self, meta: &Meta, rng: &mut impl Random, form: &TokenForm) -> Result<(), Error> {
        let raw = form.token.as_str();
        let target = if is_jwt(raw) {
            match verify_token(raw, self.keys, &self.expectations(meta), meta.now).await {
                Ok(v) => Some((v.claims.sub, v.claims.sid)),
                Err(Error::InvalidToken(_)) => None,
                Err(e) => return Err(e),
            }
        } else if let Ok(shaped) = refresh_token_shape(Some(raw)) {
            // Any token of the family: a client whose logout raced its own
            // refresh holds a rotated one, and so may a victim whose thief
            // refreshed first; either way the session must end (as reuse at
            // `/refresh` ends it), not be answered 200 and left live.
            match self.store.session_by_issued_refresh(&ids::token_hash(shaped)).await? {
                Some(s) if s.is_live(meta.now, self.config.session_max_age_secs) => Some((s.user_id, s.id)),
                _ => None,
            }
        } else {
            None
        };
        let Some((user_id, session_id)) = target else { return Ok(()) };
        // Of racing revocations (and logouts) of the session, only the one
        // whose write revoked it reports it.
        if !self.store.revoke_session(&session_id, meta.now, CLIENT_REVOKE_REASON).await? {
            return Ok(());
        }
        self.emit(
            meta,
            rng,
            vec![events::SessionRevoked { user_id, session_id: Some(session_id), revoke_all: false }.into()],
        )
        .await
    }
}

/// Whether `raw` has the shape of a JWT rather than of a refresh token.
fn is_jwt(raw: &str) -> bool {
    raw.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_form_needs_exactly_one_token_and_ignores_the_rest() {
        assert_eq!(TokenForm::parse(b"token=abc").unwrap().token, "abc");
        assert_eq!(TokenForm::parse(b"token=a%2Bb+c&token_type_hint=refresh_token").unwrap().token, "a+b c");
        assert_eq!(TokenForm::parse(b"token_type_hint=garbage&token=x&client_id=y").unwrap().token, "x");
        for bad in [&b""[..], b"token=", b"hint=x", b"token=a&token=b", b"token=a&token_type_hint=x&token_type_hint=y"]
        {
            let e = TokenForm::parse(bad).unwrap_err();
            assert_eq!((e.problem().status, e.problem().code), (400, "invalid_request"), "{bad:?}");
        }
    }

    #[test]
    fn an_inactive_answer_is_active_false_alone() {
        assert_eq!(serde_json::to_string(&Introspection::INACTIVE).unwrap(), r#"{"active":false}"#);
    }

    proptest! {
        #[test]
        fn form_parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TokenForm::parse(&body);
        }
    }
}
