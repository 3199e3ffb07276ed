//! TOTP (RFC 6238) as authenticator apps speak it: HMAC-SHA-1 over the
//! 30-second time step, 6 digits, a 160-bit secret shown as base32, and the
//! `otpauth://totp/…` URI of Google Authenticator's key URI format.
//!
//! A code is checked against the steps before, at and after now (one step of
//! clock skew either way, RFC 6238 §5.2) and yields the step it matched; the
//! store accepts a step only if it is later than the last one used
//! ([`crate::core::ports::MfaStore::use_totp_step`]), so a code works once —
//! and so do the codes before it.
//!
//! At rest the secret is sealed (AES-256-GCM) under a subkey of
//! `KEY_ENCRYPTION_KEY`, bound to its user id: a sealed secret copied onto
//! another account does not open.

use std::fmt;

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::core::crypto::SealKey;
use crate::core::error::Error;
use crate::core::ids::{Random, UserId};
use crate::core::signing_keys::Kek;
use crate::core::time::UnixTime;

/// Digits in a TOTP code.
pub const TOTP_DIGITS: u32 = 6;
/// Length of a time step, in seconds.
pub const TOTP_PERIOD_SECS: u64 = 30;
/// Steps accepted on either side of the current one.
pub const TOTP_SKEW_STEPS: u64 = 1;
/// Length of a secret, in bytes (160 bits: RFC 4226 §4's recommendation and
/// SHA-1's output size).
pub const TOTP_SECRET_LEN: usize = 20;
/// Label of the `KEY_ENCRYPTION_KEY` subkey that seals TOTP secrets.
const SEAL_KEY_LABEL: &str = "portcullis.mfa-totp-secrets";
/// Domain of the associated data, naming its form; the user id follows.
const SEAL_AAD_LABEL: &[u8] = b"portcullis.totp-secret.v1\0";

/// RFC 4226 HOTP: the `digits`-digit code of `counter` under `key`
/// (HMAC-SHA-1, dynamic truncation).
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes keys of any length; a 20-byte key never fails.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) else { return 0 };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let word = u32::from_be_bytes([digest[offset] & 0x7f, digest[offset + 1], digest[offset + 2], digest[offset + 3]]);
    word % 10u32.pow(digits)
}

/// The time step of `now` (RFC 6238 `T`, with `T0` = 0).
pub fn step_at(now: UnixTime) -> u64 {
    u64::try_from(now.0).unwrap_or(0) / TOTP_PERIOD_SECS
}

