//! The hosted pages at the edge (`/auth/ui/…`, see [`crate::core::ui`]):
//! each handler reads the request (query, posted form, cookies), calls the
//! same flow as the JSON endpoint, and answers with a page — or, once signed
//! in, a 303 to the return target with the session cookies (cookie mode) or
//! a one-time exchange code (token mode).
//!
//! Every POST passes [`check_csrf`] first, sign-in forms included (login
//! CSRF). A signed-in page (the account page, an email verification) reads
//! the access cookie and, when it no longer authenticates, renews it with
//! the refresh cookie, as a client would. Pages are never on the gateway's
//! hot path: they live under `AUTH_PREFIX`, which `proxy::fast_path` hands
//! to the router.

use std::rc::Rc;

use web_sys::{Request, Response};
use worker::{Context, Env};

use crate::core::auth_routes::Route;
use crate::core::config::Config;
use crate::core::error::{Error, Problem, BARE_CHALLENGE};
use crate::core::flows::account::{LoginRequest, ProfileRequest, SignupRequest};
use crate::core::flows::magic_link::{MagicLinkVerifyRequest, MAGIC_LINK_ACCEPTED};
use crate::core::flows::mfa::{CodeRequest, MfaVerifyRequest};
use crate::core::flows::otp::{OtpVerifyRequest, OTP_ACCEPTED};
use crate::core::flows::passkeys::{
    AuthenticationCredential, LoginVerifyRequest, RegisterVerifyRequest, RegistrationCredential, RenameRequest,
};
use crate::core::flows::password::{ChangeRequest, ResetRequest, FORGOT_ACCEPTED};
use crate::core::flows::{Deps, EmailRequest, Meta, SignIn, TokenRequest};
use crate::core::gateway::credential::{ACCESS_COOKIE, REFRESH_COOKIE};
use crate::core::locale::Locale;
use crate::core::oauth::CodeChallenge;
use crate::core::rate_limit::Endpoint;
use crate::core::ui::forms::{
    self, check_csrf, Form, PostFacts, CHALLENGE_FIELD, CSRF_COOKIE, CSRF_FIELD, REDIRECT_FIELD,
};
use crate::core::ui::html::Html;
use crate::core::ui::pages::{self, Account, Notice, Passkeys, Provider, TwoStep};
use crate::core::ui::{
    ScriptUse, LOGIN_OPTIONS_PATH, PASSKEY_SCRIPT, PASSKEY_SCRIPT_CACHE, REGISTER_OPTIONS_PATH, UI_PATH,
};
use crate::edge::d1::D1Store;
use crate::edge::error::EdgeResult;
use crate::edge::http::{self, auth_cookies, clear_cookies, cookie};
use crate::edge::keyring::EdgeKeys;
use crate::edge::passkeys::NativePasskeys;
use crate::edge::platform::OsRandom;
use crate::edge::ports::{send_in_background, Mailing};
use crate::edge::queue::QueueSink;

type EdgeDeps<'a, 'e> = Deps<'a, D1Store, QueueSink<'e>, EdgeKeys<'e>>;

/// One request to a hosted page, with what its handler needs.
pub struct Ui<'a, 'e> {
    /// The request.
    pub req: &'a Request,
    /// The Worker's bindings (for background email sends).
    pub env: &'a Env,
    /// The request's context (`waitUntil`).
    pub ctx: &'a Context,
    /// The configuration.
    pub cfg: &'a Rc<Config>,
    /// The flows.
    pub deps: &'a EdgeDeps<'a, 'e>,
    /// The request's facts.
    pub meta: &'a Meta,
    /// The request URL.
    pub url: &'a url::Url,
}

