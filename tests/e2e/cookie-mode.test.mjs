// Cookie mode keeps the tokens out of reach of page scripts: every endpoint
// that answers an AuthResponse (signup, login, refresh by cookie or by body,
// magic-link/verify, otp/verify) sets the two HttpOnly cookies and answers a
// body with the user and the expiry but no token; an OAuth sign-in's callback
// sets the cookies itself and returns to the app without a code, and the
// exchange is refused, so nothing in the app's URL opens a session.
// COOKIE_MODE_BODY_TOKENS=true puts the tokens back in the bodies, and the
// OAuth code and exchange back. Plain HTTP against the built Worker in
// wrangler dev; the same seen by page scripts in Chromium is in
// browser.test.mjs.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { startGateway, post, json, randomEmail } from "./harness.mjs";
import { startFakeGithub } from "./lib/oauth-servers.mjs";
import { assertProblem } from "./lib/accounts.mjs";

const ACCESS = "__Host-portcullis_access";
const REFRESH = "__Host-portcullis_refresh";
const BINDING = "__Host-portcullis_oauth";
const PASSWORD = "correct horse battery";
const APP = "http://app.test/done";
const GH_ID = "gh-cookie-client";
const GH_SECRET = "gh-cookie-secret-0123456789";

/** The cookies a response sets, by name. */
function cookiesOf(res) {
  return Object.fromEntries(res.headers.getSetCookie().map((c) => c.split(";")[0].split(/=(.*)/s)));
}

/** The `Max-Age` of each cookie a response sets, by name. */
function maxAgesOf(res) {
  return Object.fromEntries(
    res.headers.getSetCookie().map((c) => [c.split("=")[0], Number(c.match(/;\s*Max-Age=(\d+)/i)?.[1])]),
  );
}

/** The `log` transport's printed email of `type` to `email` (portcullis.email {json}). */
async function printedEmail(gw, type, email) {
  const line = await gw.waitForLog((l) => l.includes("portcullis.email ") && l.includes(`"${type}"`) && l.includes(email), 15_000);
  return JSON.parse(line.slice(line.indexOf("{")));
}

/** An OAuth sign-in with the fake GitHub, up to the callback's answer (302). */
/** The app's PKCE verifier: with COOKIE_MODE_BODY_TOKENS a code is issued, bound to its challenge. */
const APP_VERIFIER = crypto.randomBytes(32).toString("base64url");
const APP_CHALLENGE = crypto.createHash("sha256").update(APP_VERIFIER).digest("base64url");

async function oauthCallback(gw, gh) {
  const start = await fetch(`${gw.url}/auth/oauth/github/authorize?redirect_to=${encodeURIComponent(APP)}&code_challenge=${APP_CHALLENGE}`, {
    redirect: "manual",
  });
  assert.equal(start.status, 302, await start.text());
  const approved = gh.approve(start.headers.get("location"), {
    id: crypto.randomInt(1e6, 1e9),
    login: "cookie",
    emails: [{ email: randomEmail("cookie-gh"), primary: true, verified: true }],
  });
  const cb = await fetch(`${gw.url}/auth/oauth/github/callback?code=${approved.code}&state=${approved.state}`, {
    redirect: "manual",
    headers: { cookie: `${BINDING}=${cookiesOf(start)[BINDING]}` },
  });
  assert.equal(cb.status, 302, await cb.text());
  return cb;
}

/**
 * Signs in through every endpoint that answers an AuthResponse, checking after each
 * that its cookies alone authenticate `/auth/me`; with `exchange`, the OAuth
 * exchange too. Returns [{ endpoint, status, text, body, cookies }].
 */
