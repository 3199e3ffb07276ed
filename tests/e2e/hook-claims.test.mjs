// The sign-in hook's claims reach the origin: in the signed assertion (the
// demo origin verifies it with @portcullis/origin-node against the JWKS) and,
// with CLAIMS_HEADER=true, as X-Auth-Claims; with HOOK_ON_REFRESH=true a
// refresh asks the hook again, so a plan change shows up without a new
// sign-in, and a refusal then ends the session. Also, in token mode (no
// cookies), a sign-in through a hosted page returns to the app with a
// one-time code the app exchanges; and UI_ENABLED=false removes the pages.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Webhook } from "standardwebhooks";
import { startGateway, post, json, randomEmail } from "./harness.mjs";

const PASSWORD = "correct horse battery";
const HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const APP = "http://app.test/done";

/** The sign-in hook: allows with `{plan}` (the current `hook.plan`) unless `hook.deny`. */
async function startHook() {
  const hook = { plan: "free", deny: false, requests: [] };
  const verifier = new Webhook(HOOK_SECRET);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      try {
        verifier.verify(body, req.headers);
      } catch {
        res.writeHead(500);
        res.end("unsigned");
        return;
      }
      hook.requests.push(JSON.parse(body));
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(hook.deny ? { allow: false, reason: "subscription ended" } : { allow: true, claims: { plan: hook.plan, org: { id: 7, name: "Zürich AG" } } }));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  hook.url = `http://127.0.0.1:${server.address().port}/signin`;
  hook.close = () => new Promise((resolve) => server.close(resolve));
  return hook;
}

