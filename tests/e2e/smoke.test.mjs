// Smoke test: the Worker starts under wrangler dev and serves OIDC discovery.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startGateway, json } from "./harness.mjs";

let gw;

before(async () => {
  gw = await startGateway();
});

after(async () => {
  await gw?.stop();
});

test("GET /.well-known/openid-configuration answers 200 JSON with issuer and jwks_uri", async () => {
  const res = await fetch(`${gw.url}/.well-known/openid-configuration`);
  const body = await json(res);
  assert.equal(res.status, 200, `status ${res.status}: ${JSON.stringify(body)}`);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  assert.equal(typeof body.issuer, "string");
  assert.ok(body.issuer.length > 0, "issuer is empty");
  assert.equal(typeof body.jwks_uri, "string");
  assert.ok(body.jwks_uri.endsWith("/.well-known/jwks.json"), `jwks_uri: ${body.jwks_uri}`);
});
