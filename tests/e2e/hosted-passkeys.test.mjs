// Passkeys on the hosted pages, end to end in Chromium (playwright-core) with
// its virtual authenticator (the DevTools protocol's WebAuthn domain, as in
// passkeys.test.mjs): add a passkey on the account page, sign out, sign in
// with it on the login page (discoverable: no email typed), remove it; axe-core
// on the pages with their passkey parts shown; the CSP (one static script,
// allowed by its hash and exact URL, no inline script) as browsers enforce it;
// and the pages without JavaScript.
//
// WebAuthn needs a secure context and an RP ID that is a domain: the browser
// talks to the gateway as http://localhost:P through a small proxy here that
// keeps the Host header (so the gateway sees its own origin as that one), and
// RP_ID=localhost, RP_ORIGINS=http://localhost:P. The proxy's port is chosen
// first, then the gateway starts with it in RP_ORIGINS. One gateway (cookie
// mode), one browser.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { chromium } from "playwright-core";
import * as OTPAuth from "otpauth";
import { startGateway, post, json, randomEmail, ROOT } from "./harness.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const PASSWORD = "correct horse battery staple 9";
const AXE = fs.readFileSync(path.join(ROOT, "node_modules", "axe-core", "axe.min.js"), "utf8");

let gw;
let proxy;
let browser;
let PAGE; // http://localhost:P, the gateway as the browser sees it

before(async () => {
  // Every interface: Chromium may reach "localhost" over ::1 or 127.0.0.1.
  proxy = http.createServer((req, res) => {
    const target = new URL(gw.url);
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode, r.rawHeaders);
        r.pipe(res);
      },
    );
    up.on("error", (e) => {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(String(e));
    });
    req.pipe(up);
  });
  await new Promise((resolve) => proxy.listen(0, resolve));
  PAGE = `http://localhost:${proxy.address().port}`;
  gw = await startGateway({
    origin: true,
    vars: { COOKIE_MODE: "true", RP_ID: "localhost", RP_ORIGINS: PAGE, RP_NAME: "Portcullis pages", UI_NAME: "Acme" },
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  await gw?.stop();
  proxy?.close();
});

const ui = (p) => `${PAGE}/auth/ui/${p}`;
const ACCOUNT = () => ui("account");

/**
 * A fresh context and page with a virtual authenticator (resident keys; user
 * verification unless `verifies` is false); CSP violations and page errors collected.
 */
async function fresh({ javaScriptEnabled = true, authenticator = true, verifies = true } = {}) {
  const context = await browser.newContext({ javaScriptEnabled });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  if (authenticator) {
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable");
    await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: verifies,
        isUserVerified: verifies,
        automaticPresenceSimulation: true,
      },
    });
  }
  return { context, page, problems };
}

/** Who the browser's access cookie says it is (asked of the API at the same origin: the token's issuer), or null. */
async function whoAmI(context) {
  const access = (await context.cookies(PAGE)).find((c) => c.name === "__Host-portcullis_access")?.value;
  if (!access) return null;
  const res = await fetch(`${PAGE}/auth/me`, { headers: { authorization: `Bearer ${access}` } });
  return res.status === 200 ? (await json(res)).email : null;
}

/** axe-core in the page (through the devtools protocol, which the page's CSP does not govern). */
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

/** Clicks `button` (which posts the account form, by script or not); the answer's status, once its page has loaded. */
async function submitAccount(page, button) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url() === ACCOUNT()),
    button.click(),
  ]);
  await page.waitForLoadState();
  return res.status();
}

/** The value of cookie `name` among `set-cookie` headers. */
const setCookie = (res, name) => res.headers.getSetCookie().find((c) => c.startsWith(`${name}=`)).split(";")[0].slice(name.length + 1);

/** Signs in on the login page with the password; lands on the account page. */
async function passwordSignIn(page, email) {
  await page.goto(ui("login"));
  await page.fill("#email", email);
  await page.fill("#password", PASSWORD);
  await Promise.all([page.waitForURL(ACCOUNT()), page.click("button[value=password]")]);
}

