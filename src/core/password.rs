//! Passwords: the length policy, argon2id hashing, verification (also against a
//! dummy hash, so unknown accounts cost the same time) and rehash detection.

use std::fmt;

use argon2::password_hash::{PasswordHash as PhcHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::core::error::Error;

/// OWASP's recommended argon2id memory cost (KiB).
pub const DEFAULT_MEMORY_KIB: u32 = 19_456;
/// OWASP's recommended argon2id iterations.
pub const DEFAULT_ITERATIONS: u32 = 2;
/// OWASP's recommended argon2id parallelism.
pub const DEFAULT_PARALLELISM: u32 = 1;
/// The `light` profile's memory cost (KiB): the least memory of OWASP's
/// equivalent argon2id settings (7 MiB, 5 passes, 1 lane).
pub const LIGHT_MEMORY_KIB: u32 = 7_168;
/// The `light` profile's iterations.
pub const LIGHT_ITERATIONS: u32 = 5;
/// NIST SP 800-63B minimum for user-chosen passwords.
pub const DEFAULT_MIN_CHARS: usize = 8;
/// Long enough for passphrases, short enough that hashing cost is bounded.
pub const DEFAULT_MAX_CHARS: usize = 128;
/// A hard byte cap whatever the character count (4 bytes per char at most).
const MAX_BYTES_PER_CHAR: usize = 4;

/// A named set of argon2id costs (`PASSWORD_HASH_PROFILE`), each one of the
/// settings the OWASP Password Storage Cheat Sheet lists for argon2id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashProfile {
    /// `default`: 19 MiB, 2 passes, 1 lane — OWASP's first choice.
    Default,
    /// `light`: 7 MiB, 5 passes, 1 lane — OWASP's choice with the least
    /// memory. OWASP deems it equivalent; it takes far less memory per hash
    /// and a little less CPU (0–20 % in workerd), but each guess then needs
    /// less than half the memory, which is what makes guessing on GPUs and
    /// custom hardware expensive (see docs/operations.md).
    Light,
}

impl HashProfile {
    /// Every profile's name, for messages.
    pub const NAMES: &'static str = "`default` or `light`";

    /// Parses a profile name.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "default" => Ok(Self::Default),
            "light" => Ok(Self::Light),
            other => Err(format!("{other:?} is not a profile: use {}", Self::NAMES)),
        }
    }

    /// The profile's costs.
    pub fn params(self) -> HashParams {
        match self {
            Self::Default => HashParams::default(),
            Self::Light => HashParams {
                memory_kib: LIGHT_MEMORY_KIB,
                iterations: LIGHT_ITERATIONS,
                parallelism: DEFAULT_PARALLELISM,
            },
        }
    }
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self { memory_kib: DEFAULT_MEMORY_KIB, iterations: DEFAULT_ITERATIONS, parallelism: DEFAULT_PARALLELISM }
    }
}

impl HashParams {
    /// Validates the parameters as argon2 would.
    pub fn validate(&self) -> Result<(), String> {
        self.argon2_params().map(|_| ()).map_err(|e| e.to_string())
    }

    fn argon2_params(&self) -> Result<Params, argon2::Error> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
    }

    fn hasher(&self) -> Result<Argon2<'static>, Error> {
        let params = self.argon2_params().map_err(|e| Error::Misconfigured(format!("ARGON2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Length limits on new passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters accepted.
    pub min_chars: usize,
    /// Most characters accepted.
    pub max_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_chars: DEFAULT_MIN_CHARS, max_chars: DEFAULT_MAX_CHARS }
    }
}

/// A password as typed by the user. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// A new password, checked against the policy. Spaces and any Unicode are
    /// kept (NFC-normalised, as NIST SP 800-63B advises, so the same password
    /// typed on another keyboard still matches); control characters (NUL
    /// included) are refused.
    pub fn new_checked(raw: String, policy: &PasswordPolicy) -> Result<Self, Error> {
        if raw.len() > policy.max_chars * MAX_BYTES_PER_CHAR {
            return Err(Error::validation(
                "password_too_long",
                format!("password: must have at most {} characters", policy.max_chars),
            ));
        }
        let raw = nfc(raw);
        let chars = raw.chars().count();
        if chars < policy.min_chars {
            return Err(Error::validation(
                "password_too_short",
                format!("password: must have at least {} characters", policy.min_chars),
            ));
        }
        if chars > policy.max_chars || raw.len() > policy.max_chars * MAX_BYTES_PER_CHAR {
            return Err(Error::validation(
                "password_too_long",
                format!("password: must have at most {} characters", policy.max_chars),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(Error::validation("invalid_password", "password: must not contain control characters"));
        }
        if is_common(&raw) {
            return Err(Error::validation(
                "password_too_common",
                "password: this is one of the most common passwords; choose another",
            ));
        }
        Ok(Self(raw))
    }

    /// A password presented for verification: only the length cap is applied
    /// (so a 1 MB "password" costs nothing), never the minimum, so that old
    /// passwords set under another policy still log in.
    pub fn presented(raw: String, policy: &PasswordPolicy) -> Result<Self, Error> {
        if raw.len() > policy.max_chars * MAX_BYTES_PER_CHAR {
            return Err(Error::InvalidCredentials);
        }
        let raw = nfc(raw);
        if raw.chars().count() > policy.max_chars {
            return Err(Error::InvalidCredentials);
        }
        Ok(Self(raw))
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The most common leaked passwords of 8+ characters, lowercase
/// (`common_passwords.txt`; see `scripts/gen-common-passwords.mjs` for the
/// source), sorted and front-coded by `build.rs`: each entry is the number of
/// bytes it shares with the entry before, the rest of its bytes, and `\n`.
const COMMON_PASSWORDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/common_passwords.fc"));

/// Whether `password` (compared case-insensitively) is on the common list,
/// as NIST SP 800-63B §3.1.1.2 asks of new passwords. An exact match: the
/// list is read entry by entry until one is equal or sorts after it.
pub fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let mut entries = FrontCoded::new(COMMON_PASSWORDS);
    while let Some(entry) = entries.next_entry() {
        match entry.cmp(lower.as_bytes()) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Greater => return false,
        }
    }
    false
}

/// Reads a front-coded list (see [`COMMON_PASSWORDS`]) one entry at a time.
struct FrontCoded<'a> {
    rest: &'a [u8],
    current: Vec<u8>,
}

