//! The hosted pages' templates: one function per page, each a complete HTML
//! document built with [`html!`] (every value escaped), the stylesheet
//! inlined (allowed by its hash in the CSP). No inline script: the login and
//! account pages, when they show passkeys, load [`super::PASSKEY_SCRIPT`]
//! by URL with its `integrity`; every other part works without it.
//!
//! Accessibility: `lang`, a `<main>` landmark holding everything, one `<h1>`
//! per page, a `<label>` for every input with the `autocomplete` token that
//! password managers and assistive tools read, errors in a `role="alert"`
//! block above the form they concern, focus order in document order with a
//! visible focus ring, and colours from [`super::theme`] (4.5:1 or more).

use url::form_urlencoded::byte_serialize;

use super::forms::{CHALLENGE_FIELD, CSRF_FIELD, REDIRECT_FIELD};
use super::html::{html, Html};
use super::{UiConfig, LOGIN_OPTIONS_PATH, PASSKEY_SCRIPT_PATH, REGISTER_OPTIONS_PATH};
use crate::core::mfa::FactorsView;
use crate::core::passkey::{PasskeyView, MAX_NAME_CHARS};
use crate::core::session::SessionView;

/// What every page is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The brand, stylesheet and CSP.
    pub ui: &'a UiConfig,
    /// `AUTH_PREFIX` (e.g. `/auth`): the auth API's public path.
    pub auth_prefix: &'a str,
    /// The CSRF token the forms carry.
    pub csrf: &'a str,
    /// The `redirect_to` the browser asked for (already checked), carried
    /// by the forms and the links between the sign-in pages.
    pub redirect_to: Option<&'a str>,
    /// The app's `code_challenge` (already checked), carried like
    /// `redirect_to`: the sign-in's exchange code is bound to it.
    pub code_challenge: Option<&'a str>,
}

impl Context<'_> {
    /// The path of page `name` (e.g. `login`) under `AUTH_PREFIX`, with the
    /// `redirect_to` and `code_challenge` query when there are.
    pub fn page(&self, name: &str) -> String {
        let mut path = format!("{}{}/{name}", self.auth_prefix, super::UI_PATH);
        let mut sep = '?';
        for (k, v) in [(REDIRECT_FIELD, self.redirect_to), (CHALLENGE_FIELD, self.code_challenge)] {
            if let Some(v) = v {
                path.push(sep);
                path.push_str(k);
                path.push('=');
                path.extend(byte_serialize(v.as_bytes()));
                sep = '&';
            }
        }
        path
    }

    /// The form action of page `name` (no query: the form carries `redirect_to`).
    fn action(&self, name: &str) -> String {
        format!("{}{}/{name}", self.auth_prefix, super::UI_PATH)
    }

    /// The hidden fields every form carries.
    fn hidden(&self) -> Html {
        let mut h = html!["<input type=\"hidden\" name=\"", { CSRF_FIELD }, "\" value=\"", { self.csrf }, "\">"];
        for (k, v) in [(REDIRECT_FIELD, self.redirect_to), (CHALLENGE_FIELD, self.code_challenge)] {
            if let Some(v) = v {
                h.push_html(&html!["<input type=\"hidden\" name=\"", { k }, "\" value=\"", { v }, "\">"]);
            }
        }
        h
    }
}

/// A message above a page's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something went wrong: shown as an alert.
    Error(String),
    /// Something happened (an email was sent).
    Info(String),
}

fn notice(n: Option<&Notice>) -> Html {
    match n {
        None => Html::new(),
        Some(Notice::Error(m)) => html!["<div class=\"alert\" role=\"alert\">", { m }, "</div>"],
        Some(Notice::Info(m)) => html!["<div class=\"notice\" role=\"status\">", { m }, "</div>"],
    }
}

/// The document around a page's `body`.
fn layout(ctx: &Context<'_>, title: &str, n: Option<&Notice>, body: Html) -> Html {
    let logo = match &ctx.ui.brand.logo_url {
        Some(u) => html!["<img src=\"", { u.as_str() }, "\" alt=\"\">"],
        None => Html::new(),
    };
    html![
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta name=\"referrer\" content=\"same-origin\"><title>",
        { title },
        " – ",
        { ctx.ui.brand.name },
        "</title><style>",
        // Ours, from the validated accent colour; its CSP hash is of these bytes.
        [stylesheet(ctx.ui)],
        "</style></head><body><main><header>",
        [logo],
        "<p class=\"brand\">",
        { ctx.ui.brand.name },
        "</p></header><h1>",
        { title },
        "</h1>",
        [notice(n)],
        [body],
        "</main></body></html>"
    ]
}

/// The stylesheet as markup (see [`super::Css`]).
fn stylesheet(ui: &UiConfig) -> Html {
    let mut h = Html::new();
    h.push_css(&ui.css);
    h
}

fn email_field(id: &str, value: &str, autocomplete: &str) -> Html {
    html![
        "<label for=\"",
        { id },
        "\">Email</label><input id=\"",
        { id },
        "\" name=\"email\" type=\"email\" autocomplete=\"",
        { autocomplete },
        "\" required value=\"",
        { value },
        "\">"
    ]
}

fn links(ctx: &Context<'_>, which: &[(&str, &str)]) -> Html {
    let mut h = html!["<p class=\"links\">"];
    for (page, text) in which {
        h.push_html(&html!["<a href=\"", { ctx.page(page) }, "\">", { text }, "</a>"]);
    }
    h.push_markup("</p>");
    h
}

/// An OAuth provider's sign-in button on the login page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider<'a> {
    /// Its id (`/auth/oauth/{id}/authorize`).
    pub id: &'a str,
    /// Where the sign-in returns to, if the page has an allowlisted target.
    pub redirect_to: Option<&'a str>,
}

