// The framework-free verifier: what it accepts, what it refuses, and how it
// fetches and caches the gateway's JWKS.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createVerifier, AssertionError, problemResponse } from "../src/index.js";
import { FakeGateway, makeKey, signWith, claims, clock, options, b64url, ISSUER, AUDIENCE, TYPE, NOW } from "./issuer.mjs";

/** Asserts that verifying `value` is refused with `code` (and a detail matching `detail`). */
async function refused(verifier, value, code, detail) {
  await assert.rejects(verifier.verifyAssertion(value), (err) => {
    assert.ok(err instanceof AssertionError, `not an AssertionError: ${err}`);
    assert.equal(err.code, code, err.detail);
    if (detail) assert.match(err.detail, detail);
    return true;
  });
}

test("a valid EdDSA assertion gives the identity, every claim included", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  const user = await v.verifyAssertion(gw.assertion({ plan: "pro", org: { id: "o1" } }));
  assert.equal(user.id, "user-1");
  assert.equal(user.email, "ada@example.com");
  assert.equal(user.emailVerified, true);
  assert.deepEqual(user.roles, ["editor"]);
  assert.equal(user.sessionId, "session-1");
  assert.equal(user.claims.plan, "pro", "claims the gateway adds reach the app");
  assert.deepEqual(user.claims.org, { id: "o1" });
  assert.equal(user.claims.iss, ISSUER);
  assert.ok(Object.isFrozen(user) && Object.isFrozen(user.roles) && Object.isFrozen(user.claims));
});

test("a valid ES256 assertion is accepted", async () => {
  const gw = new FakeGateway(makeKey("ES256"));
  const user = await createVerifier(options(gw)).verifyAssertion(gw.assertion());
  assert.equal(user.id, "user-1");
});

test("a changed payload under the original signature is refused", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  const [h, , s] = gw.assertion().split(".");
  const forged = `${h}.${b64url(claims({ roles: ["admin"] }))}.${s}`;
  await refused(v, forged, "invalid_assertion", /bad signature/);
});

test("an assertion signed by another key under a published kid is refused", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  const impostor = makeKey("EdDSA", gw.key.kid);
  await refused(v, gw.assertion({}, impostor), "invalid_assertion", /bad signature/);
});

test("a wrong or missing typ is refused, an access token above all", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  for (const typ of ["at+jwt", "JWT", undefined]) {
    await refused(v, gw.assertion({}, gw.key, { typ }), "invalid_assertion", /typ/);
  }
});

test("an assertion for another audience is refused; a URL audience is compared by its origin", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  await refused(v, gw.assertion({ aud: "https://other.example.test" }), "invalid_assertion", /audience/);
  await refused(v, gw.assertion({ aud: ["https://other.example.test"] }), "invalid_assertion", /audience/);
  await refused(v, gw.assertion({ aud: undefined }), "invalid_assertion", /audience/);
  assert.equal((await v.verifyAssertion(gw.assertion({ aud: [AUDIENCE, "x"] }))).id, "user-1");
  const slash = createVerifier(options(gw, { audience: `${AUDIENCE}/` }));
  assert.equal((await slash.verifyAssertion(gw.assertion())).id, "user-1");
  const several = createVerifier(options(gw, { audience: ["https://a.example.test", AUDIENCE] }));
  assert.equal((await several.verifyAssertion(gw.assertion())).id, "user-1");
});

test("an assertion from another issuer is refused", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  await refused(v, gw.assertion({ iss: "https://evil.example.test" }), "invalid_assertion", /issuer/);
  await refused(v, gw.assertion({ iss: `${ISSUER}/` }), "invalid_assertion", /issuer/);
  await refused(v, gw.assertion({ iss: undefined }), "invalid_assertion", /issuer/);
});

test("an ISSUER with a trailing slash is taken as the gateway takes it: without", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw, { issuer: `${ISSUER}/` }));
  assert.equal(v.issuer, ISSUER);
  assert.equal((await v.verifyAssertion(gw.assertion())).id, "user-1", "the gateway signs iss without the slash");
  assert.equal(gw.lastUrl, `${ISSUER}/.well-known/jwks.json`);
  await refused(v, gw.assertion({ iss: `${ISSUER}/` }), "invalid_assertion", /issuer/);
  const twice = createVerifier(options(gw, { issuer: `${ISSUER}//` }));
  assert.equal((await twice.verifyAssertion(gw.assertion())).id, "user-1");
  assert.throws(() => createVerifier({ issuer: "/", audience: AUDIENCE }), /issuer/);
});

