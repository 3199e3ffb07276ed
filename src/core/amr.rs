//! How a user signed in: the `amr` claim (RFC 8176 authentication method
//! reference values), carried by every access token, the origin assertion and
//! `/auth/me`, kept on the session so refreshed tokens say the same.
//!
//! The values, by sign-in path:
//!
//! | path | `amr` |
//! |---|---|
//! | password (login, signup) | `pwd` |
//! | magic link, email code | `otp`: a one-time secret sent to the address |
//! | OAuth / OIDC provider | `fed` (federated; not registered by RFC 8176, used by Microsoft Entra ID and named by SPEC) |
//! | any of those, then a TOTP code or a backup code (`/auth/mfa/verify`) | the first step's value, `otp`, and `mfa` |
//!
//! `mfa` says two factors were proven in one sign-in, and is what the
//! gateway's `mfa` route policy asks for ([`crate::core::gateway::policy`]). `hwk`,
//! `swk` and `user` are reserved for passkeys: a user-verified passkey proves
//! two factors in one step and carries `mfa` as well.
//!
//! A set of known values, kept as bits: reading a token's `amr` allocates
//! nothing, and values we do not issue are ignored rather than refused (they
//! can only be in a token someone else signed, which verification refuses
//! anyway).

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of RFC 8176 authentication method references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Amr(u8);

/// Every value we know, in the order they are written.
const NAMES: [(Amr, &str); 7] = [
    (Amr::PWD, "pwd"),
    (Amr::OTP, "otp"),
    (Amr::FED, "fed"),
    (Amr::HWK, "hwk"),
    (Amr::SWK, "swk"),
    (Amr::USER, "user"),
    (Amr::MFA, "mfa"),
];

impl Amr {
    /// No method (a token issued before `amr` existed reads as this).
    pub const NONE: Amr = Amr(0);
    /// `pwd`: a password.
    pub const PWD: Amr = Amr(1);
    /// `otp`: a one-time password — an emailed code or link, a TOTP code, a
    /// backup code.
    pub const OTP: Amr = Amr(1 << 1);
    /// `fed`: an OAuth / OIDC provider vouched for the user.
    pub const FED: Amr = Amr(1 << 2);
    /// `hwk`: proof of possession of a hardware-secured key (passkeys).
    pub const HWK: Amr = Amr(1 << 3);
    /// `swk`: proof of possession of a software-secured key (passkeys).
    pub const SWK: Amr = Amr(1 << 4);
    /// `user`: user presence and verification by the authenticator (passkeys).
    pub const USER: Amr = Amr(1 << 5);
    /// `mfa`: two or more factors were proven in this sign-in.
    pub const MFA: Amr = Amr(1 << 6);

    /// Whether every method of `other` is in this set.
    pub fn contains(self, other: Amr) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The union of both sets.
    #[must_use]
    pub fn with(self, other: Amr) -> Amr {
        Amr(self.0 | other.0)
    }

    /// The values, in their fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES.into_iter().filter(move |(m, _)| self.contains(*m)).map(|(_, n)| n)
    }

    /// The method named `name`, if we know it.
    pub fn from_name(name: &str) -> Option<Amr> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(m, _)| *m)
    }

    /// The set as stored on a session: its values separated by spaces.
    pub fn to_stored(self) -> String {
        self.names().collect::<Vec<_>>().join(" ")
    }

    /// Reads [`Amr::to_stored`] back; unknown words are ignored.
    pub fn from_stored(text: &str) -> Amr {
        text.split_ascii_whitespace().filter_map(Amr::from_name).fold(Amr::NONE, Amr::with)
    }
}

impl Serialize for Amr {
    /// A JSON array of strings, e.g. `["pwd","otp","mfa"]`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for name in self.names() {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Amr {
    /// A JSON array of strings; values we do not know are skipped, anything
    /// but an array of strings is an error.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Methods;
        impl<'de> Visitor<'de> for Methods {
            type Value = Amr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of authentication method names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Amr, A::Error> {
                let mut out = Amr::NONE;
                while let Some(name) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    if let Some(m) = Amr::from_name(&name) {
                        out = out.with(m);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Methods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_serialise_in_a_fixed_order_and_read_back() {
        let a = Amr::MFA.with(Amr::OTP).with(Amr::PWD);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"["pwd","otp","mfa"]"#);
        assert_eq!(serde_json::from_str::<Amr>(r#"["mfa","pwd","otp"]"#).unwrap(), a);
        assert_eq!(Amr::from_stored(&a.to_stored()), a);
        assert_eq!(a.to_stored(), "pwd otp mfa");
        assert_eq!(serde_json::to_string(&Amr::NONE).unwrap(), "[]");
        assert_eq!(Amr::from_stored(""), Amr::NONE);
    }

    #[test]
    fn unknown_values_are_skipped_and_other_shapes_refused() {
        assert_eq!(serde_json::from_str::<Amr>(r#"["face","fed","sms"]"#).unwrap(), Amr::FED);
        for bad in [r#""pwd""#, "[1]", "{}", "null", r#"[["pwd"]]"#] {
            assert!(serde_json::from_str::<Amr>(bad).is_err(), "{bad}");
        }
        // Escaped strings are read too.
        assert_eq!(serde_json::from_str::<Amr>(r#"["\u0070wd"]"#).unwrap(), Amr::PWD);
    }

    #[test]
    fn containment_is_of_every_method() {
        let a = Amr::PWD.with(Amr::OTP);
        assert!(a.contains(Amr::PWD) && a.contains(Amr::OTP) && a.contains(a));
        assert!(!a.contains(Amr::MFA) && !a.contains(Amr::MFA.with(Amr::PWD)));
        assert!(a.contains(Amr::NONE) && Amr::NONE.is_empty());
        for (m, n) in NAMES {
            assert_eq!(Amr::from_name(n), Some(m));
            assert_eq!(m.names().collect::<Vec<_>>(), vec![n]);
        }
    }
}
