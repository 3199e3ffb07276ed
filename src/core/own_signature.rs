//! Recognising a signature our own Ed25519 key made, without a signature
//! operation: the gateway's check of a never-seen token of its own key.
//!
//! An RFC 8032 signature `R ‖ S` by the key with secret scalar `a`, nonce
//! prefix `p` and public key `A` over `M` is `R = r·B` and
//! `S = r + k·a (mod L)`, where `r = SHA-512(p ‖ M)` and
//! `k = SHA-512(R ‖ A ‖ M)` (§5.1.6). Holding `a` and `p`, the check takes
//! the presented `R`, computes that `S` — two hashes and one multiply-add
//! modulo `L`, no point arithmetic — and compares it with the presented `S`
//! in constant time. Every signature our key makes passes (the runtime's
//! BoringSSL and ed25519-compact both sign as the RFC does: tested against
//! its vectors).
//!
//! Nothing else passes, short of knowing the private key:
//! - for a message we never signed, `r` is the output of a keyed hash the
//!   caller has never seen, so the `S` it needs is unpredictable (the same
//!   assumption every deterministic Ed25519 signer makes of its nonces);
//! - for a message we signed as `R ‖ S`, another `R'` needs
//!   `S' = S + (k' − k)·a`, and anyone who could produce it could solve that
//!   for `a`: the private key itself.
//!
//! So, as long as the secret scalar stays secret, a passing signature is one
//! our key made, hence valid for any verifier. (Whoever knows `a` can make
//! passing signatures with any `R`, some invalid for other verifiers; but
//! whoever knows `a` can forge valid signatures anyway.) The scalar
//! arithmetic must be constant time: with the message fixed and `R` varied,
//! an attacker knows each `k` and any timing that depended on `k·a` would
//! leak `a` (curve25519-dalek ≥ 4.1.3). A signature that does not pass
//! proves nothing (it may be a valid signature another signer made) and the
//! caller verifies it the ordinary way.

use std::fmt;

use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Length of an Ed25519 signature (`R ‖ S`).
pub const SIGNATURE_LEN: usize = 64;

/// What an Ed25519 private key needs to recognise its own signatures: its
/// secret scalar, its nonce prefix and its public key. Its `Debug` prints
/// nothing.
#[derive(Clone)]
pub struct OwnSignatures {
    scalar: Scalar,
    prefix: [u8; 32],
    public: [u8; 32],
}

impl fmt::Debug for OwnSignatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnSignatures(<redacted>)")
    }
}

impl OwnSignatures {
    /// For the key with this 32-byte `seed` (RFC 8032's private key) and its
    /// `public` key. The caller holds both as one key pair.
    pub fn new(seed: &[u8; 32], public: &[u8; 32]) -> Self {
        let expanded = Sha512::digest(seed);
        let mut low = [0u8; 32];
        low.copy_from_slice(&expanded[..32]);
        // RFC 8032 §5.1.5: the secret scalar is the clamped low half.
        low[0] &= 248;
        low[31] &= 127;
        low[31] |= 64;
        let mut prefix = [0u8; 32];
        prefix.copy_from_slice(&expanded[32..]);
        Self { scalar: Scalar::from_bytes_mod_order(low), prefix, public: *public }
    }

    /// Whether `signature` is, byte for byte, the RFC 8032 signature this
    /// key makes over `message`. Constant time in the signature's content.
    pub fn made(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; SIGNATURE_LEN]>::try_from(signature) else { return false };
        let (r_encoded, s_presented) = signature.split_at(32);
        let nonce = wide_scalar(Sha512::new().chain_update(self.prefix).chain_update(message));
        let challenge =
            wide_scalar(Sha512::new().chain_update(r_encoded).chain_update(self.public).chain_update(message));
        let s = nonce + challenge * self.scalar;
        bool::from(s.as_bytes().as_slice().ct_eq(s_presented))
    }
}

