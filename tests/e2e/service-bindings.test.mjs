// E2E: service bindings, all Workers in one `wrangler dev` (multi-config):
// - the origin as another Worker behind `ORIGIN` (SPEC: "ORIGIN_URL var, or a
//   service binding ORIGIN"), ORIGIN_URL removed; it echoes what it got;
// - the sign-in hook as another Worker behind `HOOK` (SPEC: "an optional hook
//   URL or service binding"); HOOK_URL names a host that does not exist, so
//   only the binding can answer.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createLocalJWKSet, jwtVerify } from "jose";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { boundWorkers } from "./lib/bound-workers.mjs";

let gw;
let bound;
let alice;

before(async () => {
  bound = boundWorkers(
    [
      { binding: "ORIGIN", service: "portcullis-e2e-origin", script: "tests/e2e/fixtures/origin-worker.js" },
      { binding: "HOOK", service: "portcullis-e2e-hook", script: "tests/e2e/fixtures/hook-worker.js" },
    ],
    ["ORIGIN_URL"],
  );
  gw = await startGateway({
    vars: { ORIGIN_URL: null, HOOK_URL: "https://hook.invalid/signin?v=1" },
    args: bound.args,
  });
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("binding"), password: "correct horse battery" });
  alice = await json(res);
  assert.equal(res.status, 201, JSON.stringify(alice));
});

after(async () => {
  await gw?.stop();
  bound?.cleanup();
});

test("an authenticated request reaches the origin Worker through the binding, with path, query, body and identity", async () => {
  const res = await fetch(`${gw.url}/api/items/7?sort=desc`, {
    method: "POST",
    headers: { authorization: `Bearer ${alice.access_token}`, "content-type": "text/plain", "x-auth-user-id": "spoofed" },
    body: "hello",
  });
  const echo = await json(res);
  assert.equal(res.status, 200, JSON.stringify(echo));
  assert.equal(res.headers.get("x-origin-worker"), "1");
  assert.equal(echo.via, "service-binding");
  assert.equal(echo.method, "POST");
  assert.equal(echo.path, "/api/items/7");
  assert.equal(echo.query, "sort=desc");
  assert.equal(echo.body, "hello");
  assert.equal(echo.headers.authorization, undefined, "the consumed token is not forwarded");
  assert.equal(echo.identity.user_id, alice.user.id);
  assert.equal(echo.identity.email, alice.user.email);
  assert.equal(echo.identity.session_id, alice.user.session_id);

  const jwks = createLocalJWKSet(await json(await fetch(`${gw.url}/.well-known/jwks.json`)));
  const { payload } = await jwtVerify(echo.identity.assertion, jwks, {
    issuer: gw.url,
    audience: "https://origin.internal",
    algorithms: ["EdDSA"],
    typ: "portcullis-assertion+jwt",
  });
  assert.equal(payload.sub, alice.user.id);
});

test("refusals happen before the binding is used, and public routes pass without a token", async () => {
  const refused = await fetch(`${gw.url}/api/items`);
  assert.equal(refused.status, 401);
  assert.equal(refused.headers.get("x-origin-worker"), null);
  assert.equal((await json(refused)).code, "missing_token");
  const pub = await fetch(`${gw.url}/api/public/info`);
  const echo = await json(pub);
  assert.equal(pub.status, 200, JSON.stringify(echo));
  assert.equal(echo.via, "service-binding");
  assert.equal(echo.identity.user_id, null);
});

test("the sign-in hook is asked through the HOOK binding: signed request, its claims in the token, its refusal a 403", async () => {
  const claims = JSON.parse(Buffer.from(alice.access_token.split(".")[1], "base64url"));
  assert.equal(claims.plan, "pro");
  assert.equal(claims.hook_path, "/signin");
  assert.equal(claims.hook_method, "POST");
  assert.equal(claims.hook_signed, true);
  assert.equal(claims.hook_type, "allow_signin");
  const denied = await post(`${gw.url}/auth/signup`, { email: randomEmail("deny-"), password: "correct horse battery" });
  const body = await json(denied);
  assert.equal(denied.status, 403, JSON.stringify(body));
  assert.equal(body.code, "signin_denied");
  assert.equal(body.detail, "on the waitlist");
});