async function signInEverywhere(gw, gh, { exchange = false } = {}) {
  const email = randomEmail("cookie-body");
  const out = [];
  async function record(endpoint, res) {
    const text = await res.text();
    const entry = { endpoint, status: res.status, text, cookies: cookiesOf(res), maxAges: maxAgesOf(res) };
    assert.ok([200, 201].includes(res.status), `${endpoint}: ${res.status} ${text}`);
    entry.body = JSON.parse(text);
    assert.ok(entry.cookies[ACCESS] && entry.cookies[REFRESH], `${endpoint} sets both cookies: ${JSON.stringify(entry.cookies)}`);
    const me = await fetch(`${gw.url}/auth/me`, { headers: { cookie: `${ACCESS}=${entry.cookies[ACCESS]}` } });
    assert.equal(me.status, 200, `${endpoint}: the access cookie does not work`);
    assert.equal((await json(me)).id, entry.body.user.id, endpoint);
    out.push(entry);
    return entry;
  }

  await record("signup", await post(`${gw.url}/auth/signup`, { email, password: PASSWORD }));
  const login = await record("login", await post(`${gw.url}/auth/login`, { email, password: PASSWORD }));
  const byCookie = await record(
    "refresh (cookie)",
    await fetch(`${gw.url}/auth/refresh`, { method: "POST", headers: { cookie: `${REFRESH}=${login.cookies[REFRESH]}` } }),
  );
  await record("refresh (body)", await post(`${gw.url}/auth/refresh`, { refresh_token: byCookie.cookies[REFRESH] }));

  assert.equal((await post(`${gw.url}/auth/magic-link`, { email })).status, 200);
  const link = (await printedEmail(gw, "magic_link_requested", email)).text.match(/[?&]token=([A-Za-z0-9_-]+)/);
  assert.ok(link, "the printed email carries the link");
  await record("magic-link/verify", await post(`${gw.url}/auth/magic-link/verify`, { token: link[1] }));

  assert.equal((await post(`${gw.url}/auth/otp`, { email })).status, 200);
  const code = (await printedEmail(gw, "email_otp_requested", email)).text.match(/^\s*(\d{6})\s*$/m);
  assert.ok(code, "the printed email carries the code");
  await record("otp/verify", await post(`${gw.url}/auth/otp/verify`, { email, code: code[1] }));

  if (exchange) {
    const cb = await oauthCallback(gw, gh);
    const exchangeCode = new URL(cb.headers.get("location")).searchParams.get("code");
    assert.ok(exchangeCode, cb.headers.get("location"));
    await record("oauth/exchange", await post(`${gw.url}/auth/oauth/exchange`, { code: exchangeCode, code_verifier: APP_VERIFIER }));
  }
  return out;
}

function startCookieGateway(gh, extra = {}) {
  return startGateway({
    vars: {
      COOKIE_MODE: "true",
      OAUTH_PROVIDERS: JSON.stringify([{ id: "github", preset: "github", client_id: GH_ID, base_url: gh.base, api_url: gh.base }]),
      OAUTH_GITHUB_CLIENT_SECRET: GH_SECRET,
      REDIRECT_ALLOWLIST: APP,
      ...extra,
    },
  });
}

describe("cookie mode", () => {
  let gw, gh;
  before(async () => {
    gh = await startFakeGithub({ clientId: GH_ID, clientSecret: GH_SECRET });
    gw = await startCookieGateway(gh);
  });
  after(async () => {
    await gw?.stop();
    await gh?.close();
  });

  test("every sign-in endpoint's body carries the user and the expiry, and no token", async () => {
    const answers = await signInEverywhere(gw, gh);
    assert.deepEqual(answers.map((a) => a.endpoint), [
      "signup", "login", "refresh (cookie)", "refresh (body)", "magic-link/verify", "otp/verify",
    ]);
    for (const { endpoint, text, body, cookies } of answers) {
      assert.deepEqual(Object.keys(body).sort(), ["expires_in", "token_type", "user"], `${endpoint}: ${text}`);
      assert.equal(body.token_type, "Bearer", endpoint);
      assert.equal(body.expires_in, 900, endpoint);
      assert.ok(body.user.id && body.user.email && body.user.session_id, `${endpoint}: ${text}`);
      assert.ok(!text.includes(cookies[ACCESS]) && !text.includes(cookies[REFRESH]), `${endpoint} shows a token: ${text}`);
      assert.doesNotMatch(text, /eyJ[\w-]+\.[\w-]+\./, endpoint);
    }
  });

  test("an OAuth callback sets the cookies and returns to the app with no code; the exchange is refused", async () => {
    const cb = await oauthCallback(gw, gh);
    // Nothing in the app's URL (its history, a Referer, a script on the page) opens the session.
    assert.equal(cb.headers.get("location"), APP);
    const cookies = cookiesOf(cb);
    assert.ok(cookies[ACCESS] && cookies[REFRESH], JSON.stringify(cookies));
    const me = await fetch(`${gw.url}/auth/me`, { headers: { cookie: `${ACCESS}=${cookies[ACCESS]}` } });
    assert.equal(me.status, 200);
    assert.ok((await json(me)).email.startsWith("cookie-gh"));
    // No code was issued, and whatever is presented as one is refused: no cookie, no token.
    const refused = await post(`${gw.url}/auth/oauth/exchange`, { code: crypto.randomBytes(32).toString("base64url") });
    assert.deepEqual(refused.headers.getSetCookie(), []);
    const problem = await assertProblem(refused, 400, "invalid_exchange_code");
    assert.match(problem.detail, /cookie mode/);
  });
});

