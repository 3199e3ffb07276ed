//! Sign-in with OAuth 2.0 / OpenID Connect providers: their configuration
//! (`OAUTH_PROVIDERS`, `REDIRECT_ALLOWLIST`), PKCE, the redirect allowlist,
//! the sign-in state and one-time exchange codes, and the two ports the flows
//! reach the world through ([`OAuthStore`], [`ProviderNet`]).
//!
//! The flows themselves are in [`crate::core::flows::oauth`]; ID-token checks
//! in [`idtoken`]; provider requests and replies in [`provider`].
#![allow(async_fn_in_trait)] // Send is not needed: a Worker isolate is single-threaded.

pub mod config;
pub mod idtoken;
pub mod provider;
pub mod redirect;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::crypto::b64url;
use crate::core::crypto::SealKey;
use crate::core::error::Error;
use crate::core::ids::{Random, SessionId, UserId};
use crate::core::outbound::{HttpReply, SendError};
use crate::core::session::LiveSession;
use crate::core::time::UnixTime;

pub use config::{OAuthConfig, ProviderConfig, ProviderKind};

/// How long a sign-in may take between `/authorize` and `/callback`.
pub const STATE_TTL_SECS: u64 = 600;
/// How long the app has to swap a one-time code for its tokens.
pub const EXCHANGE_TTL_SECS: u64 = 60;
/// Cookie binding a sign-in to the browser that started it.
pub const BINDING_COOKIE: &str = "__Host-portcullis_oauth";

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    b64url(Sha256::digest(verifier.as_bytes()))
}

/// The PKCE S256 `code_challenge` an app passes with a browser sign-in
/// (the hosted pages' `code_challenge`): the one-time code that sign-in
/// issues is swapped at `/auth/oauth/exchange` only with the
/// `code_verifier` it was made from, which only the browser that started
/// the sign-in holds. This binds the code to that browser: a code an
/// attacker obtained for their own account cannot be planted in a victim's
/// app (login CSRF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// Parses a challenge: the base64url SHA-256 of a verifier, 43
    /// characters without padding; `None` for anything else.
    pub fn parse(v: &str) -> Option<Self> {
        (v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .then(|| Self(v.to_string()))
    }

    /// The challenge an app starts a browser sign-in with (a hosted page's,
    /// or `/auth/oauth/{id}/authorize`'s `code_challenge`), as the browser
    /// brought it (`asked`). Required whenever the sign-in ends in a
    /// one-time code (`codes_issued`: token mode, or cookie mode with
    /// `COOKIE_MODE_BODY_TOKENS`): an unbound code could be planted in a
    /// victim's app (login CSRF). Optional only in plain cookie mode, where
    /// no code is issued. Missing where required, or malformed: 400
    /// `invalid_code_challenge`.
    pub fn from_app(asked: Option<&str>, codes_issued: bool) -> Result<Option<Self>, Error> {
        let refused = |detail: &str| Error::BadRequest { code: "invalid_code_challenge", detail: detail.into() };
        match asked.filter(|a| !a.is_empty()) {
            Some(a) => Self::parse(a).map(Some).ok_or_else(|| {
                refused("code_challenge must be the base64url SHA-256 (S256) of the app's code_verifier")
            }),
            None if !codes_issued => Ok(None),
            None => Err(refused(
                "the app must start a sign-in with a code_challenge (S256) and send its code_verifier to \
                 /auth/oauth/exchange",
            )),
        }
    }

    /// The challenge's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `verifier` (RFC 7636: 43 to 128 characters of
    /// `A-Z a-z 0-9 - . _ ~`) is the one this challenge was made from,
    /// compared in constant time.
    pub fn is_met_by(&self, verifier: &str) -> bool {
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        well_formed && bool::from(pkce_challenge(verifier).as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// A sign-in in progress, stored (under the hash of its `state`) from
/// `/authorize` until its callback consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthState {
    /// SHA-256 of the `state` parameter (base64url).
    pub hash: String,
    /// Provider id.
    pub provider: String,
    /// The PKCE verifier, sent with the code to the token endpoint.
    pub code_verifier: String,
    /// The `nonce` the ID token must carry (OIDC).
    pub nonce: String,
    /// Where the browser goes afterwards (already checked against the allowlist).
    pub redirect_to: String,
    /// The signed-in user who asked to link this provider, if linking.
    pub link_user_id: Option<UserId>,
    /// That user's account epoch then: the link completes only while it
    /// stands (0 when not linking).
    pub link_epoch: u64,
    /// The session that asked to link: the link completes only while it is
    /// live (signing out stops it).
    pub link_session_id: Option<SessionId>,
    /// SHA-256 of the binding cookie set on the browser that started the sign-in.
    pub binding_hash: String,
    /// The app's PKCE challenge ([`CodeChallenge`]) the sign-in's exchange
    /// code is bound to (none when linking, or in cookie mode without one).
    pub code_challenge: Option<CodeChallenge>,
    /// Issued.
    pub created_at: UnixTime,
    /// Dead after.
    pub expires_at: UnixTime,
}

/// A provider identity linked to a user (`oauth_accounts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// Provider id.
    pub provider: String,
    /// The provider's stable subject (`sub`, or GitHub's numeric user id).
    pub subject: String,
    /// The user it signs in.
    pub user_id: UserId,
    /// The email the provider reported when it was linked.
    pub email: Option<String>,
    /// Whether the provider said it verified that email.
    pub email_verified: bool,
    /// When it was linked (Unix seconds).
    pub linked_at: UnixTime,
}

/// Why unlinking did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlink {
    /// The identity was removed.
    Done,
    /// The user has no identity of that provider.
    NotLinked,
    /// It is the user's last way to sign in (no password, no other provider).
    LastMethod,
    /// The caller's session is no longer live (revoked or ended since the
    /// caller authenticated): nothing was written.
    SessionEnded,
}

