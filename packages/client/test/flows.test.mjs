// Every flow of the auth API: the request the client sends (method, path,
// query, body, credentials, Authorization) and what it does with the answer.
// Runs against the compiled package (dist/).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { PortcullisClient, PortcullisError, SESSION_CHANGED, memoryStorage, webStorage } from "../dist/index.js";
import { PortcullisAdmin } from "../dist/admin.js";
import { clock, fakeGateway, json, problem } from "./fake-gateway.mjs";

const PASSWORD = "correct horse battery";
const INVALID_TOKEN = 'Bearer realm="portcullis", error="invalid_token", error_description="the token has expired"';
const VERIFIED = { email: "ada@example.com", email_verified: true };

function make(gw, options = {}) {
  return new PortcullisClient({ baseUrl: gw.base, fetch: gw.fetch, locks: null, channel: null, ...options });
}

async function signedIn(options = {}) {
  const gw = fakeGateway(options.gateway);
  const client = make(gw, options.client);
  await client.signIn({ email: "ada@example.com", password: PASSWORD });
  return { gw, client, last: () => gw.requests.at(-1) };
}

describe("token mode", () => {
  test("signUp posts email, password and name, keeps the tokens and gives the app the user, not the tokens", async () => {
    const gw = fakeGateway();
    const client = make(gw);
    const result = await client.signUp({ email: "ada@example.com", password: PASSWORD, name: "Ada" });
    const req = gw.requests[0];
    assert.equal(req.method, "POST");
    assert.equal(req.url, `${gw.base}/auth/signup`);
    assert.equal(req.headers["content-type"], "application/json");
    assert.deepEqual(req.body, { email: "ada@example.com", password: PASSWORD, name: "Ada" });
    assert.equal(req.headers.authorization, undefined);
    assert.notEqual(req.credentials, "include", "token mode sends no cookies");
    assert.deepEqual(Object.keys(result).sort(), ["expires_in", "mfa_required", "user"]);
    assert.equal(result.mfa_required, false);
    assert.equal(result.user.email, "ada@example.com");
    assert.equal(result.expires_in, 900);
    const state = await client.getState();
    assert.equal(state.user.id, "u-1");
    assert.equal(await client.getAccessToken(), "at-1");
  });

  test("signIn posts email and password; an mfa_required answer is handed back and nothing is kept", async () => {
    const gw = fakeGateway();
    const client = make(gw);
    gw.on("POST /auth/login", () => json(200, { mfa_required: true, mfa_token: "mfa-1", methods: ["totp", "backup_code"] }));
    const result = await client.signIn({ email: "ada@example.com", password: PASSWORD });
    assert.deepEqual(gw.requests[0].body, { email: "ada@example.com", password: PASSWORD });
    assert.deepEqual(result, { mfa_required: true, mfa_token: "mfa-1", methods: ["totp", "backup_code"] });
    assert.equal(await client.getState(), null);
    // The second step signs in.
    gw.on("POST /auth/login", () => json(500, {}));
    const done = await client.mfa.verify({ mfa_token: "mfa-1", code: "123456" });
    assert.deepEqual(gw.requests[1].body, { mfa_token: "mfa-1", code: "123456" });
    assert.equal(gw.requests[1].path, "/auth/mfa/verify");
    assert.equal(done.mfa_required, false);
    assert.ok(await client.getAccessToken());
    await client.mfa.verify({ mfa_token: "mfa-2", backup_code: "abcd-efgh" });
    assert.deepEqual(gw.requests[2].body, { mfa_token: "mfa-2", backup_code: "abcd-efgh" });
  });

  test("authenticated calls send the access token as Bearer", async () => {
    const { gw, client, last } = await signedIn();
    const me = await client.me();
    assert.equal(last().method, "GET");
    assert.equal(last().url, `${gw.base}/auth/me`);
    assert.equal(last().headers.authorization, "Bearer at-1");
    assert.equal(last().body, undefined);
    assert.equal(me.email, "ada@example.com");
    assert.deepEqual(me.providers, []);
  });

  test("every flow sends the request the API documents", async () => {
    const { gw, client, last } = await signedIn();
    const admin = new PortcullisAdmin(client);
    const cred = { id: "c", rawId: "c", type: "public-key", response: {}, clientExtensionResults: {} };
    // [call, method, path, body (undefined: none), query, authenticated (signed in, as here), canned answer]
    const cases = [
      [() => client.requestMagicLink("ada@example.com"), "POST", "/auth/magic-link", { email: "ada@example.com" }, {}, false],
      [() => client.verifyMagicLink("ml-token"), "POST", "/auth/magic-link/verify", { token: "ml-token" }, {}, false],
      [() => client.requestEmailCode("ada@example.com"), "POST", "/auth/otp", { email: "ada@example.com" }, {}, false],
      [() => client.verifyEmailCode("ada@example.com", "123456"), "POST", "/auth/otp/verify", { email: "ada@example.com", code: "123456" }, {}, false],
      [() => client.forgotPassword("ada@example.com"), "POST", "/auth/password/forgot", { email: "ada@example.com" }, {}, false],
      [() => client.resetPassword("rs-token", "new pass words"), "POST", "/auth/password/reset", { token: "rs-token", new_password: "new pass words" }, {}, false],
      [() => client.changePassword(PASSWORD, "new pass words"), "POST", "/auth/password/change", { old_password: PASSWORD, new_password: "new pass words" }, {}, true],
      [() => client.updateProfile({ name: "Ada", locale: null }), "PATCH", "/auth/me", { name: "Ada", locale: null }, {}, true, { id: "u-1", name: "Ada", locale: null, providers: [] }],
      [() => client.requestEmailVerification(), "POST", "/auth/email/verify/request", undefined, {}, true],
      [() => client.verifyEmail("ev-token"), "POST", "/auth/email/verify", { token: "ev-token" }, {}, true, VERIFIED],
      [() => client.listSessions(), "GET", "/auth/sessions", undefined, {}, true, { sessions: [{ id: "s-9", current: false }] }],
      [() => client.revokeSession("s-9/x"), "DELETE", "/auth/sessions/s-9%2Fx", undefined, {}, true, undefined, 204],
      [() => client.revokeOtherSessions(), "POST", "/auth/sessions/revoke-others", undefined, {}, true, { revoked: 2 }],
      [() => client.exchangeOAuthCode("oc-1"), "POST", "/auth/oauth/exchange", { code: "oc-1" }, {}, false],
      [() => client.linkOAuth("github", { redirectTo: "https://app.example/done" }), "POST", "/auth/oauth/github/link", { redirect_to: "https://app.example/done" }, {}, true, { authorize_url: "https://github.com/login" }],
      [() => client.linkOAuth("github"), "POST", "/auth/oauth/github/link", undefined, {}, true, { authorize_url: "https://github.com/login" }],
      [() => client.unlinkOAuth("github"), "DELETE", "/auth/oauth/github", undefined, {}, true, undefined, 204],
      [() => client.mfa.enrollTotp(), "POST", "/auth/mfa/totp/enroll", undefined, {}, true, { secret: "JBSWY3DPEHPK3PXP", otpauth_uri: "otpauth://totp/x" }],
      [() => client.mfa.confirmTotp("123456"), "POST", "/auth/mfa/totp/confirm", { code: "123456" }, {}, true, { backup_codes: ["a"] }],
      [() => client.mfa.disableTotp("123456"), "DELETE", "/auth/mfa/totp", { code: "123456" }, {}, true, undefined, 204],
      [() => client.mfa.regenerateBackupCodes("123456"), "POST", "/auth/mfa/backup-codes", { code: "123456" }, {}, true, { backup_codes: ["b"] }],
      [() => client.passkeys.registrationOptions("Laptop"), "POST", "/auth/passkeys/register/options", { name: "Laptop" }, {}, true, { challenge: "c" }],
      [() => client.passkeys.registrationOptions(), "POST", "/auth/passkeys/register/options", undefined, {}, true, { challenge: "c" }],
      [() => client.passkeys.register(cred), "POST", "/auth/passkeys/register/verify", { credential: cred }, {}, true, { id: "pk-1", name: "Laptop", created_at: "x" }, 201],
      [() => client.passkeys.list(), "GET", "/auth/passkeys", undefined, {}, true, { passkeys: [{ id: "pk-1" }] }],
      [() => client.passkeys.rename("pk-1", "Phone"), "PATCH", "/auth/passkeys/pk-1", { name: "Phone" }, {}, true, { id: "pk-1", name: "Phone" }],
      [() => client.passkeys.remove("pk-1"), "DELETE", "/auth/passkeys/pk-1", undefined, {}, true, undefined, 204],
      [() => client.passkeys.loginOptions("ada@example.com"), "POST", "/auth/passkeys/login/options", { email: "ada@example.com" }, {}, false, { challenge: "c", challenge_id: "ch-1" }],
      [() => client.passkeys.loginOptions(), "POST", "/auth/passkeys/login/options", {}, {}, false, { challenge: "c", challenge_id: "ch-1" }],
      [() => client.passkeys.signIn("ch-1", cred), "POST", "/auth/passkeys/login/verify", { challenge_id: "ch-1", credential: cred }, {}, false],
      [() => admin.listUsers({ query: "example", limit: 10, offset: 20 }), "GET", "/auth/admin/users", undefined, { query: "example", limit: "10", offset: "20" }, true, { users: [], total: 0, limit: 10, offset: 20 }],
      [() => admin.listUsers(), "GET", "/auth/admin/users", undefined, {}, true, { users: [], total: 0, limit: 20, offset: 0 }],
      [() => admin.getUser("u 2"), "GET", "/auth/admin/users/u%202", undefined, {}, true, { id: "u 2" }],
      [() => admin.updateUser("u-2", { name: null, email_verified: true }), "PATCH", "/auth/admin/users/u-2", { name: null, email_verified: true }, {}, true, { id: "u-2" }],
      [() => admin.deleteUser("u-2"), "DELETE", "/auth/admin/users/u-2", undefined, {}, true, undefined, 204],
      [() => admin.banUser("u-2"), "POST", "/auth/admin/users/u-2/ban", undefined, {}, true, { id: "u-2", banned: true }],
      [() => admin.unbanUser("u-2"), "POST", "/auth/admin/users/u-2/unban", undefined, {}, true, { id: "u-2" }],
      [() => admin.addRole("u-2", "editor"), "POST", "/auth/admin/users/u-2/roles/editor", undefined, {}, true, { id: "u-2" }],
      [() => admin.removeRole("u-2", "editor"), "DELETE", "/auth/admin/users/u-2/roles/editor", undefined, {}, true, { id: "u-2" }],
      [() => admin.revokeUserSessions("u-2"), "POST", "/auth/admin/users/u-2/sessions/revoke", undefined, {}, true, { revoked: 1 }],
      [() => admin.rotateKeys(), "POST", "/auth/admin/keys/rotate", undefined, {}, true, { old_kid: "k1", new_kid: "k2" }],
      [() => admin.retireKey("k1"), "POST", "/auth/admin/keys/k1/retire", undefined, {}, true, { kid: "k1", new_kid: null }],
    ];
    for (const [call, method, path, body, query, authed, answer, status = 200] of cases) {
      const what = `${method} ${path}`;
      if (answer !== undefined || status === 204) gw.on(what, () => json(status, answer));
      const token = await client.getAccessToken();
      const result = await call();
      const req = last();
      assert.equal(req.method, method, what);
      assert.equal(req.path, path, what);
      assert.deepEqual(req.query, query, what);
      assert.deepEqual(req.body, body, what);
      assert.equal(req.headers["content-type"], body === undefined ? undefined : "application/json", what);
      assert.equal(req.headers.authorization, authed ? `Bearer ${token}` : undefined, what);
      if (status === 204) assert.equal(result, undefined, what);
    }
    // The linking call carries credentials: its answer sets the OAuth binding cookie.
    assert.equal(gw.of("POST /auth/oauth/github/link")[0].credentials, "include");
    // Lists come unwrapped.
    assert.deepEqual(await client.listSessions(), [{ id: "s-9", current: false }]);
    assert.deepEqual(await client.passkeys.list(), [{ id: "pk-1" }]);
  });

  test("the OAuth start URL names the provider, redirect_to and the app's challenge; the prefix and base follow the options", () => {
    const client = new PortcullisClient({ baseUrl: "https://gw.example/", authPrefix: "/identity/v1/", channel: null, locks: null });
    assert.equal(
      client.oauthAuthorizeUrl("google", { redirectTo: "https://app.example/done?x=1" }),
      "https://gw.example/identity/v1/oauth/google/authorize?redirect_to=https%3A%2F%2Fapp.example%2Fdone%3Fx%3D1",
    );
    assert.equal(client.oauthAuthorizeUrl("my idp"), "https://gw.example/identity/v1/oauth/my%20idp/authorize");
    assert.equal(
      client.oauthAuthorizeUrl("acme", { redirectTo: "https://app.example/done", codeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" }),
      "https://gw.example/identity/v1/oauth/acme/authorize?redirect_to=https%3A%2F%2Fapp.example%2Fdone&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
    const sameOrigin = new PortcullisClient({ channel: null, locks: null });
    assert.equal(sameOrigin.oauthAuthorizeUrl("acme"), "/auth/oauth/acme/authorize");
  });

  test("signOut posts the refresh token (no Bearer needed) and forgets the session, also when it had ended", async () => {
    const { gw, client, last } = await signedIn();
    const changes = [];
    client.onChange((s) => changes.push(s));
    await client.signOut();
    assert.equal(last().path, "/auth/logout");
    assert.deepEqual(last().body, { refresh_token: "rt-1" });
    assert.equal(last().headers.authorization, undefined);
    assert.equal(await client.getState(), null);
    assert.deepEqual(changes, [null]);
    assert.equal(gw.sessions.get("s-1").revoked, true);
    // Signed out already at the gateway: not an error, forgotten here.
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.on("POST /auth/logout", () => problem(401, "invalid_refresh_token"));
    await client.signOut();
    assert.equal(await client.getState(), null);
  });

  test("signOut forgets the session here even when the gateway fails, and says so", async () => {
    const { gw, client } = await signedIn();
    gw.on("POST /auth/logout", () => problem(503, "service_unavailable", { headers: { "retry-after": "5" } }));
    await assert.rejects(client.signOut(), (e) => e instanceof PortcullisError && e.code === "service_unavailable" && e.retryAfter === 5);
    assert.equal(await client.getState(), null);
  });

  test("revoking this client's own session forgets it here; revoking another keeps it", async () => {
    const { gw, client } = await signedIn();
    gw.on("DELETE /auth/sessions/s-9", () => json(204));
    await client.revokeSession("s-9");
    assert.ok(await client.getState());
    const own = (await client.getState()).user.session_id;
    gw.on(`DELETE /auth/sessions/${own}`, () => json(204));
    await client.revokeSession(own);
    assert.equal(await client.getState(), null);
  });

  test("a gateway in cookie mode sends no tokens: a token-mode client says how to fix it", async () => {
    const gw = fakeGateway({ cookieMode: true });
    const client = make(gw);
    await assert.rejects(client.signIn({ email: "ada@example.com", password: PASSWORD }), /mode: "cookie"/);
    assert.equal(await client.getState(), null);
  });

  test("webStorage keeps the session under its key, and a new client on that storage picks it up", async () => {
    const map = new Map();
    const area = { getItem: (k) => map.get(k) ?? null, setItem: (k, v) => map.set(k, v), removeItem: (k) => map.delete(k) };
    const gw = fakeGateway();
    const client = make(gw, { storage: webStorage(area, "my.key") });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    assert.deepEqual([...map.keys()], ["my.key"]);
    const again = make(gw, { storage: webStorage(area, "my.key") });
    assert.equal(await again.getAccessToken(), "at-1");
    await again.signOut();
    assert.equal(map.size, 0);
    assert.equal(await client.getState(), null);
  });

  test("a BroadcastChannel that cannot be made (an opaque origin) leaves the client working without one", async () => {
    const gw = fakeGateway();
    const client = make(gw, {
      channel: () => {
        throw new DOMException("denied", "SecurityError");
      },
    });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    await client.refresh();
    assert.equal(await client.getAccessToken(), "at-2");
  });

  test("a corrupt stored value counts as signed out", async () => {
    const storage = memoryStorage();
    storage.set("{not json");
    const gw = fakeGateway();
    const client = make(gw, { storage });
    assert.equal(await client.getState(), null);
    storage.set(JSON.stringify({ v: 1, stamp: "x" }));
    assert.equal(await client.getState(), null);
    await client.me().catch(() => undefined);
    assert.equal(gw.requests[0].headers.authorization, undefined);
  });
});

describe("verifyEmail: the signed-in holder confirms, nobody else takes over", () => {
  test("signed in, the link goes with the session; signed out (or never signed in), without one", async () => {
    const { gw, client, last } = await signedIn();
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    assert.deepEqual(await client.verifyEmail("ev-1"), VERIFIED);
    assert.equal(last().path, "/auth/email/verify");
    assert.deepEqual(last().body, { token: "ev-1" });
    assert.equal(last().headers.authorization, "Bearer at-1");
    await client.signOut();
    await client.verifyEmail("ev-2");
    assert.equal(last().path, "/auth/email/verify");
    assert.deepEqual(last().body, { token: "ev-2" });
    assert.equal(last().headers.authorization, undefined);
    const stranger = make(gw);
    await stranger.verifyEmail("ev-3");
    assert.equal(last().headers.authorization, undefined);
    assert.equal(gw.count("POST /auth/refresh"), 0, "a token-mode client without a session asks nothing first");
  });

  test("an expiring session is refreshed first; a refresh the gateway refuses fails the call, the link not sent", async () => {
    const gw = fakeGateway();
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const now = clock();
    const client = make(gw, { now });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000); // 20 s left: inside the margin
    await client.verifyEmail("ev-1");
    assert.equal(gw.count("POST /auth/refresh"), 1);
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer at-2");

    // A passing failure (503): the call fails, the session is kept, nothing verified without it.
    now.advance(880_000);
    gw.on("POST /auth/refresh", () => problem(503, "service_unavailable"));
    await assert.rejects(client.verifyEmail("ev-2"), (e) => e instanceof PortcullisError && e.code === "service_unavailable");
    assert.equal(gw.count("POST /auth/email/verify"), 1);
    assert.ok(await client.getState());

    // The gateway ended the session: the call fails and the client is signed out…
    gw.on("POST /auth/refresh", () => problem(401, "invalid_refresh_token"));
    await assert.rejects(client.verifyEmail("ev-2"), (e) => e instanceof PortcullisError && e.code === "invalid_refresh_token");
    assert.equal(gw.count("POST /auth/email/verify"), 1);
    assert.equal(await client.getState(), null);
    // …so that a second call is, knowingly, one without a session.
    await client.verifyEmail("ev-2");
    assert.equal(gw.count("POST /auth/email/verify"), 2);
    assert.equal(gw.requests.at(-1).headers.authorization, undefined);
  });

  test("a 401 invalid_token refreshes once and sends again with the session; refused, the 401 comes back", async () => {
    const { gw, client } = await signedIn();
    const refused = new Set(["Bearer at-1"]);
    gw.on("POST /auth/email/verify", (req) =>
      refused.has(req.headers.authorization) ? problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } }) : json(200, VERIFIED),
    );
    assert.deepEqual(await client.verifyEmail("ev-1"), VERIFIED);
    assert.deepEqual(
      gw.of("POST /auth/email/verify").map((r) => r.headers.authorization),
      ["Bearer at-1", "Bearer at-2"],
    );
    refused.add("Bearer at-2");
    gw.on("POST /auth/refresh", () => problem(401, "invalid_refresh_token"));
    await assert.rejects(client.verifyEmail("ev-1"), (e) => e instanceof PortcullisError && e.status === 401 && e.code === "token_expired");
    assert.deepEqual(
      gw.of("POST /auth/email/verify").map((r) => r.headers.authorization),
      ["Bearer at-1", "Bearer at-2", "Bearer at-2"],
      "never sent again without the session",
    );
  });

  test("cookie mode: a known session goes with the cookies; a page that knows of none asks the gateway first", async () => {
    const gw = fakeGateway({ cookieMode: true });
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    await client.verifyEmail("ev-1");
    let req = gw.requests.at(-1);
    assert.equal(req.path, "/auth/email/verify");
    assert.equal(req.credentials, "include");
    assert.equal(req.cookies.access, "at-1");
    assert.equal(gw.count("POST /auth/refresh"), 0);

    // A page that knows of no session (memory storage, a reload) in a browser that dropped
    // the expired access cookie: a refresh through the refresh cookie comes first.
    delete gw.jar.access;
    const reloaded = make(gw, { mode: "cookie" });
    await reloaded.verifyEmail("ev-2");
    assert.equal(gw.count("POST /auth/refresh"), 1);
    req = gw.requests.at(-1);
    assert.equal(req.path, "/auth/email/verify");
    assert.equal(req.cookies.access, "at-2");
    assert.equal((await reloaded.getState()).user.email, "ada@example.com");

    // No cookies at all: the refresh is a 400, and the link goes without a session.
    const bare = fakeGateway({ cookieMode: true });
    bare.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const anonymous = make(bare, { mode: "cookie" });
    assert.deepEqual(await anonymous.verifyEmail("ev-3"), VERIFIED);
    assert.deepEqual(bare.requests.map((r) => `${r.method} ${r.path}`), ["POST /auth/refresh", "POST /auth/email/verify"]);
    assert.equal(bare.requests[1].cookies.access, undefined);
    assert.equal(await anonymous.getState(), null);

    // A refresh that fails for a passing reason: not a sign of no session, the call fails.
    bare.on("POST /auth/refresh", () => problem(429, "rate_limited", { headers: { "retry-after": "7" } }));
    await assert.rejects(anonymous.verifyEmail("ev-4"), (e) => e instanceof PortcullisError && e.code === "rate_limited" && e.retryAfter === 7);
    assert.equal(bare.count("POST /auth/email/verify"), 1);
  });

  test("cookie mode: a known session whose refresh the gateway refuses fails the call", async () => {
    const gw = fakeGateway({ cookieMode: true });
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const now = clock();
    const client = make(gw, { mode: "cookie", now });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    gw.on("POST /auth/refresh", () => problem(401, "invalid_refresh_token"));
    await assert.rejects(client.verifyEmail("ev-1"), (e) => e instanceof PortcullisError && e.code === "invalid_refresh_token");
    assert.equal(gw.count("POST /auth/email/verify"), 0);
    assert.equal(await client.getState(), null);
  });

  // Another tab sharing the storage changes it while this one waits for the refresh lock: a
  // lock that runs `change` (once) before it grants.
  function racingLocks(change) {
    let pending = null;
    return {
      arm(fn = change) {
        pending = fn;
      },
      async request(name, callback) {
        const fn = pending;
        pending = null;
        if (fn) await fn();
        return callback();
      },
    };
  }

  /** Another account's stored state, as another tab that signed in as Eve would leave it. */
  function eve(now, { accessToken = "at-eve", refreshToken = "rt-eve" } = {}) {
    const state = {
      v: 1,
      stamp: "eve-stamp",
      obtainedAt: now(),
      expiresAt: now() + 900_000,
      lifetime: 900,
      user: { id: "u-eve", email: "eve@example.com", name: "Eve", email_verified: true, session_id: "s-eve" },
    };
    return JSON.stringify(accessToken === undefined ? state : { ...state, accessToken, refreshToken });
  }

  const changed = (e) => e instanceof PortcullisError && e.code === SESSION_CHANGED && e.status === 0;

  test("token mode: another tab signs out while the refresh waits for the lock: rejects, the link not sent", async () => {
    const gw = fakeGateway();
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const now = clock();
    const storage = memoryStorage();
    const locks = racingLocks(() => storage.remove());
    const client = make(gw, { now, storage, locks });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    locks.arm();
    await assert.rejects(client.verifyEmail("ev-1"), changed);
    assert.equal(gw.count("POST /auth/email/verify"), 0);
    assert.equal(gw.count("POST /auth/refresh"), 0, "nothing to refresh: the session is gone");
    // Signed out now, so a second call goes without a session, knowingly.
    await client.verifyEmail("ev-1");
    assert.equal(gw.count("POST /auth/email/verify"), 1);
    assert.equal(gw.requests.at(-1).headers.authorization, undefined);
  });

  test("token mode: another tab signs in as another account meanwhile: rejects, never sent with its token", async () => {
    const gw = fakeGateway();
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const now = clock();
    const storage = memoryStorage();
    const locks = racingLocks(() => storage.set(eve(now)));
    const client = make(gw, { now, storage, locks });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    locks.arm();
    await assert.rejects(client.verifyEmail("ev-1"), changed);
    assert.equal(gw.count("POST /auth/email/verify"), 0);
    assert.equal(gw.count("POST /auth/refresh"), 0);
    // The other tab's account stays signed in here (the storage is shared): not cleared.
    assert.equal((await client.getState()).user.email, "eve@example.com");
  });

  test("the same account refreshed by another tab meanwhile is taken, not refused", async () => {
    const gw = fakeGateway();
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const now = clock();
    const storage = memoryStorage();
    const other = make(gw, { now, storage });
    const locks = racingLocks(() => other.refresh());
    const client = make(gw, { now, storage, locks });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    locks.arm();
    assert.deepEqual(await client.verifyEmail("ev-1"), VERIFIED);
    assert.equal(gw.count("POST /auth/refresh"), 1, "the other tab's refresh only");
    assert.equal(gw.requests.at(-1).headers.authorization, "Bearer at-2");
  });

  test("cookie mode: a known session that became another account's meanwhile rejects", async () => {
    const gw = fakeGateway({ cookieMode: true });
    gw.on("POST /auth/email/verify", () => json(200, VERIFIED));
    const now = clock();
    const storage = memoryStorage();
    const locks = racingLocks(() => storage.set(eve(now, { accessToken: undefined })));
    const client = make(gw, { mode: "cookie", now, storage, locks });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    locks.arm();
    await assert.rejects(client.verifyEmail("ev-1"), changed);
    assert.equal(gw.count("POST /auth/email/verify"), 0);
    locks.arm(() => storage.remove());
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    now.advance(880_000);
    await assert.rejects(client.verifyEmail("ev-1"), changed);
    assert.equal(gw.count("POST /auth/email/verify"), 0);
  });

  test("a 401 invalid_token whose refresh finds another account or none: rejects, not sent again", async () => {
    const gw = fakeGateway();
    gw.on("POST /auth/email/verify", (req) =>
      req.headers.authorization === "Bearer at-1"
        ? problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } })
        : json(200, VERIFIED),
    );
    const now = clock();
    const storage = memoryStorage();
    const locks = racingLocks(() => storage.set(eve(now)));
    const client = make(gw, { now, storage, locks });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    locks.arm();
    await assert.rejects(client.verifyEmail("ev-1"), changed);
    assert.deepEqual(gw.of("POST /auth/email/verify").map((r) => r.headers.authorization), ["Bearer at-1"]);

    // Signed out by another tab instead: the 401 comes back, the link never sent without a session.
    await storage.remove();
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.on("POST /auth/email/verify", (req) =>
      req.headers.authorization === "Bearer at-2"
        ? problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } })
        : json(200, VERIFIED),
    );
    locks.arm(() => storage.remove());
    await assert.rejects(client.verifyEmail("ev-2"), (e) => e instanceof PortcullisError && e.status === 401);
    assert.deepEqual(gw.of("POST /auth/email/verify").map((r) => r.headers.authorization), ["Bearer at-1", "Bearer at-2"]);
  });

  test("request() takes auth: \"if-signed-in\" for other calls of the kind", async () => {
    const { gw, client, last } = await signedIn();
    await client.request("POST", "/custom", { auth: "if-signed-in", body: {} });
    assert.equal(last().headers.authorization, "Bearer at-1");
    await client.signOut();
    await client.request("POST", "/custom", { auth: "if-signed-in", body: {} });
    assert.equal(last().path, "/auth/custom");
    assert.equal(last().headers.authorization, undefined);
  });
});

