// The browser client (packages/client, built into its dist/ by `npm run build`)
// in Chromium against the real gateway: many concurrent calls around an
// expiring access token make exactly one refresh; two tabs racing make exactly
// one refresh and the session lives on (the gateway revokes a session whose
// rotated refresh token is presented again, so a second refresh with the same
// token would end it); cookie mode works end to end; and a verification link
// followed through the client by the signed-in holder confirms the account as
// it stands instead of taking it over (the client sends the session).
//
// Pages are served from their own origin (APP, listed in CORS_ORIGINS), as an
// app on app.example.com calling auth.example.com would be. Each page wraps
// the client's fetch to count /auth/refresh requests and, where a test needs
// the race to happen, to hold the refresh until both tabs have decided to
// refresh (the second one waiting for the Web Lock). The gateway's own count
// is the `token_refreshed` events, read after a barrier event.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";
import { startGateway, randomEmail, post, ROOT } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const DIST = path.join(ROOT, "packages", "client", "dist");
const PASSWORD = "correct horse battery staple 9";
// Short-lived access tokens: the client refreshes from half their lifetime (2 s) on.
const ACCESS_TTL = 4;

let app;
let tokenGw;
let cookieGw;
let browser;

/** The app's pages: `/` an empty page, `/client/*.js` the built client. */
async function appServer() {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const m = /^\/client\/([a-z]+\.js)$/.exec(url.pathname);
    if (m) {
      const file = path.join(DIST, m[1]);
      if (!fs.existsSync(file)) return res.writeHead(404).end();
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" });
      return res.end(fs.readFileSync(file));
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>app</title><p>app</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/**
 * A page of the app with a client on `gw`: `window.client`, `window.refreshes`
 * (refresh requests this page sent) and `window.hold()` / `window.release()`
 * (hold this page's refresh requests until released).
 */
async function clientPage(context, gw, options = {}) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[page error] ${e}`));
  await page.goto(`${app.url}/`);
  await page.evaluate(
    async ([base, opts]) => {
      const m = await import("/client/index.js");
      window.portcullis = m;
      window.refreshes = 0;
      window.refreshLog = [];
      /** Resolves once the (async) condition holds, checking every 10 ms; rejects after 15 s. */
      window.until = async (condition) => {
        const deadline = Date.now() + 15_000;
        while (!(await condition())) {
          if (Date.now() > deadline) throw new Error(`gave up waiting for: ${condition}`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      let gate = null;
      let open = () => {};
      window.hold = () => {
        gate = new Promise((r) => (open = r));
      };
      window.release = () => {
        gate = null;
        open();
      };
      const counting = async (input, init) => {
        const url = typeof input === "string" ? input : input.url;
        if (url.endsWith("/auth/refresh")) {
          window.refreshes++;
          window.refreshLog.push({ at: Date.now(), state: await window.client.getState() });
          if (gate) await gate;
        }
        return fetch(input, init);
      };
      window.client = new m.PortcullisClient({
        baseUrl: base,
        mode: opts.mode,
        storage: opts.storage === "local" ? m.webStorage(localStorage) : undefined,
        fetch: counting,
      });
      /** n calls at once through the gateway and m of /auth/me: their statuses and who the origin saw. */
      window.burst = async (n, k) => {
        const api = Array.from({ length: n }, () =>
          window.client.fetch(`${base}/api/hello`).then(async (r) => ({ status: r.status, user: r.ok ? (await r.json()).headers["x-auth-user-id"] : null })),
        );
        const me = Array.from({ length: k }, () => window.client.me().then((u) => ({ status: 200, user: u.id }), (e) => ({ status: e.status, user: null })));
        return Promise.all([...api, ...me]);
      };
    },
    [gw.url, options],
  );
  return page;
}

/**
 * Waits until the page's client holds a token inside its refresh margin (half
 * of ACCESS_TTL left): the token ageing is the condition, so this waits out
 * its remaining time.
 */
async function nearExpiry(page) {
  const left = await page.evaluate(async (marginMs) => {
    const s = await window.client.getState();
    const wait = s.expiresAt - marginMs - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait + 1));
    return s.expiresAt - Date.now();
  }, (ACCESS_TTL * 1000) / 2);
  assert.ok(left <= (ACCESS_TTL * 1000) / 2, `${left} ms left`);
}

/** Waits until some tab waits for the client's Web Lock for `gw` (held by another). */
async function lockContended(page, gw) {
  await page.evaluate(
    (name) =>
      window.until(async () => {
        const q = await navigator.locks.query();
        return q.held.some((l) => l.name === name) && q.pending.some((l) => l.name === name);
      }),
    `portcullis-session ${gw.url}/auth`,
  );
}

/** Every event caused before this one has been published once it is seen (a failed login for a fresh address). */
async function barrier(gw) {
  const marker = randomEmail("barrier");
  await post(`${gw.url}/auth/login`, { email: marker, password: "not the password" });
  await gw.waitForEvent((e) => e.type === "login_failed" && e.data.email === marker);
}

function refreshesOf(gw, userId) {
  return gw.events().filter((e) => e.type === "token_refreshed" && e.data.user_id === userId).length;
}

/** What a page's refreshes saw, for a failure message. */
async function diagnose(page) {
  return page.evaluate(async () => JSON.stringify({ now: Date.now(), refreshes: window.refreshLog, state: await window.client.getState() }));
}

function eventsOf(gw, userId) {
  return JSON.stringify(gw.events().filter((e) => e.data?.user_id === userId).map((e) => [e.type, e.timestamp]));
}

function revocationsOf(gw, userId) {
  return gw.events().filter((e) => e.type === "session_revoked" && e.data.user_id === userId);
}

/**
 * The verification of `user`'s address confirmed the account as it stands:
 * verified, and no takeover — no session revoked, nothing of the account
 * changed (a takeover emits `user_updated`), the password still signs in.
 */
async function confirmedAsItStands(gw, user, email) {
  await gw.waitForEvent((e) => e.type === "email_verified" && e.data.user_id === user.id);
  await barrier(gw);
  assert.deepEqual(revocationsOf(gw, user.id), [], eventsOf(gw, user.id));
  assert.deepEqual(gw.events().filter((e) => e.type === "user_updated" && e.data.user_id === user.id), [], eventsOf(gw, user.id));
  assert.equal((await post(`${gw.url}/auth/login`, { email, password: PASSWORD })).status, 200, "the password still signs in");
}

/** The token of the verification link mailed to `email`. */
async function verificationToken(gw, email) {
  return (await gw.waitForEvent((e) => e.type === "email_verification_requested" && e.data.email === email)).data.token;
}

before(async () => {
  if (!fs.existsSync(path.join(DIST, "index.js"))) {
    throw new Error("packages/client/dist is missing: build it first (npm run build, or npm test)");
  }
  app = await appServer();
  const vars = { CORS_ORIGINS: app.url, ACCESS_TTL: String(ACCESS_TTL) };
  [tokenGw, cookieGw] = await Promise.all([
    startGateway({ origin: true, vars }),
    startGateway({ origin: true, vars: { ...vars, COOKIE_MODE: "true" } }),
  ]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await Promise.all([tokenGw?.stop(), cookieGw?.stop()]);
  app?.server.close();
});

describe("token mode", () => {
  test("many concurrent calls around an expiring access token: exactly one refresh, every call through", async () => {
    const context = await browser.newContext();
    try {
      const page = await clientPage(context, tokenGw);
      const email = randomEmail("client-burst");
      const user = await page.evaluate(async ([e, p]) => (await window.client.signUp({ email: e, password: p })).user, [email, PASSWORD]);
      await nearExpiry(page);
      const results = await page.evaluate(() => window.burst(20, 5));
      assert.deepEqual(results.map((r) => r.status), Array(25).fill(200), JSON.stringify(results));
      for (const r of results) assert.equal(r.user, user.id);
      assert.equal(await page.evaluate(() => window.refreshes), 1, await diagnose(page));
      await barrier(tokenGw);
      assert.equal(refreshesOf(tokenGw, user.id), 1, eventsOf(tokenGw, user.id));
      assert.deepEqual(revocationsOf(tokenGw, user.id), []);
    } finally {
      await context.close();
    }
  });

  test("a token the gateway refuses (401 invalid_token) under concurrent calls: one refresh, each call retried once", async () => {
    const context = await browser.newContext();
    try {
      const page = await clientPage(context, tokenGw, { storage: "local" });
      const email = randomEmail("client-401");
      const user = await page.evaluate(async ([e, p]) => (await window.client.signUp({ email: e, password: p })).user, [email, PASSWORD]);
      // Spoil the stored access token's signature: the gateway answers 401 invalid_token.
      await page.evaluate(() => {
        const s = JSON.parse(localStorage.getItem("portcullis.session"));
        const [h, p, sig] = s.accessToken.split(".");
        s.accessToken = `${h}.${p}.${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
        localStorage.setItem("portcullis.session", JSON.stringify(s));
      });
      const results = await page.evaluate(() => window.burst(15, 5));
      assert.deepEqual(results.map((r) => r.status), Array(20).fill(200), JSON.stringify(results));
      assert.equal(await page.evaluate(() => window.refreshes), 1, await diagnose(page));
      await barrier(tokenGw);
      assert.equal(refreshesOf(tokenGw, user.id), 1, eventsOf(tokenGw, user.id));
      assert.deepEqual(revocationsOf(tokenGw, user.id), []);
    } finally {
      await context.close();
    }
  });

  test("two tabs sharing localStorage race to refresh: one refresh, the other tab takes its tokens, the session lives on", async () => {
    const context = await browser.newContext();
    try {
      const tabA = await clientPage(context, tokenGw, { storage: "local" });
      const tabB = await clientPage(context, tokenGw, { storage: "local" });
      const email = randomEmail("client-tabs");
      const user = await tabA.evaluate(async ([e, p]) => (await window.client.signUp({ email: e, password: p })).user, [email, PASSWORD]);
      assert.equal((await tabB.evaluate(() => window.client.getState())).user.id, user.id, "tab B reads the shared storage");
      await nearExpiry(tabA);
      await nearExpiry(tabB);
      // Tab A sends its refresh and holds the answer back; tab B decides to refresh too and waits for the lock.
      await tabA.evaluate(() => window.hold());
      const burstA = tabA.evaluate(() => window.burst(10, 2));
      burstA.catch(() => undefined); // awaited below; a failure meanwhile is the one to report
      await tabA.evaluate(() => window.until(() => window.refreshes === 1));
      const burstB = tabB.evaluate(() => window.burst(10, 2));
      burstB.catch(() => undefined);
      await lockContended(tabB, tokenGw);
      await tabA.evaluate(() => window.release());
      const [a, b] = await Promise.all([burstA, burstB]);
      for (const r of [...a, ...b]) assert.deepEqual(r, { status: 200, user: user.id });
      assert.equal(await tabA.evaluate(() => window.refreshes), 1, await diagnose(tabA));
      assert.equal(await tabB.evaluate(() => window.refreshes), 0, `tab B found the new tokens after taking the lock: ${await diagnose(tabB)}`);
      const tokens = await Promise.all([tabA, tabB].map((p) => p.evaluate(() => window.client.getAccessToken())));
      assert.equal(tokens[0], tokens[1]);
      await barrier(tokenGw);
      assert.equal(refreshesOf(tokenGw, user.id), 1, eventsOf(tokenGw, user.id));
      assert.deepEqual(revocationsOf(tokenGw, user.id), []);
      // The session is alive for both tabs.
      for (const p of [tabA, tabB]) assert.equal(await p.evaluate(async () => (await window.client.me()).id), user.id);
    } finally {
      await context.close();
    }
  });
});