test("expiry: accepted within the leeway, refused after it", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c }));
  const a = gw.assertion();
  c.advance(60 + 30);
  assert.equal((await v.verifyAssertion(a)).id, "user-1", "exp + leeway is still valid");
  c.advance(1);
  await refused(v, a, "assertion_expired");
  const strict = createVerifier(options(gw, { clock: c, leewaySeconds: 0 }));
  await refused(strict, gw.assertion({ iat: NOW + 30, exp: NOW + 90 }), "assertion_expired");
});

test("an assertion issued in the future, not yet valid, or without exp / iat is refused", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  await refused(v, gw.assertion({ iat: NOW + 31, exp: NOW + 91 }), "invalid_assertion", /future/);
  await refused(v, gw.assertion({ nbf: NOW + 31 }), "invalid_assertion", /not valid yet/);
  await refused(v, gw.assertion({ exp: undefined }), "invalid_assertion", /exp and iat/);
  await refused(v, gw.assertion({ iat: "now" }), "invalid_assertion", /exp and iat/);
  assert.equal((await v.verifyAssertion(gw.assertion({ iat: NOW + 29 }))).id, "user-1", "within the leeway");
});

test("alg none is refused, with or without a signature", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  const h = b64url({ alg: "none", kid: gw.key.kid, typ: TYPE });
  const p = b64url(claims());
  await refused(v, `${h}.${p}.`, "invalid_assertion", /compact/);
  await refused(v, `${h}.${p}.${b64url("x".repeat(64))}`, "invalid_assertion", /alg must be/);
  assert.equal(gw.fetches, 0, "refused before any key is looked up");
});

test("HS256 keyed with the published public key is refused (algorithm confusion)", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  for (const secret of [gw.key.jwk.x, Buffer.from(gw.key.jwk.x, "base64url"), JSON.stringify(gw.key.jwk)]) {
    const hs = signWith("HS256", secret, { alg: "HS256", kid: gw.key.kid, typ: TYPE }, claims());
    await refused(v, hs, "invalid_assertion", /alg must be/);
  }
});

test("a header alg other than the key's is refused, even a supported one", async () => {
  const ed = makeKey("EdDSA");
  const es = makeKey("ES256");
  const gw = new FakeGateway(ed, es);
  const v = createVerifier(options(gw));
  // ES256 claimed over the Ed25519 key's kid (signed with the P-256 key).
  const confused = signWith("ES256", es.privateKey, { alg: "ES256", kid: ed.kid, typ: TYPE }, claims());
  await refused(v, confused, "invalid_assertion", /alg does not match/);
  const confused2 = signWith("EdDSA", ed.privateKey, { alg: "EdDSA", kid: es.kid, typ: TYPE }, claims());
  await refused(v, confused2, "invalid_assertion", /alg does not match/);
});

test("a JWK whose alg disagrees with its key type is not used", async () => {
  const k = makeKey("EdDSA");
  k.jwk.alg = "ES256";
  const gw = new FakeGateway(k);
  const v = createVerifier(options(gw));
  await refused(v, gw.assertion(), "invalid_assertion", /not in the gateway's JWKS/);
});

test("an unknown kid fetches the JWKS again once, then is refused without further fetches until the cooldown ends", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c }));
  await v.verifyAssertion(gw.assertion());
  assert.equal(gw.fetches, 1);
  const stranger = makeKey("EdDSA");
  await refused(v, gw.assertion({}, stranger), "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal(gw.fetches, 2, "one refetch for the unknown kid");
  await refused(v, gw.assertion({}, makeKey("EdDSA")), "invalid_assertion", /not in the gateway's JWKS/);
  await refused(v, gw.assertion({}, stranger), "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal(gw.fetches, 2, "no refetch within the cooldown");
  c.advance(4);
  await refused(v, gw.assertion({}, stranger), "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal(gw.fetches, 2, "the default cooldown is 5 s, the gateway's JWKS reload interval");
  c.advance(1);
  await refused(v, gw.assertion({}, stranger), "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal(gw.fetches, 3, "the cooldown over, one more");
});

test("a rotated key is picked up by one refetch; the old one keeps working while published", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  const old = gw.key;
  await v.verifyAssertion(gw.assertion());
  const fresh = makeKey("EdDSA");
  gw.keys = [fresh, old];
  assert.equal((await v.verifyAssertion(gw.assertion({}, fresh))).id, "user-1");
  assert.equal(gw.fetches, 2);
  assert.equal((await v.verifyAssertion(gw.assertion({}, old))).id, "user-1");
  assert.equal(gw.fetches, 2);
});

test("the JWKS is fetched once for many requests, concurrent first ones included, and again when stale", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c, jwksCacheSeconds: 60 }));
  const a = gw.assertion({ exp: NOW + 1000 });
  await Promise.all(Array.from({ length: 20 }, () => v.verifyAssertion(a)));
  assert.equal(gw.fetches, 1);
  assert.equal(gw.lastUrl, `${ISSUER}/.well-known/jwks.json`);
  c.advance(59);
  await v.verifyAssertion(a);
  assert.equal(gw.fetches, 1);
  c.advance(1);
  await v.verifyAssertion(a);
  assert.equal(gw.fetches, 2);
});

