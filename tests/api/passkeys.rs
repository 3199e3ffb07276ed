//! Passkeys: registration and sign-in against a software authenticator
//! built here (real P-256 and Ed25519 keys, authenticator data and
//! attestation objects assembled byte by byte), and every refusal.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use rsa::pkcs8::DecodePrivateKey;

use rsa::traits::PublicKeyParts;
use serde_json::Value;
use sha2::{Digest, Sha256};

use portcullis::core::amr::Amr;
use portcullis::core::error::Error;
use portcullis::core::flows::magic_link::MagicLinkVerifyRequest;
use portcullis::core::flows::mfa::CodeRequest;
use portcullis::core::flows::passkeys::{
    AssertionResponse, AttestationResponse, AuthenticationCredential, LoginOptionsRequest, LoginVerifyRequest,
    PasskeyCreated, RegisterOptionsRequest, RegisterVerifyRequest, RegistrationCredential, RenameRequest,
};
use portcullis::core::flows::{AuthResponse, SignIn};
use portcullis::core::mfa::totp::{step_at, TotpSecret};
use portcullis::core::passkey::PublicKey;
use portcullis::core::ports::{PasskeyVerifier, Result as PortResult};
use portcullis::core::time::UnixTime;

use crate::support::{block_on, code, signup_at, user, TestRandom, World};

const ADA: &str = "ada@example.com";
const BOB: &str = "bob@example.com";
const PW: &str = "correct horse battery";
const ORIGIN: &str = "https://app.example.com";
const T0: i64 = 1_700_000_010;

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn world() -> World {
    World::new(&[("RP_ID", "example.com"), ("RP_ORIGINS", ORIGIN), ("RP_NAME", "Example")])
}

/// RFC 8032 verification as BoringSSL does it (the runtime's `node:crypto`):
/// the key decoded leniently, no check of its order, `S` below the group
/// order, and `[S]B − [k]A` compared with `R` as bytes (cofactorless). It
/// accepts what a small-order key "signs", as the runtime does: the flow
/// must refuse such keys itself.
fn cofactorless_verify(key: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use sha2::Sha512;
    let Some(a) = CompressedEdwardsY(*key).decompress() else { return false };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(sig[32..].try_into().unwrap())) else {
        return false;
    };
    let k = Sha512::new().chain_update(&sig[..32]).chain_update(key).chain_update(message).finalize();
    let k = Scalar::from_bytes_mod_order_wide(&k.into());
    // As ref10 computes it: A negated, then [k](−A) + [S]B (for a key with a
    // torsion part, [−k mod L]A would differ: L is 5 mod 8).
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s).compress().0 == sig[..32]
}

/// Verifies with the pure-Rust crates: what the runtime's crypto does at the edge.
struct TestVerifier;

impl PasskeyVerifier for TestVerifier {
    fn accepts_key(&self, key: &PublicKey) -> bool {
        match key {
            PublicKey::P256 { x, y } => p256::PublicKey::from_sec1_bytes(&[&[4u8][..], x, y].concat()).is_ok(),
            PublicKey::Ed25519(_) => true,
            PublicKey::Rsa { n, e } => rsa_public(n, e).is_some(),
        }
    }

    async fn verify_passkey(&self, key: &PublicKey, signed: &[u8], signature: &[u8]) -> PortResult<bool> {
        Ok(match key {
            PublicKey::Ed25519(x) => signature.try_into().is_ok_and(|sig| cofactorless_verify(x, signed, sig)),
            PublicKey::P256 { x, y } => {
                use p256::ecdsa::signature::Verifier;
                let sec1 = [&[4u8][..], x, y].concat();
                let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
                p256::ecdsa::Signature::from_der(signature).is_ok_and(|s| vk.verify(signed, &s).is_ok())
            }
            PublicKey::Rsa { n, e } => {
                use rsa::signature::Verifier;
                let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa_public(n, e).unwrap());
                rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| vk.verify(signed, &s).is_ok())
            }
        })
    }
}

fn rsa_test_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_der(&base64::engine::general_purpose::STANDARD.decode(RSA_TEST_KEY).unwrap())
        .unwrap()
}

fn rsa_public(n: &[u8], e: &[u8]) -> Option<rsa::RsaPublicKey> {
    rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from_bytes_be(e)).ok()
}

/// A 2048-bit RSA key made for these tests (`openssl genpkey`), PKCS #8 DER in base64:
/// nothing secret, and no PEM block for secret scanners to flag.
const RSA_TEST_KEY: &str = concat!(
    "MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDaz8JxUuYFcoVU0dYvrBU76S8kfUjIm796atFXQzBykFSi",
    "s6Ll2gzNiJO9RBqJm22gZ3bLM3neOn902Z7mU72Pq2h+H6YvjWrc+Kl3eL4dbvyNcJsMAcUCGBQfUDxYuaxbifaAICgX2Gzh",
    "vi8TMHP7FiujQNw9gCytfin0VAl1FfEIXkkw64AfxbXvV4Htkr3XRKTlrIoZsnMOYbZcVhmzpkWq56PzFQ9+KwtAPLAzqkby",
    "PJZHhpCgFRH7K98keB/E9IgjINF8IoKbKQMPQkiDV9uM6/WA35tyk9fNvpLu/m7r8/yEofmj2H/eyQ8HiAmMNQAZTKZOdtLW",
    "jwr0h1jnAgMBAAECggEAVycsbAXYX7ATIksoFDnnBUNmRxLtxBWhCUn1ktvMtrz9MQb66bFVqyHsspSnO0sguaSsQNiCgHzt",
    "WmX5sAUHumtMBfxmLYeW2mfi3BbIJqIXzuBcqUYlKaXckfJb7v0ZhSZo+/SS85h9GdcuGecRMx/MBszlTEu6v+nCHTLBx5PW",
    "K/9EVNojY2jmIx1IciYmd/JLwuF9CeFyQLXgajAMRlseex7TAmnw1ZXdxVJbfDAYVtJI6aUgjYKB0+GGcj76q72nKutzPwJj",
    "wByxh+z9A6VaSY6hTigUCCUUi+hSvkn/fpmDAZk9LD+eLxT+chJrxlPgrCFTgIkj9+0LatRCOQKBgQD+4+nLRNz/C8IW3A9M",
    "N1aLxgB+U1jjUsv0QjCSx9yQ76gy38m2GIXsi3aWk4qS5OnWRXh2ViaIn7QoZz8fNWVmc/WkfUTcTdOThcGRJC5C1JpV0U4/",
    "uNRg0PUJmTjGRvuXQD7g6R+pParfzFkWUgdYgh2Z/IKqYVIcFWt3vy4cHwKBgQDbw6KJuAj9gWZeZvUHuhpk6pgbel7VFmHc",
    "0mEEHj2ULVduulV9c7tmA4Wq3Kk9rjLcBjw16Ve7hPSYLMttRuCAok7kRRnfkkGWuzaoeV1SN0p9kcATV+fS0OE1JAiEWOtU",
    "//ISnj9qxUUiM14w4izn7qtRz8iXFgcitePcGJoqOQKBgQDWUEwD3aLzz68iCWXTb7QVUiaYEPxsJvHWLtEomWObeeay3/d6",
    "ZKQ2gAz2Dpg1asQypbbjyQwdVCrmzekFFKBtxJKF+84qbkW3hH98yi8bgidCgPqKGZ54yTk/GNXj4UspoZs9AMbeRjumcOt3",
    "GQGUKdM55lb3a1zewCPcS6M5gQKBgQCzp9MQUurGkypksjZOAs3hAgcnL3qnKI0IQNQe0bn1kLuRQbLxw9LHKsnzTEDus6HQ",
    "TSibyg52tdJfNP94biDKB+YGppboNmB4IMQmJlEsDRdQX/5t0ccqiKgTEUoFJ8v6yOHUZpnhZzOFKgkuXTfowyw6zWpmWROs",
    "RJXqMBKXwQKBgFW0bCQGrstBlzzkIolsNmpE9YCcr1E9wdGaiyjGeZD7lVm1BENM9qn+U9X6T2MkWAv/T27FKSC5F+hdYzJl",
    "ClAOJXEjA5ctb/xBnWtRg+hV6KgM8fQ23IGjI4i5sEJevmTssI0DvWkxzpAtyd3zshxbhxwEKdF23hxLStv6WkqI",
);

