// The hosted pages (/auth/ui/…) end to end in Chromium (playwright-core, as
// browser.test.mjs), against the gateway in cookie mode: every sign-in way
// (password, email code, magic link whose landing names the account, an
// OAuth provider — a real OpenID provider), sign up, forgot and reset, email
// verification, the account page (revoke a session, change the password,
// sign out; two-step verification on and off, by plain HTTP with `otpauth`
// as the authenticator app); axe-core on every page (no serious or critical violation); the
// CSP and security headers, the stylesheet applied under that CSP and no
// script at all; and a cross-site form post refused (login CSRF).
//
// Origins on 127.0.0.1 (ports do not make a site: a same-site attacker, the
// harder case for SameSite cookies):
//   APP   the app the sign-ins return to (REDIRECT_ALLOWLIST)
//   EVIL  a page that posts forms to the gateway
//   GW    the gateway, with the demo origin behind it
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import crypto from "node:crypto";
import { chromium } from "playwright-core";
import * as OTPAuth from "otpauth";
import { startGateway, post, json, randomEmail, ROOT } from "./harness.mjs";
import { listenOidcProvider } from "./lib/oauth-servers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const PASSWORD = "correct horse battery staple 9";
const AXE = fs.readFileSync(path.join(ROOT, "node_modules", "axe-core", "axe.min.js"), "utf8");
const ACCENT = "#ffdd00"; // light: buttons need black text, links a darkened accent
const CLIENT_ID = "portcullis-ui";
const CLIENT_SECRET = "e2e-ui-client-secret-0123456789";

let gw;
let op;
let browser;
let app;
let evil;

