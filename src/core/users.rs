//! Users as stored and as shown (`UserResponse`).

use serde::{Deserialize, Serialize};

use crate::core::ids::{SessionId, UserId};
use crate::core::time::UnixTime;

/// A role name: 1 to 64 ASCII letters, digits or `_ - . :` ([`Role::parse`]),
/// as `user_roles` stores it, tokens claim it and route rules name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Role(String);

impl Role {
    /// Whether `s` is a role name (also the rule for claims and `ROUTES`).
    pub fn is_name(s: &str) -> bool {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
    }

    /// `s` as a role, if it is a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::is_name(s).then(|| Self(s.to_string()))
    }

    /// A role as stored (its name was checked when it was granted).
    pub fn stored(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Role {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Role {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Role {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl From<&str> for Role {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// Longest display name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// UUID.
    pub id: UserId,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// PHC argon2 hash; `None` for passwordless accounts.
    pub password_hash: Option<String>,
    /// Whether the email address is verified.
    pub email_verified: bool,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Banned users cannot sign in or refresh.
    pub banned: bool,
    /// Role names, sorted.
    pub roles: Vec<Role>,
    /// Creation time.
    pub created_at: UnixTime,
    /// The account epoch: bumped in the same write as every change that
    /// voids what was granted before it (a password change or reset, a ban,
    /// a new address, a takeover). Emailed tokens, sign-ins in flight and
    /// pending OAuth links carry the epoch they were granted under and die
    /// when it moves. New accounts start at 0.
    pub auth_epoch: u64,
    /// The user's language (a normalised BCP 47 tag), given at sign-up:
    /// the language of the emails sent to them.
    pub locale: Option<String>,
}

/// The public view of a user (AuthFort's `UserResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserResponse {
    /// UUID.
    pub id: UserId,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Whether banned.
    pub banned: bool,
    /// Roles.
    pub roles: Vec<Role>,
    /// RFC 3339.
    pub created_at: String,
    /// The session the response belongs to, if any.
    pub session_id: Option<SessionId>,
}

impl User {
    /// A new account `id` for the normalised `email`, created `now`: no
    /// name, password, avatar, phone or roles, not banned, not verified,
    /// at epoch 0, without a language. Callers set what their sign-up knows.
    pub fn new(id: UserId, email: String, now: UnixTime) -> Self {
        Self {
            id,
            email,
            name: None,
            password_hash: None,
            email_verified: false,
            avatar_url: None,
            phone: None,
            banned: false,
            roles: Vec::new(),
            created_at: now,
            auth_epoch: 0,
            locale: None,
        }
    }

    /// The public view, tied to `session_id`.
    pub fn response(&self, session_id: Option<&SessionId>) -> UserResponse {
        UserResponse {
            id: self.id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            email_verified: self.email_verified,
            avatar_url: self.avatar_url.clone(),
            phone: self.phone.clone(),
            banned: self.banned,
            roles: self.roles.clone(),
            created_at: self.created_at.rfc3339(),
            session_id: session_id.cloned(),
        }
    }
}

/// One page of a user listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// The users on this page, newest first.
    pub users: Vec<User>,
    /// How many users match the query in all.
    pub total: u64,
}

/// What writing an edited profile led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileUpdate {
    /// Written.
    Updated,
    /// No user has that id.
    NotFound,
    /// The new email belongs to another account.
    EmailTaken,
}

/// A user's edit of their own profile (`PATCH /auth/me`): each field
/// `None` when not given (left as it is), `Some(None)` to clear it, checked
/// and normalised before it gets here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileEdit {
    /// Display name.
    pub name: Option<Option<String>>,
    /// Avatar URL.
    pub avatar_url: Option<Option<String>>,
    /// Language of the user's emails (a normalised BCP 47 tag).
    pub locale: Option<Option<String>>,
}

impl ProfileEdit {
    /// `user` with the edit applied.
    pub fn applied_to(&self, user: &User) -> User {
        let mut after = user.clone();
        if let Some(name) = &self.name {
            after.name.clone_from(name);
        }
        if let Some(url) = &self.avatar_url {
            after.avatar_url.clone_from(url);
        }
        if let Some(locale) = &self.locale {
            after.locale.clone_from(locale);
        }
        after
    }
}

/// Whether `c` is a control character or one of Unicode's bidirectional
/// formatting characters (UAX #9: the marks, embeddings, overrides and
/// isolates), which can make a name shown in a page or an email read as
/// other text ("Trojan Source", CVE-2021-42574). Names refuse both.
pub fn is_unsafe_in_name(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}
