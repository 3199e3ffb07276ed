// Error typing: every answer that is not a success becomes a PortcullisError
// with the problem's members and the Retry-After / WWW-Authenticate headers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PortcullisClient, PortcullisError, isPortcullisError, parseRetryAfter, UNEXPECTED_RESPONSE } from "../dist/index.js";
import { fakeGateway, json, problem } from "./fake-gateway.mjs";

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);

function client(gw) {
  return new PortcullisClient({ baseUrl: gw.base, fetch: gw.fetch, locks: null, channel: null, now: () => NOW });
}

test("a problem+json answer is a PortcullisError with status, code, title, detail and type", async () => {
  const gw = fakeGateway();
  gw.on("POST /auth/login", () =>
    problem(401, "invalid_credentials", {
      title: "Invalid credentials",
      detail: "invalid email or password",
      headers: { "www-authenticate": 'Bearer realm="portcullis"' },
    }),
  );
  const err = await client(gw).signIn({ email: "a@example.com", password: "wrong password" }).catch((e) => e);
  assert.ok(err instanceof PortcullisError);
  assert.ok(err instanceof Error);
  assert.equal(err.name, "PortcullisError");
  assert.equal(err.status, 401);
  assert.equal(err.code, "invalid_credentials");
  assert.equal(err.title, "Invalid credentials");
  assert.equal(err.detail, "invalid email or password");
  assert.equal(err.type, "about:blank");
  assert.equal(err.retryAfter, null);
  assert.equal(err.wwwAuthenticate, 'Bearer realm="portcullis"');
  assert.equal(err.problem.code, "invalid_credentials");
  assert.match(err.message, /401 invalid_credentials/);
  assert.ok(isPortcullisError(err));
  assert.ok(isPortcullisError(err, "invalid_credentials"));
  assert.ok(!isPortcullisError(err, "rate_limited"));
  assert.ok(!isPortcullisError(new Error("x")));
});

test("a 429 carries Retry-After in seconds, given as seconds or as an HTTP-date", async () => {
  const gw = fakeGateway();
  gw.on("POST /auth/magic-link", () => problem(429, "rate_limited", { headers: { "retry-after": "42" } }));
  const err = await client(gw).requestMagicLink("a@example.com").catch((e) => e);
  assert.equal(err.status, 429);
  assert.equal(err.code, "rate_limited");
  assert.equal(err.retryAfter, 42);

  const at = new Date(NOW + 90_500).toUTCString(); // whole seconds: 90 s after NOW
  gw.on("POST /auth/otp", () => problem(503, "hook_unavailable", { headers: { "retry-after": at } }));
  const err2 = await client(gw).requestEmailCode("a@example.com").catch((e) => e);
  assert.equal(err2.code, "hook_unavailable");
  assert.equal(err2.retryAfter, 90);

  assert.equal(parseRetryAfter("0", NOW), 0);
  assert.equal(parseRetryAfter(new Date(NOW - 5000).toUTCString(), NOW), 0, "a date in the past: now");
  assert.equal(parseRetryAfter("soon", NOW), null);
  assert.equal(parseRetryAfter("-3", NOW), null);
  assert.equal(parseRetryAfter(null, NOW), null);
});

test("validation problems keep their own code (422), conflicts theirs (409)", async () => {
  const gw = fakeGateway();
  gw.on("POST /auth/signup", () => problem(422, "password_too_common", { title: "Validation failed", detail: "password: too common" }));
  const err = await client(gw).signUp({ email: "a@example.com", password: "password1" }).catch((e) => e);
  assert.equal(err.status, 422);
  assert.equal(err.code, "password_too_common");
  assert.equal(err.detail, "password: too common");
  gw.on("POST /auth/signup", () => problem(409, "email_taken"));
  const err2 = await client(gw).signUp({ email: "a@example.com", password: "password1 x" }).catch((e) => e);
  assert.equal(err2.status, 409);
  assert.equal(err2.code, "email_taken");
});

test("an answer that is not a problem (a proxy's HTML 502) is a PortcullisError with code unexpected_response", async () => {
  const gw = fakeGateway();
  gw.on("POST /auth/login", () => new Response("<html>Bad Gateway</html>", { status: 502, statusText: "Bad Gateway", headers: { "content-type": "text/html" } }));
  const err = await client(gw).signIn({ email: "a@example.com", password: "x" }).catch((e) => e);
  assert.ok(err instanceof PortcullisError);
  assert.equal(err.status, 502);
  assert.equal(err.code, UNEXPECTED_RESPONSE);
  assert.equal(err.title, "Bad Gateway");
  assert.equal(err.detail, "<html>Bad Gateway</html>");
  assert.equal(err.problem, null);
});

test("a success whose body is not JSON is an unexpected_response too", async () => {
  const gw = fakeGateway();
  gw.on("GET /auth/me", () => new Response("hello", { status: 200 }));
  gw.on("POST /auth/login", () => json(200, { access_token: "a", refresh_token: "r", token_type: "Bearer", expires_in: 900, user: { id: "u", session_id: "s" } }));
  const c = client(gw);
  await c.signIn({ email: "a@example.com", password: "x" });
  const err = await c.me().catch((e) => e);
  assert.equal(err.code, UNEXPECTED_RESPONSE);
  assert.equal(err.status, 200);
});

test("a network failure is fetch's own TypeError, not dressed up", async () => {
  const c = new PortcullisClient({
    baseUrl: "https://gw.example",
    fetch: () => Promise.reject(new TypeError("fetch failed")),
    locks: null,
    channel: null,
  });
  await assert.rejects(c.requestMagicLink("a@example.com"), (e) => e instanceof TypeError && e.message === "fetch failed");
});