test("add a passkey on the account page, sign out, sign in with it (no email), remove it", async () => {
  const email = randomEmail("ui-passkey");
  await signUpByApi(email);
  const { context, page, problems } = await fresh();
  await passwordSignIn(page, email);

  // The passkeys section: none yet; the add form's button shown by the script.
  assert.match(await page.textContent("main"), /No passkeys yet/);
  const add = page.getByRole("button", { name: "Add a passkey" });
  await add.waitFor({ state: "visible" });
  assert.equal(await page.locator("[data-passkey-hint]").isVisible(), false, "the no-script hint is gone");
  await axeCheck(page, "account with passkeys shown");

  await page.fill("#passkey_new_name", "Virtual <key>");
  assert.equal(await submitAccount(page, add), 200);
  assert.match(await page.textContent("[role=status]"), /Passkey “Virtual <key>” added/);
  const added = await gw.waitForEvent((e) => e.type === "passkey_added");
  const listed = page.locator("ul.sessions li", { hasText: "Virtual <key>" });
  assert.equal(await listed.count(), 1);
  assert.match(await listed.textContent(), /last used never/);
  await axeCheck(page, "account with a passkey listed");

  // Rename it (a plain form).
  await page.fill("#passkey_name_0", "Laptop");
  assert.equal(await submitAccount(page, page.getByRole("button", { name: "Rename passkey Virtual <key>" })), 200);
  assert.match(await page.textContent("[role=status]"), /Passkey renamed “Laptop”/);

  // Sign out, then in with the passkey: no email typed (a discoverable credential).
  await page.click("button[value=logout]");
  await page.waitForURL(/\/auth\/ui\/login/);
  assert.equal(await whoAmI(context), null);
  const button = page.getByRole("button", { name: "Sign in with a passkey" });
  await button.waitFor({ state: "visible" });
  await axeCheck(page, "login with the passkey button");
  assert.equal(await page.inputValue("#email"), "");
  await Promise.all([page.waitForURL(ACCOUNT()), button.click()]);
  assert.equal(await whoAmI(context), email, "signed in with the passkey, cookies set");
  const login = await gw.waitForEvent((e) => e.type === "login" && e.data.email === email && e.data.provider === "passkey");
  assert.ok(login);
  assert.match(await page.locator("ul.sessions li", { hasText: "Laptop" }).textContent(), /last used \d{4}-/);

  // Remove it: the other sessions end (the password one was signed out already; make one).
  const other = await post(`${gw.url}/auth/login`, { email, password: PASSWORD });
  const otherAccess = other.headers.getSetCookie().find((c) => c.startsWith("__Host-portcullis_access=")).split(";")[0].split("=")[1];
  await page.reload();
  assert.equal(await submitAccount(page, page.getByRole("button", { name: "Remove passkey Laptop" })), 200);
  assert.match(await page.textContent("[role=status]"), /The passkey is removed; your other sessions are signed out/);
  assert.match(await page.textContent("main"), /No passkeys yet/);
  await gw.waitForEvent((e) => e.type === "passkey_removed" && e.data.passkey_id === added.data.passkey_id);
  const otherMe = await fetch(`${gw.url}/auth/me`, { headers: { authorization: `Bearer ${otherAccess}` } });
  assert.equal(otherMe.status, 401, "the other session ended");
  assert.equal(await whoAmI(context), email, "this one stays");

  // Gone: signing in with it is refused on the page, inline.
  await page.click("button[value=logout]");
  await page.waitForURL(/\/auth\/ui\/login/);
  const [refused] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/auth/ui/login")),
    page.getByRole("button", { name: "Sign in with a passkey" }).click(),
  ]);
  assert.equal(refused.status(), 401);
  assert.match(await page.textContent("[role=alert]"), /no account has this passkey/);
  assert.equal(await whoAmI(context), null);
  assert.deepEqual(problems, [], "no CSP violation, no page error");
  await context.close();
});

test("a passkey without user verification on an account with TOTP on gets the second step, as a password does", async () => {
  const email = randomEmail("ui-passkey-mfa");
  const signed = await post(`${gw.url}/auth/signup`, { email, password: PASSWORD });
  assert.equal(signed.status, 201);
  const bearer = { authorization: `Bearer ${setCookie(signed, "__Host-portcullis_access")}` };
  const enrolled = await json(await post(`${gw.url}/auth/mfa/totp/enroll`, {}, bearer));
  const app = OTPAuth.URI.parse(enrolled.otpauth_uri);
  const confirmed = await post(`${gw.url}/auth/mfa/totp/confirm`, { code: app.generate() }, bearer);
  const { backup_codes: codes } = await json(confirmed);
  assert.equal(confirmed.status, 200, JSON.stringify(codes));

  const { context, page, problems } = await fresh({ verifies: false });
  // Password, then the second step with a backup code, then add a passkey (a fresh sign-in).
  await page.goto(ui("login"));
  await page.fill("#email", email);
  await page.fill("#password", PASSWORD);
  await page.click("button[value=password]");
  await page.waitForSelector("#backup_code");
  await page.fill("#backup_code", codes[0]);
  await Promise.all([page.waitForURL(ACCOUNT()), page.click("button[value=backup_code]")]);
  const add = page.getByRole("button", { name: "Add a passkey" });
  await add.waitFor({ state: "visible" });
  assert.equal(await submitAccount(page, add), 200);
  assert.match(await page.textContent("[role=status]"), /Passkey “Passkey” added/);
  await page.click("button[value=logout]");
  await page.waitForURL(/\/auth\/ui\/login/);

  // The passkey alone (no user verification) is one factor: the page asks for the second.
  // (Without user verification the authenticator kept no discoverable credential:
  // the email typed above the button names the account, its passkeys listed.)
  const button = page.getByRole("button", { name: "Sign in with a passkey" });
  await button.waitFor({ state: "visible" });
  await page.fill("#email", email);
  const [first] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/auth/ui/login")),
    button.click(),
  ]);
  assert.equal(first.status(), 200);
  await page.waitForSelector("#backup_code");
  assert.match(await page.textContent("h1"), /Two-step verification/);
  assert.equal(await whoAmI(context), null, "no session before the second step");
  await axeCheck(page, "the second step after a passkey");
  await page.fill("#backup_code", codes[1]);
  await Promise.all([page.waitForURL(ACCOUNT()), page.click("button[value=backup_code]")]);
  assert.equal(await whoAmI(context), email);
  assert.deepEqual(problems, []);
  await context.close();
});

