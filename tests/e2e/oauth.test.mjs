// Sign in with OAuth / OIDC end to end, against a real OpenID provider
// (oidc-provider), a hand-made OIDC server that forges ID tokens, and a
// server speaking GitHub's API: account creation, linking by verified email
// (taking an unverified account over), the unverified-email refusal, state replay and binding, PKCE, nonce,
// audience and signature checks, open redirects, provider outages, the
// one-time exchange bound to the app's PKCE challenge (a planted code signs
// nobody in), linking and unlinking by signed-in users, banned users.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { startGateway, post, json } from "./harness.mjs";
import { signup, login, makeAdmin, withEvent, assertNoEvent, assertProblem, authed, PASSWORD } from "./lib/accounts.mjs";
import { listenOidcProvider, startFakeOidc, startFakeGithub, browse } from "./lib/oauth-servers.mjs";

const APP = "http://app.test/oauth/done";
const CLIENT_ID = "portcullis";
const CLIENT_SECRET = "e2e-client-secret-0123456789";
const GH_ID = "gh-client";
const GH_SECRET = "gh-secret-0123456789";
const BINDING = "__Host-portcullis_oauth";

// The app's PKCE pair: token mode starts every sign-in with the challenge
// and swaps the code with the verifier.
const APP_VERIFIER = crypto.randomBytes(32).toString("base64url");
const challengeOf = (verifier) => crypto.createHash("sha256").update(verifier).digest("base64url");
const APP_CHALLENGE = challengeOf(APP_VERIFIER);

const rand = (p) => `${p}-${crypto.randomBytes(5).toString("hex")}`;
const mail = (p) => `${rand(p)}@example.com`;