fn provider_label(id: &str) -> String {
    let mut chars = id.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The script tag of [`super::PASSKEY_SCRIPT`]: by URL (its version in the
/// query), pinned by `integrity`, deferred.
fn passkey_script(ctx: &Context<'_>) -> Html {
    html![
        "<script src=\"",
        { format!("{}{PASSKEY_SCRIPT_PATH}?v={}", ctx.auth_prefix, ctx.ui.script_version) },
        "\" integrity=\"",
        { ctx.ui.script_integrity },
        "\" defer></script>"
    ]
}

/// A form the passkey script drives (`data-passkey`: the options endpoint;
/// `data-ceremony`: `get` or `create`): the script fills `credential` (and
/// `challenge_id`) and submits it. Without script the button stays hidden
/// and the hint says why.
fn passkey_form(ctx: &Context<'_>, page: &str, ceremony: &str, intent: &str, fields: Html, button: &str) -> Html {
    let options = if ceremony == "create" { REGISTER_OPTIONS_PATH } else { LOGIN_OPTIONS_PATH };
    html![
        "<form method=\"post\" action=\"",
        { ctx.action(page) },
        "\" data-passkey=\"",
        { format!("{}{options}", ctx.auth_prefix) },
        "\" data-ceremony=\"",
        { ceremony },
        "\">",
        [ctx.hidden()],
        "<input type=\"hidden\" name=\"intent\" value=\"",
        { intent },
        "\"><input type=\"hidden\" name=\"challenge_id\" value=\"\">",
        "<input type=\"hidden\" name=\"credential\" value=\"\">",
        [fields],
        "<p class=\"hint\" data-passkey-hint>Passkeys need JavaScript, which is off or blocked in this browser.</p>",
        "<p class=\"alert\" role=\"alert\" data-passkey-error hidden></p>",
        "<button class=\"secondary\" type=\"submit\" hidden>",
        { button },
        "</button></form>"
    ]
}

/// `login`: password, an emailed link or code, a passkey (when `passkeys`:
/// set up, and this page's origin one of `RP_ORIGINS`), each OAuth provider.
pub fn login(ctx: &Context<'_>, n: Option<&Notice>, email: &str, providers: &[Provider<'_>], passkeys: bool) -> Html {
    let mut body = html![
        "<form method=\"post\" action=\"",
        { ctx.action("login") },
        "\">",
        [ctx.hidden()],
        [email_field("email", email, "username")],
        "<label for=\"password\">Password</label>",
        "<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">",
        "<button type=\"submit\" name=\"intent\" value=\"password\">Sign in</button>",
        "<h2>Or without a password</h2><p class=\"hint\">We email you a link or a six-digit code.</p>",
        "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"magic_link\" formnovalidate>Email me a sign-in link</button>",
        "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"send\" formaction=\"",
        { ctx.action("otp") },
        "\" formnovalidate>Email me a code</button></form>"
    ];
    if passkeys {
        body.push_html(&html![
            "<h2>Or with a passkey</h2><p class=\"hint\">Your device's screen lock or a security key; ",
            "no email needed (one typed above narrows the choice).</p>",
            [passkey_form(ctx, "login", "get", "passkey", Html::new(), "Sign in with a passkey")]
        ]);
    }
    if !providers.is_empty() {
        body.push_markup("<h2>Or continue with</h2>");
        for p in providers {
            // The app's challenge rides along: the provider sign-in's code is
            // bound to it like the page's own sign-ins' codes.
            let mut href = format!("{}/oauth/{}/authorize", ctx.auth_prefix, p.id);
            let mut sep = '?';
            for (k, v) in [(REDIRECT_FIELD, p.redirect_to), (CHALLENGE_FIELD, ctx.code_challenge)] {
                if let Some(v) = v {
                    href.push(sep);
                    href.push_str(k);
                    href.push('=');
                    href.extend(byte_serialize(v.as_bytes()));
                    sep = '&';
                }
            }
            body.push_html(&html![
                "<a class=\"button\" href=\"",
                { href },
                "\">Continue with ",
                { provider_label(p.id) },
                "</a>"
            ]);
        }
    }
    body.push_html(&links(ctx, &[("signup", "Create an account"), ("forgot", "Forgot your password?")]));
    if passkeys {
        body.push_html(&passkey_script(ctx));
    }
    layout(ctx, "Sign in", n, body)
}

/// `signup`: name (optional), email, password of at least `min_chars`.
pub fn signup(ctx: &Context<'_>, n: Option<&Notice>, email: &str, name: &str, min_chars: usize) -> Html {
    let body = html![
        "<form method=\"post\" action=\"",
        { ctx.action("signup") },
        "\">",
        [ctx.hidden()],
        "<label for=\"name\">Name <span class=\"hint\">(optional)</span></label>",
        "<input id=\"name\" name=\"name\" type=\"text\" autocomplete=\"name\" value=\"",
        { name },
        "\">",
        [email_field("email", email, "email")],
        "<label for=\"password\">Password</label>",
        "<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"",
        { min_chars },
        "\" aria-describedby=\"password-hint\"><p class=\"hint\" id=\"password-hint\">At least ",
        { min_chars },
        " characters.</p>",
        "<button type=\"submit\">Create account</button></form>",
        [links(ctx, &[("login", "I have an account")])]
    ];
    layout(ctx, "Create an account", n, body)
}

/// A page saying something happened (or failed), with links onwards.
pub fn message(ctx: &Context<'_>, title: &str, n: Option<&Notice>, onwards: &[(&str, &str)]) -> Html {
    layout(ctx, title, n, links(ctx, onwards))
}

/// `account` (GET) when the access cookie has expired but a refresh cookie
/// is there: a button that renews the session by POST. A GET never
/// renews: any site can send the browser here, and a renewal it set off
/// would rotate the refresh token under the app's feet (the app's own
/// refresh then reads as reuse and ends the session).
pub fn renew(ctx: &Context<'_>) -> Html {
    let body = html![
        "<p>Your sign-in needs renewing to show your account.</p>",
        "<form method=\"post\" action=\"",
        { ctx.action("account") },
        "\">",
        [ctx.hidden()],
        "<button type=\"submit\" name=\"intent\" value=\"renew\">Continue</button></form>"
    ];
    layout(ctx, "Your account", None, body)
}

/// `magic-link` (GET): the button that signs in, naming the account the
/// link is for; `account` is `None` when the link cannot be used.
pub fn magic_link(ctx: &Context<'_>, n: Option<&Notice>, token: &str, account: Option<&str>) -> Html {
    let Some(account) = account else {
        let n = n.cloned().unwrap_or_else(|| {
            Notice::Error("This sign-in link is invalid, already used, replaced by a newer one, or expired.".into())
        });
        return message(ctx, "Sign in with a link", Some(&n), &[("login", "Ask for a new link")]);
    };
    let body = html![
        "<p class=\"account\">This link signs you in as <strong>",
        { account },
        "</strong>.</p><p class=\"hint\">If that is not your account, or you did not ask for a link, close this page: ",
        "someone may be trying to sign you in to their account.</p>",
        "<form method=\"post\" action=\"",
        { ctx.action("magic-link") },
        "\">",
        [ctx.hidden()],
        "<input type=\"hidden\" name=\"token\" value=\"",
        { token },
        "\"><button type=\"submit\">Sign in as ",
        { account },
        "</button></form>"
    ];
    layout(ctx, "Sign in with a link", n, body)
}

/// `otp`: the emailed code for `email` (and a button sending a new one).
pub fn otp(ctx: &Context<'_>, n: Option<&Notice>, email: &str) -> Html {
    let body = html![
        "<form method=\"post\" action=\"",
        { ctx.action("otp") },
        "\">",
        [ctx.hidden()],
        [email_field("email", email, "username")],
        "<label for=\"code\">Code</label>",
        "<input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" pattern=\"[0-9]{6}\" maxlength=\"6\" ",
        "autocomplete=\"one-time-code\" aria-describedby=\"code-hint\">",
        "<p class=\"hint\" id=\"code-hint\">The six digits from the email.</p>",
        "<button type=\"submit\" name=\"intent\" value=\"verify\">Sign in</button>",
        "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"send\" formnovalidate>Email me a new code</button>",
        "</form>",
        [links(ctx, &[("login", "Other ways to sign in")])]
    ];
    layout(ctx, "Sign in with a code", n, body)
}

/// `forgot`: the address to send a reset link to.
pub fn forgot(ctx: &Context<'_>, n: Option<&Notice>, email: &str) -> Html {
    let body = html![
        "<form method=\"post\" action=\"",
        { ctx.action("forgot") },
        "\">",
        [ctx.hidden()],
        [email_field("email", email, "username")],
        "<button type=\"submit\">Email me a reset link</button></form>",
        [links(ctx, &[("login", "Back to sign in")])]
    ];
    layout(ctx, "Reset your password", n, body)
}

/// `reset`: a new password for the reset link `token`.
pub fn reset(ctx: &Context<'_>, n: Option<&Notice>, token: &str, min_chars: usize) -> Html {
    let body = html![
        "<form method=\"post\" action=\"",
        { ctx.action("reset") },
        "\">",
        [ctx.hidden()],
        "<input type=\"hidden\" name=\"token\" value=\"",
        { token },
        "\"><label for=\"new_password\">New password</label>",
        "<input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required minlength=\"",
        { min_chars },
        "\" aria-describedby=\"new-password-hint\"><p class=\"hint\" id=\"new-password-hint\">At least ",
        { min_chars },
        " characters. Every session of the account ends.</p>",
        "<button type=\"submit\">Set the new password</button></form>"
    ];
    layout(ctx, "Choose a new password", n, body)
}

/// `verify-email` (GET): the button that verifies the address of `token`.
/// Unless the browser is `signed_in` (cookie mode, a session of ours), a
/// note says what verifying does to an unverified account here: it takes
/// it over (docs/auth-api.md, "Takeover").
pub fn verify_email(ctx: &Context<'_>, n: Option<&Notice>, token: &str, signed_in: bool) -> Html {
    let note = if signed_in {
        Html::new()
    } else {
        html![
            "<p class=\"hint\">You are not signed in here. If this account is new and unverified, verifying here \
         makes it yours afresh, as it must if someone else made it with your address: its password is \
         cleared and every session signed out (you sign in with a link or a code, or choose a new \
         password). If you made it yourself, verify from the app you are signed in to, to keep it as \
         it is.</p>"
        ]
    };
    let body = html![
        [note],
        "<form method=\"post\" action=\"",
        { ctx.action("verify-email") },
        "\">",
        [ctx.hidden()],
        "<input type=\"hidden\" name=\"token\" value=\"",
        { token },
        "\"><button type=\"submit\">Verify my email address</button></form>"
    ];
    layout(ctx, "Verify your email address", n, body)
}

/// `mfa`: the second step of a sign-in whose first step answered
/// `mfa_required` — a code from the authenticator app or a backup code,
/// carried with the sign-in's `mfa_token` to `POST /auth/mfa/verify`.
pub fn mfa(ctx: &Context<'_>, n: Option<&Notice>, mfa_token: &str, methods: &[&str]) -> Html {
    let mut body = html![
        "<form method=\"post\" action=\"",
        { ctx.action("mfa") },
        "\">",
        [ctx.hidden()],
        "<input type=\"hidden\" name=\"mfa_token\" value=\"",
        { mfa_token },
        "\">"
    ];
    if methods.contains(&"totp") {
        body.push_html(&html![
            "<label for=\"code\">Code from your authenticator app</label>",
            "<input id=\"code\" name=\"code\" type=\"text\" inputmode=\"numeric\" pattern=\"[0-9]{6}\" maxlength=\"6\" ",
            "autocomplete=\"one-time-code\">",
            "<button type=\"submit\" name=\"intent\" value=\"totp\">Continue</button>"
        ]);
    }
    if methods.contains(&"backup_code") {
        body.push_html(&html![
            "<h2>Lost your device?</h2><label for=\"backup_code\">Backup code</label>",
            "<input id=\"backup_code\" name=\"backup_code\" type=\"text\" autocomplete=\"off\" spellcheck=\"false\">",
            "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"backup_code\" formnovalidate>",
            "Use the backup code</button>"
        ]);
    }
    body.push_markup("</form>");
    body.push_html(&links(ctx, &[("login", "Start again")]));
    layout(ctx, "Two-step verification", n, body)
}

/// What the account page shows.
#[derive(Debug, Clone)]
pub struct Account<'a> {
    /// The account's email.
    pub email: &'a str,
    /// Its name, if any.
    pub name: Option<&'a str>,
    /// The language of its emails (a BCP 47 tag), if any.
    pub locale: Option<&'a str>,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// The account's live sessions.
    pub sessions: &'a [SessionView],
    /// Its second factors, as `/auth/me` shows them.
    pub mfa: FactorsView,
    /// What the two-step section shows besides that, after an action.
    pub two_step: TwoStep<'a>,
    /// Whether the session signed in recently enough to turn two-step
    /// verification on (the enrolment refuses otherwise: 403
    /// `reauthentication_required`).
    pub recent: bool,
    /// The login page returning here, for signing in again.
    pub sign_in_again: &'a str,
    /// The passkeys section, when passkeys are set up (`RP_ID`).
    pub passkeys: Option<Passkeys<'a>>,
}