enum Key {
    Es256(p256::ecdsa::SigningKey),
    Ed(ed25519_compact::KeyPair),
    Rs256(Box<rsa::RsaPrivateKey>),
}

/// A software authenticator holding one credential.
struct Authenticator {
    key: Key,
    credential_id: Vec<u8>,
    count: u32,
    /// Flags besides UP and AT: UV 0x04, BE 0x08, BS 0x10.
    flags: u8,
    rp_id: String,
    /// The user handle the credential was created for (as a real
    /// authenticator keeps it for a discoverable credential).
    user_handle: std::cell::RefCell<Option<Vec<u8>>>,
    /// Whether a discoverable sign-in's answer carries that handle.
    sends_user_handle: bool,
}

impl Authenticator {
    fn es256(seed: u8) -> Self {
        let key = p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap();
        Self {
            key: Key::Es256(key),
            credential_id: vec![seed; 16],
            count: 1,
            flags: 0x04,
            rp_id: "example.com".into(),
            user_handle: Default::default(),
            sends_user_handle: true,
        }
    }

    fn ed25519(seed: u8) -> Self {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([seed; 32]));
        Self {
            key: Key::Ed(kp),
            credential_id: vec![seed; 32],
            count: 0,
            flags: 0x04 | 0x08,
            rp_id: "example.com".into(),
            user_handle: Default::default(),
            sends_user_handle: true,
        }
    }

    /// An RS256 authenticator (Windows Hello's TPM credentials).
    fn rs256(seed: u8) -> Self {
        let key = rsa_test_key();
        Self {
            key: Key::Rs256(Box::new(key)),
            credential_id: vec![seed; 20],
            count: 5,
            flags: 0x04,
            rp_id: "example.com".into(),
            user_handle: Default::default(),
            sends_user_handle: true,
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let bstr = |b: &[u8]| [vec![0x58, b.len() as u8], b.to_vec()].concat();
        match &self.key {
            // {1: 3, 3: -257, -1: n, -2: e}
            Key::Rs256(k) => rsa_cose(&k.n().to_bytes_be(), &k.e().to_bytes_be()),
            Key::Es256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                // {1: 2, 3: -7, -1: 1, -2: x, -3: y}
                [
                    vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21],
                    bstr(point.x().unwrap()),
                    vec![0x22],
                    bstr(point.y().unwrap()),
                ]
                .concat()
            }
            // {1: 1, 3: -8, -1: 6, -2: x}
            Key::Ed(kp) => [vec![0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21], bstr(kp.pk.as_ref())].concat(),
        }
    }

    fn auth_data(&self, flags: u8, attested: bool) -> Vec<u8> {
        let mut out = Sha256::digest(self.rp_id.as_bytes()).to_vec();
        out.push(flags | 0x01 | if attested { 0x40 } else { 0 });
        out.extend(self.count.to_be_bytes());
        if attested {
            out.extend([0u8; 16]);
            out.extend((self.credential_id.len() as u16).to_be_bytes());
            out.extend(&self.credential_id);
            out.extend(self.cose_key());
        }
        out
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Es256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(data);
                sig.to_der().as_bytes().to_vec()
            }
            Key::Ed(kp) => kp.sk.sign(data, None).to_vec(),
            Key::Rs256(k) => {
                use rsa::signature::SignatureEncoding;
                rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone()).sign(data).to_vec()
            }
        }
    }

    /// `credential.toJSON()` of `navigator.credentials.create` for `options`.
    fn create(&self, options: &Value, origin: &str) -> RegistrationCredential {
        *self.user_handle.borrow_mut() = options["user"]["id"].as_str().map(|h| URL_SAFE_NO_PAD.decode(h).unwrap());
        let client = client_data("webauthn.create", options["challenge"].as_str().unwrap(), origin);
        let auth_data = self.auth_data(self.flags, true);
        // {"fmt": "none", "attStmt": {}, "authData": bytes}
        let mut object = vec![0xa3, 0x63, b'f', b'm', b't', 0x64, b'n', b'o', b'n', b'e'];
        object.extend([0x67, b'a', b't', b't', b'S', b't', b'm', b't', 0xa0]);
        object.extend([0x68, b'a', b'u', b't', b'h', b'D', b'a', b't', b'a', 0x59]);
        object.extend((auth_data.len() as u16).to_be_bytes());
        object.extend(&auth_data);
        RegistrationCredential {
            id: b64(&self.credential_id),
            raw_id: b64(&self.credential_id),
            kind: "public-key".into(),
            response: AttestationResponse {
                client_data_json: b64(client),
                attestation_object: b64(object),
                transports: vec!["internal".into()],
            },
        }
    }

    /// `credential.toJSON()` of `navigator.credentials.get` for `options`;
    /// counts a use first. `user_handle`, or for a discoverable sign-in (no
    /// `allowCredentials`) the credential's own, unless told to send none.
    fn get(&mut self, options: &Value, origin: &str, user_handle: Option<Vec<u8>>) -> AuthenticationCredential {
        let discoverable = options["allowCredentials"].as_array().is_none_or(Vec::is_empty);
        let user_handle = match user_handle {
            Some(h) => Some(h),
            None if discoverable && self.sends_user_handle => self.user_handle.borrow().clone(),
            None => None,
        };
        if self.count > 0 {
            self.count += 1;
        }
        let client = client_data("webauthn.get", options["challenge"].as_str().unwrap(), origin);
        let auth_data = self.auth_data(self.flags, false);
        let signed = [auth_data.clone(), Sha256::digest(&client).to_vec()].concat();
        AuthenticationCredential {
            id: b64(&self.credential_id),
            raw_id: b64(&self.credential_id),
            kind: "public-key".into(),
            response: AssertionResponse {
                client_data_json: b64(client),
                authenticator_data: b64(auth_data),
                signature: b64(self.sign(&signed)),
                user_handle: user_handle.map(b64),
            },
        }
    }
}

/// The COSE_Key of an RSA public key: `{1: 3, 3: -257, -1: n, -2: e}`.
fn rsa_cose(n: &[u8], e: &[u8]) -> Vec<u8> {
    let long = |b: &[u8]| [vec![0x59], (b.len() as u16).to_be_bytes().to_vec(), b.to_vec()].concat();
    [vec![0xa4, 0x01, 0x03, 0x03, 0x39, 0x01, 0x00, 0x20], long(n), vec![0x21], long(e)].concat()
}

fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
    format!(r#"{{"type":"{kind}","challenge":"{challenge}","origin":"{origin}","crossOrigin":false}}"#).into_bytes()
}

fn register_options(w: &World, rng: &mut TestRandom, now: i64, s: &AuthResponse) -> Result<Value, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.passkey_register_options(&meta, rng, Some(&s.access_token), RegisterOptionsRequest::default()))
}

fn register_with(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    s: &AuthResponse,
    credential: RegistrationCredential,
) -> Result<PasskeyCreated, Error> {
    let (deps, meta) = w.at(now);
    block_on(deps.passkey_register_verify(
        &meta,
        rng,
        &TestVerifier,
        Some(&s.access_token),
        RegisterVerifyRequest { credential, name: Some("Laptop".into()) },
    ))
}

fn register(w: &World, rng: &mut TestRandom, now: i64, s: &AuthResponse, a: &Authenticator) -> PasskeyCreated {
    let options = register_options(w, rng, now, s).unwrap();
    register_with(w, rng, now, s, a.create(&options, ORIGIN)).unwrap()
}

fn login_options(w: &World, rng: &mut TestRandom, now: i64, email: Option<&str>) -> Value {
    let (deps, meta) = w.at(now);
    block_on(deps.passkey_login_options(&meta, rng, LoginOptionsRequest { email: email.map(str::to_string) })).unwrap()
}

fn login_verify(
    w: &World,
    rng: &mut TestRandom,
    now: i64,
    options: &Value,
    credential: AuthenticationCredential,
) -> Result<SignIn, Error> {
    let (deps, meta) = w.at(now);
    let challenge_id = options["challenge_id"].as_str().unwrap().to_string();
    block_on(deps.passkey_login_verify(&meta, rng, &TestVerifier, LoginVerifyRequest { challenge_id, credential }))
}

fn complete(r: Result<SignIn, Error>) -> AuthResponse {
    r.unwrap().complete().expect("signed in, not asked for a second step")
}

fn amr_of(w: &World, now: i64, session: &AuthResponse) -> Amr {
    let (deps, meta) = w.at(now);
    block_on(deps.authenticate(&meta, Some(&session.access_token))).unwrap().amr
}

fn handle_of(options: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(options["user"]["id"].as_str().unwrap()).unwrap()
}

#[test]
fn registration_options_are_webauthn_json_with_an_opaque_user_handle() {
    let (w, rng) = (world(), &mut TestRandom(1));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let o = register_options(&w, rng, T0, &s).unwrap();
    assert_eq!(o["rp"], serde_json::json!({ "id": "example.com", "name": "Example" }));
    assert_eq!(o["user"]["name"], ADA);
    let handle = handle_of(&o);
    assert_eq!(handle.len(), 32);
    assert!(!String::from_utf8_lossy(&handle).contains("ada") && handle != user(&w, ADA).id.as_bytes());
    let algs: Vec<i64> = o["pubKeyCredParams"].as_array().unwrap().iter().map(|p| p["alg"].as_i64().unwrap()).collect();
    assert_eq!(algs, [-8, -7, -257]);
    assert_eq!(o["attestation"], "none");
    assert_eq!(o["authenticatorSelection"]["residentKey"], "preferred");
    assert_eq!(o["authenticatorSelection"]["userVerification"], "preferred");
    assert_eq!(o["excludeCredentials"], serde_json::json!([]));
    // A registered passkey is excluded next time; the handle stays.
    register(&w, rng, T0, &s, &Authenticator::es256(7));
    let o = register_options(&w, rng, T0 + 1, &s).unwrap();
    assert_eq!(o["excludeCredentials"][0]["id"], b64([7u8; 16]));
    assert_eq!(handle_of(&o), handle);
}

#[test]
fn an_rs256_passkey_registers_and_signs_in_and_a_forged_or_weak_one_does_not() {
    let (w, rng) = (world(), &mut TestRandom(21));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut rs = Authenticator::rs256(4);
    register(&w, rng, T0, &s, &rs);
    assert_eq!(w.store.passkeys.borrow()[0].alg, -257);
    let (deps, meta) = w.at(T0);
    let listed = block_on(deps.list_passkeys(&meta, Some(&s.access_token))).unwrap();
    assert_eq!(listed[0].alg, "RS256");

    let o = login_options(&w, rng, T0 + 10, Some(ADA));
    let session = complete(login_verify(&w, rng, T0 + 10, &o, rs.get(&o, ORIGIN, None)));
    assert_eq!(session.user.email, ADA);
    assert_eq!(w.store.passkeys.borrow()[0].sign_count, 6);

    // A signature with one bit changed, and one cut short, are refused.
    for cut in [false, true] {
        let o = login_options(&w, rng, T0 + 20, Some(ADA));
        let mut bad = rs.get(&o, ORIGIN, None);
        let mut sig = URL_SAFE_NO_PAD.decode(&bad.response.signature).unwrap();
        if cut {
            sig.remove(0);
        } else {
            sig[100] ^= 1;
        }
        bad.response.signature = b64(sig);
        assert_eq!(code(login_verify(&w, rng, T0 + 20, &o, bad)), "invalid_signature", "cut: {cut}");
    }

    // A 1024-bit modulus, an even one and an exponent of 1 are not keys we take.
    let key = rsa_test_key();
    let (n, e) = (key.n().to_bytes_be(), key.e().to_bytes_be());
    let mut even = n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    for (n, e) in [(n[..128].to_vec(), e.clone()), (even, e.clone()), (n.clone(), vec![1])] {
        let cose = rsa_cose(&n, &e);
        assert_eq!(PublicKey::from_cose(&cose).unwrap_err().problem().code, "invalid_credential");
    }
    // Leading zero bytes are not bits: a 2048-bit key padded is still one.
    let padded = rsa_cose(&[&[0u8, 0][..], &n].concat(), &e);
    assert_eq!(PublicKey::from_cose(&padded).unwrap(), PublicKey::Rsa { n, e });
}

