// The origin helpers end to end: the real gateway (wrangler dev) in front of a
// real Express app using packages/origin-node, then in front of a real FastAPI
// app under uvicorn using packages/origin-python
// (tests/e2e/fixtures/origin_fastapi.py, in the .venv-origin virtualenv of
// scripts/setup-origin-python.sh). Requests through the gateway are accepted
// with the caller's identity, also across key rotations; requests sent to the
// origins directly with missing, bare-header, forged, expired or
// wrong-audience assertions are refused.
//
// Both gateway runs share one local D1 (so one set of signing keys) and one
// ISSUER, as two origins behind one deployment would: an assertion one origin
// received is then refused by the other for its audience alone.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import express from "express";
import { startGateway, json, randomEmail, ROOT } from "./harness.mjs";
import { signup, makeAdmin, login, authed, assertProblem } from "./lib/accounts.mjs";
import { portcullis } from "../../packages/origin-node/src/express.js";

const ISSUER = "https://portcullis.e2e.test";
const PYTHON = path.join(ROOT, ".venv-origin", "bin", "python");
const FASTAPI_APP = path.join(ROOT, "tests", "e2e", "fixtures", "origin_fastapi.py");

const state = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-origin-e2e-"));
after(() => fs.rmSync(state, { recursive: true, force: true }));

const header = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[0], "base64url").toString());
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
const payloadOf = (jwt) => JSON.parse(Buffer.from(jwt.split(".")[1], "base64url").toString());

/** The gateway for `originUrl`, on the shared state and issuer. */
const gatewayFor = (originUrl) => startGateway({ persistDir: state, vars: { ISSUER, ORIGIN_URL: originUrl } });