/// The account page's passkeys section.
#[derive(Debug, Clone, Copy)]
pub struct Passkeys<'a> {
    /// The account's passkeys, as `GET /auth/passkeys` lists them.
    pub list: &'a [PasskeyView],
    /// Whether one can be added here: WebAuthn runs on this page's origin
    /// (one of `RP_ORIGINS`).
    pub can_add: bool,
    /// Whether the session signed in recently enough to add one (the
    /// registration options refuse otherwise: 403 `reauthentication_required`).
    pub recent: bool,
    /// The login page returning here, for signing in again.
    pub sign_in_again: &'a str,
}

impl Passkeys<'_> {
    /// Whether the page runs the passkey script (it shows the add form).
    pub fn runs_script(&self) -> bool {
        self.can_add && self.recent
    }
}

/// What the account page's two-step section shows after an action, besides
/// whether two-step verification is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwoStep<'a> {
    /// Nothing more.
    Idle,
    /// An enrolment just started (`POST /auth/mfa/totp/enroll`): its key,
    /// to add to the authenticator app, and the form confirming it. Shown
    /// only now: the API never gives the key again.
    Enrolling {
        /// The base32 secret.
        secret: &'a str,
        /// The same as an `otpauth://` URI.
        otpauth_uri: &'a str,
    },
    /// A confirmation was refused: its form again, and a way to start over.
    Confirming,
    /// Backup codes just made (turning TOTP on, or new ones): shown once.
    BackupCodes(&'a [String]),
}

