// E2E: the origin as another Worker behind the `ORIGIN` service binding
// (SPEC: "ORIGIN_URL var, or a service binding ORIGIN"), both Workers in one
// `wrangler dev` (multi-config). The gateway's wrangler.toml is copied with
// ORIGIN_URL removed and the binding added; the origin Worker echoes what it got.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createLocalJWKSet, jwtVerify } from "jose";
import { startGateway, post, json, randomEmail, ROOT } from "./harness.mjs";

const ORIGIN_WORKER = "portcullis-e2e-origin";
let gw;
let dir;
let alice;

function configs() {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "portcullis-binding-"));
  const abs = (p) => JSON.stringify(path.join(ROOT, p));
  const gateway = fs
    .readFileSync(path.join(ROOT, "wrangler.toml"), "utf8")
    .replace(/^main = .*$/m, `main = ${abs("build/worker/shim.mjs")}`)
    .replace(/^migrations_dir = .*$/m, `migrations_dir = ${abs("migrations")}`)
    .replace(/^ORIGIN_URL = .*$/m, "");
  assert.ok(!/^ORIGIN_URL/m.test(gateway));
  // wrangler reads secrets from the .dev.vars beside the config.
  fs.copyFileSync(path.join(ROOT, ".dev.vars"), path.join(dir, ".dev.vars"));
  const primary = path.join(dir, "gateway.toml");
  fs.writeFileSync(primary, `${gateway}\n[[services]]\nbinding = "ORIGIN"\nservice = "${ORIGIN_WORKER}"\n`);
  const origin = path.join(dir, "origin.toml");
  fs.writeFileSync(
    origin,
    `name = "${ORIGIN_WORKER}"\nmain = ${abs("tests/e2e/fixtures/origin-worker.js")}\ncompatibility_date = "2026-11-01"\n`,
  );
  return ["-c", primary, "-c", origin];
}

before(async () => {
  gw = await startGateway({ vars: { ORIGIN_URL: null }, args: configs() });
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("binding"), password: "correct horse battery" });
  alice = await json(res);
  assert.equal(res.status, 201, JSON.stringify(alice));
});

after(async () => {
  await gw?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
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
