// E2E interop: a standard JWT library (jose) pointed at the gateway's JWKS
// verifies what the gateway issues — access tokens for API clients, and the
// signed assertion the gateway hands to the origin — and refuses what it must.
//
// Two gateways, each with a private demo origin: `gw` (defaults) and `short`
// (ACCESS_TTL=1) for the assertion issued inside the expiry leeway.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRemoteJWKSet, jwtVerify, decodeJwt, decodeProtectedHeader } from "jose";
import crypto from "node:crypto";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { signingKey } from "./lib/d1.mjs";

const PASSWORD = "correct horse battery";
const ACCESS_TYP = "at+jwt";
const ASSERTION_TYP = "portcullis-assertion+jwt";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let gw;
let short;
let jwks; // jose key set for gw, from the discovery document's jwks_uri
let alice; // AuthResponse of a user signed up on gw

before(async () => {
  [gw, short] = await Promise.all([
    startGateway({ origin: true }),
    startGateway({ origin: true, vars: { ACCESS_TTL: "1" } }),
  ]);
  alice = await signup(gw);
  const discovery = await json(await fetch(`${gw.url}/.well-known/openid-configuration`));
  assert.equal(discovery.jwks_uri, `${gw.url}/.well-known/jwks.json`);
  jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
});

after(async () => {
  await Promise.all([gw?.stop(), short?.stop()]);
});

async function signup(instance, fields = {}) {
  const res = await post(`${instance.url}/auth/signup`, { email: randomEmail("interop"), password: PASSWORD, ...fields });
  const body = await json(res);
  assert.equal(res.status, 201, JSON.stringify(body));
  return body;
}