describe("OAuth / OIDC sign-in", () => {
  let gw, op, fake, gh;

  before(async () => {
    op = await listenOidcProvider();
    fake = await startFakeOidc({ clientId: CLIENT_ID });
    gh = await startFakeGithub({ clientId: GH_ID, clientSecret: GH_SECRET });
    gw = await startGateway({
      vars: {
        OAUTH_PROVIDERS: JSON.stringify([
          { id: "acme", issuer: op.issuer, client_id: CLIENT_ID },
          { id: "rogue", issuer: fake.issuer, client_id: CLIENT_ID },
          // Port 1: nothing listens there (privileged, unassigned on loopback).
          { id: "down", issuer: "http://127.0.0.1:1", client_id: "x" },
          { id: "github", preset: "github", client_id: GH_ID, base_url: gh.base, api_url: gh.base },
        ]),
        OAUTH_ACME_CLIENT_SECRET: CLIENT_SECRET,
        OAUTH_GITHUB_CLIENT_SECRET: GH_SECRET,
        REDIRECT_ALLOWLIST: `${APP}, http://app.test/other/`,
      },
    });
    op.configure({
      redirectUri: `${gw.url}/auth/oauth/acme/callback`,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    });
  });

  after(async () => {
    await gw?.stop();
    await op?.close();
    await fake?.close();
    await gh?.close();
  });

  /** GET /authorize (with the app's challenge): returns the provider URL and the binding cookie. */
  async function authorize(provider, redirectTo = APP, challenge = APP_CHALLENGE) {
    const q = new URLSearchParams({ code_challenge: challenge });
    if (redirectTo !== undefined) q.set("redirect_to", redirectTo);
    const res = await fetch(`${gw.url}/auth/oauth/${provider}/authorize?${q}`, { redirect: "manual" });
    const text = await res.text();
    assert.equal(res.status, 302, text);
    const binding = res.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`));
    assert.ok(binding, "the binding cookie is set");
    assert.match(binding, /HttpOnly; Secure; SameSite=Lax/);
    return { url: res.headers.get("location"), binding: binding.split(";")[0].slice(BINDING.length + 1) };
  }

  /** GET /callback with the browser's binding cookie. */
  async function callback(url, binding) {
    const res = await fetch(url, { redirect: "manual", headers: binding ? { cookie: `${BINDING}=${binding}` } : {} });
    const location = res.headers.get("location");
    return { res, location: location ? new URL(location) : null };
  }

  const callbackPrefix = (provider) => `${gw.url}/auth/oauth/${provider}/callback`;

  /** A full sign-in at the real provider as `account`; returns the app's redirect. */
  async function acmeSignIn(account, redirectTo = APP, challenge = APP_CHALLENGE) {
    const a = await authorize("acme", redirectTo, challenge);
    op.nextLogin = account;
    const cbUrl = await browse(a.url, callbackPrefix("acme"));
    const cb = await callback(cbUrl, a.binding);
    assert.equal(cb.res.status, 302, await cb.res.text());
    return { ...cb, cbUrl, authorizeUrl: a.url, binding: a.binding };
  }

  const exchange = (code, verifier = APP_VERIFIER) => post(`${gw.url}/auth/oauth/exchange`, { code, code_verifier: verifier });

  async function exchangeOk(location) {
    assert.equal(location.searchParams.get("error"), null, `redirected with error: ${location}`);
    const code = location.searchParams.get("code");
    assert.match(code ?? "", /^[A-Za-z0-9_-]{43}$/);
    const res = await exchange(code);
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  }

  function account(claims) {
    const id = rand("acct");
    op.accounts.set(id, claims);
    return id;
  }

  const failedWith = (reason) => (e) => e.type === "login_failed" && e.data.reason === reason;

  test("a first sign-in creates a verified account, emits user_created and login with the provider, and the code is single-use", async () => {
    const email = mail("new");
    const id = account({ email, email_verified: true, name: "Ada Lovelace" });
    const { location, authorizeUrl } = await acmeSignIn(id);
    const q = new URL(authorizeUrl).searchParams;
    assert.equal(q.get("code_challenge_method"), "S256");
    assert.match(q.get("code_challenge"), /^[A-Za-z0-9_-]{43}$/);
    assert.match(q.get("nonce"), /^[A-Za-z0-9_-]{43}$/);
    assert.match(q.get("state"), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(`${location.origin}${location.pathname}`, APP);
    assert.deepEqual([...location.searchParams.keys()], ["code"], "nothing but the one-time code in the URL");
    const code = location.searchParams.get("code");
    const body = await exchangeOk(location);
    assert.equal(body.token_type, "Bearer");
    assert.equal(body.user.email, email);
    assert.equal(body.user.email_verified, true);
    assert.equal(body.user.name, "Ada Lovelace");
    const created = await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email);
    assert.equal(created.data.provider, "acme");
    assert.equal(created.data.user_id, body.user.id);
    const login = await gw.waitForEvent((e) => e.type === "login" && e.data.email === email);
    assert.equal(login.data.provider, "acme");
    await assertProblem(await exchange(code), 400, "invalid_exchange_code");
    const me = await json(await authed(`${gw.url}/auth/me`, body.access_token));
    assert.equal(me.id, body.user.id);
    assert.equal(me.providers.length, 1);
    assert.equal(me.providers[0].provider, "acme");
    assert.equal(me.providers[0].email, email);
    assert.equal(me.providers[0].email_verified, true);
    assert.match(me.providers[0].linked_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    // The same identity signs the same user in again, without a new account;
    // a `code` planted in redirect_to is dropped, the app's own parameters kept.
    const back = (await acmeSignIn(id, `${APP}?code=planted&keep=1`)).location;
    assert.deepEqual(back.searchParams.getAll("code").length, 1);
    assert.notEqual(back.searchParams.get("code"), "planted");
    assert.equal(back.searchParams.get("keep"), "1");
    const again = await exchangeOk(back);
    assert.equal(again.user.id, body.user.id);
  });

  test("a first sign-in keeps the provider's locale claim as the account's language", async () => {
    const email = mail("locale");
    const body = await exchangeOk((await acmeSignIn(account({ email, email_verified: true, locale: "fr_CA" }))).location);
    assert.equal(body.user.email, email);
    const { event } = await withEvent(gw, (e) => e.type === "magic_link_requested" && e.data.email === email, () =>
      post(`${gw.url}/auth/magic-link`, { email }),
    );
    assert.equal(event.data.locale, "fr-CA", "the stored language, not asked for in the request");
  });

  test("a provider-verified email matching an unverified account links to it (oauth_link), signs it in and takes it over", async () => {
    const email = mail("link");
    const existing = await signup(gw, email);
    assert.equal(existing.user.email_verified, false);
    const id = account({ email: email.toUpperCase(), email_verified: true });
    const body = await exchangeOk((await acmeSignIn(id)).location);
    assert.equal(body.user.id, existing.user.id);
    assert.equal(body.user.email_verified, true, "the provider verified the address");
    const link = await gw.waitForEvent((e) => e.type === "oauth_link" && e.data.email === email);
    assert.deepEqual(link.data, { user_id: existing.user.id, email, provider: "acme" });
    const login = await gw.waitForEvent((e) => e.type === "login" && e.data.email === email && e.data.provider === "acme");
    assert.equal(login.data.user_id, existing.user.id);
    // The first proof of the address: whoever signed up with it is out
    // (takeover.test.mjs covers every proof path).
    await assertProblem(await post(`${gw.url}/auth/login`, { email, password: PASSWORD }), 401, "invalid_credentials");
    await assertProblem(await authed(`${gw.url}/auth/me`, existing.access_token), 401, "session_revoked");
    await assertProblem(await post(`${gw.url}/auth/refresh`, { refresh_token: existing.refresh_token }), 401, "invalid_refresh_token");
    const updated = await gw.waitForEvent((e) => e.type === "user_updated" && e.data.user_id === existing.user.id);
    assert.deepEqual(updated.data.fields, ["password"]);
    await gw.waitForEvent((e) => e.type === "session_revoked" && e.data.user_id === existing.user.id && e.data.revoke_all === true);
    await gw.waitForEvent((e) => e.type === "email_verified" && e.data.user_id === existing.user.id);
  });

  /** Signs `email` up and verifies it with the holder's own verification link, followed signed in. */
  async function signupVerified(email) {
    const s = await signup(gw, email);
    const { event } = await withEvent(gw, (e) => e.type === "email_verification_requested" && e.data.email === email, () =>
      authed(`${gw.url}/auth/email/verify/request`, s.access_token, { method: "POST" }),
    );
    const verified = await authed(`${gw.url}/auth/email/verify`, s.access_token, { method: "POST", body: { token: event.data.token } });
    assert.equal(verified.status, 200);
    return s;
  }

  test("a provider-verified email matching a verified account links to it and takes nothing away", async () => {
    const email = mail("link-verified");
    const existing = await signupVerified(email);
    const body = await exchangeOk((await acmeSignIn(account({ email, email_verified: true }))).location);
    assert.equal(body.user.id, existing.user.id);
    assert.equal((await post(`${gw.url}/auth/login`, { email, password: PASSWORD })).status, 200);
    assert.equal((await authed(`${gw.url}/auth/me`, existing.access_token)).status, 200);
  });

  test("an unverified email matching an account is refused and never linked", async () => {
    const email = mail("unverified");
    const existing = await signup(gw, email);
    const id = account({ email, email_verified: false });
    const { result, event } = await withEvent(gw, failedWith("unverified_email"), () => acmeSignIn(id));
    assert.equal(result.location.searchParams.get("error"), "email_not_verified");
    assert.equal(result.location.searchParams.get("code"), null);
    assert.equal(event.data.email, email);
    const me = await json(await authed(`${gw.url}/auth/me`, existing.access_token));
    assert.deepEqual(me.providers, []);
    await assertNoEvent(gw, (e) => e.type === "oauth_link" && e.data.email === email, () =>
      withEvent(gw, failedWith("access_denied"), async () => {
        const a = await authorize("acme");
        op.nextLogin = "deny";
        return callback(await browse(a.url, callbackPrefix("acme")), a.binding);
      }),
    );
  });

  test("the provider's access_denied returns to the app with error and emits login_failed", async () => {
    const a = await authorize("acme");
    op.nextLogin = "deny";
    const cbUrl = await browse(a.url, callbackPrefix("acme"));
    assert.equal(new URL(cbUrl).searchParams.get("error"), "access_denied");
    const { result } = await withEvent(gw, failedWith("access_denied"), () => callback(cbUrl, a.binding));
    assert.equal(result.res.status, 302);
    assert.equal(result.location.searchParams.get("error"), "access_denied");
  });

  test("a state is single-use, also under concurrent callbacks, and bound to the browser that started it", async () => {
    const email = mail("replay");
    const id = account({ email, email_verified: true });
    const a = await authorize("acme");
    const other = await authorize("acme"); // another browser's sign-in, with its own binding cookie
    op.nextLogin = id;
    const cbUrl = await browse(a.url, callbackPrefix("acme"));
    // Callbacks from other browsers (no binding cookie, another sign-in's, a made-up one) are
    // refused with the problem, touch no cookie, and leave the state to the browser that started it.
    for (const binding of [undefined, other.binding, "A".repeat(43)]) {
      const { result } = await withEvent(gw, failedWith("state_binding_mismatch"), () => callback(cbUrl, binding));
      assert.equal(result.location, null, `binding ${binding}: redirected`);
      await assertProblem(result.res, 400, "invalid_state");
      assert.deepEqual(result.res.headers.getSetCookie(), [], `binding ${binding}: a cookie was set`);
    }
    // The real browser's callback, racing copies of itself and strangers: exactly one sign-in.
    const results = await Promise.all([
      ...Array.from({ length: 5 }, () => callback(cbUrl, a.binding)),
      ...Array.from({ length: 3 }, () => callback(cbUrl, other.binding)),
    ]);
    const statuses = results.map((r) => r.res.status).sort();
    assert.deepEqual(statuses, [302, 400, 400, 400, 400, 400, 400, 400]);
    for (const r of results.filter((r) => r.res.status === 400)) await assertProblem(r.res, 400, "invalid_state");
    const signedIn = await exchangeOk(results.find((r) => r.res.status === 302).location);
    assert.equal(signedIn.user.email, email);
    const sessions = await json(await authed(`${gw.url}/auth/sessions`, signedIn.access_token));
    assert.equal(sessions.sessions.length, 1, "one sign-in, one session");
    await gw.waitForEvent(failedWith("invalid_state"));
    // Spent now, for every browser.
    await assertProblem((await callback(cbUrl, a.binding)).res, 400, "invalid_state");
    // Unknown state: a problem, no redirect anywhere.
    const forged = await callback(`${callbackPrefix("acme")}?code=x&state=${"A".repeat(43)}`, a.binding);
    await assertProblem(forged.res, 400, "invalid_state");
    await assertProblem((await callback(`${callbackPrefix("acme")}?code=x`)).res, 400, "invalid_state");
  });

  test("PKCE: a code replayed under another sign-in's state fails at the provider (code_rejected)", async () => {
    const id = account({ email: mail("pkce"), email_verified: true });
    const first = await authorize("acme");
    op.nextLogin = id;
    const cbFirst = new URL(await browse(first.url, callbackPrefix("acme")));
    const second = await authorize("acme");
    const stolen = new URL(callbackPrefix("acme"));
    stolen.searchParams.set("code", cbFirst.searchParams.get("code"));
    stolen.searchParams.set("state", new URL(second.url).searchParams.get("state"));
    stolen.searchParams.set("iss", op.issuer);
    const { result } = await withEvent(gw, failedWith("code_rejected"), () => callback(stolen.toString(), second.binding));
    assert.equal(result.location.searchParams.get("error"), "code_rejected");
    // The hand-made provider sees the S256 verifier of the sign-in's own challenge.
    fake.forge = ({ nonce }) => fake.sign({ nonce, claims: { sub: rand("pk"), email: mail("pk") } });
    const a = await authorize("rogue");
    const { code, state } = fake.approve(a.url);
    const ok = await callback(`${callbackPrefix("rogue")}?code=${code}&state=${state}`, a.binding);
    await exchangeOk(ok.location);
    const sent = fake.tokenRequests.at(-1);
    assert.equal(crypto.createHash("sha256").update(sent.code_verifier).digest("base64url"), new URL(a.url).searchParams.get("code_challenge"));
    assert.equal(sent.client_id, CLIENT_ID);
  });

  describe("ID tokens from the hand-made provider", () => {
    /** One sign-in at the fake provider with `forge`; returns the app redirect. */
    async function rogueSignIn(forge) {
      fake.forge = forge;
      const a = await authorize("rogue");
      const { code, state } = fake.approve(a.url);
      const cb = await callback(`${callbackPrefix("rogue")}?code=${code}&state=${state}`, a.binding);
      assert.equal(cb.res.status, 302, await cb.res.text());
      return cb.location;
    }

    test("good tokens signed with RS256, ES256 and EdDSA sign in", async () => {
      for (const alg of ["RS256", "ES256", "EdDSA"]) {
        const email = mail(`alg-${alg.toLowerCase()}`);
        const loc = await rogueSignIn(({ nonce }) => fake.sign({ alg, nonce, claims: { sub: rand("s"), email } }));
        const body = await exchangeOk(loc);
        assert.equal(body.user.email, email, alg);
      }
    });

    const now = () => Math.floor(Date.now() / 1000);
    const bad = [
      ["a wrong audience", "id_token_wrong_audience", ({ nonce }) => fake.sign({ nonce, claims: { aud: "someone-else" } })],
      ["several audiences without azp", "id_token_wrong_audience", ({ nonce }) => fake.sign({ nonce, claims: { aud: [CLIENT_ID, "other"] } })],
      ["a signature by an unpublished key under a published kid", "id_token_bad_signature", ({ nonce }) =>
        fake.sign({ nonce, key: fake.otherKey })],
      ["another sign-in's nonce", "id_token_nonce_mismatch", () => fake.sign({ nonce: "not-the-nonce" })],
      ["another issuer", "id_token_wrong_issuer", ({ nonce }) => fake.sign({ nonce, claims: { iss: "https://evil.example" } })],
      ["an expired token", "id_token_expired", ({ nonce }) => fake.sign({ nonce, claims: { exp: now() - 600, iat: now() - 900 } })],
      ["an unknown kid", "id_token_unknown_key", ({ nonce }) => fake.sign({ nonce, header: { kid: "nope" } })],
      ["alg none", "id_token_unsupported_alg", async ({ nonce }) => {
        const good = await fake.sign({ nonce });
        const [, payload] = good.split(".");
        return `${Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url")}.${payload}.`;
      }],
      ["HS256 keyed with the public key", "id_token_unsupported_alg", async ({ nonce }) => {
        const { SignJWT } = await import("jose");
        return new SignJWT({ sub: "x", nonce, iss: fake.issuer, aud: CLIENT_ID })
          .setProtectedHeader({ alg: "HS256", kid: fake.keys.RS256.kid })
          .setIssuedAt()
          .setExpirationTime("5m")
          .sign(new TextEncoder().encode(JSON.stringify(fake.keys.RS256.jwk)));
      }],
      ["an RS256 header on the ES256 key's kid", "id_token_unknown_key", ({ nonce }) =>
        fake.sign({ nonce, header: { kid: fake.keys.ES256.kid } })],
    ];
    for (const [what, reason, forge] of bad) {
      test(`${what} is refused (invalid_id_token, login_failed ${reason})`, async () => {
        const { result } = await withEvent(gw, failedWith(reason), () => rogueSignIn(forge));
        assert.equal(result.searchParams.get("error"), "invalid_id_token");
        assert.equal(result.searchParams.get("code"), null);
      });
    }

    test("a failing token endpoint returns to the app with provider_unavailable or code_rejected", async () => {
      try {
        fake.tokenReply = { status: 503, body: { error: "temporarily_unavailable" } };
        let { result } = await withEvent(gw, failedWith("provider_unavailable"), () => rogueSignIn(null));
        assert.equal(result.searchParams.get("error"), "provider_unavailable");
        fake.tokenReply = { status: 400, body: { error: "invalid_grant" } };
        ({ result } = await withEvent(gw, failedWith("code_rejected"), () => rogueSignIn(null)));
        assert.equal(result.searchParams.get("error"), "code_rejected");
        fake.tokenReply = { status: 200, body: { access_token: "x" } };
        ({ result } = await withEvent(gw, failedWith("provider_unavailable"), () => rogueSignIn(null)));
        assert.equal(result.searchParams.get("error"), "provider_unavailable", "no id_token");
      } finally {
        fake.tokenReply = null;
      }
    });
  });

  test("redirect_to must be on REDIRECT_ALLOWLIST: open-redirect attempts get 400 invalid_redirect", async () => {
    for (const target of [
      "https://evil.example/",
      "http://app.test.evil.example/oauth/done",
      "http://app.test@evil.example/oauth/done",
      "//evil.example/oauth/done",
      "http:\\\\evil.example",
      "http://app.test/oauth/done-evil",
      "http://app.test/other",
      "javascript:alert(1)//http://app.test/oauth/done",
      "http://app.test/oauth/done#x",
    ]) {
      const res = await fetch(`${gw.url}/auth/oauth/acme/authorize?redirect_to=${encodeURIComponent(target)}`, { redirect: "manual" });
      assert.equal(res.headers.get("location"), null, target);
      await assertProblem(res, 400, "invalid_redirect");
    }
    const deep = await authorize("acme", "http://app.test/other/page?x=1");
    assert.ok(deep.url.startsWith(op.issuer));
    const dflt = await fetch(`${gw.url}/auth/oauth/acme/authorize?code_challenge=${APP_CHALLENGE}`, { redirect: "manual" });
    assert.equal(dflt.status, 302, "without redirect_to the first allowlist entry is used");
  });

  test("the code is bound to the app's challenge: without its verifier refused, a planted one signs nobody in", async () => {
    // Token mode: a sign-in without the app's challenge (or a malformed one) never starts.
    for (const q of ["", "?code_challenge=", "?code_challenge=short", `?code_challenge=${APP_CHALLENGE.slice(1)}`]) {
      const res = await fetch(`${gw.url}/auth/oauth/acme/authorize${q}`, { redirect: "manual" });
      assert.equal(res.headers.get("location"), null, q);
      assert.deepEqual(res.headers.getSetCookie(), [], q);
      await assertProblem(res, 400, "invalid_code_challenge");
    }
    // Without the verifier: refused, and spent (the right one does not revive it).
    const email = mail("bound");
    const id = account({ email, email_verified: true });
    const first = await acmeSignIn(id);
    const code = first.location.searchParams.get("code");
    await assertProblem(await post(`${gw.url}/auth/oauth/exchange`, { code }), 400, "invalid_exchange_code");
    await assertProblem(await exchange(code), 400, "invalid_exchange_code");
    // The attacker finishes their own sign-in with their own pair and plants the
    // code in the victim's app, which swaps it with the victim's verifier: refused.
    const attackerVerifier = crypto.randomBytes(32).toString("base64url");
    const mallory = account({ email: mail("mallory"), email_verified: true });
    const planted = await acmeSignIn(mallory, APP, challengeOf(attackerVerifier));
    const victimVerifier = crypto.randomBytes(32).toString("base64url");
    await assertProblem(await exchange(planted.location.searchParams.get("code"), victimVerifier), 400, "invalid_exchange_code");
    // With the verifier of the browser that started it: signed in, once.
    const own = await acmeSignIn(id);
    const body = await exchangeOk(own.location);
    assert.equal(body.user.email, email);
    await assertProblem(await exchange(own.location.searchParams.get("code")), 400, "invalid_exchange_code");
  });

  test("unknown providers are 404, unreachable ones 502, and the exchange refuses junk", async () => {
    await assertProblem(await fetch(`${gw.url}/auth/oauth/nope/authorize`, { redirect: "manual" }), 404, "unknown_provider");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/nope/callback?state=x&code=y`), 404, "unknown_provider");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/down/authorize?code_challenge=${APP_CHALLENGE}`, { redirect: "manual" }), 502, "provider_unavailable");
    await assertProblem(await exchange("not-a-code"), 400, "invalid_exchange_code");
    await assertProblem(await exchange("x".repeat(500)), 400, "invalid_exchange_code");
    await assertProblem(await post(`${gw.url}/auth/oauth/exchange`, "[]"), 422, "validation_failed");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/exchange`), 405, "method_not_allowed");
    await assertProblem(await post(`${gw.url}/auth/oauth/exchange`, "{\"code\": "), 400, "invalid_json");
    await assertProblem(await post(`${gw.url}/auth/oauth/exchange`, { code: "a", extra: 1 }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/oauth/exchange`, { code: 7 }), 422, "validation_failed");
    await assertProblem(await post(`${gw.url}/auth/oauth/exchange`, { code: "x".repeat(20_000) }), 413, "payload_too_large");
    const plain = await fetch(`${gw.url}/auth/oauth/exchange`, { method: "POST", headers: { "content-type": "text/plain" }, body: "code=x" });
    await assertProblem(plain, 415, "unsupported_media_type");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/acme/authorize`, { method: "POST" }), 405, "method_not_allowed");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/acme/link`), 405, "method_not_allowed");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/acme/other`), 404, "not_found");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/`), 404, "not_found");
    await assertProblem(await fetch(`${gw.url}/auth/oauth/acme`), 405, "method_not_allowed");
  });

  test("a signed-in user links a provider; that identity cannot then be linked to anyone else", async () => {
    const owner = await signup(gw, mail("linker"));
    const res = await authed(`${gw.url}/auth/oauth/acme/link`, owner.access_token, { method: "POST", body: { redirect_to: APP } });
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    const binding = res.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0].slice(BINDING.length + 1);
    const id = account({ email: mail("other-address"), email_verified: false });
    op.nextLogin = id;
    const cbUrl = await browse(body.authorize_url, callbackPrefix("acme"));
    const { result, event } = await withEvent(gw, (e) => e.type === "oauth_link" && e.data.user_id === owner.user.id, () =>
      callback(cbUrl, binding),
    );
    assert.equal(result.location.searchParams.get("linked"), "acme");
    assert.equal(result.location.searchParams.get("code"), null, "linking does not open a new session");
    assert.equal(event.data.provider, "acme");
    const me = await json(await authed(`${gw.url}/auth/me`, owner.access_token));
    assert.deepEqual(me.providers.map((p) => p.provider), ["acme"]);
    // The identity now signs the owner in.
    assert.equal((await exchangeOk((await acmeSignIn(id)).location)).user.id, owner.user.id);

    const intruder = await signup(gw, mail("intruder"));
    const r2 = await authed(`${gw.url}/auth/oauth/acme/link`, intruder.access_token, { method: "POST" });
    const b2 = await json(r2);
    const binding2 = r2.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0].slice(BINDING.length + 1);
    op.nextLogin = id;
    const cb2 = await browse(b2.authorize_url, callbackPrefix("acme"));
    const refused = await withEvent(gw, failedWith("identity_linked_elsewhere"), () => callback(cb2, binding2));
    assert.equal(refused.result.location.searchParams.get("error"), "identity_linked_elsewhere");
    assert.deepEqual((await json(await authed(`${gw.url}/auth/me`, intruder.access_token))).providers, []);
    await assertProblem(await fetch(`${gw.url}/auth/oauth/acme/link`, { method: "POST" }), 401, "missing_token");
  });

  test("a link whose session signs out before the callback does not complete", async () => {
    const owner = await signup(gw, mail("linker-out"));
    const res = await authed(`${gw.url}/auth/oauth/acme/link`, owner.access_token, { method: "POST", body: { redirect_to: APP } });
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    const binding = res.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0].slice(BINDING.length + 1);
    op.nextLogin = account({ email: mail("thief-address"), email_verified: true });
    const cbUrl = await browse(body.authorize_url, callbackPrefix("acme"));
    assert.equal((await authed(`${gw.url}/auth/logout`, owner.access_token, { method: "POST" })).status, 204);
    const refused = await withEvent(gw, failedWith("session_revoked"), () => callback(cbUrl, binding));
    assert.equal(refused.result.location.searchParams.get("error"), "session_revoked");
    assert.equal(refused.result.location.searchParams.get("linked"), null);
    const again = await json(await login(gw, owner.user.email));
    assert.deepEqual((await json(await authed(`${gw.url}/auth/me`, again.access_token))).providers, [], "nothing linked");
  });

  test("unlinking is refused for the last way to sign in and allowed otherwise", async () => {
    // OAuth-only account: acme is its only way in.
    const id = account({ email: mail("solo"), email_verified: true });
    const solo = await exchangeOk((await acmeSignIn(id)).location);
    const unlink = (token, provider) => authed(`${gw.url}/auth/oauth/${provider}`, token, { method: "DELETE" });
    await assertProblem(await unlink(solo.access_token, "acme"), 409, "last_sign_in_method");
    await assertProblem(await unlink(solo.access_token, "github"), 404, "not_linked");
    // With GitHub linked too, either may go — but not both.
    const r = await authed(`${gw.url}/auth/oauth/github/link`, solo.access_token, { method: "POST" });
    const { authorize_url } = await json(r);
    const binding = r.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0].slice(BINDING.length + 1);
    const { code, state } = gh.approve(authorize_url, { id: 700000 + Math.floor(Math.random() * 1e5), login: "solo", emails: [] });
    const linked = await callback(`${callbackPrefix("github")}?code=${code}&state=${state}`, binding);
    assert.equal(linked.location.searchParams.get("linked"), "github");
    assert.equal((await unlink(solo.access_token, "acme")).status, 204);
    await assertProblem(await unlink(solo.access_token, "github"), 409, "last_sign_in_method");
    const me = await json(await authed(`${gw.url}/auth/me`, solo.access_token));
    assert.deepEqual(me.providers.map((p) => p.provider), ["github"]);

    // A password account may drop its only provider (a verified one: the
    // sign-in would take an unverified one over, password and all).
    const email = mail("pw");
    const pw = await signupVerified(email);
    await exchangeOk((await acmeSignIn(account({ email, email_verified: true }))).location);
    assert.equal((await unlink(pw.access_token, "acme")).status, 204);
    await assertProblem(await unlink(pw.access_token, "acme"), 404, "not_linked");
  });

  test("banned users are refused with account_banned and login_failed; deleting a user deletes their links", async () => {
    const admin = await makeAdmin(gw, mail("admin"));
    const email = mail("banned");
    const id = account({ email, email_verified: true });
    const user = await exchangeOk((await acmeSignIn(id)).location);
    const ban = await authed(`${gw.url}/auth/admin/users/${user.user.id}/ban`, admin.access_token, { method: "POST" });
    assert.equal(ban.status, 200);
    const { result, event } = await withEvent(gw, failedWith("banned"), () => acmeSignIn(id));
    assert.equal(result.location.searchParams.get("error"), "account_banned");
    assert.equal(event.data.email, email);

    // Deleting the user deletes their links: the identity makes a new account.
    const del = await authed(`${gw.url}/auth/admin/users/${user.user.id}`, admin.access_token, { method: "DELETE" });
    assert.equal(del.status, 204);
    const reborn = await withEvent(gw, (e) => e.type === "user_created" && e.data.email === email, () => acmeSignIn(id));
    const fresh = await exchangeOk(reborn.result.location);
    assert.notEqual(fresh.user.id, user.user.id);
    assert.equal(reborn.event.data.user_id, fresh.user.id);
  });

  test("GitHub: the primary verified email creates the account; an unverified one never links", async () => {
    const email = mail("octo");
    const a = await authorize("github");
    const q = new URL(a.url).searchParams;
    assert.ok(a.url.startsWith(`${gh.base}/login/oauth/authorize?`));
    assert.equal(q.get("client_id"), GH_ID);
    assert.equal(q.get("nonce"), null, "GitHub is not OIDC");
    const ghId = 100000 + Math.floor(Math.random() * 1e5);
    const { code, state } = gh.approve(a.url, {
      id: ghId,
      login: "octo",
      name: "Octo Cat",
      emails: [
        { email: mail("secondary"), primary: false, verified: true },
        { email, primary: true, verified: true },
      ],
    });
    const cb = await callback(`${callbackPrefix("github")}?code=${code}&state=${state}`, a.binding);
    const body = await exchangeOk(cb.location);
    assert.equal(body.user.email, email);
    assert.equal(body.user.name, "Octo Cat");
    const created = await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email);
    assert.equal(created.data.provider, "github");
    assert.equal((await gw.waitForEvent((e) => e.type === "login" && e.data.email === email)).data.provider, "github");

    const taken = mail("taken");
    await signup(gw, taken);
    const b = await authorize("github");
    const g2 = gh.approve(b.url, { id: ghId + 1, login: "sneaky", emails: [{ email: taken, primary: true, verified: false }] });
    const { result } = await withEvent(gw, failedWith("unverified_email"), () =>
      callback(`${callbackPrefix("github")}?code=${g2.code}&state=${g2.state}`, b.binding),
    );
    assert.equal(result.location.searchParams.get("error"), "email_not_verified");

    const c = await authorize("github");
    const g3 = gh.approve(c.url, { id: ghId + 2, login: "x", emails: [] });
    const { result: r3 } = await withEvent(gw, failedWith("code_rejected"), () =>
      callback(`${callbackPrefix("github")}?code=${g3.code}-wrong&state=${g3.state}`, c.binding),
    );
    assert.equal(r3.location.searchParams.get("error"), "code_rejected");

    const d = await authorize("github");
    const g4 = gh.approve(d.url, { id: ghId + 3, login: "hidden", emails: [] });
    const { result: r4 } = await withEvent(gw, failedWith("no_email"), () =>
      callback(`${callbackPrefix("github")}?code=${g4.code}&state=${g4.state}`, d.binding),
    );
    assert.equal(r4.location.searchParams.get("error"), "email_required");
  });
});

