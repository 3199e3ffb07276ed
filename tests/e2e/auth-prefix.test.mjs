// E2E: the auth API under another prefix (`AUTH_PREFIX`, SPEC: "prefix /auth,
// configurable"). The API answers there, discovery names it, and `/auth/...`
// is then just another gateway path of the origin's.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { startGateway, post, json, randomEmail } from "./harness.mjs";

const PREFIX = "/identity/v1";
let gw;
let alice;

before(async () => {
  gw = await startGateway({ origin: true, vars: { AUTH_PREFIX: PREFIX, REDIRECT_ALLOWLIST: "http://app.test/" } });
  const res = await post(`${gw.url}${PREFIX}/signup`, { email: randomEmail("prefix"), password: "correct horse battery" });
  alice = await json(res);
  assert.equal(res.status, 201, JSON.stringify(alice));
});

after(async () => {
  await gw?.stop();
});

const bearer = (t) => ({ authorization: `Bearer ${t}` });

test("the auth API answers under AUTH_PREFIX: login, me, sessions, refresh", async () => {
  const login = await post(`${gw.url}${PREFIX}/login`, { email: alice.user.email, password: "correct horse battery" });
  const auth = await json(login);
  assert.equal(login.status, 200, JSON.stringify(auth));
  const me = await fetch(`${gw.url}${PREFIX}/me`, { headers: bearer(auth.access_token) });
  assert.equal(me.status, 200);
  assert.equal((await json(me)).id, alice.user.id);
  const sessions = await fetch(`${gw.url}${PREFIX}/sessions`, { headers: bearer(auth.access_token) });
  assert.equal((await json(sessions)).sessions.length, 2);
  const refreshed = await post(`${gw.url}${PREFIX}/refresh`, { refresh_token: auth.refresh_token });
  assert.equal(refreshed.status, 200);
  const wrong = await fetch(`${gw.url}${PREFIX}/login`);
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get("allow"), "POST");
});

test("discovery and the JWKS stay at /.well-known", async () => {
  const d = await json(await fetch(`${gw.url}/.well-known/openid-configuration`));
  assert.equal(d.issuer, gw.url);
  assert.equal(d.jwks_uri, `${gw.url}/.well-known/jwks.json`);
  const jwks = await json(await fetch(d.jwks_uri));
  assert.ok(jwks.keys.length >= 1);
});

test("/auth/... is then the origin's: refused without a token, forwarded with one", async () => {
  const refused = await post(`${gw.url}/auth/signup`, { email: randomEmail("x"), password: "correct horse battery" });
  assert.equal(refused.status, 401);
  assert.equal((await json(refused)).code, "missing_token");
  const res = await fetch(`${gw.url}/auth/login`, { headers: bearer(alice.access_token) });
  const echo = await json(res);
  assert.equal(res.status, 200, JSON.stringify(echo));
  assert.equal(echo.path, "/auth/login");
  assert.equal(echo.identity.user_id, alice.user.id);
});

test("the hosted pages follow AUTH_PREFIX: served under it, their forms and links point under it", async () => {
  // Token mode: the app starts a sign-in with its PKCE challenge.
  const challenge = crypto.createHash("sha256").update(crypto.randomBytes(32).toString("base64url")).digest("base64url");
  const res = await fetch(`${gw.url}${PREFIX}/ui/login?code_challenge=${challenge}`);
  const html = await res.text();
  assert.equal(res.status, 200, html);
  assert.ok(html.includes(`action="${PREFIX}/ui/login"`), html);
  assert.ok(html.includes(`formaction="${PREFIX}/ui/otp"`) && html.includes(`href="${PREFIX}/ui/signup?code_challenge=${challenge}"`), html);
  // Under /auth they are the origin's, like the rest of /auth.
  assert.equal((await fetch(`${gw.url}/auth/ui/login`)).status, 401);
});