describe("cookie mode with COOKIE_MODE_BODY_TOKENS=true", () => {
  let gw, gh;
  before(async () => {
    gh = await startFakeGithub({ clientId: GH_ID, clientSecret: GH_SECRET });
    gw = await startCookieGateway(gh, { COOKIE_MODE_BODY_TOKENS: "true" });
  });
  after(async () => {
    await gw?.stop();
    await gh?.close();
  });

  test("every sign-in endpoint's body carries the tokens again, the same as its cookies; the OAuth code is exchanged", async () => {
    const answers = await signInEverywhere(gw, gh, { exchange: true });
    assert.equal(answers.at(-1).endpoint, "oauth/exchange");
    for (const { endpoint, text, body, cookies } of answers) {
      assert.deepEqual(
        Object.keys(body).sort(),
        ["access_token", "expires_in", "refresh_token", "token_type", "user"],
        `${endpoint}: ${text}`,
      );
      assert.equal(body.access_token, cookies[ACCESS], endpoint);
      assert.equal(body.refresh_token, cookies[REFRESH], endpoint);
    }
  });

  test("the hosted pages sign in to the account page with no code and no challenge; to an app, bound to its challenge", async () => {
    const email = randomEmail("pages-body");
    assert.equal((await post(`${gw.url}/auth/signup`, { email, password: PASSWORD })).status, 201);
    // Where the account page sends a signed-out browser: back to itself.
    const account = `${gw.url}/auth/ui/account`;
    const page = await fetch(`${gw.url}/auth/ui/login?redirect_to=${encodeURIComponent(account)}`, { redirect: "manual" });
    assert.equal(page.status, 200, "the login page needs no challenge when it returns to the account page");
    await page.text();
    const csrf = page.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_ui=")).split(";")[0];
    const signIn = (extra) =>
      fetch(`${gw.url}/auth/ui/login`, {
        method: "POST",
        redirect: "manual",
        headers: { cookie: csrf, "content-type": "application/x-www-form-urlencoded", origin: gw.url, "sec-fetch-site": "same-origin" },
        body: new URLSearchParams({ csrf: csrf.split("=")[1], intent: "password", email, password: PASSWORD, ...extra }),
      });
    const res = await signIn({ redirect_to: account });
    assert.equal(res.status, 303, await res.text());
    const location = res.headers.get("location");
    assert.equal(new URL(location).pathname, "/auth/ui/account");
    assert.ok(!location.includes("code="), `no code on the account page: ${location}`);
    assert.ok(cookiesOf(res)[ACCESS], "signed in by the cookies");
    // To an app (asked, or the allowlist's default), a code is issued: the app's
    // challenge is required, as in token mode.
    for (const extra of [{ redirect_to: APP }, {}]) {
      const refused = await signIn(extra);
      assert.equal(refused.status, 400, JSON.stringify(extra));
      assert.match(await refused.text(), /code_challenge/);
    }
    const toApp = await signIn({ redirect_to: APP, code_challenge: APP_CHALLENGE });
    assert.equal(toApp.status, 303);
    const code = new URL(toApp.headers.get("location")).searchParams.get("code");
    const exchanged = await post(`${gw.url}/auth/oauth/exchange`, { code, code_verifier: APP_VERIFIER });
    assert.equal(exchanged.status, 200, await exchanged.text());
  });
});

describe("cookie mode with a short SESSION_MAX_AGE", () => {
  const MAX_AGE = 120;
  let gw, gh;
  before(async () => {
    gh = await startFakeGithub({ clientId: GH_ID, clientSecret: GH_SECRET });
    gw = await startCookieGateway(gh, { SESSION_MAX_AGE: String(MAX_AGE) });
  });
  after(async () => {
    await gw?.stop();
    await gh?.close();
  });

  test("every cookie lives as long as its token: the access cookie expires_in, the refresh cookie until the session's end", async () => {
    for (const { endpoint, body, maxAges } of await signInEverywhere(gw, gh)) {
      assert.ok(body.expires_in > 0 && body.expires_in <= MAX_AGE, `${endpoint}: expires_in ${body.expires_in}`);
      assert.equal(maxAges[ACCESS], body.expires_in, `${endpoint}: the access cookie's Max-Age`);
      assert.ok(maxAges[REFRESH] > 0 && maxAges[REFRESH] <= MAX_AGE, `${endpoint}: the refresh cookie's Max-Age ${maxAges[REFRESH]}`);
    }
  });

  test("a verification link followed with the account's access cookie confirms the account as it stands", async () => {
    const email = randomEmail("cookie-verify");
    const signedUp = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
    assert.equal(signedUp.status, 201, await signedUp.text());
    const cookie = `${ACCESS}=${cookiesOf(signedUp)[ACCESS]}`;
    const asked = await fetch(`${gw.url}/auth/email/verify/request`, { method: "POST", headers: { cookie } });
    assert.equal(asked.status, 200, await asked.text());
    const token = (await printedEmail(gw, "email_verification_requested", email)).text.match(/[?&]token=([A-Za-z0-9_-]+)/)[1];
    const res = await fetch(`${gw.url}/auth/email/verify`, {
      method: "POST",
      headers: { cookie, "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
    assert.equal(res.status, 200, await res.text());
    const me = await fetch(`${gw.url}/auth/me`, { headers: { cookie } });
    assert.equal(me.status, 200, "the session lives on");
    assert.equal((await json(me)).email_verified, true);
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: PASSWORD })).status, 200, "and the password");
  });
});