describe("cookie mode", () => {
  function cookieClient(gw, options = {}) {
    return make(gw, { mode: "cookie", ...options });
  }

  test("sign-ins and every call go with credentials, no Authorization header; nothing secret is stored", async () => {
    const gw = fakeGateway({ cookieMode: true });
    const storage = memoryStorage();
    const client = cookieClient(gw, { storage });
    const r = await client.signIn({ email: "ada@example.com", password: PASSWORD });
    assert.equal(r.user.email, "ada@example.com");
    assert.equal(gw.requests[0].credentials, "include");
    assert.ok(gw.jar.access, "the gateway set the cookies");
    const me = await client.me();
    assert.equal(me.email, "ada@example.com");
    const req = gw.requests.at(-1);
    assert.equal(req.credentials, "include");
    assert.equal(req.headers.authorization, undefined);
    assert.equal(await client.getAccessToken(), null);
    assert.doesNotMatch(storage.get(), /at-|rt-/);
    const state = await client.getState();
    assert.equal(state.user.email, "ada@example.com");
  });

  test("tokens the gateway puts in the body anyway (COOKIE_MODE_BODY_TOKENS) are never kept", async () => {
    const gw = fakeGateway({ cookieMode: true });
    gw.on("POST /auth/login", () => json(200, { access_token: "at-body", refresh_token: "rt-body", token_type: "Bearer", expires_in: 900, user: { id: "u", email: "e", session_id: "s" } }));
    const storage = memoryStorage();
    const client = cookieClient(gw, { storage });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    assert.doesNotMatch(storage.get(), /at-body|rt-body/);
    assert.equal(await client.getAccessToken(), null);
  });

  test("refresh and logout send no body: the cookies carry the tokens", async () => {
    const gw = fakeGateway({ cookieMode: true });
    const client = cookieClient(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    await client.refresh();
    const refresh = gw.of("POST /auth/refresh")[0];
    assert.equal(refresh.rawBody, "");
    assert.equal(refresh.headers["content-type"], undefined, "a simple request: no preflight");
    assert.equal(refresh.credentials, "include");
    await client.signOut();
    const logout = gw.of("POST /auth/logout")[0];
    assert.equal(logout.rawBody, "");
    assert.equal(logout.credentials, "include");
    assert.equal(await client.getState(), null);
    assert.equal(gw.jar.access, undefined);
  });

  test("the fetch wrapper sends the cookies (credentials: include) unless told otherwise", async () => {
    const gw = fakeGateway({ cookieMode: true });
    gw.on("GET /api/items", () => json(200, []));
    const client = cookieClient(gw);
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    await client.fetch(`${gw.base}/api/items`);
    assert.equal(gw.requests.at(-1).credentials, "include");
    assert.equal(gw.requests.at(-1).headers.authorization, undefined);
    await client.fetch(`${gw.base}/api/items`, { credentials: "omit" });
    assert.equal(gw.requests.at(-1).credentials, "omit");
  });
});

describe("the fetch wrapper", () => {
  test("adds the Bearer token and keeps method, headers and body", async () => {
    const { gw, client, last } = await signedIn();
    gw.on("PUT /api/items/7", (req) => json(200, { echoed: req.body }));
    const res = await client.fetch(`${gw.base}/api/items/7`, {
      method: "PUT",
      headers: { "content-type": "application/json", "x-trace": "t1" },
      body: JSON.stringify({ a: 1 }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { echoed: { a: 1 } });
    assert.equal(last().headers.authorization, "Bearer at-1");
    assert.equal(last().headers["x-trace"], "t1");
  });

  test("handed around as a plain function it keeps its client", async () => {
    const { gw, client, last } = await signedIn();
    gw.on("GET /api/x", () => json(200, {}));
    const f = client.fetch;
    assert.equal((await f(`${gw.base}/api/x`)).status, 200);
    assert.equal(last().headers.authorization, "Bearer at-1");
  });

  test("an Authorization header of the caller's is left alone", async () => {
    const { gw, client, last } = await signedIn();
    gw.on("GET /api/x", () => json(200, {}));
    await client.fetch(`${gw.base}/api/x`, { headers: { authorization: "Basic abc" } });
    assert.equal(last().headers.authorization, "Basic abc");
  });

  test("the session goes only to the gateway's origin; another origin's request goes out as it is", async () => {
    const { gw, client, last } = await signedIn();
    gw.on("GET /api/x", () => json(200, {}));
    await client.fetch("https://gw.example:443/api/x");
    assert.equal(last().headers.authorization, "Bearer at-1", "the same origin, however written");
    for (const url of ["https://elsewhere.example/api/x", "http://gw.example/api/x", "https://gw.example:8443/api/x", "https://sub.gw.example/api/x"]) {
      await client.fetch(url);
      assert.equal(last().url, url);
      assert.equal(last().headers.authorization, undefined, url);
    }
    // Method, headers and body untouched; a 401 of another origin's refreshes nothing.
    gw.on("POST /api/x", () => problem(401, "token_expired", { headers: { "www-authenticate": INVALID_TOKEN } }));
    const before = gw.requests.length;
    const res = await client.fetch(new Request("https://elsewhere.example/api/x", { method: "POST", headers: { "x-trace": "t1" }, body: "hi" }));
    assert.equal(res.status, 401);
    assert.equal(gw.requests.length, before + 1);
    assert.equal(last().method, "POST");
    assert.equal(last().headers["x-trace"], "t1");
    assert.equal(last().rawBody, "hi");
    assert.equal(gw.count("POST /auth/refresh"), 0);
  });

  test("cookie mode: another origin's request goes without credentials: include", async () => {
    const gw = fakeGateway({ cookieMode: true });
    const client = make(gw, { mode: "cookie" });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    gw.on("GET /api/x", () => json(200, {}));
    await client.fetch("https://elsewhere.example/api/x");
    assert.notEqual(gw.requests.at(-1).credentials, "include");
    await client.fetch(`${gw.base}/api/x`);
    assert.equal(gw.requests.at(-1).credentials, "include");
  });

  test("tokenOrigins adds origins to send the session to; each must be an origin", async () => {
    const gw = fakeGateway();
    const client = make(gw, { tokenOrigins: ["https://API.example.com", "http://localhost:8080/"] });
    await client.signIn({ email: "ada@example.com", password: PASSWORD });
    const token = await client.getAccessToken();
    gw.on("GET /v1/x", () => json(200, {}));
    for (const [url, sent] of [
      ["https://api.example.com/v1/x", true],
      ["http://localhost:8080/v1/x", true],
      [`${gw.base}/v1/x`, true],
      ["https://api.example.com:8443/v1/x", false],
      ["http://api.example.com/v1/x", false],
      ["http://localhost:8081/v1/x", false],
    ]) {
      await client.fetch(url);
      assert.equal(gw.requests.at(-1).headers.authorization, sent ? `Bearer ${token}` : undefined, url);
    }
    for (const bad of [
      "https://api.example.com/v1",
      "https://api.example.com/?x=1",
      "api.example.com",
      "file:///etc/passwd",
      "https://u:p@api.example.com",
      "https://*.example.com",
      "https://api.*",
      "ws://api.example.com",
      "wss://api.example.com",
      "ftp://api.example.com",
    ]) {
      assert.throws(() => make(gw, { tokenOrigins: [bad] }), TypeError, bad);
    }
    assert.throws(() => make(gw, { tokenOrigins: "https://api.example.com" }), TypeError);
  });

  test("with baseUrl \"\" the gateway's origin is the page's", async () => {
    const gw = fakeGateway({ base: "https://app.example" });
    gw.on("GET /api/x", () => json(200, {}));
    const storage = memoryStorage();
    await make(gw, { storage }).signIn({ email: "ada@example.com", password: PASSWORD });
    const had = Object.getOwnPropertyDescriptor(globalThis, "location");
    globalThis.location = new URL("https://app.example/some/page");
    try {
      const client = make(gw, { storage, baseUrl: "" });
      await client.fetch("https://app.example/api/x");
      assert.equal(gw.requests.at(-1).headers.authorization, "Bearer at-1");
      await client.fetch("https://elsewhere.example/api/x");
      assert.equal(gw.requests.at(-1).headers.authorization, undefined);
    } finally {
      if (had) Object.defineProperty(globalThis, "location", had);
      else delete globalThis.location;
    }
    // Without a page there is no origin of the gateway's to send the session to.
    const pageless = make(gw, { storage, baseUrl: "" });
    await pageless.fetch("https://app.example/api/x");
    assert.equal(gw.requests.at(-1).headers.authorization, undefined);
  });

  test("signed out: the request goes without a token and the gateway's 401 comes back as is", async () => {
    const gw = fakeGateway();
    const client = make(gw);
    gw.on("GET /api/x", () => problem(401, "missing_token", { headers: { "www-authenticate": 'Bearer realm="portcullis"' } }));
    const res = await client.fetch(`${gw.base}/api/x`);
    assert.equal(res.status, 401);
    assert.equal(gw.requests.length, 1);
    assert.equal(gw.requests[0].headers.authorization, undefined);
  });
});
