// The Express middleware on a real Express app over HTTP.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import express from "express";
import { portcullis } from "../src/express.js";
import { createVerifier } from "../src/index.js";
import { FakeGateway, options } from "./issuer.mjs";

const gw = new FakeGateway();
let server;
let base;
let verifications = 0;

before(async () => {
  const inner = createVerifier(options(gw));
  // Counts verifications, to prove one per request however many guards run.
  const counting = { ...inner, verifyAssertion: (v) => (verifications++, inner.verifyAssertion(v)) };
  const auth = portcullis(counting);
  const app = express();
  const show = (req, res) => res.json({ user: req.user });
  app.get("/me", auth.requireUser(), show);
  app.get("/admin", auth.requireRole("admin"), show);
  app.get("/manage", auth.requireAnyRole(["admin", "editor"]), show);
  app.get("/stacked", auth.requireUser(), auth.requireRole("editor"), show);
  const failing = new FakeGateway();
  failing.failing = true;
  app.get("/down", portcullis(options(failing)).requireUser(), show);
  server = app.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  base = `http://127.0.0.1:${server.address().port}`;
});

after(() => server?.close());

const get = (path, headers = {}) => fetch(base + path, { headers });

async function problem(res, status, code) {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type"), /^application\/problem\+json/);
  const body = await res.json();
  assert.equal(body.code, code, JSON.stringify(body));
  assert.equal(body.status, status);
  return body;
}

test("a valid assertion passes and sets req.user", async () => {
  const res = await get("/me", { "x-auth-assertion": gw.assertion({ plan: "pro" }) });
  assert.equal(res.status, 200);
  const { user } = await res.json();
  assert.equal(user.id, "user-1");
  assert.equal(user.email, "ada@example.com");
  assert.equal(user.sessionId, "session-1");
  assert.deepEqual(user.roles, ["editor"]);
  assert.equal(user.claims.plan, "pro");
});

test("no assertion: 401 missing_assertion with a Bearer challenge", async () => {
  const res = await get("/me");
  await problem(res, 401, "missing_assertion");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
});

test("bare X-Auth-* headers without an assertion are refused", async () => {
  const res = await get("/admin", {
    "x-auth-user-id": "user-1",
    "x-auth-email": "ada@example.com",
    "x-auth-roles": "admin",
    "x-auth-session-id": "session-1",
  });
  await problem(res, 401, "missing_assertion");
});

test("bare X-Auth-* headers never change the identity of a valid assertion", async () => {
  const res = await get("/me", {
    "x-auth-assertion": gw.assertion(),
    "x-auth-user-id": "someone-else",
    "x-auth-roles": "admin",
  });
  assert.equal(res.status, 200);
  const { user } = await res.json();
  assert.equal(user.id, "user-1");
  assert.deepEqual(user.roles, ["editor"]);
});

test("an invalid assertion: 401 invalid_assertion with a bare challenge, no invalid_token", async () => {
  const [h, p] = gw.assertion().split(".");
  const res = await get("/me", { "x-auth-assertion": `${h}.${p}.${"A".repeat(86)}` });
  const body = await problem(res, 401, "invalid_assertion");
  assert.match(body.detail, /bad signature/);
  // A client's token refresh cannot cure the gateway's assertion: no error="invalid_token".
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
});

test("two assertion headers are refused", async () => {
  const a = gw.assertion();
  const headers = new Headers();
  headers.append("x-auth-assertion", a);
  headers.append("x-auth-assertion", a);
  await problem(await fetch(`${base}/me`, { headers }), 401, "invalid_assertion");
});

test("requireRole: 403 insufficient_role without the role, 200 with it", async () => {
  const res = await get("/admin", { "x-auth-assertion": gw.assertion() });
  const body = await problem(res, 403, "insufficient_role");
  assert.match(body.detail, /admin/);
  assert.match(res.headers.get("www-authenticate"), /error="insufficient_scope"/);
  const ok = await get("/admin", { "x-auth-assertion": gw.assertion({ roles: ["admin"] }) });
  assert.equal(ok.status, 200);
  assert.deepEqual((await ok.json()).user.roles, ["admin"]);
});

test("requireAnyRole: one of the roles is enough", async () => {
  assert.equal((await get("/manage", { "x-auth-assertion": gw.assertion({ roles: ["editor"] }) })).status, 200);
  assert.equal((await get("/manage", { "x-auth-assertion": gw.assertion({ roles: ["admin", "x"] }) })).status, 200);
  await problem(await get("/manage", { "x-auth-assertion": gw.assertion({ roles: ["viewer"] }) }), 403, "insufficient_role");
  await problem(await get("/manage", { "x-auth-assertion": gw.assertion({ roles: [] }) }), 403, "insufficient_role");
});

test("stacked guards verify once per request", async () => {
  const before = verifications;
  assert.equal((await get("/stacked", { "x-auth-assertion": gw.assertion() })).status, 200);
  assert.equal(verifications - before, 1);
});

test("JWKS unreachable: 503 jwks_unavailable, nothing let through", async () => {
  await problem(await get("/down", { "x-auth-assertion": gw.assertion() }), 503, "jwks_unavailable");
});

test("role arguments are checked when the middleware is made", () => {
  const auth = portcullis(options(gw));
  assert.throws(() => auth.requireRole(""), TypeError);
  assert.throws(() => auth.requireAnyRole([]), TypeError);
  assert.throws(() => auth.requireAnyRole("admin"), TypeError);
});
