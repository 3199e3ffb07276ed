//! Request routing: the auth API under `/auth` and `/.well-known`, everything
//! else to the gateway. Handlers here only translate HTTP to a core flow call
//! and its result back to HTTP.

use std::rc::Rc;

use serde::Deserialize;
use web_sys::{Request, Response};
use worker::{Context, Env};

use crate::core::auth_routes::{self, Route};
use crate::core::config::Config;
use crate::core::cors;
use crate::core::error::Error;
use crate::core::flows::account::{LoginRequest, ProfileRequest, RefreshRequest, SignupRequest};
use crate::core::flows::admin::{ListQuery, UpdateUserRequest};
use crate::core::flows::key_rotation::discovery;
use crate::core::flows::magic_link::{MagicLinkVerifyRequest, MAGIC_LINK_ACCEPTED};
use crate::core::flows::mfa::{CodeRequest, MfaVerifyRequest};
use crate::core::flows::otp::OtpVerifyRequest;
use crate::core::flows::otp::OTP_ACCEPTED;
use crate::core::flows::passkeys::{
    LoginOptionsRequest, LoginVerifyRequest, RegisterOptionsRequest, RegisterVerifyRequest, RenameRequest,
};
use crate::core::flows::password::FORGOT_ACCEPTED;
use crate::core::flows::password::{ChangeRequest, ResetRequest};
use crate::core::flows::revocation::TokenForm;
use crate::core::flows::{EmailRequest, Meta, TokenRequest};
use crate::core::gateway::policy::{auth_api_path, normalise_path};
use crate::core::gateway::target::{invalid_url, RequestUrl};
use crate::core::rate_limit::Endpoint;
use crate::edge::error::EdgeResult;
use crate::edge::http::{self, access_token, auth_cookies, clear_cookies, refresh_cookie, sign_in_response, JsResult};
use crate::edge::passkeys::NativePasskeys;
use crate::edge::platform::{self, OsRandom};
use crate::edge::ports::{send_in_background, Mailing, Ports};
use crate::edge::{check_request_origin, config, oauth, proxy, ui};

/// Serves one request; never fails open.
pub async fn handle(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let result = match config(&env) {
        Err(e) => http::problem(&Error::Misconfigured(e.0)),
        Ok(cfg) => with_cors(req, env, ctx, cfg).await,
    };
    result.map_err(|e| worker::Error::JsError(format!("response construction failed: {e:?}")))
}

/// Answers CORS preflights at the edge and adds CORS headers for granted
/// origins, and `Vary: Origin` to every response; without `CORS_ORIGINS`
/// nothing is added.
async fn with_cors(req: Request, env: Env, ctx: Context, cfg: Rc<Config>) -> JsResult<Response> {
    if cfg.cors_origins.is_empty() {
        return route(req, env, ctx, cfg).await;
    }
    let origin = http::header(&req, "origin");
    let grant = cors::grant(origin.as_deref(), &cfg.cors_origins);
    if req.method() == "OPTIONS" {
        if let Some(requested) = http::header(&req, "access-control-request-method") {
            return preflight(&req, grant.as_ref(), &requested).and_then(|r| http::add_cors(r, None));
        }
    }
    let resp = route(req, env, ctx, cfg).await?;
    http::add_cors(resp, grant.as_ref())
}

