// SIGNING_ALG=ES256: keys on P-256, for verifiers that have no EdDSA — above
// all `jsonwebtoken` (Node's most used JWT library, named in the spec), which
// is the client here, with `jwks-rsa` fetching our JWKS; jose and PyJWT too.
//
// One D1 state, two gateways: the first with the default (EdDSA) signs a
// token and stops; the second, with SIGNING_ALG=ES256, keeps the EdDSA key
// active (the setting applies to new keys) until an admin rotation makes a
// P-256 key, while the EdDSA key stays published for its tokens.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import jwt from "jsonwebtoken";
import jwksClient from "jwks-rsa";
import { createRemoteJWKSet, jwtVerify, calculateJwkThumbprint, decodeProtectedHeader } from "jose";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { grantRole, signingKey, mint, claimsFor } from "./lib/d1.mjs";
import { pyjwt } from "./lib/pyjwt.mjs";

const PASSWORD = "correct horse battery";
// Fixed, so that both gateways (on different ports) issue for the same issuer.
const ISSUER = "https://portcullis.es256.test";
let dir;
let gw;
let eddsaToken;
let alice;
let root;

const b64json = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");

async function login(email) {
  const res = await post(`${gw.url}/auth/login`, { email, password: PASSWORD });
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/** jsonwebtoken's verdict on `token`, its key fetched from our JWKS by jwks-rsa. */
async function viaJsonwebtoken(token, options) {
  const client = jwksClient({ jwksUri: `${gw.url}/.well-known/jwks.json`, cache: false });
  const { kid } = decodeProtectedHeader(token);
  const key = (await client.getSigningKey(kid)).getPublicKey();
  return jwt.verify(token, key, options);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-es256-"));
  // 1. The default algorithm: an EdDSA key and a token signed with it.
  const first = await startGateway({ persistDir: dir, vars: { ISSUER } });
  alice = randomEmail("alice");
  root = randomEmail("root");
  for (const email of [alice, root]) {
    const res = await post(`${first.url}/auth/signup`, { email, password: PASSWORD });
    assert.equal(res.status, 201);
    if (email === alice) eddsaToken = (await json(res)).access_token;
    else await res.arrayBuffer();
  }
  await grantRole(first, root, "admin");
  await first.stop();
  // 2. The same state under SIGNING_ALG=ES256.
  gw = await startGateway({ persistDir: dir, origin: true, vars: { ISSUER, SIGNING_ALG: "ES256" } });
});

