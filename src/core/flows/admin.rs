//! The admin API under `/auth/admin`: list, read, edit and delete users, ban
//! and unban them, grant and withdraw roles, revoke their sessions, see and
//! reset their second factors.
//!
//! Every call is authorised the strict way, before anything else is read: the
//! access token is verified, its session must be live in the store, and the
//! caller's *current* roles (from the store, not the token) must include
//! [`ADMIN_ROLE`] — so a withdrawn role or a ban takes effect at once, not
//! when the token expires. [`Deps::require_admin`] is the only way to get the
//! [`Admin`] every admin flow takes.

use serde::{Deserialize, Serialize};

use crate::core::body::whole_number;
use crate::core::email_address::Email;
use crate::core::error::Error;
use crate::core::events::{self, Event};
use crate::core::flows::account::{changed_fields, parse_avatar_url, parse_locale, parse_name, present};
use crate::core::flows::mfa::{factors_events, MFA_CHANGE_REVOKE_REASON};
use crate::core::flows::{Deps, Meta};
use crate::core::gateway::policy::is_role_name;
use crate::core::ids::{Random, UserId};
use crate::core::mfa::{FactorsView, Method};
use crate::core::ports::{AccountStore, EventSink, KeyRing, MfaStore, PasskeyStore, SessionStore, UserStore};
use crate::core::users::{ProfileUpdate, User, UserResponse};

/// The role the admin API requires.
pub const ADMIN_ROLE: &str = "admin";
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page size; larger requests are capped.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest search text.
pub const MAX_QUERY_CHARS: usize = 200;
/// Longest phone number, in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// Longest user id looked up (ours are 36-character UUIDs).
const MAX_USER_ID_LEN: usize = 64;

/// Proof that the caller is an administrator; only [`Deps::require_admin`] makes one.
#[derive(Debug, Clone)]
pub struct Admin {
    user: User,
}

impl Admin {
    /// The administrator's account.
    pub fn user(&self) -> &User {
        &self.user
    }
}

/// `GET /auth/admin/users` query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Text searched in emails and names; `None` lists everybody.
    pub query: Option<String>,
    /// Page size, 1 to [`MAX_PAGE_SIZE`].
    pub limit: u32,
    /// Users skipped.
    pub offset: u32,
}