describe("hook claims at the origin, HOOK_ON_REFRESH, hosted pages in token mode", () => {
  let gw;
  let hook;

  before(async () => {
    hook = await startHook();
    gw = await startGateway({
      origin: true,
      vars: {
        HOOK_URL: hook.url,
        HOOK_SECRET,
        HOOK_ON_REFRESH: "true",
        CLAIMS_HEADER: "true",
        REDIRECT_ALLOWLIST: APP,
      },
    });
    gw.origin.trust({ issuer: gw.url, audience: gw.origin.url });
  });

  after(async () => {
    await gw?.stop();
    await hook?.close();
  });

  const hello = (token, headers = {}) => fetch(`${gw.url}/api/hello`, { headers: { authorization: `Bearer ${token}`, ...headers } }).then(json);

  test("the hook's claims are in the assertion the origin verifies, and in X-Auth-Claims", async () => {
    hook.plan = "free";
    const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("claims"), password: PASSWORD });
    const auth = await json(res);
    assert.equal(res.status, 201, JSON.stringify(auth));
    // A client's own X-Auth-Claims never reaches the origin.
    const echo = await hello(auth.access_token, { "x-auth-claims": '{"plan":"enterprise"}' });
    assert.ok(echo.verified?.user, `the origin helper verified the assertion: ${JSON.stringify(echo.verified)}`);
    const claims = echo.verified.user.claims;
    assert.equal(echo.verified.user.id, auth.user.id);
    assert.equal(claims.plan, "free");
    assert.deepEqual(claims.org, { id: 7, name: "Zürich AG" });
    assert.deepEqual(JSON.parse(echo.identity.claims), { plan: "free", org: { id: 7, name: "Zürich AG" } });
    assert.match(echo.identity.claims, /^[\x20-\x7e]+$/, "printable ASCII, non-ASCII escaped");
  });

  test("HOOK_ON_REFRESH: a plan change reaches the origin at the next refresh, without a new sign-in", async () => {
    hook.plan = "free";
    const auth = await json(await post(`${gw.url}/auth/signup`, { email: randomEmail("upgrade"), password: PASSWORD }));
    assert.equal((await hello(auth.access_token)).verified.user.claims.plan, "free");
    hook.plan = "pro";
    const asked = hook.requests.length;
    const res = await post(`${gw.url}/auth/refresh`, { refresh_token: auth.refresh_token });
    const refreshed = await json(res);
    assert.equal(res.status, 200, JSON.stringify(refreshed));
    const again = hook.requests.slice(asked);
    assert.equal(again.length, 1);
    assert.deepEqual(
      { trigger: again[0].trigger, session_id: again[0].session_id, provider: again[0].provider, user: again[0].user.id },
      { trigger: "refresh", session_id: auth.user.session_id, provider: "refresh", user: auth.user.id },
    );
    const echo = await hello(refreshed.access_token);
    assert.equal(echo.verified.user.claims.plan, "pro");
    assert.equal(JSON.parse(echo.identity.claims).plan, "pro");
    // The old access token still carries what it was issued with, until it expires.
    assert.equal((await hello(auth.access_token)).verified.user.claims.plan, "free");
  });

  test("HOOK_ON_REFRESH: a refusal at refresh is 403 signin_denied and ends the session", async () => {
    hook.plan = "free";
    hook.deny = false;
    const auth = await json(await post(`${gw.url}/auth/signup`, { email: randomEmail("ended"), password: PASSWORD }));
    hook.deny = true;
    try {
      const res = await post(`${gw.url}/auth/refresh`, { refresh_token: auth.refresh_token });
      const body = await json(res);
      assert.equal(res.status, 403, JSON.stringify(body));
      assert.equal(body.code, "signin_denied");
      assert.equal(body.detail, "subscription ended");
      await gw.waitForEvent((e) => e.type === "session_revoked" && e.data.session_id === auth.user.session_id);
    } finally {
      hook.deny = false;
    }
    const me = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${auth.access_token}` } });
    assert.equal(me.status, 401, "the session is over at the API");
    assert.equal((await post(`${gw.url}/auth/refresh`, { refresh_token: auth.refresh_token })).status, 401);
  });

  test("token mode: a hosted sign-in returns to the app with a one-time code, exchanged for the tokens", async () => {
    const email = randomEmail("token-mode");
    await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
    const page = await fetch(`${gw.url}/auth/ui/login?redirect_to=${encodeURIComponent(APP)}`);
    assert.equal(page.status, 200);
    const csrf = page.headers.getSetCookie()[0].split(";")[0].split("=")[1];
    assert.ok((await page.text()).includes(`name="csrf" value="${csrf}"`));
    const res = await fetch(`${gw.url}/auth/ui/login`, {
      method: "POST",
      redirect: "manual",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        cookie: `__Host-portcullis_ui=${csrf}`,
        origin: gw.url,
        "sec-fetch-site": "same-origin",
      },
      body: new URLSearchParams({ csrf, email, password: PASSWORD, intent: "password", redirect_to: APP }),
    });
    assert.equal(res.status, 303, await res.text());
    assert.equal(res.headers.getSetCookie().filter((c) => c.startsWith("__Host-portcullis_access")).length, 0, "no cookies in token mode");
    const location = new URL(res.headers.get("location"));
    assert.equal(`${location.origin}${location.pathname}`, APP);
    const code = location.searchParams.get("code");
    assert.match(code, /^[A-Za-z0-9_-]{43}$/);
    const exchanged = await post(`${gw.url}/auth/oauth/exchange`, { code });
    const auth = await json(exchanged);
    assert.equal(exchanged.status, 200, JSON.stringify(auth));
    assert.equal(auth.user.email, email);
    assert.equal((await hello(auth.access_token)).verified.user.claims.plan, hook.plan);
    assert.equal((await post(`${gw.url}/auth/oauth/exchange`, { code })).status, 400, "once");
    // A return target off the allowlist is refused before anything happens.
    const bad = await fetch(`${gw.url}/auth/ui/login?redirect_to=${encodeURIComponent("https://evil.example/")}`);
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /not on REDIRECT_ALLOWLIST/);
  });
});

describe("UI_ENABLED=false", () => {
  let gw;
  before(async () => {
    gw = await startGateway({ vars: { UI_ENABLED: "false" } });
  });
  after(async () => gw?.stop());

  test("every path under /auth/ui is 404, whatever the method", async () => {
    for (const [method, path] of [["GET", "login"], ["POST", "login"], ["GET", "account"], ["DELETE", "nope"], ["GET", ""]]) {
      const res = await fetch(`${gw.url}/auth/ui/${path}`, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal((await json(res)).code, "not_found");
    }
    assert.equal((await post(`${gw.url}/auth/login`, { email: "a@example.com", password: "x" })).status, 401, "the API is there");
  });
});
