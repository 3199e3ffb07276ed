// Pre-hijacked accounts end to end: someone signs up with the owner's address
// and their own password, keeps two sessions and asks for a verification link.
// The owner's first proof of the address — a magic link, an email code, or a
// sign-in at an OpenID provider that verified the address — lands them in the
// account and takes it over: the planted password no longer logs in, the
// planter's refresh tokens and sessions are dead, the verification link the
// planter asked for is dead, an identity the planter linked is dropped, and
// `email_verified`, `user_updated` (`fields`) and `session_revoked`
// (`revoke_all`) say so.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { startGateway, post, json } from "./harness.mjs";
import { signup, login, withEvent, eventFor, assertProblem, authed } from "./lib/accounts.mjs";
import { listenOidcProvider, browse } from "./lib/oauth-servers.mjs";
import { d1, sqlText } from "./lib/d1.mjs";

const APP = "http://app.test/oauth/done";
const CLIENT_ID = "portcullis";
const CLIENT_SECRET = "e2e-client-secret-0123456789";
const BINDING = "__Host-portcullis_oauth";
const PLANTED = "the planter's own password";

const rand = (p) => `${p}-${crypto.randomBytes(5).toString("hex")}`;
const mail = (p) => `${rand(p)}@corp.example`;

describe("the first proof of an unverified account's address takes it over", () => {
  let gw, op;

  before(async () => {
    op = await listenOidcProvider();
    gw = await startGateway({
      vars: {
        OAUTH_PROVIDERS: JSON.stringify([{ id: "acme", issuer: op.issuer, client_id: CLIENT_ID }]),
        OAUTH_ACME_CLIENT_SECRET: CLIENT_SECRET,
        REDIRECT_ALLOWLIST: APP,
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
  });

  const callbackPrefix = () => `${gw.url}/auth/oauth/acme/callback`;
  const bindingOf = (res) =>
    res.headers.getSetCookie().find((c) => c.startsWith(`${BINDING}=`)).split(";")[0].slice(BINDING.length + 1);

  function account(claims) {
    const id = rand("acct");
    op.accounts.set(id, claims);
    return id;
  }

  /** A sign-in at the provider as `id`; returns the exchanged AuthResponse. */
  async function acmeSignIn(id) {
    const start = await fetch(`${gw.url}/auth/oauth/acme/authorize?redirect_to=${encodeURIComponent(APP)}`, { redirect: "manual" });
    assert.equal(start.status, 302);
    op.nextLogin = id;
    const cbUrl = await browse(start.headers.get("location"), callbackPrefix());
    const cb = await fetch(cbUrl, { redirect: "manual", headers: { cookie: `${BINDING}=${bindingOf(start)}` } });
    assert.equal(cb.status, 302, await cb.text());
    const location = new URL(cb.headers.get("location"));
    assert.equal(location.searchParams.get("error"), null, `redirected with error: ${location}`);
    const res = await post(`${gw.url}/auth/oauth/exchange`, { code: location.searchParams.get("code") });
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    return body;
  }

  /** The signed-in planter links their own identity at the provider. */
  async function linkOwnIdentity(planter, id) {
    const res = await authed(`${gw.url}/auth/oauth/acme/link`, planter.access_token, { method: "POST", body: { redirect_to: APP } });
    const body = await json(res);
    assert.equal(res.status, 200, JSON.stringify(body));
    op.nextLogin = id;
    const cbUrl = await browse(body.authorize_url, callbackPrefix());
    const cb = await fetch(cbUrl, { redirect: "manual", headers: { cookie: `${BINDING}=${bindingOf(res)}` } });
    assert.equal(new URL(cb.headers.get("location")).searchParams.get("linked"), "acme");
  }

  /** The planter signs up with `email`, signs in again, and asks for a verification link. */
  async function plant(email) {
    const first = await signup(gw, email, PLANTED);
    assert.equal(first.user.email_verified, false);
    const second = await json(await login(gw, email, PLANTED));
    const { result, event } = await withEvent(gw, eventFor("email_verification_requested", email), () =>
      authed(`${gw.url}/auth/email/verify/request`, first.access_token, { method: "POST" }),
    );
    assert.equal(result.status, 200);
    return { first, second, verification: event.data.token };
  }

  async function assertPlanterIsOut(planted, email) {
    await assertProblem(await login(gw, email, PLANTED), 401, "invalid_credentials");
    for (const s of [planted.first, planted.second]) {
      await assertProblem(await authed(`${gw.url}/auth/me`, s.access_token), 401, "session_revoked");
      await assertProblem(await post(`${gw.url}/auth/refresh`, { refresh_token: s.refresh_token }), 401, "invalid_refresh_token");
    }
    await assertProblem(await post(`${gw.url}/auth/email/verify`, { token: planted.verification }), 401, "invalid_link");
  }

  async function assertTakeoverAnnounced(userId, email, fields) {
    const verified = await gw.waitForEvent((e) => e.type === "email_verified" && e.data.user_id === userId);
    assert.deepEqual(verified.data, { user_id: userId, email });
    const updated = await gw.waitForEvent((e) => e.type === "user_updated" && e.data.user_id === userId);
    assert.deepEqual(updated.data.fields, fields);
    const revoked = await gw.waitForEvent((e) => e.type === "session_revoked" && e.data.user_id === userId);
    assert.deepEqual(revoked.data, { user_id: userId, session_id: null, revoke_all: true });
  }

  test("by a magic link", async () => {
    const email = mail("ml");
    const planted = await plant(email);
    const { event } = await withEvent(gw, eventFor("magic_link_requested", email), () =>
      post(`${gw.url}/auth/magic-link`, { email }),
    );
    const res = await post(`${gw.url}/auth/magic-link/verify`, { token: event.data.token });
    const owner = await json(res);
    assert.equal(res.status, 200, JSON.stringify(owner));
    assert.equal(owner.user.id, planted.first.user.id, "the owner lands in the account");
    assert.equal(owner.user.email_verified, true);
    await assertPlanterIsOut(planted, email);
    await assertTakeoverAnnounced(owner.user.id, email, ["password"]);
    assert.equal((await json(await authed(`${gw.url}/auth/me`, owner.access_token))).id, owner.user.id);
  });

  test("by an email code", async () => {
    const email = mail("otp");
    const planted = await plant(email);
    const { event } = await withEvent(gw, eventFor("email_otp_requested", email), () => post(`${gw.url}/auth/otp`, { email }));
    const res = await post(`${gw.url}/auth/otp/verify`, { email, code: event.data.code });
    const owner = await json(res);
    assert.equal(res.status, 200, JSON.stringify(owner));
    assert.equal(owner.user.id, planted.first.user.id);
    await assertPlanterIsOut(planted, email);
    await assertTakeoverAnnounced(owner.user.id, email, ["password"]);
  });

  test("by a sign-in whose provider verified the address, which also drops the identity the planter linked", async () => {
    const email = mail("oidc");
    const planted = await plant(email);
    const plantersOwn = account({ email: mail("planter"), email_verified: true });
    await linkOwnIdentity(planted.first, plantersOwn);

    const owner = await acmeSignIn(account({ email, email_verified: true }));
    assert.equal(owner.user.id, planted.first.user.id);
    assert.equal(owner.user.email_verified, true);
    const link = await gw.waitForEvent((e) => e.type === "oauth_link" && e.data.user_id === owner.user.id && e.data.email === email);
    assert.equal(link.data.provider, "acme");
    await assertPlanterIsOut(planted, email);
    await assertTakeoverAnnounced(owner.user.id, email, ["password", "providers"]);
    const me = await json(await authed(`${gw.url}/auth/me`, owner.access_token));
    assert.deepEqual(me.providers.map((p) => [p.provider, p.email]), [["acme", email]], "only the owner's identity is left");
    // The planter's identity no longer opens the account: it signs in to an account of its own.
    const elsewhere = await acmeSignIn(plantersOwn);
    assert.notEqual(elsewhere.user.id, owner.user.id);
  });

  test("the planter's logins racing the takeover leave no live session", async () => {
    const email = mail("race");
    const planted = await plant(email);
    const { event } = await withEvent(gw, eventFor("magic_link_requested", email), () =>
      post(`${gw.url}/auth/magic-link`, { email }),
    );
    const logins = Array.from({ length: 8 }, () => login(gw, email, PLANTED));
    const [ownerRes, ...planterRes] = await Promise.all([post(`${gw.url}/auth/magic-link/verify`, { token: event.data.token }), ...logins]);
    const owner = await json(ownerRes);
    assert.equal(ownerRes.status, 200, JSON.stringify(owner));
    for (const res of planterRes) {
      const body = await json(res);
      // Before the takeover (then revoked by it), refused by it, or after it; the back-off may join in.
      assert.ok([200, 401, 409, 429].includes(res.status), JSON.stringify(body));
      if (res.status === 200) {
        await assertProblem(await authed(`${gw.url}/auth/me`, body.access_token), 401, "session_revoked");
      }
    }
    const live = await d1(gw, `SELECT id FROM sessions WHERE user_id = ${sqlText(owner.user.id)} AND revoked_at IS NULL`);
    assert.deepEqual(live.map((r) => r.id), [owner.user.session_id], "only the owner's session lives");
    await assertPlanterIsOut(planted, email);
  });

  test("the holder's own verification link takes nothing away", async () => {
    const email = mail("own");
    const holder = await plant(email);
    const res = await post(`${gw.url}/auth/email/verify`, { token: holder.verification });
    assert.equal(res.status, 200, await res.text());
    await gw.waitForEvent(eventFor("email_verified", email));
    assert.equal((await login(gw, email, PLANTED)).status, 200, "the password still logs in");
    assert.equal((await authed(`${gw.url}/auth/me`, holder.first.access_token)).status, 200, "the session lives on");
  });
});