#[test]
fn a_passkey_registers_and_signs_in_with_an_email_and_discoverably() {
    let (w, rng) = (world(), &mut TestRandom(2));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut es = Authenticator::es256(7);
    let mut ed = Authenticator::ed25519(9);
    let created = register(&w, rng, T0, &s, &es);
    assert_eq!(created.name, "Laptop");
    let reg_options = register_options(&w, rng, T0, &s).unwrap();
    register_with(&w, rng, T0, &s, ed.create(&reg_options, ORIGIN)).unwrap();
    assert_eq!(w.events.count("passkey_added"), 2);
    let stored = w.store.passkeys.borrow().clone();
    assert_eq!((stored[0].alg, stored[0].sign_count, stored[0].backup_eligible), (-7, 1, false));
    assert_eq!(
        (stored[1].alg, stored[1].backup_eligible, stored[1].transports.clone()),
        (-8, true, vec!["internal".into()])
    );

    // With an email: allowCredentials names both.
    let o = login_options(&w, rng, T0 + 10, Some(ADA));
    let allowed: Vec<&str> =
        o["allowCredentials"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(allowed, [b64([7u8; 16]), b64([9u8; 32])]);
    let session = complete(login_verify(&w, rng, T0 + 10, &o, es.get(&o, ORIGIN, None)));
    assert_eq!(session.user.email, ADA);
    // User-verified, device-bound: two factors, a hardware key.
    assert_eq!(amr_of(&w, T0 + 10, &session), Amr::HWK.with(Amr::USER).with(Amr::MFA));
    assert_eq!(w.store.passkeys.borrow()[0].sign_count, 2);
    assert_eq!(w.store.passkeys.borrow()[0].last_used_at, Some(UnixTime(T0 + 10)));
    assert_eq!(w.events.last_of("login")["provider"], "passkey");

    // Discoverable: no email, empty allowCredentials, the user handle says who.
    let o = login_options(&w, rng, T0 + 20, None);
    assert_eq!(o["allowCredentials"], serde_json::json!([]));
    let session = complete(login_verify(&w, rng, T0 + 20, &o, ed.get(&o, ORIGIN, Some(handle_of(&reg_options)))));
    // Backup eligible (synced): a software key.
    assert_eq!(amr_of(&w, T0 + 20, &session), Amr::SWK.with(Amr::USER).with(Amr::MFA));
    assert_eq!(w.events.count("login"), 2);
}

#[test]
fn a_challenge_works_once_and_a_wrong_origin_or_rp_id_consumes_nothing() {
    let (w, rng) = (world(), &mut TestRandom(3));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    register(&w, rng, T0, &s, &a);
    let o = login_options(&w, rng, T0, None);
    // Wrong origin, wrong RP ID: refused before the challenge is touched.
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, "https://evil.example", None))), "origin_not_allowed");
    a.rp_id = "evil.example".into();
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None))), "rp_id_mismatch");
    a.rp_id = "example.com".into();
    assert_eq!(w.store.passkeys.borrow()[0].sign_count, 1, "nothing recorded");
    let first = a.get(&o, ORIGIN, None);
    let replay = AuthenticationCredential {
        id: first.id.clone(),
        raw_id: first.raw_id.clone(),
        kind: first.kind.clone(),
        response: AssertionResponse { user_handle: None, ..clone_response(&first.response) },
    };
    complete(login_verify(&w, rng, T0, &o, first));
    assert_eq!(code(login_verify(&w, rng, T0, &o, replay)), "invalid_challenge");
    // Expired.
    let o = login_options(&w, rng, T0, None);
    assert_eq!(code(login_verify(&w, rng, T0 + 301, &o, a.get(&o, ORIGIN, None))), "invalid_challenge");
    // A challenge answered for another ceremony's id.
    let o1 = login_options(&w, rng, T0, None);
    let o2 = login_options(&w, rng, T0, None);
    assert_eq!(code(login_verify(&w, rng, T0, &o1, a.get(&o2, ORIGIN, None))), "invalid_challenge");
}

fn clone_response(r: &AssertionResponse) -> AssertionResponse {
    AssertionResponse {
        client_data_json: r.client_data_json.clone(),
        authenticator_data: r.authenticator_data.clone(),
        signature: r.signature.clone(),
        user_handle: r.user_handle.clone(),
    }
}

#[test]
fn a_counter_going_backwards_is_refused_and_records_nothing() {
    let (w, rng) = (world(), &mut TestRandom(4));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    register(&w, rng, T0, &s, &a);
    a.count = 5;
    let o = login_options(&w, rng, T0, None);
    complete(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None)));
    assert_eq!(w.store.passkeys.borrow()[0].sign_count, 6);
    // A clone still at 3 (the same count, then a lower one, and 0).
    // get() counts one use first: the counter sent is 6 (equal), 3 (lower), 0 (none).
    for count in [5, 2, 0] {
        a.count = count;
        let o = login_options(&w, rng, T0 + 5, None);
        assert_eq!(code(login_verify(&w, rng, T0 + 5, &o, a.get(&o, ORIGIN, None))), "sign_count_regressed");
    }
    let k = w.store.passkeys.borrow()[0].clone();
    assert_eq!((k.sign_count, k.last_used_at), (6, Some(UnixTime(T0))), "nothing recorded");
    assert_eq!(w.events.all_of("login_failed").last().unwrap()["reason"], "passkey_sign_count_regressed");
    assert_eq!(w.events.count("login"), 1);
}

#[test]
fn unknown_credentials_bad_signatures_and_foreign_user_handles_are_refused() {
    let (w, rng) = (world(), &mut TestRandom(5));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    register(&w, rng, T0, &s, &a);
    let o = login_options(&w, rng, T0, None);
    assert_eq!(
        code(login_verify(&w, rng, T0, &o, Authenticator::es256(8).get(&o, ORIGIN, Some(vec![2; 32])))),
        "unknown_credential"
    );
    // Another key claiming this credential id.
    let mut forger = Authenticator::es256(8);
    forger.credential_id = a.credential_id.clone();
    let o = login_options(&w, rng, T0, None);
    let handle = a.user_handle.borrow().clone();
    assert_eq!(code(login_verify(&w, rng, T0, &o, forger.get(&o, ORIGIN, handle))), "invalid_signature");
    let o = login_options(&w, rng, T0, None);
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, Some(vec![1; 32])))), "user_handle_mismatch");
    assert_eq!(w.store.passkeys.borrow()[0].sign_count, 1);
    assert_eq!(w.events.count("login"), 0);
}

#[test]
fn a_small_order_ed25519_key_neither_registers_nor_signs_in() {
    let (w, rng) = (world(), &mut TestRandom(17));
    let s = signup_at(&w, rng, T0, ADA, PW);
    // The identity point: R = identity, S = 0 "verifies" for it, whatever
    // the message, under the runtime's (cofactorless) verification.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = [vec![0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21, 0x58, 32], identity.to_vec()].concat();
    let mut a = Authenticator::ed25519(3);
    let options = register_options(&w, rng, T0, &s).unwrap();
    let mut credential = a.create(&options, ORIGIN);
    let object = URL_SAFE_NO_PAD.decode(&credential.response.attestation_object).unwrap();
    let good = a.cose_key();
    let at = object.windows(good.len()).position(|win| win == good.as_slice()).unwrap();
    let planted = [&object[..at], &weak[..], &object[at + good.len()..]].concat();
    credential.response.attestation_object = b64(&planted);
    assert_eq!(code(register_with(&w, rng, T0, &s, credential)), "invalid_credential");
    assert!(w.store.passkeys.borrow().is_empty());

    // One stored before the check (written straight into the store) cannot
    // sign in: refused, not a 500.
    register(&w, rng, T0, &s, &a);
    w.store.passkeys.borrow_mut()[0].public_key = b64(&weak);
    let o = login_options(&w, rng, T0 + 10, Some(ADA));
    let mut forged = a.get(&o, ORIGIN, None);
    let signature: [u8; 64] = [identity.to_vec(), vec![0; 32]].concat().try_into().unwrap();
    forged.response.signature = b64(signature);
    // The runtime's verification takes it: the flow must refuse the key.
    assert!(cofactorless_verify(&identity, b"any message", &signature));
    assert_eq!(code(login_verify(&w, rng, T0 + 10, &o, forged)), "invalid_signature");
    assert_eq!(w.events.count("login"), 0);
    assert_eq!(w.events.count("login_failed"), 1);
    assert_eq!(w.events.last_of("login_failed")["reason"], "passkey_invalid_signature");

    // A stored key that does not parse at all is a fault: 500, no event.
    for corrupt in [b64([0xa1u8]), "!!".to_string()] {
        w.store.passkeys.borrow_mut()[0].public_key = corrupt.clone();
        let o = login_options(&w, rng, T0 + 20, Some(ADA));
        let e = login_verify(&w, rng, T0 + 20, &o, a.get(&o, ORIGIN, None)).unwrap_err();
        assert_eq!(e.problem().status, 500, "{corrupt}");
        assert_eq!(w.events.count("login_failed"), 1, "{corrupt}");
    }
}

