// The Hono middleware on a real Hono app (app.request: Fetch Request in,
// Response out).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Hono } from "hono";
import { portcullis } from "../src/hono.js";
import { FakeGateway, options } from "./issuer.mjs";

const gw = new FakeGateway();
const auth = portcullis(options(gw));
const app = new Hono();
app.get("/me", auth.requireUser(), (c) => c.json({ user: c.get("user") }));
app.get("/admin", auth.requireRole("admin"), (c) => c.json({ user: c.get("user") }));
app.get("/manage", auth.requireAnyRole(["admin", "editor"]), (c) => c.json({ user: c.get("user") }));
const failing = new FakeGateway();
failing.failing = true;
app.get("/down", portcullis(options(failing)).requireUser(), (c) => c.json({ user: c.get("user") }));

async function problem(res, status, code) {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type"), /^application\/problem\+json/);
  const body = await res.json();
  assert.equal(body.code, code, JSON.stringify(body));
  return body;
}

test("a valid assertion passes and sets c.get('user')", async () => {
  const res = await app.request("/me", { headers: { "x-auth-assertion": gw.assertion({ plan: "pro" }) } });
  assert.equal(res.status, 200);
  const { user } = await res.json();
  assert.equal(user.id, "user-1");
  assert.equal(user.sessionId, "session-1");
  assert.equal(user.claims.plan, "pro");
});

test("no assertion: 401 missing_assertion with a Bearer challenge", async () => {
  const res = await app.request("/me");
  await problem(res, 401, "missing_assertion");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="portcullis"');
});

test("bare X-Auth-* headers without an assertion are refused", async () => {
  const res = await app.request("/admin", { headers: { "x-auth-user-id": "user-1", "x-auth-roles": "admin" } });
  await problem(res, 401, "missing_assertion");
});

test("an expired assertion: 401 assertion_expired", async () => {
  const res = await app.request("/me", { headers: { "x-auth-assertion": gw.assertion({ iat: 1, exp: 61 }) } });
  await problem(res, 401, "assertion_expired");
  assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="portcullis"', "no invalid_token: a refresh cannot cure it");
});

test("two assertion headers are refused", async () => {
  const headers = new Headers();
  headers.append("x-auth-assertion", gw.assertion());
  headers.append("x-auth-assertion", gw.assertion());
  await problem(await app.request("/me", { headers }), 401, "invalid_assertion");
});

test("requireRole and requireAnyRole: 403 without a role, 200 with one", async () => {
  await problem(await app.request("/admin", { headers: { "x-auth-assertion": gw.assertion() } }), 403, "insufficient_role");
  assert.equal((await app.request("/admin", { headers: { "x-auth-assertion": gw.assertion({ roles: ["admin"] }) } })).status, 200);
  assert.equal((await app.request("/manage", { headers: { "x-auth-assertion": gw.assertion() } })).status, 200);
  await problem(await app.request("/manage", { headers: { "x-auth-assertion": gw.assertion({ roles: ["viewer"] }) } }), 403, "insufficient_role");
});

test("JWKS unreachable: 503 jwks_unavailable", async () => {
  await problem(await app.request("/down", { headers: { "x-auth-assertion": gw.assertion() } }), 503, "jwks_unavailable");
});
