// Ed25519 through the runtime's `node:crypto`: the same native BoringSSL code
// as WebCrypto, but synchronous. A fresh token is then verified, and the
// origin assertion signed, inside the one synchronous call that decides the
// request — no Promise, no Rust future, no microtask hops (measured by
// `npm run bench`). Keys are imported once per isolate and kept by Rust.
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

/** A public key from its raw 32 bytes, base64url (`x` of the JWK). */
export function publicKey(x) {
  return nodeCrypto().createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
}

/** A private key from its seed and public key, both base64url (`d`, `x`). */
export function privateKey(d, x) {
  return nodeCrypto().createPrivateKey({ key: { kty: "OKP", crv: "Ed25519", d, x }, format: "jwk" });
}

/** Whether `signature` is `key`'s Ed25519 signature over `data`; never throws. */
export function verifySignature(key, data, signature) {
  try {
    return nodeCrypto().verify(null, data, key, signature);
  } catch {
    return false;
  }
}

/** `key`'s Ed25519 signature over `data` (64 bytes). */
export function signData(key, data) {
  return nodeCrypto().sign(null, data, key);
}