#[test]
fn an_rsa_key_whose_every_message_is_its_own_signature_neither_registers_nor_signs_in() {
    // n: odd primes p with p − 1 dividing e − 1 = 2^5·3^2·5·7·11·13·17·19, so
    // s^e = s mod n for every s: the PKCS #1 encoding of any message is its
    // own signature, forged with nothing but the key's length.
    let hex =
        |s: &str| (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
    let n = hex(concat!(
        "0f462d7885b8ac06040d8c896aa445fb8d787bf315d68288e0a7dc6faacafe1f7cc85345f457e520d34b09472b5b3bb7fb0a877",
        "3de3142c737456ea165585c01673b7e156041f2e1b0f5c812109671275bc50b9e24c7e2630b34d3f9c3beb124c3a578371252e08",
        "3543aa643c602cd89f31463aaf26935a32ab43620b601ed53c29b8745988da0d28f1bf14784ee0415e180fd3a4dfe7fa0311e3f9",
        "a66c3ee54a8af94f77c679ab79e29cabefa8e733c65b6ccd2b68986ab9800d3bfa2869241f8fa093ef655d748db1837955a99a9f",
        "57a8444e81b0b0cb2a5d5d92dc7a06312d4bf152d6ab63bed749c543f9e37a8ff650d20fa3107a234668f97ea8b00057bf059",
    ));
    let e = 465_585_121u32.to_be_bytes();
    let weak = rsa_cose(&n, &e);
    let (w, rng) = (world(), &mut TestRandom(23));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::rs256(9);
    let options = register_options(&w, rng, T0, &s).unwrap();
    let mut credential = a.create(&options, ORIGIN);
    let object = URL_SAFE_NO_PAD.decode(&credential.response.attestation_object).unwrap();
    let good = a.cose_key();
    let at = object.windows(good.len()).position(|win| win == good.as_slice()).unwrap();
    // The key is 2 bytes longer than the good one: the authData length (a u16 before it) grows too.
    let mut planted = [&object[..at], &weak[..], &object[at + good.len()..]].concat();
    let len_at = object.windows(9).position(|w| w == b"\x68authData").unwrap() + 10;
    let len = u16::from_be_bytes([planted[len_at], planted[len_at + 1]]) + (weak.len() - good.len()) as u16;
    planted[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    credential.response.attestation_object = b64(&planted);
    let refused = register_with(&w, rng, T0, &s, credential).unwrap_err().problem();
    assert_eq!(refused.code, "invalid_credential");
    assert!(refused.detail.contains("65537"), "{}", refused.detail);
    assert!(w.store.passkeys.borrow().is_empty());

    // One stored before the check: the runtime would take the forgery; the flow refuses.
    register(&w, rng, T0, &s, &a);
    w.store.passkeys.borrow_mut()[0].public_key = b64(&weak);
    let o = login_options(&w, rng, T0 + 10, Some(ADA));
    let mut forged = a.get(&o, ORIGIN, None);
    let auth_data = URL_SAFE_NO_PAD.decode(&forged.response.authenticator_data).unwrap();
    let client = URL_SAFE_NO_PAD.decode(&forged.response.client_data_json).unwrap();
    let signed = [auth_data, Sha256::digest(&client).to_vec()].concat();
    let mut encoded = vec![0x00, 0x01];
    let digest_info = [hex("3031300d060960864801650304020105000420"), Sha256::digest(&signed).to_vec()].concat();
    encoded.extend(std::iter::repeat_n(0xff, n.len() - 3 - digest_info.len()));
    encoded.push(0);
    encoded.extend(digest_info);
    assert!(block_on(TestVerifier.verify_passkey(&PublicKey::Rsa { n: n.clone(), e: e.to_vec() }, &signed, &encoded))
        .unwrap());
    forged.response.signature = b64(&encoded);
    assert_eq!(code(login_verify(&w, rng, T0 + 10, &o, forged)), "invalid_signature");
    assert_eq!(w.events.count("login"), 0);
}

#[test]
fn malformed_credentials_are_400_with_a_stable_code_and_write_nothing() {
    let (w, rng) = (world(), &mut TestRandom(6));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let a = Authenticator::es256(7);
    let o = register_options(&w, rng, T0, &s).unwrap();
    let good = || a.create(&o, ORIGIN);
    let mut cases: Vec<(RegistrationCredential, &str)> = Vec::new();
    let mut c = good();
    c.raw_id = "***".into();
    cases.push((c, "invalid_credential"));
    let mut c = good();
    c.response.attestation_object = b64([0xa3, 0x63]);
    cases.push((c, "invalid_credential"));
    let mut c = good();
    c.response.client_data_json = b64("{not json");
    cases.push((c, "invalid_credential"));
    let mut c = good();
    c.kind = "password".into();
    cases.push((c, "invalid_credential"));
    let mut c = good();
    c.id = b64([1u8; 16]);
    cases.push((c, "invalid_credential"));
    let mut c = good();
    c.response.attestation_object = b64(vec![0u8; 70_000]);
    cases.push((c, "invalid_credential"));
    // An RS384 key: an algorithm not offered.
    let rs = Authenticator::es256(7);
    let rsa_key = vec![0xa2, 0x01, 0x03, 0x03, 0x39, 0x01, 0x01];
    let mut c = good();
    let mut object = URL_SAFE_NO_PAD.decode(&c.response.attestation_object).unwrap();
    let key_len = rs.cose_key().len();
    object.truncate(object.len() - key_len);
    object.extend(&rsa_key);
    // The authData length in the CBOR header shrinks accordingly.
    let len_at = 10 + 9 + 9 + 1;
    let new_len = (u16::from_be_bytes([object[len_at], object[len_at + 1]]) as usize - key_len + rsa_key.len()) as u16;
    object[len_at..len_at + 2].copy_from_slice(&new_len.to_be_bytes());
    c.response.attestation_object = b64(object);
    cases.push((c, "unsupported_algorithm"));
    for (credential, want) in cases {
        assert_eq!(code(register_with(&w, rng, T0, &s, credential)), want);
    }
    // A P-256 key that is not a point on the curve.
    let mut c = good();
    let mut object = URL_SAFE_NO_PAD.decode(&c.response.attestation_object).unwrap();
    let n = object.len();
    object[n - 1] ^= 1;
    c.response.attestation_object = b64(object);
    assert_eq!(code(register_with(&w, rng, T0, &s, c)), "invalid_credential");
    // Wrong origin: 401; nothing stored, and the challenge still works.
    assert_eq!(code(register_with(&w, rng, T0, &s, a.create(&o, "https://evil.example"))), "origin_not_allowed");
    assert!(w.store.passkeys.borrow().is_empty());
    assert_eq!(w.events.count("passkey_added"), 0);
    register_with(&w, rng, T0, &s, good()).unwrap();
    // Used once: the same answer again is a replay.
    assert_eq!(code(register_with(&w, rng, T0, &s, good())), "invalid_challenge");
    // A sign-in with a malformed assertion.
    let lo = login_options(&w, rng, T0, None);
    let mut bad = Authenticator::es256(7).get(&lo, ORIGIN, None);
    bad.response.authenticator_data = b64([0u8; 10]);
    assert_eq!(code(login_verify(&w, rng, T0, &lo, bad)), "invalid_credential");
    let mut bad = Authenticator::es256(7).get(&lo, ORIGIN, None);
    bad.response.signature = "%%%".into();
    assert_eq!(code(login_verify(&w, rng, T0, &lo, bad)), "invalid_credential");
}

#[test]
fn a_credential_id_belongs_to_one_account_and_options_need_a_recent_sign_in() {
    let (w, rng) = (world(), &mut TestRandom(7));
    let ada = signup_at(&w, rng, T0, ADA, PW);
    let bob = signup_at(&w, rng, T0, BOB, PW);
    let a = Authenticator::es256(7);
    register(&w, rng, T0, &ada, &a);
    let o = register_options(&w, rng, T0, &bob).unwrap();
    assert_eq!(code(register_with(&w, rng, T0, &bob, a.create(&o, ORIGIN))), "credential_exists");
    // Bob's challenge is Bob's: Ada cannot answer it.
    let o = register_options(&w, rng, T0, &bob).unwrap();
    assert_eq!(code(register_with(&w, rng, T0, &ada, Authenticator::es256(9).create(&o, ORIGIN))), "invalid_challenge");
    assert_eq!(code(register_options(&w, rng, T0 + 301, &ada)), "reauthentication_required");
}

#[test]
fn without_user_verification_a_passkey_is_one_factor_and_totp_asks_for_the_second_step() {
    let (w, rng) = (world(), &mut TestRandom(8));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    a.flags = 0; // no UV
    register(&w, rng, T0, &s, &a);
    let o = login_options(&w, rng, T0, Some(ADA));
    let one = complete(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None)));
    assert_eq!(amr_of(&w, T0, &one), Amr::HWK);

    // TOTP on: the passkey is the first step only.
    let (deps, meta) = w.at(T0);
    let enrolment = block_on(deps.enroll_totp(&meta, rng, Some(&s.access_token))).unwrap();
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &enrolment.secret).unwrap();
    let secret = TotpSecret::from_bytes(bytes.try_into().unwrap());
    let code_now = secret.code_at(step_at(UnixTime(T0)));
    block_on(deps.confirm_totp(
        &meta,
        rng,
        Some(&s.access_token),
        CodeRequest { code: Some(code_now), backup_code: None },
    ))
    .unwrap();
    let logins = w.events.count("login");
    let o = login_options(&w, rng, T0 + 40, Some(ADA));
    match login_verify(&w, rng, T0 + 40, &o, a.get(&o, ORIGIN, None)).unwrap() {
        SignIn::SecondStep(step) => assert!(!step.mfa_token.is_empty()),
        SignIn::Complete(_) => panic!("a one-factor passkey sign-in skipped the second step"),
    }
    assert_eq!(w.events.count("login"), logins, "no login before the second step");
    // With UV it is two factors: no second step.
    a.flags = 0x04;
    let o = login_options(&w, rng, T0 + 50, Some(ADA));
    complete(login_verify(&w, rng, T0 + 50, &o, a.get(&o, ORIGIN, None)));
}