after(async () => {
  await gw?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("jsonwebtoken cannot read an EdDSA token — the reason ES256 exists", async () => {
  assert.equal(decodeProtectedHeader(eddsaToken).alg, "EdDSA");
  await assert.rejects(viaJsonwebtoken(eddsaToken, { algorithms: ["EdDSA"] }));
});

test("SIGNING_ALG applies to new keys: the active EdDSA key signs on until a rotation", async () => {
  const before = await login(alice);
  assert.equal(decodeProtectedHeader(before.access_token).alg, "EdDSA");
  const admin = await login(root);
  const rot = await fetch(`${gw.url}/auth/admin/keys/rotate`, { method: "POST", headers: { authorization: `Bearer ${admin.access_token}` } });
  assert.equal(rot.status, 200, await rot.text());
  const after = await login(alice);
  const header = decodeProtectedHeader(after.access_token);
  assert.equal(header.alg, "ES256");
  assert.equal(header.typ, "at+jwt");
  const jwks = await json(await fetch(`${gw.url}/.well-known/jwks.json`));
  const ec = jwks.keys.find((k) => k.kid === header.kid);
  assert.deepEqual([ec.kty, ec.crv, ec.alg, ec.use], ["EC", "P-256", "ES256", "sig"]);
  assert.equal(Buffer.from(ec.x, "base64url").length, 32);
  assert.equal(Buffer.from(ec.y, "base64url").length, 32);
  assert.equal(ec.kid, await calculateJwkThumbprint({ kty: "EC", crv: "P-256", x: ec.x, y: ec.y }, "sha256"), "kid is the RFC 7638 thumbprint");
  assert.ok(jwks.keys.some((k) => k.kty === "OKP" && k.alg === "EdDSA"), "the retired EdDSA key stays published");
  const discovery = await json(await fetch(`${gw.url}/.well-known/openid-configuration`));
  assert.ok(discovery.id_token_signing_alg_values_supported.includes("ES256"));
});

test("jsonwebtoken + jwks-rsa verify the ES256 access token (alg pinned, iss, aud)", async () => {
  const { access_token } = await login(alice);
  const claims = await viaJsonwebtoken(access_token, { algorithms: ["ES256"], issuer: ISSUER, audience: "portcullis" });
  assert.equal(claims.email, alice);
  assert.deepEqual(Object.keys(claims).sort(), ["amr", "aud", "auth_time", "email", "email_verified", "exp", "iat", "iss", "jti", "roles", "sid", "sub"]);
  await assert.rejects(viaJsonwebtoken(access_token, { algorithms: ["ES256"], issuer: ISSUER, audience: "someone-else" }), /audience/);
  const { payload } = await jwtVerify(access_token, createRemoteJWKSet(new URL(`${gw.url}/.well-known/jwks.json`)), {
    algorithms: ["ES256"], issuer: ISSUER, audience: "portcullis", typ: "at+jwt",
  });
  assert.equal(payload.email, alice);
});

test("the gateway forwards both tokens, and the origin verifies the ES256 assertion with jsonwebtoken", async () => {
  const { access_token } = await login(alice);
  for (const token of [access_token, eddsaToken]) {
    const res = await fetch(`${gw.url}/api/es256`, { headers: { authorization: `Bearer ${token}` } });
    const echo = await json(res);
    assert.equal(res.status, 200, JSON.stringify(echo));
    assert.equal(echo.headers["x-auth-email"], alice);
    const assertion = echo.headers["x-auth-assertion"];
    assert.equal(decodeProtectedHeader(assertion).alg, "ES256", "assertions are signed with the active key");
    const claims = await viaJsonwebtoken(assertion, { algorithms: ["ES256"], issuer: ISSUER, audience: gw.origin.url });
    assert.equal(claims.email, alice);
  }
});

test("PyJWT verifies the ES256 access token and assertion too", async () => {
  const { access_token } = await login(alice);
  const echo = await json(await fetch(`${gw.url}/api/py`, { headers: { authorization: `Bearer ${access_token}` } }));
  const results = await pyjwt(`${gw.url}/.well-known/jwks.json`, [
    { token: access_token, issuer: ISSUER, audience: "portcullis", typ: "at+jwt", algorithms: ["ES256"] },
    { token: echo.headers["x-auth-assertion"], issuer: ISSUER, audience: gw.origin.url, typ: "portcullis-assertion+jwt", algorithms: ["ES256"] },
    // The EdDSA key's token under ES256: PyJWT refuses the algorithm it was not told to expect.
    { token: eddsaToken, issuer: ISSUER, audience: "portcullis", typ: "at+jwt", algorithms: ["ES256"] },
  ]);
  assert.deepEqual(results.map((r) => r.ok), [true, true, false], JSON.stringify(results));
});

test("algorithm confusion either way, and a tampered ES256 signature, are refused with 401 invalid_token", async () => {
  const { access_token } = await login(alice);
  const [h, p, s] = access_token.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url"));
  const [eh, ep, es] = eddsaToken.split(".");
  const eddsaHeader = JSON.parse(Buffer.from(eh, "base64url"));
  const sig = Buffer.from(s, "base64url");
  sig[7] ^= 1;
  const forged = [
    `${b64json({ ...header, alg: "EdDSA" })}.${p}.${s}`, // ES256 key, header says EdDSA
    `${b64json({ ...eddsaHeader, alg: "ES256" })}.${ep}.${es}`, // EdDSA key, header says ES256
    `${h}.${p}.${sig.toString("base64url")}`,
    `${b64json({ ...header, alg: "HS256" })}.${p}.${s}`,
    `${b64json({ ...header, alg: "none" })}.${p}.`,
  ];
  for (const token of forged) {
    const res = await fetch(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${token}` } });
    const body = await json(res);
    assert.equal(res.status, 401, `${token.slice(0, 60)}: ${JSON.stringify(body)}`);
    assert.equal(body.code, "invalid_token");
    assert.match(res.headers.get("www-authenticate"), /error="invalid_token"/);
    const me = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(me.status, 401);
    await me.arrayBuffer();
  }
});

test("ES256 too: a token living longer than ACCESS_TTL + 30 s is refused though signed with our P-256 key; retiring the active P-256 key replaces it at once", async () => {
  const admin = await login(root);
  const rotated = await fetch(`${gw.url}/auth/admin/keys/rotate`, { method: "POST", headers: { authorization: `Bearer ${admin.access_token}` } });
  assert.equal(rotated.status, 200, await rotated.text()); // a P-256 key is active (whatever ran before)
  const { access_token, user } = await login(alice);
  const gateway = (token) => fetch(`${gw.url}/api/retire`, { headers: { authorization: `Bearer ${token}` } });
  const key = await signingKey(gw);
  assert.equal(key.alg, "ES256");
  const now = Math.floor(Date.now() / 1000);
  const lived = (secs) => mint(key, claimsFor(gw, user, { iss: ISSUER, iat: now, exp: now + secs }));
  assert.equal((await gateway(await lived(900 + 30))).status, 200);
  const long = await gateway(await lived(900 + 31));
  assert.equal(long.status, 401);
  assert.equal((await json(long)).code, "invalid_token");

  const kid = decodeProtectedHeader(access_token).kid;
  assert.equal((await gateway(access_token)).status, 200); // cached from here on
  const res = await fetch(`${gw.url}/auth/admin/keys/${kid}/retire`, { method: "POST", headers: { authorization: `Bearer ${(await login(root)).access_token}` } });
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.kid, kid);
  assert.ok(body.new_kid && body.new_kid !== kid);
  const jwks = await json(await fetch(`${gw.url}/.well-known/jwks.json`));
  assert.ok(!jwks.keys.some((k) => k.kid === kid), "gone from the JWKS");
  assert.deepEqual(jwks.keys.filter((k) => k.kid === body.new_kid).map((k) => [k.kty, k.alg]), [["EC", "ES256"]]);
  const refused = await gateway(access_token);
  assert.equal(refused.status, 401);
  assert.equal((await json(refused)).code, "invalid_token");
  // A fresh P-256 key signs tokens and assertions, and jsonwebtoken verifies them.
  const fresh = await login(alice);
  assert.deepEqual([decodeProtectedHeader(fresh.access_token).alg, decodeProtectedHeader(fresh.access_token).kid], ["ES256", body.new_kid]);
  const echo = await json(await gateway(fresh.access_token));
  const assertion = echo.headers["x-auth-assertion"];
  assert.equal(decodeProtectedHeader(assertion).kid, body.new_kid);
  assert.equal((await viaJsonwebtoken(assertion, { algorithms: ["ES256"], issuer: ISSUER, audience: gw.origin.url })).email, alice);
});
