// Key material and tokens for the bench, made in Node exactly as Portcullis makes them:
// - an Ed25519 signing key whose kid is the RFC 7638 JWK thumbprint,
// - its private seed sealed for the signing_keys row: base64url(nonce(12) ||
//   AES-256-GCM(seed) || tag(16)) with the kid as associated data, under a random
//   KEY_ENCRYPTION_KEY,
// - access tokens: JWS compact, header {alg: EdDSA, kid, typ: at+jwt}, claims iss, aud,
//   sub, sid, roles, email, email_verified, iat, exp, jti (the claims Portcullis issues).
import crypto from "node:crypto";
import { calculateJwkThumbprint } from "jose";

const b64u = (buf) => Buffer.from(buf).toString("base64url");

/**
 * A fresh signing key: the D1 row Portcullis will load, the KEK (random, or `kek`: a
 * 32-byte Buffer, to seal several keys for one deployment), the JWKS, the private key.
 */
export async function makeSigningKey(now = Math.floor(Date.now() / 1000), { kek = crypto.randomBytes(32) } = {}) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" }); // { crv, d, x, kty }
  const kid = await calculateJwkThumbprint({ kty: "OKP", crv: "Ed25519", x: jwk.x }, "sha256");
  const seed = Buffer.from(jwk.d, "base64url");
  const nonce = crypto.randomBytes(12);
  const cipher = crypto.createCipheriv("aes-256-gcm", kek, nonce);
  cipher.setAAD(Buffer.from(kid, "utf8"));
  const sealed = Buffer.concat([nonce, cipher.update(seed), cipher.final(), cipher.getAuthTag()]);
  const row = {
    kid,
    alg: "EdDSA",
    public_key: jwk.x,
    private_enc: b64u(sealed),
    status: "active",
    created_at: now - 60,
    retired_at: null,
    publish_until: null,
  };
  const jwks = { keys: [{ kty: "OKP", crv: "Ed25519", x: jwk.x, kid, alg: "EdDSA", use: "sig" }] };
  return { kid, row, kek: kek.toString("base64"), jwks, privateKey, publicKey };
}

/**
 * A token minter for `key`: mint({ roles }) -> compact JWS. Fast (node:crypto, sync).
 * `ttl` must not exceed the gateway's ACCESS_TTL (default 900): a token claiming a longer
 * lifetime (exp − iat beyond ACCESS_TTL + 30 s) is refused, however it is signed.
 * `sub` and `sid` are random unless given; `sid: "sub"` makes the session id the user id
 * (what the bench's fake D1 answers a `fresh` rule's session check with).
 */
export function minter(key, { issuer, audience, ttl = 900 }) {
  const header = b64u(JSON.stringify({ alg: "EdDSA", kid: key.kid, typ: "at+jwt" }));
  return ({ roles = ["user"], now = Math.floor(Date.now() / 1000), sub = crypto.randomUUID(), sid = crypto.randomUUID() } = {}) => {
    const claims = {
      iss: issuer,
      aud: audience,
      sub,
      sid: sid === "sub" ? sub : sid,
      roles,
      email: `user-${sub.slice(0, 8)}@bench.example`,
      email_verified: true,
      iat: now,
      exp: now + ttl,
      jti: crypto.randomUUID(),
    };
    const signing = `${header}.${b64u(JSON.stringify(claims))}`;
    const sig = crypto.sign(null, Buffer.from(signing), key.privateKey);
    return `${signing}.${b64u(sig)}`;
  };
}