#[test]
fn unknown_addresses_get_options_shaped_like_known_ones() {
    let (w, rng) = (world(), &mut TestRandom(9));
    let s = signup_at(&w, rng, T0, ADA, PW);
    signup_at(&w, rng, T0, BOB, PW);
    register(&w, rng, T0, &s, &Authenticator::es256(7));
    let known = login_options(&w, rng, T0, Some(ADA));
    let no_passkey = login_options(&w, rng, T0, Some(BOB));
    let unknown = login_options(&w, rng, T0, Some("nobody@example.com"));
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&known), keys(&unknown));
    for o in [&no_passkey, &unknown] {
        let list = o["allowCredentials"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(URL_SAFE_NO_PAD.decode(list[0]["id"].as_str().unwrap()).unwrap().len(), 32);
    }
    // Stable: asking again answers the same.
    assert_eq!(login_options(&w, rng, T0, Some("nobody@example.com"))["allowCredentials"], unknown["allowCredentials"]);
}

#[test]
fn passkeys_are_listed_renamed_and_removed_ending_the_other_sessions() {
    let (w, rng) = (world(), &mut TestRandom(10));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let other = crate::support::login_at(&w, rng, T0, ADA, PW).unwrap();
    let created = register(&w, rng, T0, &s, &Authenticator::es256(7));
    let (deps, meta) = w.at(T0 + 1);
    let list = block_on(deps.list_passkeys(&meta, Some(&s.access_token))).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].alg), ("Laptop", "ES256"));
    let renamed = block_on(deps.rename_passkey(
        &meta,
        Some(&s.access_token),
        &created.id,
        RenameRequest { name: " Phone ".into() },
    ))
    .unwrap();
    assert_eq!(renamed.name, "Phone");
    let too_long = RenameRequest { name: "x".repeat(65) };
    assert_eq!(
        code(block_on(deps.rename_passkey(&meta, Some(&s.access_token), &created.id, too_long))),
        "validation_failed"
    );
    // Not Bob's to rename or remove.
    let bob = signup_at(&w, rng, T0, BOB, PW);
    let (deps, meta) = w.at(T0 + 2);
    let r =
        block_on(deps.rename_passkey(&meta, Some(&bob.access_token), &created.id, RenameRequest { name: "x".into() }));
    assert_eq!(code(r), "passkey_not_found");
    assert_eq!(
        code(block_on(deps.remove_passkey(&meta, rng, Some(&bob.access_token), &created.id))),
        "passkey_not_found"
    );

    block_on(deps.remove_passkey(&meta, rng, Some(&s.access_token), &created.id)).unwrap();
    assert!(w.store.passkeys.borrow().is_empty());
    let removed = w.events.last_of("passkey_removed");
    assert_eq!(
        (removed["passkey_id"].as_str(), removed["user_id"].as_str()),
        (Some(created.id.as_str()), Some(user(&w, ADA).id.as_str()))
    );
    // A change of factors: the other session ends (and is in the revocation log), this one stays.
    assert!(block_on(deps.authenticate(&meta, Some(&s.access_token))).is_ok());
    assert!(block_on(deps.authenticate(&meta, Some(&other.access_token))).is_err());
    assert!(w
        .store
        .revocations
        .borrow()
        .iter()
        .any(|r| format!("{:?}", r.what).contains(other.user.session_id.as_deref().unwrap())));
    assert_eq!(
        code(block_on(deps.remove_passkey(&meta, rng, Some(&s.access_token), &created.id))),
        "passkey_not_found"
    );
}

#[test]
fn banned_accounts_cannot_sign_in_with_a_passkey_and_an_admin_reset_removes_them() {
    let (w, rng) = (world(), &mut TestRandom(11));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    register(&w, rng, T0, &s, &a);
    w.store.users.borrow_mut()[0].banned = true;
    let o = login_options(&w, rng, T0, None);
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None))), "account_banned");
    w.store.users.borrow_mut()[0].banned = false;
    signup_at(&w, rng, T0, "root@example.com", PW);
    crate::support::grant(&w, "root@example.com", "admin");
    let admin = crate::support::login_at(&w, rng, T0 + 1, "root@example.com", PW).unwrap();
    let (deps, meta) = w.at(T0 + 2);
    let who = block_on(deps.require_admin(&meta, Some(&admin.access_token))).unwrap();
    assert_eq!(block_on(deps.admin_get_user(&who, &user(&w, ADA).id)).unwrap().mfa.passkeys, 1);
    block_on(deps.admin_reset_mfa(&meta, rng, &who, &user(&w, ADA).id)).unwrap();
    assert!(w.store.passkeys.borrow().is_empty());
    assert_eq!(w.events.count("passkey_removed"), 1);
    assert!(block_on(deps.authenticate(&meta, Some(&s.access_token))).is_err(), "sessions end with the reset");
}

