// E2E interop with a JWT library from another ecosystem: PyJWT (with
// `cryptography`), fetching the gateway's JWKS with its own PyJWKClient,
// verifies the access tokens Portcullis issues and the assertion the origin
// receives — as a Python API or origin would — and refuses what it must.
// The Python side is tests/interop/pyjwt_verify.py, run in the virtualenv
// scripts/setup-python.sh makes (npm test runs it first).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { PYTHON, pyjwt as runPyjwt } from "./lib/pyjwt.mjs";

const PASSWORD = "correct horse battery";
const ACCESS = "at+jwt";
const ASSERTION = "portcullis-assertion+jwt";

let gw;
let alice;

before(async () => {
  assert.ok(fs.existsSync(PYTHON), `${PYTHON} is missing: run \`bash scripts/setup-python.sh\` (npm test does)`);
  gw = await startGateway({ origin: true });
  alice = await signup();
});

after(async () => {
  await gw?.stop();
});

async function signup() {
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("pyjwt"), password: PASSWORD });
  const body = await json(res);
  assert.equal(res.status, 201, JSON.stringify(body));
  return body;
}

/** Runs PyJWT on each check against the gateway's JWKS; one result per check. */
const pyjwt = (checks) => runPyjwt(`${gw.url}/.well-known/jwks.json`, checks);

const asAccess = (token, over = {}) => ({ token, issuer: gw.url, audience: "portcullis", typ: ACCESS, ...over });
const asAssertion = (token, over = {}) => ({ token, issuer: gw.url, audience: gw.origin.url, typ: ASSERTION, ...over });

/** The origin's echo of a GET through the gateway. */
async function viaGateway(token, p = "/api/py") {
  const res = await fetch(`${gw.url}${p}`, { headers: { authorization: `Bearer ${token}` } });
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

test("PyJWT verifies the access tokens of signup, login and refresh against the JWKS (EdDSA, iss, aud, at+jwt)", async () => {
  const loginRes = await post(`${gw.url}/auth/login`, { email: alice.user.email, password: PASSWORD });
  const login = await json(loginRes);
  assert.equal(loginRes.status, 200, JSON.stringify(login));
  const refreshRes = await post(`${gw.url}/auth/refresh`, { refresh_token: login.refresh_token });
  const refreshed = await json(refreshRes);
  assert.equal(refreshRes.status, 200, JSON.stringify(refreshed));

  const results = await pyjwt([alice, login, refreshed].map((t) => asAccess(t.access_token)));
  for (const [i, r] of results.entries()) {
    assert.equal(r.ok, true, `token ${i}: ${r.error}`);
    assert.equal(r.header.alg, "EdDSA");
    assert.equal(r.header.typ, ACCESS);
    assert.equal(typeof r.header.kid, "string");
    assert.equal(r.claims.iss, gw.url);
    assert.equal(r.claims.aud, "portcullis");
    assert.equal(r.claims.sub, alice.user.id);
    assert.equal(r.claims.email, alice.user.email);
    assert.equal(r.claims.email_verified, false);
    assert.deepEqual(r.claims.roles, []);
    assert.equal(typeof r.claims.jti, "string");
    assert.ok(Number.isInteger(r.claims.iat) && Number.isInteger(r.claims.exp) && r.claims.exp > r.claims.iat);
  }
  assert.equal(results[0].claims.sid, alice.user.session_id);
  assert.equal(results[1].claims.sid, login.user.session_id);
  assert.equal(results[2].claims.sid, login.user.session_id, "a refresh keeps the session");
});

test("PyJWT verifies the assertion the origin receives, for the origin's audience, naming the caller", async () => {
  const echo = await viaGateway(alice.access_token, "/api/py?q=1");
  const id = echo.identity;
  const [r] = await pyjwt([asAssertion(id.assertion)]);
  assert.equal(r.ok, true, r.error);
  assert.equal(r.header.alg, "EdDSA");
  assert.equal(r.header.typ, ASSERTION);
  assert.equal(r.claims.iss, gw.url);
  assert.equal(r.claims.aud, gw.origin.url);
  assert.equal(r.claims.sub, id.user_id);
  assert.equal(r.claims.sub, alice.user.id);
  assert.equal(r.claims.sid, id.session_id);
  assert.equal(r.claims.email, id.email);
  assert.deepEqual(r.claims.roles, []);
  assert.ok(r.claims.exp - r.claims.iat > 0 && r.claims.exp - r.claims.iat <= 60);
});

test("PyJWT refuses forged, misdirected and swapped tokens", async () => {
  const echo = await viaGateway(alice.access_token);
  const [h, p, s] = alice.access_token.split(".");
  const claims = JSON.parse(Buffer.from(p, "base64url").toString());
  const forgedClaims = `${h}.${Buffer.from(JSON.stringify({ ...claims, roles: ["admin"] })).toString("base64url")}.${s}`;
  const flipped = s[5] === "A" ? "B" : "A";
  const forgedSignature = `${h}.${p}.${s.slice(0, 5)}${flipped}${s.slice(6)}`;
  const { kid } = JSON.parse(Buffer.from(h, "base64url").toString());
  const noneHeader = Buffer.from(JSON.stringify({ alg: "none", typ: ACCESS, kid })).toString("base64url");

  const results = await pyjwt([
    asAccess(forgedClaims),
    asAccess(forgedSignature),
    asAccess(`${noneHeader}.${p}.`),
    asAccess(alice.access_token, { audience: "someone-else" }),
    asAccess(alice.access_token, { issuer: "https://issuer.invalid" }),
    asAccess(echo.identity.assertion), // an assertion is not an access token
    asAssertion(alice.access_token), // nor the other way round
  ]);
  const expected = [
    /InvalidSignatureError/,
    /InvalidSignatureError/,
    /InvalidAlgorithmError/,
    /InvalidAudienceError/,
    /InvalidIssuerError/,
    /InvalidAudienceError|typ/,
    /InvalidAudienceError|typ/,
  ];
  for (const [i, r] of results.entries()) {
    assert.equal(r.ok, false, `check ${i} verified: ${JSON.stringify(r.claims)}`);
    assert.match(r.error, expected[i], `check ${i}: ${r.error}`);
  }
});
