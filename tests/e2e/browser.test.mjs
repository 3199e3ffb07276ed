// A real browser (Debian's Chromium, driven by playwright-core) against the
// gateway under `wrangler dev` in cookie mode with CORS: the browser, not our
// own client, decides what a page may read and which cookies it sends, so
// this is the proof that the CORS answers and cookie attributes work as
// browsers read them, and that no script on a page can read a token.
//
// Three origins on 127.0.0.1 (one site: ports do not make a site, so
// SameSite=Lax cookies go along on every request, as between app.example.com
// and auth.example.com):
//   APP    http://127.0.0.1:P1  listed in CORS_ORIGINS
//   EVIL   http://127.0.0.1:P2  not listed
//   GW     http://127.0.0.1:P3  the gateway (auth API + /api/* to the demo origin)
// `scripts/setup-browser.sh` (run by `npm test`) installs Chromium when missing.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { chromium } from "playwright-core";
import { startGateway, randomEmail } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const PASSWORD = "correct horse battery staple 9";

let gw;
let browser;
let appServer;
let evilServer;
let APP;
let EVIL;

/** A page server: every path answers the same empty HTML page. */
async function pageServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>page</title><p>page</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/**
 * Runs `fetch(url, init)` in a page of `origin` and returns what the page
 * can see: { ok, status, headers, body } or { error } when the browser
 * refused to hand the response to the page.
 */
async function pageFetch(page, url, init = {}) {
  return page.evaluate(
    async ([u, i]) => {
      try {
        const res = await fetch(u, i);
        const text = await res.text();
        let body = null;
        try { body = JSON.parse(text); } catch {}
        return { status: res.status, type: res.type, headers: Object.fromEntries(res.headers), body, text };
      } catch (e) {
        return { error: String(e) };
      }
    },
    [url, init],
  );
}