/// A SHA-512 digest read as a little-endian integer modulo `L`.
fn wide_scalar(hash: Sha512) -> Scalar {
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&hash.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_compact::{KeyPair, Seed};
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn pair(seed: [u8; 32]) -> (KeyPair, OwnSignatures) {
        let kp = KeyPair::from_seed(Seed::new(seed));
        let own = OwnSignatures::new(&seed, &kp.pk);
        (kp, own)
    }

    /// RFC 8032 §7.1 TEST 1, 2 and 3: (seed, public key, message, signature).
    const VECTORS: [(&str, &str, &str, &str); 3] = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];

    #[test]
    fn rfc_8032_signatures_are_recognised_as_their_keys_own() {
        for (seed, public, message, signature) in VECTORS {
            let (seed, public) = (hex(seed).try_into().unwrap(), hex(public).try_into().unwrap());
            let own = OwnSignatures::new(&seed, &public);
            assert!(own.made(&hex(message), &hex(signature)));
            // The key pair ed25519-compact derives from the seed is the RFC's.
            assert_eq!(pair(seed).0.pk.as_ref(), public.as_slice());
        }
    }

    #[test]
    fn every_byte_of_r_and_s_and_of_the_message_counts() {
        let (kp, own) = pair([7; 32]);
        let message = b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0";
        let signature = kp.sk.sign(message, None).to_vec();
        assert!(own.made(message, &signature));
        for i in 0..SIGNATURE_LEN {
            for bit in [0x01, 0x80] {
                let mut bad = signature.clone();
                bad[i] ^= bit;
                assert!(!own.made(message, &bad), "byte {i}, bit {bit:#x}");
            }
        }
        for i in 0..message.len() {
            let mut other = message.to_vec();
            other[i] ^= 0x01;
            assert!(!own.made(&other, &signature), "message byte {i}");
        }
    }

    #[test]
    fn malleated_short_long_and_foreign_signatures_are_not_our_own() {
        // L, the group order, little-endian: S + L verifies with lax verifiers.
        let order = hex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let (kp, own) = pair([9; 32]);
        let signature = kp.sk.sign(b"m", None).to_vec();
        let mut plus_l = signature.clone();
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(plus_l[32 + i]) + u16::from(order[i]) + carry;
            plus_l[32 + i] = (v & 0xff) as u8;
            carry = v >> 8;
        }
        assert!(kp.pk.verify(b"m", &ed25519_compact::Signature::from_slice(&signature).unwrap()).is_ok());
        assert!(!own.made(b"m", &plus_l));
        assert!(!own.made(b"m", &signature[..63]));
        assert!(!own.made(b"m", &[signature.as_slice(), &[0]].concat()));
        assert!(!own.made(b"m", &[]));
        assert!(!own.made(b"m", &[0; SIGNATURE_LEN]));
        // Another key's valid signature over the same message.
        let (other, _) = pair([10; 32]);
        assert!(!own.made(b"m", other.sk.sign(b"m", None).as_ref()));
        // A signature of ours over another message, and a hedged (randomised)
        // one over this message: valid, but not the one we make, so the
        // caller verifies them.
        assert!(!own.made(b"m", kp.sk.sign(b"n", None).as_ref()));
        let hedged = kp.sk.sign(b"m", Some(ed25519_compact::Noise::from_slice(&[1; 16]).unwrap()));
        assert!(kp.pk.verify(b"m", &hedged).is_ok());
        assert!(!own.made(b"m", hedged.as_ref()));
    }

    #[test]
    fn the_check_holds_only_while_the_secret_scalar_is_secret() {
        // The premise, made visible: with `a` in hand, an S for any other R
        // (here the identity point's encoding) passes the check yet is no
        // valid signature. Without `a` this S cannot be computed: S₀ and k
        // are public, (k′ − k)·a is not.
        let (kp, own) = pair([5; 32]);
        let message = b"m";
        let signature = kp.sk.sign(message, None).to_vec();
        let challenge =
            |r: &[u8]| wide_scalar(Sha512::new().chain_update(r).chain_update(kp.pk.as_ref()).chain_update(message));
        let mut other_r = [0u8; 32];
        other_r[0] = 1;
        let s0 = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap();
        let s = s0 + (challenge(&other_r) - challenge(&signature[..32])) * own.scalar;
        let forged = [other_r.as_slice(), s.as_bytes()].concat();
        assert!(own.made(message, &forged));
        let forged = ed25519_compact::Signature::from_slice(&forged).unwrap();
        assert!(kp.pk.verify(message, &forged).is_err());
    }

    #[test]
    fn debug_prints_no_secret() {
        let (_, own) = pair([3; 32]);
        assert_eq!(format!("{own:?}"), "OwnSignatures(<redacted>)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Differential against ed25519-compact: exactly the signatures it
        /// makes over the message are recognised, and any single flipped bit
        /// of R, S or the message makes one that is not.
        #[test]
        fn recognises_exactly_the_rfc_signature(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..700),
            flip in 0usize..(SIGNATURE_LEN * 8),
        ) {
            let (kp, own) = pair(seed);
            let signature = kp.sk.sign(&message, None).to_vec();
            prop_assert!(own.made(&message, &signature));
            let mut bad = signature.clone();
            bad[flip / 8] ^= 1 << (flip % 8);
            prop_assert!(!own.made(&message, &bad));
            let mut longer = message.clone();
            longer.push(0);
            prop_assert!(!own.made(&longer, &signature));
        }
    }
}