describe("OAuth sign-in in cookie mode, through the sign-in hook", () => {
  let gw, gh, hook;
  const hookCalls = [];

  before(async () => {
    const http = await import("node:http");
    hook = http.createServer(async (req, res) => {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      hookCalls.push(body);
      const allow = !body.user.email.startsWith("deny-");
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(allow ? { allow: true, claims: { tier: "gold" } } : { allow: false, reason: "not today" }));
    });
    await new Promise((r) => hook.listen(0, "127.0.0.1", r));
    gh = await startFakeGithub({ clientId: GH_ID, clientSecret: GH_SECRET });
    gw = await startGateway({
      origin: true,
      vars: {
        COOKIE_MODE: "true",
        HOOK_URL: `http://127.0.0.1:${hook.address().port}/hook`,
        OAUTH_PROVIDERS: JSON.stringify([{ id: "github", preset: "github", client_id: GH_ID, base_url: gh.base, api_url: gh.base }]),
        OAUTH_GITHUB_CLIENT_SECRET: GH_SECRET,
        REDIRECT_ALLOWLIST: APP,
      },
    });
  });

  after(async () => {
    await gw?.stop();
    await gh?.close();
    hook?.closeAllConnections?.();
    await new Promise((r) => (hook ? hook.close(r) : r()));
  });

  async function githubSignIn(email) {
    const res = await fetch(`${gw.url}/auth/oauth/github/authorize?redirect_to=${encodeURIComponent(APP)}`, { redirect: "manual" });
    assert.equal(res.status, 302);
    const binding = res.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0];
    const { code, state } = gh.approve(res.headers.get("location"), {
      id: 200000 + Math.floor(Math.random() * 1e5),
      login: "c",
      emails: [{ email, primary: true, verified: true }],
    });
    return fetch(`${gw.url}/auth/oauth/github/callback?code=${code}&state=${state}`, { redirect: "manual", headers: { cookie: binding } });
  }

  test("the callback sets the session cookies, the hook is asked with the provider and its claims reach the token", async () => {
    const email = mail("cookie");
    const res = await githubSignIn(email);
    assert.equal(res.status, 302);
    const cookies = res.headers.getSetCookie();
    const access = cookies.find((c) => c.startsWith("__Host-portcullis_access="));
    assert.ok(access && cookies.some((c) => c.startsWith("__Host-portcullis_refresh=")), cookies.join(" | "));
    assert.ok(cookies.some((c) => c.startsWith(`${BINDING}=;`) && /Max-Age=0/.test(c)), "the binding cookie is cleared");
    const at = access.split(";")[0].slice("__Host-portcullis_access=".length);
    const me = await json(await fetch(`${gw.url}/auth/me`, { headers: { cookie: `__Host-portcullis_access=${at}` } }));
    assert.equal(me.email, email);
    assert.deepEqual(me.providers.map((p) => p.provider), ["github"]);
    const call = hookCalls.find((c) => c.user.email === email);
    assert.equal(call.provider, "github");
    const claims = JSON.parse(Buffer.from(at.split(".")[1], "base64url").toString());
    assert.equal(claims.tier, "gold");
    // Neither the session cookies nor the binding cookie reach the origin.
    const proxied = await fetch(`${gw.url}/api/hello`, {
      headers: { cookie: `__Host-portcullis_access=${at}; ${BINDING}=leftover; theme=dark` },
    });
    assert.equal(proxied.status, 200);
    const echo = await proxied.json();
    assert.equal(echo.identity.email, email);
    assert.equal(echo.headers.cookie, "theme=dark");
    // The browser returns to the app with no code: nothing in its URL opens the session.
    assert.equal(res.headers.get("location"), APP);
  });

  test("a sign-in the hook denies returns with signin_denied; the new account stays and is announced", async () => {
    const email = `deny-${mail("hook")}`;
    const { result, event } = await withEvent(
      gw,
      (e) => e.type === "login_failed" && e.data.reason === "signin_denied" && e.data.email === email,
      () => githubSignIn(email),
    );
    assert.equal(result.status, 302);
    assert.equal(new URL(result.headers.get("location")).searchParams.get("error"), "signin_denied");
    assert.ok(!result.headers.getSetCookie().some((c) => c.startsWith("__Host-portcullis_access=")));
    assert.equal(event.data.email, email);
    await gw.waitForEvent((e) => e.type === "user_created" && e.data.email === email && e.data.provider === "github");
  });
});