/** GET through the gateway to the demo origin; returns the origin's echo. */
async function viaGateway(instance, token, path = "/api/hello") {
  const res = await fetch(`${instance.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  const body = await json(res);
  assert.equal(res.status, 200, `${path}: ${res.status} ${JSON.stringify(body)}`);
  assert.equal(res.headers.get("x-demo-origin"), "1", "the answer comes from the demo origin");
  return body;
}

const accessOptions = () => ({ issuer: gw.url, audience: "portcullis", algorithms: ["EdDSA"], typ: ACCESS_TYP });
const assertionOptions = (instance = gw) => ({
  issuer: instance.url,
  audience: instance.origin.url,
  algorithms: ["EdDSA"],
  typ: ASSERTION_TYP,
});

/** Asserts that `promise` rejects with a jose error whose code is `code` (and claim, if given). */
async function rejectsWith(promise, code, claim) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `${err.code}: ${err.message}`);
    if (claim) assert.equal(err.claim, claim, err.message);
    return true;
  });
}

// ---------------------------------------------------------------------------
// access tokens
// ---------------------------------------------------------------------------

test("jose verifies an issued access token against the JWKS named by discovery (issuer = gateway URL, audience portcullis, EdDSA, at+jwt)", async () => {
  const { payload, protectedHeader } = await jwtVerify(alice.access_token, jwks, accessOptions());
  assert.equal(protectedHeader.alg, "EdDSA");
  assert.equal(protectedHeader.typ, ACCESS_TYP);
  assert.equal(typeof protectedHeader.kid, "string");
  assert.equal(payload.iss, gw.url);
  assert.equal(payload.aud, "portcullis");
  assert.equal(payload.sub, alice.user.id);
  assert.equal(payload.sid, alice.user.session_id);
  assert.equal(payload.email, alice.user.email);
  assert.deepEqual(payload.roles, []);
  assert.equal(payload.email_verified, false);
  assert.match(payload.jti, UUID);
  assert.equal(payload.exp - payload.iat, alice.expires_in);
});

test("jose verifies the access tokens of login and refresh too", async () => {
  const email = randomEmail("interop");
  await signup(gw, { email });
  const loginRes = await post(`${gw.url}/auth/login`, { email, password: PASSWORD });
  const loggedIn = await json(loginRes);
  assert.equal(loginRes.status, 200, JSON.stringify(loggedIn));
  const refreshRes = await post(`${gw.url}/auth/refresh`, { refresh_token: loggedIn.refresh_token });
  const refreshed = await json(refreshRes);
  assert.equal(refreshRes.status, 200, JSON.stringify(refreshed));
  for (const token of [loggedIn.access_token, refreshed.access_token]) {
    const { payload } = await jwtVerify(token, jwks, accessOptions());
    assert.equal(payload.sub, loggedIn.user.id);
    assert.equal(payload.sid, loggedIn.user.session_id);
  }
});

test("Node's own Ed25519 makes exactly the signature every issued token and assertion carries (RFC 8032: one per message, which lets any isolate recognise a token of its key as its own)", async () => {
  const email = randomEmail("interop");
  const signedUp = await signup(gw, { email });
  const loggedIn = await json(await post(`${gw.url}/auth/login`, { email, password: PASSWORD }));
  const refreshed = await json(await post(`${gw.url}/auth/refresh`, { refresh_token: loggedIn.refresh_token }));
  const { assertion } = (await viaGateway(gw, refreshed.access_token)).identity;
  // The gateway's private key, unsealed from D1 with the local KEY_ENCRYPTION_KEY.
  const { jwk } = await signingKey(gw);
  const key = crypto.createPrivateKey({ key: jwk, format: "jwk" });
  for (const token of [signedUp.access_token, loggedIn.access_token, refreshed.access_token, assertion]) {
    assert.equal(decodeProtectedHeader(token).kid, decodeProtectedHeader(alice.access_token).kid);
    const dot = token.lastIndexOf(".");
    const ours = crypto.sign(null, Buffer.from(token.slice(0, dot)), key).toString("base64url");
    assert.equal(token.slice(dot + 1), ours, `${decodeProtectedHeader(token).typ}: not the RFC 8032 signature`);
  }
});

test("jose refuses the access token when it expects another audience", async () => {
  await rejectsWith(jwtVerify(alice.access_token, jwks, { ...accessOptions(), audience: "someone-else" }), "ERR_JWT_CLAIM_VALIDATION_FAILED", "aud");
});

test("jose refuses the access token when it expects another issuer", async () => {
  await rejectsWith(
    jwtVerify(alice.access_token, jwks, { ...accessOptions(), issuer: "https://issuer.invalid" }),
    "ERR_JWT_CLAIM_VALIDATION_FAILED",
    "iss",
  );
});

test("jose refuses the access token when it expects another typ or algorithm", async () => {
  await rejectsWith(jwtVerify(alice.access_token, jwks, { ...accessOptions(), typ: "JWT" }), "ERR_JWT_CLAIM_VALIDATION_FAILED", "typ");
  await rejectsWith(jwtVerify(alice.access_token, jwks, { ...accessOptions(), algorithms: ["ES256"] }), "ERR_JOSE_ALG_NOT_ALLOWED");
});

test("jose refuses an access token whose claims were altered", async () => {
  const [h, , s] = alice.access_token.split(".");
  const claims = { ...decodeJwt(alice.access_token), roles: ["admin"] };
  const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${s}`;
  await rejectsWith(jwtVerify(forged, jwks, accessOptions()), "ERR_JWS_SIGNATURE_VERIFICATION_FAILED");
});

test("an access token from another gateway does not verify against this gateway's JWKS", async () => {
  const stranger = await signup(short);
  await rejectsWith(
    jwtVerify(stranger.access_token, jwks, { ...accessOptions(), issuer: short.url }),
    "ERR_JWKS_NO_MATCHING_KEY",
  );
});

// ---------------------------------------------------------------------------
// the origin assertion
// ---------------------------------------------------------------------------

