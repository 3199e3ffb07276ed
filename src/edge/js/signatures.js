// Ed25519 and ECDSA P-256 through the runtime's `node:crypto`: the same native
// BoringSSL code as WebCrypto, but synchronous. A fresh token is then
// verified, and the origin assertion signed, inside the one synchronous call
// that decides the request — no Promise, no Rust future, no microtask hops
// (measured by `npm run bench`). Keys are imported once per isolate and kept
// by Rust, which also converts ES256 signatures between JWS's r‖s and the DER
// form `node:crypto` speaks (workerd takes no `dsaEncoding` with a KeyObject).
//
// `node:crypto` is reached through `process.getBuiltinModule` (Node's API;
// workerd provides it with Node compatibility, on by default from the
// compatibility date 2026-08-04 — ours, in wrangler.toml, is later) rather
// than an import, which worker-build's bundler would try to resolve on disk.
let NODE_CRYPTO = null;
const nodeCrypto = () => {
  NODE_CRYPTO ??= globalThis.process?.getBuiltinModule?.("node:crypto") ?? null;
  if (!NODE_CRYPTO) throw new Error("node:crypto is unavailable: Portcullis needs Node compatibility (see wrangler.toml)");
  return NODE_CRYPTO;
};

// The JWK of a key: `y` is given (non-empty) for P-256 only.
const jwk = (x, y) => (y ? { kty: "EC", crv: "P-256", x, y } : { kty: "OKP", crv: "Ed25519", x });

/** A public key from its JWK members (base64url): Ed25519 `x`, or P-256 `x`, `y`. */
export function publicKey(x, y) {
  return nodeCrypto().createPublicKey({ key: jwk(x, y), format: "jwk" });
}

/**
 * A passkey's public key from its JWK (JSON text): Ed25519, P-256 or RSA.
 * Throws when the runtime does not take it (a P-256 point off the curve).
 */
export function passkeyKey(jwkJson) {
  return nodeCrypto().createPublicKey({ key: JSON.parse(jwkJson), format: "jwk" });
}

/**
 * Whether `signature` is `key`'s RSASSA-PKCS1-v1_5 / SHA-256 signature over
 * `data` (RS256); never throws.
 */
export function verifyRs256(key, data, signature) {
  try {
    // An RSA key's default padding is PKCS #1 v1.5.
    return nodeCrypto().verify("sha256", data, key, signature);
  } catch {
    return false;
  }
}

/**
 * A private key from its JWK members (base64url): `d` and the public ones.
 * An Ed25519 key is made a CryptoKey, which `node:crypto` signs with a little
 * faster than with the KeyObject (it skips the KeyObject checks; about 1 µs,
 * bench/experiments/runtime-costs.mjs: r-sign-cryptokey against
 * r-sign-keyobject); a P-256 one stays a KeyObject.
 */
export function privateKey(d, x, y) {
  const key = nodeCrypto().createPrivateKey({ key: { ...jwk(x, y), d }, format: "jwk" });
  return y ? key : key.toCryptoKey({ name: "Ed25519" }, false, ["sign"]);
}

/** Whether `signature` is `key`'s Ed25519 signature over `data`; never throws. */
export function verifyEd25519(key, data, signature) {
  try {
    return nodeCrypto().verify(null, data, key, signature);
  } catch {
    return false;
  }
}

/** Whether `der` is `key`'s ECDSA P-256 / SHA-256 signature over `data`; never throws. */
export function verifyEs256(key, data, der) {
  try {
    return nodeCrypto().verify("sha256", data, key, der);
  } catch {
    return false;
  }
}

/** `key`'s Ed25519 signature over `data` (64 bytes). */
export function signEd25519(key, data) {
  return nodeCrypto().sign(null, data, key);
}

/** `key`'s ECDSA P-256 / SHA-256 signature over `data`, DER-encoded. */
export function signEs256(key, data) {
  return nodeCrypto().sign("sha256", data, key);
}