/// `account`: the profile, sessions (revoke one, or all others), password
/// change, email verification, sign out.
pub fn account(ctx: &Context<'_>, n: Option<&Notice>, a: &Account<'_>) -> Html {
    let action = ctx.action("account");
    let mut body = html!["<p class=\"account\">Signed in as <strong>", { a.email }, "</strong>"];
    if let Some(name) = a.name {
        body.push_html(&html![" (", { name }, ")"]);
    }
    body.push_markup(".</p>");
    if !a.email_verified {
        body.push_html(&html![
            "<form method=\"post\" action=\"",
            { action },
            "\">",
            [ctx.hidden()],
            "<p class=\"hint\">Your email address is not verified yet.</p>",
            "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"verify_email\">",
            "Email me a verification link</button></form>"
        ]);
    }
    body.push_html(&html!["<h2>Sessions</h2><ul class=\"sessions\">"]);
    for s in a.sessions {
        let device = s.user_agent.as_deref().unwrap_or("Unknown device");
        let ip = s.ip_address.as_deref().unwrap_or("unknown address");
        body.push_html(&html![
            "<li><span class=\"account\">",
            { device },
            "</span><p class=\"meta\">",
            { ip },
            " · last used ",
            { s.last_used_at },
            " · signed in ",
            { s.created_at },
            "</p>"
        ]);
        if s.current {
            body.push_markup("<p class=\"meta\"><strong>This session</strong></p>");
        } else {
            body.push_html(&html![
                "<form method=\"post\" action=\"",
                { action },
                "\">",
                [ctx.hidden()],
                "<input type=\"hidden\" name=\"session_id\" value=\"",
                { s.id.as_str() },
                "\"><button class=\"secondary inline\" type=\"submit\" name=\"intent\" value=\"revoke\" ",
                "aria-label=\"Sign out the session of ",
                { device },
                " last used ",
                { s.last_used_at },
                "\">Sign out</button></form>"
            ]);
        }
        body.push_markup("</li>");
    }
    body.push_markup("</ul>");
    if a.sessions.iter().any(|s| !s.current) {
        body.push_html(&html![
            "<form method=\"post\" action=\"",
            { action },
            "\">",
            [ctx.hidden()],
            "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"revoke_others\">",
            "Sign out every other session</button></form>"
        ]);
    }
    body.push_html(&html![
        "<h2>Profile</h2><form method=\"post\" action=\"",
        { action },
        "\">",
        [ctx.hidden()],
        // What the page showed goes back too: only what the user changed is
        // written, so an edit made meanwhile elsewhere stands.
        "<input type=\"hidden\" name=\"name_was\" value=\"",
        { a.name.unwrap_or_default() },
        "\"><input type=\"hidden\" name=\"locale_was\" value=\"",
        { a.locale.unwrap_or_default() },
        "\"><label for=\"name\">Name</label>",
        "<input id=\"name\" name=\"name\" autocomplete=\"name\" maxlength=\"200\" value=\"",
        { a.name.unwrap_or_default() },
        "\"><label for=\"locale\">Language of your emails</label>",
        "<input id=\"locale\" name=\"locale\" autocomplete=\"language\" maxlength=\"35\" ",
        "placeholder=\"en, fr, pt-BR\" value=\"",
        { a.locale.unwrap_or_default() },
        "\"><button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"profile\">Save profile</button></form>",
        "<h2>Change your password</h2><form method=\"post\" action=\"",
        { action },
        "\">",
        [ctx.hidden()],
        "<input type=\"hidden\" name=\"username\" autocomplete=\"username\" value=\"",
        { a.email },
        "\"><label for=\"old_password\">Current password</label>",
        "<input id=\"old_password\" name=\"old_password\" type=\"password\" autocomplete=\"current-password\" required>",
        "<label for=\"new_password\">New password</label>",
        "<input id=\"new_password\" name=\"new_password\" type=\"password\" autocomplete=\"new-password\" required>",
        "<p class=\"hint\">Your other sessions end.</p>",
        "<button type=\"submit\" name=\"intent\" value=\"change_password\">Change password</button></form>",
        [two_step(ctx, &action, a)],
        [a.passkeys.map(|p| passkeys(ctx, &action, &p)).unwrap_or_default()],
        "<h2>Sign out</h2><form method=\"post\" action=\"",
        { action },
        "\">",
        [ctx.hidden()],
        "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"logout\">Sign out</button></form>"
    ]);
    layout(ctx, "Your account", n, body)
}