test("the origin receives the caller's identity and a signed assertion that jose verifies for the origin's own audience", async () => {
  const echo = await viaGateway(gw, alice.access_token, "/api/hello?x=1");
  assert.equal(echo.method, "GET");
  assert.equal(echo.path, "/api/hello");
  assert.equal(echo.query, "x=1");
  const id = echo.identity;
  assert.equal(id.user_id, alice.user.id);
  assert.equal(id.email, alice.user.email);
  assert.equal(id.session_id, alice.user.session_id);
  assert.equal(id.roles, "");
  assert.equal(typeof id.assertion, "string");

  const { payload, protectedHeader } = await jwtVerify(id.assertion, jwks, assertionOptions());
  assert.equal(protectedHeader.alg, "EdDSA");
  assert.equal(protectedHeader.typ, ASSERTION_TYP);
  assert.equal(protectedHeader.kid, decodeProtectedHeader(alice.access_token).kid);
  assert.equal(payload.iss, gw.url);
  assert.equal(payload.aud, gw.origin.url);
  assert.equal(payload.sub, alice.user.id);
  assert.equal(payload.sid, alice.user.session_id);
  assert.equal(payload.email, alice.user.email);
  assert.deepEqual(payload.roles, []);
  const lifetime = payload.exp - payload.iat;
  assert.ok(lifetime > 0 && lifetime <= 60, `assertion lifetime ${lifetime} s`);
  assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 60, `iat ${payload.iat} is not now`);
});

test("each caller's assertion names that caller", async () => {
  const bob = await signup(gw);
  const [a, b] = await Promise.all([viaGateway(gw, alice.access_token), viaGateway(gw, bob.access_token)]);
  const pa = (await jwtVerify(a.identity.assertion, jwks, assertionOptions())).payload;
  const pb = (await jwtVerify(b.identity.assertion, jwks, assertionOptions())).payload;
  assert.equal(pa.sub, alice.user.id);
  assert.equal(pb.sub, bob.user.id);
  assert.equal(pb.email, bob.user.email);
  assert.notEqual(pa.sub, pb.sub);
});

test("a token this gateway issued is trusted from its cache: its first forward carries the assertion signed at issue", async () => {
  const carol = await signup(gw);
  const access = decodeJwt(carol.access_token);
  // Wait for the clock to pass the token's iat: an assertion signed now would say so.
  while (Date.now() / 1000 < access.iat + 1.2) await sleep(100);
  const echo = await viaGateway(gw, carol.access_token);
  const { payload } = await jwtVerify(echo.identity.assertion, jwks, assertionOptions());
  assert.equal(payload.sub, carol.user.id);
  assert.equal(payload.iat, access.iat, "signed when the access token was, not on this request");
  assert.equal(payload.jti, `${access.jti}:${access.iat}`);
});

test("an origin verifying assertions refuses a raw access token presented as one", async () => {
  await rejectsWith(jwtVerify(alice.access_token, jwks, assertionOptions()), "ERR_JWT_CLAIM_VALIDATION_FAILED");
});

test("an API verifying access tokens with jose refuses the assertion", async () => {
  const echo = await viaGateway(gw, alice.access_token);
  await rejectsWith(jwtVerify(echo.identity.assertion, jwks, accessOptions()), "ERR_JWT_CLAIM_VALIDATION_FAILED");
});

test(
  "an assertion issued while the access token is inside the expiry leeway is not already expired",
  async () => {
    const user = await signup(short);
    const access = decodeJwt(user.access_token);
    assert.equal(access.exp - access.iat, 1);
    while (Date.now() / 1000 < access.exp + 2) await sleep(200);
    // the gateway still admits the token (30 s leeway) ...
    const echo = await viaGateway(short, user.access_token, "/api/late");
    const claims = decodeJwt(echo.identity.assertion);
    // ... so the assertion it hands the origin must be usable by the origin
    assert.ok(claims.exp > claims.iat, `assertion exp ${claims.exp} <= iat ${claims.iat}`);
    const shortJwks = createRemoteJWKSet(new URL(`${short.url}/.well-known/jwks.json`));
    const { payload } = await jwtVerify(echo.identity.assertion, shortJwks, assertionOptions(short));
    assert.equal(payload.sub, user.user.id);
  },
);