impl ListQuery {
    /// Parses a raw query string (`query=&limit=&offset=`). Unknown or
    /// repeated parameters and non-numbers are 422s; a `limit` above
    /// [`MAX_PAGE_SIZE`] is capped.
    pub fn parse(raw: Option<&str>) -> Result<Self, Error> {
        let mut out = Self { query: None, limit: DEFAULT_PAGE_SIZE, offset: 0 };
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.iter().any(|s| *s == k) {
                return Err(Error::validation("invalid_query", format!("{k}: given more than once")));
            }
            seen.push(k.to_string());
            match k.as_ref() {
                "query" => {
                    let q = v.trim();
                    if q.chars().count() > MAX_QUERY_CHARS || q.chars().any(char::is_control) {
                        return Err(Error::validation(
                            "invalid_query",
                            format!("query: at most {MAX_QUERY_CHARS} characters, no control characters"),
                        ));
                    }
                    out.query = (!q.is_empty()).then(|| q.to_string());
                }
                "limit" => match whole_number(&v) {
                    Some(n) if n >= 1 => out.limit = n.min(MAX_PAGE_SIZE),
                    _ => return Err(Error::validation("invalid_query", "limit: a whole number from 1")),
                },
                "offset" => {
                    out.offset = whole_number(&v)
                        .ok_or_else(|| Error::validation("invalid_query", "offset: a whole number from 0"))?
                }
                other => {
                    return Err(Error::validation(
                        "invalid_query",
                        format!("{other}: unknown parameter (expected query, limit, offset)"),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// A page of users, as `GET /auth/admin/users` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserList {
    /// The users.
    pub users: Vec<UserResponse>,
    /// How many users match in all.
    pub total: u64,
    /// The page size used.
    pub limit: u32,
    /// The offset used.
    pub offset: u32,
}

/// `PATCH /auth/admin/users/{id}`: absent fields are left alone; `null`
/// clears `name`, `avatar_url` and `phone`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// New display name.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Option<String>>,
    /// New avatar URL (http or https).
    #[serde(default, deserialize_with = "present")]
    pub avatar_url: Option<Option<String>>,
    /// New phone number.
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    /// Verified flag. A changed email is unverified unless this says otherwise.
    #[serde(default)]
    pub email_verified: Option<bool>,
    /// New email address; must not belong to another account.
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
    /// New language of the user's emails (a BCP 47 tag).
    #[serde(default, deserialize_with = "present")]
    pub locale: Option<Option<String>>,
}

/// `GET /auth/admin/users/{id}`: the user and their second factors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminUserView {
    /// The user.
    #[serde(flatten)]
    pub user: UserResponse,
    /// Their second factors (`{"totp": bool, "backup_codes_left": n}`).
    pub mfa: FactorsView,
}

/// The result of `POST /auth/admin/users/{id}/sessions/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revoked {
    /// How many sessions were revoked.
    pub revoked: u64,
}

fn parse_phone(raw: Option<String>) -> Result<Option<String>, Error> {
    let Some(raw) = raw.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else { return Ok(None) };
    let digits = raw.bytes().filter(u8::is_ascii_digit).count();
    let shape = raw.chars().count() <= MAX_PHONE_CHARS
        && raw.chars().enumerate().all(|(i, c)| c.is_ascii_digit() || " -().".contains(c) || (c == '+' && i == 0))
        && (3..=20).contains(&digits);
    if !shape {
        return Err(Error::validation(
            "invalid_phone",
            "phone: 3 to 20 digits, optionally a leading + and spaces, dashes, dots or parentheses",
        ));
    }
    Ok(Some(raw))
}

/// A path segment that can be a user id, else 404 without a lookup.
fn user_id(raw: &str) -> Result<UserId, Error> {
    let ok =
        !raw.is_empty() && raw.len() <= MAX_USER_ID_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(UserId::new(raw))
    } else {
        Err(Error::NotFound)
    }
}

/// Refuses an administrator's action on their own account that would lock
/// them out (ban, delete, withdrawing their own `admin` role): with a single
/// administrator, only direct database access could undo it.
fn not_self(admin: &Admin, target: &User, what: &str) -> Result<(), Error> {
    if admin.user.id == target.id {
        return Err(Error::Conflict {
            code: "self_lockout",
            detail: format!("administrators cannot {what} themselves"),
        });
    }
    Ok(())
}

fn role_name(raw: &str) -> Result<&str, Error> {
    if is_role_name(raw) {
        Ok(raw)
    } else {
        Err(Error::validation("invalid_role", "role: 1 to 64 of A-Z a-z 0-9 _ - . :"))
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore,
    E: EventSink,
    K: KeyRing,
{
    /// The calling administrator: a verified token on a live session, an
    /// unbanned account, and the `admin` role in the store right now.
    /// Otherwise 401, or 403 `insufficient_role` / `account_banned`.
    pub async fn require_admin(&self, meta: &Meta, bearer: Option<&str>) -> Result<Admin, Error> {
        let p = self.authenticate(meta, bearer).await?;
        let user = self.live_user(&p).await?;
        if !user.roles.iter().any(|r| r == ADMIN_ROLE) {
            return Err(Error::InsufficientRole { detail: "this endpoint requires the admin role" });
        }
        Ok(Admin { user })
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore,
    E: EventSink,
    K: KeyRing,
{
    async fn target(&self, id: &str) -> Result<User, Error> {
        self.store.user_by_id(&user_id(id)?).await?.ok_or(Error::NotFound)
    }

    /// `GET /auth/admin/users`.
    pub async fn admin_list_users(&self, _admin: &Admin, q: ListQuery) -> Result<UserList, Error> {
        let page = self.store.list_users(q.query.as_deref(), q.limit, q.offset).await?;
        Ok(UserList {
            users: page.users.iter().map(|u| u.response(None)).collect(),
            total: page.total,
            limit: q.limit,
            offset: q.offset,
        })
    }

    /// `PATCH /auth/admin/users/{id}`: validates every field before writing
    /// any. Emits `user_updated` with the names of the fields that changed.
    pub async fn admin_update_user(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        id: &str,
        req: UpdateUserRequest,
    ) -> Result<UserResponse, Error> {
        let before = self.target(id).await?;
        let mut user = before.clone();
        match req.email {
            None => {}
            Some(None) => return Err(Error::validation("invalid_email", "email: cannot be removed")),
            Some(Some(e)) => user.email = Email::parse(&e)?.as_str().to_string(),
        }
        if let Some(name) = req.name {
            user.name = parse_name(name)?;
        }
        if let Some(url) = req.avatar_url {
            user.avatar_url = parse_avatar_url(url)?;
        }
        if let Some(phone) = req.phone {
            user.phone = parse_phone(phone)?;
        }
        if let Some(locale) = req.locale {
            user.locale = parse_locale(locale)?;
        }
        if user.email != before.email {
            user.email_verified = false;
        }
        if let Some(v) = req.email_verified {
            user.email_verified = v;
        }
        let fields = changed_fields(&before, &user);
        if fields.is_empty() {
            return Ok(user.response(None));
        }
        match self.store.update_profile(&user, &fields, meta.now).await? {
            ProfileUpdate::Updated => {}
            ProfileUpdate::NotFound => return Err(Error::NotFound),
            ProfileUpdate::EmailTaken => {
                return Err(Error::Conflict {
                    code: "email_taken",
                    detail: "an account with this email already exists".into(),
                })
            }
        }
        self.emit_as(meta, rng, admin, vec![events::UserUpdated { user_id: user.id.clone(), fields }.into()]).await?;
        Ok(user.response(None))
    }

    /// `DELETE /auth/admin/users/{id}`: the user goes with their roles,
    /// sessions and emailed tokens. Emits `user_deleted`.
    pub async fn admin_delete_user(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        id: &str,
    ) -> Result<(), Error> {
        let user = self.target(id).await?;
        not_self(admin, &user, "delete")?;
        if !self.store.delete_user(&user.id).await? {
            return Err(Error::NotFound);
        }
        self.emit_as(meta, rng, admin, vec![events::UserDeleted { user_id: user.id, email: user.email }.into()]).await
    }

    /// `POST /auth/admin/users/{id}/ban` and `/unban`. Banning revokes every
    /// session at once. Emits `user_banned` (with `session_revoked`) or
    /// `user_unbanned` when the flag changes.
    pub async fn admin_set_banned(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        id: &str,
        banned: bool,
    ) -> Result<UserResponse, Error> {
        let mut user = self.target(id).await?;
        if banned {
            not_self(admin, &user, "ban")?;
        }
        let changed = self.store.set_banned(&user.id, banned, meta.now).await?;
        user.banned = banned;
        if changed {
            let events: Vec<Event> = if banned {
                vec![
                    events::UserBanned { user_id: user.id.clone() }.into(),
                    events::SessionRevoked { user_id: user.id.clone(), session_id: None, revoke_all: true }.into(),
                ]
            } else {
                vec![events::UserUnbanned { user_id: user.id.clone() }.into()]
            };
            self.emit_as(meta, rng, admin, events).await?;
        }
        Ok(user.response(None))
    }

    /// `POST /auth/admin/users/{id}/roles/{role}` (`grant`) and `DELETE`.
    /// Emits `role_added` / `role_removed` when the roles change. The new
    /// roles reach access tokens at the user's next sign-in or refresh.
    pub async fn admin_set_role(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        id: &str,
        role: &str,
        grant: bool,
    ) -> Result<UserResponse, Error> {
        let role = role_name(role)?;
        let user = self.target(id).await?;
        if !grant && role == ADMIN_ROLE {
            not_self(admin, &user, "withdraw the admin role from")?;
        }
        let changed = if grant {
            self.store.add_role(&user.id, role, meta.now).await?
        } else {
            self.store.remove_role(&user.id, role).await?
        };
        if changed {
            let (user_id, role) = (user.id.clone(), role.to_string());
            let event: Event = if grant {
                events::RoleAdded { user_id, role }.into()
            } else {
                events::RoleRemoved { user_id, role }.into()
            };
            self.emit_as(meta, rng, admin, vec![event]).await?;
        }
        Ok(self.target(&user.id).await?.response(None))
    }

    /// `POST /auth/admin/users/{id}/sessions/revoke`: signs the user out
    /// everywhere. Emits `session_revoked` with `revoke_all` when it revoked
    /// any (as `revoke-others` does: the audit log records what happened).
    pub async fn admin_revoke_sessions(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        id: &str,
    ) -> Result<Revoked, Error> {
        let user = self.target(id).await?;
        let revoked = self.store.revoke_user_sessions(&user.id, None, meta.now, "revoked_by_admin").await?;
        if revoked > 0 {
            let event = events::SessionRevoked { user_id: user.id, session_id: None, revoke_all: true };
            self.emit_as(meta, rng, admin, vec![event.into()]).await?;
        }
        Ok(Revoked { revoked })
    }
}

impl<S, E, K> Deps<'_, S, E, K>
where
    S: UserStore + SessionStore + AccountStore + MfaStore + PasskeyStore,
    E: EventSink,
    K: KeyRing,
{
    /// `GET /auth/admin/users/{id}`: the user, with their second factors.
    pub async fn admin_get_user(&self, _admin: &Admin, id: &str) -> Result<AdminUserView, Error> {
        let user = self.target(id).await?;
        let mfa = self.factors_view(&user.id).await?;
        Ok(AdminUserView { user: user.response(None), mfa })
    }

    /// `DELETE /auth/admin/users/{id}/mfa`: removes every second factor of
    /// the user (TOTP, on or enrolling, backup codes and passkeys) and, if
    /// TOTP was on or there was a passkey, revokes every session of theirs,
    /// in one write — for a user who lost their authenticator. Emits
    /// `mfa_disabled` when TOTP was on, `passkey_removed` for each passkey
    /// and `session_revoked` when sessions ended; a user without a factor is
    /// left as is, and answered the same.
    pub async fn admin_reset_mfa(
        &self,
        meta: &Meta,
        rng: &mut impl Random,
        admin: &Admin,
        id: &str,
    ) -> Result<(), Error> {
        let user = self.target(id).await?;
        let reset = self.store.reset_factors(&user.id, meta.now, MFA_CHANGE_REVOKE_REASON).await?;
        // The sessions' end is announced once, after every factor's.
        let mut events: Vec<Event> =
            if reset.totp { factors_events(&user.id, Method::Totp, false, 0) } else { Vec::new() };
        events.extend(
            reset
                .passkeys
                .into_iter()
                .map(|passkey_id| events::PasskeyRemoved { user_id: user.id.clone(), passkey_id }.into()),
        );
        if reset.revoked_sessions > 0 {
            events.push(events::SessionRevoked { user_id: user.id.clone(), session_id: None, revoke_all: true }.into());
        }
        // Every event names the administrator (`actor_id`), as every admin
        // action's does: the user's own audit view must not read it as theirs.
        if !events.is_empty() {
            self.emit_as(meta, rng, admin, events).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn list_query_defaults_caps_and_refuses() {
        assert_eq!(ListQuery::parse(None).unwrap(), ListQuery { query: None, limit: 20, offset: 0 });
        let q = ListQuery::parse(Some("query=Ada%20L&limit=500&offset=40")).unwrap();
        assert_eq!(q, ListQuery { query: Some("Ada L".into()), limit: 100, offset: 40 });
        assert_eq!(ListQuery::parse(Some("query=")).unwrap().query, None);
        for bad in [
            "limit=0",
            "limit=-1",
            "limit=x",
            "limit=%2B5",
            "limit=+5",
            "offset=-3",
            "offset=1.5",
            "offset=%2B1",
            "sort=email",
            "limit=1&limit=2",
        ] {
            assert_eq!(ListQuery::parse(Some(bad)).unwrap_err().problem().status, 422, "{bad}");
        }
        let long = format!("query={}", "a".repeat(201));
        assert!(ListQuery::parse(Some(&long)).is_err());
    }

    #[test]
    fn update_request_tells_null_from_absent() {
        let r: UpdateUserRequest = serde_json::from_str(r#"{"name": null, "phone": "+1 555 0100"}"#).unwrap();
        assert_eq!(r.name, Some(None));
        assert_eq!(r.avatar_url, None);
        assert_eq!(r.phone, Some(Some("+1 555 0100".into())));
        assert!(serde_json::from_str::<UpdateUserRequest>(r#"{"banned": true}"#).is_err());
        assert!(serde_json::from_str::<UpdateUserRequest>(r#"{"roles": ["admin"]}"#).is_err());
        assert!(serde_json::from_str::<UpdateUserRequest>(r#"{"email_verified": "yes"}"#).is_err());
    }

    #[test]
    fn avatar_urls_and_phones_are_checked() {
        assert_eq!(
            parse_avatar_url(Some("https://img.example/a.png".into())).unwrap().as_deref(),
            Some("https://img.example/a.png")
        );
        assert_eq!(parse_avatar_url(Some("  ".into())).unwrap(), None);
        // The rule a user's own edit follows: what others' browsers fetch.
        for bad in [
            "javascript:alert(1)",
            "ftp://x.example/a",
            "not a url",
            "data:image/png;base64,AAAA",
            "http://img.example/a.png",
            "https://user:pw@img.example/a.png",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://printer.lan/x",
        ] {
            assert!(parse_avatar_url(Some(bad.into())).is_err(), "{bad}");
        }
        assert!(parse_phone(Some("+44 (20) 7946-0958".into())).unwrap().is_some());
        for bad in ["12", "phone", "1+2345", "+1 555 0100 ext 5", &"1".repeat(33)] {
            assert!(parse_phone(Some(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_ids_and_roles_are_shape_checked() {
        assert!(user_id("0f8e2c1a-1111-4222-8333-444455556666").is_ok());
        for bad in ["", "../x", "a/b", "a b", &"a".repeat(65)] {
            assert_eq!(user_id(bad).unwrap_err(), Error::NotFound, "{bad}");
        }
        assert!(role_name("billing:read").is_ok());
        assert_eq!(role_name("has space").unwrap_err().problem().code, "invalid_role");
    }

    proptest! {
        #[test]
        fn list_query_parsing_never_panics(s in "\\PC{0,120}") {
            let _ = ListQuery::parse(Some(&s));
        }
    }
}
