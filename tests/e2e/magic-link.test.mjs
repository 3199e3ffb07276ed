// Magic links end to end: enumeration-safe requests, single use (also under
// 20 concurrent verifications), supersession, GET/HEAD never consuming, expiry
// below KV's 60 s minimum TTL, passwordless sign-up, email_verified.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { startGateway, post, json, randomEmail, sleep } from "./harness.mjs";
import { signup, withEvent, eventFor, assertNoEvent, assertProblem, authed } from "./lib/accounts.mjs";
import { startVars } from "../../scripts/start.mjs";

const requestLink = (gw, email) => post(`${gw.url}/auth/magic-link`, { email });
const verify = (gw, token) => post(`${gw.url}/auth/magic-link/verify`, { token });

/** Requests a link for `email` and returns the token from `magic_link_requested`. */
async function linkFor(gw, email) {
  const { result, event } = await withEvent(gw, eventFor("magic_link_requested", email), () => requestLink(gw, email));
  assert.equal(result.status, 200);
  return event.data.token;
}

describe("magic links (default config)", () => {
  let gw;
  before(async () => {
    gw = await startGateway();
  });
  after(async () => {
    await gw?.stop();
  });

  test("the request answers identically for existing and unknown emails, and only the existing one gets a link", async () => {
    const known = randomEmail("ml-known");
    const unknown = randomEmail("ml-unknown");
    const user = await signup(gw, known);
    const a = await requestLink(gw, known);
    const b = await requestLink(gw, unknown);
    assert.equal(a.status, 200);
    assert.equal(b.status, a.status);
    assert.equal(await a.text(), await b.text());
    const ev = await gw.waitForEvent(eventFor("magic_link_requested", known));
    assert.equal(ev.data.user_id, user.user.id);
    assert.match(ev.data.token, /^[A-Za-z0-9_-]{43}$/);
    const marker = randomEmail("ml-marker");
    await signup(gw, marker);
    await assertNoEvent(gw, eventFor("magic_link_requested", unknown), () => linkFor(gw, marker));
  });

  test("verifying logs in, sets email_verified and emits magic_link_login and login", async () => {
    const email = randomEmail("ml-verify");
    const { user } = await signup(gw, email);
    assert.equal(user.email_verified, false);
    const token = await linkFor(gw, email);
    const res = await verify(gw, token);
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.token_type, "Bearer");
    assert.equal(body.user.email, email);
    assert.equal(body.user.email_verified, true);
    const me = await json(await authed(`${gw.url}/auth/me`, body.access_token));
    assert.equal(me.email_verified, true);
    const ev = await gw.waitForEvent(eventFor("magic_link_login", email));
    assert.equal(ev.data.user_id, user.id);
    const login = await gw.waitForEvent((e) => e.type === "login" && e.data.email === email);
    assert.equal(login.data.provider, "magic_link");
  });

  test("a link is single use", async () => {
    const email = randomEmail("ml-reuse");
    await signup(gw, email);
    const token = await linkFor(gw, email);
    assert.equal((await verify(gw, token)).status, 200);
    await assertProblem(await verify(gw, token), 401, "invalid_link");
  });

  test("a newer link invalidates the previous one", async () => {
    const email = randomEmail("ml-newer");
    await signup(gw, email);
    const first = await linkFor(gw, email);
    const second = await linkFor(gw, email);
    assert.notEqual(first, second);
    await assertProblem(await verify(gw, first), 401, "invalid_link");
    assert.equal((await verify(gw, second)).status, 200);
  });

  test("GET and HEAD of the emailed link do not consume the token; only POST does", async () => {
    const email = randomEmail("ml-prefetch");
    await signup(gw, email);
    const token = await linkFor(gw, email);
    const link = `${gw.url}/auth/magic-link/verify?token=${encodeURIComponent(token)}`;
    for (let i = 0; i < 3; i++) {
      const get = await fetch(link);
      assert.equal(get.status, 200);
      const page = await json(get);
      assert.match(page.message, /POST/);
      assert.ok(!JSON.stringify(page).includes(token), "the page does not echo the token");
      const head = await fetch(link, { method: "HEAD" });
      assert.equal(head.status, 200);
    }
    assert.equal((await verify(gw, token)).status, 200);
  });

  test("the link npm start emails in token mode (its default) opens, uses nothing, and signs in when POSTed back", async () => {
    // `npm start`'s vars for this gateway, as its README walkthrough runs it.
    const vars = new Map();
    const args = startVars(8790, gw.url, []);
    for (let i = 0; i < args.length; i += 2) {
      const [name, ...value] = args[i + 1].split(":");
      vars.set(name, value.join(":"));
    }
    const email = randomEmail("ml-npm-start");
    await signup(gw, email);
    const token = await linkFor(gw, email);
    const link = `${vars.get("MAGIC_LINK_URL")}?token=${encodeURIComponent(token)}`;
    const opened = await fetch(link);
    assert.equal(opened.status, 200, `${link.replace(token, "…")}: ${await opened.text()}`);
    const body = await json(await verify(gw, token));
    assert.equal(body.user?.email, email);
    // In cookie mode the hosted page takes the link and signs in itself.
    const cookie = startVars(8790, gw.url, ["--var", "COOKIE_MODE:true"]);
    assert.ok(cookie.includes(`MAGIC_LINK_URL:${gw.url}/auth/ui/magic-link`), cookie.join(" "));
  });

  test("20 concurrent verifications of one link: exactly one signs in", async () => {
    const email = randomEmail("ml-race");
    await signup(gw, email);
    const token = await linkFor(gw, email);
    const results = await Promise.all(Array.from({ length: 20 }, () => verify(gw, token)));
    const statuses = results.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, `statuses: ${statuses}`);
    assert.equal(statuses.filter((s) => s === 401).length, 19, `statuses: ${statuses}`);
    for (const r of results) {
      const body = await json(r);
      if (r.status === 401) assert.equal(body.code, "invalid_link");
    }
  });

  test("unknown emails cannot sign up by magic link when passwordless sign-up is off", async () => {
    const email = randomEmail("ml-nosignup");
    await requestLink(gw, email);
    const res = await post(`${gw.url}/auth/login`, { email, password: "whatever-123" });
    assert.equal(res.status, 401);
  });

  test("malformed input is a 4xx problem, never a 500", async () => {
    await assertProblem(await post(`${gw.url}/auth/magic-link`, {}), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/magic-link`, { email: "not-an-email" }), 422, "invalid_email");
    await assertProblem(await post(`${gw.url}/auth/magic-link`, { email: "a@example.com", admin: true }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/magic-link`, "{"), 400, "invalid_json");
    await assertProblem(await post(`${gw.url}/auth/magic-link/verify`, { token: 42 }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/magic-link/verify`, { token: "" }), 401, "invalid_link");
    await assertProblem(await post(`${gw.url}/auth/magic-link/verify`, { token: "x".repeat(5000) }), 401, "invalid_link");
    await assertProblem(await post(`${gw.url}/auth/magic-link/verify`, { token: "A".repeat(43) }), 401, "invalid_link");
    await assertProblem(await fetch(`${gw.url}/auth/magic-link`, { method: "PUT" }), 405, "method_not_allowed");
    const form = await fetch(`${gw.url}/auth/magic-link/verify`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: "token=abc",
    });
    await assertProblem(form, 415, "unsupported_media_type");
  });
});

describe("magic links (MAGIC_LINK_TTL=8, ALLOW_PASSWORDLESS_SIGNUP=true)", () => {
  let gw;
  before(async () => {
    gw = await startGateway({ vars: { MAGIC_LINK_TTL: "8", ALLOW_PASSWORDLESS_SIGNUP: "true" } });
  });
  after(async () => {
    await gw?.stop();
  });

  test("a link expires after MAGIC_LINK_TTL even though KV keeps it for at least 60 s", async () => {
    const email = randomEmail("ml-expiry");
    await signup(gw, email);
    const token = await linkFor(gw, email);
    await sleep(9_000);
    await assertProblem(await verify(gw, token), 401, "invalid_link");
    const fresh = await linkFor(gw, email);
    assert.equal((await verify(gw, fresh)).status, 200);
  });

  test("an unknown email gets a link that creates a verified, password-less account", async () => {
    const email = randomEmail("ml-signup");
    const token = await linkFor(gw, email);
    const requested = await gw.waitForEvent(eventFor("magic_link_requested", email));
    assert.equal(requested.data.user_id, null);
    const res = await verify(gw, token);
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.user.email, email);
    assert.equal(body.user.email_verified, true);
    const created = await gw.waitForEvent(eventFor("user_created", email));
    assert.equal(created.data.provider, "magic_link");
    assert.equal(created.data.user_id, body.user.id);
    await gw.waitForEvent(eventFor("magic_link_login", email));
    // No password was set: password login fails like any wrong password.
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: "anything-at-all" })).status, 401);
  });

  test("racing verifications of a sign-up link create one account", async () => {
    const email = randomEmail("ml-signup-race");
    const token = await linkFor(gw, email);
    const results = await Promise.all(Array.from({ length: 5 }, () => verify(gw, token)));
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    await gw.waitForEvent(eventFor("user_created", email));
    await sleep(1_500);
    assert.equal(gw.events().filter(eventFor("user_created", email)).length, 1);
  });
});