/** A page server answering every path with `html(req)` (default: an empty page). */
async function pageServer(html = () => "<!doctype html><title>app</title><p>app</p>") {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(html(req));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

before(async () => {
  app = await pageServer();
  evil = await pageServer((req) => evilPage(new URL(req.url, "http://x")));
  op = await listenOidcProvider();
  gw = await startGateway({
    origin: true,
    vars: {
      COOKIE_MODE: "true",
      REDIRECT_ALLOWLIST: `${app.url}/done`,
      OAUTH_PROVIDERS: JSON.stringify([{ id: "acme", issuer: op.issuer, client_id: CLIENT_ID }]),
      OAUTH_ACME_CLIENT_SECRET: CLIENT_SECRET,
      UI_NAME: "Acme <Sign-in>",
      UI_ACCENT: ACCENT,
    },
  });
  op.configure({ redirectUri: `${gw.url}/auth/oauth/acme/callback`, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  await op?.close();
  app?.server.close();
  evil?.server.close();
});

const DONE = () => `${app.url}/done`;
const ui = (page, query = "") => `${gw.url}/auth/ui/${page}${query}`;
const withReturn = (page) => ui(page, `?redirect_to=${encodeURIComponent(DONE())}`);

/** A fresh browser context and page, failing the test on any CSP violation or page error. */
async function fresh(options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  return { context, page, problems };
}

async function sessionCookies(context) {
  const byName = Object.fromEntries((await context.cookies(gw.url)).map((c) => [c.name, c.value]));
  return { access: byName["__Host-portcullis_access"], refresh: byName["__Host-portcullis_refresh"] };
}

/** Who the gateway says the browser is, through the protected demo API (cookies only). */
async function whoAmI(context) {
  const { access } = await sessionCookies(context);
  if (!access) return null;
  const res = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${access}` } });
  return res.status === 200 ? (await json(res)).email : null;
}

/** Runs axe-core in the page (through the devtools protocol: the page's CSP allows no script). */
async function axeCheck(page, what) {
  await page.evaluate(AXE);
  const results = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.html).slice(0, 3) }));
  });
  const serious = results.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(serious, [], `${what}: ${JSON.stringify(serious, null, 2)}`);
}

async function signUpByApi(email) {
  const res = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
  assert.equal(res.status, 201, await res.text());
}

describe("every page: headers, no script, the stylesheet applied under the CSP, accessible", () => {
  const pages = ["login", "signup", "magic-link?token=x", "otp", "forgot", "reset?token=x", "verify-email?token=x", "mfa"];

  test("each page carries the strict CSP, the security headers and no-store, and has no script", async () => {
    for (const p of pages) {
      const res = await fetch(ui(p));
      const html = await res.text();
      assert.ok([200, 401].includes(res.status), `${p}: ${res.status} ${html}`);
      assert.match(res.headers.get("content-type"), /^text\/html; charset=utf-8/, p);
      const csp = res.headers.get("content-security-policy");
      assert.match(csp, /^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/]+=*'; form-action 'self' http:\/\/127\.0\.0\.1:\d+; frame-ancestors 'none'; base-uri 'none'$/, `${p}: ${csp}`);
      // The style is allowed by the hash of exactly what the page inlines.
      const style = html.match(/<style>([\s\S]*?)<\/style>/)[1];
      assert.equal(csp.match(/'sha256-([^']+)'/)[1], crypto.createHash("sha256").update(style).digest("base64"), p);
      assert.equal(res.headers.get("x-frame-options"), "DENY", p);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff", p);
      assert.equal(res.headers.get("referrer-policy"), "same-origin", p);
      assert.match(res.headers.get("cache-control"), /no-store/, p);
      // No script at all (so none without a nonce), no inline style attribute, no event handler.
      assert.doesNotMatch(html, /<script|\son[a-z]+=|\sstyle=/i, p);
      // The brand name is escaped where it is shown.
      assert.ok(html.includes("Acme &lt;Sign-in&gt;") && !html.includes("<Sign-in>"), p);
      // A CSRF cookie is handed out with the first page: __Host-, HttpOnly, Secure, SameSite=Lax.
      const set = res.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_ui="));
      assert.match(set ?? "", /^__Host-portcullis_ui=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Lax$/, p);
    }
  });

  test("in Chromium the stylesheet applies (its hash matches), buttons and links meet contrast, axe finds nothing serious", async () => {
    const { context, page, problems } = await fresh();
    for (const p of pages) {
      await page.goto(ui(p));
      await axeCheck(page, p);
    }
    await page.goto(ui("login"));
    const button = await page.$eval("button[value=password]", (b) => getComputedStyle(b).backgroundColor);
    assert.equal(button, "rgb(255, 221, 0)", "the accent colour from UI_ACCENT, so the inline style was allowed");
    const text = await page.$eval("button[value=password]", (b) => getComputedStyle(b).color);
    assert.equal(text, "rgb(0, 0, 0)", "black text on a light accent");
    assert.deepEqual(problems, [], "no CSP violation, no page error");
    await context.close();
  });

  test("the keyboard reaches the fields in order, with a visible focus ring", async () => {
    const { context, page } = await fresh();
    await page.goto(ui("login"));
    const order = [];
    for (let i = 0; i < 4; i++) {
      await page.keyboard.press("Tab");
      order.push(await page.evaluate(() => `${document.activeElement.tagName}:${document.activeElement.id || document.activeElement.value}`));
    }
    assert.deepEqual(order, ["INPUT:email", "INPUT:password", "BUTTON:password", "BUTTON:magic_link"]);
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.equal(outline, "solid");
    await context.close();
  });
});

describe("sign up and sign in through the pages", () => {
  test("sign up: the form creates the account and returns to the app, signed in with the cookies", async () => {
    // A German browser (Accept-Language: de-AT): the account takes its language.
    const { context, page, problems } = await fresh({ locale: "de-AT" });
    const email = randomEmail("ui-signup");
    await page.goto(withReturn("signup"));
    await page.fill("#name", "Ada <b>");
    await page.fill("#email", email);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(`${DONE()}**`), page.click("button[type=submit]")]);
    assert.equal(new URL(page.url()).search, "", "no code in the URL in cookie mode");
    assert.equal(await whoAmI(context), email);
    const created = await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email);
    assert.equal(created.data.name, "Ada <b>");
    const reset = await post(`${gw.url}/auth/password/forgot`, { email });
    assert.equal(reset.status, 200);
    const asked = await gw.waitForEvent((e) => e.type === "password_reset_requested" && e.data.email === email);
    assert.equal(asked.data.locale, "de-AT", "the language the browser sent at sign-up");
    // The cookies carry the session through the gateway to the demo origin.
    const echo = await (await context.request.get(`${gw.url}/api/hello`)).json();
    assert.equal(echo.identity.email, email);
    // Signing up again with the address shows the problem inline, status 409.
    const again = await page.goto(withReturn("signup"));
    assert.equal(again.status(), 200);
    await page.fill("#email", email);
    await page.fill("#password", PASSWORD);
    const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[type=submit]")]);
    assert.equal(res.status(), 409);
    assert.match(await page.textContent("[role=alert]"), /already exists/);
    assert.equal(await page.inputValue("#email"), email, "what was typed stays");
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("password: a wrong one is refused inline (401), the right one returns to the app", async () => {
    const email = randomEmail("ui-login");
    await signUpByApi(email);
    const { context, page } = await fresh();
    await page.goto(withReturn("login"));
    await page.fill("#email", email);
    await page.fill("#password", "not the password");
    const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[value=password]")]);
    assert.equal(res.status(), 401);
    assert.match(res.headers()["www-authenticate"] ?? "", /^Bearer realm="portcullis"/, "a 401 page names its scheme too");
    assert.match(await page.textContent("[role=alert]"), /invalid email or password/);
    await axeCheck(page, "login with an error");
    assert.equal(await whoAmI(context), null);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(`${DONE()}**`), page.click("button[value=password]")]);
    assert.equal(await whoAmI(context), email);
    await context.close();
  });

  test("email code: asked for on the login page, typed on the code page", async () => {
    const email = randomEmail("ui-otp");
    await signUpByApi(email);
    const { context, page } = await fresh();
    await page.goto(withReturn("login"));
    await page.fill("#email", email);
    await page.click("button[value=send]");
    await page.waitForURL(`${gw.url}/auth/ui/otp`);
    assert.match(await page.textContent("[role=status]"), /a sign-in code is on its way/);
    assert.equal(await page.inputValue("#email"), email);
    await axeCheck(page, "otp after sending");
    const sent = await gw.waitForEvent((e) => e.type === "email_otp_requested" && e.data.email === email);
    await page.fill("#code", sent.data.code);
    await Promise.all([page.waitForURL(`${DONE()}**`), page.click("button[value=verify]")]);
    assert.equal(await whoAmI(context), email);
    await context.close();
  });

  test("magic link: the landing page names the account, opening it twice uses nothing, the button signs in once", async () => {
    const email = randomEmail("ui-link");
    await signUpByApi(email);
    const { context, page } = await fresh();
    await page.goto(withReturn("login"));
    await page.fill("#email", email);
    await page.click("button[value=magic_link]");
    await page.waitForURL(`${gw.url}/auth/ui/login`);
    assert.match(await page.textContent("h1"), /Check your email/);
    const sent = await gw.waitForEvent((e) => e.type === "magic_link_requested" && e.data.email === email);
    const link = ui("magic-link", `?token=${sent.data.token}`);
    // A mail scanner's fetch, then the person's click: neither uses the link up.
    assert.equal((await fetch(link)).status, 200);
    await page.goto(link);
    assert.match(await page.textContent("p.account"), new RegExp(`signs you in as ${email.replace(/[.+]/g, "\\$&")}`));
    assert.equal((await page.textContent("button[type=submit]")).trim(), `Sign in as ${email}`);
    await axeCheck(page, "magic-link landing");
    assert.equal(await whoAmI(context), null, "showing the page signed nobody in");
    await Promise.all([page.waitForURL(`${app.url}/**`), page.click("button[type=submit]")]);
    assert.equal(await whoAmI(context), email);
    // Used: the landing page now says so, and names nobody.
    const used = await page.goto(link);
    assert.equal(used.status(), 401);
    assert.match(await page.textContent("[role=alert]"), /invalid, already used/);
    assert.ok(!(await page.content()).includes(email));
    await context.close();
  });

  test("OAuth: the login page's provider button signs in through the real OpenID provider", async () => {
    const email = randomEmail("ui-oidc");
    const sub = `sub-${crypto.randomBytes(4).toString("hex")}`;
    op.accounts.set(sub, { email, email_verified: true, name: "Olive" });
    op.nextLogin = sub;
    const { context, page } = await fresh();
    await page.goto(withReturn("login"));
    const button = page.getByRole("link", { name: "Continue with Acme" });
    assert.match(await button.getAttribute("href"), /^\/auth\/oauth\/acme\/authorize\?redirect_to=http%3A%2F%2F127\.0\.0\.1%3A\d+%2Fdone$/);
    await Promise.all([page.waitForURL(`${DONE()}**`), button.click()]);
    assert.equal(await whoAmI(context), email);
    await gw.waitForEvent((e) => e.type === "login" && e.data.email === email && e.data.provider === "acme");
    await context.close();
  });

  test("forgot and reset: the link's page sets a new password, old sessions end, the new one signs in", async () => {
    const email = randomEmail("ui-reset");
    await signUpByApi(email);
    const { context, page } = await fresh();
    await page.goto(ui("forgot"));
    await page.fill("#email", email);
    await page.click("button[type=submit]");
    assert.match(await page.textContent("[role=status]"), /reset link is on its way/);
    const sent = await gw.waitForEvent((e) => e.type === "password_reset_requested" && e.data.email === email);
    await page.goto(ui("reset", `?token=${sent.data.token}`));
    await axeCheck(page, "reset");
    const NEW = "a whole new password 42";
    await page.fill("#new_password", NEW);
    await page.click("button[type=submit]");
    assert.match(await page.textContent("h1"), /Password changed/);
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: PASSWORD })).status, 401);
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: NEW })).status, 200);
    // The link is spent.
    await page.goto(ui("reset", `?token=${sent.data.token}`));
    await page.fill("#new_password", "yet another password 43");
    const [res] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[type=submit]")]);
    assert.equal(res.status(), 401);
    await context.close();
  });
});

describe("the account page", () => {
  test("lists the sessions, signs another out, changes the password, verifies the email, signs out", async () => {
    const email = randomEmail("ui-account");
    await signUpByApi(email);
    // Another session, elsewhere (its access token checked at the API, which reads D1).
    const otherRes = await post(`${gw.url}/auth/login`, { email, password: PASSWORD }, { "user-agent": "Other Device/1.0" });
    assert.equal(otherRes.status, 200, await otherRes.text());
    // Cookie mode: the tokens travel only as cookies.
    const otherAccess = otherRes.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_access=")).split(";")[0].split("=")[1];
    const { context, page, problems } = await fresh();
    // Not signed in: the account page sends the browser to sign in, and back.
    await page.goto(ui("account"));
    assert.match(page.url(), /\/auth\/ui\/login\?redirect_to=.*%2Fauth%2Fui%2Faccount$/);
    await page.fill("#email", email);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(ui("account")), page.click("button[value=password]")]);
    assert.match(await page.textContent("p.account"), new RegExp(email.replace(/[.+]/g, "\\$&")));
    assert.equal(await page.locator("ul.sessions li").count(), 3, "signup, the other device, this browser");
    await axeCheck(page, "account");
    const me = () => fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${otherAccess}` } });
    const before = await me();
    assert.equal(before.status, 200, await before.text());
    // Sign out the other device's session.
    const row = page.locator("ul.sessions li", { hasText: "Other Device/1.0" });
    await row.getByRole("button", { name: /Sign out the session of Other Device/ }).click();
    assert.match(await page.textContent("[role=status]"), /That session is signed out/);
    assert.equal((await me()).status, 401, "revoked: the API refuses its token");
    assert.equal(await page.locator("ul.sessions li").count(), 2);
    // A wrong current password is shown inline (403), the right one changes it.
    await page.fill("#old_password", "wrong");
    await page.fill("#new_password", "the next password 77");
    const [bad] = await Promise.all([page.waitForResponse((r) => r.request().method() === "POST"), page.click("button[value=change_password]")]);
    assert.equal(bad.status(), 403);
    assert.match(await page.textContent("[role=alert]"), /password/i);
    await page.fill("#old_password", PASSWORD);
    await page.fill("#new_password", "the next password 77");
    await page.click("button[value=change_password]");
    assert.match(await page.textContent("[role=status]"), /Your password is changed/);
    assert.equal(await page.locator("ul.sessions li").count(), 1, "only this session is left");
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: "the next password 77" })).status, 200);
    // Email verification: asked for here, the link's page confirms it for the signed-in holder.
    await page.click("button[value=verify_email]");
    assert.match(await page.textContent("[role=status]"), /verification link is on its way/);
    const sent = await gw.waitForEvent((e) => e.type === "email_verification_requested" && e.data.email === email);
    await page.goto(ui("verify-email", `?token=${sent.data.token}`));
    assert.equal(await page.locator("p.hint").count(), 0, "no takeover note for the signed-in holder");
    const anonymous = await (await fetch(ui("verify-email", `?token=${sent.data.token}`))).text();
    assert.match(anonymous, /You are not signed in here/, "a browser without the session is told what verifying does");
    await page.click("button[type=submit]");
    assert.match(await page.textContent("h1"), /Email address verified/);
    await page.goto(ui("account"));
    assert.equal(await page.locator("button[value=verify_email]").count(), 0);
    assert.equal(await whoAmI(context), email, "verifying as the holder kept the session (no takeover)");
    // Sign out: the session ends and the cookies go.
    await page.click("button[value=logout]");
    await page.waitForURL(/\/auth\/ui\/login/);
    assert.deepEqual(await sessionCookies(context), { access: undefined, refresh: undefined });
    await gw.waitForEvent((e) => e.type === "logout");
    assert.deepEqual(problems, []);
    await context.close();
  });

  test("an expired access cookie is renewed with the refresh cookie, by a POST only", async () => {
    const email = randomEmail("ui-renew");
    await signUpByApi(email);
    const { context, page } = await fresh();
    await page.goto(withReturn("login"));
    await page.fill("#email", email);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(`${DONE()}**`), page.click("button[value=password]")]);
    const before = await sessionCookies(context);
    await context.clearCookies({ name: "__Host-portcullis_access" });
    // A GET (which any site can set off by a top-level navigation) never
    // renews: the refresh token stays, and the page offers to continue.
    await page.goto(ui("account"));
    assert.equal(page.url(), ui("account"));
    assert.deepEqual(await sessionCookies(context), { access: undefined, refresh: before.refresh }, "a GET rotated nothing");
    await Promise.all([page.waitForURL(ui("account")), page.click("button[value=renew]")]);
    assert.match(await page.textContent("p.account"), new RegExp(email.replace(/[.+]/g, "\\$&")));
    const afterwards = await sessionCookies(context);
    assert.ok(afterwards.access && afterwards.refresh !== before.refresh, "the POST rotated the cookies");
    await context.close();
  });
});

describe("the account page: two-step verification (plain HTTP, no script)", () => {
  /** A browser without script: a cookie jar, and our own origin on its posts. */
  function cookieBrowser(setCookies) {
    const jar = new Map();
    const keep = (res) => {
      for (const c of res.headers.getSetCookie()) {
        const [pair, ...attrs] = c.split(";");
        const [name, value] = [pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1)];
        if (attrs.some((a) => /^\s*max-age=0$/i.test(a)) || value === "") jar.delete(name);
        else jar.set(name, value);
      }
    };
    keep({ headers: { getSetCookie: () => setCookies } });
    const cookie = () => [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
    return {
      async get(url) {
        const res = await fetch(url, { headers: { cookie: cookie() }, redirect: "manual" });
        keep(res);
        return { status: res.status, html: await res.text() };
      },
      /** Posts the account form with `intent` and `fields`; the page as the browser would show it. */
      async account(intent, fields = {}) {
        const res = await fetch(ui("account"), {
          method: "POST",
          headers: { cookie: cookie(), "content-type": "application/x-www-form-urlencoded", origin: gw.url, "sec-fetch-site": "same-origin" },
          body: new URLSearchParams({ csrf: jar.get("__Host-portcullis_ui"), intent, ...fields }),
          redirect: "manual",
        });
        keep(res);
        return { status: res.status, html: await res.text() };
      },
    };
  }
  const unescape = (s) => s.replace(/&amp;/g, "&").replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">");
  const alert = (html) => unescape(html.match(/role="alert">([^<]*)</)?.[1] ?? "");
  const codesOn = (html) => [...html.matchAll(/<li><code>([^<]+)<\/code><\/li>/g)].map((m) => m[1]);

  test("the profile form saves the name and the emails' language; a bad tag is refused inline", async () => {
    const email = randomEmail("ui-profile");
    const signed = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD, name: "Ada" });
    assert.equal(signed.status, 201);
    const userId = (await json(signed)).user.id;
    const b = cookieBrowser(signed.headers.getSetCookie());
    assert.match((await b.get(ui("account"))).html, /<input id="name" name="name"[^>]* value="Ada">/);
    // What the page showed goes back with the form; only what differs is written.
    const saved = await b.account("profile", { name_was: "Ada", locale_was: "", name: "Ada <Lovelace>", locale: "de_at" });
    assert.equal(saved.status, 200, saved.html);
    assert.match(saved.html, /Your profile is saved\./);
    assert.match(saved.html, /value="Ada &lt;Lovelace&gt;"/);
    assert.match(saved.html, /<input id="locale" name="locale"[^>]* value="de-AT">/);
    const updated = await gw.waitForEvent((e) => e.type === "user_updated" && e.data.user_id === userId);
    assert.deepEqual(updated.data.fields, ["name", "locale"]);
    const bad = await b.account("profile", { name_was: "Ada <Lovelace>", locale_was: "de-AT", name: "Ada", locale: "not a tag!" });
    assert.equal(bad.status, 422, bad.html);
    assert.match(alert(bad.html), /locale/i);
    // Renamed elsewhere meanwhile: clearing the language from the page showing the old name keeps the new name.
    const access = signed.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_access=")).split(";")[0].split("=")[1];
    const renamed = await fetch(`${gw.url}/auth/me`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${access}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "Countess" }),
    });
    assert.equal(renamed.status, 200, await renamed.text());
    const cleared = await b.account("profile", { name_was: "Ada <Lovelace>", locale_was: "de-AT", name: "Ada <Lovelace>", locale: "" });
    assert.equal(cleared.status, 200, cleared.html);
    assert.match(cleared.html, /<input id="locale" name="locale"[^>]* value="">/);
    assert.match(cleared.html, /<input id="name" name="name"[^>]* value="Countess">/);
  });

  test("enrol, a wrong first code inline, confirm (backup codes once), a replayed code refused, new codes, off", async () => {
    const email = randomEmail("ui-totp");
    const signed = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
    assert.equal(signed.status, 201);
    const userId = (await json(signed)).user.id;
    const b = cookieBrowser(signed.headers.getSetCookie());
    const other = await post(`${gw.url}/auth/login`, { email, password: PASSWORD });
    const otherAccess = other.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_access=")).split(";")[0].split("=")[1];
    const otherMe = () => fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${otherAccess}` } });
    assert.equal((await otherMe()).status, 200);

    const page = await b.get(ui("account"));
    assert.equal(page.status, 200, page.html);
    assert.match(page.html, /Two-step verification is <strong>off<\/strong>/);
    // Enrol: the key and the otpauth:// URI, as text and as a link (no QR code, no script).
    const enrolled = await b.account("totp_enroll");
    assert.equal(enrolled.status, 200, enrolled.html);
    const secret = enrolled.html.match(/Key: <code>([A-Z2-7]+)<\/code>/)[1];
    const uri = unescape(enrolled.html.match(/<a href="(otpauth:\/\/totp\/[^"]+)">/)[1]);
    const app = OTPAuth.URI.parse(uri);
    assert.equal(app.secret.base32, secret);
    assert.match(enrolled.html, /<label for="totp_confirm_code">/);
    assert.doesNotMatch(enrolled.html, /<script|\son[a-z]+=/i);
    // A wrong first code: inline (401), the confirm form again, TOTP still off.
    const step = Math.floor(Date.now() / 30_000);
    // Wrong for every step the server could compare it with (one either side of now, and a boundary passing).
    const near = new Set([-2, -1, 0, 1, 2].map((d) => app.generate({ timestamp: (step + d) * 30_000 })));
    let wrong = 0;
    while (near.has(String(wrong).padStart(6, "0"))) wrong++;
    wrong = String(wrong).padStart(6, "0");
    const refused = await b.account("totp_confirm", { code: wrong });
    assert.equal(refused.status, 401, refused.html);
    assert.match(alert(refused.html), /code/i);
    assert.match(refused.html, /value="totp_confirm"/);
    assert.match(refused.html, /Two-step verification is <strong>off<\/strong>|value="totp_enroll"/);
    await gw.waitForEvent((e) => e.type === "mfa_failed" && e.data.user_id === userId && e.data.method === "totp");
    // The right one turns it on: ten backup codes shown once, the other session ends.
    const code = app.generate({ timestamp: step * 30_000 });
    const on = await b.account("totp_confirm", { code });
    assert.equal(on.status, 200, on.html);
    assert.match(on.html, /Two-step verification is <strong>on<\/strong>/);
    const first = codesOn(on.html);
    assert.equal(first.length, 10, on.html);
    await gw.waitForEvent((e) => e.type === "mfa_enabled" && e.data.user_id === userId && e.data.method === "totp");
    assert.equal((await otherMe()).status, 401, "the other session ended with the change");
    const again = await b.get(ui("account"));
    assert.equal(again.status, 200, "this session stays");
    assert.deepEqual(codesOn(again.html), [], "the codes are shown once");
    assert.match(again.html, /Backup codes left: 10\./);
    // The code that turned it on is spent: new backup codes for it are refused inline.
    const replay = await b.account("backup_codes", { code });
    assert.equal(replay.status, 401, replay.html);
    assert.match(alert(replay.html), /code/i);
    // With a backup code: ten new ones, the old ones dead.
    const renewed = await b.account("backup_codes", { code: first[0] });
    assert.equal(renewed.status, 200, renewed.html);
    const second = codesOn(renewed.html);
    assert.equal(second.length, 10);
    assert.ok(second.every((c) => !first.includes(c)));
    // Off: a code is needed (inline 422 without), a dead backup code is refused, a live one works.
    const empty = await b.account("totp_disable", { code: "" });
    assert.equal(empty.status, 422, empty.html);
    assert.equal((await b.account("totp_disable", { code: first[1] })).status, 401);
    const off = await b.account("totp_disable", { code: second[0] });
    assert.equal(off.status, 200, off.html);
    assert.match(off.html, /Two-step verification is <strong>off<\/strong>/);
    await gw.waitForEvent((e) => e.type === "mfa_disabled" && e.data.user_id === userId && e.data.method === "totp");
    // A form posted from another site is refused before anything happens.
    const cross = await fetch(ui("account"), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: "http://evil.test", "sec-fetch-site": "cross-site" },
      body: new URLSearchParams({ intent: "totp_enroll" }),
    });
    assert.equal(cross.status, 403);
  });
});

describe("CSRF", () => {
  test("a cross-site form post cannot sign a victim in to the attacker's account (login CSRF), nor sign them out", async () => {
    const attacker = randomEmail("ui-attacker");
    await signUpByApi(attacker);
    // The attacker's own CSRF token, fetched from the gateway: valid, but not the victim's.
    const own = await fetch(ui("login"));
    const attackerToken = own.headers.getSetCookie()[0].split(";")[0].split("=")[1];
    const { context, page } = await fresh();
    // The victim has visited the pages before (has a CSRF cookie of their own).
    await page.goto(ui("login"));
    for (const token of [attackerToken, ""]) {
      const target = `${evil.url}/login?email=${encodeURIComponent(attacker)}&csrf=${encodeURIComponent(token)}&gw=${encodeURIComponent(gw.url)}`;
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.url() === ui("login") && r.request().method() === "POST"),
        page.goto(target),
      ]);
      assert.equal(res.status(), 403, `token ${token ? "of the attacker" : "missing"}`);
      await page.waitForLoadState();
      assert.match(await page.textContent("[role=alert]"), /posted from another site/);
      assert.equal(await whoAmI(context), null, "the victim is not signed in to the attacker's account");
    }
    assert.ok(!gw.events().some((e) => e.type === "login" && e.data.email === attacker), "no sign-in happened");
    // Signed in for real, a cross-site post cannot sign them out either.
    const victim = randomEmail("ui-victim");
    await signUpByApi(victim);
    await page.goto(ui("login"));
    await page.fill("#email", victim);
    await page.fill("#password", PASSWORD);
    await Promise.all([page.waitForURL(`${DONE()}**`), page.click("button[value=password]")]);
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url() === ui("account") && r.request().method() === "POST"),
      page.goto(`${evil.url}/logout?gw=${encodeURIComponent(gw.url)}`),
    ]);
    assert.equal(res.status(), 403);
    assert.equal(await whoAmI(context), victim, "still signed in");
    await context.close();
  });

  test("a same-origin post without the page's token is refused too", async () => {
    const email = randomEmail("ui-notoken");
    await signUpByApi(email);
    const res = await fetch(ui("login"), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: gw.url, "sec-fetch-site": "same-origin" },
      body: new URLSearchParams({ email, password: PASSWORD, intent: "password" }),
      redirect: "manual",
    });
    assert.equal(res.status, 403);
    assert.match(await res.text(), /security token is missing or stale/);
    assert.equal(res.headers.getSetCookie().filter((c) => c.startsWith("__Host-portcullis_access")).length, 0);
  });
});

/** The attacker's pages: a form posted to the gateway as soon as the page loads (by the attacker's own script). */
function evilPage(url) {
  const gwUrl = url.searchParams.get("gw");
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  if (url.pathname === "/login") {
    return `<!doctype html><title>win a prize</title>
<form id="f" method="post" action="${esc(gwUrl)}/auth/ui/login">
<input name="email" value="${esc(url.searchParams.get("email"))}"><input name="password" value="${esc(PASSWORD)}">
<input name="intent" value="password"><input name="csrf" value="${esc(url.searchParams.get("csrf"))}"></form>
<script>document.getElementById("f").submit()</script>`;
  }
  if (url.pathname === "/logout") {
    return `<!doctype html><title>win a prize</title>
<form id="f" method="post" action="${esc(gwUrl)}/auth/ui/account"><input name="intent" value="logout"></form>
<script>document.getElementById("f").submit()</script>`;
  }
  return "<!doctype html><title>evil</title>";
}