describe("verifyEmail", () => {
  test("token mode, signed in: the link goes with the session, the account is confirmed as it stands", async () => {
    const context = await browser.newContext();
    try {
      const page = await clientPage(context, tokenGw);
      const email = randomEmail("client-verify");
      const user = await page.evaluate(async ([e, p]) => (await window.client.signUp({ email: e, password: p })).user, [email, PASSWORD]);
      await page.evaluate(() => window.client.requestEmailVerification());
      const token = await verificationToken(tokenGw, email);
      const answer = await page.evaluate((t) => window.client.verifyEmail(t), token);
      assert.equal(answer.email_verified, true, JSON.stringify(answer));
      await confirmedAsItStands(tokenGw, user, email);
      const me = await page.evaluate(async () => {
        const m = await window.client.me();
        return { id: m.id, verified: m.email_verified };
      });
      assert.deepEqual(me, { id: user.id, verified: true }, "the page's session lives on");
    } finally {
      await context.close();
    }
  });

  test("cookie mode, a page that knows of no session and an expired access cookie: a refresh first, then confirmed", async () => {
    const context = await browser.newContext();
    try {
      const first = await clientPage(context, cookieGw, { mode: "cookie" });
      const email = randomEmail("client-cookie-verify");
      const user = await first.evaluate(async ([e, p]) => (await window.client.signUp({ email: e, password: p })).user, [email, PASSWORD]);
      // The access cookie lives ACCESS_TTL seconds (its Max-Age): wait it out; the refresh cookie stays.
      const expired = new Promise((r) => setTimeout(r, ACCESS_TTL * 1000 + 1000));
      await first.evaluate(() => window.client.requestEmailVerification());
      const token = await verificationToken(cookieGw, email);
      await first.close();
      await expired;
      // A new page with the default (memory) storage, as after following the link: it knows of no session.
      const page = await clientPage(context, cookieGw, { mode: "cookie" });
      assert.equal(await page.evaluate(() => window.client.getState()), null);
      const answer = await page.evaluate((t) => window.client.verifyEmail(t), token);
      assert.equal(answer.email_verified, true, JSON.stringify(answer));
      assert.equal(await page.evaluate(() => window.refreshes), 1, await diagnose(page));
      await confirmedAsItStands(cookieGw, user, email);
      assert.equal(await page.evaluate(async () => (await window.client.me()).id), user.id, "the browser's session lives on");
    } finally {
      await context.close();
    }
  });
});