impl<'a> FrontCoded<'a> {
    fn new(list: &'a [u8]) -> Self {
        Self { rest: list, current: Vec::with_capacity(32) }
    }

    /// The next entry, or `None` at the end (or at a malformed entry, which
    /// `build.rs` never writes).
    fn next_entry(&mut self) -> Option<&[u8]> {
        let (&shared, rest) = self.rest.split_first()?;
        let end = rest.iter().position(|&b| b == b'\n')?;
        self.current.truncate(usize::from(shared));
        self.current.extend_from_slice(&rest[..end]);
        self.rest = &rest[end + 1..];
        Some(&self.current)
    }
}

fn nfc(raw: String) -> String {
    match icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(&raw) {
        std::borrow::Cow::Borrowed(_) => raw,
        std::borrow::Cow::Owned(s) => s,
    }
}

/// A PHC-format argon2 hash string as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

impl PasswordHash {
    /// Wraps a stored hash string.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The PHC string to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Hashes `password` with `params` and the given 16-byte salt.
    pub fn create(password: &Password, params: &HashParams, salt: [u8; 16]) -> Result<Self, Error> {
        let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("salt: {e}")))?;
        let hash = params
            .hasher()?
            .hash_password(password.bytes(), &salt)
            .map_err(|e| Error::Internal(format!("argon2 hash: {e}")))?;
        Ok(Self(hash.to_string()))
    }

    /// A hash no password matches, with the given costs: verifying against it
    /// takes as long as a real verification, so unknown accounts are not faster.
    pub fn dummy(params: &HashParams) -> Self {
        Self(format!(
            "$argon2id$v=19$m={},t={},p={}$cG9ydGN1bGxpcy1kdW1teQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            params.memory_kib, params.iterations, params.parallelism
        ))
    }

    /// Whether `password` matches (argon2 compares in constant time).
    pub fn verify(&self, password: &Password) -> bool {
        match PhcHash::new(&self.0) {
            Ok(parsed) => Argon2::default().verify_password(password.bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Whether this hash was made with other costs than `params` (or another
    /// algorithm) and should be replaced after the next successful login.
    pub fn needs_rehash(&self, params: &HashParams) -> bool {
        let Ok(parsed) = PhcHash::new(&self.0) else { return true };
        if parsed.algorithm.as_str() != "argon2id" {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != params.memory_kib || p.t_cost() != params.iterations || p.p_cost() != params.parallelism
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Small costs keep native tests fast; the algorithm is the same.
    const FAST: HashParams = HashParams { memory_kib: 64, iterations: 1, parallelism: 1 };

    fn pw(s: &str) -> Password {
        Password::new_checked(s.to_string(), &PasswordPolicy::default()).unwrap()
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        for common in ["password", "12345678", "Password1", "QWERTYUIOP", "iloveyou", "trustno1"] {
            let e = Password::new_checked(common.to_string(), &PasswordPolicy::default()).unwrap_err();
            assert_eq!(e.problem().code, "password_too_common", "{common}");
        }
        assert!(!is_common("correct horse battery staple"));
        assert!(!is_common("# The 20,000 most common passwords of 8+ characters, lowercase, one per line,"));
        assert!(!is_common(""));
        // Logging in with an old common password still works: only new ones are checked.
        assert!(Password::presented("password".into(), &PasswordPolicy::default()).is_ok());
    }

    /// The front-coded list the Worker embeds is exactly the text list: its
    /// entries decode to the text's, and lookups find an entry and nothing
    /// else (an entry with a character more or less).
    #[test]
    fn the_embedded_list_is_exactly_the_text_list() {
        let text: Vec<&str> = include_str!("common_passwords.txt").lines().filter(|l| !l.starts_with('#')).collect();
        let mut decoded = Vec::new();
        let mut entries = FrontCoded::new(COMMON_PASSWORDS);
        while let Some(e) = entries.next_entry() {
            decoded.push(String::from_utf8(e.to_vec()).unwrap());
        }
        let mut sorted: Vec<&str> = text.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(decoded, sorted);
        assert!(decoded.len() > 7_000, "{}", decoded.len());
        // Every 25th entry, and the first and last (a full pass is slow in a debug build).
        let ends = [sorted[0], sorted[sorted.len() - 1]];
        for w in text.iter().step_by(25).chain(&ends) {
            assert!(is_common(w), "{w}");
            assert!(is_common(&w.to_uppercase()), "{w}");
            let longer = format!("{w}!");
            assert_eq!(is_common(&longer), text.contains(&longer.as_str()), "{longer}");
            let shorter = &w[..w.char_indices().last().map_or(0, |(i, _)| i)];
            assert_eq!(is_common(shorter), text.contains(&shorter), "{shorter}");
        }
    }

    #[test]
    fn hash_then_verify_round_trips_unicode_and_spaces() {
        let p = pw("  correct horse 🐎 bättery  ");
        let h = PasswordHash::create(&p, &FAST, [7; 16]).unwrap();
        assert!(h.as_str().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(h.verify(&p));
        assert!(!h.verify(&pw("  correct horse 🐎 bättery ")));
    }

    #[test]
    fn composed_and_decomposed_forms_are_the_same_password() {
        let h = PasswordHash::create(&pw("p\u{00e4}ssword"), &FAST, [3; 16]).unwrap();
        let presented = Password::presented("pa\u{0308}ssword".into(), &PasswordPolicy::default()).unwrap();
        assert!(h.verify(&presented));
    }

    #[test]
    fn default_params_are_owasp() {
        assert_eq!(HashParams::default(), HashParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
    }

    #[test]
    fn profiles_parse_to_owasp_settings() {
        assert_eq!(HashProfile::parse("default").unwrap().params(), HashParams::default());
        assert_eq!(
            HashProfile::parse(" light ").unwrap().params(),
            HashParams { memory_kib: 7_168, iterations: 5, parallelism: 1 }
        );
        for bad in ["", "Light", "fast", "owasp"] {
            assert!(HashProfile::parse(bad).unwrap_err().contains("`default` or `light`"), "{bad:?}");
        }
    }

    /// A hash made under one profile verifies whatever the profile is now (the
    /// costs are read from the hash), and is due for a rehash under the other.
    #[test]
    fn hashes_made_under_either_profile_verify_and_are_rehashed_under_the_other() {
        let p = pw("a passphrase under two profiles");
        let (default, light) = (HashProfile::Default.params(), HashProfile::Light.params());
        let by_default = PasswordHash::create(&p, &default, [4; 16]).unwrap();
        let by_light = PasswordHash::create(&p, &light, [5; 16]).unwrap();
        assert!(by_default.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{}", by_default.as_str());
        assert!(by_light.as_str().starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{}", by_light.as_str());
        assert!(by_default.verify(&p) && by_light.verify(&p));
        assert!(!by_light.verify(&pw("another passphrase here")));
        assert!(!by_default.needs_rehash(&default) && by_default.needs_rehash(&light));
        assert!(!by_light.needs_rehash(&light) && by_light.needs_rehash(&default));
    }

    #[test]
    fn dummy_hash_is_well_formed_and_matches_nothing() {
        let d = PasswordHash::dummy(&FAST);
        assert!(PhcHash::new(d.as_str()).is_ok());
        assert!(!d.verify(&pw("an uncommon passphrase")));
        assert!(!d.needs_rehash(&FAST));
    }

    #[test]
    fn policy_bounds_length() {
        let policy = PasswordPolicy::default();
        assert_eq!(Password::new_checked("short".into(), &policy).unwrap_err().problem().code, "password_too_short");
        assert_eq!(Password::new_checked("x".repeat(129), &policy).unwrap_err().problem().code, "password_too_long");
        assert!(Password::new_checked("x".repeat(128), &policy).is_ok());
        assert!(Password::new_checked("abc\0defgh".into(), &policy).is_err());
        assert_eq!(Password::presented("x".repeat(1 << 20), &policy).unwrap_err(), Error::InvalidCredentials);
    }

    #[test]
    fn rehash_is_needed_when_costs_change() {
        let h = PasswordHash::create(&pw("password-one"), &FAST, [1; 16]).unwrap();
        assert!(!h.needs_rehash(&FAST));
        assert!(h.needs_rehash(&HashParams { memory_kib: 128, ..FAST }));
        assert!(PasswordHash::from_stored("garbage".into()).needs_rehash(&FAST));
    }

    #[test]
    fn debug_never_prints_secrets() {
        assert!(!format!("{:?}", pw("hunter2hunter2")).contains("hunter2"));
    }
}