/// The account page's passkeys: each with its name, when it was added and
/// last used, a rename and a remove form (plain forms, no script); and the
/// form adding one (the script's), or why it cannot be added now.
fn passkeys(ctx: &Context<'_>, action: &str, p: &Passkeys<'_>) -> Html {
    let mut h = html!["<h2>Passkeys</h2>"];
    if p.list.is_empty() {
        h.push_markup(
            "<p>No passkeys yet. A passkey signs you in with your device's screen lock or a security key.</p>",
        );
    } else {
        h.push_markup("<ul class=\"sessions\">");
        for (i, k) in p.list.iter().enumerate() {
            let id = format!("passkey_name_{i}");
            h.push_html(&html![
                "<li><span class=\"account\">",
                { k.name },
                "</span><p class=\"meta\">added ",
                { k.created_at },
                " · last used ",
                { k.last_used_at.as_deref().unwrap_or("never") },
                "</p><form method=\"post\" action=\"",
                { action },
                "\">",
                [ctx.hidden()],
                "<input type=\"hidden\" name=\"passkey_id\" value=\"",
                { k.id },
                "\"><label for=\"",
                { id },
                "\">New name</label><input id=\"",
                { id },
                "\" name=\"name\" type=\"text\" autocomplete=\"off\" required maxlength=\"",
                { MAX_NAME_CHARS },
                "\" value=\"",
                { k.name },
                "\"><button class=\"secondary inline\" type=\"submit\" name=\"intent\" value=\"passkey_rename\" ",
                "aria-label=\"Rename passkey ",
                { k.name },
                "\">Rename</button></form><form method=\"post\" action=\"",
                { action },
                "\">",
                [ctx.hidden()],
                "<input type=\"hidden\" name=\"passkey_id\" value=\"",
                { k.id },
                "\"><button class=\"secondary inline\" type=\"submit\" name=\"intent\" value=\"passkey_remove\" ",
                "aria-label=\"Remove passkey ",
                { k.name },
                "\">Remove</button></form></li>"
            ]);
        }
        h.push_markup("</ul><p class=\"hint\">Removing a passkey signs out your other sessions.</p>");
    }
    if !p.can_add {
        h.push_markup("<p class=\"hint\">Passkeys cannot be added from this address.</p>");
    } else if !p.recent {
        h.push_html(&html![
            "<p class=\"notice\">Adding a passkey needs a sign-in within the last five minutes.</p>",
            "<a class=\"button\" href=\"",
            { p.sign_in_again },
            "\">Sign in again to add a passkey</a>"
        ]);
    } else {
        let fields = html![
            "<label for=\"passkey_new_name\">Name for the new passkey <span class=\"hint\">(optional)</span></label>",
            "<input id=\"passkey_new_name\" name=\"name\" type=\"text\" autocomplete=\"off\" maxlength=\"",
            { MAX_NAME_CHARS },
            "\">"
        ];
        h.push_html(&passkey_form(ctx, "account", "create", "passkey_add", fields, "Add a passkey"));
        h.push_html(&passkey_script(ctx));
    }
    h
}

/// A form of the two-step section posting `intent`, with a code field
/// `id` labelled `label` (`hint` under it) when `label` is given.
fn code_form(ctx: &Context<'_>, action: &str, intent: &str, code: Option<(&str, &str, &str)>, button: &str) -> Html {
    let mut h = html!["<form method=\"post\" action=\"", { action }, "\">", [ctx.hidden()]];
    if let Some((id, label, hint)) = code {
        h.push_html(&html![
            "<label for=\"",
            { id },
            "\">",
            { label },
            "</label><input id=\"",
            { id },
            "\" name=\"code\" type=\"text\" autocomplete=\"one-time-code\" spellcheck=\"false\" required ",
            "aria-describedby=\"",
            { id },
            "-hint\"><p class=\"hint\" id=\"",
            { id },
            "-hint\">",
            { hint },
            "</p>"
        ]);
    }
    h.push_html(&html![
        "<button class=\"secondary\" type=\"submit\" name=\"intent\" value=\"",
        { intent },
        "\">",
        { button },
        "</button></form>"
    ]);
    h
}

