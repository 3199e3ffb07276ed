// WebSockets through the gateway: the handshake is a gateway request like any
// other (route policy, token from the Authorization header or, in cookie
// mode, the access cookie), forwarded with the identity headers; the origin's
// 101 carries the socket back. A cookie-authenticated handshake from a foreign
// origin is refused (cross-site WebSocket hijacking). Client and origin use
// `ws`; the demo origin's first message is the echo of the handshake it got.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startGateway, post, json, randomEmail } from "./harness.mjs";

const APP = "https://app.example";
let gw;
let alice;

before(async () => {
  gw = await startGateway({ origin: true, vars: { COOKIE_MODE: "true", CORS_ORIGINS: APP } });
  const res = await post(`${gw.url}/auth/signup`, { email: randomEmail("ws"), password: "correct horse battery" });
  alice = await json(res);
  assert.equal(res.status, 201);
  // Cookie mode: the access token comes as a cookie, not in the body.
  const access = res.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_access="));
  alice.access_token = access.split(";")[0].slice("__Host-portcullis_access=".length);
});

after(async () => {
  await gw?.stop();
});

/**
 * Opens a WebSocket to `path` with `headers`: { open: true, socket, first } with the
 * origin's first message, or { open: false, status, body } when the handshake is refused.
 */
function connect(path, headers = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${gw.url.replace("http", "ws")}${path}`, { headers });
    ws.once("message", (data) => resolve({ open: true, socket: ws, first: JSON.parse(data.toString()) }));
    ws.once("unexpected-response", (_req, res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        let body = null;
        try { body = JSON.parse(text); } catch {}
        resolve({ open: false, status: res.statusCode, headers: res.headers, body });
      });
    });
    ws.once("error", reject);
  });
}

const next = (ws) => new Promise((resolve) => ws.once("message", (d) => resolve(d.toString())));

test("an authenticated handshake reaches the origin with the identity headers, and the socket carries messages both ways", async () => {
  const c = await connect("/api/ws?room=1", { authorization: `Bearer ${alice.access_token}`, "x-auth-user-id": "spoofed" });
  assert.ok(c.open, JSON.stringify(c));
  assert.equal(c.first.path, "/api/ws");
  assert.equal(c.first.query, "room=1");
  assert.equal(c.first.identity.user_id, alice.user.id);
  assert.equal(c.first.identity.email, alice.user.email);
  assert.ok(c.first.identity.assertion);
  assert.equal(c.first.headers.authorization, undefined, "the consumed token is not forwarded");
  c.socket.send("hello through the gateway");
  assert.equal(await next(c.socket), "hello through the gateway");
  c.socket.close();
});

test("a handshake without a token is refused with 401 and the Bearer challenge; a bad token too", async () => {
  const none = await connect("/api/ws");
  assert.equal(none.open, false);
  assert.equal(none.status, 401);
  assert.equal(none.body.code, "missing_token");
  assert.match(none.headers["www-authenticate"], /^Bearer/);
  const bad = await connect("/api/ws", { authorization: `Bearer ${alice.access_token.slice(0, -4)}AAAA` });
  assert.equal(bad.status, 401);
  assert.equal(bad.body.code, "invalid_token");
});

test("a role route refuses the handshake with 403", async () => {
  const c = await connect("/api/admin/ws", { authorization: `Bearer ${alice.access_token}` });
  assert.equal(c.status, 403);
  assert.equal(c.body.code, "insufficient_role");
});

test("cookie mode: the access cookie opens a socket from the gateway's own origin or a listed one, not from another site", async () => {
  const cookie = `__Host-portcullis_access=${alice.access_token}`;
  for (const origin of [gw.url, APP]) {
    const c = await connect("/api/ws", { cookie, origin });
    assert.ok(c.open, `${origin}: ${JSON.stringify(c)}`);
    assert.equal(c.first.identity.user_id, alice.user.id);
    c.socket.close();
  }
  for (const headers of [{ origin: "https://evil.example" }, { "sec-fetch-site": "cross-site" }]) {
    const c = await connect("/api/ws", { cookie, ...headers });
    assert.equal(c.open, false, JSON.stringify(headers));
    assert.equal(c.status, 403);
    assert.equal(c.body.code, "csrf_refused");
  }
});
