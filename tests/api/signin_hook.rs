//! The sign-in hook (`allow_signin` + `modify_jwt`) at every session start,
//! against an in-memory hook.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use portcullis::core::error::Error;
use portcullis::core::flows::account::{LoginRequest, SignupRequest};
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::AuthResponse;
use portcullis::core::outbound::SendError;
use portcullis::core::time::UnixTime;
use portcullis::core::webhook::WebhookSecret;

use crate::support::{block_on, Done, TestRandom, World};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PASSWORD: &str = "correct horse";

fn world(mode: &str) -> World {
    World::new(&[("HOOK_URL", "https://hooks.example/signin"), ("HOOK_SECRET", SECRET), ("HOOK_FAILURE_MODE", mode)])
}

fn signup(w: &World, email: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(1_000);
    block_on(deps.signup(
        &meta,
        &mut TestRandom(11),
        SignupRequest { email: email.into(), password: PASSWORD.into(), name: Some("Ada".into()), locale: None },
    ))
}

fn login(w: &World, email: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(1_100);
    block_on(deps.login(&meta, &mut TestRandom(12), LoginRequest { email: email.into(), password: PASSWORD.into() }))
        .done()
}

fn claims(token: &str) -> serde_json::Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[test]
fn without_hook_url_the_gate_is_never_asked() {
    let w = World::new(&[]);
    signup(&w, "a@example.com").unwrap();
    assert!(w.hook.requests.borrow().is_empty());
}

#[test]
fn the_hook_gets_a_signed_allow_signin_request_with_the_user() {
    let w = world("closed");
    let r = signup(&w, "a@example.com").unwrap();
    let requests = w.hook.requests.borrow();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req.url, "https://hooks.example/signin");
    assert_eq!(req.timeout_ms, 2_000);
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "allow_signin",
            "provider": "email",
            "user": {"id": r.user.id, "email": "a@example.com", "name": "Ada", "roles": [], "email_verified": false},
        })
    );
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    assert_eq!(ts, 1_000);
    let secret = WebhookSecret::parse(SECRET).unwrap();
    assert!(secret.verify(
        req.header("webhook-id").unwrap(),
        UnixTime(ts),
        &req.body,
        req.header("webhook-signature").unwrap()
    ));
}

