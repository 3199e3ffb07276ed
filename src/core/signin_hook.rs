//! The synchronous sign-in hook: FastAuth's `allow_signin` and `modify_jwt`
//! as one optional HTTP hook (`HOOK_URL`), asked before every session starts.
//!
//! Request: a Standard-Webhooks-signed `POST` of
//! `{"type": "allow_signin", "user": {id, email, name, roles, email_verified}, "provider"}`.
//! Reply (2xx, JSON): `{"allow": false, "reason"?}` denies the sign-in (403
//! `signin_denied`); `{"allow": true, "claims"?: {...}}` lets it through and
//! adds the claims to the access token. Reserved claims are dropped, never
//! overwritten. Anything else — timeout, network error, non-2xx, a body that
//! is not that JSON — is a hook failure, decided by `HOOK_FAILURE_MODE`:
//! `open` signs in without extra claims, `closed` (the default) answers 503
//! `hook_unavailable`.
//!
//! With `HOOK_ON_REFRESH=true` the hook is asked again before every refresh
//! of a session, with the same request as `"type": "allow_refresh"` (a
//! distinct type: a hook that allow-lists sign-in providers must not read
//! a refresh as a sign-in through an unknown one and end every session)
//! plus `"trigger": "refresh"` and the `session_id` (`provider` is then
//! `"refresh"`): its claims replace the
//! session's, so a change (a new plan) reaches the next access token and the
//! origin without a new sign-in. A denial ends the session (403
//! `signin_denied`, `session_revoked`); a failure follows `HOOK_FAILURE_MODE`
//! — `closed`: 503, nothing rotated, the refresh token still good for a
//! retry; `open`: the session keeps the claims it had.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::core::error::Error;
use crate::core::ids::{SessionId, UserId};
use crate::core::outbound::{excerpt, HttpReply, HttpRequest, SendError};
use crate::core::time::UnixTime;
use crate::core::token::{ExtraClaims, RESERVED_CLAIMS};
use crate::core::users::Role;
use crate::core::users::User;
use crate::core::webhook::WebhookSecret;

/// Default `HOOK_TIMEOUT_MS`.
pub const HOOK_TIMEOUT_MS: u32 = 2_000;
/// Largest `HOOK_TIMEOUT_MS` accepted: a sign-in should not wait longer.
pub const MAX_HOOK_TIMEOUT_MS: u32 = 30_000;
/// Largest serialised size of the extra claims: access tokens must stay far
/// below the verifier's 4 KiB cap.
pub const MAX_EXTRA_CLAIMS_BYTES: usize = 1_024;
/// Longest denial reason passed on to the client, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// What a hook failure means (`HOOK_FAILURE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Sign in anyway, without extra claims.
    Open,
    /// Refuse the sign-in: 503 `hook_unavailable`.
    Closed,
}

impl FailureMode {
    /// Parses `open` or `closed`.
    pub fn parse(v: &str) -> Result<Self, String> {
        match v {
            "open" => Ok(Self::Open),
            "closed" => Ok(Self::Closed),
            other => Err(format!("{other:?} must be open or closed")),
        }
    }
}

/// The validated hook settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// `HOOK_URL`.
    pub url: Url,
    /// `HOOK_SECRET`, else `WEBHOOK_SECRET`.
    pub secret: WebhookSecret,
    /// `HOOK_TIMEOUT_MS`.
    pub timeout_ms: u32,
    /// `HOOK_FAILURE_MODE`.
    pub failure_mode: FailureMode,
    /// `HOOK_ON_REFRESH`: ask again before every refresh.
    pub on_refresh: bool,
}

/// The `provider` of a request made for a refresh.
pub const REFRESH_PROVIDER: &str = "refresh";
/// The `type` of a request made for a sign-in.
pub const SIGNIN_TYPE: &str = "allow_signin";
/// The `type` of a request made for a refresh (`HOOK_ON_REFRESH`).
pub const REFRESH_TYPE: &str = "allow_refresh";
/// The `trigger` of a request made for a refresh.
pub const REFRESH_TRIGGER: &str = "refresh";

#[derive(Serialize)]
struct HookUser<'a> {
    id: &'a UserId,
    email: &'a str,
    name: Option<&'a str>,
    roles: &'a [Role],
    email_verified: bool,
}

#[derive(Serialize)]
struct HookBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a SessionId>,
    user: HookUser<'a>,
    provider: &'a str,
}

/// The signed `allow_signin` request for `user` signing in through `provider`.
/// `message_id` is a fresh id (the `webhook-id`), `now` the signing time.
pub fn request(hook: &HookConfig, user: &User, provider: &str, message_id: &str, now: UnixTime) -> HttpRequest {
    signed(hook, message_id, now, body(user, provider, None))
}