test("a key removed from the JWKS stops verifying once the cache is refreshed", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c, jwksCacheSeconds: 60 }));
  const a = gw.assertion({ exp: NOW + 1000 });
  await v.verifyAssertion(a);
  gw.keys = [makeKey("EdDSA")];
  c.advance(60);
  await refused(v, a, "invalid_assertion", /not in the gateway's JWKS/);
});

test("JWKS unreachable: 503 with no keys; stale keys used for at most one more cache period", async () => {
  const gw = new FakeGateway();
  gw.failing = true;
  const c = clock();
  const v = createVerifier(options(gw, { clock: c, jwksCacheSeconds: 60 }));
  const a = gw.assertion({ exp: NOW + 1000 });
  await refused(v, a, "jwks_unavailable");
  gw.failing = false;
  c.advance(5);
  await v.verifyAssertion(a);
  gw.failing = true;
  c.advance(119);
  assert.equal((await v.verifyAssertion(a)).id, "user-1", "stale keys within twice the cache time");
  c.advance(1);
  await refused(v, a, "jwks_unavailable");
});

test("concurrent requests share one failing JWKS fetch; later ones try again after a back-off", async () => {
  const gw = new FakeGateway();
  gw.failing = true;
  const c = clock();
  const v = createVerifier(options(gw, { clock: c }));
  const a = gw.assertion();
  const results = await Promise.allSettled(Array.from({ length: 10 }, () => v.verifyAssertion(a)));
  assert.deepEqual(results.map((r) => r.reason?.code), Array(10).fill("jwks_unavailable"));
  assert.equal(gw.fetches, 1);
  c.advance(4);
  await refused(v, a, "jwks_unavailable");
  assert.equal(gw.fetches, 1, "no new fetch within the back-off (refetchCooldownSeconds)");
  c.advance(1);
  await refused(v, a, "jwks_unavailable");
  assert.equal(gw.fetches, 2, "the back-off over, one more");
  gw.failing = false;
  await refused(v, a, "jwks_unavailable");
  assert.equal(gw.fetches, 2, "a failure starts the back-off again");
  c.advance(5);
  assert.equal((await v.verifyAssertion(a)).id, "user-1");
  assert.equal(gw.fetches, 3);
});

test("during a JWKS outage stale keys answer at once, one fetch per back-off", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c, jwksCacheSeconds: 60 }));
  const a = gw.assertion({ exp: NOW + 1000 });
  await v.verifyAssertion(a);
  gw.failing = true;
  c.advance(60);
  for (let i = 0; i < 5; i++) assert.equal((await v.verifyAssertion(a)).id, "user-1");
  assert.equal(gw.fetches, 2, "one failed refresh, then the cached keys without fetching");
  // An unknown kid during the back-off: the JWKS cannot be asked, so 503, not "not in the JWKS".
  await refused(v, gw.assertion({}, makeKey("EdDSA")), "jwks_unavailable");
  assert.equal(gw.fetches, 2);
  c.advance(5);
  assert.equal((await v.verifyAssertion(a)).id, "user-1");
  assert.equal(gw.fetches, 3);
  gw.failing = false;
  c.advance(5);
  assert.equal((await v.verifyAssertion(a)).id, "user-1");
  assert.equal(gw.fetches, 4, "the JWKS back: fetched, and fresh again");
  assert.equal((await v.verifyAssertion(a)).id, "user-1");
  assert.equal(gw.fetches, 4);
});