#[test]
fn a_denying_hook_refuses_login_with_403_and_no_session() {
    let w = world("closed");
    signup(&w, "a@example.com").unwrap();
    w.hook.answer(200, r#"{"allow": false, "reason": "on the waitlist"}"#);
    let p = login(&w, "a@example.com").unwrap_err().problem();
    assert_eq!((p.status, p.code, p.detail.as_str()), (403, "signin_denied", "on the waitlist"));
    assert_eq!(w.store.sessions.borrow().len(), 1, "only the signup's session");
    assert_eq!(w.events.kinds(), vec!["user_created", "login_failed"]);
    assert_eq!(w.events.last_json()["data"]["reason"], "signin_denied");
}

#[test]
fn a_denied_signup_keeps_the_account_and_still_emits_user_created() {
    let w = world("open");
    w.hook.answer(200, r#"{"allow": false}"#);
    let p = signup(&w, "a@example.com").unwrap_err().problem();
    assert_eq!((p.status, p.code), (403, "signin_denied"));
    assert_eq!(w.store.users.borrow().len(), 1);
    assert!(w.store.sessions.borrow().is_empty());
    assert_eq!(w.events.kinds(), vec!["user_created"]);
    // Once the hook lets the user in, login works.
    w.hook.answer(200, r#"{"allow": true}"#);
    login(&w, "a@example.com").unwrap();
}

#[test]
fn claims_from_the_hook_are_in_the_access_token_and_survive_refresh() {
    let w = world("closed");
    w.hook.answer(
        200,
        r#"{"allow": true, "claims": {"plan": "pro", "org": {"id": 7}, "sub": "evil", "roles": ["admin"], "exp": 1}}"#,
    );
    let r = signup(&w, "a@example.com").unwrap();
    let c = claims(&r.access_token);
    assert_eq!(c["plan"], "pro");
    assert_eq!(c["org"], serde_json::json!({"id": 7}));
    assert_eq!(c["sub"], r.user.id.as_str(), "reserved claims are never overwritten");
    assert_eq!(c["roles"], serde_json::json!([]));
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert_eq!(w.hook.warnings.borrow().len(), 1, "dropped reserved claims are reported");

    let (deps, meta) = w.at(1_500);
    let refreshed = block_on(deps.refresh(&meta, &mut TestRandom(13), Some(&r.refresh_token))).unwrap();
    assert_eq!(claims(&refreshed.access_token)["plan"], "pro");
    assert_eq!(w.hook.requests.borrow().len(), 1, "refresh does not ask the hook again");
    // The token still verifies: extra claims do not disturb the verifier.
    let (deps, meta) = w.at(1_501);
    assert_eq!(block_on(deps.me(&meta, Some(&refreshed.access_token))).unwrap().id, r.user.id);
}

#[test]
fn a_failing_hook_fails_closed_with_503_and_no_session() {
    for failure in [
        Err(SendError::Timeout),
        Err(SendError::Network("connection refused".into())),
        Ok((500, r#"{"allow": true}"#)),
        Ok((200, "<html>oops</html>")),
        Ok((200, r#"{"allowed": true}"#)),
    ] {
        let w = world("closed");
        signup(&w, "a@example.com").unwrap();
        match failure {
            Err(e) => w.hook.fail(e),
            Ok((status, body)) => w.hook.answer(status, body),
        }
        let p = login(&w, "a@example.com").unwrap_err().problem();
        assert_eq!((p.status, p.code), (503, "hook_unavailable"));
        assert_eq!(w.store.sessions.borrow().len(), 1);
        assert_eq!(w.events.last_json()["data"]["reason"], "hook_unavailable");
        assert!(w.hook.warnings.borrow().iter().any(|m| m.contains("failing closed")));
    }
}

#[test]
fn a_failing_hook_fails_open_without_extra_claims_when_configured() {
    let w = world("open");
    signup(&w, "a@example.com").unwrap();
    w.hook.fail(SendError::Timeout);
    let r = login(&w, "a@example.com").unwrap();
    let c = claims(&r.access_token);
    assert!(c.get("plan").is_none());
    assert_eq!(w.events.kinds(), vec!["user_created", "login"]);
    assert!(w.hook.warnings.borrow().iter().any(|m| m.contains("timed out") && m.contains("failing open")));
}

fn magic_link_sign_in(w: &World, email: &str) -> Result<AuthResponse, Error> {
    use portcullis::core::flows::EmailRequest;
    let (deps, meta) = w.at(1_200);
    block_on(deps.request_magic_link(&meta, &mut TestRandom(14), EmailRequest { email: email.into(), locale: None }))
        .unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    let (deps, meta) = w.at(1_201);
    block_on(deps.verify_magic_link(&meta, &mut TestRandom(15), MagicLinkVerifyRequest { token, locale: None })).done()
}

#[test]
fn magic_link_sign_ins_ask_the_hook_with_their_provider() {
    let w = world("closed");
    signup(&w, "a@example.com").unwrap();
    w.hook.answer(200, r#"{"allow": true, "claims": {"plan": "team"}}"#);
    let r = magic_link_sign_in(&w, "a@example.com").unwrap();
    assert_eq!(claims(&r.access_token)["plan"], "team");
    let last = w.hook.requests.borrow().last().cloned().unwrap();
    let body: serde_json::Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!(body["provider"], "magic_link");
}

#[test]
fn a_refused_passwordless_signup_still_announces_the_account_and_the_failed_login() {
    let w = World::new(&[
        ("HOOK_URL", "https://hooks.example/signin"),
        ("HOOK_SECRET", SECRET),
        ("ALLOW_PASSWORDLESS_SIGNUP", "true"),
    ]);
    w.hook.answer(200, r#"{"allow": false, "reason": "invite only"}"#);
    let p = magic_link_sign_in(&w, "new@example.com").unwrap_err().problem();
    assert_eq!((p.status, p.code), (403, "signin_denied"));
    assert_eq!(w.store.users.borrow().len(), 1, "the account was created");
    assert!(w.store.sessions.borrow().is_empty());
    assert_eq!(w.events.kinds(), vec!["magic_link_requested", "user_created", "login_failed"]);
    assert_eq!(w.events.last_json()["data"]["reason"], "signin_denied");
}

fn world_on_refresh(mode: &str) -> World {
    World::new(&[
        ("HOOK_URL", "https://hooks.example/signin"),
        ("HOOK_SECRET", SECRET),
        ("HOOK_FAILURE_MODE", mode),
        ("HOOK_ON_REFRESH", "true"),
    ])
}

fn refresh(w: &World, at: i64, token: &str) -> Result<AuthResponse, Error> {
    let (deps, meta) = w.at(at);
    block_on(deps.refresh(&meta, &mut TestRandom(at as u64), Some(token)))
}

#[test]
fn with_hook_on_refresh_a_refresh_asks_again_and_the_new_claims_replace_the_old() {
    let w = world_on_refresh("closed");
    w.hook.answer(200, r#"{"allow": true, "claims": {"plan": "free", "seats": 1}}"#);
    let r = signup(&w, "a@example.com").unwrap();
    assert_eq!(claims(&r.access_token)["plan"], "free");
    // The plan changes; the next refresh carries it, without a new sign-in.
    w.hook.answer(200, r#"{"allow": true, "claims": {"plan": "pro"}}"#);
    let refreshed = refresh(&w, 1_500, &r.refresh_token).unwrap();
    let c = claims(&refreshed.access_token);
    assert_eq!((c["plan"].as_str(), c.get("seats")), (Some("pro"), None), "replaced, not merged: {c}");
    let requests = w.hook.requests.borrow().clone();
    assert_eq!(requests.len(), 2);
    let body: serde_json::Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "allow_refresh", "trigger": "refresh", "provider": "refresh", "session_id": r.user.session_id,
            "user": {"id": r.user.id, "email": "a@example.com", "name": "Ada", "roles": [], "email_verified": false},
        })
    );
    // The session keeps them: the next access token, hook or not, has them.
    w.hook.fail(SendError::Timeout);
    let p = refresh(&w, 1_600, &refreshed.refresh_token).unwrap_err().problem();
    assert_eq!((p.status, p.code), (503, "hook_unavailable"));
    // Failing closed rotated nothing: the same refresh token works once the hook is back.
    w.hook.answer(200, r#"{"allow": true, "claims": {"plan": "pro"}}"#);
    let again = refresh(&w, 1_700, &refreshed.refresh_token).unwrap();
    assert_eq!(claims(&again.access_token)["plan"], "pro");
    assert_eq!(w.events.kinds().iter().filter(|k| **k == "token_refreshed").count(), 2);
}

#[test]
fn with_hook_on_refresh_a_denial_ends_the_session_with_403() {
    let w = world_on_refresh("open");
    let r = signup(&w, "a@example.com").unwrap();
    w.hook.answer(200, r#"{"allow": false, "reason": "subscription ended"}"#);
    let p = refresh(&w, 1_500, &r.refresh_token).unwrap_err().problem();
    assert_eq!((p.status, p.code, p.detail.as_str()), (403, "signin_denied", "subscription ended"));
    assert_eq!(w.events.kinds(), vec!["user_created", "session_revoked"]);
    let revoked = w.events.last_json();
    assert_eq!(revoked["data"]["session_id"], r.user.session_id.as_deref().unwrap());
    // The session is over: the refresh token is dead even once the hook allows again.
    w.hook.answer(200, r#"{"allow": true}"#);
    let p = refresh(&w, 1_600, &r.refresh_token).unwrap_err().problem();
    assert_eq!((p.status, p.code), (401, "invalid_refresh_token"));
    let (deps, meta) = w.at(1_601);
    assert!(block_on(deps.me(&meta, Some(&r.access_token))).is_err(), "its access token no longer passes /me");
}

#[test]
fn with_hook_on_refresh_failing_open_keeps_the_claims_the_session_had() {
    let w = world_on_refresh("open");
    w.hook.answer(200, r#"{"allow": true, "claims": {"plan": "pro"}}"#);
    let r = signup(&w, "a@example.com").unwrap();
    w.hook.fail(SendError::Network("connection refused".into()));
    let refreshed = refresh(&w, 1_500, &r.refresh_token).unwrap();
    assert_eq!(claims(&refreshed.access_token)["plan"], "pro");
    assert!(w.hook.warnings.borrow().iter().any(|m| m.contains("failing open")));
}

#[test]
fn with_hook_on_refresh_a_spent_or_unknown_token_is_refused_without_asking_the_hook() {
    let w = world_on_refresh("closed");
    let r = signup(&w, "a@example.com").unwrap();
    refresh(&w, 1_500, &r.refresh_token).unwrap();
    let asked = w.hook.requests.borrow().len();
    // Reuse of the rotated token: the usual answer, the session revoked, no hook call.
    let p = refresh(&w, 1_600, &r.refresh_token).unwrap_err().problem();
    assert_eq!((p.status, p.code), (401, "invalid_refresh_token"));
    let p = refresh(&w, 1_601, "x".repeat(43).as_str()).unwrap_err().problem();
    assert_eq!((p.status, p.code), (401, "invalid_refresh_token"));
    assert_eq!(w.hook.requests.borrow().len(), asked);
}