/// The account page's two-step verification (TOTP): whether it is on, and
/// the forms that turn it on (enrol, then confirm with a first code), make
/// new backup codes and turn it off — the last two with a current code.
fn two_step(ctx: &Context<'_>, action: &str, a: &Account<'_>) -> Html {
    const APP_CODE: &str = "The six digits your authenticator app shows.";
    const ANY_CODE: &str = "The six digits your authenticator app shows, or one of your backup codes.";
    let mut h = html!["<h2>Two-step verification</h2>"];
    if let TwoStep::BackupCodes(codes) = a.two_step {
        h.push_html(&html![
            "<div class=\"notice\" role=\"status\"><p>Your backup codes. Each signs in once when you do not have ",
            "your device. Keep them somewhere safe: they are shown only now.</p><ul class=\"codes\">"
        ]);
        for c in codes {
            h.push_html(&html!["<li><code>", { c }, "</code></li>"]);
        }
        h.push_markup("</ul></div>");
    }
    if a.mfa.totp {
        h.push_html(&html![
            "<p>Two-step verification is <strong>on</strong>: signing in asks for a code from your authenticator ",
            "app. Backup codes left: ",
            { a.mfa.backup_codes_left },
            ".</p>"
        ]);
        let regen = ("backup_codes_code", "Code for new backup codes", ANY_CODE);
        h.push_html(&code_form(ctx, action, "backup_codes", Some(regen), "Make new backup codes"));
        let off = ("totp_disable_code", "Code to turn it off", ANY_CODE);
        h.push_html(&code_form(ctx, action, "totp_disable", Some(off), "Turn off two-step verification"));
        return h;
    }
    let confirm = ("totp_confirm_code", "Code from your authenticator app", APP_CODE);
    match a.two_step {
        TwoStep::Enrolling { secret, otpauth_uri } => {
            h.push_html(&html![
                "<p>Add this key to your authenticator app, then enter the code it shows.</p>",
                "<p class=\"account\">Key: <code>",
                { secret },
                "</code></p><p class=\"account\">Or open it in the app: <a href=\"",
                { otpauth_uri },
                "\">",
                { otpauth_uri },
                "</a></p>",
                [code_form(ctx, action, "totp_confirm", Some(confirm), "Turn on two-step verification")]
            ]);
        }
        TwoStep::Confirming => {
            h.push_html(&code_form(ctx, action, "totp_confirm", Some(confirm), "Turn on two-step verification"));
            if a.recent {
                h.push_html(&code_form(ctx, action, "totp_enroll", None, "Start again with a new key"));
            }
        }
        TwoStep::Idle | TwoStep::BackupCodes(_) => {
            h.push_html(&html![
                "<p>Two-step verification is <strong>off</strong>. With it on, signing in also asks for a code ",
                "from an authenticator app.</p>"
            ]);
            if a.recent {
                h.push_html(&code_form(ctx, action, "totp_enroll", None, "Set up an authenticator app"));
            } else {
                h.push_html(&html![
                    "<p class=\"notice\">Turning it on needs a sign-in within the last five minutes.</p>",
                    "<a class=\"button\" href=\"",
                    { a.sign_in_again },
                    "\">Sign in again to set it up</a>"
                ]);
            }
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "\"><script>alert(1)</script><x a='";

    fn ui() -> UiConfig {
        let var = |k: &str| match k {
            "UI_NAME" => Some(EVIL.to_string()),
            "UI_LOGO_URL" => Some("https://cdn.example/l.png?a=\"><script>".to_string()),
            _ => None,
        };
        let brand = crate::core::brand::Brand::from_lookup(&var).unwrap();
        UiConfig::parse(var, brand, &Default::default()).unwrap()
    }

    fn session(current: bool) -> SessionView {
        SessionView {
            id: EVIL.into(),
            created_at: EVIL.into(),
            last_used_at: EVIL.into(),
            expires_at: EVIL.into(),
            ip_address: Some(EVIL.into()),
            user_agent: Some(EVIL.into()),
            current,
        }
    }

    /// Every page, rendered with `EVIL` in every value it shows.
    fn every_page(ui: &UiConfig) -> Vec<(&'static str, Html)> {
        let ctx = Context { ui, auth_prefix: "/auth", csrf: EVIL, redirect_to: Some(EVIL), code_challenge: Some(EVIL) };
        let err = Notice::Error(EVIL.into());
        let info = Notice::Info(EVIL.into());
        let sessions = [session(true), session(false)];
        let a = account_of(EVIL, &sessions, false, TwoStep::Enrolling { secret: EVIL, otpauth_uri: EVIL });
        let codes = [EVIL.to_string(), EVIL.to_string()];
        let on = account_of(EVIL, &sessions, true, TwoStep::BackupCodes(&codes));
        let keys = [passkey(EVIL, Some(EVIL)), passkey(EVIL, None)];
        vec![
            ("login", login(&ctx, Some(&err), EVIL, &[Provider { id: "gh", redirect_to: Some(EVIL) }], false)),
            ("login with passkeys", login(&ctx, Some(&err), EVIL, &[], true)),
            ("signup", signup(&ctx, Some(&info), EVIL, EVIL, 10)),
            ("message", message(&ctx, EVIL, Some(&err), &[("login", EVIL)])),
            ("magic-link", magic_link(&ctx, None, EVIL, Some(EVIL))),
            ("magic-link dead", magic_link(&ctx, None, EVIL, None)),
            ("otp", otp(&ctx, Some(&info), EVIL)),
            ("forgot", forgot(&ctx, Some(&err), EVIL)),
            ("reset", reset(&ctx, Some(&err), EVIL, 10)),
            ("verify-email", verify_email(&ctx, Some(&err), EVIL, false)),
            ("mfa", mfa(&ctx, Some(&err), EVIL, &["totp", "backup_code"])),
            ("account", account(&ctx, Some(&err), &a)),
            ("account with two-step on", account(&ctx, Some(&info), &on)),
            ("account with passkeys", account(&ctx, Some(&info), &with_passkeys(&a, &keys, true, true))),
            ("account, passkeys, not recent", account(&ctx, None, &with_passkeys(&a, &keys, true, false))),
            ("account, passkeys, elsewhere", account(&ctx, None, &with_passkeys(&a, &keys, false, true))),
        ]
    }

    fn passkey(name: &str, last_used: Option<&str>) -> PasskeyView {
        PasskeyView {
            id: name.into(),
            name: name.into(),
            credential_id: name.into(),
            alg: "EdDSA",
            backup_eligible: false,
            backed_up: false,
            transports: vec![name.into()],
            aaguid: name.into(),
            created_at: name.into(),
            last_used_at: last_used.map(Into::into),
        }
    }

    /// `a` with a passkeys section listing `keys`.
    fn with_passkeys<'a>(a: &Account<'a>, keys: &'a [PasskeyView], can_add: bool, recent: bool) -> Account<'a> {
        let passkeys = Passkeys { list: keys, can_add, recent, sign_in_again: EVIL };
        Account { passkeys: Some(passkeys), ..a.clone() }
    }

    /// `s` without its one passkey script tag (which must be exactly that:
    /// by URL, pinned by `integrity`, nothing inline), if it has one.
    fn without_script_tag(ui: &UiConfig, s: &str) -> String {
        let tag = format!(
            "<script src=\"/auth/ui/passkey.js?v={}\" integrity=\"{}\" defer></script>",
            ui.script_version, ui.script_integrity
        );
        assert!(s.matches(&tag).count() <= 1, "{s}");
        s.replace(&tag, "")
    }

    fn account_of<'a>(email: &'a str, sessions: &'a [SessionView], on: bool, two_step: TwoStep<'a>) -> Account<'a> {
        let mfa = FactorsView { totp: on, backup_codes_left: if on { 10 } else { 0 }, passkeys: 0 };
        Account {
            email,
            name: Some(email),
            locale: Some(email),
            email_verified: false,
            sessions,
            mfa,
            two_step,
            recent: true,
            sign_in_again: email,
            passkeys: None,
        }
    }

    #[test]
    fn every_interpolated_value_is_escaped_on_every_page() {
        let ui = ui();
        for (name, page) in every_page(&ui) {
            let s = without_script_tag(&ui, page.as_str());
            let s = s.as_str();
            assert!(!s.contains("<script"), "{name}: {s}");
            assert!(!s.contains("<x "), "{name}: an attribute value was closed: {s}");
            assert!(s.contains("&quot;&gt;&lt;script&gt;"), "{name}: the value is shown, escaped");
            assert!(s.starts_with("<!doctype html><html lang=\"en\">"), "{name}");
            assert_eq!(s.matches("<h1>").count(), 1, "{name}");
            assert_eq!(s.matches("<main>").count(), 1, "{name}");
        }
    }

    #[test]
    fn an_old_sign_in_is_sent_to_sign_in_again_instead_of_offered_totp() {
        let ui = UiConfig::default();
        let ctx = Context { ui: &ui, auth_prefix: "/auth", csrf: "T", redirect_to: None, code_challenge: None };
        let sessions = [session(true)];
        for two_step in [TwoStep::Idle, TwoStep::Confirming] {
            let recent = account_of("a@example.com", &sessions, false, two_step);
            assert!(account(&ctx, None, &recent).as_str().contains("value=\"totp_enroll\""));
            let old = Account { recent: false, sign_in_again: "/auth/ui/login?x=1", ..recent };
            let s = account(&ctx, None, &old).into_string();
            assert!(!s.contains("value=\"totp_enroll\""), "{s}");
            assert_eq!(
                s.contains("href=\"/auth/ui/login?x=1\">Sign in again to set it up</a>"),
                two_step == TwoStep::Idle
            );
        }
    }

    #[test]
    fn every_input_has_a_label_and_every_form_the_csrf_token() {
        let ui = UiConfig::default();
        let ctx = Context { ui: &ui, auth_prefix: "/auth", csrf: "T", redirect_to: None, code_challenge: None };
        let sessions = [session(true), session(false)];
        let a = account_of("a@example.com", &sessions, false, TwoStep::Idle);
        let enrolling =
            account_of("a@example.com", &sessions, false, TwoStep::Enrolling { secret: "S", otpauth_uri: "U" });
        let confirming = account_of("a@example.com", &sessions, false, TwoStep::Confirming);
        let codes = ["c".to_string()];
        let on = account_of("a@example.com", &sessions, true, TwoStep::BackupCodes(&codes));
        let keys = [passkey("Laptop", None), passkey("Phone", Some("2026-01-01T00:00:00Z"))];
        for page in [
            login(&ctx, None, "", &[], false),
            login(&ctx, None, "", &[], true),
            account(&ctx, None, &with_passkeys(&a, &keys, true, true)),
            account(&ctx, None, &with_passkeys(&a, &[], true, true)),
            account(&ctx, None, &with_passkeys(&a, &keys, true, false)),
            signup(&ctx, None, "", "", 10),
            otp(&ctx, None, ""),
            forgot(&ctx, None, ""),
            reset(&ctx, None, "t", 10),
            verify_email(&ctx, None, "t", false),
            magic_link(&ctx, None, "t", Some("a@example.com")),
            mfa(&ctx, None, "m", &["totp", "backup_code"]),
            account(&ctx, None, &a),
            account(&ctx, None, &enrolling),
            account(&ctx, None, &confirming),
            account(&ctx, None, &on),
        ] {
            let s = without_script_tag(&ui, page.as_str());
            let s = s.as_str();
            for (i, _) in s.match_indices("<input id=\"") {
                let id = s[i + 11..].split('"').next().unwrap();
                assert!(s.contains(&format!("<label for=\"{id}\"")), "no label for #{id}: {s}");
            }
            assert_eq!(
                s.matches("<form ").count(),
                s.matches("<input type=\"hidden\" name=\"csrf\" value=\"T\">").count(),
                "{s}"
            );
            assert!(!s.contains("<script") && !s.contains(" style=\""), "{s}");
        }
    }

    #[test]
    fn the_magic_link_page_names_the_account_on_its_button() {
        let ui = UiConfig::default();
        let ctx = Context {
            ui: &ui,
            auth_prefix: "/id/v1",
            csrf: "T",
            redirect_to: Some("https://app.example/x?a=1&b=2"),
            code_challenge: None,
        };
        let s = magic_link(&ctx, None, "tok", Some("ada@example.com")).into_string();
        assert!(s.contains("signs you in as <strong>ada@example.com</strong>"), "{s}");
        assert!(s.contains("Sign in as ada@example.com</button>"), "{s}");
        assert!(s.contains("action=\"/id/v1/ui/magic-link\""), "{s}");
        assert!(s.contains("name=\"redirect_to\" value=\"https://app.example/x?a=1&amp;b=2\""), "{s}");
        let dead = magic_link(&ctx, None, "tok", None).into_string();
        assert!(!dead.contains("<form") && dead.contains("role=\"alert\""), "{dead}");
        // Links between the pages keep the target, URL-encoded.
        assert_eq!(ctx.page("login"), "/id/v1/ui/login?redirect_to=https%3A%2F%2Fapp.example%2Fx%3Fa%3D1%26b%3D2");
    }

    #[test]
    fn the_account_page_shows_two_step_verification_and_the_forms_for_its_state() {
        let ui = UiConfig::default();
        let ctx = Context { ui: &ui, auth_prefix: "/auth", csrf: "T", redirect_to: None, code_challenge: None };
        let sessions = [session(true)];
        let intents = |s: &str| -> Vec<String> {
            s.match_indices("name=\"intent\" value=\"totp_")
                .chain(s.match_indices("name=\"intent\" value=\"backup_codes"))
                .map(|(i, _)| s[i + 21..].split('"').next().unwrap().to_string())
                .collect()
        };
        let off = account(&ctx, None, &account_of("a@example.com", &sessions, false, TwoStep::Idle)).into_string();
        assert!(off.contains("Two-step verification is <strong>off</strong>"), "{off}");
        assert_eq!(intents(&off), ["totp_enroll"]);

        let uri = "otpauth://totp/Acme:a%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Acme&digits=6";
        let enrolling = TwoStep::Enrolling { secret: "JBSWY3DPEHPK3PXP", otpauth_uri: uri };
        let s = account(&ctx, None, &account_of("a@example.com", &sessions, false, enrolling)).into_string();
        let escaped = uri.replace('&', "&amp;");
        assert!(s.contains("<code>JBSWY3DPEHPK3PXP</code>"), "{s}");
        assert!(s.contains(&format!("<a href=\"{escaped}\">{escaped}</a>")), "the URI as a link and as text: {s}");
        assert_eq!(intents(&s), ["totp_confirm"]);
        assert!(s.contains("<label for=\"totp_confirm_code\">Code from your authenticator app</label>"), "{s}");
        assert!(s.contains("autocomplete=\"one-time-code\""), "{s}");

        let again = account(&ctx, None, &account_of("a@example.com", &sessions, false, TwoStep::Confirming));
        assert_eq!(intents(again.as_str()), ["totp_confirm", "totp_enroll"]);
        assert!(!again.as_str().contains("<code>"), "the key is never shown again");

        let codes: Vec<String> = (0..10).map(|i| format!("abcde-fghj{i}")).collect();
        let on = account(&ctx, None, &account_of("a@example.com", &sessions, true, TwoStep::BackupCodes(&codes)));
        let s = on.as_str();
        assert!(s.contains("Two-step verification is <strong>on</strong>"), "{s}");
        assert!(s.contains("Backup codes left: 10."), "{s}");
        assert_eq!(s.matches("<li><code>").count(), 10, "{s}");
        assert!(codes.iter().all(|c| s.contains(&format!("<code>{c}</code>"))), "{s}");
        assert_eq!(intents(s), ["totp_disable", "backup_codes"]);
        for id in ["backup_codes_code", "totp_disable_code"] {
            assert!(
                s.contains(&format!("<label for=\"{id}\">")) && s.contains(&format!("id=\"{id}\" name=\"code\"")),
                "{id}: {s}"
            );
        }
        // Shown once: a later view of the same account lists no codes.
        let later = account(&ctx, None, &account_of("a@example.com", &sessions, true, TwoStep::Idle));
        assert!(!later.as_str().contains("<code>"));
    }

    #[test]
    fn a_provider_button_carries_the_return_target_and_the_apps_challenge() {
        let ui = UiConfig::default();
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let ctx = Context {
            ui: &ui,
            auth_prefix: "/auth",
            csrf: "T",
            redirect_to: Some("https://app.example/done"),
            code_challenge: Some(challenge),
        };
        let s = login(&ctx, None, "", &[Provider { id: "acme", redirect_to: Some("https://app.example/done") }], false)
            .into_string();
        let href = format!(
            "href=\"/auth/oauth/acme/authorize?redirect_to=https%3A%2F%2Fapp.example%2Fdone&amp;code_challenge={challenge}\""
        );
        assert!(s.contains(&href), "{s}");
        let none = Context { code_challenge: None, ..ctx };
        let s = login(&none, None, "", &[Provider { id: "acme", redirect_to: None }], false).into_string();
        assert!(s.contains("href=\"/auth/oauth/acme/authorize\""), "{s}");
    }

    #[test]
    fn the_login_page_offers_a_passkey_only_when_on_by_a_pinned_external_script() {
        let ui = UiConfig::default();
        let ctx = Context {
            ui: &ui,
            auth_prefix: "/id",
            csrf: "T",
            redirect_to: Some("https://app.example/done"),
            code_challenge: None,
        };
        let off = login(&ctx, None, "", &[], false).into_string();
        assert!(!off.contains("passkey") && !off.contains("<script"), "{off}");
        let on = login(&ctx, None, "", &[], true).into_string();
        // The script's form: posts to the page with the CSRF token and the
        // return target, fetches the sign-in options, and starts hidden.
        let form = on.split("<h2>Or with a passkey</h2>").nth(1).unwrap().split("</form>").next().unwrap();
        assert!(
            form.contains(
                "<form method=\"post\" action=\"/id/ui/login\" data-passkey=\"/id/passkeys/login/options\" data-ceremony=\"get\">"
            ),
            "{form}"
        );
        for field in [
            "name=\"csrf\" value=\"T\"",
            "name=\"redirect_to\" value=\"https://app.example/done\"",
            "name=\"intent\" value=\"passkey\"",
            "name=\"challenge_id\"",
            "name=\"credential\"",
        ] {
            assert!(form.contains(field), "{field}: {form}");
        }
        assert!(
            form.contains("<button class=\"secondary\" type=\"submit\" hidden>Sign in with a passkey</button>"),
            "{form}"
        );
        assert!(
            form.contains("data-passkey-hint>Passkeys need JavaScript"),
            "without script it explains itself: {form}"
        );
        let tag = format!(
            "<script src=\"/id/ui/passkey.js?v={}\" integrity=\"{}\" defer></script>",
            ui.script_version, ui.script_integrity
        );
        assert_eq!(on.matches("<script").count(), 1, "{on}");
        assert!(on.contains(&tag), "{on}");
        // Hidden things stay hidden whatever the stylesheet says of buttons.
        assert!(ui.css.as_str().contains("[hidden]{display:none!important}"));
    }

    #[test]
    fn the_account_page_lists_passkeys_with_rename_and_remove_and_says_when_one_cannot_be_added() {
        let ui = UiConfig::default();
        let ctx = Context { ui: &ui, auth_prefix: "/auth", csrf: "T", redirect_to: None, code_challenge: None };
        let sessions = [session(true)];
        let a = account_of("a@example.com", &sessions, false, TwoStep::Idle);
        assert!(!account(&ctx, None, &a).as_str().contains("Passkeys"), "no section without RP_ID");
        let keys = [passkey("Laptop", None), passkey("Phone", Some("2026-01-02T03:04:05Z"))];
        let s = account(&ctx, None, &with_passkeys(&a, &keys, true, true)).into_string();
        let section = s.split("<h2>Passkeys</h2>").nth(1).unwrap().split("<h2>").next().unwrap();
        assert!(section.contains("Laptop</span><p class=\"meta\">added Laptop · last used never</p>"), "{section}");
        assert!(section.contains("last used 2026-01-02T03:04:05Z"), "{section}");
        for (intent, label) in [("passkey_rename", "Rename passkey Phone"), ("passkey_remove", "Remove passkey Phone")]
        {
            assert!(section.contains(&format!("value=\"{intent}\" aria-label=\"{label}\"")), "{intent}: {section}");
        }
        assert_eq!(section.matches("name=\"passkey_id\" value=\"Phone\"").count(), 2, "{section}");
        assert!(
            section
                .contains("<label for=\"passkey_name_1\">New name</label><input id=\"passkey_name_1\" name=\"name\""),
            "{section}"
        );
        assert!(
            section.contains("data-passkey=\"/auth/passkeys/register/options\" data-ceremony=\"create\">"),
            "{section}"
        );
        assert!(section.contains("name=\"intent\" value=\"passkey_add\""), "{section}");
        assert!(section.contains("type=\"submit\" hidden>Add a passkey</button>"), "{section}");
        assert!(section.contains("<script src=\"/auth/ui/passkey.js?v="), "{section}");

        // Signed in too long ago: no form and no script, but why, and the way on.
        let stale = account(&ctx, None, &with_passkeys(&a, &keys, true, false)).into_string();
        assert!(stale.contains("Adding a passkey needs a sign-in within the last five minutes."), "{stale}");
        assert!(
            stale.contains(&format!(
                "<a class=\"button\" href=\"{}\">Sign in again to add a passkey</a>",
                "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;x a=&#39;"
            )),
            "{stale}"
        );
        assert!(!stale.contains("<script") && !stale.contains("data-passkey"), "{stale}");
        // An origin outside RP_ORIGINS: the list and its forms, no adding.
        let elsewhere = account(&ctx, None, &with_passkeys(&a, &keys, false, true)).into_string();
        assert!(elsewhere.contains("Passkeys cannot be added from this address."), "{elsewhere}");
        assert!(!elsewhere.contains("<script") && elsewhere.contains("value=\"passkey_remove\""), "{elsewhere}");
        let none = account(&ctx, None, &with_passkeys(&a, &[], true, true)).into_string();
        assert!(none.contains("No passkeys yet."), "{none}");
    }
}