test("a hanging JWKS is waited for once per back-off, not by every request", async () => {
  const gw = new FakeGateway();
  const c = clock();
  let fetches = 0;
  // A fetch that fails only after the time its timeout allows has passed.
  const hanging = async () => {
    fetches++;
    c.advance(5);
    throw new DOMException("The operation was aborted due to timeout", "TimeoutError");
  };
  const v = createVerifier(options(gw, { clock: c, fetch: hanging, jwksTimeoutMs: 5000 }));
  const a = gw.assertion({ exp: NOW + 1000 });
  await refused(v, a, "jwks_unavailable");
  assert.equal(fetches, 1);
  const started = c.now;
  await refused(v, a, "jwks_unavailable");
  assert.equal(fetches, 1, "answered at once");
  assert.equal(c.now, started);
});

test("clearKeyCache forgets the keys: a key retired at the gateway stops verifying at once", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c }));
  const a = gw.assertion({ exp: NOW + 1000 });
  await v.verifyAssertion(a);
  gw.keys = [makeKey("EdDSA")]; // retired at once
  c.advance(10);
  assert.equal((await v.verifyAssertion(a)).id, "user-1", "cached: still trusted");
  v.clearKeyCache();
  await refused(v, a, "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal(gw.fetches, 2);
  assert.equal((await v.verifyAssertion(gw.assertion())).id, "user-1");
  assert.equal(gw.fetches, 2);
  // It also ends a back-off: the JWKS is asked at once.
  gw.failing = true;
  v.clearKeyCache();
  await refused(v, a, "jwks_unavailable");
  gw.failing = false;
  v.clearKeyCache();
  assert.equal((await v.verifyAssertion(gw.assertion())).id, "user-1");
  assert.equal(gw.fetches, 4);
});

test("an unknown kid whose own fetch failed gets 503 during the back-off, not 401", async () => {
  const gw = new FakeGateway();
  const c = clock();
  const v = createVerifier(options(gw, { clock: c }));
  await v.verifyAssertion(gw.assertion({ exp: NOW + 1000 }));
  gw.failing = true;
  const stranger = gw.assertion({ exp: NOW + 1000 }, makeKey("EdDSA"));
  await refused(v, stranger, "jwks_unavailable");
  assert.equal(gw.fetches, 2);
  c.advance(1);
  await refused(v, stranger, "jwks_unavailable");
  assert.equal(gw.fetches, 2, "no new fetch within the back-off");
  assert.equal((await v.verifyAssertion(gw.assertion({ exp: NOW + 1000 }))).id, "user-1", "known keys still answer");
  gw.failing = false;
  c.advance(4);
  await refused(v, stranger, "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal(gw.fetches, 3, "the back-off over: fetched, and the kid is not there");
});

/** A fetch of `gw`'s JWKS as it is when called, whose first answer waits for `release()`. */
function heldFirstFetch(gw) {
  let release;
  const gate = new Promise((r) => (release = r));
  let held = true;
  const fetch = async () => {
    gw.fetches++;
    const body = JSON.stringify({ keys: gw.keys.map((k) => k.jwk) });
    if (held) {
      held = false;
      await gate;
    }
    return new Response(body, { headers: { "content-type": "application/json" } });
  };
  return { fetch, release: () => release() };
}

const tick = () => new Promise((r) => setImmediate(r));

test("clearKeyCache during a fetch: the fetch's keys are not stored, nor trusted by later requests", async () => {
  const gw = new FakeGateway();
  const old = gw.key;
  const held = heldFirstFetch(gw);
  const v = createVerifier(options(gw, { fetch: held.fetch }));
  const a = gw.assertion({ exp: NOW + 1000 }, old);
  const outcome = (p) =>
    p.then(
      () => "verified",
      (err) => `${err.code}: ${err.detail}`,
    );
  const before = outcome(v.verifyAssertion(a));
  await tick();
  assert.equal(gw.fetches, 1, "the first fetch, still listing the old key, is under way");
  const fresh = makeKey("EdDSA");
  gw.keys = [fresh]; // the old key retired at once
  v.clearKeyCache();
  const after = outcome(v.verifyAssertion(a));
  await tick();
  held.release();
  const refusal = "invalid_assertion: the assertion's key is not in the gateway's JWKS";
  assert.equal(await after, refusal, "a request after the clear does not join the fetch begun before it");
  assert.equal(await before, refusal, "the request begun before the clear fetched again too");
  await refused(v, a, "invalid_assertion", /not in the gateway's JWKS/);
  assert.equal((await v.verifyAssertion(gw.assertion({ exp: NOW + 1000 }, fresh))).id, "user-1");
  // After the clear: one fetch for the later request, one more (unknown kid) for the earlier one.
  assert.equal(gw.fetches, 3);
});

test("clearKeyCache during a fetch: a valid kid is fetched again, not refused from an empty cache", async () => {
  const gw = new FakeGateway();
  const held = heldFirstFetch(gw);
  const v = createVerifier(options(gw, { fetch: held.fetch }));
  const pending = v.verifyAssertion(gw.assertion({ exp: NOW + 1000 }));
  await tick();
  v.clearKeyCache();
  held.release();
  assert.equal((await pending).id, "user-1");
  assert.equal(gw.fetches, 2, "the cleared fetch's keys dropped, the JWKS asked again");
});

test("missing, empty, repeated, oversized and malformed values are refused", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  await refused(v, undefined, "missing_assertion");
  await refused(v, null, "missing_assertion");
  await refused(v, "", "missing_assertion");
  const a = gw.assertion();
  await refused(v, [a, a], "invalid_assertion", /more than one/);
  await refused(v, `${a}, ${a}`, "invalid_assertion", /compact/);
  await refused(v, gw.assertion({ pad: "x".repeat(9000) }), "invalid_assertion", /compact/);
  await refused(v, "a.b", "invalid_assertion", /compact/);
  await refused(v, `Bearer ${a}`, "invalid_assertion", /compact/);
  await refused(v, `${b64url("[1]")}.${b64url(claims())}.AAAA`, "invalid_assertion", /compact/);
  assert.equal(gw.fetches, 0);
});

test("claims the identity needs must be there and well typed", async () => {
  const gw = new FakeGateway();
  const v = createVerifier(options(gw));
  for (const over of [{ sub: undefined }, { sub: "" }, { sid: 7 }, { roles: "admin" }, { roles: [1] }, { email: null }]) {
    await refused(v, gw.assertion(over), "invalid_assertion", /lacks/);
  }
});

test("the default fetch reads the JWKS over HTTP from <issuer>/.well-known/jwks.json", async () => {
  const key = makeKey("EdDSA");
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    assert.equal(req.url, "/.well-known/jwks.json");
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ keys: [key.jwk] }));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  try {
    const issuer = `http://127.0.0.1:${server.address().port}`;
    const v = createVerifier({ issuer, audience: AUDIENCE });
    const a = signWith("EdDSA", key.privateKey, { alg: "EdDSA", kid: key.kid, typ: TYPE }, claims({ iss: issuer, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 60 }));
    assert.equal((await v.verifyAssertion(a)).id, "user-1");
    assert.equal(hits, 1);
  } finally {
    server.close();
  }
});