/// What looking for a sign-in state at a callback found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateTake {
    /// The state, now consumed: this callback came from the browser that
    /// started the sign-in, and no other callback will get it.
    Taken(Box<OAuthState>),
    /// A live state, but the callback did not carry its browser's binding
    /// cookie (none, or another): nothing was written, and the state is still
    /// there for the browser that holds the right one.
    OtherBrowser,
    /// No live state under that hash: unknown, already used, or expired.
    Unknown,
}

/// Storage of sign-ins in progress, exchange codes and linked identities.
/// Consumption is one conditional write, so of racing requests exactly one
/// gets a state or a code.
pub trait OAuthStore {
    /// Stores a sign-in in progress (one that links no user).
    async fn put_oauth_state(&self, state: &OAuthState) -> Result<(), Error>;
    /// Stores a link in progress for `caller`'s user (`state.link_user_id`)
    /// if, in the same write, `caller`'s session is still live and that
    /// user is unbanned with the account epoch `state.link_epoch`: a link
    /// started by a request whose session a takeover (or anything else)
    /// revoked, or whose account changed after it was read, is never
    /// stored. `Ok(false)`, nothing written, otherwise.
    async fn put_link_state(&self, state: &OAuthState, caller: &LiveSession<'_>) -> Result<bool, Error>;
    /// Consumes the unexpired state whose hash is `hash` only if it was
    /// stored with `binding_hash` — the binding is checked in the same
    /// conditional write that removes it, so of any number of racing
    /// callbacks with the right binding exactly one gets
    /// [`StateTake::Taken`], and a callback without it (`None`) or with
    /// another one writes nothing and gets [`StateTake::OtherBrowser`]: it
    /// cannot spend the real browser's sign-in.
    async fn take_oauth_state(&self, hash: &str, binding_hash: Option<&str>, now: UnixTime)
        -> Result<StateTake, Error>;
    /// Stores a sealed sign-in result under the hash of its one-time code.
    async fn put_exchange(&self, hash: &str, sealed: &str, expires_at: UnixTime) -> Result<(), Error>;
    /// Removes and returns the sealed result for `hash`, if it is unexpired.
    async fn take_exchange(&self, hash: &str, now: UnixTime) -> Result<Option<String>, Error>;
    /// The identity `subject` at `provider`, if linked.
    async fn identity(&self, provider: &str, subject: &str) -> Result<Option<LinkedIdentity>, Error>;
    /// The user's identities, oldest first.
    async fn identities_of(&self, user_id: &UserId) -> Result<Vec<LinkedIdentity>, Error>;
    /// Links `identity` if its user's account epoch is still `user_epoch`
    /// (the one the link started under) and the session that started it,
    /// `by`, is still live, decided in the same write; `Ok(false)` (nothing
    /// written) when that identity is linked already, the user already has
    /// one of that provider, the epoch moved or the session ended.
    async fn link_identity(
        &self,
        identity: &LinkedIdentity,
        user_epoch: u64,
        by: &LiveSession<'_>,
    ) -> Result<bool, Error>;
    /// Creates `user` (no roles) and links `identity` to it in one write;
    /// `Ok(false)` (nothing written) when the email or identity is taken.
    async fn create_oauth_user(
        &self,
        user: &crate::core::users::User,
        identity: &LinkedIdentity,
    ) -> Result<bool, Error>;
    /// Unlinks the identity of `provider` of `caller`'s user unless it is
    /// their last way to sign in or `caller`'s session is no longer live,
    /// decided in the same write.
    async fn unlink_identity(&self, caller: &LiveSession<'_>, provider: &str) -> Result<Unlink, Error>;
}

/// What a provider call looks like: `GET`, or a form `POST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Absolute URL.
    pub url: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// `application/x-www-form-urlencoded` body, for `POST`.
    pub form: Option<String>,
    /// Give up after this long.
    pub timeout_ms: u32,
}

/// JWS algorithms accepted in provider ID tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwsAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl JwsAlg {
    /// From a JOSE `alg` name; `none`, HMAC and anything else are refused.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// Outbound calls to providers, signature checks and the isolate's cache of
/// provider documents (discovery, JWKS).
pub trait ProviderNet {
    /// Sends `request`; redirects are not followed.
    async fn send(&self, request: &ProviderRequest) -> Result<HttpReply, SendError>;
    /// Verifies `signature` over `signed` with the public `jwk` (already
    /// matched to `alg`). `Ok(false)` for a bad signature or an unusable key.
    async fn verify(
        &self,
        alg: JwsAlg,
        jwk: &serde_json::Value,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error>;
    /// A cached document and when it was fetched.
    fn cached(&self, key: &str) -> Option<(UnixTime, String)>;
    /// Caches a document.
    fn cache(&self, key: &str, fetched_at: UnixTime, body: &str);
    /// Hears why a provider call failed, for the log (the client only gets a code).
    fn report(&self, warning: &str);
}

fn exchange_key(code: &str) -> SealKey {
    // The code carries 256 random bits; a hash of it is a fine AES key, and
    // it never reaches storage (only `token_hash(code)` does).
    let mut h = Sha256::new();
    h.update(b"portcullis.oauth.exchange\0");
    h.update(code.as_bytes());
    SealKey::new(h.finalize().into())
}

/// Seals a sign-in result under a key derived from its one-time `code`, so
/// the stored row is useless without the code.
pub fn seal(code: &str, plaintext: &str, rng: &mut impl Random) -> Result<String, Error> {
    exchange_key(code).seal(b"oauth-exchange", plaintext.as_bytes(), rng)
}

/// Opens what [`seal`] sealed with `code`; `None` if it does not open.
pub fn open(code: &str, sealed: &str) -> Option<String> {
    String::from_utf8(exchange_key(code).open(b"oauth-exchange", sealed)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn sealed_results_open_only_with_their_code() {
        let sealed = seal("code-a", "{\"x\":1}", &mut SeqRandom(3)).unwrap();
        assert_eq!(open("code-a", &sealed).as_deref(), Some("{\"x\":1}"));
        assert_eq!(open("code-b", &sealed), None);
        assert_eq!(open("code-a", "AAAA"), None);
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        for name in ["none", "HS256", "HS512", "RS512", "PS256", "", "rs256"] {
            assert_eq!(JwsAlg::parse(name), None, "{name}");
        }
        for alg in [JwsAlg::Rs256, JwsAlg::Es256, JwsAlg::EdDsa] {
            assert_eq!(JwsAlg::parse(alg.as_str()), Some(alg));
        }
    }
}