test("the CSP admits the one script by its hash and exact URL, and nothing else, in Chromium too", async () => {
  const res = await fetch(ui("login"));
  const html = await res.text();
  assert.equal(res.status, 200, html);
  const csp = res.headers.get("content-security-policy");
  const script = await fetch(`${gw.url}/auth/ui/passkey.js`);
  assert.equal(script.status, 200);
  assert.match(script.headers.get("content-type"), /^text\/javascript/);
  assert.equal(script.headers.get("cache-control"), "public, max-age=31536000, immutable");
  assert.equal(script.headers.get("x-content-type-options"), "nosniff");
  const body = Buffer.from(await script.arrayBuffer());
  const hash = crypto.createHash("sha256").update(body).digest("base64");
  assert.match(
    csp,
    /^default-src 'none'; style-src 'sha256-[A-Za-z0-9+/]+=*'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; /,
  );
  assert.ok(
    csp.endsWith(`; script-src 'sha256-${hash}' ${PAGE}/auth/ui/passkey.js; connect-src ${PAGE}/auth/passkeys/login/options`),
    csp,
  );
  assert.doesNotMatch(csp, /unsafe|strict-dynamic|\*/);
  // One script element, by URL, pinned to the same hash; no inline script, no handler attribute.
  const tags = [...html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/g)];
  assert.equal(tags.length, 1, html);
  assert.match(tags[0][0], new RegExp(`^<script src="/auth/ui/passkey\\.js\\?v=[0-9a-f]{16}" integrity="sha256-${hash.replace(/[+/]/g, "\\$&")}" defer>`));
  assert.equal(tags[0][1], "", "nothing inline");
  assert.doesNotMatch(html, /\son[a-z]+=|\sstyle=|javascript:/i);
  // Pages without passkey parts run no script at all; nor does the login page on an
  // origin not in RP_ORIGINS (the gateway's 127.0.0.1 address), where WebAuthn would be refused.
  const elsewhere = await fetch(`${gw.url}/auth/ui/login`);
  assert.doesNotMatch(elsewhere.headers.get("content-security-policy"), /script-src|connect-src/);
  assert.doesNotMatch(await elsewhere.text(), /<script|passkey/i);
  for (const p of ["signup", "forgot", "otp"]) {
    const other = await fetch(ui(p));
    assert.doesNotMatch(other.headers.get("content-security-policy"), /script-src|connect-src/, p);
    assert.doesNotMatch(await other.text(), /<script/, p);
  }

  // In the browser: the script runs (its button shows), an injected inline
  // script and a script from another path of the same origin do not.
  const { context, page, problems } = await fresh({ authenticator: false });
  await page.goto(ui("login"));
  await page.getByRole("button", { name: "Sign in with a passkey" }).waitFor({ state: "visible" });
  assert.deepEqual(problems, []);
  const ran = await page.evaluate(async () => {
    const inline = document.createElement("script");
    inline.textContent = "window.inlineRan = true";
    document.body.append(inline);
    const other = document.createElement("script");
    other.src = "/auth/ui/login";
    const outcome = new Promise((resolve) => {
      other.onload = () => resolve("loaded");
      other.onerror = () => resolve("blocked");
    });
    document.body.append(other);
    return { inline: window.inlineRan === true, other: await outcome };
  });
  assert.deepEqual(ran, { inline: false, other: "blocked" });
  assert.ok(problems.some((p) => /Content Security Policy/.test(p)), "the browser reports the refusals");
  await context.close();
});

test("without JavaScript the passkey parts explain themselves and the password sign-in still works", async () => {
  const email = randomEmail("ui-noscript");
  await signUpByApi(email);
  const { context, page, problems } = await fresh({ javaScriptEnabled: false, authenticator: false });
  await page.goto(ui("login"));
  assert.equal(await page.getByRole("button", { name: "Sign in with a passkey" }).count(), 0, "no button to press");
  assert.match(await page.locator("[data-passkey-hint]").textContent(), /Passkeys need JavaScript/);
  assert.ok(await page.locator("[data-passkey-hint]").isVisible());
  await passwordSignIn(page, email);
  assert.equal(await whoAmI(context), email);
  assert.match(await page.locator("[data-passkey-hint]").textContent(), /Passkeys need JavaScript/);
  assert.equal(await page.getByRole("button", { name: "Add a passkey" }).count(), 0);
  assert.deepEqual(problems, []);
  await context.close();
});