test("options are checked when the verifier is made", () => {
  assert.throws(() => createVerifier({ audience: AUDIENCE }), /issuer/);
  assert.throws(() => createVerifier({ issuer: ISSUER }), /audience/);
  assert.throws(() => createVerifier({ issuer: ISSUER, audience: AUDIENCE, leewaySeconds: -1 }), /leewaySeconds/);
  assert.throws(() => createVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUrl: "not a url" }), TypeError);
});

test("refusals render as problem+json with a challenge a token refresh is not asked to cure", () => {
  const missing = problemResponse(new AssertionError("missing_assertion", 401, "no header"));
  assert.equal(missing.headers["www-authenticate"], 'Bearer realm="portcullis"');
  const bad = problemResponse(new AssertionError("invalid_assertion", 401, 'bad "sig"'));
  // The assertion is the gateway's credential: no error="invalid_token", which tells a client
  // a refresh of its own token cures the 401 (packages/client resends on it).
  assert.equal(bad.headers["www-authenticate"], 'Bearer realm="portcullis"');
  const expired = problemResponse(new AssertionError("assertion_expired", 401, "expired"));
  assert.equal(expired.headers["www-authenticate"], 'Bearer realm="portcullis"');
  assert.equal(bad.headers["content-type"], "application/problem+json");
  assert.deepEqual(JSON.parse(bad.body), { type: "about:blank", title: "Unauthorized", status: 401, detail: 'bad "sig"', code: "invalid_assertion" });
  const role = problemResponse(new AssertionError("insufficient_role", 403, "needs admin"));
  assert.match(role.headers["www-authenticate"], /error="insufficient_scope"/);
  const down = problemResponse(new AssertionError("jwks_unavailable", 503, "down"));
  assert.equal(down.headers["www-authenticate"], undefined);
});