/** GET `p` through the gateway with a bearer token; the origin's JSON echo. */
async function through(gw, p, token) {
  const res = await authed(`${gw.url}${p}`, token);
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/** GET `p` on an origin directly, with these headers. */
const direct = (origin, p, headers = {}) => fetch(`${origin}${p}`, { headers });

/** An assertion with its payload changed and the signature kept. */
function forge(assertion, over) {
  const [h, p, s] = assertion.split(".");
  return `${h}.${b64({ ...JSON.parse(Buffer.from(p, "base64url").toString()), ...over })}.${s}`;
}

/**
 * The refusals every origin must make for requests that did not come through
 * the gateway; `fresh` is a valid assertion it just received.
 */
async function refusesDirectRequests(origin, fresh) {
  assert.equal((await direct(origin, "/api/me", { "x-auth-assertion": fresh })).status, 200, "the genuine assertion passes");

  const none = await direct(origin, "/api/me");
  await assertProblem(none, 401, "missing_assertion");
  assert.equal(none.headers.get("www-authenticate"), 'Bearer realm="portcullis"');

  const bare = await direct(origin, "/api/staff", {
    "x-auth-user-id": payloadOf(fresh).sub,
    "x-auth-email": payloadOf(fresh).email,
    "x-auth-roles": "admin",
    "x-auth-session-id": payloadOf(fresh).sid,
  });
  await assertProblem(bare, 401, "missing_assertion");

  const forged = await direct(origin, "/api/staff", { "x-auth-assertion": forge(fresh, { roles: ["admin"] }) });
  const body = await assertProblem(forged, 401, "invalid_assertion");
  assert.match(body.detail, /bad signature/);
  // Not error="invalid_token": the browser client would refresh its token and resend, which
  // cannot cure the gateway's own credential.
  assert.equal(forged.headers.get("www-authenticate"), 'Bearer realm="portcullis"');

  const unsigned = `${b64({ ...header(fresh), alg: "none" })}.${fresh.split(".")[1]}.${fresh.split(".")[2]}`;
  await assertProblem(await direct(origin, "/api/me", { "x-auth-assertion": unsigned }), 401, "invalid_assertion");

  // The same assertion, an hour later.
  const expired = await direct(origin, "/later/api/me", { "x-auth-assertion": fresh });
  await assertProblem(expired, 401, "assertion_expired");
  assert.equal(expired.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
}

/** Rotates the signing key as `adminEmail`; the new kid. */
async function rotate(gw, adminEmail) {
  const admin = await json(await login(gw, adminEmail));
  const res = await authed(`${gw.url}/auth/admin/keys/rotate`, admin.access_token, { method: "POST" });
  const body = await json(res);
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.new_kid;
}

const adminEmail = randomEmail("origin-admin");
const captured = {}; // an assertion each origin received through the gateway: {express, fastapi}
const origins = {}; // their URLs
let expressServer; // serves to the end, for the cross-origin check
after(() => expressServer?.close());

describe("Express (packages/origin-node) behind the gateway", () => {
  let gw;
  let origin;
  let jwksFetches = 0;

  before(async () => {
    // The app needs the gateway's URL (for the JWKS) and the gateway the
    // app's: listen first, mount the app once the gateway is up.
    let app = (req, res) => {
      res.statusCode = 503;
      res.end();
    };
    expressServer = http.createServer((req, res) => app(req, res));
    await new Promise((r) => expressServer.listen(0, "127.0.0.1", r));
    origin = `http://127.0.0.1:${expressServer.address().port}`;
    origins.express = origin;
    gw = await gatewayFor(origin);

    const common = {
      issuer: ISSUER,
      audience: origin,
      jwksUrl: `${gw.url}/.well-known/jwks.json`,
      jwksCacheSeconds: 600,
    };
    const auth = portcullis({
      ...common,
      fetch: (url, init) => {
        jwksFetches++;
        return fetch(url, init);
      },
    });
    const later = portcullis({ ...common, clock: () => Date.now() + 3600_000 });
    const echo = (req, res) => res.json({ user: req.user, assertion: req.headers["x-auth-assertion"] });
    const a = express();
    a.get("/api/me", auth.requireUser(), echo);
    a.get("/api/staff", auth.requireRole("admin"), echo);
    a.get("/api/manage", auth.requireAnyRole(["admin", "editor"]), echo);
    a.get("/later/api/me", later.requireUser(), echo);
    app = a;
    await makeAdmin(gw, adminEmail);
  });

  after(async () => {
    await gw?.stop();
  });

  test("a signed-in request reaches Express with the caller's identity", async () => {
    const alice = await signup(gw, randomEmail("origin-alice"));
    const { user, assertion } = await through(gw, "/api/me", alice.access_token);
    assert.equal(user.id, alice.user.id);
    assert.equal(user.email, alice.user.email);
    assert.equal(user.emailVerified, false);
    assert.deepEqual(user.roles, []);
    assert.equal(user.sessionId, alice.user.session_id);
    assert.equal(user.claims.iss, ISSUER);
    assert.equal(user.claims.aud, origin);
    assert.equal(header(assertion).typ, "portcullis-assertion+jwt");
    captured.express = assertion;
  });

  test("roles: 403 problem from Express without the role, 200 with it", async () => {
    const bob = await signup(gw, randomEmail("origin-bob"));
    const res = await authed(`${gw.url}/api/staff`, bob.access_token);
    await assertProblem(res, 403, "insufficient_role");
    assert.match(res.headers.get("www-authenticate"), /error="insufficient_scope"/);
    await assertProblem(await authed(`${gw.url}/api/manage`, bob.access_token), 403, "insufficient_role");
    const admin = await json(await login(gw, adminEmail));
    assert.deepEqual((await through(gw, "/api/staff", admin.access_token)).user.roles, ["admin"]);
    assert.deepEqual((await through(gw, "/api/manage", admin.access_token)).user.roles, ["admin"]);
  });

  test("direct requests with missing, bare-header, forged, unsigned or expired assertions are refused", async () => {
    const carol = await signup(gw, randomEmail("origin-carol"));
    const { assertion } = await through(gw, "/api/me", carol.access_token);
    await refusesDirectRequests(origin, assertion);
  });

  test("across a key rotation: one JWKS refetch, new and old keys accepted", async () => {
    const dave = await signup(gw, randomEmail("origin-dave"));
    const before = await through(gw, "/api/me", dave.access_token);
    const oldKid = header(before.assertion).kid;
    const fetchesBefore = jwksFetches;

    const newKid = await rotate(gw, adminEmail);
    assert.notEqual(newKid, oldKid);
    const again = await json(await login(gw, dave.user.email));
    const after = await through(gw, "/api/me", again.access_token);
    assert.equal(header(after.assertion).kid, newKid, "the gateway signs with the new key at once");
    assert.equal(after.user.id, dave.user.id);
    assert.equal(jwksFetches - fetchesBefore, 1, "the unknown kid fetched the JWKS once");
    // The token from before the rotation still passes.
    assert.equal((await through(gw, "/api/me", dave.access_token)).user.id, dave.user.id);
  });
});

describe("FastAPI (packages/origin-python) behind the gateway", () => {
  let gw;
  let py;
  let origin;
  let pyErr = "";

  before(async () => {
    assert.ok(fs.existsSync(PYTHON), `${PYTHON} is missing: run \`bash scripts/setup-origin-python.sh\` (npm test does)`);
    py = spawn(PYTHON, [FASTAPI_APP], { stdio: ["pipe", "pipe", "pipe"] });
    py.stderr.on("data", (c) => (pyErr += c));
    const lines = readline.createInterface({ input: py.stdout });
    const port = await new Promise((resolve, reject) => {
      lines.once("line", (l) => (/^PORT \d+$/.test(l) ? resolve(Number(l.slice(5))) : reject(new Error(`unexpected: ${l}`))));
      py.once("exit", (code) => reject(new Error(`origin_fastapi.py exited ${code}: ${pyErr}`)));
    });
    origin = `http://127.0.0.1:${port}`;
    origins.fastapi = origin;
    gw = await gatewayFor(origin);
    py.stdin.write(`${JSON.stringify({ issuer: ISSUER, audience: origin, jwks_url: `${gw.url}/.well-known/jwks.json` })}\n`);
  });

  after(async () => {
    await gw?.stop();
    if (py && py.exitCode === null) {
      const exited = new Promise((r) => py.once("exit", r));
      py.kill("SIGTERM");
      await exited;
    }
  });

  test("a signed-in request reaches FastAPI with the caller's identity", async () => {
    const erin = await signup(gw, randomEmail("origin-erin"));
    const { user, assertion } = await through(gw, "/api/me", erin.access_token);
    assert.equal(user.id, erin.user.id);
    assert.equal(user.email, erin.user.email);
    assert.equal(user.email_verified, false);
    assert.deepEqual(user.roles, []);
    assert.equal(user.session_id, erin.user.session_id);
    assert.equal(user.claims.iss, ISSUER);
    assert.equal(user.claims.aud, origin);
    captured.fastapi = assertion;
  });

  test("roles: 403 problem from FastAPI without the role, 200 with it", async () => {
    const frank = await signup(gw, randomEmail("origin-frank"));
    const res = await authed(`${gw.url}/api/staff`, frank.access_token);
    await assertProblem(res, 403, "insufficient_role");
    assert.match(res.headers.get("www-authenticate"), /error="insufficient_scope"/);
    await assertProblem(await authed(`${gw.url}/api/manage`, frank.access_token), 403, "insufficient_role");
    const admin = await json(await login(gw, adminEmail));
    assert.deepEqual((await through(gw, "/api/staff", admin.access_token)).user.roles, ["admin"]);
    assert.deepEqual((await through(gw, "/api/manage", admin.access_token)).user.roles, ["admin"]);
  });

  test("direct requests with missing, bare-header, forged, unsigned or expired assertions are refused", async () => {
    const grace = await signup(gw, randomEmail("origin-grace"));
    const { assertion } = await through(gw, "/api/me", grace.access_token);
    await refusesDirectRequests(origin, assertion);
  });

  test("across a key rotation: new and old keys accepted", async () => {
    const heidi = await signup(gw, randomEmail("origin-heidi"));
    const before = await through(gw, "/api/me", heidi.access_token);
    const newKid = await rotate(gw, adminEmail);
    assert.notEqual(newKid, header(before.assertion).kid);
    const again = await json(await login(gw, heidi.user.email));
    const after = await through(gw, "/api/me", again.access_token);
    assert.equal(header(after.assertion).kid, newKid);
    assert.equal(after.user.id, heidi.user.id);
    assert.equal((await through(gw, "/api/me", heidi.access_token)).user.id, heidi.user.id);
  });

  test("assertions one origin received are refused by the other: wrong audience", async () => {
    assert.ok(captured.express && captured.fastapi, "both origins received an assertion");
    // Same issuer, keys both origins know, valid signatures: only `aud` differs.
    const atFastapi = await direct(origin, "/api/me", { "x-auth-assertion": captured.express });
    assert.match((await assertProblem(atFastapi, 401, "invalid_assertion")).detail, /another audience/);
    assert.equal(payloadOf(captured.express).aud, origins.express);
    const atExpress = await direct(origins.express, "/api/me", { "x-auth-assertion": captured.fastapi });
    assert.match((await assertProblem(atExpress, 401, "invalid_assertion")).detail, /another audience/);
  });
});