describe("cookie mode", () => {
  test("sign up, call the API and /auth/me through the cookies, sign out: no token ever reaches the page", async () => {
    const context = await browser.newContext();
    try {
      const page = await clientPage(context, cookieGw, { mode: "cookie" });
      const email = randomEmail("client-cookie");
      const signedUp = await page.evaluate(async ([e, p]) => window.client.signUp({ email: e, password: p }), [email, PASSWORD]);
      assert.equal(signedUp.user.email, email);
      const names = (await context.cookies(cookieGw.url)).map((c) => c.name);
      assert.ok(names.includes("__Host-portcullis_access") && names.includes("__Host-portcullis_refresh"), names.join(", "));
      const results = await page.evaluate(() => window.burst(3, 1));
      for (const r of results) assert.deepEqual(r, { status: 200, user: signedUp.user.id });
      assert.equal(await page.evaluate(() => window.client.getAccessToken()), null);
      const visible = await page.evaluate(async () => JSON.stringify([await window.client.getState(), document.cookie, { ...localStorage }]));
      assert.doesNotMatch(visible, /eyJ[\w-]+\.|__Host-/, visible);
      // The session is refreshed through the refresh cookie (no body, no preflight) and stays usable.
      await page.evaluate(() => window.client.refresh());
      assert.equal(await page.evaluate(async () => (await window.client.me()).email), email);
      await page.evaluate(() => window.client.signOut());
      assert.equal(await page.evaluate(() => window.client.getState()), null);
      const gone = (await context.cookies(cookieGw.url)).map((c) => c.name);
      assert.ok(!gone.includes("__Host-portcullis_access") && !gone.includes("__Host-portcullis_refresh"), gone.join(", "));
      const after = await page.evaluate(() => window.client.me().then(() => 200, (e) => [e.status, e.code]));
      assert.equal(after[0], 401);
      await cookieGw.waitForEvent((e) => e.type === "logout" && e.data.user_id === signedUp.user.id);
    } finally {
      await context.close();
    }
  });

  test("two tabs on the browser's one cookie session race to refresh: one refresh, no revocation", async () => {
    const context = await browser.newContext();
    try {
      // Default (memory) storage: each tab learns of the other's sign-in and refresh over the BroadcastChannel.
      const tabA = await clientPage(context, cookieGw, { mode: "cookie" });
      const tabB = await clientPage(context, cookieGw, { mode: "cookie" });
      const email = randomEmail("client-cookie-tabs");
      const user = await tabA.evaluate(async ([e, p]) => (await window.client.signUp({ email: e, password: p })).user, [email, PASSWORD]);
      await tabB.evaluate(() => window.until(async () => (await window.client.getState()) !== null));
      await nearExpiry(tabA);
      await nearExpiry(tabB);
      await tabA.evaluate(() => window.hold());
      const burstA = tabA.evaluate(() => window.burst(10, 2));
      burstA.catch(() => undefined); // awaited below; a failure meanwhile is the one to report
      await tabA.evaluate(() => window.until(() => window.refreshes === 1));
      const burstB = tabB.evaluate(() => window.burst(10, 2));
      burstB.catch(() => undefined);
      await lockContended(tabB, cookieGw);
      await tabA.evaluate(() => window.release());
      const [a, b] = await Promise.all([burstA, burstB]);
      for (const r of [...a, ...b]) assert.deepEqual(r, { status: 200, user: user.id });
      assert.equal(await tabA.evaluate(() => window.refreshes), 1, await diagnose(tabA));
      assert.equal(await tabB.evaluate(() => window.refreshes), 0, `tab B adopted tab A's refresh: ${await diagnose(tabB)}`);
      await barrier(cookieGw);
      assert.equal(refreshesOf(cookieGw, user.id), 1, eventsOf(cookieGw, user.id));
      assert.deepEqual(revocationsOf(cookieGw, user.id), []);
      for (const p of [tabA, tabB]) assert.equal(await p.evaluate(async () => (await window.client.me()).id), user.id);
    } finally {
      await context.close();
    }
  });
});
