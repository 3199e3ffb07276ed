// A stand-in for the gateway in unit tests: its signing keys, its JWKS (served
// through an injected fetch that counts requests) and assertions signed the
// way src/core/token.rs `assertion_signing_input` makes them — or broken on
// purpose.
import crypto from "node:crypto";

export const ISSUER = "https://auth.example.test";
export const AUDIENCE = "https://api.example.test";
export const TYPE = "portcullis-assertion+jwt";
export const NOW_MS = Date.UTC(2030, 0, 1);
export const NOW = NOW_MS / 1000;

const b64u = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** A signing key: `alg` "EdDSA" or "ES256". */
export function makeKey(alg = "EdDSA", kid = crypto.randomUUID()) {
  const { publicKey, privateKey } =
    alg === "EdDSA" ? crypto.generateKeyPairSync("ed25519") : crypto.generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg, use: "sig" };
  return { alg, kid, jwk, publicKey, privateKey };
}

/** Signs `header.payload` as JWS `alg` with `key` (EdDSA, ES256 or HS256 with `secret`). */
export function signWith(alg, key, header, payload) {
  const input = `${b64u(header)}.${b64u(payload)}`;
  let sig;
  if (alg === "EdDSA") sig = crypto.sign(null, Buffer.from(input), key);
  else if (alg === "ES256") sig = crypto.sign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
  else if (alg === "HS256") sig = crypto.createHmac("sha256", key).update(input).digest();
  else throw new Error(`no signer for ${alg}`);
  return `${input}.${sig.toString("base64url")}`;
}

/** The claims of a gateway assertion at NOW, with `over` merged in. */
export function claims(over = {}) {
  return {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: "user-1",
    sid: "session-1",
    roles: ["editor"],
    email: "ada@example.com",
    email_verified: true,
    jti: "token-1:1893456000",
    iat: NOW,
    exp: NOW + 60,
    ...over,
  };
}

export class FakeGateway {
  constructor(...keys) {
    this.keys = keys.length ? keys : [makeKey("EdDSA")];
    this.fetches = 0;
    this.failing = false;
    this.fetch = async (url, init) => {
      this.fetches++;
      this.lastUrl = String(url);
      this.lastInit = init;
      if (this.failing) throw new TypeError("fetch failed");
      return new Response(JSON.stringify({ keys: this.keys.map((k) => k.jwk) }), {
        headers: { "content-type": "application/json" },
      });
    };
  }

  get key() {
    return this.keys[0];
  }

  /** A valid assertion by the first (or given) key, with `over` merged into the claims. */
  assertion(over = {}, key = this.key, headerOver = {}) {
    return signWith(key.alg, key.privateKey, { alg: key.alg, kid: key.kid, typ: TYPE, ...headerOver }, claims(over));
  }
}

/** A settable clock in milliseconds, starting at NOW. */
export function clock() {
  const c = () => c.now;
  c.now = NOW_MS;
  c.advance = (secs) => {
    c.now += secs * 1000;
  };
  return c;
}

/** Verifier options for `gw` with a fixed clock. */
export function options(gw, over = {}) {
  return { issuer: ISSUER, audience: AUDIENCE, fetch: gw.fetch, clock: over.clock ?? clock(), ...over };
}

export const b64url = b64u;