/// `raw` as a TOTP code: six ASCII digits, spaces (as apps show them,
/// `123 456`) ignored; `None` for anything else.
pub fn parse_code(raw: &str) -> Option<String> {
    if raw.len() > 16 {
        return None;
    }
    let code: String = raw.chars().filter(|c| *c != ' ').collect();
    (code.len() == TOTP_DIGITS as usize && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// A TOTP secret. Its `Debug` prints nothing.
#[derive(Clone)]
pub struct TotpSecret([u8; TOTP_SECRET_LEN]);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// The key TOTP secrets are sealed with, derived from `KEY_ENCRYPTION_KEY`.
#[derive(Debug, Clone)]
pub struct TotpSealKey(SealKey);

impl TotpSealKey {
    /// The sealing key of a deployment.
    pub fn from_kek(kek: &Kek) -> Self {
        Self(SealKey::new(kek.derive(SEAL_KEY_LABEL)))
    }
}

fn seal_aad(user_id: &UserId) -> Vec<u8> {
    let mut aad = SEAL_AAD_LABEL.to_vec();
    aad.extend_from_slice(user_id.as_bytes());
    aad
}

impl TotpSecret {
    /// A fresh random secret.
    pub fn generate(rng: &mut impl Random) -> Self {
        Self(rng.bytes())
    }

    /// A secret from its bytes (tests and RFC vectors).
    pub fn from_bytes(bytes: [u8; TOTP_SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// The secret as authenticator apps take it: base32 (RFC 4648), no padding.
    pub fn base32(&self) -> String {
        base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &self.0)
    }

    /// The code of time step `step`.
    pub fn code_at(&self, step: u64) -> String {
        format!("{:0width$}", hotp(&self.0, step, TOTP_DIGITS), width = TOTP_DIGITS as usize)
    }

    /// The step `code` (as [`parse_code`] gives it) is the code of, among the
    /// steps from one before to one after now's; the earliest if several
    /// are. Every candidate is compared, in constant time.
    pub fn matching_step(&self, code: &str, now: UnixTime) -> Option<u64> {
        let current = step_at(now);
        let mut found = None;
        for step in current.saturating_sub(TOTP_SKEW_STEPS)..=current.saturating_add(TOTP_SKEW_STEPS) {
            let same: bool = self.code_at(step).as_bytes().ct_eq(code.as_bytes()).into();
            if same && found.is_none() {
                found = Some(step);
            }
        }
        found
    }

    /// The secret sealed for storage on account `user_id`.
    pub fn seal(&self, key: &TotpSealKey, user_id: &UserId, rng: &mut impl Random) -> Result<String, Error> {
        key.0.seal(&seal_aad(user_id), &self.0, rng)
    }

    /// Opens what [`TotpSecret::seal`] sealed for `user_id`; `None` for
    /// anything else (another key, another account, a changed byte).
    pub fn open(key: &TotpSealKey, user_id: &UserId, sealed: &str) -> Option<Self> {
        let bytes = key.0.open(&seal_aad(user_id), sealed)?;
        bytes.try_into().ok().map(Self)
    }

    /// The `otpauth://` URI authenticator apps enrol from (a QR code of it):
    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let (issuer, account) = (label_part(issuer), label_part(account));
        format!(
            "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD_SECS}",
            encode(&issuer),
            encode(&account),
            self.base32(),
            encode(&issuer)
        )
    }
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// A label part without the `:` that separates issuer and account (the key
/// URI format allows none in either, even encoded) or control characters.
fn label_part(s: &str) -> String {
    s.chars().map(|c| if c == ':' || c.is_control() { ' ' } else { c }).collect::<String>().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::test_support::SeqRandom;

    /// RFC 6238 appendix B, the SHA-1 rows: (time, step, 8-digit code) under
    /// the ASCII key "12345678901234567890".
    const RFC_6238_SHA1: [(i64, u64, u32); 6] = [
        (59, 0x1, 94_287_082),
        (1_111_111_109, 0x23523EC, 7_081_804),
        (1_111_111_111, 0x23523ED, 14_050_471),
        (1_234_567_890, 0x273EF07, 89_005_924),
        (2_000_000_000, 0x3F940AA, 69_279_037),
        (20_000_000_000, 0x27BC86AA, 65_353_130),
    ];

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let key = b"12345678901234567890";
        for (time, step, code) in RFC_6238_SHA1 {
            assert_eq!(step_at(UnixTime(time)), step, "T at {time}");
            assert_eq!(hotp(key, step, 8), code, "code at {time}");
            // Six digits are the last six of the eight (both are the
            // truncated value modulo a power of ten).
            let secret = TotpSecret::from_bytes(*key);
            assert_eq!(secret.code_at(step), format!("{:06}", code % 1_000_000));
            assert_eq!(secret.matching_step(&format!("{:06}", code % 1_000_000), UnixTime(time)), Some(step));
        }
    }

    #[test]
    fn rfc_4226_appendix_d_hotp_values() {
        let key = b"12345678901234567890";
        let expected = [755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871, 520_489];
        for (counter, code) in expected.into_iter().enumerate() {
            assert_eq!(hotp(key, counter as u64, 6), code, "counter {counter}");
        }
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let secret = TotpSecret::generate(&mut SeqRandom(3));
        let now = UnixTime(1_700_000_015);
        let step = step_at(now);
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let s = (step as i64 + offset) as u64;
            let code = secret.code_at(s);
            let found = secret.matching_step(&code, now);
            if accepted {
                assert_eq!(found, Some(s), "offset {offset}");
            } else {
                // A far step's code may collide with a near one's by chance
                // (one in a million); these seeds do not.
                assert_eq!(found, None, "offset {offset}");
            }
        }
        assert_eq!(secret.matching_step("12345", now), None);
    }

    #[test]
    fn codes_parse_with_or_without_the_apps_space() {
        assert_eq!(parse_code("123456").as_deref(), Some("123456"));
        assert_eq!(parse_code(" 123 456 ").as_deref(), Some("123456"));
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６", "12-3456", &"1".repeat(40)] {
            assert_eq!(parse_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_base32_and_seal_to_their_account_only() {
        let secret = TotpSecret::from_bytes(*b"12345678901234567890");
        assert_eq!(secret.base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let key = TotpSealKey::from_kek(&Kek::from_bytes([4; 32]));
        let sealed = secret.seal(&key, &"user-1".into(), &mut SeqRandom(9)).unwrap();
        assert!(!sealed.contains("GEZDGNBV"));
        assert_eq!(TotpSecret::open(&key, &"user-1".into(), &sealed).unwrap().base32(), secret.base32());
        assert!(TotpSecret::open(&key, &"user-2".into(), &sealed).is_none(), "copied onto another account");
        let other = TotpSealKey::from_kek(&Kek::from_bytes([5; 32]));
        assert!(TotpSecret::open(&other, &"user-1".into(), &sealed).is_none(), "another KEK");
        assert_eq!(format!("{secret:?}"), "TotpSecret(<redacted>)");
    }

    #[test]
    fn the_otpauth_uri_follows_the_key_uri_format() {
        let secret = TotpSecret::from_bytes(*b"12345678901234567890");
        assert_eq!(
            secret.otpauth_uri("Acme Corp", "ada@example.com"),
            "otpauth://totp/Acme%20Corp:ada%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Acme%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        // A colon would end the issuer early: it becomes a space.
        assert!(secret.otpauth_uri("a:b", "x@y.z").starts_with("otpauth://totp/a%20b:x%40y.z?"));
        assert!(secret.otpauth_uri("Ünï & co", "x@y.z").contains("issuer=%C3%9Cn%C3%AF%20%26%20co&"));
    }
}