/// What a handler answers before the common headers are added.
enum Answer {
    /// A page, with its status, any further headers (session cookies), and
    /// the options endpoint of the passkey script it runs, if it runs it
    /// (its CSP then allows the script and that endpoint).
    Page(u16, Html, Vec<(&'static str, String)>, Option<&'static str>),
    /// A 303 to `location`, with any further headers.
    SeeOther(String, Vec<(&'static str, String)>),
}

/// Where a sign-in through the pages returns to.
struct Return {
    /// The checked target.
    target: String,
    /// The app's challenge the exchange code is bound to.
    challenge: Option<CodeChallenge>,
    /// Whether the sign-in hands the app a one-time code: token mode, or
    /// cookie mode with body tokens returning to an app. Returning to the
    /// pages' own account page, the cookies carry the session and no code
    /// is made — nor is a challenge needed.
    issues_code: bool,
}

/// The CSRF token of this request's pages: the cookie's, or a fresh one
/// (set on the answer); and the app's `code_challenge` the pages carry on
/// (the query's or the form's, as the browser sent it; checked before a
/// sign-in by [`forms::code_challenge`]).
#[derive(Clone)]
struct Csrf {
    token: String,
    fresh: bool,
    challenge: Option<String>,
}

impl<'a, 'e> Ui<'a, 'e> {
    /// Serves hosted page `route` (a `Ui*` route).
    pub async fn serve(&self, route: Route<'_>) -> Result<Response, Error> {
        if route == Route::UiPasskeyScript {
            // Static: no CSRF cookie, no session, cached (its URL is versioned).
            return Ok(http::script(PASSKEY_SCRIPT, PASSKEY_SCRIPT_CACHE).context("script")?);
        }
        // Carried only when well formed: a page never echoes anything else.
        let challenge = self.query(CHALLENGE_FIELD).filter(|c| CodeChallenge::parse(c).is_some());
        let csrf = match cookie(self.req, CSRF_COOKIE).filter(|c| forms::is_csrf_token(c)) {
            Some(token) => Csrf { token, fresh: false, challenge },
            None => Csrf { token: forms::new_csrf_token(&mut OsRandom), fresh: true, challenge },
        };
        let answer = match route {
            Route::UiLoginPage | Route::UiSignupPage | Route::UiMagicLinkPage | Route::UiOtpPage
                if !self.can_return() =>
            {
                // Token mode without REDIRECT_ALLOWLIST: say so before anyone types.
                Err(forms::nowhere_to_return())
            }
            Route::UiLoginPage | Route::UiSignupPage | Route::UiMagicLinkPage | Route::UiOtpPage => {
                // Token mode: the app binds the code to its browser (said before anyone types).
                // (A target refused here is refused again when the form is posted.)
                let issues_code = self.page_target().map_or(self.cfg.tokens_in_body(), |t| self.issues_code(&t));
                match forms::code_challenge(self.query(CHALLENGE_FIELD).as_deref(), issues_code) {
                    Err(e) => Err(e),
                    Ok(_) => self.sign_in_page(route, &csrf).await,
                }
            }
            Route::UiForgotPage => self.page(&csrf, 200, |ctx| pages::forgot(ctx, None, "")),
            Route::UiResetPage => {
                let token = self.query("token").unwrap_or_default();
                let min = self.cfg.password_policy.min_chars;
                self.page(&csrf, 200, |ctx| pages::reset(ctx, None, &token, min))
            }
            Route::UiVerifyEmailPage => {
                let token = self.query("token").unwrap_or_default();
                let signed_in = self.may_be_signed_in().await?;
                self.page(&csrf, 200, |ctx| pages::verify_email(ctx, None, &token, signed_in))
            }
            Route::UiMfaPage => self.page(&csrf, 200, |ctx| {
                let n = Notice::Info(
                    "This step follows your password, link or code when your account has two-step verification on."
                        .into(),
                );
                pages::message(ctx, "Two-step verification", Some(&n), &[("login", "Sign in")])
            }),
            Route::UiAccountPage => self.account_page(&csrf, None).await,
            Route::UiLogin
            | Route::UiSignup
            | Route::UiMagicLink
            | Route::UiOtp
            | Route::UiMfa
            | Route::UiForgot
            | Route::UiReset
            | Route::UiVerifyEmail
            | Route::UiAccount => self.post(route, &csrf).await,
            _ => Err(Error::NotFound),
        };
        let answer = match answer {
            Ok(a) => a,
            // A failure outside any form (a bad redirect_to, a dependency):
            // a page saying so, with the problem's status.
            Err(e) => {
                self.log(&e);
                let p = e.problem();
                let n = Notice::Error(p.detail.clone());
                let render = |ctx: &pages::Context<'_>| pages::message(ctx, p.title, Some(&n), &[("login", "Sign in")]);
                self.page_with(&csrf, p.status, None, render, problem_headers(&p))
            }
        };
        self.respond(answer, &csrf)
    }

    /// The pages that start a sign-in.
    async fn sign_in_page(&self, route: Route<'_>, csrf: &Csrf) -> Result<Answer, Error> {
        match route {
            Route::UiLoginPage => self.login_page(csrf, None, "", 200),
            Route::UiSignupPage => self.signup_page(csrf, None, "", "", 200),
            Route::UiMagicLinkPage => self.magic_link_page(csrf).await,
            _ => {
                let email = self.query("email").unwrap_or_default();
                self.page(csrf, 200, |ctx| pages::otp(ctx, None, &email))
            }
        }
    }

    /// Adds the common headers (CSP, a fresh CSRF cookie) and renders.
    fn respond(&self, answer: Answer, csrf: &Csrf) -> Result<Response, Error> {
        let mut headers: Vec<(&str, String)> = Vec::new();
        if csrf.fresh {
            headers.push(csrf_cookie(&csrf.token));
        }
        let resp = match answer {
            Answer::Page(status, html, extra, script) => {
                let origin = http::request_origin(self.url);
                let script = script.map(|options_path| ScriptUse {
                    origin: &origin,
                    auth_prefix: &self.cfg.auth_prefix,
                    options_path,
                });
                headers.extend(self.cfg.ui.headers(script.as_ref()));
                headers.extend(extra);
                // A page answering 401 (a wrong password, a dead link) names
                // its scheme too (RFC 9110 §15.5.2).
                if status == 401 && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("www-authenticate")) {
                    headers.push(("www-authenticate", BARE_CHALLENGE.to_string()));
                }
                http::html(status, html.as_str(), &headers)
            }
            Answer::SeeOther(location, extra) => {
                headers.push(("location", location));
                headers.extend(extra);
                http::empty(303, &headers)
            }
        };
        Ok(resp.context("page")?)
    }

    /// The browser's language (`Accept-Language`), normalised, for what a
    /// page asks the flows to do: a language it does not parse is none.
    fn browser_locale(&self) -> Option<String> {
        http::header(self.req, "accept-language").and_then(|h| Locale::from_accept_language(&h)).map(|l| l.to_string())
    }

    fn log(&self, e: &Error) {
        if e.is_server_side() {
            worker::console_error!("portcullis.error hosted page: {e}");
        }
    }

    /// A query parameter.
    fn query(&self, name: &str) -> Option<String> {
        self.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// Whether a sign-in through the pages has somewhere to return to: cookie
    /// mode (the account page at least), or an allowlist.
    /// Whether a sign-in returning to `target` ends in a one-time code
    /// ([`Return::issues_code`]), and so needs the app's challenge: codes
    /// are issued (token mode, or body tokens), and the target is an app,
    /// not the pages' own account page.
    fn issues_code(&self, target: &str) -> bool {
        self.cfg.tokens_in_body() && target != self.account_url()
    }

    /// The return target of the sign-in page this request asks for (its
    /// `redirect_to`, checked).
    fn page_target(&self) -> Result<String, Error> {
        forms::return_target(
            self.query(REDIRECT_FIELD).as_deref(),
            &self.cfg.oauth.redirect_allowlist,
            &self.account_url(),
            self.cfg.cookie_mode,
        )
    }

    fn can_return(&self) -> bool {
        self.cfg.cookie_mode || self.cfg.oauth.redirect_allowlist.default_target().is_some()
    }

    /// The public URL of the account page, on the request's own origin.
    fn account_url(&self) -> String {
        format!("{}{}{UI_PATH}/account", http::request_origin(self.url), self.cfg.auth_prefix)
    }

    /// The `redirect_to` a GET page carries on: the query's, once checked
    /// (400 `invalid_redirect` otherwise).
    fn asked_target(&self) -> Result<Option<String>, Error> {
        match self.query(REDIRECT_FIELD).filter(|r| !r.is_empty()) {
            None => Ok(None),
            Some(r) => {
                forms::return_target(
                    Some(&r),
                    &self.cfg.oauth.redirect_allowlist,
                    &self.account_url(),
                    self.cfg.cookie_mode,
                )?;
                Ok(Some(r))
            }
        }
    }

    /// Renders a page with the request's context; `redirect_to` is the
    /// query's (checked).
    fn page(
        &self,
        csrf: &Csrf,
        status: u16,
        render: impl FnOnce(&pages::Context<'_>) -> Html,
    ) -> Result<Answer, Error> {
        let target = self.asked_target()?;
        Ok(self.page_with(csrf, status, target.as_deref(), render, Vec::new()))
    }

    fn page_with(
        &self,
        csrf: &Csrf,
        status: u16,
        redirect_to: Option<&str>,
        render: impl FnOnce(&pages::Context<'_>) -> Html,
        extra: Vec<(&'static str, String)>,
    ) -> Answer {
        let ctx = pages::Context {
            ui: &self.cfg.ui,
            auth_prefix: &self.cfg.auth_prefix,
            csrf: &csrf.token,
            redirect_to,
            code_challenge: csrf.challenge.as_deref(),
        };
        Answer::Page(status, render(&ctx), extra, None)
    }

    /// Whether passkeys work on this page: set up (`RP_ID`), and the page's
    /// origin one of `RP_ORIGINS` (the browser's ceremony names it).
    fn passkeys_here(&self) -> bool {
        let origin = http::request_origin(self.url);
        self.cfg.relying_party.as_ref().is_some_and(|rp| rp.origins.contains(&origin))
    }

    fn login_page(&self, csrf: &Csrf, n: Option<&Notice>, email: &str, status: u16) -> Result<Answer, Error> {
        let target = self.asked_target()?;
        Ok(self.login_with(csrf, n, email, status, target.as_deref()))
    }

    fn login_with(&self, csrf: &Csrf, n: Option<&Notice>, email: &str, status: u16, target: Option<&str>) -> Answer {
        let allowlist = &self.cfg.oauth.redirect_allowlist;
        // An OAuth sign-in returns to the page's target only if it is an
        // allowlisted one (not the account page); else to its own default.
        let oauth_target = target.filter(|t| allowlist.check(t).is_some());
        let providers: Vec<Provider<'_>> =
            self.cfg.oauth.providers.iter().map(|p| Provider { id: &p.id, redirect_to: oauth_target }).collect();
        let passkeys = self.passkeys_here();
        let page =
            self.page_with(csrf, status, target, |ctx| pages::login(ctx, n, email, &providers, passkeys), Vec::new());
        if passkeys {
            with_script(page, LOGIN_OPTIONS_PATH)
        } else {
            page
        }
    }

    fn signup_page(
        &self,
        csrf: &Csrf,
        n: Option<&Notice>,
        email: &str,
        name: &str,
        status: u16,
    ) -> Result<Answer, Error> {
        let min = self.cfg.password_policy.min_chars;
        self.page(csrf, status, |ctx| pages::signup(ctx, n, email, name, min))
    }

    async fn magic_link_page(&self, csrf: &Csrf) -> Result<Answer, Error> {
        let token = self.query("token").unwrap_or_default();
        let account = self.deps.magic_link_account(self.meta, &token).await?;
        let status = if account.is_some() { 200 } else { Error::invalid_link().problem().status };
        self.page(csrf, status, |ctx| pages::magic_link(ctx, None, &token, account.as_deref()))
    }

    /// Whether a POST from this browser would be signed in (see
    /// [`Self::signed_in`]), without renewing anything (a GET): a live
    /// access cookie, or a refresh cookie to renew one with.
    async fn may_be_signed_in(&self) -> Result<bool, Error> {
        if !self.cfg.cookie_mode {
            return Ok(false);
        }
        Ok(self.live_access().await?.is_some() || cookie(self.req, REFRESH_COOKIE).is_some())
    }

    /// Whether the access cookie still authenticates: `Some(access)` if so.
    async fn live_access(&self) -> Result<Option<String>, Error> {
        let Some(access) = cookie(self.req, ACCESS_COOKIE) else { return Ok(None) };
        match self.deps.authenticate(self.meta, Some(&access)).await {
            Ok(_) => Ok(Some(access)),
            Err(Error::InvalidToken(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A signed-in caller's access token, for a POST (CSRF-checked): the
    /// access cookie if it still authenticates, else one renewed with the
    /// refresh cookie (whose new cookies are returned to set); `None` when
    /// neither works. Never for a GET (see [`pages::renew`]).
    async fn signed_in(&self) -> Result<Option<(String, Vec<(&'static str, String)>)>, Error> {
        if !self.cfg.cookie_mode {
            return Ok(None);
        }
        if let Some(access) = self.live_access().await? {
            return Ok(Some((access, Vec::new())));
        }
        let Some(refresh) = cookie(self.req, REFRESH_COOKIE) else { return Ok(None) };
        match self.deps.refresh(self.meta, &mut OsRandom, Some(&refresh)).await {
            Ok(auth) => Ok(Some((auth.access_token.clone(), auth_cookies(self.cfg, &auth, self.meta.now)))),
            Err(Error::InvalidRefreshToken | Error::Forbidden { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn account_page(&self, csrf: &Csrf, n: Option<Notice>) -> Result<Answer, Error> {
        if !self.cfg.cookie_mode {
            let n = Notice::Error(
                "The account page needs cookie mode (COOKIE_MODE=true): this gateway hands sessions to the app instead."
                    .into(),
            );
            return self.page(csrf, 404, |ctx| pages::message(ctx, "Your account", Some(&n), &[("login", "Sign in")]));
        }
        // A GET only reads: an expired access cookie gets a Continue button
        // that renews by POST (pages::renew), never a refresh here.
        match self.live_access().await? {
            Some(access) => self.account_view(csrf, 200, n.as_ref(), &access, TwoStep::Idle, Vec::new()).await,
            None if cookie(self.req, REFRESH_COOKIE).is_some() => {
                Ok(self.page_with(csrf, 200, None, pages::renew, Vec::new()))
            }
            None => Ok(self.to_login()),
        }
    }

    /// To the login page, returning to the account page afterwards.
    fn to_login(&self) -> Answer {
        Answer::SeeOther(self.login_url(), Vec::new())
    }

    /// The login page returning to the account page.
    fn login_url(&self) -> String {
        let mut login = format!("{}{UI_PATH}/login?redirect_to=", self.cfg.auth_prefix);
        login.extend(url::form_urlencoded::byte_serialize(self.account_url().as_bytes()));
        login
    }

    async fn account_view(
        &self,
        csrf: &Csrf,
        status: u16,
        n: Option<&Notice>,
        access: &str,
        two_step: TwoStep<'_>,
        cookies: Vec<(&'static str, String)>,
    ) -> Result<Answer, Error> {
        let me = self.deps.me_with_providers(self.meta, Some(access)).await?;
        let sessions = self.deps.sessions(self.meta, Some(access)).await?;
        let list = match self.cfg.relying_party {
            Some(_) => Some(self.deps.list_passkeys(self.meta, Some(access)).await?),
            None => None,
        };
        let sign_in_again = self.login_url();
        // The rule of the registration options and the TOTP enrolment
        // (which still decide).
        let recent = crate::core::mfa::is_recent_sign_in(crate::core::time::UnixTime(me.auth_time), self.meta.now);
        let passkeys = list.as_deref().map(|list| Passkeys {
            list,
            can_add: self.passkeys_here(),
            recent,
            sign_in_again: &sign_in_again,
        });
        let a = Account {
            email: &me.user.email,
            name: me.user.name.as_deref(),
            locale: me.locale.as_deref(),
            email_verified: me.user.email_verified,
            sessions: &sessions,
            mfa: me.mfa,
            two_step,
            recent,
            sign_in_again: &sign_in_again,
            passkeys,
        };
        let page = self.page_with(csrf, status, None, |ctx| pages::account(ctx, n, &a), cookies);
        if passkeys.is_some_and(|p| p.runs_script()) {
            Ok(with_script(page, REGISTER_OPTIONS_PATH))
        } else {
            Ok(page)
        }
    }

    /// Every POST: the CSRF check, then the form's handler.
    async fn post(&self, route: Route<'_>, csrf: &Csrf) -> Result<Answer, Error> {
        let form = http::read_form(self.req).await?;
        let origin = http::header(self.req, "origin");
        let fetch_site = http::header(self.req, "sec-fetch-site");
        let own_origin = http::request_origin(self.url);
        let sent = cookie(self.req, CSRF_COOKIE);
        let facts = PostFacts {
            own_origin: &own_origin,
            origin: origin.as_deref(),
            fetch_site: fetch_site.as_deref(),
            cookie: sent.as_deref(),
            field: form.get(CSRF_FIELD),
        };
        let carried = form.get(CHALLENGE_FIELD).filter(|c| CodeChallenge::parse(c).is_some());
        let csrf = &Csrf { challenge: carried.map(str::to_string), ..csrf.clone() };
        if let Err(e) = check_csrf(&facts) {
            let p = e.problem();
            let n = Notice::Error(p.detail.clone());
            return Ok(self.page_with(
                csrf,
                p.status,
                None,
                |ctx| pages::message(ctx, "Form refused", Some(&n), &[("login", "Sign in")]),
                Vec::new(),
            ));
        }
        match route {
            Route::UiLogin => self.post_login(csrf, &form).await,
            Route::UiSignup => self.post_signup(csrf, &form).await,
            Route::UiMagicLink => self.post_magic_link(csrf, &form).await,
            Route::UiOtp => self.post_otp(csrf, &form).await,
            Route::UiMfa => self.post_mfa(csrf, &form).await,
            Route::UiForgot => self.post_forgot(csrf, &form).await,
            Route::UiReset => self.post_reset(csrf, &form).await,
            Route::UiVerifyEmail => self.post_verify_email(csrf, &form).await,
            Route::UiAccount => self.post_account(csrf, &form).await,
            _ => Err(Error::NotFound),
        }
    }

    /// The posted `redirect_to`, checked, and where a sign-in returns to:
    /// the target and the app's `code_challenge` its code is bound to
    /// (decided before the sign-in: a bad target or challenge opens no
    /// session).
    fn posted_target(&self, form: &Form) -> Result<(Option<String>, Return), Error> {
        let asked = form.optional(REDIRECT_FIELD);
        let target = forms::return_target(
            asked.as_deref(),
            &self.cfg.oauth.redirect_allowlist,
            &self.account_url(),
            self.cfg.cookie_mode,
        )?;
        let issues_code = self.issues_code(&target);
        let challenge = forms::code_challenge(form.get(CHALLENGE_FIELD), issues_code)?;
        Ok((asked, Return { target, challenge, issues_code }))
    }

    /// The end of every sign-in through the pages, the one place that reads
    /// a sign-in flow's result: signed in, 303 to `target` with the session
    /// cookies (cookie mode) or a one-time exchange code; refused, the page
    /// `again` renders with the problem inline, its status and `Retry-After`.
    /// A first step answering with the second step renders `pages::mfa`,
    /// whose form carries the `mfa_token` (and `redirect_to`) to
    /// `POST /auth/ui/mfa`.
    async fn finish(
        &self,
        csrf: &Csrf,
        asked: Option<&str>,
        result: Result<SignIn, Error>,
        to: &Return,
        again: impl FnOnce(u16, &Notice) -> Answer,
    ) -> Result<Answer, Error> {
        match result {
            Ok(SignIn::SecondStep(step)) => {
                let methods: Vec<&str> = step.methods.iter().map(|m| m.as_str()).collect();
                Ok(self.page_with(csrf, 200, asked, |ctx| pages::mfa(ctx, None, &step.mfa_token, &methods), Vec::new()))
            }
            Ok(SignIn::Complete(auth)) => {
                let location = match to.issues_code {
                    true => {
                        self.deps
                            .signed_in_location(self.meta, &mut OsRandom, &to.target, &auth, to.challenge.as_ref())
                            .await?
                    }
                    false => to.target.clone(),
                };
                Ok(Answer::SeeOther(location, auth_cookies(self.cfg, &auth, self.meta.now)))
            }
            Err(e) => {
                let (status, n, extra) = self.failure(&e);
                Ok(with_headers(again(status, &n), extra))
            }
        }
    }

    /// The problem `e` as a notice, its status, and its headers ([`problem_headers`]).
    fn failure(&self, e: &Error) -> (u16, Notice, Vec<(&'static str, String)>) {
        self.log(e);
        let p = e.problem();
        let extra = problem_headers(&p);
        (p.status, Notice::Error(p.detail), extra)
    }

    async fn post_login(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let (asked, to) = self.posted_target(form)?;
        let email = form.text("email");
        if form.get("intent") == Some("magic_link") {
            return self.send_email(csrf, &email, Mailing::MagicLink, asked.as_deref()).await;
        }
        if form.get("intent") == Some("passkey") {
            // The script's post: the flow of POST /auth/passkeys/login/verify.
            let result =
                match crate::core::body::parse_json::<AuthenticationCredential>(form.text("credential").as_bytes()) {
                    Ok(credential) => {
                        let body = LoginVerifyRequest { challenge_id: form.text("challenge_id"), credential };
                        self.deps.passkey_login_verify(self.meta, &mut OsRandom, &NativePasskeys, body).await
                    }
                    Err(e) => Err(e),
                };
            return self
                .finish(csrf, asked.as_deref(), result, &to, |status, n| {
                    self.login_with(csrf, Some(n), &email, status, asked.as_deref())
                })
                .await;
        }
        let body = LoginRequest { email: email.clone(), password: form.text("password") };
        let result = self.deps.login(self.meta, &mut OsRandom, body).await;
        self.finish(csrf, asked.as_deref(), result, &to, |status, n| {
            self.login_with(csrf, Some(n), &email, status, asked.as_deref())
        })
        .await
    }

    /// Admits an emailed link or code (or reset) and sends it in the
    /// background, answering the same whatever the address.
    async fn send_email(&self, csrf: &Csrf, email: &str, what: Mailing, asked: Option<&str>) -> Result<Answer, Error> {
        let (endpoint, accepted) = match what {
            Mailing::MagicLink => (Endpoint::MagicLink, MAGIC_LINK_ACCEPTED),
            Mailing::Otp => (Endpoint::Otp, OTP_ACCEPTED),
            Mailing::PasswordReset => (Endpoint::PasswordForgot, FORGOT_ACCEPTED),
        };
        let request = EmailRequest { email: email.to_string(), locale: self.browser_locale() };
        let admitted = self.deps.admit_email_request(self.meta, &mut OsRandom, endpoint, &request).await;
        let (status, n, extra) = match admitted {
            Ok(address) => {
                send_in_background(self.ctx, self.env, self.cfg, self.meta.clone(), what, address);
                (200, Notice::Info(format!("Check your email: {}.", accepted.message)), Vec::new())
            }
            Err(e) => self.failure(&e),
        };
        let answer = match what {
            Mailing::MagicLink if status == 200 => self.page_with(
                csrf,
                status,
                asked,
                |ctx| pages::message(ctx, "Check your email", Some(&n), &[("login", "Back to sign in")]),
                extra,
            ),
            Mailing::MagicLink => self.login_with(csrf, Some(&n), email, status, asked),
            Mailing::Otp => self.page_with(csrf, status, asked, |ctx| pages::otp(ctx, Some(&n), email), extra),
            Mailing::PasswordReset => {
                self.page_with(csrf, status, asked, |ctx| pages::forgot(ctx, Some(&n), email), extra)
            }
        };
        Ok(answer)
    }

    async fn post_signup(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let (asked, to) = self.posted_target(form)?;
        let (email, name) = (form.text("email"), form.optional("name"));
        let body = SignupRequest {
            email: email.clone(),
            password: form.text("password"),
            name: name.clone(),
            locale: self.browser_locale(),
        };
        let result = self.deps.signup(self.meta, &mut OsRandom, body).await.map(SignIn::Complete);
        let (min, name) = (self.cfg.password_policy.min_chars, name.unwrap_or_default());
        self.finish(csrf, asked.as_deref(), result, &to, |status, n| {
            let render = |ctx: &pages::Context<'_>| pages::signup(ctx, Some(n), &email, &name, min);
            self.page_with(csrf, status, asked.as_deref(), render, Vec::new())
        })
        .await
    }

    async fn post_magic_link(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let (asked, to) = self.posted_target(form)?;
        let token = form.text("token");
        let result = self
            .deps
            .verify_magic_link(
                self.meta,
                &mut OsRandom,
                MagicLinkVerifyRequest { token: token.clone(), locale: self.browser_locale() },
            )
            .await;
        self.finish(csrf, asked.as_deref(), result, &to, |status, n| {
            let render = |ctx: &pages::Context<'_>| pages::magic_link(ctx, Some(n), &token, None);
            self.page_with(csrf, status, asked.as_deref(), render, Vec::new())
        })
        .await
    }

    async fn post_otp(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let (asked, to) = self.posted_target(form)?;
        let email = form.text("email");
        if form.get("intent") == Some("send") {
            return self.send_email(csrf, &email, Mailing::Otp, asked.as_deref()).await;
        }
        let body = OtpVerifyRequest {
            email: email.clone(),
            code: form.text("code").trim().to_string(),
            locale: self.browser_locale(),
        };
        let result = self.deps.verify_otp(self.meta, &mut OsRandom, body).await;
        self.finish(csrf, asked.as_deref(), result, &to, |status, n| {
            self.page_with(csrf, status, asked.as_deref(), |ctx| pages::otp(ctx, Some(n), &email), Vec::new())
        })
        .await
    }

    /// The second step: the `mfa_token` the first step's page carried, and
    /// a code from the authenticator app or a backup code.
    async fn post_mfa(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let (asked, to) = self.posted_target(form)?;
        let mfa_token = form.text("mfa_token");
        let (code, backup_code) = match form.get("intent") {
            Some("backup_code") => (None, form.optional("backup_code")),
            _ => (form.optional("code"), None),
        };
        let body = MfaVerifyRequest { mfa_token: mfa_token.clone(), code, backup_code };
        let result = self.deps.verify_mfa(self.meta, &mut OsRandom, body).await.map(SignIn::Complete);
        self.finish(csrf, asked.as_deref(), result, &to, |status, n| {
            let methods = ["totp", "backup_code"];
            self.page_with(
                csrf,
                status,
                asked.as_deref(),
                |ctx| pages::mfa(ctx, Some(n), &mfa_token, &methods),
                Vec::new(),
            )
        })
        .await
    }

    async fn post_forgot(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let asked = form.optional(REDIRECT_FIELD);
        if let Some(a) = &asked {
            forms::return_target(
                Some(a),
                &self.cfg.oauth.redirect_allowlist,
                &self.account_url(),
                self.cfg.cookie_mode,
            )?;
        }
        self.send_email(csrf, &form.text("email"), Mailing::PasswordReset, asked.as_deref()).await
    }

    async fn post_reset(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let token = form.text("token");
        let body = ResetRequest { token: token.clone(), new_password: form.text("new_password") };
        match self.deps.reset_password(self.meta, &mut OsRandom, body).await {
            Ok(_) => {
                let n = Notice::Info("Your password is changed, and every session of the account has ended.".into());
                let render = |ctx: &pages::Context<'_>| {
                    pages::message(ctx, "Password changed", Some(&n), &[("login", "Sign in")])
                };
                Ok(self.page_with(csrf, 200, None, render, clear_cookies(self.cfg)))
            }
            Err(e) => {
                let (status, n, extra) = self.failure(&e);
                let min = self.cfg.password_policy.min_chars;
                Ok(self.page_with(csrf, status, None, |ctx| pages::reset(ctx, Some(&n), &token, min), extra))
            }
        }
    }

    async fn post_verify_email(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        let token = form.text("token");
        // Signed in as the account: its holder confirms it (no takeover).
        let session = self.signed_in().await?;
        let (bearer, cookies) = session.map_or((None, Vec::new()), |(a, c)| (Some(a), c));
        let verified = self
            .deps
            .verify_email(self.meta, &mut OsRandom, TokenRequest { token: token.clone() }, bearer.as_deref())
            .await;
        match verified {
            Ok(v) => {
                let n = Notice::Info(format!("{} is verified.", v.email));
                let render = |ctx: &pages::Context<'_>| {
                    pages::message(ctx, "Email address verified", Some(&n), &[("account", "Your account")])
                };
                Ok(self.page_with(csrf, 200, None, render, cookies))
            }
            Err(e) => {
                let (status, n, mut extra) = self.failure(&e);
                extra.extend(cookies);
                let signed_in = bearer.is_some();
                let render = |ctx: &pages::Context<'_>| pages::verify_email(ctx, Some(&n), &token, signed_in);
                Ok(self.page_with(csrf, status, None, render, extra))
            }
        }
    }

    async fn post_account(&self, csrf: &Csrf, form: &Form) -> Result<Answer, Error> {
        if !self.cfg.cookie_mode {
            return self.account_page(csrf, None).await;
        }
        let Some((access, cookies)) = self.signed_in().await? else { return Ok(self.to_login()) };
        match self.account_action(csrf, form, &access, cookies.clone()).await {
            Ok(answer) => Ok(answer),
            // A renewal above rotated the refresh token: the browser must get
            // the new cookies even when the action fails, or its next request
            // presents the rotated token (reuse: the session would end).
            Err(e) if !cookies.is_empty() => {
                let (status, n, mut extra) = self.failure(&e);
                extra.extend(cookies);
                let links = [("account", "Your account")];
                Ok(self.page_with(csrf, status, None, |ctx| pages::message(ctx, "Account", Some(&n), &links), extra))
            }
            Err(e) => Err(e),
        }
    }

    /// An account page action (`intent`) by the caller of `access`, with
    /// the renewed session's `cookies` (if it was renewed) to set.
    async fn account_action(
        &self,
        csrf: &Csrf,
        form: &Form,
        access: &str,
        cookies: Vec<(&'static str, String)>,
    ) -> Result<Answer, Error> {
        let access = access.to_string();
        let rng = &mut OsRandom;
        let intent = form.get("intent").unwrap_or_default();
        if let Some(done) = self.two_step_action(intent, form, &access).await {
            let (status, n, shown, mut extra) = match done {
                Ok((n, shown)) => (200, n, shown, Vec::new()),
                Err(e) => {
                    let (status, n, extra) = self.failure(&e);
                    // A refused first code: its form again (the key is not shown twice).
                    let shown = if intent == "totp_confirm" { Shown::Confirming } else { Shown::Idle };
                    (status, n, shown, extra)
                }
            };
            extra.extend(cookies);
            return self.account_view(csrf, status, Some(&n), &access, shown.view(), extra).await;
        }
        let done: Result<Notice, Error> = match intent {
            // From pages::renew: signed_in above renewed; back to the page by GET.
            "renew" => return Ok(Answer::SeeOther(self.account_url(), cookies)),
            "logout" => {
                let refresh = cookie(self.req, REFRESH_COOKIE);
                self.deps.logout(self.meta, rng, Some(&access), refresh.as_deref()).await?;
                let mut login = format!("{}{UI_PATH}/login", self.cfg.auth_prefix);
                if let Some(first) = self.cfg.oauth.redirect_allowlist.default_target() {
                    // Where the app is, for signing in again.
                    login.push_str("?redirect_to=");
                    login.extend(url::form_urlencoded::byte_serialize(first.as_bytes()));
                }
                return Ok(Answer::SeeOther(login, clear_cookies(self.cfg)));
            }
            "revoke" => {
                let id = form.text("session_id");
                self.deps
                    .revoke_own_session(self.meta, rng, Some(&access), &id)
                    .await
                    .map(|()| Notice::Info("That session is signed out.".into()))
            }
            "revoke_others" => self.deps.revoke_other_sessions(self.meta, rng, Some(&access)).await.map(|n| {
                Notice::Info(match n {
                    1 => "1 other session is signed out.".to_string(),
                    n => format!("{n} other sessions are signed out."),
                })
            }),
            "change_password" => {
                let body =
                    ChangeRequest { old_password: form.text("old_password"), new_password: form.text("new_password") };
                self.deps
                    .change_password(self.meta, rng, Some(&access), body)
                    .await
                    .map(|_| Notice::Info("Your password is changed; your other sessions are signed out.".into()))
            }
            "profile" => {
                // Only the fields changed from what the page showed (an empty
                // one clears its value): an edit made meanwhile stands.
                let changed = |field: &str, was: &str| {
                    (form.text(field).trim() != form.text(was).trim()).then(|| form.optional(field))
                };
                let body = ProfileRequest {
                    name: changed("name", "name_was"),
                    avatar_url: None,
                    locale: changed("locale", "locale_was"),
                };
                self.deps
                    .edit_profile(self.meta, rng, Some(&access), body)
                    .await
                    .map(|()| Notice::Info("Your profile is saved.".into()))
            }
            "verify_email" => self
                .deps
                .request_email_verification(self.meta, rng, Some(&access))
                .await
                .map(|_| Notice::Info("Check your email: a verification link is on its way.".into())),
            "passkey_add" | "passkey_rename" | "passkey_remove" => self.passkey_action(intent, form, &access).await,
            _ => Err(Error::validation("validation_failed", "intent: not one of the account page's actions")),
        };
        let (status, n, mut extra) = match done {
            Ok(n) => (200, n, Vec::new()),
            Err(e) => self.failure(&e),
        };
        extra.extend(cookies);
        self.account_view(csrf, status, Some(&n), &access, TwoStep::Idle, extra).await
    }

    /// The account page's two-step actions (`intent` `totp_enroll`,
    /// `totp_confirm`, `backup_codes`, `totp_disable`), each the flow of its
    /// `/auth/mfa/…` route with the same rules (rate limits, replay refusal,
    /// events, other sessions ended on a change); `None` for another intent.
    /// Turning it off needs a code here, whatever the session's age (the API
    /// also takes a sign-in of the last five minutes): a page left open
    /// must not turn the factor off.
    async fn two_step_action(&self, intent: &str, form: &Form, access: &str) -> Option<Result<(Notice, Shown), Error>> {
        let (rng, bearer) = (&mut OsRandom, Some(access));
        let code = || CodeRequest { code: form.optional("code").map(|c| c.trim().to_string()), backup_code: None };
        let needs_code = || {
            Error::validation(
                "validation_failed",
                "code: required (a code from your authenticator app or a backup code)",
            )
        };
        let done = match intent {
            "totp_enroll" => self.deps.enroll_totp(self.meta, rng, bearer).await.map(|e| {
                let n = Notice::Info("Add the key to your authenticator app, then enter the code it shows.".into());
                (n, Shown::Enrolling(e.secret, e.otpauth_uri))
            }),
            "totp_confirm" => self.deps.confirm_totp(self.meta, rng, bearer, code()).await.map(|b| {
                let n = Notice::Info(
                    "Two-step verification is on; your other sessions are signed out. Save your backup codes now."
                        .into(),
                );
                (n, Shown::BackupCodes(b.backup_codes))
            }),
            "backup_codes" => self.deps.regenerate_backup_codes(self.meta, rng, bearer, code()).await.map(|b| {
                let n = Notice::Info("New backup codes are made; the earlier ones no longer work.".into());
                (n, Shown::BackupCodes(b.backup_codes))
            }),
            "totp_disable" => match code() {
                CodeRequest { code: None, .. } => Err(needs_code()),
                body => self.deps.disable_totp(self.meta, rng, bearer, body).await.map(|()| {
                    let n = Notice::Info("Two-step verification is off; your other sessions are signed out.".into());
                    (n, Shown::Idle)
                }),
            },
            _ => return None,
        };
        Some(done)
    }
}

impl Ui<'_, '_> {
    /// The account page's passkey actions, each the flow of its
    /// `/auth/passkeys…` route with the same rules and events:
    /// `passkey_add` (`credential`, the script's `RegistrationResponseJSON`;
    /// `name`), `passkey_rename` (`passkey_id`, `name`), `passkey_remove`
    /// (`passkey_id`; every other session ends).
    async fn passkey_action(&self, intent: &str, form: &Form, access: &str) -> Result<Notice, Error> {
        let (rng, bearer, id) = (&mut OsRandom, Some(access), form.text("passkey_id"));
        match intent {
            "passkey_add" => {
                let credential: RegistrationCredential =
                    crate::core::body::parse_json(form.text("credential").as_bytes())?;
                let body = RegisterVerifyRequest { credential, name: form.optional("name") };
                let added = self.deps.passkey_register_verify(self.meta, rng, &NativePasskeys, bearer, body).await?;
                Ok(Notice::Info(format!("Passkey \u{201c}{}\u{201d} added: you can sign in with it.", added.name)))
            }
            "passkey_rename" => {
                let body = RenameRequest { name: form.text("name") };
                let renamed = self.deps.rename_passkey(self.meta, bearer, &id, body).await?;
                Ok(Notice::Info(format!("Passkey renamed \u{201c}{}\u{201d}.", renamed.name)))
            }
            _ => {
                self.deps.remove_passkey(self.meta, rng, bearer, &id).await?;
                Ok(Notice::Info("The passkey is removed; your other sessions are signed out.".into()))
            }
        }
    }
}

/// What the two-step section shows after an action ([`TwoStep`], owned).
enum Shown {
    Idle,
    Enrolling(String, String),
    Confirming,
    BackupCodes(Vec<String>),
}

impl Shown {
    fn view(&self) -> TwoStep<'_> {
        match self {
            Self::Idle => TwoStep::Idle,
            Self::Enrolling(secret, otpauth_uri) => TwoStep::Enrolling { secret, otpauth_uri },
            Self::Confirming => TwoStep::Confirming,
            Self::BackupCodes(codes) => TwoStep::BackupCodes(codes),
        }
    }
}

/// The headers a problem brings to a page: `Retry-After`, `WWW-Authenticate`.
fn problem_headers(p: &Problem) -> Vec<(&'static str, String)> {
    let retry = p.retry_after_secs.map(|s| ("retry-after", s.to_string()));
    let challenge = p.www_authenticate.clone().map(|c| ("www-authenticate", c));
    let codings = p.accept_encoding.map(|c| ("accept-encoding", c.to_string()));
    retry.into_iter().chain(challenge).chain(codings).collect()
}

fn with_headers(answer: Answer, more: Vec<(&'static str, String)>) -> Answer {
    match answer {
        Answer::Page(status, html, mut extra, script) => {
            extra.extend(more);
            Answer::Page(status, html, extra, script)
        }
        Answer::SeeOther(location, mut extra) => {
            extra.extend(more);
            Answer::SeeOther(location, extra)
        }
    }
}

/// `answer` (a page) running the passkey script, which fetches `options_path`.
fn with_script(answer: Answer, options_path: &'static str) -> Answer {
    match answer {
        Answer::Page(status, html, extra, _) => Answer::Page(status, html, extra, Some(options_path)),
        other => other,
    }
}

/// The CSRF cookie: `__Host-`, `HttpOnly`, `Secure`, `SameSite=Lax`, for
/// the browser session.
fn csrf_cookie(token: &str) -> (&'static str, String) {
    ("set-cookie", format!("{CSRF_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Lax"))
}