const jsonPost = (body) => ({
  method: "POST",
  credentials: "include",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

before(async () => {
  const app = await pageServer();
  const evil = await pageServer();
  appServer = app.server;
  evilServer = evil.server;
  APP = app.url;
  EVIL = evil.url;
  gw = await startGateway({ origin: true, vars: { CORS_ORIGINS: APP, COOKIE_MODE: "true" } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  appServer?.close();
  evilServer?.close();
});

describe("a browser on an allowed origin, cookie mode", () => {
  let context;
  let page;
  let evilPage;
  let user;
  let email;
  /** Everything a page script got back from a sign-in endpoint (bodies and readable headers). */
  const seen = [];

  before(async () => {
    context = await browser.newContext();
    page = await context.newPage();
    await page.goto(`${APP}/`);
    evilPage = await context.newPage();
    await evilPage.goto(`${EVIL}/`);
  });
  after(async () => context?.close());

  test("signs up with a JSON POST (a preflighted request) and reads the answer", async () => {
    email = randomEmail("browser");
    const res = await pageFetch(page, `${gw.url}/auth/signup`, jsonPost({ email, password: PASSWORD }));
    assert.equal(res.error, undefined, `the browser refused the answer: ${res.error}`);
    assert.equal(res.status, 201, res.text);
    assert.equal(res.body.user.email, email);
    assert.equal(res.body.token_type, "Bearer");
    user = res.body.user;
    seen.push(res);
  });

  test("the tokens are stored as __Host- cookies: HttpOnly, Secure, SameSite=Lax, host-only, Path=/", async () => {
    const cookies = await context.cookies(gw.url);
    const byName = Object.fromEntries(cookies.map((c) => [c.name, c]));
    for (const name of ["__Host-portcullis_access", "__Host-portcullis_refresh"]) {
      const c = byName[name];
      assert.ok(c, `${name} is not stored; stored: ${cookies.map((x) => x.name).join(", ")}`);
      assert.equal(c.httpOnly, true, name);
      assert.equal(c.secure, true, name);
      assert.equal(c.sameSite, "Lax", name);
      assert.equal(c.path, "/", name);
      assert.equal(c.domain, "127.0.0.1", name);
    }
    // HttpOnly: the page cannot read them, even on the gateway's own origin.
    const own = await context.newPage();
    await own.goto(`${gw.url}/.well-known/jwks.json`);
    assert.equal(await own.evaluate(() => document.cookie), "");
    await own.close();
  });

  test("no script on the page can read a token: not in sign-in bodies, not in document.cookie; the cookies do the work", async () => {
    // Log in again and refresh, from the listed origin and from a page of the gateway's own
    // origin (an app served through the gateway: a public route of the demo origin).
    const own = await context.newPage();
    await own.goto(`${gw.url}/api/public/app`);
    const tokens = new Set();
    const cookieValues = async () => {
      const byName = Object.fromEntries((await context.cookies(gw.url)).map((c) => [c.name, c.value]));
      for (const name of ["__Host-portcullis_access", "__Host-portcullis_refresh"]) {
        assert.ok(byName[name], `${name} is set`);
        tokens.add(byName[name]);
      }
    };
    await cookieValues();
    for (const [who, p, base] of [["listed origin", page, gw.url], ["gateway origin", own, ""]]) {
      const login = await pageFetch(p, `${base}/auth/login`, jsonPost({ email, password: PASSWORD }));
      assert.equal(login.status, 200, `${who}: ${login.text ?? login.error}`);
      await cookieValues();
      const refresh = await pageFetch(p, `${base}/auth/refresh`, { method: "POST", credentials: "include" });
      assert.equal(refresh.status, 200, `${who}: ${refresh.text ?? refresh.error}`);
      await cookieValues();
      for (const res of [login, refresh]) {
        assert.deepEqual(Object.keys(res.body).sort(), ["expires_in", "token_type", "user"], `${who}: ${res.text}`);
        assert.equal(res.body.user.email, email);
        assert.equal(res.body.expires_in, 900);
      }
      seen.push(login, refresh);
    }
    assert.equal(tokens.size, 2 + 4 * 2, "every sign-in and refresh set new cookies");
    for (const res of seen) {
      const visible = `${res.text}\n${JSON.stringify(res.headers)}`;
      assert.doesNotMatch(visible, /access_token|refresh_token|eyJ[\w-]+\.[\w-]+\./, visible);
      for (const t of tokens) assert.ok(!visible.includes(t), `a page script saw a token: ${visible}`);
    }
    for (const p of [page, own]) assert.equal(await p.evaluate(() => document.cookie), "");
    await own.close();
    // The cookies alone carry the session through the gateway.
    const api = await pageFetch(page, `${gw.url}/api/hello`, { credentials: "include" });
    assert.equal(api.status, 200, api.text);
    assert.equal(api.body.headers["x-auth-user-id"], user.id);
  });

  test("the access cookie alone authenticates a call through the gateway, whose answer the page may read", async () => {
    const res = await pageFetch(page, `${gw.url}/api/hello?from=browser`, { credentials: "include" });
    assert.equal(res.error, undefined, res.error);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.headers["access-control-allow-origin"], undefined, "the page sees CORS headers only as their effect");
    assert.equal(res.body.path, "/api/hello");
    assert.equal(res.body.headers["x-auth-user-id"], user.id);
    assert.equal(res.body.headers["x-auth-email"], user.email);
    assert.ok(res.body.headers["x-auth-assertion"], "the origin gets the signed assertion");
    // The gateway's own cookies never reach the origin.
    assert.ok(!(res.body.headers.cookie ?? "").includes("__Host-portcullis"), res.body.headers.cookie);
  });

  test("/auth/me and /auth/sessions with the cookie", async () => {
    const me = await pageFetch(page, `${gw.url}/auth/me`, { credentials: "include" });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.body.id, user.id);
    const sessions = await pageFetch(page, `${gw.url}/auth/sessions`, { credentials: "include" });
    assert.equal(sessions.status, 200, sessions.text);
    assert.equal(sessions.body.sessions.filter((s) => s.current).length, 1);
  });

  test("a WebSocket from the allowed origin opens with the cookie; from another origin of the same site it is refused", async () => {
    const open = (p) =>
      p.evaluate(
        (url) =>
          new Promise((resolve) => {
            const ws = new WebSocket(url);
            ws.onmessage = (e) => {
              resolve({ open: true, first: JSON.parse(e.data) });
              ws.close();
            };
            ws.onclose = (e) => resolve({ open: false, code: e.code });
          }),
        `${gw.url.replace("http", "ws")}/api/ws`,
      );
    const ok = await open(page);
    assert.ok(ok.open, JSON.stringify(ok));
    assert.equal(ok.first.identity.user_id, user.id);
    // The browser sends the same-site Lax cookie along: only the gateway's Origin check stops it.
    const hijack = await open(evilPage);
    assert.equal(hijack.open, false, JSON.stringify(hijack));
    await gw.waitForLog((l) => /GET \/api\/ws 403/.test(l));
  });

  test("a 401 through CORS: the page reads the status, the problem and the exposed WWW-Authenticate", async () => {
    const res = await pageFetch(page, `${gw.url}/api/hello`, { credentials: "omit" });
    assert.equal(res.error, undefined, res.error);
    assert.equal(res.status, 401);
    assert.equal(res.body.code, "missing_token");
    assert.match(res.headers["www-authenticate"] ?? "", /^Bearer/);
  });

  test("a page on another origin cannot read anything, with or without credentials", async () => {
    for (const init of [{ credentials: "include" }, { credentials: "omit" }]) {
      const res = await pageFetch(evilPage, `${gw.url}/api/hello`, init);
      assert.match(res.error ?? "", /TypeError/, `the browser handed the answer to ${EVIL}: ${JSON.stringify(res)}`);
    }
    const me = await pageFetch(evilPage, `${gw.url}/auth/me`, { credentials: "include" });
    assert.match(me.error ?? "", /TypeError/);
    const signup = await pageFetch(evilPage, `${gw.url}/auth/signup`, jsonPost({ email: randomEmail("evil"), password: PASSWORD }));
    assert.match(signup.error ?? "", /TypeError/, "the preflight from an unlisted origin is refused");
  });

  test("a cross-origin logout that needs no preflight is refused: the browser sends the cookies, the gateway refuses", async () => {
    // mode no-cors: a "simple" POST the browser sends without asking first, with
    // the SameSite=Lax cookies (same site). Only the gateway can stop it.
    await crossSiteLogoutIsRefused();
  });

  test("… also when only the refresh cookie is left (the access cookie expired)", async () => {
    const access = (await context.cookies(gw.url)).find((c) => c.name === "__Host-portcullis_access");
    await context.clearCookies({ name: "__Host-portcullis_access" });
    await crossSiteLogoutIsRefused(access.value);
    const refresh = await pageFetch(evilPage, `${gw.url}/auth/refresh`, { method: "POST", mode: "no-cors", credentials: "include" });
    assert.equal(refresh.type, "opaque");
    await gw.waitForLog((l) => /POST \/auth\/refresh 403/.test(l));
    await context.addCookies([access]);
  });

  /**
   * A no-cors logout from EVIL: the gateway answers 403 and the session lives on. The
   * test (not a page) reads the session's access token from the browser's cookie store.
   */
  async function crossSiteLogoutIsRefused(token) {
    token ??= (await context.cookies(gw.url)).find((c) => c.name === "__Host-portcullis_access").value;
    const before = gw.logs().filter((l) => /POST \/auth\/logout 403/.test(l)).length;
    const res = await pageFetch(evilPage, `${gw.url}/auth/logout`, { method: "POST", mode: "no-cors", credentials: "include" });
    assert.equal(res.type, "opaque", JSON.stringify(res));
    await gw.waitForLog(() => gw.logs().filter((l) => /POST \/auth\/logout 403/.test(l)).length > before);
    const sessions = await pageFetch(page, `${gw.url}/auth/sessions`, { credentials: "include", headers: { authorization: `Bearer ${token}` } });
    assert.equal(sessions.status, 200, `the session was revoked from ${EVIL}: ${sessions.text}`);
    assert.ok(!gw.events().some((e) => e.type === "logout" && e.data.user_id === user.id), "a logout event was emitted");
  }

  test("logout from the allowed origin revokes the session and clears the cookies", async () => {
    const res = await pageFetch(page, `${gw.url}/auth/logout`, { method: "POST", credentials: "include" });
    assert.equal(res.status, 204, res.text);
    const names = (await context.cookies(gw.url)).map((c) => c.name);
    assert.ok(!names.includes("__Host-portcullis_access") && !names.includes("__Host-portcullis_refresh"), names.join(", "));
    const after = await pageFetch(page, `${gw.url}/api/hello`, { credentials: "include" });
    assert.equal(after.status, 401);
  });
});