/// The signed request asking again for `user`'s session `session_id`
/// before it is refreshed (`HOOK_ON_REFRESH`).
pub fn refresh_request(
    hook: &HookConfig,
    user: &User,
    session_id: &SessionId,
    message_id: &str,
    now: UnixTime,
) -> HttpRequest {
    signed(hook, message_id, now, body(user, REFRESH_PROVIDER, Some(session_id)))
}

fn body<'a>(user: &'a User, provider: &'a str, refreshing: Option<&'a SessionId>) -> HookBody<'a> {
    HookBody {
        kind: if refreshing.is_some() { REFRESH_TYPE } else { SIGNIN_TYPE },
        trigger: refreshing.map(|_| REFRESH_TRIGGER),
        session_id: refreshing,
        user: HookUser {
            id: &user.id,
            email: &user.email,
            name: user.name.as_deref(),
            roles: &user.roles,
            email_verified: user.email_verified,
        },
        provider,
    }
}

fn signed(hook: &HookConfig, message_id: &str, now: UnixTime, body: HookBody<'_>) -> HttpRequest {
    // Plain strings and bools: serialising cannot fail.
    let body = serde_json::to_string(&body).unwrap_or_default();
    HttpRequest {
        url: hook.url.as_str().to_string(),
        headers: hook.secret.headers(message_id, now, &body).into_iter().collect(),
        body,
        timeout_ms: hook.timeout_ms,
    }
}

/// The hook's answer, once understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Sign in, adding these claims (reserved ones already removed).
    Allow {
        /// Extra claims for the access token.
        claims: ExtraClaims,
        /// Reserved claim names the hook tried to set (dropped).
        dropped: Vec<String>,
    },
    /// Refuse, with the hook's reason if it gave one.
    Deny(Option<String>),
}

#[derive(Deserialize)]
struct Reply {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    claims: Option<ExtraClaims>,
}

/// Reads a reply; `Err` says why it is not a valid answer.
pub fn parse_reply(reply: &HttpReply) -> Result<Verdict, String> {
    if !reply.is_success() {
        return Err(format!("answered HTTP {}", reply.status));
    }
    let parsed: Reply = serde_json::from_str(&reply.body)
        .map_err(|e| format!("answered something other than {{\"allow\": bool, ...}}: {e}"))?;
    if !parsed.allow {
        let reason = parsed.reason.map(|r| excerpt(r.trim(), MAX_REASON_CHARS)).filter(|r| !r.is_empty());
        return Ok(Verdict::Deny(reason));
    }
    let mut claims = parsed.claims.unwrap_or_default();
    let mut dropped: Vec<String> = Vec::new();
    claims.retain(|name, _| {
        let reserved = RESERVED_CLAIMS.contains(&name.as_str());
        if reserved {
            dropped.push(name.clone());
        }
        !reserved && !name.is_empty()
    });
    let size = serde_json::to_string(&claims).map_or(usize::MAX, |s| s.len());
    if size > MAX_EXTRA_CLAIMS_BYTES {
        return Err(format!("claims take {size} bytes; at most {MAX_EXTRA_CLAIMS_BYTES} fit in an access token"));
    }
    Ok(Verdict::Allow { claims, dropped })
}

/// The hook.s decision and what the operator should hear about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The claims to add, or the error that refuses the sign-in.
    pub result: Result<ExtraClaims, Error>,
    /// A hook failure or a dropped reserved claim, for the log.
    pub warning: Option<String>,
    /// Whether the hook failed (no answer, or not a valid one): the result
    /// is then the failure mode's, not the hook's.
    pub failed: bool,
}