fn preflight(req: &Request, grant: Option<&cors::Grant>, requested_method: &str) -> JsResult<Response> {
    let headers = cors::allowed_request_headers(http::header(req, "access-control-request-headers").as_deref());
    match (grant, headers) {
        (Some(g), Some(allow_headers)) if cors::method_allowed(requested_method) => {
            let mut extra = vec![
                ("access-control-allow-origin", g.allow_origin().to_string()),
                ("access-control-allow-methods", cors::ALLOWED_METHODS.to_string()),
                ("access-control-max-age", cors::PREFLIGHT_MAX_AGE_SECS.to_string()),
                ("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_string()),
            ];
            if !allow_headers.is_empty() {
                extra.push(("access-control-allow-headers", allow_headers));
            }
            if g.credentials() {
                extra.push(("access-control-allow-credentials", "true".to_string()));
            }
            http::empty(204, &extra)
        }
        _ => http::problem(&Error::forbidden("cors_refused", "this origin, method or header is not allowed")),
    }
}

async fn route(req: Request, env: Env, ctx: Context, cfg: Rc<Config>) -> JsResult<Response> {
    let url = match url::Url::parse(&req.url()) {
        Ok(u) => u,
        Err(_) => return http::problem(&invalid_url()),
    };
    let normalised = match normalise_path(url.path()) {
        Ok(p) => p,
        Err(e) => return http::problem(&e),
    };
    let Some(api_path) = auth_api_path(&normalised, &cfg.auth_prefix) else {
        return match RequestUrl::new(url.into()) {
            Some(url) => proxy::forward(req, &env, &ctx, &cfg, url, normalised).await,
            None => http::problem(&invalid_url()),
        };
    };
    match auth_api(&req, &env, &ctx, cfg, &url, &api_path).await {
        Ok(resp) => Ok(resp),
        Err(e) => http::problem(&e),
    }
}

fn meta(req: &Request, cfg: &Config, url: &url::Url) -> Meta {
    Meta {
        now: platform::now(),
        ip: http::header(req, "cf-connecting-ip"),
        user_agent: http::header(req, "user-agent").map(|ua| ua.chars().take(512).collect()),
        issuer: cfg.issuer_for(&http::request_origin(url)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Serves the auth API; `path` is the API's own name for the request path
/// (`/auth/...` whatever `AUTH_PREFIX` is, or `/.well-known/...`). Which
/// endpoint it is, and the 404 or 405 when none, comes from the route table
/// ([`auth_routes`]); this only translates each route to its flow call.
async fn auth_api(
    req: &Request,
    env: &Env,
    ctx: &Context,
    cfg: Rc<Config>,
    url: &url::Url,
    path: &str,
) -> Result<Response, Error> {
    let js = |r: JsResult<Response>| Ok(r.context("response")?);
    let method = req.method();
    let route = auth_routes::match_route(&method, path);
    let ports = match route {
        Ok(r) if r.replica_reads() => Ports::with_replica_reads(env, &cfg)?,
        _ => Ports::new(env, &cfg)?,
    };
    let deps = ports.deps(&cfg);
    let keys = &ports.keys;
    let meta = meta(req, &cfg, url);
    check_request_origin(&cfg, &http::request_origin(url));
    let rng = &mut OsRandom;
    // Counted before routing: a path the API does not have counts too.
    if let Some(endpoint) = auth_routes::ip_limit(path) {
        deps.throttle_ip(&meta, rng, endpoint).await?;
    }
    // Authorisation comes before the query or body is read: callers who are
    // not administrators learn nothing about what a valid request looks like.
    let admin = async || {
        let bearer = access_token(req, &cfg, url)?;
        deps.require_admin(&meta, bearer.as_deref()).await
    };

    // UI_ENABLED=false: the pages' paths do not exist (404 for any method).
    if !cfg.ui.enabled && auth_routes::is_ui_path(path) {
        return Err(Error::NotFound);
    }
    // No catch-all arm: a route added to the table does not compile until
    // it is served here.
    let route = route?;
    // A signed-in caller's token is checked before the body is read: no
    // valid token, 401 whatever the body (the flow then checks its session).
    if route.checks_token_first() {
        deps.check_bearer(&meta, access_token(req, &cfg, url)?.as_deref()).await?;
    }
    match route {
        Route::Jwks => js(http::json(200, &keys.jwks().await?, Some("public, max-age=300"), &[])),
        Route::OpenidConfiguration => {
            js(http::json(200, &discovery(&meta.issuer, &cfg), Some("public, max-age=300"), &[]))
        }
        Route::Signup => {
            let body: SignupRequest = http::read_json(req).await?;
            let resp = deps.signup(&meta, rng, body).await?;
            js(http::json(201, &resp.body(&cfg), None, &auth_cookies(&cfg, &resp, meta.now)))
        }
        Route::Login => {
            let body: LoginRequest = http::read_json(req).await?;
            let signed_in = deps.login(&meta, rng, body).await?;
            js(sign_in_response(&cfg, 200, &signed_in, meta.now))
        }
        Route::Refresh => {
            let body: Option<RefreshRequest> = http::read_optional_json(req).await?;
            let from_body = body.as_ref().and_then(|b| b.refresh_token.clone());
            let token = match from_body {
                Some(t) => t,
                None => match refresh_cookie(req, &cfg, url)? {
                    Some(t) => t,
                    None if body.is_none() => {
                        return Err(Error::InvalidJson(
                            "the request body is empty; expected {\"refresh_token\": \"...\"}".into(),
                        ))
                    }
                    None => return Err(Error::validation("validation_failed", "refresh_token: required")),
                },
            };
            let resp = deps.refresh(&meta, rng, Some(&token)).await?;
            js(http::json(200, &resp.body(&cfg), None, &auth_cookies(&cfg, &resp, meta.now)))
        }
        Route::Logout => {
            let body: RefreshRequest = http::read_optional_json(req).await?.unwrap_or_default();
            let bearer = access_token(req, &cfg, url)?;
            let refresh = match body.refresh_token {
                Some(t) => Some(t),
                None => refresh_cookie(req, &cfg, url)?,
            };
            deps.logout(&meta, rng, bearer.as_deref(), refresh.as_deref()).await?;
            js(http::empty(204, &clear_cookies(&cfg)))
        }
        Route::Introspect => {
            // The caller is admitted before the body is read.
            deps.admit_introspection(http::header(req, "authorization").as_deref())?;
            let form = TokenForm::parse(&http::read_oauth_form(req).await?)?;
            js(http::json(200, &deps.introspect(&meta, &form).await?, None, &[]))
        }
        Route::Revoke => {
            let form = TokenForm::parse(&http::read_oauth_form(req).await?)?;
            deps.revoke_token(&meta, rng, &form).await?;
            js(http::empty(200, &[]))
        }
        Route::Me => {
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.me_with_providers(&meta, bearer.as_deref()).await?, None, &[]))
        }
        Route::EditProfile => {
            let body: ProfileRequest = http::read_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.edit_profile_view(&meta, rng, bearer.as_deref(), body).await?, None, &[]))
        }
        Route::Sessions => {
            let bearer = access_token(req, &cfg, url)?;
            let sessions = deps.sessions(&meta, bearer.as_deref()).await?;
            js(http::json(200, &serde_json::json!({ "sessions": sessions }), None, &[]))
        }
        Route::RevokeOtherSessions => {
            let _: Option<Empty> = http::read_optional_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            let n = deps.revoke_other_sessions(&meta, rng, bearer.as_deref()).await?;
            js(http::json(200, &serde_json::json!({ "revoked": n }), None, &[]))
        }
        Route::RevokeSession { id } => {
            // No session id is this long: not worth a lookup, nor a credential check.
            if id.len() > MAX_SESSION_ID_LEN {
                return Err(Error::NotFound);
            }
            let bearer = access_token(req, &cfg, url)?;
            deps.revoke_own_session(&meta, rng, bearer.as_deref(), id).await?;
            js(http::empty(204, &[]))
        }
        Route::MagicLink => {
            let body: EmailRequest = http::read_json(req).await?;
            let to = deps.admit_email_request(&meta, rng, Endpoint::MagicLink, &body).await?;
            send_in_background(ctx, env, &cfg, meta, Mailing::MagicLink, to);
            js(http::json(200, &MAGIC_LINK_ACCEPTED, None, &[]))
        }
        Route::MagicLinkVerify => {
            let body: MagicLinkVerifyRequest = http::read_json(req).await?;
            let signed_in = deps.verify_magic_link(&meta, rng, body).await?;
            js(sign_in_response(&cfg, 200, &signed_in, meta.now))
        }
        // Mail scanners fetch links before people click them: opening the
        // link must not use it up. Only the POST above consumes a token.
        Route::MagicLinkLanding => js(http::json(200, &MAGIC_LINK_LANDING, None, &[])),
        Route::Otp => {
            let body: EmailRequest = http::read_json(req).await?;
            let to = deps.admit_email_request(&meta, rng, Endpoint::Otp, &body).await?;
            send_in_background(ctx, env, &cfg, meta, Mailing::Otp, to);
            js(http::json(200, &OTP_ACCEPTED, None, &[]))
        }
        Route::OtpVerify => {
            let body: OtpVerifyRequest = http::read_json(req).await?;
            let signed_in = deps.verify_otp(&meta, rng, body).await?;
            js(sign_in_response(&cfg, 200, &signed_in, meta.now))
        }
        Route::PasswordForgot => {
            let body: EmailRequest = http::read_json(req).await?;
            let to = deps.admit_email_request(&meta, rng, Endpoint::PasswordForgot, &body).await?;
            send_in_background(ctx, env, &cfg, meta, Mailing::PasswordReset, to);
            js(http::json(200, &FORGOT_ACCEPTED, None, &[]))
        }
        Route::PasswordReset => {
            let body: ResetRequest = http::read_json(req).await?;
            js(http::json(200, &deps.reset_password(&meta, rng, body).await?, None, &[]))
        }
        Route::PasswordChange => {
            let body: ChangeRequest = http::read_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.change_password(&meta, rng, bearer.as_deref(), body).await?, None, &[]))
        }
        Route::EmailVerifyRequest => {
            let _: Option<Empty> = http::read_optional_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.request_email_verification(&meta, rng, bearer.as_deref()).await?, None, &[]))
        }
        Route::EmailVerify => {
            let body: TokenRequest = http::read_json(req).await?;
            // Signed in as the account (bearer or access cookie): its holder
            // confirms it; otherwise following the link takes it over.
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.verify_email(&meta, rng, body, bearer.as_deref()).await?, None, &[]))
        }
        Route::MfaTotpEnroll => {
            let _: Option<Empty> = http::read_optional_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.enroll_totp(&meta, rng, bearer.as_deref()).await?, None, &[]))
        }
        Route::MfaTotpConfirm => {
            let body: CodeRequest = http::read_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.confirm_totp(&meta, rng, bearer.as_deref(), body).await?, None, &[]))
        }
        Route::MfaTotpDisable => {
            // The code is optional: a sign-in of the last five minutes needs none.
            let body: CodeRequest = http::read_optional_json(req).await?.unwrap_or_default();
            let bearer = access_token(req, &cfg, url)?;
            deps.disable_totp(&meta, rng, bearer.as_deref(), body).await?;
            js(http::empty(204, &[]))
        }
        Route::MfaBackupCodes => {
            let body: CodeRequest = http::read_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.regenerate_backup_codes(&meta, rng, bearer.as_deref(), body).await?, None, &[]))
        }
        Route::MfaVerify => {
            let body: MfaVerifyRequest = http::read_json(req).await?;
            let resp = deps.verify_mfa(&meta, rng, body).await?;
            js(http::json(200, &resp.body(&cfg), None, &auth_cookies(&cfg, &resp, meta.now)))
        }
        Route::Passkeys => {
            let bearer = access_token(req, &cfg, url)?;
            let passkeys = deps.list_passkeys(&meta, bearer.as_deref()).await?;
            js(http::json(200, &serde_json::json!({ "passkeys": passkeys }), None, &[]))
        }
        Route::PasskeyRegisterOptions => {
            let body: RegisterOptionsRequest = http::read_optional_json(req).await?.unwrap_or_default();
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.passkey_register_options(&meta, rng, bearer.as_deref(), body).await?, None, &[]))
        }
        Route::PasskeyRegisterVerify => {
            let body: RegisterVerifyRequest = http::read_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(
                201,
                &deps.passkey_register_verify(&meta, rng, &NativePasskeys, bearer.as_deref(), body).await?,
                None,
                &[],
            ))
        }
        Route::PasskeyRename { id } => {
            let body: RenameRequest = http::read_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.rename_passkey(&meta, bearer.as_deref(), id, body).await?, None, &[]))
        }
        Route::PasskeyRemove { id } => {
            let _: Option<Empty> = http::read_optional_json(req).await?;
            let bearer = access_token(req, &cfg, url)?;
            deps.remove_passkey(&meta, rng, bearer.as_deref(), id).await?;
            js(http::empty(204, &[]))
        }
        Route::PasskeyLoginOptions => {
            let body: LoginOptionsRequest = http::read_optional_json(req).await?.unwrap_or_default();
            js(http::json(200, &deps.passkey_login_options(&meta, rng, body).await?, None, &[]))
        }
        Route::PasskeyLoginVerify => {
            let body: LoginVerifyRequest = http::read_json(req).await?;
            let signed_in = deps.passkey_login_verify(&meta, rng, &NativePasskeys, body).await?;
            js(sign_in_response(&cfg, 200, &signed_in, meta.now))
        }
        Route::AdminRotateKeys => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            // This isolate signs with the new key from now on (the flow tells
            // the key ring, before emitting the event); the others pick it up
            // within KEY_CACHE_TTL.
            let rotation = deps.admin_rotate_keys(&meta, rng, &admin).await?;
            js(http::json(200, &rotation, None, &[]))
        }
        Route::AdminRetireKey { kid } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            // This isolate stops counting on the key (its tokens, cached or
            // not, and the assertions it signed) from its next request — the
            // flow invalidates the key ring before it emits the event, so a
            // failing queue cannot skip that; the others within KEY_CACHE_TTL.
            let retirement = deps.admin_retire_key(&meta, rng, &admin, kid).await?;
            js(http::json(200, &retirement, None, &[]))
        }
        Route::Audit => {
            let bearer = access_token(req, &cfg, url)?;
            js(http::json(200, &deps.own_audit(&meta, rng, bearer.as_deref(), url.query()).await?, None, &[]))
        }
        Route::AdminAudit => {
            let admin = admin().await?;
            js(http::json(200, &deps.admin_audit(&meta, rng, &admin, url.query()).await?, None, &[]))
        }
        Route::AdminListUsers => {
            let admin = admin().await?;
            let q = ListQuery::parse(url.query())?;
            js(http::json(200, &deps.admin_list_users(&admin, q).await?, None, &[]))
        }
        Route::AdminGetUser { id } => {
            let admin = admin().await?;
            js(http::json(200, &deps.admin_get_user(&admin, id).await?, None, &[]))
        }
        Route::AdminUpdateUser { id } => {
            let admin = admin().await?;
            let body: UpdateUserRequest = http::read_json(req).await?;
            js(http::json(200, &deps.admin_update_user(&meta, rng, &admin, id, body).await?, None, &[]))
        }
        Route::AdminDeleteUser { id } => {
            let admin = admin().await?;
            deps.admin_delete_user(&meta, rng, &admin, id).await?;
            js(http::empty(204, &[]))
        }
        Route::AdminBanUser { id } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            js(http::json(200, &deps.admin_set_banned(&meta, rng, &admin, id, true).await?, None, &[]))
        }
        Route::AdminUnbanUser { id } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            js(http::json(200, &deps.admin_set_banned(&meta, rng, &admin, id, false).await?, None, &[]))
        }
        Route::AdminAddRole { id, role } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            js(http::json(200, &deps.admin_set_role(&meta, rng, &admin, id, role, true).await?, None, &[]))
        }
        Route::AdminRemoveRole { id, role } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            js(http::json(200, &deps.admin_set_role(&meta, rng, &admin, id, role, false).await?, None, &[]))
        }
        Route::AdminResetMfa { id } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            deps.admin_reset_mfa(&meta, rng, &admin, id).await?;
            js(http::empty(204, &[]))
        }
        Route::AdminRevokeSessions { id } => {
            let admin = admin().await?;
            let _: Option<Empty> = http::read_optional_json(req).await?;
            js(http::json(200, &deps.admin_revoke_sessions(&meta, rng, &admin, id).await?, None, &[]))
        }
        Route::OauthExchange => oauth::exchange(req, &deps, &meta, &cfg).await,
        Route::OauthAuthorize { provider } => oauth::authorize(&deps, &meta, url, provider).await,
        Route::OauthLink { provider } => oauth::link(req, &deps, &meta, &cfg, url, provider).await,
        Route::OauthCallback { provider } => oauth::callback(req, &deps, &meta, &cfg, url, provider).await,
        Route::OauthUnlink { provider } => oauth::unlink(req, &deps, &meta, &cfg, url, provider).await,
        Route::UiLoginPage
        | Route::UiLogin
        | Route::UiSignupPage
        | Route::UiSignup
        | Route::UiMagicLinkPage
        | Route::UiMagicLink
        | Route::UiOtpPage
        | Route::UiOtp
        | Route::UiForgotPage
        | Route::UiForgot
        | Route::UiResetPage
        | Route::UiReset
        | Route::UiVerifyEmailPage
        | Route::UiVerifyEmail
        | Route::UiMfaPage
        | Route::UiMfa
        | Route::UiAccountPage
        | Route::UiAccount
        | Route::UiPasskeyScript => {
            let page = ui::Ui { req, env, ctx, cfg: &cfg, deps: &deps, meta: &meta, url };
            page.serve(route).await
        }
    }
}

/// Longest session id `DELETE /auth/sessions/{id}` looks up (ids are UUIDs).
const MAX_SESSION_ID_LEN: usize = 64;

/// What `GET /auth/magic-link/verify` (a link opened in a browser or
/// prefetched by a mail scanner) answers, without touching the token.
const MAGIC_LINK_LANDING: crate::core::flows::Accepted = crate::core::flows::Accepted {
    message: "opening this link does not sign in or use it up: the app that asked for it signs in by \
              POSTing {\"token\": ...} to /auth/magic-link/verify",
};