#[test]
fn without_rp_id_the_passkey_endpoints_are_off() {
    let (w, rng) = (World::new(&[]), &mut TestRandom(12));
    let (deps, meta) = w.at(T0);
    let r = block_on(deps.passkey_login_options(&meta, rng, LoginOptionsRequest::default()));
    assert_eq!(r.unwrap_err().problem().code, "passkeys_disabled");
    // Listing (and renaming, removing) still answer: passkeys registered
    // while RP_ID was set can be seen and removed.
    let s = signup_at(&w, rng, T0, ADA, PW);
    let (deps, meta) = w.at(T0);
    assert!(block_on(deps.list_passkeys(&meta, Some(&s.access_token))).unwrap().is_empty());
    let r = block_on(deps.passkey_register_options(&meta, rng, Some(&s.access_token), Default::default()));
    assert_eq!(r.unwrap_err().problem().code, "passkeys_disabled");
}

#[test]
fn a_takeover_of_an_unverified_account_removes_the_planters_passkeys() {
    use portcullis::core::flows::EmailRequest;
    let (w, rng) = (world(), &mut TestRandom(13));
    let planter = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    let planted = register(&w, rng, T0, &planter, &a);
    let (deps, meta) = w.at(T0 + 1);
    block_on(deps.request_magic_link(&meta, rng, EmailRequest { email: ADA.into(), locale: None })).unwrap();
    let token = w.events.last_of("magic_link_requested")["token"].as_str().unwrap().to_string();
    block_on(deps.verify_magic_link(&meta, rng, MagicLinkVerifyRequest { token, locale: None })).unwrap();
    assert!(w.store.passkeys.borrow().is_empty());
    assert_eq!(w.events.last_of("passkey_removed")["passkey_id"], planted.id.as_str());
    let o = login_options(&w, rng, T0 + 2, None);
    assert_eq!(code(login_verify(&w, rng, T0 + 2, &o, a.get(&o, ORIGIN, None))), "unknown_credential");
}

/// TOTP on for the account of `s`, confirmed at `now`; returns its secret.
fn turn_totp_on(w: &World, rng: &mut TestRandom, now: i64, s: &AuthResponse) -> TotpSecret {
    let (deps, meta) = w.at(now);
    let enrolment = block_on(deps.enroll_totp(&meta, rng, Some(&s.access_token))).unwrap();
    let bytes = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, &enrolment.secret).unwrap();
    let secret = TotpSecret::from_bytes(bytes.try_into().unwrap());
    let code = Some(secret.code_at(step_at(UnixTime(now))));
    block_on(deps.confirm_totp(&meta, rng, Some(&s.access_token), CodeRequest { code, backup_code: None })).unwrap();
    secret
}

/// A passkey sign-in racing that passkey's removal (which ends the other
/// sessions) ends without a session: the session write checks the passkey
/// is still the account's.
#[test]
fn a_sign_in_racing_the_passkeys_removal_gets_no_session() {
    use portcullis::core::ports::PasskeyStore;
    let (w, rng) = (world(), &mut TestRandom(102));
    let owner = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    a.flags = 0; // the factor read is where the test can interleave
    let created = register(&w, rng, T0, &owner, &a);
    let store = w.store.clone();
    let (sid, uid, pid) = (owner.user.session_id.clone().unwrap(), owner.user.id.clone(), created.id.clone());
    *w.store.after_factors_read.borrow_mut() = Some(Box::new(move || {
        let caller = portcullis::core::session::LiveSession {
            user_id: &uid,
            session_id: &sid,
            now: UnixTime(T0 + 5),
            max_age_secs: 7_776_000,
        };
        assert!(matches!(block_on(store.remove_passkey(&caller, &pid, "mfa_changed")).unwrap(), Some(Some(_))));
    }));
    let sessions = w.store.sessions.borrow().len();
    let o = login_options(&w, rng, T0 + 5, None);
    assert_eq!(code(login_verify(&w, rng, T0 + 5, &o, a.get(&o, ORIGIN, None))), "account_changed");
    assert!(w.store.passkeys.borrow().is_empty(), "the passkey is gone");
    assert_eq!(w.store.sessions.borrow().len(), sessions, "and no session was written");
    assert_eq!(w.events.last_of("login_failed")["reason"], "passkey_account_changed");
}

/// The `mfa_token` of a passkey sign-in without user verification is bound
/// to that passkey: removed before the second step, the second step opens
/// no session.
#[test]
fn a_passkeys_second_step_dies_with_the_passkey() {
    use portcullis::core::flows::mfa::MfaVerifyRequest;
    let (w, rng) = (world(), &mut TestRandom(107));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    a.flags = 0; // no UV: one factor
    let created = register(&w, rng, T0, &s, &a);
    let secret = turn_totp_on(&w, rng, T0, &s);
    let o = login_options(&w, rng, T0 + 40, Some(ADA));
    let SignIn::SecondStep(step) = login_verify(&w, rng, T0 + 40, &o, a.get(&o, ORIGIN, None)).unwrap() else {
        panic!("a one-factor passkey sign-in skipped the second step");
    };
    let (deps, meta) = w.at(T0 + 41);
    block_on(deps.remove_passkey(&meta, rng, Some(&s.access_token), &created.id)).unwrap();
    let sessions = w.store.sessions.borrow().len();
    let (deps, meta) = w.at(T0 + 60);
    let code_now = Some(secret.code_at(step_at(UnixTime(T0 + 60))));
    let r = block_on(deps.verify_mfa(
        &meta,
        rng,
        MfaVerifyRequest { mfa_token: step.mfa_token, code: code_now, backup_code: None },
    ));
    assert_eq!(r.unwrap_err().problem().code, "account_changed");
    assert_eq!(w.store.sessions.borrow().len(), sessions, "no session");
}

/// A ban is told only after the signature and the counter: a credential id
/// (login/options hands them out for any address) with a forged signature
/// learns nothing of the account's ban and makes no `passkey_banned`.
#[test]
fn a_ban_is_told_only_to_whoever_signs_with_the_passkey() {
    let (w, rng) = (world(), &mut TestRandom(101));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    register(&w, rng, T0, &s, &a);
    // The attacker reads Ada's credential id from login/options.
    let o = login_options(&w, rng, T0, Some(ADA));
    let id = URL_SAFE_NO_PAD.decode(o["allowCredentials"][0]["id"].as_str().unwrap()).unwrap();
    let mut forger = Authenticator::es256(8);
    forger.credential_id = id;
    w.store.users.borrow_mut()[0].banned = true;
    let o = login_options(&w, rng, T0, None);
    let handle = a.user_handle.borrow().clone();
    assert_eq!(code(login_verify(&w, rng, T0, &o, forger.get(&o, ORIGIN, handle))), "invalid_signature");
    assert_eq!(w.events.last_of("login_failed")["reason"], "passkey_invalid_signature");
    let o = login_options(&w, rng, T0 + 1, None);
    assert_eq!(code(login_verify(&w, rng, T0 + 1, &o, a.get(&o, ORIGIN, None))), "account_banned");
    assert_eq!(w.events.last_of("login_failed")["reason"], "passkey_banned");
}