/// Turns what happened to the request into the decision, per `mode`.
pub fn decide(mode: FailureMode, outcome: Result<HttpReply, SendError>) -> Decision {
    let failure = match outcome.map_err(|e| e.to_string()).and_then(|reply| parse_reply(&reply)) {
        Ok(Verdict::Deny(reason)) => {
            let detail = reason.unwrap_or_else(|| "the sign-in was refused".to_string());
            return Decision { result: Err(Error::forbidden("signin_denied", detail)), warning: None, failed: false };
        }
        Ok(Verdict::Allow { claims, dropped }) => {
            let warning = (!dropped.is_empty())
                .then(|| format!("the hook's reserved claims were ignored: {}", dropped.join(", ")));
            return Decision { result: Ok(claims), warning, failed: false };
        }
        Err(why) => why,
    };
    let warning = Some(format!(
        "the sign-in hook failed ({failure}); failing {}",
        match mode {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    ));
    match mode {
        FailureMode::Open => Decision { result: Ok(ExtraClaims::new()), warning, failed: true },
        FailureMode::Closed => Decision { result: Err(Error::HookUnavailable(failure)), warning, failed: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reply(status: u16, body: &str) -> Result<HttpReply, SendError> {
        Ok(HttpReply { status, body: body.to_string() })
    }

    #[test]
    fn allow_with_claims_adds_them_and_drops_reserved_ones() {
        let d = decide(
            FailureMode::Closed,
            reply(
                200,
                r#"{"allow": true, "claims": {"plan": "pro", "sub": "evil", "roles": ["admin"], "org": {"id": 7}}}"#,
            ),
        );
        let claims = d.result.unwrap();
        assert_eq!(serde_json::Value::Object(claims), json!({"plan": "pro", "org": {"id": 7}}));
        let warning = d.warning.unwrap();
        assert!(warning.contains("roles") && warning.contains("sub"), "{warning}");
    }

    #[test]
    fn allow_without_claims_adds_nothing() {
        let d = decide(FailureMode::Closed, reply(200, r#"{"allow": true, "extra": 1}"#));
        assert_eq!((d.warning.is_none(), d.failed), (true, false));
        assert_eq!(d.result.unwrap(), ExtraClaims::new());
    }

    #[test]
    fn deny_is_a_403_with_the_reason() {
        let d = decide(FailureMode::Open, reply(200, r#"{"allow": false, "reason": "  waitlisted\n "}"#));
        let p = d.result.unwrap_err().problem();
        assert_eq!((p.status, p.code, p.detail.as_str()), (403, "signin_denied", "waitlisted"));
        let d = decide(FailureMode::Open, reply(200, r#"{"allow": false}"#));
        assert_eq!(d.result.unwrap_err().problem().code, "signin_denied");
    }

    #[test]
    fn failures_follow_the_failure_mode() {
        let failures = [
            Err(SendError::Timeout),
            Err(SendError::Network("refused".into())),
            reply(500, r#"{"allow": true}"#),
            reply(302, ""),
            reply(200, "yes"),
            reply(200, r#"{"allow": "yes"}"#),
            reply(200, r#"{"claims": {}}"#),
            reply(200, r#"{"allow": true, "claims": ["x"]}"#),
            reply(200, &format!(r#"{{"allow": true, "claims": {{"big": "{}"}}}}"#, "x".repeat(2_000))),
        ];
        for f in failures {
            let open = decide(FailureMode::Open, f.clone());
            assert_eq!(open.result, Ok(ExtraClaims::new()), "{f:?}");
            assert!(open.warning.is_some() && open.failed);
            let closed = decide(FailureMode::Closed, f.clone());
            let p = closed.result.unwrap_err().problem();
            assert_eq!((p.status, p.code), (503, "hook_unavailable"), "{f:?}");
            assert!(!p.detail.contains("refused"), "the cause stays in the log");
        }
    }

    #[test]
    fn requests_are_signed_standard_webhooks() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let hook = HookConfig {
            url: Url::parse("https://hooks.example/signin").unwrap(),
            secret: secret.clone(),
            timeout_ms: 1_500,
            failure_mode: FailureMode::Closed,
            on_refresh: true,
        };
        let user = User {
            name: Some("Ada".into()),
            password_hash: Some("secret-hash".into()),
            email_verified: true,
            roles: vec!["admin".into()],
            ..User::new("u1".into(), "a@example.com".into(), UnixTime(0))
        };
        let req = request(&hook, &user, "email", "msg_1", UnixTime(1_700_000_000));
        assert_eq!((req.url.as_str(), req.timeout_ms), ("https://hooks.example/signin", 1_500));
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(
            body,
            json!({"type": "allow_signin", "provider": "email",
                   "user": {"id": "u1", "email": "a@example.com", "name": "Ada", "roles": ["admin"], "email_verified": true}})
        );
        assert_eq!(req.header("webhook-id"), Some("msg_1"));
        assert_eq!(req.header("webhook-timestamp"), Some("1700000000"));
        let sig = req.header("webhook-signature").unwrap();
        assert!(secret.verify("msg_1", UnixTime(1_700_000_000), &req.body, sig));
        assert!(!req.body.contains("secret-hash"));
        // Asked again before a refresh: the same request, saying so by its type.
        let again = refresh_request(&hook, &user, &"s-9".into(), "msg_2", UnixTime(1_700_000_100));
        let body: serde_json::Value = serde_json::from_str(&again.body).unwrap();
        assert_eq!(
            body,
            json!({"type": "allow_refresh", "trigger": "refresh", "session_id": "s-9", "provider": "refresh",
                   "user": {"id": "u1", "email": "a@example.com", "name": "Ada", "roles": ["admin"], "email_verified": true}})
        );
        assert!(secret.verify(
            "msg_2",
            UnixTime(1_700_000_100),
            &again.body,
            again.header("webhook-signature").unwrap()
        ));
    }

    #[test]
    fn failure_mode_parses_only_open_or_closed() {
        assert_eq!(FailureMode::parse("open"), Ok(FailureMode::Open));
        assert_eq!(FailureMode::parse("closed"), Ok(FailureMode::Closed));
        assert!(FailureMode::parse("Open").is_err());
    }
}