/// An administrator's reset of a user's factors names the administrator
/// (`actor_id`) on every event it emits, as every admin action does.
#[test]
fn an_admin_reset_names_the_admin_on_its_events() {
    let (w, rng) = (world(), &mut TestRandom(103));
    let s = signup_at(&w, rng, T0, ADA, PW);
    register(&w, rng, T0, &s, &Authenticator::es256(7));
    turn_totp_on(&w, rng, T0, &s);
    signup_at(&w, rng, T0, "root@example.com", PW);
    crate::support::grant(&w, "root@example.com", "admin");
    let admin = crate::support::login_at(&w, rng, T0 + 1, "root@example.com", PW).unwrap();
    let (deps, meta) = w.at(T0 + 2);
    let who = block_on(deps.require_admin(&meta, Some(&admin.access_token))).unwrap();
    let before = w.events.sent.borrow().len();
    block_on(deps.admin_reset_mfa(&meta, rng, &who, &user(&w, ADA).id)).unwrap();
    let sent = w.events.sent.borrow();
    let kinds: Vec<&str> = sent[before..].iter().map(|e| e.kind).collect();
    // One write: TOTP, the passkey and the sessions go together, and the
    // sessions' end is announced once.
    assert_eq!(kinds, ["mfa_disabled", "passkey_removed", "session_revoked"]);
    for e in &sent[before..] {
        assert_eq!(e.ctx.actor_id.as_deref(), Some(admin.user.id.as_str()), "{} names the admin", e.kind);
    }
}

/// Backed up (BS) without backup eligible (BE) is invalid (WebAuthn
/// §6.1.3), and BE never changes for a credential: an assertion with
/// another BE than the registration's is refused, nothing recorded.
#[test]
fn backup_flags_must_be_consistent_and_be_must_not_change() {
    let (w, rng) = (world(), &mut TestRandom(106));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    a.flags = 0x04 | 0x10;
    let options = register_options(&w, rng, T0, &s).unwrap();
    let r = register_with(&w, rng, T0, &s, a.create(&options, ORIGIN));
    assert_eq!(r.unwrap_err().problem().code, "invalid_credential");
    assert!(w.store.passkeys.borrow().is_empty());

    a.flags = 0x04; // not backup eligible
    register(&w, rng, T0, &s, &a);
    a.flags = 0x04 | 0x08; // now claims BE
    let o = login_options(&w, rng, T0 + 1, None);
    assert_eq!(code(login_verify(&w, rng, T0 + 1, &o, a.get(&o, ORIGIN, None))), "invalid_credential");
    assert_eq!(w.store.passkeys.borrow()[0].last_used_at, None, "nothing recorded");
    a.flags = 0x04;
    let o = login_options(&w, rng, T0 + 2, None);
    complete(login_verify(&w, rng, T0 + 2, &o, a.get(&o, ORIGIN, None)));
}

/// On the signed-in `register/verify` a refused ceremony is 400 with its
/// code, not the sign-in's 401 `Bearer` challenge (which tells a client to
/// refresh its token and retry); a bad token stays 401.
#[test]
fn registration_refusals_are_400_not_a_token_challenge() {
    let (w, rng) = (world(), &mut TestRandom(108));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let mut a = Authenticator::es256(7);
    let options = register_options(&w, rng, T0, &s).unwrap();
    let refusal = |r: Result<PasskeyCreated, Error>| {
        let p = r.unwrap_err().problem();
        (p.status, p.code, p.www_authenticate)
    };
    let wrong_origin = register_with(&w, rng, T0, &s, a.create(&options, "https://evil.example"));
    assert_eq!(refusal(wrong_origin), (400, "origin_not_allowed", None));
    a.rp_id = "evil.example".into();
    assert_eq!(refusal(register_with(&w, rng, T0, &s, a.create(&options, ORIGIN))), (400, "rp_id_mismatch", None));
    a.rp_id = "example.com".into();
    register_with(&w, rng, T0, &s, a.create(&options, ORIGIN)).unwrap();
    let b = Authenticator::es256(8);
    let replayed = register_with(&w, rng, T0, &s, b.create(&options, ORIGIN));
    assert_eq!(refusal(replayed), (400, "invalid_challenge", None));
    let bad_token = AuthResponse { access_token: "nope".into(), ..s.clone() };
    let options = register_options(&w, rng, T0, &s).unwrap();
    let p = register_with(&w, rng, T0, &bad_token, b.create(&options, ORIGIN)).unwrap_err().problem();
    assert_eq!(p.status, 401);
}

/// A user has at most one open registration: new options replace the
/// earlier challenge, which no longer registers.
#[test]
fn registration_challenges_do_not_pile_up() {
    let (w, rng) = (world(), &mut TestRandom(109));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let a = Authenticator::es256(7);
    let first = register_options(&w, rng, T0, &s).unwrap();
    for _ in 0..50 {
        register_options(&w, rng, T0, &s).unwrap();
    }
    let last = register_options(&w, rng, T0, &s).unwrap();
    let open = |w: &World| w.store.passkey_challenges.borrow().iter().filter(|c| c.user_id.is_some()).count();
    assert_eq!(open(&w), 1);
    let stale = register_with(&w, rng, T0, &s, a.create(&first, ORIGIN));
    assert_eq!(stale.unwrap_err().problem().code, "invalid_challenge");
    register_with(&w, rng, T0, &s, a.create(&last, ORIGIN)).unwrap();
    assert_eq!(open(&w), 0);
}

/// WebAuthn §7.2 steps 5–6: a credential not in the options'
/// `allowCredentials` does not sign in (options asked for Bob answered by
/// Ada's passkey), and a discoverable answer must carry its user handle.
#[test]
fn allow_credentials_and_the_user_handle_of_a_discoverable_sign_in_are_enforced() {
    let (w, rng) = (world(), &mut TestRandom(104));
    let s = signup_at(&w, rng, T0, ADA, PW);
    let bob = signup_at(&w, rng, T0, BOB, PW);
    let mut a = Authenticator::es256(7);
    register(&w, rng, T0, &s, &a);
    let o = login_options(&w, rng, T0, Some(BOB));
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None))), "unknown_credential");
    // Bob with a passkey of his own: Ada's is still not among his.
    register(&w, rng, T0, &bob, &Authenticator::ed25519(9));
    let o = login_options(&w, rng, T0, Some(BOB));
    assert_eq!(o["allowCredentials"].as_array().unwrap().len(), 1);
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None))), "unknown_credential");
    a.sends_user_handle = false;
    let o = login_options(&w, rng, T0, None);
    assert_eq!(code(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None))), "user_handle_required");
    assert_eq!(w.store.passkeys.borrow()[0].sign_count, 1, "nothing recorded");
    assert_eq!(w.events.count("login"), 0);
    // Asked for Ada, her passkey may answer without a handle.
    let o = login_options(&w, rng, T0, Some(ADA));
    assert_eq!(complete(login_verify(&w, rng, T0, &o, a.get(&o, ORIGIN, None))).user.email, ADA);
}
